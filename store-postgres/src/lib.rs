//! # store-postgres
//!
//! A [`SecretStore`] on PostgreSQL, in Kuma's own schema: the `resources` table kuma-cp keeps in
//! universal mode (`store.type: postgres`). Issuer replicas on VMs share one CA through it, and
//! meshca serves the builtin CA kuma-cp created (and the other way round).
//!
//! - A mesh's secret ([`Scope::Mesh`]) is the row `(name, mesh, 'Secret')`, a global one
//!   ([`Scope::Global`]: the bootstrap TLS CA, the token signing key, CA switch state)
//!   `(name, '', 'GlobalSecret')`; `spec` is Kuma's protobuf JSON `{"data":"<base64>"}`. Builtin
//!   CA names are Kuma's (`<mesh>.ca-builtin-cert-<backend>`), as every store's.
//! - `create_if_absent` is `INSERT … ON CONFLICT DO NOTHING` on Kuma's primary key, then a read
//!   of the winner: of replicas racing on an empty database exactly one CA is stored.
//! - `put` replaces the value and bumps Kuma's `version` in one `UPDATE` (under the row's lock),
//!   so no concurrent write is lost and a kuma-cp that read the row before fails its own
//!   optimistic `WHERE version = <read>` check, as Kuma's store expects; a missing row is
//!   inserted.
//! - A mesh secret is owned by the mesh's `Mesh` row when kuma-cp has one (as kuma-cp's own
//!   secrets are), so deleting the Mesh in Kuma deletes them with it; without one it has no
//!   owner.
//! - The schema is created with Kuma's DDL only when `resources` does not exist (under an
//!   advisory lock, so replicas starting together create it once); an existing schema is never
//!   altered. Every read goes to the database: a key another replica rotated is what the next
//!   read returns.
//! - Kuma's Meshes are read from the same table ([`PostgresSecretStore::mesh_rows`]: rows
//!   `(name, '', 'Mesh')`, spec in protobuf JSON, bounded in number and size) and followed
//!   through Kuma's `notify_event` trigger ([`PostgresSecretStore::listen_meshes`], LISTEN on
//!   `resource_events` on a connection of its own).
//! - Every statement is bounded (`statement_timeout`, `lock_timeout`, pool waits) by the
//!   store's timeout; a lost connection is retried with backoff within it. Credentials never
//!   appear in `Debug`, logs or errors.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod conn;
mod meshes;
mod schema;
mod spec;

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ca_core::{Created, Error, Scope, SecretBytes, SecretName, SecretStore, UpstreamError};
use deadpool_postgres::{Pool, PoolError};
use tokio_postgres::error::SqlState;

pub use conn::{PostgresUrl, Tls, UrlError};
pub use meshes::{MeshChange, MeshNotifications, MeshRow, MESH_TYPE, NOTIFY_CHANNEL};

/// The `type` of a mesh secret's row.
pub const SECRET_TYPE: &str = "Secret";
/// The `type` of a global secret's row.
pub const GLOBAL_SECRET_TYPE: &str = "GlobalSecret";
/// Connections per store.
const POOL_SIZE: usize = 8;
/// Attempts of `put` when the row vanished and reappeared in between.
const PUT_ATTEMPTS: usize = 5;
/// The name errors and logs give the store.
const STORE: &str = "postgres secret store";

/// Mesh and global secrets in Kuma's `resources` table.
pub struct PostgresSecretStore {
    pool: Pool,
    url: String,
    /// For connections of their own (LISTEN).
    conn_url: PostgresUrl,
    timeout: Duration,
    schema: tokio::sync::OnceCell<()>,
}

impl fmt::Debug for PostgresSecretStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSecretStore")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Why one attempt failed: worth another try within the timeout, or not.
enum Failure {
    Transient(String, Box<dyn std::error::Error + Send + Sync>),
    Final(Error),
}

impl From<PoolError> for Failure {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Backend(e) => e.into(),
            other => Failure::Transient(format!("no connection ({other})"), Box::new(other)),
        }
    }
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.code() {
            None => Failure::Transient(format!("connection: {e}"), Box::new(e)),
            Some(c)
                if *c == SqlState::QUERY_CANCELED
                    || *c == SqlState::LOCK_NOT_AVAILABLE
                    || *c == SqlState::T_R_SERIALIZATION_FAILURE
                    || *c == SqlState::T_R_DEADLOCK_DETECTED
                    || *c == SqlState::ADMIN_SHUTDOWN
                    || *c == SqlState::CANNOT_CONNECT_NOW
                    || *c == SqlState::TOO_MANY_CONNECTIONS =>
            {
                Failure::Transient(db_message(&e), Box::new(e))
            }
            Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE => Failure::Final(
                UpstreamError::refused(
                    STORE,
                    format!(
                        "{}: the database role needs SELECT, INSERT and UPDATE on Kuma's \
                         `resources` table (and CREATE on the schema when it is absent)",
                        db_message(&e)
                    ),
                )
                .with_source(e)
                .into(),
            ),
            Some(_) => Failure::Final(
                UpstreamError::refused(STORE, db_message(&e))
                    .with_source(e)
                    .into(),
            ),
        }
    }
}

