//! Work on local files: issuing from a Mesh file (`issue --config`) and `validate`.

use std::path::Path;
use std::sync::Arc;

use ca_core::{
    DirectorySecretStore, Identity, IssueParams, KeySource, KeyType, MeshName, SecretStore,
};
use meshca::{BuildContext, CertificateAuthority, Manager};

use super::{IssueArgs, ValidateArgs};
use crate::error::CliError;
use crate::meshfile::MeshFileError;

pub(super) async fn issue_local(
    config: &Path,
    a: &IssueArgs,
    tags: &[(String, String)],
    csr: Option<&[u8]>,
) -> Result<(String, Option<String>, String, String), CliError> {
    let text = crate::files::read_config_file(config, "mesh config")?;
    // One registry decodes the Mesh and builds its backend.
    let backends = meshca::registry();
    let meshes = crate::meshfile::parse_off_runtime(text, &backends).await?;
    let mesh = meshes
        .iter()
        .find(|m| m.name.as_str() == a.mesh)
        .ok_or_else(|| MeshFileError::NoSuchMesh {
            path: config.to_owned(),
            mesh: a.mesh.clone(),
        })?;
    let Some((index, backend)) = mesh.enabled_backend_indexed() else {
        return Err(MeshFileError::MtlsDisabled {
            mesh: a.mesh.clone(),
        }
        .into());
    };
    let store: Arc<dyn SecretStore> =
        Arc::new(DirectorySecretStore::new(a.data_dir.join("secrets"))?);
    let built = backends
        .build(
            &BuildContext::new(store, meshca::local_sources()),
            &mesh.name,
            index,
            backend,
        )
        .await?;
    for w in &built.warnings {
        eprintln!("meshca: warning: {w}");
    }
    // Bounded as the manager bounds every backend: `dpCert.requestTimeout`.
    let ca = meshca::Deadline::new(built.ca, backend.dp_cert_request_timeout);
    ca.ensure().await?;
    let identity = Identity::new(
        MeshName::new(a.mesh.as_str())?,
        tags.iter().map(|(k, v)| (k, v)),
    )?
    .with_profile(a.profile())?;
    let der = csr.map(csr_der).transpose()?;
    let key = match &der {
        Some(d) => KeySource::Csr(d),
        None => KeySource::Generate(KeyType::EcdsaP256),
    };
    let params = IssueParams::new(identity, key, backend.dp_cert_expiration)
        .with_common_name(backend.common_name());
    let cert = ca_core::issue_certificate(&ca, params).await?;
    let summary = format!(
        "issued {} from backend `{}` of mesh `{}`, serial {}, valid until {}",
        cert.identity(),
        backend.name,
        mesh.name,
        cert.serial_hex(),
        crate::cli::inspect::fmt_time(crate::api::wire::unix(cert.not_after())),
    );
    Ok((
        cert.chain_pem(),
        cert.key_pem()
            .and_then(|k| k.expose_str())
            .map(str::to_owned),
        cert.bundle().to_pem(),
        summary,
    ))
}

pub(super) fn csr_der(bytes: &[u8]) -> Result<Vec<u8>, CliError> {
    if bytes.starts_with(b"-----BEGIN") {
        let p = pem::parse(bytes).map_err(CliError::CsrPem)?;
        Ok(p.into_contents())
    } else {
        Ok(bytes.to_vec())
    }
}

/// Checks every Mesh of a file: violations, then (unless `--no-test-cert`) a test certificate.
pub(super) async fn validate(a: ValidateArgs) -> Result<(), CliError> {
    let text = crate::files::read_config_file(&a.config, "mesh config")?;
    let lower: Option<Arc<dyn SecretStore>> = match &a.data_dir {
        Some(d) => Some(Arc::new(DirectorySecretStore::new(d.join("secrets"))?)),
        None => None,
    };
    // The same acceptance path as `serve` (start and reload) uses for a file.
    let backends = meshca::registry();
    let meshes = match crate::meshfile::parse_off_runtime(text, &backends).await {
        Ok(m) => m,
        Err(ca_core::Error::InvalidConfig(v)) => {
            println!("{}: INVALID", a.config.display());
            for x in v.iter() {
                println!("  {}: {}", x.field, x.message);
            }
            return Err(MeshFileError::Violations {
                path: a.config.clone(),
                violations: v,
            }
            .into());
        }
        Err(e) => return Err(e.into()),
    };
    let store: Arc<dyn SecretStore> = match lower {
        Some(l) => l,
        None => Arc::new(ca_core::OverlaySecretStore::new(None)),
    };
    // Validation builds over an in-memory overlay of the store: nothing is persisted.
    let manager = Manager::builder(backends, store).build();
    let mut bad = 0;
    for mesh in &meshes {
        let r = crate::api::wire::validation(
            mesh,
            manager
                .validate(mesh, meshca::local_sources(), !a.no_test_cert)
                .await,
        );
        if r.ok {
            println!("mesh {}: OK", mesh.name);
        } else {
            bad += 1;
            println!("mesh {}: INVALID", mesh.name);
        }
        for v in &r.violations {
            println!("  {}: {}", v.field, v.message);
        }
        for w in &r.warnings {
            println!("  warning: {w}");
        }
        if let Some(t) = &r.test_certificate {
            println!(
                "  test certificate from backend `{}` ({}): {} issued by {}, valid until {}",
                t.backend,
                t.backend_type,
                t.uri_sans.first().map_or("?", String::as_str),
                t.issuer,
                crate::cli::inspect::fmt_time(t.not_after)
            );
        }
    }
    if bad > 0 {
        return Err(MeshFileError::Failed {
            path: a.config.clone(),
            failed: bad,
        }
        .into());
    }
    Ok(())
}
