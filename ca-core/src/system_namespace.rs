//! The Kubernetes namespace meshca keeps its objects in (Kuma's "system namespace"), for the
//! Kubernetes secret store and the certmanager backend alike.

/// Kuma's system namespace, used when nothing else names one.
pub const DEFAULT_SYSTEM_NAMESPACE: &str = "kuma-system";
/// Environment variable naming the namespace (the Deployment sets it from the downward API).
pub const SYSTEM_NAMESPACE_ENV: &str = "MESHCA_NAMESPACE";
/// Where a pod finds its own namespace.
pub const SERVICE_ACCOUNT_NAMESPACE_FILE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// [`SYSTEM_NAMESPACE_ENV`], else the pod's own namespace ([`SERVICE_ACCOUNT_NAMESPACE_FILE`]),
/// else [`DEFAULT_SYSTEM_NAMESPACE`]. A value that is not a namespace name (a DNS-1123 label)
/// is skipped. Where a Kubernetes client is at hand, prefer [`named_system_namespace`] and the
/// client's default namespace (the kubeconfig context's, as kubectl picks it).
pub fn system_namespace() -> String {
    named_system_namespace().unwrap_or_else(|| DEFAULT_SYSTEM_NAMESPACE.to_owned())
}

/// The namespace the process is told or runs in: [`SYSTEM_NAMESPACE_ENV`], else the pod's own
/// namespace ([`SERVICE_ACCOUNT_NAMESPACE_FILE`]); `None` outside a pod when nothing names one.
/// A value that is not a namespace name (a DNS-1123 label) is skipped.
pub fn named_system_namespace() -> Option<String> {
    let env = std::env::var(SYSTEM_NAMESPACE_ENV).ok();
    let file = std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE_FILE).ok();
    [env, file]
        .into_iter()
        .flatten()
        .map(|n| n.trim().to_owned())
        .find(|n| is_namespace_name(n))
}

/// A Kubernetes namespace name: a DNS-1123 label (at most 63 lower-case letters, digits and
/// `-`, starting and ending with a letter or digit).
pub fn is_namespace_name(n: &str) -> bool {
    crate::BackendName::new(n).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names() {
        assert!(is_namespace_name("kuma-system"));
        for bad in ["", "Kuma", "a_b", "-a", "a-", &"a".repeat(64)] {
            assert!(!is_namespace_name(bad), "{bad:?}");
        }
    }
}
