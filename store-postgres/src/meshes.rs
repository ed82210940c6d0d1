//! Kuma's Meshes as kuma-cp universal keeps them: rows `(name, '', 'Mesh')` of `resources`,
//! `spec` the Mesh spec in protobuf JSON (`core_model.ToJSON` in kuma-cp's
//! `pkg/plugins/resources/postgres/pgx_store.go`), changes announced by Kuma's trigger
//! `notify_event` on channel `resource_events` with `{"action","data":{"name","mesh","type"}}`
//! (migration `1610445956_update_notify_event`).

use std::time::Duration;

use ca_core::{Error, UpstreamError};

use crate::{Failure, PostgresSecretStore, STORE};

/// The `type` of a Mesh's row.
pub const MESH_TYPE: &str = "Mesh";

/// The channel Kuma's `notify_event` trigger notifies.
pub const NOTIFY_CHANNEL: &str = "resource_events";

/// Notifications waiting to be read at most (more are dropped: one is enough to relist).
const BUFFERED_NOTIFICATIONS: usize = 16;

/// One Mesh row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshRow {
    /// The mesh's name (`resources.name`).
    pub name: String,
    /// Kuma's `version` of the row (bumped on every update).
    pub version: i32,
    /// The spec (protobuf JSON), or `Err(size in bytes)` when it is larger than asked for (it
    /// is not read).
    pub spec: Result<Option<String>, i64>,
}

/// Notifications about Mesh rows, on a connection of their own.
#[derive(Debug)]
pub struct MeshNotifications {
    /// Kept: dropping the client closes the LISTEN connection.
    _client: tokio_postgres::Client,
    rx: tokio::sync::mpsc::Receiver<String>,
}

/// What a notification says about the Mesh rows.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MeshChange {
    /// A Mesh row was inserted or updated, or a payload could not be read: read them again.
    Changed,
    /// The Mesh row of this name was deleted (`"action": "DELETE"`): an explicit deletion, which
    /// a reader honours even when it leaves no Mesh at all.
    Deleted(String),
}

impl MeshNotifications {
    /// Waits for the next change of a Mesh row (other types' notifications are skipped).
    /// `None` when the connection is gone (listen again). Notifications past the buffer are
    /// dropped: a later one (or the reader's polling) relists, but a deletion dropped so is seen
    /// only as a listing without that Mesh.
    pub async fn next(&mut self) -> Option<MeshChange> {
        while let Some(payload) = self.rx.recv().await {
            if let Some(change) = mesh_change(&payload) {
                return Some(change);
            }
        }
        None
    }
}

/// What a `resource_events` payload says about Mesh rows; `None` for other types. An unreadable
/// payload counts as a change: the reader relists, which is always safe.
fn mesh_change(payload: &str) -> Option<MeshChange> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(payload) else {
        return Some(MeshChange::Changed);
    };
    if v["data"]["type"].as_str().is_some_and(|t| t != MESH_TYPE) {
        return None;
    }
    match (v["action"].as_str(), v["data"]["name"].as_str()) {
        (Some("DELETE"), Some(name)) => Some(MeshChange::Deleted(name.to_owned())),
        _ => Some(MeshChange::Changed),
    }
}

impl PostgresSecretStore {
    /// Every Mesh row, by name: at most `max_rows` (the first by name), a spec over
    /// `max_spec_bytes` left unread (its size given instead). Bounded by the store's timeout.
    ///
    /// # Errors
    /// [`UpstreamError`] when the database cannot be read within the timeout.
    pub async fn mesh_rows(
        &self,
        max_rows: usize,
        max_spec_bytes: usize,
    ) -> Result<Vec<MeshRow>, Error> {
        let max_rows = i64::try_from(max_rows).unwrap_or(i64::MAX);
        let max_spec = i32::try_from(max_spec_bytes).unwrap_or(i32::MAX);
        self.retrying("reading Mesh rows", || async move {
            let client = self.pool.get().await?;
            let rows = client
                .query(
                    "SELECT name::text, version, \
                            CASE WHEN spec IS NULL OR octet_length(spec) <= $1 THEN spec END, \
                            COALESCE(octet_length(spec), 0) \
                     FROM resources WHERE type = $2 AND mesh = '' ORDER BY name LIMIT $3",
                    &[&max_spec, &MESH_TYPE, &max_rows],
                )
                .await?;
            Ok::<_, Failure>(
                rows.iter()
                    .map(|r| {
                        let size: i32 = r.get(3);
                        let spec: Option<String> = r.get(2);
                        MeshRow {
                            name: r.get(0),
                            version: r.get(1),
                            spec: if size > max_spec {
                                Err(i64::from(size))
                            } else {
                                Ok(spec)
                            },
                        }
                    })
                    .collect(),
            )
        })
        .await
    }

    /// LISTENs on Kuma's [`NOTIFY_CHANNEL`] on a connection of its own.
    ///
    /// # Errors
    /// [`UpstreamError`] when the connection or the LISTEN fails within `timeout`.
    pub async fn listen_meshes(&self, timeout: Duration) -> Result<MeshNotifications, Error> {
        let (client, rx) = self
            .conn_url
            .listen(NOTIFY_CHANNEL, BUFFERED_NOTIFICATIONS, timeout)
            .await
            .map_err(|why| {
                UpstreamError::unavailable(
                    STORE,
                    format!("LISTEN {NOTIFY_CHANNEL} in {}: {why}", self.url),
                )
            })?;
        Ok(MeshNotifications {
            _client: client,
            rx,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_mesh_notifications_count() {
        assert_eq!(
            mesh_change(r#"{"action":"UPDATE","data":{"name":"default","mesh":"","type":"Mesh"}}"#),
            Some(MeshChange::Changed)
        );
        assert_eq!(
            mesh_change(r#"{"action":"DELETE","data":{"name":"second","mesh":"","type":"Mesh"}}"#),
            Some(MeshChange::Deleted("second".into()))
        );
        assert_eq!(
            mesh_change(
                r#"{"action":"DELETE","data":{"name":"x","mesh":"default","type":"Secret"}}"#
            ),
            None
        );
        assert_eq!(mesh_change("not json"), Some(MeshChange::Changed));
    }
}
