//! Helpers of the front's aws auth: Vault's duration syntax, list/string fields, request ids
//! and go-glob matching.

use rand::RngExt;
use serde_json::Value;

/// Parses a Vault duration (`parseutil.ParseDurationSecond`): a number of seconds
/// (JSON number or digit string) or a Go-style duration with `d` allowed (`72h`, `1h30m`, `10d`).
pub(crate) fn parse_duration(v: &Value) -> Result<u64, String> {
    match v {
        Value::Null => Ok(0),
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().map(|f| f as u64))
            .ok_or_else(|| format!("invalid duration {n}")),
        Value::String(s) => parse_duration_str(s),
        other => Err(format!("invalid duration {other}")),
    }
}

/// String form of [`parse_duration`].
pub(crate) fn parse_duration_str(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(0);
    }
    if let Ok(n) = s.parse::<u64>() {
        return Ok(n);
    }
    let mut total: f64 = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("time: missing unit in duration \"{s}\""))?;
        if num_len == 0 {
            return Err(format!("time: invalid duration \"{s}\""));
        }
        let num: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("time: invalid duration \"{s}\""))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            u => return Err(format!("time: unknown unit \"{u}\" in duration \"{s}\"")),
        };
        total += num * factor;
        rest = &rest[unit_len..];
    }
    Ok(total as u64)
}

/// A Vault field given as a list or a comma-separated string (`TypeCommaStringSlice`).
pub(crate) fn string_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => s
            .split(',')
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| match i {
                Value::String(s) => Some(s.trim().to_string()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .filter(|p| !p.is_empty())
            .collect(),
        _ => Vec::new(),
    }
}

/// A string field (numbers and booleans rendered), empty when absent.
pub(crate) fn string_field(body: &Value, key: &str) -> String {
    match body.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

/// A duration field (absent = 0).
pub(crate) fn duration_field(body: &Value, key: &str) -> Result<u64, String> {
    body.get(key)
        .map(parse_duration)
        .transpose()
        .map(|d| d.unwrap_or(0))
        .map_err(|e| format!("error converting input for field \"{key}\": {e}"))
}

/// First present duration among aliases (`token_ttl` / `ttl`).
pub(crate) fn duration_alias(body: &Value, keys: &[&str]) -> Result<u64, String> {
    for k in keys {
        if body.get(*k).is_some() {
            return duration_field(body, k);
        }
    }
    Ok(0)
}

/// A random UUID-formatted string (request ids, role ids).
pub(crate) fn uuid() -> String {
    let b: [u8; 16] = rand::rng().random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// `ryanuber/go-glob`: `*` matches any run of characters (including `/`), nothing else is special.
pub(crate) fn glob_match(pattern: &str, subject: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == subject;
    }
    let first = parts[0];
    let last = parts[parts.len() - 1];
    if !subject.starts_with(first) {
        return false;
    }
    let mut rest = &subject[first.len()..];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last) && rest.len() >= last.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_str("72h").unwrap(), 72 * 3600);
        assert_eq!(parse_duration_str("1h30m").unwrap(), 5400);
        assert_eq!(parse_duration_str("10d").unwrap(), 864000);
        assert_eq!(parse_duration_str("300").unwrap(), 300);
    }

    #[test]
    fn globs() {
        assert!(glob_match("spiffe://default/*", "spiffe://default/a/b"));
        assert!(!glob_match("spiffe://default/*", "spiffe://other/a"));
        assert!(glob_match("kuma://*", "kuma://kuma.io/zone/x"));
        assert!(glob_match("a*c*e", "abcde"));
        assert!(!glob_match("a*c", "ab"));
    }
}
