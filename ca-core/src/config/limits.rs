//! Bounds on the YAML meshca parses, checked before the YAML parser sees the text.

use crate::error::{Error, Violations};

/// The largest Mesh YAML (one file or one request) meshca parses.
pub const MAX_YAML_BYTES: usize = 512 * 1024;
/// The deepest nesting of YAML collections (flow `[`/`{` and block alike) meshca parses. A Mesh
/// needs fewer than ten levels; the YAML parser's work grows with the square of the flow depth.
pub const MAX_YAML_NESTING: usize = 64;

/// Refuses YAML over [`MAX_YAML_BYTES`] or nested deeper than [`MAX_YAML_NESTING`] before it
/// reaches the YAML parser, whose cost for deep flow nesting is quadratic (20,000 levels took
/// 1.6 s, a 512 KiB input minutes).
///
/// The depth is measured on the events of a streaming YAML parser (`saphyr-parser`, which
/// tokenizes as libyaml does), stopping at the first level too deep, so the check costs time
/// linear in the input and no quote, comment or block scalar can hide a level from it. A text
/// with at most [`MAX_YAML_NESTING`] `[` and `{` characters in all cannot nest flow collections
/// deeper than that whatever it means, so for it a syntax error is left to the parser, which
/// reports it in its own words.
///
/// # Errors
/// [`Error::InvalidConfig`] at `(yaml)` naming the limit, or the syntax error of a text with
/// more brackets than that.
pub fn check_yaml_limits(text: &str) -> Result<(), Error> {
    let refuse = |msg: String| {
        let mut v = Violations::default();
        v.add("(yaml)", msg);
        Err(Error::InvalidConfig(v))
    };
    if text.len() > MAX_YAML_BYTES {
        return refuse(format!(
            "is {} bytes; at most {MAX_YAML_BYTES} are accepted",
            text.len()
        ));
    }
    match nesting_depth(text, MAX_YAML_NESTING) {
        Ok(depth) if depth <= MAX_YAML_NESTING => Ok(()),
        Ok(_) => refuse(format!(
            "nests collections deeper than {MAX_YAML_NESTING} levels"
        )),
        Err(_) if flow_openers(text) <= MAX_YAML_NESTING => Ok(()),
        Err(e) => refuse(format!("cannot be parsed: {e}")),
    }
}

/// How many `[` and `{` the text holds, wherever they are: a bound on its flow nesting.
fn flow_openers(text: &str) -> usize {
    text.bytes().filter(|b| matches!(b, b'[' | b'{')).count()
}

/// The deepest nesting of collections in `text`, by the events of a streaming parser; it stops
/// (answering `limit + 1`) as soon as a level passes `limit`.
fn nesting_depth(text: &str, limit: usize) -> Result<usize, saphyr_parser::ScanError> {
    use saphyr_parser::{Event, Parser};
    let (mut depth, mut max) = (0usize, 0usize);
    for event in Parser::new_from_str(text) {
        let event = match event {
            Ok((e, _)) => e,
            // The scanner's own bound on flow nesting (it reads ahead of the events, so it can
            // meet it before `limit` levels were reported).
            Err(e) if e.info() == "recursion limit exceeded" => return Ok(limit + 1),
            Err(e) => return Err(e),
        };
        match event {
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                depth += 1;
                max = max.max(depth);
                if depth > limit {
                    return Ok(depth);
                }
            }
            Event::SequenceEnd | Event::MappingEnd => depth = depth.saturating_sub(1),
            Event::StreamEnd => break,
            _ => {}
        }
    }
    Ok(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mesh;
    use crate::Registry;

    fn violations(yaml: &str) -> Vec<String> {
        match Mesh::from_yaml(yaml, &Registry::empty()) {
            Ok(m) => panic!("expected violations, got {m:?}"),
            Err(Error::InvalidConfig(v)) => v.iter().map(ToString::to_string).collect(),
            Err(other) => panic!("unexpected error {other}"),
        }
    }

    #[test]
    fn size_and_nesting_are_capped_before_parsing() {
        // 50,000 nested flow sequences in 100 KB: refused without handing it to the parser, whose
        // cost grows with the square of the depth.
        let deep = format!("name: {}{}", "[".repeat(50_000), "]".repeat(50_000));
        let started = std::time::Instant::now();
        assert_eq!(
            violations(&deep),
            ["(yaml): nests collections deeper than 64 levels"]
        );
        let deep_map = format!("name: x\nmtls: {}{}", "{a: ".repeat(100), "}".repeat(100));
        assert_eq!(
            violations(&deep_map),
            ["(yaml): nests collections deeper than 64 levels"]
        );
        // Generous: this is a correctness bound, not a timing assertion.
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let big = format!("type: Mesh\nname: x\n# {}\n", "a".repeat(MAX_YAML_BYTES));
        assert!(
            violations(&big)[0].starts_with("(yaml): is 524"),
            "{:?}",
            violations(&big)
        );
        assert!(Mesh::from_yaml_documents(&big, &Registry::empty()).is_err());
        // Brackets inside quotes and comments do not count; real configs pass.
        let quoted = format!(
            "type: Mesh\nname: x # {}\nmtls:\n  enabledBackend: ca-1\n  backends:\n    - name: ca-1\n      type: builtin\n      conf: {{commonName: '{}'}}\n",
            "[".repeat(100),
            "{".repeat(100)
        );
        assert!(
            nesting_depth(&quoted, MAX_YAML_NESTING).unwrap() <= 5,
            "{:?}",
            nesting_depth(&quoted, MAX_YAML_NESTING)
        );
        assert!(check_yaml_limits(&quoted).is_ok());
    }

    #[test]
    fn no_quote_or_block_scalar_hides_nesting() {
        // A quote inside a plain scalar once made the pre-check skip to the next quote, lines away,
        // and miss everything in between.
        let deep = format!("{}{}", "[".repeat(5_000), "]".repeat(5_000));
        let tricks = [
            format!("type: Mesh\nname: x '\nmtls: {deep}\nlabels: {{a: 'y'}}\n"),
            format!("type: Mesh\nname: it\"s\nmtls: {deep}\nx: \"\n"),
            format!("type: Mesh\nname: |\n  a ' b\nmtls: {deep}\nc: '\n"),
            format!("type: Mesh\nname: x #'\nmtls: {deep}\n#'\n"),
            format!("type: Mesh\nname: x\nmtls: [\"]]]]\", {deep}]\n"),
            format!("type: Mesh\nname: x\nmtls:\n  {}x\n", "- ".repeat(5_000)),
        ];
        for t in &tricks {
            let v = violations(t);
            assert!(
                v == ["(yaml): nests collections deeper than 64 levels"],
                "{:?} for {:?}",
                v,
                &t[..60]
            );
        }
    }
}
