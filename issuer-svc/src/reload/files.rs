//! `--mesh-source files`: a directory of Mesh YAML files (or the embedded default), polled for
//! changes; one manager source per file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use meshca::Manager;

use super::{Applier, Doc, EmptyListing};
use crate::serve::metrics::Metrics;

/// The config used when no `--mesh-config` is given.
pub(crate) const DEFAULT_MESH_YAML: &str = "\
type: Mesh
name: default
mtls:
  enabledBackend: ca-1
  backends:
    - name: ca-1
      type: builtin
      conf:
        caCert:
          keyType: ecdsa-p256
";

/// Where mesh configs come from.
#[derive(Clone, Debug)]
pub(crate) enum ConfigSource {
    Embedded,
    Dir(PathBuf),
}

/// Mesh YAML files (or the embedded default), followed by polling.
#[derive(Debug)]
pub(crate) struct FileSource {
    applier: Applier,
    source: ConfigSource,
}

impl FileSource {
    pub(crate) fn new(manager: Arc<Manager>, source: ConfigSource, metrics: Arc<Metrics>) -> Self {
        Self {
            applier: Applier::new(manager, metrics, "files"),
            source,
        }
    }

    /// Every file now, or `Err` (logged) when the directory cannot be read.
    fn read_source(&self) -> Result<Vec<Doc>, ()> {
        match &self.source {
            ConfigSource::Embedded => Ok(vec![Doc {
                key: "<embedded>".into(),
                text: Ok(DEFAULT_MESH_YAML.into()),
            }]),
            ConfigSource::Dir(dir) => read_dir_yaml(dir).map_err(|e| {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot read mesh config directory; keeping the current config");
            }),
        }
    }

    /// Checks every file as a reload would, with the manager's dry run: nothing is built for
    /// real and nothing is persisted. `serve` runs this before it writes anything. Returns the
    /// number of files refused (each logged).
    pub(crate) async fn dry_run(&self) -> usize {
        match self.read_source() {
            Ok(docs) => self.applier.dry_run(&docs).await.len(),
            Err(()) => 1,
        }
    }

    /// Reads the config source and applies what changed: a deleted file takes its meshes with
    /// it. Returns the number of files refused.
    pub(crate) async fn reload(&self) -> usize {
        match self.read_source() {
            Ok(docs) => self
                .applier
                .apply_listing(docs, EmptyListing::Honour)
                .await
                .len(),
            Err(()) => 1,
        }
    }

    /// Polls the config source every `interval`.
    pub(crate) async fn run(self: Arc<Self>, interval: Duration) {
        if !matches!(self.source, ConfigSource::Dir(_)) {
            return;
        }
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.reload().await;
        }
    }
}

/// `*.yaml` / `*.yml` files of `dir`, sorted by name, with their contents, or why a file cannot
/// be used (unreadable, not UTF-8, over the size limit).
fn read_dir_yaml(dir: &Path) -> std::io::Result<Vec<Doc>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let is_yaml = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e == "yaml" || e == "yml");
        if !is_yaml || !path.is_file() {
            continue;
        }
        let text = crate::files::read_config_file(&path, "mesh config")
            .map_err(|e| crate::api::status::message(&e));
        out.push(Doc {
            key: path.display().to_string(),
            text,
        });
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_is_a_valid_mesh() {
        assert_eq!(
            crate::meshfile::parse(DEFAULT_MESH_YAML, &meshca::registry())
                .unwrap()
                .len(),
            1
        );
    }
}
