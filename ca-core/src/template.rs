//! Common-name templates, written as Kong Mesh users write them.
//!
//! ```text
//! {{ tag "kuma.io/service" }}.mesh
//! {{ tag "kuma.io/service" | replace "_" "-" }}.mesh
//! << tag "kuma.io/service" | replace "_" "-" | lower >>.mesh
//! ```
//!
//! A template is parsed once, at config load, into literal text and pipelines; rendering it for a
//! request looks up the tags it needs and runs each pipeline's stages on the tag's value. No
//! template engine is involved.
//!
//! Supported pipeline functions, with the meaning of Go's text/template and Sprig that Kong Mesh
//! uses: `tag "NAME"` (must come first), `replace "OLD" "NEW"` (every occurrence), `lower`,
//! `upper`, `trimPrefix "P"` and `trimSuffix "S"` (once, as Go's `strings.TrimPrefix`).

use std::collections::BTreeMap;
use std::fmt;

use crate::identity::Identity;
use crate::Error;

/// The longest common name X.509 allows (RFC 5280 `ub-common-name`).
pub const MAX_COMMON_NAME_LEN: usize = 64;

/// The most bytes a tag value can have (253 characters of at most 4 bytes each).
const MAX_VALUE_BYTES: usize = 253 * 4;

/// The most bytes one `{{ }}` may produce at any stage of its pipeline, worst case: a template
/// whose `replace` stages could grow a value past this (chained `replace "a" "aaaa"`) is refused
/// when it is parsed, before it can cost memory or time at rendering.
pub const MAX_STAGE_BYTES: usize = 16 * 1024;

/// A parsed common-name template.
#[derive(Clone)]
pub struct CommonNameTemplate {
    source: String,
    /// The tags the pipelines read, sorted, without duplicates.
    tags: Vec<String>,
    segments: Vec<Segment>,
}

/// Literal text, or one `{{ }}` pipeline.
#[derive(Clone, Debug, PartialEq)]
enum Segment {
    Text(String),
    Pipeline { tag: String, stages: Vec<Stage> },
}

/// One stage after `tag "NAME"`.
#[derive(Clone, Debug, PartialEq)]
enum Stage {
    Replace(String, String),
    Lower,
    Upper,
    TrimPrefix(String),
    TrimSuffix(String),
}

impl Stage {
    fn apply(&self, value: String) -> String {
        match self {
            Self::Replace(from, to) => value.replace(from.as_str(), to),
            Self::Lower => value.to_lowercase(),
            Self::Upper => value.to_uppercase(),
            Self::TrimPrefix(p) => match value.strip_prefix(p.as_str()) {
                Some(rest) => rest.to_owned(),
                None => value,
            },
            Self::TrimSuffix(p) => match value.strip_suffix(p.as_str()) {
                Some(rest) => rest.to_owned(),
                None => value,
            },
        }
    }
}

impl fmt::Debug for CommonNameTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CommonNameTemplate")
            .field(&self.source)
            .finish()
    }
}

