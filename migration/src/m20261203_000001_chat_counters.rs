//! Chat seq counters per family, for cluster mode (several nodes writing one family's chat):
//! `src/cluster/seq.rs` reserves seqs with `UPDATE .. RETURNING` on this row inside the
//! transaction that inserts the messages, so seqs stay gapless and unique across nodes.
//!
//! Seeded from the messages already stored. No foreign key, as `messages` has none: a counter is
//! created by the first reservation of a family.
use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000001_chat_counters"
    }
}

const SCHEMA: [&str; 2] = [
    "CREATE TABLE chat_counters (
        family_id BIGINT PRIMARY KEY,
        last_seq BIGINT NOT NULL
    )",
    "INSERT INTO chat_counters (family_id, last_seq)
        SELECT family_id, MAX(seq) FROM messages GROUP BY family_id",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for statement in SCHEMA {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP TABLE IF EXISTS chat_counters")
            .await?;
        Ok(())
    }
}
