//! The token store: `auth/token/create`, `lookup-self` and `renew-self`,
//! with TTLs counted in real time (Vault's `vault/token_store.go` and the expiration
//! manager's renewal rules).

use serde_json::{json, Value};

use super::util::{self, go_duration, now_unix, SYSTEM_MAX_TTL};
use super::{bad, Core, VaultError};

/// A service token.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    /// The secret id (`hvs.…`).
    pub(crate) id: String,
    /// Its accessor.
    pub(crate) accessor: String,
    /// Policies, `default` included unless excluded at creation.
    pub(crate) policies: Vec<String>,
    /// TTL at creation/login (seconds, 0 = never expires).
    pub(crate) creation_ttl: u64,
    /// `explicit_max_ttl` (hard cap from issue time, 0 = none).
    pub(crate) explicit_max_ttl: u64,
    /// Max TTL from the auth role (cap on renewals, 0 = system max).
    pub(crate) max_ttl: u64,
    /// Periodic token period (0 = not periodic).
    pub(crate) period: u64,
    /// Whether renew-self is allowed.
    pub(crate) renewable: bool,
    /// Unix seconds of issue.
    pub(crate) issue_time: u64,
    /// Unix seconds of expiry (None = never).
    pub(crate) expire_time: Option<u64>,
    /// Creation path (`auth/token/create`, `auth/cert/login`…).
    pub(crate) path: String,
    /// Display name.
    pub(crate) display_name: String,
    /// Metadata from the auth method.
    pub(crate) meta: Option<Value>,
    /// Whether the token has no parent.
    pub(crate) orphan: bool,
}

impl Token {
    /// Whether the token is past its expiry.
    pub(crate) fn expired(&self) -> bool {
        self.expire_time.is_some_and(|e| now_unix() >= e)
    }

    /// Remaining seconds (0 for non-expiring tokens, like Vault's `ttl: 0`).
    pub(crate) fn remaining(&self) -> u64 {
        self.expire_time
            .map(|e| e.saturating_sub(now_unix()))
            .unwrap_or(0)
    }

    /// The `auth` block Vault returns on create/login/renew.
    pub(crate) fn auth_block(&self, lease_duration: u64) -> Value {
        let token_policies: Vec<&String> = self.policies.iter().collect();
        json!({
            "client_token": self.id,
            "accessor": self.accessor,
            "policies": self.policies,
            "token_policies": token_policies,
            "identity_policies": null,
            "metadata": self.meta.clone().unwrap_or(Value::Null),
            "lease_duration": lease_duration,
            "renewable": self.renewable,
            "entity_id": "",
            "token_type": "service",
            "orphan": self.orphan,
            "mfa_requirement": null,
            "num_uses": 0,
        })
    }
}

/// Parameters for minting a token.
#[derive(Debug, Default)]
pub(crate) struct NewToken {
    /// Requested policies (`default` is added unless `no_default_policy`).
    pub(crate) policies: Vec<String>,
    /// TTL (0 = default: 768h, or never for root-policy tokens).
    pub(crate) ttl: u64,
    /// Hard cap.
    pub(crate) explicit_max_ttl: u64,
    /// Renewal cap from an auth role.
    pub(crate) max_ttl: u64,
    /// Period.
    pub(crate) period: u64,
    /// Renewable flag.
    pub(crate) renewable: bool,
    /// Skip the `default` policy.
    pub(crate) no_default_policy: bool,
    /// Creation path.
    pub(crate) path: String,
    /// Display name.
    pub(crate) display_name: String,
    /// Metadata.
    pub(crate) meta: Option<Value>,
    /// No parent.
    pub(crate) orphan: bool,
}

/// Mints a token into the namespace and returns a copy.
pub(crate) fn mint(ns: &mut Core, req: NewToken) -> Token {
    let mut policies: Vec<String> = req.policies;
    if !req.no_default_policy && !policies.iter().any(|p| p == "root" || p == "default") {
        policies.push("default".into());
    }
    policies.sort();
    policies.dedup();
    let is_root = policies.iter().any(|p| p == "root");
    let now = now_unix();
    let mut ttl = if req.period > 0 { req.period } else { req.ttl };
    if ttl == 0 && !is_root {
        ttl = SYSTEM_MAX_TTL;
    }
    if req.explicit_max_ttl > 0 && (ttl == 0 || ttl > req.explicit_max_ttl) {
        ttl = req.explicit_max_ttl;
    }
    if req.max_ttl > 0 && ttl > req.max_ttl {
        ttl = req.max_ttl;
    }
    let token = Token {
        id: format!("hvs.{}", util::random_id(24)),
        accessor: util::random_id(24),
        policies,
        creation_ttl: ttl,
        explicit_max_ttl: req.explicit_max_ttl,
        max_ttl: req.max_ttl,
        period: req.period,
        renewable: req.renewable,
        issue_time: now,
        expire_time: (ttl > 0).then_some(now + ttl),
        path: req.path,
        display_name: req.display_name,
        meta: req.meta,
        orphan: req.orphan,
    };
    ns.tokens.insert(token.id.clone(), token.clone());
    token
}

