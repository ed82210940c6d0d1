//! [`Created`]: a CertificateRequest this backend created, deleted once its issue is over —
//! finished, failed, or cancelled when the caller's request timeout ran out.

use std::fmt::Debug;
use std::time::Duration;

use kube::api::{Api, DeleteParams};
use serde::de::DeserializeOwned;

/// A request outlives its use only as clutter: [`Created::delete`] removes it when the issue
/// ends; if the issue is cancelled instead (the future dropped), dropping this spawns the
/// delete on the current runtime and logs what the request was still waiting for.
pub(crate) struct Created<K>
where
    K: Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    api: Api<K>,
    name: String,
    /// Where, for logs: the backend and namespace.
    backend: String,
    namespace: String,
    /// Bounds the delete.
    timeout: Duration,
    /// What to check if it is cancelled before cert-manager answered.
    hint: String,
    deleted: bool,
}

impl<K> Created<K>
where
    K: Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    pub(crate) fn new(
        api: Api<K>,
        name: String,
        backend: &str,
        namespace: &str,
        timeout: Duration,
        hint: String,
    ) -> Self {
        Self {
            api,
            name,
            backend: backend.to_owned(),
            namespace: namespace.to_owned(),
            timeout,
            hint,
            deleted: false,
        }
    }

    /// Deletes it now (the issue is over).
    pub(crate) async fn delete(mut self) {
        self.deleted = true;
        delete(
            &self.api,
            &self.name,
            &self.backend,
            &self.namespace,
            self.timeout,
        )
        .await;
    }
}

impl<K> Drop for Created<K>
where
    K: Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        tracing::warn!(
            backend = %self.backend, request = %self.name, namespace = %self.namespace,
            "the issue was cancelled (its request timeout ran out) before cert-manager answered \
             the CertificateRequest ({}); deleting it", self.hint
        );
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let api = self.api.clone();
        let name = std::mem::take(&mut self.name);
        let backend = std::mem::take(&mut self.backend);
        let namespace = std::mem::take(&mut self.namespace);
        let timeout = self.timeout;
        runtime.spawn(async move { delete(&api, &name, &backend, &namespace, timeout).await });
    }
}

/// Deletes request `name`, within `timeout`; a request already gone is fine, other failures are
/// logged (a later run's clean-up of stale requests takes it).
pub(crate) async fn delete<K>(
    api: &Api<K>,
    name: &str,
    backend: &str,
    namespace: &str,
    timeout: Duration,
) where
    K: Clone + DeserializeOwned + Debug,
{
    match tokio::time::timeout(timeout, api.delete(name, &DeleteParams::default())).await {
        Ok(Ok(_)) => {}
        Ok(Err(kube::Error::Api(s))) if s.code == 404 => {}
        Ok(Err(e)) => tracing::warn!(
            backend,
            request = name,
            namespace,
            "could not delete CertificateRequest: {}",
            ca_core::error_chain(&e)
        ),
        Err(_) => tracing::warn!(
            backend,
            request = name,
            namespace,
            "could not delete CertificateRequest within {timeout:?}"
        ),
    }
}