/// The server's message (never the connection parameters).
fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} ({})", d.message(), d.code().code()),
        None => e.to_string(),
    }
}

/// The row of `name` in `scope`: (mesh column, type column).
fn row_of(scope: Scope<'_>) -> (&str, &'static str) {
    match scope {
        Scope::Mesh(m) => (m.as_str(), SECRET_TYPE),
        Scope::Global => ("", GLOBAL_SECRET_TYPE),
    }
}

impl PostgresSecretStore {
    /// A store on the database at `url`; every operation (schema creation included) is bounded
    /// by `timeout`, retries of a lost connection included. Nothing is contacted yet.
    ///
    /// # Errors
    /// [`UpstreamError`] when the TLS settings or the pool cannot be made.
    pub fn new(url: &PostgresUrl, timeout: Duration) -> Result<Self, Error> {
        let pool = url
            .pool(POOL_SIZE, timeout)
            .map_err(|why| UpstreamError::refused(STORE, format!("{url}: {why}")))?;
        Ok(Self {
            pool,
            url: url.to_string(),
            conn_url: url.clone(),
            timeout,
            schema: tokio::sync::OnceCell::new(),
        })
    }

    /// [`new`](Self::new), then the schema checked (created when absent): a database that
    /// cannot be reached or used is reported here, before anything else is written.
    ///
    /// # Errors
    /// [`UpstreamError`] when the database cannot be reached within `timeout` or refuses.
    pub async fn connect(url: &PostgresUrl, timeout: Duration) -> Result<Self, Error> {
        let store = Self::new(url, timeout)?;
        store.ensure_schema().await?;
        Ok(store)
    }

    /// The database, for messages (`postgres://user@host:port/db`, never the password).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs `attempt` until it succeeds, fails for good, or the timeout passes; transient
    /// failures (a lost connection, a statement cancelled) are retried with backoff.
    async fn retrying<T, F, Fut>(&self, doing: &str, mut attempt: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let deadline = Instant::now() + self.timeout;
        let mut pause = Duration::from_millis(100);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let outcome = match tokio::time::timeout(left, attempt()).await {
                Ok(o) => o,
                Err(_) => {
                    return Err(UpstreamError::timeout(
                        STORE,
                        format!("{doing} in {}", self.url),
                        self.timeout,
                    )
                    .into())
                }
            };
            match outcome {
                Ok(v) => return Ok(v),
                Err(Failure::Final(e)) => return Err(e),
                Err(Failure::Transient(why, source)) => {
                    if Instant::now() + pause >= deadline {
                        return Err(UpstreamError::unavailable(
                            STORE,
                            format!("{doing} in {}: {why}", self.url),
                        )
                        .with_source(source)
                        .into());
                    }
                    tracing::debug!(store = %self.url, %why, "retrying: {doing}");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// Creates Kuma's schema when `resources` is absent (once per store).
    async fn ensure_schema(&self) -> Result<(), Error> {
        self.schema
            .get_or_try_init(|| self.retrying("checking Kuma's schema", || self.try_schema()))
            .await
            .map(|_| ())
    }

    async fn try_schema(&self) -> Result<(), Failure> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&schema::SCHEMA_LOCK])
            .await?;
        let exists: bool = tx.query_one(schema::EXISTS, &[]).await?.get(0);
        if !exists {
            tx.batch_execute(schema::CREATE).await?;
            tx.execute(schema::RECORD_VERSION, &[&schema::KUMA_SCHEMA_VERSION])
                .await?;
            tracing::info!(store = %self.url, "created Kuma's schema (resources table, notify trigger)");
        }
        tx.commit().await?;
        Ok(())
    }

    async fn try_get(
        &self,
        scope: Scope<'_>,
        name: &SecretName,
    ) -> Result<Option<Vec<u8>>, Failure> {
        let (mesh, kind) = row_of(scope);
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT spec FROM resources WHERE name = $1 AND mesh = $2 AND type = $3",
                &[&name.as_str(), &mesh, &kind],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let spec: Option<String> = row.get(0);
        spec::decode(spec.as_deref().unwrap_or("{}"))
            .map(Some)
            .map_err(|why| {
                Failure::Final(
                    UpstreamError::refused(
                        STORE,
                        format!("row ({name}, {mesh:?}, {kind}) in {}: {why}", self.url),
                    )
                    .into(),
                )
            })
    }

