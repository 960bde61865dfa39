//! Database schema for podo. Migrations run at server start-up (`Migrator::up`).
pub use sea_orm_migration::prelude::*;

mod m20261124_000001_schema;
mod m20261125_000001_idem_index_partial;
mod m20261126_000001_revoked_tokens;
mod m20261202_000001_push_devices;
mod m20261203_000001_chat_counters;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261124_000001_schema::Migration),
            Box::new(m20261125_000001_idem_index_partial::Migration),
            Box::new(m20261126_000001_revoked_tokens::Migration),
            Box::new(m20261202_000001_push_devices::Migration),
            Box::new(m20261203_000001_chat_counters::Migration),
        ]
    }
}
