//! [`Fields`]: a small decoder over one YAML object that records every violation with its field
//! path, so validation reports all problems at once, like Kuma does. Backend crates decode their
//! `conf` with it.

use std::collections::BTreeSet;

use yaml_serde::{Mapping, Value};

use crate::datasource::{AwsSecretRef, DataSource};
use crate::duration::KumaDuration;
use crate::error::Violations;
use crate::name::SecretName;
use crate::secret::SecretBytes;
use crate::template::CommonNameTemplate;
use crate::Error;

/// Joins a field path.
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// The kind of a YAML value, for messages.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "an object",
        Value::Tagged(_) => "a tagged value",
    }
}

/// One YAML object being decoded: each getter reads a key, reports what is wrong with it at its
/// full field path (`mtls.backends[0].conf.fromCp.auth.token`) into the [`Violations`], and
/// remembers the key as read; [`Fields::finish`] then reports every key nobody read as an
/// unknown field.
///
/// A getter answers `None` both when the key is absent (or `null`) and when its value was wrong;
/// in the second case the violation is already recorded.
pub struct Fields<'a> {
    pub(crate) path: String,
    map: &'a Mapping,
    used: BTreeSet<&'a str>,
    open: bool,
}

impl std::fmt::Debug for Fields<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The object may hold inline secrets: only its path is shown.
        f.debug_struct("Fields").field("path", &self.path).finish()
    }
}

impl<'a> Fields<'a> {
    /// Starts decoding `value` at `path`; records a violation if it is not an object.
    pub(crate) fn of(value: &'a Value, path: &str, v: &mut Violations) -> Option<Self> {
        match value {
            Value::Mapping(map) => Some(Self {
                path: path.to_owned(),
                map,
                used: BTreeSet::new(),
                open: false,
            }),
            other => {
                v.add(path, format!("must be an object, not {}", kind(other)));
                None
            }
        }
    }

    /// Accepts any field without reporting it unknown (Kubernetes `metadata`).
    pub(crate) fn open(mut self) -> Self {
        self.open = true;
        self
    }

    /// The full field path of `key` in this object.
    pub fn at(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The value of `key`, marking it read. `null` counts as absent.
    pub(crate) fn get(&mut self, key: &'a str) -> Option<&'a Value> {
        let found = self
            .map
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v);
        if found.is_some() {
            self.used.insert(key);
        }
        found.filter(|v| !v.is_null())
    }

    /// Marks keys as known without decoding them (fields meshca passes over, like `tracing`).
    pub fn ignore(&mut self, keys: &[&'a str]) {
        for k in keys {
            let _ = self.get(k);
        }
    }

    /// Whether `key` is present and not `null` (without marking it read).
    pub fn has(&self, key: &str) -> bool {
        self.map
            .iter()
            .any(|(k, v)| k.as_str() == Some(key) && !v.is_null())
    }

    /// A string.
    pub fn str(&mut self, key: &'a str, v: &mut Violations) -> Option<String> {
        match self.get(key)? {
            Value::String(s) => Some(s.clone()),
            other => {
                v.add(
                    self.at(key),
                    format!("must be a string, not {}", kind(other)),
                );
                None
            }
        }
    }

    /// A string that must be present and not blank (`cannot be empty` otherwise).
    pub fn required_str(&mut self, key: &'a str, v: &mut Violations) -> Option<String> {
        let present = self.has(key);
        let s = self.str(key, v);
        match &s {
            None if !present => v.add(self.at(key), "cannot be empty"),
            Some(x) if x.trim().is_empty() => {
                v.add(self.at(key), "cannot be empty");
                return None;
            }
            _ => {}
        }
        s
    }

    /// `true` or `false`.
    pub fn bool(&mut self, key: &'a str, v: &mut Violations) -> Option<bool> {
        match self.get(key)? {
            Value::Bool(b) => Some(*b),
            other => {
                v.add(
                    self.at(key),
                    format!("must be true or false, not {}", kind(other)),
                );
                None
            }
        }
    }

    /// A whole number that fits in a `u32`.
    pub fn u32(&mut self, key: &'a str, v: &mut Violations) -> Option<u32> {
        match self.get(key)? {
            Value::Number(n) => match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) => Some(n),
                None => {
                    v.add(
                        self.at(key),
                        format!("must be a positive whole number, not {n}"),
                    );
                    None
                }
            },
            other => {
                v.add(
                    self.at(key),
                    format!("must be a number, not {}", kind(other)),
                );
                None
            }
        }
    }

    /// A Kuma duration (`24h`, `1d`, `10y`; a bare `0`).
    pub fn duration(&mut self, key: &'a str, v: &mut Violations) -> Option<KumaDuration> {
        let at = self.at(key);
        match self.get(key)? {
            Value::String(s) => KumaDuration::parse(s).map_err(|e| v.add(&at, e)).ok(),
            Value::Number(n) if n.as_u64() == Some(0) => KumaDuration::parse("0").ok(),
            other => {
                v.add(
                    at,
                    format!("must be a duration such as \"24h\", not {}", kind(other)),
                );
                None
            }
        }
    }

