//! ACL policies: the HCL subset `path "<glob>" { capabilities = [...] }` and Vault's
//! path matching (exact, trailing `*` prefix, `+` single segment; most specific wins,
//! `deny` overrides; see Vault's `vault/acl.go`).

/// One `path` stanza.
#[derive(Debug, Clone)]
pub(crate) struct PathRule {
    /// The pattern as written (`pki/issue/*`, `auth/+/login`).
    pub(crate) pattern: String,
    /// Capabilities granted (`create`, `read`, `update`, `delete`, `list`, `sudo`, `deny`).
    pub(crate) capabilities: Vec<String>,
}

/// A parsed ACL policy.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    /// Source text, returned on read.
    pub(crate) raw: String,
    /// Its rules.
    pub(crate) rules: Vec<PathRule>,
}

/// The capability an operation needs (Vault maps POST/PUT to create or update).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// GET.
    Read,
    /// LIST or GET ?list=true.
    List,
    /// POST/PUT.
    Write,
    /// DELETE.
    Delete,
}

/// Vault's built-in `default` policy (token self-service paths).
pub(crate) fn default_policy() -> Policy {
    parse(
        r#"
path "auth/token/lookup-self" { capabilities = ["read"] }
path "auth/token/renew-self" { capabilities = ["update"] }
path "auth/token/revoke-self" { capabilities = ["update"] }
path "sys/capabilities-self" { capabilities = ["update"] }
"#,
    )
    .unwrap_or(Policy {
        raw: String::new(),
        rules: Vec::new(),
    })
}

fn strip_comments(src: &str) -> String {
    src.lines()
        .map(|l| {
            let mut in_str = false;
            let mut cut = l.len();
            let b = l.as_bytes();
            for i in 0..b.len() {
                match b[i] {
                    b'"' => in_str = !in_str,
                    b'#' if !in_str => {
                        cut = i;
                        break;
                    }
                    b'/' if !in_str && b.get(i + 1) == Some(&b'/') => {
                        cut = i;
                        break;
                    }
                    _ => {}
                }
            }
            &l[..cut]
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn quoted(s: &str) -> Option<(String, &str)> {
    let s = s.trim_start();
    let s = s.strip_prefix('"')?;
    let end = s.find('"')?;
    Some((s[..end].to_string(), &s[end + 1..]))
}

/// Parses the HCL subset; errors read like Vault's `failed to parse policy`.
pub(crate) fn parse(src: &str) -> Result<Policy, String> {
    let text = strip_comments(src);
    let mut rules = Vec::new();
    let mut rest = text.as_str();
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let Some(after) = rest.strip_prefix("path") else {
            return Err(format!(
                "failed to parse policy: unexpected input near {:?}",
                rest.chars().take(20).collect::<String>()
            ));
        };
        let (pattern, after) =
            quoted(after).ok_or("failed to parse policy: path needs a quoted name")?;
        let after = after.trim_start();
        let after = after
            .strip_prefix('{')
            .ok_or("failed to parse policy: expected '{' after path")?;
        // Find the matching closing brace.
        let mut depth = 1usize;
        let mut end = None;
        for (i, c) in after.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(i);
                        break;
                    }
                }
                _ => {}
            }
        }
        let end = end.ok_or("failed to parse policy: unbalanced braces")?;
        let body = &after[..end];
        rest = &after[end + 1..];
        let mut capabilities = Vec::new();
        if let Some(i) = body.find("capabilities") {
            let list = &body[i + "capabilities".len()..];
            let list = list
                .trim_start()
                .strip_prefix('=')
                .unwrap_or(list)
                .trim_start();
            let list = list
                .strip_prefix('[')
                .ok_or("failed to parse policy: capabilities must be a list")?;
            let close = list
                .find(']')
                .ok_or("failed to parse policy: unterminated capabilities list")?;
            for item in list[..close].split(',') {
                let item = item.trim().trim_matches('"').trim();
                if item.is_empty() {
                    continue;
                }
                match item {
                    "create" | "read" | "update" | "delete" | "list" | "sudo" | "deny"
                    | "patch" | "subscribe" | "recover" => capabilities.push(item.to_string()),
                    other => {
                        return Err(format!(
                            "failed to parse policy: path {pattern:?}: invalid capability {other:?}"
                        ))
                    }
                }
            }
        } else if body.contains("policy") {
            // Legacy `policy = "write"` syntax.
            let legacy = body.split('"').nth(1).unwrap_or("");
            capabilities = match legacy {
                "deny" => vec!["deny"],
                "read" => vec!["read", "list"],
                "write" => vec!["create", "read", "update", "delete", "list"],
                "sudo" => vec!["create", "read", "update", "delete", "list", "sudo"],
                _ => vec![],
            }
            .into_iter()
            .map(String::from)
            .collect();
        }
        // Vault strips a leading '/' (paths start after the / of the API path), so the
        // `path "/pki/issue/..."` of Kong Mesh's docs works.
        let pattern = pattern
            .strip_prefix('/')
            .map(str::to_owned)
            .unwrap_or(pattern);
        rules.push(PathRule {
            pattern,
            capabilities,
        });
    }
    Ok(Policy {
        raw: src.to_string(),
        rules,
    })
}

