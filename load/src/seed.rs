//! `podo-load seed`: families straight into the database, fast.
//!
//! Signing up through the API costs two argon2 hashes and a login per member (tens of ms of CPU
//! each), which would dominate a benchmark's set-up. Seeding writes the same rows the API would,
//! with one password hash shared by every user and multi-row inserts, and mints the tokens with
//! the server's own key, so 10,000 families take seconds.
use std::path::PathBuf;

use chrono::Utc;
use clap::Args;
use podo::auth::password;
use podo::auth::token::TokenKeys;
use podo::store::{BatchSql, Db};
use sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait, Value};
use serde::{Deserialize, Serialize};

use crate::report::Report;

/// The password of every seeded user (they are test users on a throwaway database).
pub const PASSWORD: &str = "podo-load-password";
/// Families per transaction; keeps every statement under both databases' parameter limits.
const CHUNK: usize = 500;

#[derive(Args)]
pub struct SeedArgs {
    /// Database to seed (`sqlite://...` or `postgres://...`); migrated first if new.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// Families to create (a parent and a child each).
    #[arg(long, default_value_t = 1000)]
    families: usize,
    /// Also give every family a wish and an active board of `--board-size` grapes.
    #[arg(long)]
    boards: bool,
    #[arg(long, default_value_t = 100)]
    board_size: i32,
    /// Login prefix (letters/digits), so several seeds can share one database.
    #[arg(long)]
    prefix: Option<String>,
    /// Where to write the tokens.
    #[arg(long, default_value = "tokens.json")]
    out: PathBuf,
    /// The server's token key; default: the one the server stored in the database.
    #[arg(long, env = "PODO_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
}

#[derive(Serialize, Deserialize, Clone)]
pub struct SeededMember {
    pub id: i64,
    pub token: String,
}

#[derive(Serialize, Deserialize, Clone)]
pub struct SeededFamily {
    pub id: i64,
    pub parent: SeededMember,
    pub child: SeededMember,
}

#[derive(Serialize, Deserialize)]
pub struct TokenFile {
    pub families: Vec<SeededFamily>,
}

