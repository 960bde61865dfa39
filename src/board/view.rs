//! The board as the FamilyBoard actor holds it, and as clients see it (API.md `Board`).
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::rules::Counts;
use crate::model::{Wish, ts};
pub use crate::status::BoardStatus;

/// One board in memory: the family's active board, or else its latest completed one.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BoardRow {
    pub id: i64,
    pub wish: Wish,
    pub counts: Counts,
    pub status: BoardStatus,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

impl BoardRow {
    /// The board as read at family board version `version`.
    pub fn to_board(&self, version: i64) -> Board {
        Board {
            id: self.id,
            wish: self.wish.clone(),
            size: self.counts.size,
            granted: self.counts.granted,
            attached: self.counts.attached,
            unattached: self.counts.unattached(),
            status: self.status.as_str(),
            version,
            created_at: self.created_at,
            completed_at: self.completed_at,
        }
    }
}

/// Always `0 <= attached <= granted <= size` and `unattached = granted - attached`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Board {
    pub id: i64,
    pub wish: Wish,
    pub size: i32,
    pub granted: i32,
    pub attached: i32,
    pub unattached: i32,
    #[schema(value_type = BoardStatus)]
    pub status: &'static str,
    /// The family's board version when this state was read (the SSE event id).
    pub version: i64,
    #[serde(serialize_with = "ts::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "ts::option::serialize")]
    #[schema(required = true)]
    pub completed_at: Option<DateTime<Utc>>,
}

/// What `GET /api/board` answers and what every SSE event carries: the family's board version and
/// the board at that version (the active one, else the latest completed one, else none).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[schema(
    description = "`GET /api/board` and the `data` of every SSE `board` event: the active board, \
    else the latest completed one, else null."
)]
pub struct Snapshot {
    #[serde(skip)]
    pub version: i64,
    #[schema(required = true)]
    pub board: Option<Board>,
}
