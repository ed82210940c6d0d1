//! The one acceptance path for a file of Mesh YAML, shared by `meshca serve` (start and every
//! reload) and `meshca validate`, so the two never disagree about a file.

use std::path::PathBuf;

use ca_core::config::Mesh;
use ca_core::{Error, Registry, Violations};

/// Why a Mesh file cannot be used as the command asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum MeshFileError {
    /// The file's Meshes break rules; every violation, with its field path, is in `violations`
    /// (printed one per line before this error).
    #[error("{} has {} violation(s)", path.display(), violations.iter().count())]
    Violations {
        path: PathBuf,
        violations: Violations,
    },
    /// `--mesh` names no Mesh of the file.
    #[error("{} defines no mesh `{mesh}` (use --mesh)", path.display())]
    NoSuchMesh { path: PathBuf, mesh: String },
    /// The Mesh has no enabled backend to issue from.
    #[error("mesh `{mesh}` has mTLS disabled: set mtls.enabledBackend")]
    MtlsDisabled { mesh: String },
    /// Some Meshes failed validation (each is reported above).
    #[error("{failed} mesh(es) in {} failed validation", path.display())]
    Failed { path: PathBuf, failed: usize },
}

/// Parses every Mesh of `text` (each backend's `conf` by `backends`) (size and nesting capped by ca-core) and refuses a file that holds
/// no Mesh or defines one mesh twice.
///
/// An empty file is refused rather than read as "no meshes": truncating a file by accident must
/// not take its meshes away. Meshes disappear only when their file is deleted.
///
/// # Errors
/// [`Error::InvalidConfig`] with the violations.
pub(crate) fn parse(text: &str, backends: &Registry) -> Result<Vec<Mesh>, Error> {
    let meshes = Mesh::from_yaml_documents(text, backends)?;
    let mut v = Violations::default();
    if meshes.is_empty() {
        v.add(
            "(file)",
            "holds no Mesh (an empty file is refused; delete the file to remove its meshes)",
        );
    }
    for (i, m) in meshes.iter().enumerate() {
        if meshes[..i].iter().any(|o| o.name == m.name) {
            v.add(
                format!("(document {i}) name"),
                format!("mesh `{}` is defined twice in this file", m.name),
            );
        }
    }
    v.into_result()?;
    Ok(meshes)
}

/// [`parse`] on a blocking thread, so a large file never holds up the async runtime.
pub(crate) async fn parse_off_runtime(
    text: String,
    backends: &Registry,
) -> Result<Vec<Mesh>, Error> {
    let backends = backends.clone();
    tokio::task::spawn_blocking(move || parse(&text, &backends))
        .await
        .unwrap_or_else(|e| {
            Err(Error::Inconsistent(format!(
                "the config parser stopped: {e}"
            )))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = "type: Mesh\nname: a\n";

    #[test]
    fn empty_and_duplicate_files_are_refused() {
        for empty in ["", "\n", "# nothing\n", "---\n---\n"] {
            let err = parse(empty, &meshca::registry()).unwrap_err();
            assert!(
                err.to_string().contains("holds no Mesh"),
                "{empty:?}: {err}"
            );
        }
        let twice = format!("{ONE}---\n{ONE}");
        assert_eq!(
            parse(&twice, &meshca::registry()).unwrap_err().to_string(),
            "invalid mesh configuration: (document 1) name: mesh `a` is defined twice in this file"
        );
        assert_eq!(parse(ONE, &meshca::registry()).unwrap().len(), 1);
    }
}