impl TokenFile {
    pub fn load(path: &std::path::Path) -> Result<TokenFile, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

pub fn run(args: SeedArgs) -> Result<Option<Report>, String> {
    actix_web::rt::System::new().block_on(seed(args))
}

async fn seed(args: SeedArgs) -> Result<Option<Report>, String> {
    let started = std::time::Instant::now();
    let db = Db::connect(&args.database_url)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    db.migrate().await.map_err(|e| format!("migrate: {e}"))?;
    let secret = match &args.jwt_secret {
        Some(secret) => secret.clone(),
        // The same generator the server uses on first start, so whichever comes first wins.
        None => db
            .setting_or_insert("jwt_secret", || {
                rand::random::<[u8; 32]>()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect()
            })
            .await
            .map_err(|e| format!("jwt secret: {e}"))?,
    };
    let keys = TokenKeys::new(secret.as_bytes());
    let hash = password::hash(PASSWORD).map_err(|e| format!("hash: {e}"))?;
    let prefix = args
        .prefix
        .clone()
        .unwrap_or_else(|| format!("s{:x}", rand::random::<u32>() & 0xfffff));

    // Ids are assigned here (after the current maximum), so no row has to be read back.
    let next_user = max_id(&db, "users").await? + 1;
    let next_family = max_id(&db, "families").await? + 1;
    let next_wish = max_id(&db, "wishes").await? + 1;
    let next_board = max_id(&db, "boards").await? + 1;

    let mut families = Vec::with_capacity(args.families);
    let now = Utc::now();
    for start in (0..args.families).step_by(CHUNK) {
        let end = (start + CHUNK).min(args.families);
        let txn = db.write.begin().await.map_err(|e| e.to_string())?;
        let backend = db.backend();
        let sql = BatchSql::new(backend);
        let mut users = Vec::new();
        let mut fams = Vec::new();
        let mut wishes = Vec::new();
        let mut boards = Vec::new();
        let mut events = Vec::new();
        for i in start..end {
            let parent = next_user + 2 * i as i64;
            let child = parent + 1;
            let family = next_family + i as i64;
            for (id, role) in [(parent, "parent"), (child, "child")] {
                let login = format!("{prefix}{i}{}", &role[..1]);
                users.push(vec![
                    id.into(),
                    login.clone().into(),
                    login.to_lowercase().into(),
                    login.into(),
                    role.into(),
                    hash.clone().into(),
                    family.into(),
                    now.into(),
                ]);
            }
            let version: i64 = if args.boards { 1 } else { 0 };
            fams.push(vec![
                family.into(),
                parent.into(),
                child.into(),
                version.into(),
                now.into(),
            ]);
            if args.boards {
                let wish = next_wish + i as i64;
                let board = next_board + i as i64;
                wishes.push(vec![
                    wish.into(),
                    child.into(),
                    "podo-load gift".into(),
                    "picked".into(),
                    now.into(),
                    now.into(),
                ]);
                boards.push(vec![
                    board.into(),
                    family.into(),
                    wish.into(),
                    args.board_size.into(),
                    "active".into(),
                    1i64.into(),
                    now.into(),
                ]);
                events.push(vec![
                    family.into(),
                    board.into(),
                    "created".into(),
                    args.board_size.into(),
                    parent.into(),
                    1i64.into(),
                    0i32.into(),
                    0i32.into(),
                    "active".into(),
                    now.into(),
                ]);
            }
            families.push((family, parent, child));
        }
        insert(
            &txn,
            backend,
            &sql,
            "users (id, login, login_key, name, role, password_hash, family_id, created_at)",
            &[
                "bigint",
                "text",
                "text",
                "text",
                "text",
                "text",
                "bigint",
                "timestamptz",
            ],
            &users,
        )
        .await?;
        insert(
            &txn,
            backend,
            &sql,
            "families (id, parent_id, child_id, board_version, created_at)",
            &["bigint", "bigint", "bigint", "bigint", "timestamptz"],
            &fams,
        )
        .await?;
        insert(
            &txn,
            backend,
            &sql,
            "wishes (id, child_id, name, status, created_at, picked_at)",
            &[
                "bigint",
                "bigint",
                "text",
                "text",
                "timestamptz",
                "timestamptz",
            ],
            &wishes,
        )
        .await?;
        insert(
            &txn,
            backend,
            &sql,
            "boards (id, family_id, wish_id, size, status, version, created_at)",
            &[
                "bigint",
                "bigint",
                "bigint",
                "integer",
                "text",
                "bigint",
                "timestamptz",
            ],
            &boards,
        )
        .await?;
        // The ledger's `created` row, as the API writes it (count = size, state after = empty).
        insert(&txn, backend, &sql, "grape_events (family_id, board_id, kind, count, by_user_id, version, granted, attached, status, at)",
            &["bigint", "bigint", "text", "integer", "bigint", "bigint", "integer", "integer", "text", "timestamptz"], &events).await?;
        txn.commit().await.map_err(|e| e.to_string())?;
    }
    if db.backend() == DbBackend::Postgres {
        // Explicit ids do not move PostgreSQL's identity sequences; later sign-ups must not collide.
        for table in ["users", "families", "wishes", "boards"] {
            exec(&db, &format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}))"
            ))
            .await?;
        }
    }

    let file = TokenFile {
        families: families
            .into_iter()
            .map(|(id, parent, child)| {
                let token = |user| keys.issue(user, now).map(|(t, _)| t);
                Ok(SeededFamily {
                    id,
                    parent: SeededMember {
                        id: parent,
                        token: token(parent)?,
                    },
                    child: SeededMember {
                        id: child,
                        token: token(child)?,
                    },
                })
            })
            .collect::<Result<Vec<_>, jsonwebtoken::errors::Error>>()
            .map_err(|e| format!("token: {e}"))?,
    };
    std::fs::write(
        &args.out,
        serde_json::to_vec(&file).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("{}: {e}", args.out.display()))?;
    eprintln!(
        "seeded {} families{} in {:.1} s → {}",
        file.families.len(),
        if args.boards { " with boards" } else { "" },
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(None)
}

async fn max_id(db: &Db, table: &str) -> Result<i64, String> {
    let row = db
        .write
        .query_one_raw(Statement::from_string(
            db.backend(),
            format!("SELECT CAST(COALESCE(MAX(id), 0) AS BIGINT) FROM {table}"),
        ))
        .await
        .map_err(|e| format!("{table}: {e}"))?
        .ok_or("no row")?;
    row.try_get_by_index::<i64>(0).map_err(|e| e.to_string())
}

async fn exec(db: &Db, statement: &str) -> Result<(), String> {
    db.write
        .execute_raw(Statement::from_string(db.backend(), statement.to_owned()))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Multi-row INSERTs of at most 100 rows each (well under both parameter limits).
async fn insert(
    txn: &impl ConnectionTrait,
    backend: DbBackend,
    sql: &BatchSql,
    into: &str,
    types: &[&str],
    rows: &[Vec<Value>],
) -> Result<(), String> {
    for chunk in rows.chunks(100) {
        let values: Vec<Value> = chunk.iter().flatten().cloned().collect();
        let statement = format!(
            "INSERT INTO {into} VALUES {}",
            sql.values_rows(chunk.len(), types)
        );
        txn.execute_raw(Statement::from_sql_and_values(backend, statement, values))
            .await
            .map_err(|e| format!("insert into {into}: {e}"))?;
    }
    Ok(())
}