    /// A nested object, decoded with its own [`Fields`] (call [`Fields::finish`] on it).
    pub fn obj(&mut self, key: &'a str, v: &mut Violations) -> Option<Fields<'a>> {
        let at = self.at(key);
        let value = self.get(key)?;
        Fields::of(value, &at, v)
    }

    pub(crate) fn list(&mut self, key: &'a str, v: &mut Violations) -> Option<&'a [Value]> {
        match self.get(key)? {
            Value::Sequence(s) => Some(s),
            other => {
                v.add(self.at(key), format!("must be a list, not {}", kind(other)));
                None
            }
        }
    }

    /// A list of strings (absent: empty).
    pub fn string_list(&mut self, key: &'a str, v: &mut Violations) -> Vec<String> {
        let at = self.at(key);
        let Some(items) = self.list(key, v) else {
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| match item {
                Value::String(s) => Some(s.clone()),
                other => {
                    v.add(
                        format!("{at}[{i}]"),
                        format!("must be a string, not {}", kind(other)),
                    );
                    None
                }
            })
            .collect()
    }

    /// A data source (`secret`, `file`, `inline`, `inlineString`, `env`, `awsSecretsManager`).
    pub fn data_source(&mut self, key: &'a str, v: &mut Violations) -> Option<DataSource> {
        const SOURCES: [&str; 6] = [
            "secret",
            "file",
            "inline",
            "inlineString",
            "env",
            "awsSecretsManager",
        ];
        let at = self.at(key);
        let mut f = self.obj(key, v)?;
        let chosen: Vec<&'static str> = SOURCES.into_iter().filter(|k| f.has(k)).collect();
        let result = match chosen.as_slice() {
            [] => {
                // `secret: null` and friends count as absent (Kuma: only "has to be chosen"),
                // not as unknown fields.
                f.ignore(&SOURCES);
                v.add(
                    &at,
                    "data source has to be chosen. Available sources: secret, file, inline, inlineString, env, awsSecretsManager",
                );
                None
            }
            ["awsSecretsManager"] => {
                let field = f.at("awsSecretsManager");
                f.obj("awsSecretsManager", v).and_then(|mut o| {
                    let id = o.required_str("secretId", v);
                    let key = o.str("key", v);
                    let got = id.and_then(|id| {
                        AwsSecretRef::new(&id, key.as_deref())
                            .map(DataSource::AwsSecretsManager)
                            .map_err(|(name, reason)| v.add(format!("{field}.{name}"), reason))
                            .ok()
                    });
                    o.finish(v);
                    got
                })
            }
            [one] => {
                let one: &'static str = one;
                let s = f.required_str(one, v);
                s.and_then(|s| {
                    let field = f.at(one);
                    match one {
                        "secret" => SecretName::new(s.trim())
                            .map(DataSource::Secret)
                            .map_err(|e| v.add(&field, error_reason(&e)))
                            .ok(),
                        "file" => Some(DataSource::File(s.into())),
                        "inline" => DataSource::inline_base64(&s)
                            .map_err(|e| v.add(&field, e))
                            .ok(),
                        "inlineString" => {
                            Some(DataSource::InlineString(SecretBytes::new(s.into_bytes())))
                        }
                        _ => Some(DataSource::Env(s)),
                    }
                })
            }
            many => {
                f.ignore(&SOURCES);
                v.add(
                    &at,
                    format!(
                        "exactly one data source may be set, found {}",
                        many.join(", ")
                    ),
                );
                None
            }
        };
        f.finish(v);
        result
    }

    /// `commonName`: a Kuma common-name template, parsed once here (never at issue time); `None`
    /// when absent or blank.
    pub fn common_name(&mut self, v: &mut Violations) -> Option<CommonNameTemplate> {
        let at = self.at("commonName");
        let s = self.str("commonName", v)?;
        if s.trim().is_empty() {
            return None;
        }
        CommonNameTemplate::parse(&s)
            .map_err(|e| match e {
                Error::InvalidTemplate { reason, .. } => v.add(&at, reason),
                other => v.add(&at, other.to_string()),
            })
            .ok()
    }

    /// A data source that must be present: `has to be defined` at its path otherwise.
    pub fn required_data_source(&mut self, key: &'a str, v: &mut Violations) -> Option<DataSource> {
        if !self.has(key) {
            v.add(self.at(key), "has to be defined");
            let _ = self.get(key);
            return None;
        }
        self.data_source(key, v)
    }

    /// A list of DNS names (absent: empty); each name that is not one is reported at its index.
    pub fn dns_name_list(&mut self, key: &'a str, v: &mut Violations) -> Vec<String> {
        let at = self.at(key);
        let names = self.string_list(key, v);
        for (i, d) in names.iter().enumerate() {
            if crate::name::check_dns_name(d).is_err() {
                v.add(
                    format!("{at}[{i}]"),
                    format!("\"{d}\" is not a valid DNS name"),
                );
            }
        }
        names
    }

    /// Reports every key that was not read as unknown.
    pub fn finish(self, v: &mut Violations) {
        if self.open {
            return;
        }
        for (k, _) in self.map {
            match k.as_str() {
                Some(name) if self.used.contains(name) => {}
                Some(name) => v.add(join(&self.path, name), "unknown field"),
                None => v.add(
                    &self.path,
                    format!("has a key that is {}, not a string", kind(k)),
                ),
            }
        }
    }
}

/// The reason part of a name validation error.
pub(crate) fn error_reason(e: &crate::Error) -> String {
    match e {
        crate::Error::InvalidArgument { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}
