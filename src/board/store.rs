//! Board reads: the state a FamilyBoard loads, idempotent replays, the history.
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::rules::Counts;
use super::view::{Board, BoardRow, BoardStatus};
use crate::model::Wish;
use crate::status::BoardState;
use crate::store::Db;
use crate::store::StoreError;
use crate::store::entities::{board, family, grape_event, mission, wish};

/// A family's board state as the database has it (and, in cluster mode, as a committing node
/// hands it to the others: JSON in the `board` event).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Loaded {
    pub version: i64,
    pub child_id: i64,
    pub board: Option<BoardRow>,
}

impl Loaded {
    /// Another node's state from its event: `None` unless it parses, is of `version` and keeps
    /// the counts' invariant (anything else is read from the database instead).
    pub fn from_event(json: &str, version: i64) -> Option<Loaded> {
        let loaded: Loaded = serde_json::from_str(json).ok()?;
        let valid =
            loaded.version == version && loaded.board.as_ref().is_none_or(|b| b.counts.is_valid());
        valid.then_some(loaded)
    }

    pub fn active(&self) -> Option<&BoardRow> {
        self.board
            .as_ref()
            .filter(|b| b.status == BoardStatus::Active)
    }
}

pub async fn load(db: &Db, family_id: i64) -> Result<Loaded, StoreError> {
    let family = family::Entity::find_by_id(family_id)
        .one(&db.read)
        .await?
        .ok_or_else(|| StoreError::missing(format!("family {family_id}")))?;
    Ok(Loaded {
        version: family.board_version,
        child_id: family.child_id,
        board: shown_board(db, family_id).await?,
    })
}

/// The active board, else the latest completed one.
pub async fn shown_board(db: &Db, family_id: i64) -> Result<Option<BoardRow>, StoreError> {
    let active = board::Entity::find()
        .filter(board::Column::FamilyId.eq(family_id))
        .filter(board::Column::Status.eq(BoardState::Active))
        .one(&db.read)
        .await?;
    match active {
        Some(row) => Ok(Some(board_row(db, row).await?)),
        None => latest_completed(db, family_id).await,
    }
}

/// The family's most recently completed board.
pub async fn latest_completed(db: &Db, family_id: i64) -> Result<Option<BoardRow>, StoreError> {
    let row = board::Entity::find()
        .filter(board::Column::FamilyId.eq(family_id))
        .filter(board::Column::Status.eq(BoardState::Complete))
        .order_by_desc(board::Column::Id)
        .one(&db.read)
        .await?;
    match row {
        Some(row) => Ok(Some(board_row(db, row).await?)),
        None => Ok(None),
    }
}

async fn board_row(db: &Db, row: board::Model) -> Result<BoardRow, StoreError> {
    let wish = wish::Entity::find_by_id(row.wish_id)
        .one(&db.read)
        .await?
        .ok_or_else(|| StoreError::missing(format!("wish {} of board {}", row.wish_id, row.id)))?;
    Ok(BoardRow {
        id: row.id,
        wish: Wish::from(wish),
        counts: Counts {
            size: row.size,
            granted: row.granted,
            attached: row.attached,
        },
        status: if row.status == BoardState::Complete {
            BoardStatus::Complete
        } else {
            BoardStatus::Active
        },
        created_at: row.created_at,
        completed_at: row.completed_at,
    })
}

/// The answer first given for `(user, key)`, rebuilt from the ledger (after a restart, or once the
/// actor's memory of recent keys has moved on).
pub async fn replay(db: &Db, user_id: i64, key: &str) -> Result<Option<Board>, StoreError> {
    let Some(event) = grape_event::Entity::find()
        .filter(grape_event::Column::ByUserId.eq(user_id))
        .filter(grape_event::Column::IdemKey.eq(key))
        .one(&db.read)
        .await?
    else {
        return Ok(None);
    };
    let row = board::Entity::find_by_id(event.board_id)
        .one(&db.read)
        .await?
        .ok_or_else(|| StoreError::missing(format!("board {}", event.board_id)))?;
    let mut shown = board_row(db, row).await?;
    shown.counts.granted = event.granted;
    shown.counts.attached = event.attached;
    if event.status != BoardStatus::Complete {
        shown.status = BoardStatus::Active;
        shown.completed_at = None;
    }
    Ok(Some(shown.to_board(event.version)))
}

pub async fn history(
    db: &Db,
    family_id: i64,
    limit: u64,
) -> Result<Vec<grape_event::Model>, StoreError> {
    Ok(grape_event::Entity::find()
        .filter(grape_event::Column::FamilyId.eq(family_id))
        .order_by_desc(grape_event::Column::Id)
        .limit(limit)
        .all(&db.read)
        .await?)
}

/// A wish of the family's child, if it exists.
pub async fn family_wish(
    db: &Db,
    child_id: i64,
    wish_id: i64,
) -> Result<Option<wish::Model>, StoreError> {
    Ok(wish::Entity::find_by_id(wish_id)
        .filter(wish::Column::ChildId.eq(child_id))
        .one(&db.read)
        .await?)
}

/// A mission of the family, if it exists.
pub async fn family_mission(
    db: &Db,
    family_id: i64,
    mission_id: i64,
) -> Result<Option<mission::Model>, StoreError> {
    Ok(mission::Entity::find_by_id(mission_id)
        .filter(mission::Column::FamilyId.eq(family_id))
        .one(&db.read)
        .await?)
}
