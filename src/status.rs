//! Every status of the product, one enum each: the entities store them (as the strings below,
//! which the schema's CHECK constraints list too), the rules judge them, the JSON and the OpenAPI
//! document spell them the same way. No status is written as a string anywhere else.
use sea_orm::{DeriveActiveEnum, EnumIter};
use serde::{Deserialize, Serialize};

/// Declares a stored, serialized and documented status enum with its wire names.
macro_rules! status {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize,
            Deserialize, utoipa::ToSchema,
        )]
        #[sea_orm(rs_type = "String", db_type = "Text")]
        // utoipa does not see a `serde(rename)` written through the macro: every wire name is
        // the variant's name in lower case (checked by the test below and by schemathesis).
        #[schema(rename_all = "lowercase")]
        pub enum $name {
            $(
                #[sea_orm(string_value = $wire)]
                #[serde(rename = $wire)]
                $variant,
            )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire and stored name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire,)+
                }
            }

            pub fn parse(s: &str) -> Option<$name> {
                match s {
                    $($wire => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

status! {
    /// A wish's `status`: on the wishlist, picked as a board's gift, or given (board complete).
    WishStatus { Wished = "wished", Picked = "picked", Given = "given" }
}

status! {
    /// A board's `status` as stored; clients only ever see `active` and `complete` (a cancelled
    /// board is no longer shown).
    BoardState { Active = "active", Complete = "complete", Cancelled = "cancelled" }
}

status! {
    /// A shown board's `status`.
    BoardStatus { Active = "active", Complete = "complete" }
}

status! {
    /// A mission's `status`.
    MissionStatus {
        Open = "open",
        Submitted = "submitted",
        Approved = "approved",
        Rejected = "rejected",
    }
}

status! {
    /// A board history event's `kind`.
    HistoryKind {
        Created = "created",
        Granted = "granted",
        Attached = "attached",
        Completed = "completed",
        Cancelled = "cancelled",
    }
}

impl MissionStatus {
    /// A mission the child may still edit or submit.
    pub const EDITABLE: &'static [MissionStatus] = &[MissionStatus::Open, MissionStatus::Rejected];
}

impl From<BoardStatus> for BoardState {
    fn from(status: BoardStatus) -> Self {
        match status {
            BoardStatus::Active => BoardState::Active,
            BoardStatus::Complete => BoardState::Complete,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip() {
        for status in MissionStatus::ALL {
            assert_eq!(MissionStatus::parse(status.as_str()), Some(*status));
            let json = serde_json::to_string(status).expect("serializes");
            assert_eq!(json, format!("\"{status}\""));
        }
        assert_eq!(WishStatus::parse("Picked"), None);
    }

    /// The OpenAPI document spells every status as the JSON does.
    #[test]
    fn the_document_names_the_wire_strings() {
        use utoipa::PartialSchema;
        fn names<T: PartialSchema>() -> serde_json::Value {
            serde_json::to_value(T::schema()).expect("schema")["enum"].clone()
        }
        fn wire<T: Serialize>(all: &[T]) -> serde_json::Value {
            serde_json::to_value(all).expect("serializes")
        }
        assert_eq!(names::<WishStatus>(), wire(WishStatus::ALL));
        assert_eq!(names::<BoardState>(), wire(BoardState::ALL));
        assert_eq!(names::<BoardStatus>(), wire(BoardStatus::ALL));
        assert_eq!(names::<MissionStatus>(), wire(MissionStatus::ALL));
        assert_eq!(names::<HistoryKind>(), wire(HistoryKind::ALL));
        assert_eq!(
            names::<crate::error::ErrorCode>(),
            wire(crate::error::ErrorCode::ALL)
        );
    }
}
