//! Mesh configuration from a directory of YAML files (or the embedded default), polled for
//! changes and applied to the library's [`Manager`], one source per file.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ca_core::Error;
use meshca::Manager;

use crate::files::ReadError;
use crate::hash::sha256_hex;
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

/// Config files by path: their text, or why they cannot be read.
type ConfigFiles = Vec<(String, Result<String, ReadError>)>;

/// Why one config file was refused; the meshes it defined before stay.
#[derive(Debug, thiserror::Error)]
enum Refused {
    /// The file cannot be read.
    #[error(transparent)]
    Unreadable(#[from] ReadError),
    /// Its Meshes are invalid, or the manager refused them.
    #[error(transparent)]
    Config(#[from] Error),
    /// A mesh another file already defines (a dry run sees every file at once).
    #[error("mesh `{mesh}` is already defined in {other}")]
    Duplicate { mesh: String, other: String },
}

/// Applies config files to the manager when they change.
#[derive(Debug)]
pub(crate) struct Reloader {
    manager: Arc<Manager>,
    source: ConfigSource,
    metrics: Arc<Metrics>,
    /// Hash of each file's content when it was last looked at (applied or refused).
    seen: Mutex<HashMap<String, String>>,
    /// Serializes reloads.
    lock: tokio::sync::Mutex<()>,
}

impl Reloader {
    pub(crate) fn new(manager: Arc<Manager>, source: ConfigSource, metrics: Arc<Metrics>) -> Self {
        Self {
            manager,
            source,
            metrics,
            seen: Mutex::default(),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    fn read_source(&self) -> Result<ConfigFiles, ()> {
        match &self.source {
            ConfigSource::Embedded => Ok(vec![(
                "<embedded>".into(),
                Ok(DEFAULT_MESH_YAML.into()),
            )]),
            ConfigSource::Dir(dir) => read_dir_yaml(dir).map_err(|e| {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot read mesh config directory; keeping the current config");
            }),
        }
    }

    /// Checks every file as a reload would, with the manager's dry run: nothing is built for
    /// real and nothing is persisted. `serve` runs this before it writes anything. Returns the
    /// number of files refused (each logged).
    pub(crate) async fn dry_run(&self) -> usize {
        let Ok(files) = self.read_source() else {
            return 1;
        };
        let mut refused = 0;
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for (file, text) in files {
            let result: Result<(), Refused> = match text {
                Ok(text) => {
                    match crate::meshfile::parse_off_runtime(text, self.manager.registry()).await {
                        Ok(meshes) => {
                            let dup = meshes.iter().find_map(|m| {
                                seen.insert(m.name.to_string(), file.clone())
                                    .map(|other| (m.name.to_string(), other))
                            });
                            match dup {
                                Some((mesh, other)) => Err(Refused::Duplicate { mesh, other }),
                                None => self
                                    .manager
                                    .check(&file, &meshes)
                                    .await
                                    .map_err(Refused::from),
                            }
                        }
                        Err(e) => Err(e.into()),
                    }
                }
                Err(unreadable) => Err(unreadable.into()),
            };
            if let Err(e) = result {
                refused += 1;
                tracing::error!(file = %file, error = %crate::api::status::message(&e), "mesh config refused");
            }
        }
        refused
    }

    /// Reads the config source and applies what changed. Returns the number of files refused.
    pub(crate) async fn reload(&self) -> usize {
        let _serial = self.lock.lock().await;
        let Ok(files) = self.read_source() else {
            return 1;
        };
        let present: Vec<&String> = files.iter().map(|(n, _)| n).collect();
        // Files that disappeared take their meshes with them.
        let gone: Vec<String> = lock(&self.seen)
            .keys()
            .filter(|k| !present.contains(k))
            .cloned()
            .collect();
        for file in gone {
            lock(&self.seen).remove(&file);
            for m in self.manager.remove_source(&file).await {
                tracing::info!(mesh = %m, file = %file, "mesh config removed (its file was deleted)");
            }
        }
        let mut refused = 0;
        for (file, text) in files {
            let hash = match &text {
                Ok(t) => sha256_hex(t.as_bytes()),
                Err(e) => sha256_hex(crate::api::status::message(e).as_bytes()),
            };
            if lock(&self.seen).get(&file).is_some_and(|h| *h == hash) {
                continue;
            }
            // Remember the hash either way, so the same bad content is not re-tried every poll;
            // the meshes a refused file defined before stay.
            lock(&self.seen).insert(file.clone(), hash);
            let result: Result<(), Refused> = match text {
                Ok(text) => {
                    match crate::meshfile::parse_off_runtime(text, self.manager.registry()).await {
                        Ok(meshes) => self
                            .manager
                            .apply(&file, meshes)
                            .await
                            .map(|_| ())
                            .map_err(Refused::from),
                        Err(e) => {
                            self.metrics.config_reload("refused");
                            Err(e.into())
                        }
                    }
                }
                Err(unreadable) => {
                    self.metrics.config_reload("refused");
                    Err(unreadable.into())
                }
            };
            if let Err(e) = result {
                refused += 1;
                tracing::warn!(
                    file = %file,
                    error = %crate::api::status::message(&e),
                    "mesh config refused; the previous config stays in effect"
                );
            }
        }
        refused
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `*.yaml` / `*.yml` files of `dir`, sorted by name, with their contents, or why a file cannot
/// be used (unreadable, not UTF-8, over the size limit).
fn read_dir_yaml(dir: &Path) -> std::io::Result<ConfigFiles> {
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
        let text = crate::files::read_config_file(&path, "mesh config");
        out.push((path.display().to_string(), text));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
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