/// `auth/token/create`: body fields `policies`, `ttl`, `renewable` (default true),
/// `explicit_max_ttl`, `period`, `no_parent`, `no_default_policy`, `display_name`, `meta`.
pub(crate) fn create(ns: &mut Core, parent: &Token, body: &Value) -> Result<Value, VaultError> {
    let mut policies = util::string_list(body.get("policies"));
    if policies.is_empty() {
        policies = parent
            .policies
            .iter()
            .filter(|p| *p != "default")
            .cloned()
            .collect();
    }
    let token = mint(
        ns,
        NewToken {
            policies,
            ttl: util::duration_field(body, "ttl").map_err(bad)?,
            explicit_max_ttl: util::duration_field(body, "explicit_max_ttl").map_err(bad)?,
            max_ttl: 0,
            period: util::duration_field(body, "period").map_err(bad)?,
            renewable: util::bool_field(body, "renewable", true).map_err(bad)?,
            no_default_policy: util::bool_field(body, "no_default_policy", false).map_err(bad)?,
            path: "auth/token/create".into(),
            display_name: {
                let d = util::string_field(body, "display_name");
                if d.is_empty() {
                    "token".into()
                } else {
                    format!("token-{d}")
                }
            },
            meta: body.get("meta").cloned(),
            orphan: util::bool_field(body, "no_parent", false).map_err(bad)?,
        },
    );
    Ok(json!({ "auth": token.auth_block(token.creation_ttl) }))
}

/// `auth/token/lookup-self` data.
pub(crate) fn lookup(token: &Token) -> Value {
    let mut data = json!({
        "accessor": token.accessor,
        "creation_time": token.issue_time,
        "creation_ttl": token.creation_ttl,
        "display_name": token.display_name,
        "entity_id": "",
        "expire_time": token.expire_time.map(util::rfc3339),
        "explicit_max_ttl": token.explicit_max_ttl,
        "id": token.id,
        "issue_time": util::rfc3339(token.issue_time),
        "meta": token.meta.clone().unwrap_or(Value::Null),
        "num_uses": 0,
        "orphan": token.orphan,
        "path": token.path,
        "policies": token.policies,
        "renewable": token.renewable,
        "ttl": token.remaining(),
        "type": "service",
        "namespace_path": "",
    });
    if token.period > 0 {
        data["period"] = json!(token.period);
    }
    data
}

/// `auth/token/renew-self`: extends from now by `increment` (or the period / original
/// TTL), capped by `explicit_max_ttl`, the auth role's max TTL and the system max (768h)
/// measured from issue time. Returns (new lease seconds, warnings).
pub(crate) fn renew(token: &mut Token, body: &Value) -> Result<(u64, Vec<String>), VaultError> {
    if !token.renewable {
        return Err(VaultError::new(400, "lease is not renewable"));
    }
    if token.expire_time.is_none() {
        // Non-expiring (root) tokens: renewal is a no-op.
        return Ok((0, Vec::new()));
    }
    let increment = util::duration_field(body, "increment").map_err(bad)?;
    let now = now_unix();
    let mut ttl = if token.period > 0 {
        token.period
    } else if increment > 0 {
        increment
    } else {
        token.creation_ttl
    };
    let mut warnings = Vec::new();
    if token.period == 0 {
        let max = if token.max_ttl > 0 {
            token.max_ttl
        } else {
            SYSTEM_MAX_TTL
        };
        let max_left = (token.issue_time + max).saturating_sub(now);
        if ttl > max_left {
            warnings.push(format!(
                "TTL of \"{}\" exceeded the effective max_ttl of \"{}\"; TTL value is capped accordingly",
                go_duration(ttl),
                go_duration(max_left)
            ));
            ttl = max_left;
        }
    }
    if token.explicit_max_ttl > 0 {
        let left = (token.issue_time + token.explicit_max_ttl).saturating_sub(now);
        if ttl > left {
            warnings.push(format!(
                "TTL of \"{}\" exceeded the effective max_ttl of \"{}\"; TTL value is capped accordingly",
                go_duration(ttl),
                go_duration(left)
            ));
            ttl = left;
        }
    }
    token.expire_time = Some(now + ttl);
    Ok((ttl, warnings))
}
