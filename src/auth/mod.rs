//! Identity: passwords, tokens, throttling and the extractors that turn a verified token into the
//! caller. Identity never comes from a request body or socket payload.
pub mod password;
pub mod revocation;
pub mod sessions;
pub mod throttle;
pub mod token;

use dashmap::DashMap;
use sea_orm::EntityTrait;

use crate::error::ApiError;
use crate::model::Role;
use crate::store::Db;
use crate::store::entities::user;

/// The caller as the server knows them.
#[derive(Clone, Debug)]
pub struct Member {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub family_id: Option<i64>,
}

impl Member {
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role == role {
            Ok(())
        } else {
            Err(ApiError::forbidden_role(format!(
                "only a {} can do this",
                role.as_str()
            )))
        }
    }

    pub fn family(&self) -> Result<i64, ApiError> {
        self.family_id.ok_or_else(ApiError::not_in_family)
    }
}

/// Caches members once they have a family: membership never changes after pairing, so the cache
/// is never stale. Members without a family are read from the database on every request.
#[derive(Default)]
pub struct MemberCache {
    paired: DashMap<i64, Member>,
}

impl MemberCache {
    pub async fn get(&self, db: &Db, user_id: i64) -> Result<Option<Member>, ApiError> {
        if let Some(member) = self.paired.get(&user_id) {
            return Ok(Some(member.clone()));
        }
        let Some(row) = user::Entity::find_by_id(user_id).one(&db.read).await? else {
            return Ok(None);
        };
        let member = member_of(&row);
        if member.family_id.is_some() {
            self.paired.insert(user_id, member.clone());
        }
        Ok(Some(member))
    }
}

pub fn member_of(row: &user::Model) -> Member {
    Member {
        id: row.id,
        name: row.name.clone(),
        role: Role::parse(&row.role).unwrap_or(Role::Child),
        family_id: row.family_id,
    }
}
