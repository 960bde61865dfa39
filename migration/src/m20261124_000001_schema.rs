//! The schema for the whole product, written once so later features add no churn.
//!
//! Raw SQL with a few per-dialect words keeps the indexes exactly as designed: the partial unique
//! index that allows one active board per family, the case-folded login key, and the
//! `(family_id, seq)` / `(family_id, sender_id, client_id)` keys of chat messages.
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261124_000001_schema"
    }
}

/// `{pk}`: an auto-increment id that is never reused; `{rowid}`: a plain id for append-only
/// high-volume tables (SQLite's rowid alias writes less than AUTOINCREMENT); `{ts}`: a UTC instant.
const SCHEMA: &str = r#"
CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE users (
    id {pk},
    login TEXT NOT NULL,
    login_key TEXT NOT NULL,
    name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('parent', 'child')),
    password_hash TEXT NOT NULL,
    family_id BIGINT NULL,
    created_at {ts} NOT NULL
);
CREATE UNIQUE INDEX users_login_key ON users (login_key);

CREATE TABLE families (
    id {pk},
    parent_id BIGINT NOT NULL REFERENCES users (id),
    child_id BIGINT NOT NULL REFERENCES users (id),
    board_version BIGINT NOT NULL DEFAULT 0,
    created_at {ts} NOT NULL
);
CREATE UNIQUE INDEX families_parent ON families (parent_id);
CREATE UNIQUE INDEX families_child ON families (child_id);

CREATE TABLE invites (
    id {pk},
    parent_id BIGINT NOT NULL REFERENCES users (id),
    code TEXT NOT NULL,
    expires_at {ts} NOT NULL,
    used_by BIGINT NULL REFERENCES users (id),
    used_at {ts} NULL,
    created_at {ts} NOT NULL
);
CREATE UNIQUE INDEX invites_code ON invites (code);
CREATE INDEX invites_parent ON invites (parent_id);

CREATE TABLE wishes (
    id {pk},
    child_id BIGINT NOT NULL REFERENCES users (id),
    name TEXT NOT NULL,
    link TEXT NULL,
    image_url TEXT NULL,
    status TEXT NOT NULL CHECK (status IN ('wished', 'picked', 'given')),
    created_at {ts} NOT NULL,
    picked_at {ts} NULL,
    given_at {ts} NULL
);
CREATE INDEX wishes_child ON wishes (child_id, id);

CREATE TABLE boards (
    id {pk},
    family_id BIGINT NOT NULL REFERENCES families (id),
    wish_id BIGINT NOT NULL REFERENCES wishes (id),
    size INTEGER NOT NULL CHECK (size BETWEEN 1 AND 100),
    granted INTEGER NOT NULL DEFAULT 0,
    attached INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL CHECK (status IN ('active', 'complete', 'cancelled')),
    version BIGINT NOT NULL,
    created_at {ts} NOT NULL,
    completed_at {ts} NULL,
    cancelled_at {ts} NULL,
    CHECK (0 <= attached AND attached <= granted AND granted <= size)
);
CREATE UNIQUE INDEX boards_one_active ON boards (family_id) WHERE status = 'active';
CREATE INDEX boards_family ON boards (family_id, id);

CREATE TABLE grape_events (
    id {rowid},
    family_id BIGINT NOT NULL,
    board_id BIGINT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('created', 'granted', 'attached', 'completed', 'cancelled')),
    count INTEGER NOT NULL,
    by_user_id BIGINT NOT NULL,
    idem_key TEXT NULL,
    version BIGINT NOT NULL,
    granted INTEGER NOT NULL,
    attached INTEGER NOT NULL,
    status TEXT NOT NULL,
    at {ts} NOT NULL
);
CREATE INDEX grape_events_family ON grape_events (family_id, id);
CREATE UNIQUE INDEX grape_events_idem ON grape_events (by_user_id, idem_key);

CREATE TABLE missions (
    id {pk},
    family_id BIGINT NOT NULL REFERENCES families (id),
    title TEXT NOT NULL,
    reward INTEGER NOT NULL CHECK (reward BETWEEN 1 AND 100),
    due_on DATE NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'submitted', 'approved', 'rejected')),
    reject_reason TEXT NULL,
    created_at {ts} NOT NULL,
    submitted_at {ts} NULL,
    decided_at {ts} NULL
);
CREATE INDEX missions_family_due ON missions (family_id, due_on);

CREATE TABLE messages (
    id {rowid},
    family_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    sender_id BIGINT NOT NULL,
    client_id TEXT NOT NULL,
    text TEXT NOT NULL,
    created_at {ts} NOT NULL
);
CREATE UNIQUE INDEX messages_family_seq ON messages (family_id, seq);
CREATE UNIQUE INDEX messages_client ON messages (family_id, sender_id, client_id);

CREATE TABLE push_subscriptions (
    id {pk},
    user_id BIGINT NOT NULL REFERENCES users (id),
    endpoint TEXT NOT NULL,
    p256dh TEXT NOT NULL,
    auth TEXT NOT NULL,
    created_at {ts} NOT NULL
);
CREATE UNIQUE INDEX push_subscriptions_endpoint ON push_subscriptions (endpoint);
CREATE INDEX push_subscriptions_user ON push_subscriptions (user_id);
"#;

const TABLES: [&str; 10] = [
    "push_subscriptions",
    "messages",
    "missions",
    "grape_events",
    "boards",
    "wishes",
    "invites",
    "families",
    "users",
    "settings",
];

fn dialect(backend: DbBackend) -> [(&'static str, &'static str); 3] {
    match backend {
        DbBackend::Postgres => [
            (
                "{pk}",
                "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
            ),
            (
                "{rowid}",
                "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
            ),
            ("{ts}", "TIMESTAMPTZ"),
        ],
        _ => [
            ("{pk}", "INTEGER PRIMARY KEY AUTOINCREMENT"),
            ("{rowid}", "INTEGER PRIMARY KEY"),
            ("{ts}", "TEXT"),
        ],
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let mut sql = SCHEMA.to_owned();
        for (word, replacement) in dialect(manager.get_database_backend()) {
            sql = sql.replace(word, replacement);
        }
        for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for table in TABLES {
            db.execute_unprepared(&format!("DROP TABLE IF EXISTS {table}"))
                .await?;
        }
        Ok(())
    }
}
