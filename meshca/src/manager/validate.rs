//! Validating a Mesh the way the global control plane does: every backend's configuration, then a
//! test certificate from the enabled one.

use super::*;

impl Manager {
    /// Validates `mesh` the way Kuma's control plane does before accepting it: builds **every**
    /// backend in `mtls.backends`, enabled or not, over an in-memory overlay of the store
    /// (nothing is persisted) with `sources`, so a broken backend is found before an operator
    /// switches `enabledBackend` to it; then, if `test_certificate`, issues a test certificate
    /// from the enabled backend.
    ///
    /// Under a [`SourcePolicy::remote`] policy (a Mesh that arrived over the network) a backend
    /// is built only when its upstream is allowed ([`SourcePolicy::check_upstream`]); the others
    /// are checked without being built and listed in [`Validation::not_contacted`]. Vault over
    /// `http://` or with `tls.skipVerify` is refused for such a Mesh.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] with the violations of every backend at their full paths
    /// (`mtls.backends[1].conf.cert[0]: ...`); another error of a backend's construction (the
    /// store failing, ...) as it is. A failed test certificate is reported in
    /// [`Validation::test_certificate`].
    pub async fn validate(
        &self,
        mesh: &Mesh,
        sources: SourcePolicy,
        test_certificate: bool,
    ) -> Result<Validation, Error> {
        let remote = sources.is_remote();
        let ctx = BuildContext::new(self.ctx.store.clone(), sources.clone()).dry_run();
        let enabled = mesh.enabled_backend_indexed();
        let mut violations = Violations::default();
        let mut warnings = Vec::new();
        let mut not_contacted = Vec::new();
        let mut enabled_built = None;
        let backends = mesh.mtls.as_ref().map_or(&[][..], |m| &m.backends[..]);
        for (index, backend) in backends.iter().enumerate() {
            if remote {
                // A Mesh from the network: what it may never ask, then whether its upstream is
                // one the operator allowed. A backend whose upstream is not allowed is checked
                // without being built: nothing is read, nothing is contacted.
                let at = ca_core::config::backend_path(index);
                let mut v = Violations::default();
                backend.remote_violations(&at, &mut v);
                let refused: Vec<String> = backend
                    .upstreams()
                    .iter()
                    .filter_map(|u| sources.check_upstream(u).err())
                    .collect();
                if !refused.is_empty() {
                    for (field, source) in backend.data_sources() {
                        if let Err(reason) = sources.check_unread(source) {
                            v.add(
                                format!("{at}.conf.{field}"),
                                format!("{} {reason}", source.describe()),
                            );
                        }
                    }
                    violations.append(v);
                    not_contacted.push(NotContacted {
                        index,
                        backend: backend.name.clone(),
                        reason: refused.join("; "),
                    });
                    continue;
                }
                if !v.is_empty() {
                    violations.append(v);
                    continue;
                }
                warnings.extend(backend.conf().remote_warnings(&at));
            }
            match self.registry.build(&ctx, &mesh.name, index, backend).await {
                Ok(built) => {
                    warnings.extend(built.warnings.iter().cloned());
                    if enabled.is_some_and(|(i, _)| i == index) {
                        enabled_built = Some(built);
                    }
                }
                Err(Error::InvalidConfig(v)) => violations.append(v),
                Err(e) => return Err(e),
            }
        }
        violations.into_result()?;
        let (Some((index, backend)), Some(built)) = (enabled, enabled_built) else {
            let backend = enabled.map(|(i, b)| (i, b.name.clone()));
            return Ok(Validation {
                backend,
                warnings,
                test_certificate: None,
                not_contacted,
            });
        };
        let test = if test_certificate {
            Some(
                ca_core::validate(
                    built.ca.as_ref(),
                    &mesh.name,
                    backend.dp_cert_expiration,
                    backend.common_name(),
                )
                .await,
            )
        } else {
            None
        };
        Ok(Validation {
            backend: Some((index, backend.name.clone())),
            warnings,
            test_certificate: test,
            not_contacted,
        })
    }
}
