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
        let ctx = BuildContext::new(self.ctx.store.clone(), sources).dry_run();
        let enabled = mesh.enabled_backend_indexed();
        let mut violations = Violations::default();
        let mut warnings = Vec::new();
        let mut enabled_built = None;
        let backends = mesh.mtls.as_ref().map_or(&[][..], |m| &m.backends[..]);
        for (index, backend) in backends.iter().enumerate() {
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
            return Ok(Validation {
                backend: None,
                warnings,
                test_certificate: None,
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
        })
    }
}
