//! The missions store: every write is conditional on the mission's status
//! (`UPDATE .. WHERE status IN (..)`), so the state machine holds under concurrency. A write that
//! matches nothing is [`MissionError::NotFound`] for a mission that is not the family's and
//! [`MissionError::Locked`] otherwise. Approving is the FamilyBoard's (it grants the reward in the
//! same transaction).
use chrono::NaiveDate;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};

use crate::model;
use crate::status::MissionStatus;
use crate::store::entities::{family, mission};
use crate::store::{Db, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MissionError {
    #[error("no such mission")]
    NotFound,
    #[error("the mission cannot change in its current state")]
    Locked,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sea_orm::DbErr> for MissionError {
    fn from(err: sea_orm::DbErr) -> Self {
        MissionError::Store(err.into())
    }
}

/// Which missions a list shows.
#[derive(Clone, Copy, Debug, Default)]
pub struct Filter {
    pub status: Option<MissionStatus>,
    /// Due on or after.
    pub from: Option<NaiveDate>,
    /// Due on or before.
    pub to: Option<NaiveDate>,
}

/// The family's missions, newest first.
pub async fn list(
    db: &Db,
    family_id: i64,
    filter: Filter,
) -> Result<Vec<mission::Model>, StoreError> {
    let mut select = mission::Entity::find().filter(mission::Column::FamilyId.eq(family_id));
    if let Some(status) = filter.status {
        select = select.filter(mission::Column::Status.eq(status));
    }
    if let Some(from) = filter.from {
        select = select.filter(mission::Column::DueOn.gte(from));
    }
    if let Some(to) = filter.to {
        select = select.filter(mission::Column::DueOn.lte(to));
    }
    Ok(select
        .order_by_desc(mission::Column::Id)
        .all(&db.read)
        .await?)
}

/// A new `open` mission.
pub async fn create(
    db: &Db,
    family_id: i64,
    title: String,
    reward: i32,
    due_on: Option<NaiveDate>,
) -> Result<mission::Model, StoreError> {
    Ok(mission::ActiveModel {
        family_id: Set(family_id),
        title: Set(title),
        reward: Set(reward),
        due_on: Set(due_on),
        status: Set(MissionStatus::Open),
        reject_reason: Set(None),
        created_at: Set(model::now()),
        submitted_at: Set(None),
        decided_at: Set(None),
        ..Default::default()
    }
    .insert(&db.write)
    .await?)
}

/// What an edit changes: `None` leaves a field as it is (`Some(None)` clears `due_on`).
#[derive(Clone, Debug, Default)]
pub struct Changes {
    pub title: Option<String>,
    pub reward: Option<i32>,
    pub due_on: Option<Option<NaiveDate>>,
}

/// Edits an `open` or `rejected` mission.
pub async fn update(
    db: &Db,
    family_id: i64,
    id: i64,
    changes: Changes,
) -> Result<mission::Model, MissionError> {
    let mut update = in_family(family_id, id, MissionStatus::EDITABLE)
        .col_expr(mission::Column::Id, Expr::col(mission::Column::Id));
    if let Some(title) = changes.title {
        update = update.col_expr(mission::Column::Title, Expr::value(title));
    }
    if let Some(reward) = changes.reward {
        update = update.col_expr(mission::Column::Reward, Expr::value(reward));
    }
    if let Some(due_on) = changes.due_on {
        update = update.col_expr(mission::Column::DueOn, Expr::value(due_on));
    }
    let affected = update.exec(&db.write).await.map(|r| r.rows_affected);
    guarded(db, family_id, id, affected).await
}

/// Deletes a mission unless it was approved.
pub async fn delete(db: &Db, family_id: i64, id: i64) -> Result<(), MissionError> {
    find(db, family_id, id).await?;
    let deleted = mission::Entity::delete_many()
        .filter(mission::Column::Id.eq(id))
        .filter(mission::Column::FamilyId.eq(family_id))
        .filter(mission::Column::Status.ne(MissionStatus::Approved))
        .exec(&db.write)
        .await?;
    if deleted.rows_affected != 1 {
        return Err(MissionError::Locked);
    }
    Ok(())
}

/// The child reports an `open` or `rejected` mission done; its `reject_reason` is cleared.
pub async fn submit(db: &Db, family_id: i64, id: i64) -> Result<mission::Model, MissionError> {
    let affected = in_family(family_id, id, MissionStatus::EDITABLE)
        .col_expr(
            mission::Column::Status,
            Expr::value(MissionStatus::Submitted.as_str()),
        )
        .col_expr(mission::Column::SubmittedAt, Expr::value(model::now()))
        .col_expr(
            mission::Column::RejectReason,
            Expr::value(Option::<String>::None),
        )
        .exec(&db.write)
        .await
        .map(|r| r.rows_affected);
    guarded(db, family_id, id, affected).await
}

/// The parent rejects a `submitted` mission, with an optional reason.
pub async fn reject(
    db: &Db,
    family_id: i64,
    id: i64,
    reason: Option<String>,
) -> Result<mission::Model, MissionError> {
    let affected = in_family(family_id, id, &[MissionStatus::Submitted])
        .col_expr(
            mission::Column::Status,
            Expr::value(MissionStatus::Rejected.as_str()),
        )
        .col_expr(mission::Column::RejectReason, Expr::value(reason))
        .col_expr(mission::Column::DecidedAt, Expr::value(model::now()))
        .exec(&db.write)
        .await
        .map(|r| r.rows_affected);
    guarded(db, family_id, id, affected).await
}

/// The family's other member (for pushes).
pub async fn partner(db: &Db, family_id: i64, user_id: i64) -> Result<i64, StoreError> {
    let family = family::Entity::find_by_id(family_id)
        .one(&db.read)
        .await?
        .ok_or_else(|| StoreError::missing(format!("family {family_id}")))?;
    Ok(if user_id == family.parent_id {
        family.child_id
    } else {
        family.parent_id
    })
}

async fn find(db: &Db, family_id: i64, id: i64) -> Result<mission::Model, MissionError> {
    mission::Entity::find_by_id(id)
        .filter(mission::Column::FamilyId.eq(family_id))
        .one(&db.write)
        .await?
        .ok_or(MissionError::NotFound)
}

/// After a conditional write on the family's mission `id`: the mission, or why nothing matched.
async fn guarded(
    db: &Db,
    family_id: i64,
    id: i64,
    affected: Result<u64, sea_orm::DbErr>,
) -> Result<mission::Model, MissionError> {
    let found = find(db, family_id, id).await?;
    if affected? != 1 {
        return Err(MissionError::Locked);
    }
    Ok(found)
}

fn in_family(
    family_id: i64,
    id: i64,
    statuses: &[MissionStatus],
) -> sea_orm::UpdateMany<mission::Entity> {
    mission::Entity::update_many()
        .filter(mission::Column::Id.eq(id))
        .filter(mission::Column::FamilyId.eq(family_id))
        .filter(mission::Column::Status.is_in(statuses.iter().copied()))
}
