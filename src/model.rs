//! Wire types of the API (API.md), built from database rows.
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize, Serializer};

use crate::status::WishStatus;
use crate::store::entities::{user, wish};

/// Now, truncated to the millisecond so what is stored is exactly what clients see.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

/// RFC 3339 UTC with milliseconds: `2026-11-24T09:30:00.123Z`.
pub fn rfc3339(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub mod ts {
    use super::*;
    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&rfc3339(at))
    }
    pub mod option {
        use super::*;
        pub fn serialize<S: Serializer>(
            at: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match at {
                Some(at) => s.serialize_str(&rfc3339(at)),
                None => s.serialize_none(),
            }
        }
    }
}

/// A member's role; on the wire `"parent"` or `"child"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum Role {
    Parent,
    Child,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Parent => "parent",
            Role::Child => "child",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "parent" => Some(Role::Parent),
            "child" => Some(Role::Child),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct User {
    pub id: i64,
    pub login: String,
    pub name: String,
    #[schema(value_type = Role)]
    pub role: &'static str,
}

impl From<&user::Model> for User {
    fn from(row: &user::Model) -> Self {
        User {
            id: row.id,
            login: row.login.clone(),
            name: row.name.clone(),
            role: Role::parse(&row.role).unwrap_or(Role::Child).as_str(),
        }
    }
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Family {
    pub id: i64,
    pub parent: User,
    pub child: User,
}

// `required = true` on the `Option` fields: they are always present, `null` when unset.
// Deserialize: a board's state crosses cluster nodes as JSON (`board::BoardState`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Wish {
    pub id: i64,
    pub name: String,
    #[schema(required = true, format = "uri")]
    pub link: Option<String>,
    #[schema(required = true, format = "uri")]
    pub image_url: Option<String>,
    pub status: WishStatus,
    #[serde(serialize_with = "ts::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "ts::option::serialize")]
    #[schema(required = true)]
    pub picked_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "ts::option::serialize")]
    #[schema(required = true)]
    pub given_at: Option<DateTime<Utc>>,
}

impl From<wish::Model> for Wish {
    fn from(row: wish::Model) -> Self {
        Wish {
            id: row.id,
            name: row.name,
            link: row.link,
            image_url: row.image_url,
            status: row.status,
            created_at: row.created_at,
            picked_at: row.picked_at,
            given_at: row.given_at,
        }
    }
}
