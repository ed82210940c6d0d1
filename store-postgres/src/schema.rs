//! Kuma's schema: the `resources` table as kuma-cp's migrations leave it
//! (`pkg/plugins/resources/postgres/migrations/data/*.up.sql` in the Kuma repository, up to
//! `1710856785_add_status`), its `notify_event` trigger (`1610445956_update_notify_event`), and
//! golang-migrate's `schema_migrations` row saying so, so a kuma-cp started later finds its
//! schema current and migrates nothing. Created only when `resources` is absent; an existing
//! schema is never altered.

/// The last migration of Kuma's that this DDL equals.
pub(crate) const KUMA_SCHEMA_VERSION: i64 = 1_710_856_785;

/// An advisory lock key for schema creation (replicas starting at once on an empty database
/// create it once).
pub(crate) const SCHEMA_LOCK: i64 = 0x6d65_7368_6361_0001;

/// Whether Kuma's `resources` table exists in the connection's search path.
pub(crate) const EXISTS: &str = "SELECT to_regclass('resources') IS NOT NULL";

/// Kuma's DDL, in its final form.
pub(crate) const CREATE: &str = r#"
CREATE TABLE resources (
    name              varchar(253) NOT NULL,
    mesh              varchar(100) NOT NULL,
    type              varchar(100) NOT NULL,
    version           integer NOT NULL,
    spec              text,
    creation_time     TIMESTAMP NOT NULL DEFAULT now(),
    modification_time TIMESTAMP NOT NULL DEFAULT now(),
    owner_name        varchar(100),
    owner_mesh        varchar(100),
    owner_type        varchar(100),
    labels            JSONB DEFAULT '{}'::jsonb,
    status            JSONB NOT NULL DEFAULT '{}'::jsonb,
    CONSTRAINT resources_pkey PRIMARY KEY (name, mesh, type),
    CONSTRAINT owner_fk FOREIGN KEY (owner_name, owner_mesh, owner_type)
        REFERENCES resources (name, mesh, type) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS owner_fk_index ON resources (owner_type, owner_mesh, owner_name);

CREATE TABLE IF NOT EXISTS locks (
    name CHARACTER VARYING(255) PRIMARY KEY,
    record_version_number BIGINT,
    data BYTEA,
    owner CHARACTER VARYING(255)
);
CREATE SEQUENCE IF NOT EXISTS locks_rvn OWNED BY locks.record_version_number;

CREATE OR REPLACE FUNCTION notify_event() RETURNS TRIGGER AS $$
DECLARE
    data json;
    notification json;
BEGIN
    IF (TG_OP = 'DELETE') THEN
        data = json_build_object('name', OLD.name, 'mesh', OLD.mesh, 'type', OLD.type);
    ELSE
        data = json_build_object('name', NEW.name, 'mesh', NEW.mesh, 'type', NEW.type);
    END IF;
    notification = json_build_object('action', TG_OP, 'data', data);
    PERFORM pg_notify('resource_events', notification::text);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER products_notify_event
    AFTER INSERT OR UPDATE OR DELETE ON resources
    FOR EACH ROW EXECUTE PROCEDURE notify_event();

CREATE TABLE IF NOT EXISTS schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL);
"#;

/// golang-migrate's record of the version [`CREATE`] equals (`$1`: [`KUMA_SCHEMA_VERSION`]).
pub(crate) const RECORD_VERSION: &str =
    "INSERT INTO schema_migrations (version, dirty) SELECT $1, false WHERE NOT EXISTS (SELECT 1 FROM schema_migrations)";