impl PartialEq for CommonNameTemplate {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl CommonNameTemplate {
    /// Parses a template.
    ///
    /// # Errors
    /// [`Error::InvalidTemplate`] for unbalanced or mixed delimiters, bad quoting, unknown
    /// functions, wrong argument counts, a pipeline that does not start with `tag`, or an empty
    /// template.
    pub fn parse(source: &str) -> Result<Self, Error> {
        let err = |reason: String| Error::InvalidTemplate {
            template: source.to_owned(),
            reason,
        };
        if source.trim().is_empty() {
            return Err(err("must not be empty".into()));
        }
        let mut segments = Vec::new();
        let mut tags = Vec::new();
        let mut rest = source;
        while !rest.is_empty() {
            let open = [("{{", "}}"), ("<<", ">>")]
                .into_iter()
                .filter_map(|(o, c)| rest.find(o).map(|i| (i, o, c)))
                .min_by_key(|(i, _, _)| *i);
            let text_end = open.map_or(rest.len(), |(i, _, _)| i);
            let text = &rest[..text_end];
            for stray in ["}}", ">>"] {
                if text.contains(stray) {
                    return Err(err(format!(
                        "unbalanced delimiters: `{stray}` without a matching opening delimiter"
                    )));
                }
            }
            if !text.is_empty() {
                segments.push(Segment::Text(text.to_owned()));
            }
            let Some((i, o, c)) = open else { break };
            let after = &rest[i + o.len()..];
            let close = find_close(after, c).ok_or_else(|| {
                err(format!(
                    "unbalanced delimiters: `{o}` is never closed by `{c}`"
                ))
            })?;
            let action = &after[..close];
            for other in ["{{", "}}", "<<", ">>"] {
                if action.contains(other) {
                    return Err(err(format!(
                        "unbalanced delimiters: `{other}` inside an action opened with `{o}`"
                    )));
                }
            }
            let (tag, stages) = parse_pipeline(action).map_err(err)?;
            tags.push(tag.clone());
            segments.push(Segment::Pipeline { tag, stages });
            rest = &after[close + c.len()..];
        }
        tags.sort();
        tags.dedup();
        Ok(Self {
            source: source.to_owned(),
            tags,
            segments,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Renders the common name for `identity`.
    ///
    /// # Errors
    /// [`Error::InvalidTemplate`] when a tag the template uses is missing or has several values,
    /// or the result is empty or longer than [`MAX_COMMON_NAME_LEN`] bytes.
    pub fn render(&self, identity: &Identity) -> Result<String, Error> {
        let err = |reason: String| Error::InvalidTemplate {
            template: self.source.clone(),
            reason,
        };
        let mut values = BTreeMap::new();
        for tag in &self.tags {
            let mut iter = identity.tag(tag.as_str());
            match (iter.next(), iter.next()) {
                (None, _) => {
                    return Err(err(format!(
                        "tag `{tag}` is not set on identity {identity}"
                    )));
                }
                (Some(v), None) => {
                    values.insert(tag.as_str(), v);
                }
                _ => {
                    return Err(err(format!(
                        "tag `{tag}` has {} values on identity {identity}; a common name needs exactly one",
                        identity.tag(tag.as_str()).count()
                    )))
                }
            }
        }
        let mut cn = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Text(text) => cn.push_str(text),
                Segment::Pipeline { tag, stages } => {
                    // Invariant: every pipeline's tag is in `self.tags`, looked up above.
                    let value = values.get(tag.as_str()).copied().unwrap_or_default();
                    let value = stages
                        .iter()
                        .fold(value.to_owned(), |value, stage| stage.apply(value));
                    cn.push_str(&value);
                }
            }
        }
        if cn.is_empty() {
            return Err(err("renders to an empty common name".into()));
        }
        if cn.len() > MAX_COMMON_NAME_LEN {
            return Err(err(format!(
                "renders to `{cn}`, {} bytes, over the {MAX_COMMON_NAME_LEN}-byte limit of a common name",
                cn.len()
            )));
        }
        Ok(cn)
    }
}

/// Finds the closing delimiter, skipping over quoted strings.
fn find_close(s: &str, close: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut in_str = false;
    while i < bytes.len() {
        if in_str {
            match bytes[i] {
                b'\\' => i += 1,
                b'"' => in_str = false,
                _ => {}
            }
        } else if bytes[i] == b'"' {
            in_str = true;
        } else if bytes[i..].starts_with(close.as_bytes()) {
            // Compared as bytes: `i` steps through multi-byte characters, and slicing the
            // `str` there would panic. The delimiter is ASCII, so a match is a char boundary.
            return Some(i);
        }
        i += 1;
    }
    None
}

#[derive(Debug, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Pipe,
}

fn tokenize(action: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = action.char_indices().peekable();
    while let Some(&(_, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '|' {
            tokens.push(Token::Pipe);
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut s = String::new();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '"' => {
                        closed = true;
                        break;
                    }
                    '\\' => match chars.next() {
                        Some((_, '"')) => s.push('"'),
                        Some((_, '\\')) => s.push('\\'),
                        Some((_, other)) => {
                            return Err(format!("bad quoting: unsupported escape `\\{other}`"))
                        }
                        None => break,
                    },
                    c => s.push(c),
                }
            }
            if !closed {
                return Err("bad quoting: unterminated string".into());
            }
            tokens.push(Token::Str(s));
        } else if c.is_ascii_alphabetic() {
            let mut s = String::new();
            while let Some(&(_, c)) = chars.peek() {
                if c.is_ascii_alphanumeric() || c == '_' {
                    s.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
            tokens.push(Token::Ident(s));
        } else if c == '\'' || c == '`' {
            return Err(format!(
                "bad quoting: strings must be in double quotes, not `{c}`"
            ));
        } else {
            let word: String = action[chars.peek().map_or(0, |(i, _)| *i)..]
                .split(|c: char| c.is_whitespace() || c == '|')
                .next()
                .unwrap_or_default()
                .to_owned();
            return Err(format!(
                "unexpected `{word}`: arguments must be double-quoted strings"
            ));
        }
    }
    Ok(tokens)
}

/// Parses one `tag "x" | f ...` pipeline: the tag it reads and the stages to run on its value.
fn parse_pipeline(action: &str) -> Result<(String, Vec<Stage>), String> {
    let tokens = tokenize(action)?;
    let mut commands: Vec<Vec<Token>> = vec![Vec::new()];
    for t in tokens {
        match t {
            Token::Pipe => commands.push(Vec::new()),
            other => commands.last_mut().map(|c| c.push(other)).unwrap_or(()),
        }
    }
    if commands.iter().any(Vec::is_empty) {
        return Err("empty command in pipeline (`{{ }}` or a stray `|`)".into());
    }
    let mut stages = Vec::new();
    let mut tag = String::new();
    // The longest the value can be after each stage, worst case.
    let mut bound = MAX_VALUE_BYTES;
    for (i, cmd) in commands.iter().enumerate() {
        let Token::Ident(func) = &cmd[0] else {
            return Err("a pipeline stage must start with a function name".into());
        };
        let args: Vec<&str> = cmd[1..]
            .iter()
            .map(|t| match t {
                Token::Str(s) => Ok(s.as_str()),
                Token::Ident(w) => Err(format!(
                    "unexpected `{w}`: arguments of `{func}` must be double-quoted strings"
                )),
                Token::Pipe => Err("unexpected `|`".to_string()),
            })
            .collect::<Result<_, _>>()?;
        let want = |n: usize| {
            if args.len() == n {
                Ok(())
            } else {
                Err(format!(
                    "`{func}` takes {n} argument{}, got {}",
                    if n == 1 { "" } else { "s" },
                    args.len()
                ))
            }
        };
        if i == 0 {
            if func != "tag" {
                return Err(format!(
                    "a pipeline must start with `tag \"NAME\"`, not `{func}`"
                ));
            }
            want(1)?;
            tag = args[0].to_owned();
            if tag.is_empty() {
                return Err("`tag` needs a non-empty tag name".into());
            }
            continue;
        }
        match func.as_str() {
            "replace" => {
                want(2)?;
                let (from, to) = (args[0].len(), args[1].len());
                if from == 0 {
                    return Err(
                        "`replace` needs a non-empty string to replace (an empty one would insert \
                         the replacement between every character)"
                            .into(),
                    );
                }
                // At most bound / from occurrences, each growing by to - from.
                bound = bound.saturating_add((bound / from).saturating_mul(to.saturating_sub(from)));
                stages.push(Stage::Replace(args[0].to_owned(), args[1].to_owned()));
            }
            "lower" | "upper" => {
                want(0)?;
                // Unicode case mapping grows a character to at most three times its bytes.
                bound = bound.saturating_mul(3);
                stages.push(if func == "lower" {
                    Stage::Lower
                } else {
                    Stage::Upper
                });
            }
            "trimPrefix" => {
                want(1)?;
                stages.push(Stage::TrimPrefix(args[0].to_owned()));
            }
            "trimSuffix" => {
                want(1)?;
                stages.push(Stage::TrimSuffix(args[0].to_owned()));
            }
            "tag" => return Err("`tag` may only start a pipeline".into()),
            other => {
                return Err(format!(
                    "unknown function `{other}` (supported: tag, replace, lower, upper, trimPrefix, trimSuffix)"
                ))
            }
        }
        if bound > MAX_STAGE_BYTES {
            return Err(format!(
                "stage {} (`{func}`) could grow a tag value past {MAX_STAGE_BYTES} bytes; a common name has at most {MAX_COMMON_NAME_LEN}",
                i + 1
            ));
        }
    }
    Ok((tag, stages))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::MeshName;

    fn id(tags: &[(&str, &str)]) -> Identity {
        Identity::new(MeshName::new("default").unwrap(), tags.iter().copied()).unwrap()
    }

    fn render(t: &str, tags: &[(&str, &str)]) -> Result<String, Error> {
        CommonNameTemplate::parse(t)?.render(&id(tags))
    }

    fn parse_err(t: &str) -> String {
        match CommonNameTemplate::parse(t) {
            Ok(_) => panic!("{t} parsed"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn kong_mesh_forms_render() {
        let tags = [("kuma.io/service", "backend_kuma-demo_svc_8080")];
        assert_eq!(
            render(r#"{{ tag "kuma.io/service" }}.mesh"#, &tags).unwrap(),
            "backend_kuma-demo_svc_8080.mesh"
        );
        assert_eq!(
            render(
                r#"{{ tag "kuma.io/service" | replace "_" "-" }}.mesh"#,
                &tags
            )
            .unwrap(),
            "backend-kuma-demo-svc-8080.mesh"
        );
        assert_eq!(
            render(
                r#"<< tag "kuma.io/service" | replace "_" "-" >>.mesh"#,
                &tags
            )
            .unwrap(),
            "backend-kuma-demo-svc-8080.mesh"
        );
        assert_eq!(
            render(
                r#"{{tag "kuma.io/service"|upper}}"#,
                &[("kuma.io/service", "web")]
            )
            .unwrap(),
            "WEB"
        );
        assert_eq!(
            render(
                r#"{{ tag "kuma.io/service" | trimSuffix "_svc_80" | trimPrefix "x" }}.{{ tag "zone" | lower }}"#,
                &[("kuma.io/service", "xweb_svc_80"), ("zone", "EU")]
            )
            .unwrap(),
            "web.eu"
        );
    }

    #[test]
    fn trims_happen_once_as_in_go() {
        // Go's strings.TrimPrefix / TrimSuffix (Sprig's trimPrefix / trimSuffix) remove one
        // occurrence, not a run of them.
        assert_eq!(
            render(
                r#"{{ tag "kuma.io/service" | trimPrefix "a" | trimSuffix "z" }}"#,
                &[("kuma.io/service", "aabzz")]
            )
            .unwrap(),
            "abz"
        );
        // Literal text may hold every quote character.
        assert_eq!(
            render(
                r#"'q`"{{ tag "kuma.io/service" }}"#,
                &[("kuma.io/service", "web")]
            )
            .unwrap(),
            "'q`\"web"
        );
    }

    #[test]
    fn literal_text_is_not_interpreted() {
        assert_eq!(
            render(
                r#"{% raw %}{{ tag "kuma.io/service" }}"#,
                &[("kuma.io/service", "a")]
            )
            .unwrap(),
            "{% raw %}a"
        );
        assert_eq!(
            render("static.mesh", &[("kuma.io/service", "a")]).unwrap(),
            "static.mesh"
        );
    }

    #[test]
    fn parse_errors_name_the_problem() {
        assert!(parse_err(r#"{{ tag "kuma.io/service" | base64 }}"#)
            .contains("unknown function `base64`"));
        assert!(parse_err(r#"{{ tag "kuma.io/service }}"#).contains("never closed"));
        assert!(parse_err(r#"{{ tag kuma.io/service }}"#).contains("must be double-quoted"));
        assert!(parse_err(r#"{{ tag 'kuma.io/service' }}"#).contains("bad quoting"));
        assert!(parse_err(r#"{{ tag "kuma.io/service" "#).contains("never closed by `}}`"));
        assert!(parse_err(r#"tag "kuma.io/service" }}"#).contains("`}}` without a matching"));
        assert!(parse_err(r#"<< tag "kuma.io/service" }}"#).contains("unbalanced"));
        assert!(parse_err(r#"{{ tag "a" >> }}"#).contains("unbalanced"));
        assert!(parse_err(r#"{{ replace "a" "b" }}"#).contains("must start with `tag"));
        // Found by the template fuzz target (a timeout): stages that grow a value without bound.
        assert!(parse_err(r#"{{ tag "kuma.io/service" | replace "" "x" }}"#)
            .contains("non-empty string to replace"));
        let chained = format!(
            "{{{{ tag \"kuma.io/service\"{} }}}}",
            r#" | replace "a" "aaaaaaaaaaaaaaaa""#.repeat(3)
        );
        assert!(
            parse_err(&chained).contains("past 16384 bytes"),
            "{chained}"
        );
        let cased = format!(
            "{{{{ tag \"kuma.io/service\"{} }}}}",
            " | upper | lower".repeat(4)
        );
        assert!(parse_err(&cased).contains("could grow"));
        // Ordinary pipelines stay well inside the bound.
        assert!(CommonNameTemplate::parse(
            r#"{{ tag "kuma.io/service" | replace "_" "--" | lower | trimSuffix "x" }}.mesh"#
        )
        .is_ok());
        assert!(parse_err(r#"{{ tag "a" | replace "a" }}"#)
            .contains("`replace` takes 2 arguments, got 1"));
        assert!(parse_err(r#"{{ tag }}"#).contains("`tag` takes 1 argument, got 0"));
        assert!(parse_err(r#"{{ tag "a" | }}"#).contains("empty command"));
        assert!(parse_err(r#"{{ }}"#).contains("empty command"));
        assert!(parse_err(r#"{{ tag "a\q" }}"#).contains("unsupported escape"));
        assert!(parse_err("  ").contains("must not be empty"));
        assert!(parse_err(r#"{{ tag "a" | lower "x" }}"#).contains("`lower` takes 0 arguments"));
    }

    #[test]
    fn render_errors_name_the_problem() {
        let e = render(r#"{{ tag "version" }}"#, &[("kuma.io/service", "a")]).unwrap_err();
        assert!(e.to_string().contains("tag `version` is not set"), "{e}");
        let e = render(
            r#"{{ tag "kuma.io/service" }}"#,
            &[("kuma.io/service", "a"), ("kuma.io/service", "b")],
        )
        .unwrap_err();
        assert!(e.to_string().contains("has 2 values"), "{e}");
        let long = "s".repeat(60);
        let e = render(
            r#"{{ tag "kuma.io/service" }}.mesh"#,
            &[("kuma.io/service", &long)],
        )
        .unwrap_err();
        assert!(e.to_string().contains("over the 64-byte limit"), "{e}");
        let ok = "s".repeat(59);
        assert_eq!(
            render(
                r#"{{ tag "kuma.io/service" }}.mesh"#,
                &[("kuma.io/service", &ok)]
            )
            .unwrap()
            .len(),
            64
        );
        let e = render(
            r#"{{ tag "kuma.io/service" | replace "a" "" }}"#,
            &[("kuma.io/service", "aa")],
        )
        .unwrap_err();
        assert!(e.to_string().contains("empty common name"), "{e}");
    }

    #[test]
    fn quotes_inside_arguments() {
        assert_eq!(
            render(
                r#"{{ tag "kuma.io/service" | replace "a" "\"" }}"#,
                &[("kuma.io/service", "a")]
            )
            .unwrap(),
            "\""
        );
    }
    #[test]
    fn non_ascii_inside_an_action_is_an_error_not_a_panic() {
        // Found by the `template` fuzz target (fuzz/regressions/template/).
        for t in [
            "{{ é }}",
            "{{ tag é }}.mesh",
            "x{{ \u{1F600} | é }}",
            "{{ é",
        ] {
            assert!(CommonNameTemplate::parse(t).is_err(), "{t}");
        }
    }
}
