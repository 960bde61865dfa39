//! Grape events carry an idempotency key only when the client sent one, yet the unique index on
//! `(by_user_id, idem_key)` also held a row for every keyless event: one more random index page
//! written per board change. The index now covers keyed events only; uniqueness of the keys is
//! the same (NULLs never collided).
use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000001_idem_index_partial"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP INDEX grape_events_idem")
            .await?;
        db.execute_unprepared(
            "CREATE UNIQUE INDEX grape_events_idem ON grape_events (by_user_id, idem_key) \
             WHERE idem_key IS NOT NULL",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP INDEX grape_events_idem")
            .await?;
        db.execute_unprepared(
            "CREATE UNIQUE INDEX grape_events_idem ON grape_events (by_user_id, idem_key)",
        )
        .await?;
        Ok(())
    }
}
