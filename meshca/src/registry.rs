//! The backends this build ships, as one [`Registry`].

use ca_core::Registry;

/// Every backend compiled into this build: `builtin` and `provided` always, and each remote
/// backend whose cargo feature is on, each with its default settings (the default AWS credential
/// chain, an in-cluster or kubeconfig Kubernetes client, requests in
/// [`CERTMANAGER_NAMESPACE_ENV`]'s namespace).
///
/// Add a backend type of your own with [`Registry::with`]; see the README's "Write your own
/// backend".
pub fn registry() -> Registry {
    let registry = Registry::empty()
        .with(backend_builtin::BuiltinFactory::new())
        .with(backend_provided::ProvidedFactory::new());
    #[cfg(feature = "vault")]
    let registry = registry.with(backend_vault::VaultFactory::new());
    #[cfg(feature = "acmpca")]
    let registry = registry.with(backend_acmpca::AcmpcaFactory::new());
    #[cfg(feature = "certmanager")]
    let registry = registry.with(match certmanager_namespace() {
        Some(ns) => backend_certmanager::CertmanagerFactory::new().with_namespace(ns),
        None => backend_certmanager::CertmanagerFactory::new(),
    });
    registry
}

/// Environment variable naming the namespace certmanager backends create CertificateRequests
/// in; default `MESHCA_NAMESPACE`, else the pod's namespace, else the Kubernetes client's default
/// namespace (outside a pod, the kubeconfig context's, as kubectl picks it).
#[cfg(feature = "certmanager")]
pub const CERTMANAGER_NAMESPACE_ENV: &str = "MESHCA_CERTMANAGER_NAMESPACE";

#[cfg(feature = "certmanager")]
fn certmanager_namespace() -> Option<String> {
    std::env::var(CERTMANAGER_NAMESPACE_ENV)
        .ok()
        .map(|n| n.trim().to_owned())
        .filter(|n| ca_core::is_namespace_name(n))
        .or_else(ca_core::named_system_namespace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ca_core::config::Mesh;

    #[test]
    fn missing_backend_types_are_refused_with_their_path() {
        let yaml = "type: Mesh\nname: m\nmtls:\n  enabledBackend: c\n  backends:\n    - name: b\n      type: builtin\n    - name: c\n      type: certmanager\n      conf:\n        issuerRef: {name: x}\n    - name: d\n      type: hsm\n";
        // certmanager stands for any type this build lacks.
        let builtin_only = Registry::empty().with(backend_builtin::BuiltinFactory::new());
        let err = Mesh::from_yaml(yaml, &builtin_only).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid mesh configuration: mtls.backends[1].type: backend type certmanager is not available in this build yet; mtls.backends[2].type: unknown type \"hsm\" (one of builtin)"
        );
    }
}
