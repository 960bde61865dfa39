//! sea-orm entities, one module per table (schema in `migration/`).

macro_rules! no_relations {
    () => {
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}
        impl ActiveModelBehavior for ActiveModel {}
    };
}

pub mod setting {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "settings")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        pub value: String,
    }
    no_relations!();
}

pub mod user {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "users")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub login: String,
        pub login_key: String,
        pub name: String,
        pub role: String,
        pub password_hash: String,
        pub family_id: Option<i64>,
        pub created_at: DateTimeUtc,
    }
    no_relations!();
}

pub mod family {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "families")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub parent_id: i64,
        pub child_id: i64,
        pub board_version: i64,
        pub created_at: DateTimeUtc,
    }
    no_relations!();
}

pub mod invite {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "invites")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub parent_id: i64,
        pub code: String,
        pub expires_at: DateTimeUtc,
        pub used_by: Option<i64>,
        pub used_at: Option<DateTimeUtc>,
        pub created_at: DateTimeUtc,
    }
    no_relations!();
}

pub mod wish {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "wishes")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub child_id: i64,
        pub name: String,
        pub link: Option<String>,
        pub image_url: Option<String>,
        pub status: crate::status::WishStatus,
        pub created_at: DateTimeUtc,
        pub picked_at: Option<DateTimeUtc>,
        pub given_at: Option<DateTimeUtc>,
    }
    no_relations!();
}

pub mod board {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "boards")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub family_id: i64,
        pub wish_id: i64,
        pub size: i32,
        pub granted: i32,
        pub attached: i32,
        pub status: crate::status::BoardState,
        pub version: i64,
        pub created_at: DateTimeUtc,
        pub completed_at: Option<DateTimeUtc>,
        pub cancelled_at: Option<DateTimeUtc>,
    }
    no_relations!();
}

pub mod grape_event {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "grape_events")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub family_id: i64,
        pub board_id: i64,
        pub kind: crate::status::HistoryKind,
        pub count: i32,
        pub by_user_id: i64,
        pub idem_key: Option<String>,
        pub version: i64,
        pub granted: i32,
        pub attached: i32,
        pub status: crate::status::BoardStatus,
        pub at: DateTimeUtc,
    }
    no_relations!();
}

pub mod message {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "messages")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub family_id: i64,
        pub seq: i64,
        pub sender_id: i64,
        pub client_id: String,
        pub text: String,
        pub created_at: DateTimeUtc,
    }
    no_relations!();
}

pub mod push_subscription {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "push_subscriptions")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub user_id: i64,
        pub endpoint: String,
        pub p256dh: String,
        pub auth: String,
        pub created_at: DateTimeUtc,
    }
    no_relations!();
}

pub mod push_device {
    use sea_orm::entity::prelude::*;
    /// A native app's registration with a push provider (`provider` = `fcm`). `Debug` shows only
    /// the token's tail: the token is the device's address and never reaches a log in full.
    #[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "push_devices")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub user_id: i64,
        pub provider: String,
        pub platform: String,
        pub token: String,
        /// SHA-256 of `token`, lowercase hex: the unique key of the upsert.
        pub token_key: String,
        pub created_at: DateTimeUtc,
    }
    no_relations!();

    impl Model {
        /// The last 6 characters of the token: enough to tell a user's devices apart.
        pub fn token_tail(&self) -> &str {
            let start = self
                .token
                .char_indices()
                .rev()
                .nth(5)
                .map_or(0, |(at, _)| at);
            &self.token[start..]
        }
    }

    impl std::fmt::Debug for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("push_device")
                .field("id", &self.id)
                .field("user_id", &self.user_id)
                .field("provider", &self.provider)
                .field("platform", &self.platform)
                .field("token_tail", &self.token_tail())
                .field("created_at", &self.created_at)
                .finish()
        }
    }
}

pub mod mission {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "missions")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub family_id: i64,
        pub title: String,
        pub reward: i32,
        pub due_on: Option<Date>,
        pub status: crate::status::MissionStatus,
        pub reject_reason: Option<String>,
        pub created_at: DateTimeUtc,
        pub submitted_at: Option<DateTimeUtc>,
        pub decided_at: Option<DateTimeUtc>,
    }
    no_relations!();
}

pub mod revoked_token {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "revoked_tokens")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub jti: String,
        pub user_id: i64,
        /// The token's `exp`, Unix seconds.
        pub expires_at: i64,
        pub revoked_at: DateTimeUtc,
    }
    no_relations!();
}