    /// Inserts unless present; whether this call inserted.
    async fn try_insert(
        &self,
        scope: Scope<'_>,
        name: &SecretName,
        value: &[u8],
    ) -> Result<bool, Failure> {
        let (mesh, kind) = row_of(scope);
        let owner: Option<&str> = scope.mesh().map(|m| m.as_str());
        let client = self.pool.get().await?;
        let n = client
            .execute(
                "WITH owner AS (SELECT name, mesh, type FROM resources \
                                WHERE type = 'Mesh' AND mesh = '' AND name = $5::varchar) \
                 INSERT INTO resources (name, mesh, type, version, spec, creation_time, \
                                        modification_time, owner_name, owner_mesh, owner_type, \
                                        labels, status) \
                 SELECT $1, $2, $3, 0, $4, now() AT TIME ZONE 'utc', now() AT TIME ZONE 'utc', \
                        o.name, o.mesh, o.type, '{}'::jsonb, '{}'::jsonb \
                 FROM (SELECT 1) AS one LEFT JOIN owner AS o ON true \
                 ON CONFLICT (name, mesh, type) DO NOTHING",
                &[&name.as_str(), &mesh, &kind, &spec::encode(value), &owner],
            )
            .await?;
        Ok(n == 1)
    }

    /// Replaces an existing row's value and bumps Kuma's `version` in one statement (under
    /// the row's lock): whether there was a row.
    async fn try_update(
        &self,
        scope: Scope<'_>,
        name: &SecretName,
        value: &[u8],
    ) -> Result<bool, Failure> {
        let (mesh, kind) = row_of(scope);
        let client = self.pool.get().await?;
        let n = client
            .execute(
                "UPDATE resources SET spec = $1, version = version + 1, \
                        modification_time = now() AT TIME ZONE 'utc' \
                 WHERE name = $2 AND mesh = $3 AND type = $4",
                &[&spec::encode(value), &name.as_str(), &mesh, &kind],
            )
            .await?;
        Ok(n == 1)
    }
}

#[async_trait]
impl SecretStore for PostgresSecretStore {
    async fn get(&self, scope: Scope<'_>, name: &SecretName) -> Result<Option<SecretBytes>, Error> {
        self.ensure_schema().await?;
        let doing = format!("reading secret {name} ({scope})");
        Ok(self
            .retrying(&doing, || self.try_get(scope, name))
            .await?
            .map(SecretBytes::new))
    }

    async fn create_if_absent(
        &self,
        scope: Scope<'_>,
        name: &SecretName,
        value: &[u8],
    ) -> Result<(SecretBytes, Created), Error> {
        ca_core::check_secret_value(value)?;
        self.ensure_schema().await?;
        let doing = format!("creating secret {name} ({scope})");
        if self
            .retrying(&doing, || self.try_insert(scope, name, value))
            .await?
        {
            return Ok((SecretBytes::new(value.to_vec()), Created::Ours));
        }
        let winner = self
            .retrying(&doing, || self.try_get(scope, name))
            .await?
            .ok_or_else(|| {
                Error::from(UpstreamError::unavailable(
                    STORE,
                    format!("{doing}: the row that won the race is gone again"),
                ))
            })?;
        Ok((SecretBytes::new(winner), Created::Existing))
    }

    async fn put(&self, scope: Scope<'_>, name: &SecretName, value: &[u8]) -> Result<(), Error> {
        ca_core::check_secret_value(value)?;
        self.ensure_schema().await?;
        let doing = format!("writing secret {name} ({scope})");
        for _ in 0..PUT_ATTEMPTS {
            if self
                .retrying(&doing, || self.try_update(scope, name, value))
                .await?
            {
                return Ok(());
            }
            // No row yet: create it, unless another writer just did (then update that).
            if self
                .retrying(&doing, || self.try_insert(scope, name, value))
                .await?
            {
                return Ok(());
            }
        }
        Err(UpstreamError::unavailable(
            STORE,
            format!("{doing}: the row was deleted and created again {PUT_ATTEMPTS} times in a row"),
        )
        .into())
    }

    fn location(&self, scope: Scope<'_>, name: &SecretName) -> String {
        let (mesh, kind) = row_of(scope);
        format!("resources row ({name}, {mesh:?}, {kind}) in {}", self.url)
    }
}
