//! Chat reads: the room's starting state, history pages, client-id lookups.
use std::collections::HashMap;

use sea_orm::{ColumnTrait, EntityTrait, FromQueryResult, QueryFilter, QueryOrder, QuerySelect};

use super::frames::ChatMessage;
use crate::store::Db;
use crate::store::StoreError;
use crate::store::entities::{family, message, user};

/// How many recent client ids a room remembers; older resends are checked in the database.
pub const CLIENT_ID_WINDOW: usize = 4096;

pub struct RoomStart {
    pub last_seq: i64,
    /// member id → display name
    pub members: HashMap<i64, String>,
    /// (sender, client_id) → seq for the newest messages.
    pub recent: Vec<((i64, String), i64)>,
    /// Whether `recent` holds every message of the room.
    pub complete: bool,
}

#[derive(FromQueryResult)]
struct RecentRow {
    seq: i64,
    sender_id: i64,
    client_id: String,
}

pub async fn load_room(db: &Db, family_id: i64) -> Result<RoomStart, StoreError> {
    let family = family::Entity::find_by_id(family_id)
        .one(&db.read)
        .await?
        .ok_or_else(|| StoreError::missing(format!("family {family_id}")))?;
    let members = user::Entity::find()
        .filter(user::Column::Id.is_in([family.parent_id, family.child_id]))
        .all(&db.read)
        .await?
        .into_iter()
        .map(|u| (u.id, u.name))
        .collect();
    let recent: Vec<RecentRow> = message::Entity::find()
        .select_only()
        .column(message::Column::Seq)
        .column(message::Column::SenderId)
        .column(message::Column::ClientId)
        .filter(message::Column::FamilyId.eq(family_id))
        .order_by_desc(message::Column::Seq)
        .limit(CLIENT_ID_WINDOW as u64)
        .into_model()
        .all(&db.read)
        .await?;
    Ok(RoomStart {
        last_seq: recent.first().map_or(0, |r| r.seq),
        members,
        complete: recent.len() < CLIENT_ID_WINDOW,
        recent: recent
            .into_iter()
            .rev()
            .map(|r| ((r.sender_id, r.client_id), r.seq))
            .collect(),
    })
}

/// The seq already stored for `(sender, client_id)`, if any.
pub async fn seq_of(
    db: &Db,
    family_id: i64,
    sender_id: i64,
    client_id: &str,
) -> Result<Option<i64>, StoreError> {
    Ok(message::Entity::find()
        .filter(message::Column::FamilyId.eq(family_id))
        .filter(message::Column::SenderId.eq(sender_id))
        .filter(message::Column::ClientId.eq(client_id))
        .one(&db.read)
        .await?
        .map(|m| m.seq))
}

pub enum Page {
    After(i64),
    Before(i64),
    Newest,
}

/// Up to `limit` messages, ascending by seq.
pub async fn page(
    db: &Db,
    family_id: i64,
    page: Page,
    limit: u64,
) -> Result<Vec<ChatMessage>, StoreError> {
    let query = message::Entity::find().filter(message::Column::FamilyId.eq(family_id));
    let mut rows = match page {
        Page::After(seq) => {
            query
                .filter(message::Column::Seq.gt(seq))
                .order_by_asc(message::Column::Seq)
                .limit(limit)
                .all(&db.read)
                .await?
        }
        Page::Before(seq) => {
            query
                .filter(message::Column::Seq.lt(seq))
                .order_by_desc(message::Column::Seq)
                .limit(limit)
                .all(&db.read)
                .await?
        }
        Page::Newest => {
            query
                .order_by_desc(message::Column::Seq)
                .limit(limit)
                .all(&db.read)
                .await?
        }
    };
    rows.sort_by_key(|m| m.seq);
    let names = member_names(db, family_id).await?;
    Ok(rows
        .into_iter()
        .map(|m| ChatMessage {
            sender_name: names.get(&m.sender_id).cloned().unwrap_or_default(),
            seq: m.seq,
            sender_id: m.sender_id,
            text: m.text,
            client_id: m.client_id,
            created_at: m.created_at,
        })
        .collect())
}

pub async fn last_seq(db: &Db, family_id: i64) -> Result<i64, StoreError> {
    Ok(message::Entity::find()
        .filter(message::Column::FamilyId.eq(family_id))
        .order_by_desc(message::Column::Seq)
        .one(&db.read)
        .await?
        .map_or(0, |m| m.seq))
}

async fn member_names(db: &Db, family_id: i64) -> Result<HashMap<i64, String>, StoreError> {
    Ok(user::Entity::find()
        .filter(user::Column::FamilyId.eq(family_id))
        .all(&db.read)
        .await?
        .into_iter()
        .map(|u| (u.id, u.name))
        .collect())
}