fn matches(pattern: &str, path: &str) -> bool {
    let (pat, prefix) = match pattern.strip_suffix('*') {
        Some(p) => (p, true),
        None => (pattern, false),
    };
    if !pat.contains('+') {
        return if prefix {
            path.starts_with(pat)
        } else {
            path == pat
        };
    }
    let pat_segs: Vec<&str> = pat.split('/').collect();
    let path_segs: Vec<&str> = path.split('/').collect();
    if path_segs.len() < pat_segs.len() || (!prefix && path_segs.len() != pat_segs.len()) {
        return false;
    }
    for (i, ps) in pat_segs.iter().enumerate() {
        let last = i == pat_segs.len() - 1;
        if *ps == "+" {
            continue;
        }
        if last && prefix {
            if !path_segs[i].starts_with(ps) {
                return false;
            }
        } else if *ps != path_segs[i] {
            return false;
        }
    }
    true
}

/// Vault's priority between two matching patterns: is `a` more specific than `b`?
fn more_specific(a: &str, b: &str) -> bool {
    let key = |p: &str| {
        let glob = p.ends_with('*');
        let plus = p.matches('+').count();
        // exact beats glob; then longer literal prefix; then fewer '+'.
        let literal = p.find(['*', '+']).unwrap_or(p.len());
        (!glob, literal, usize::MAX - plus, p.len())
    };
    key(a) > key(b)
}

/// Whether the policies (by their rules) allow `op` on `path`.
pub(crate) fn allowed(policies: &[&Policy], path: &str, op: Op) -> bool {
    let mut best: Option<&str> = None;
    for p in policies {
        for r in &p.rules {
            if matches(&r.pattern, path) && best.is_none_or(|b| more_specific(&r.pattern, b)) {
                best = Some(&r.pattern);
            }
        }
    }
    let Some(best) = best else { return false };
    let caps: Vec<&str> = policies
        .iter()
        .flat_map(|p| p.rules.iter())
        .filter(|r| r.pattern == best)
        .flat_map(|r| r.capabilities.iter().map(String::as_str))
        .collect();
    if caps.contains(&"deny") {
        return false;
    }
    match op {
        Op::Read => caps.contains(&"read"),
        Op::List => caps.contains(&"list"),
        Op::Write => caps.contains(&"create") || caps.contains(&"update"),
        Op::Delete => caps.contains(&"delete"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hcl_and_matching() {
        let p = parse(
            r#"
# issue only
path "pki/issue/kuma-dp" { capabilities = ["create", "update"] }
path "pki/+/other" {
  capabilities = ["read"]
}
path "secret/*" { capabilities = ["read", "list"] }
path "secret/private" { capabilities = ["deny"] }
"#,
        )
        .unwrap();
        assert!(allowed(&[&p], "pki/issue/kuma-dp", Op::Write));
        assert!(!allowed(&[&p], "pki/issue/kuma-dp", Op::Read));
        assert!(!allowed(&[&p], "pki/issue/other", Op::Write));
        assert!(allowed(&[&p], "pki/x/other", Op::Read));
        assert!(allowed(&[&p], "secret/a/b", Op::List));
        assert!(!allowed(&[&p], "secret/private", Op::Read));
        let d = default_policy();
        assert!(allowed(&[&d], "auth/token/renew-self", Op::Write));
        assert!(!allowed(&[&d], "pki/issue/x", Op::Write));
    }
}
