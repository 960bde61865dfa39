//! Judges a command against the family's loaded state and the facts read for it beforehand: a
//! refusal, a replay of an earlier answer, or a change for the Persister to commit. Pure: no
//! actor, no database (the FamilyBoard reads the [`Facts`] through `store::facts` first), so
//! every rule of a command is unit-tested here.
use chrono::{DateTime, Utc};

use super::error::BoardError;
use super::messages::Command;
use super::rules::{self, Counts, Refusal};
use super::store::Loaded;
use super::view::{Board, BoardRow, BoardStatus};
use crate::model::Wish;
use crate::push::Notification;
use crate::status::{HistoryKind, WishStatus};
use crate::store::entities::{mission, wish};
use crate::store::persister::{BoardChange, BoardOp, EventRow};

/// What a command needs from the database besides the loaded state; each is read only for the
/// commands that need it.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// The first answer given for the command's idempotency key, if any.
    pub replay: Option<Board>,
    /// `Create`: the family child's wish, if it exists.
    pub wish: Option<wish::Model>,
    /// `Approve`: the family's mission, if it exists.
    pub mission: Option<mission::Model>,
    /// `Cancel`: what the family shows afterwards (its latest completed board).
    pub latest_completed: Option<BoardRow>,
}

/// What a command turns into once the rules have spoken.
#[derive(Debug)]
pub enum Plan {
    /// An idempotent retry: the first answer, nothing applied.
    Replay(Board),
    /// Commit `change`; afterwards the family shows `next`, and `notify` goes to the child.
    Change {
        change: BoardChange,
        next: Next,
        notify: Option<Notification>,
    },
}

/// The board shown after a change.
#[derive(Debug)]
pub enum Next {
    Shown(Option<BoardRow>),
    /// A new board, whose id the database assigns on commit.
    Created(BoardRow),
}

fn refusal(refusal: Refusal) -> BoardError {
    match refusal {
        Refusal::BoardFull => BoardError::BoardFull,
        Refusal::NothingToAttach => BoardError::NothingToAttach,
        Refusal::OutOfBounds => BoardError::InvalidField {
            field: "count",
            reason: "out of bounds",
        },
    }
}

fn event(
    kind: HistoryKind,
    count: i32,
    by: i64,
    key: Option<String>,
    after: Counts,
    status: BoardStatus,
    at: DateTime<Utc>,
) -> EventRow {
    EventRow {
        kind,
        count,
        by_user_id: by,
        idem_key: key,
        granted: after.granted,
        attached: after.attached,
        status,
        at,
    }
}

/// Judges `command` against `loaded` and `facts`, at time `at`.
pub fn plan(
    family_id: i64,
    loaded: &Loaded,
    command: &Command,
    facts: Facts,
    at: DateTime<Utc>,
) -> Result<Plan, BoardError> {
    let change = |op, events| BoardChange {
        family_id,
        base_version: loaded.version,
        op,
        events,
        approves: None,
    };
    if let Some(board) = facts.replay {
        return Ok(Plan::Replay(board));
    }
    match command {
        Command::Create { by, wish_id, size } => {
            let wish = facts.wish.ok_or(BoardError::NoSuchWish)?;
            if loaded.active().is_some() {
                return Err(BoardError::BoardExists);
            }
            if !rules::can_pick(wish.status) {
                return Err(BoardError::WishNotAvailable);
            }
            let counts = Counts::new(*size).map_err(|_| BoardError::InvalidField {
                field: "size",
                reason: "1-100",
            })?;
            let mut wish = Wish::from(wish);
            wish.status = WishStatus::Picked;
            wish.picked_at = Some(at);
            let next = BoardRow {
                id: 0,
                wish,
                counts,
                status: BoardStatus::Active,
                created_at: at,
                completed_at: None,
            };
            let events = vec![event(
                HistoryKind::Created,
                *size,
                *by,
                None,
                counts,
                BoardStatus::Active,
                at,
            )];
            Ok(Plan::Change {
                change: change(
                    BoardOp::Create {
                        wish_id: *wish_id,
                        size: *size,
                        at,
                    },
                    events,
                ),
                next: Next::Created(next),
                notify: None,
            })
        }
        Command::Cancel { by } => {
            let active = loaded.active().ok_or(BoardError::NoBoard)?;
            let events = vec![event(
                HistoryKind::Cancelled,
                0,
                *by,
                None,
                active.counts,
                BoardStatus::Active,
                at,
            )];
            // Afterwards the family shows its latest completed board again, or none.
            Ok(Plan::Change {
                change: change(
                    BoardOp::Cancel {
                        board_id: active.id,
                        wish_id: active.wish.id,
                        at,
                    },
                    events,
                ),
                next: Next::Shown(facts.latest_completed),
                notify: None,
            })
        }
        Command::Grant { by, count, key } => grant(
            family_id,
            loaded,
            Grant {
                by: *by,
                count: *count,
                key: key.clone(),
                approves: None,
                notify: Notification::grapes_granted(*count),
                at,
            },
        ),
        Command::Approve { by, .. } => {
            let mission = facts.mission.ok_or(BoardError::NoSuchMission)?;
            if !rules::can_approve(mission.status) {
                return Err(BoardError::MissionLocked);
            }
            // API.md: approving without a board is a conflict that changes nothing (409).
            if loaded.active().is_none() {
                return Err(BoardError::NoBoardForReward);
            }
            grant(
                family_id,
                loaded,
                Grant {
                    by: *by,
                    count: mission.reward,
                    key: None,
                    approves: Some((mission.id, at)),
                    notify: Notification::mission_approved(&mission.title),
                    at,
                },
            )
        }
        Command::Attach { by, key } => {
            let active = loaded.active().ok_or(BoardError::NoBoard)?;
            let (counts, completes) = active.counts.attach().map_err(refusal)?;
            let mut next = BoardRow {
                counts,
                ..active.clone()
            };
            let status = if completes {
                BoardStatus::Complete
            } else {
                BoardStatus::Active
            };
            let mut events = vec![event(
                HistoryKind::Attached,
                1,
                *by,
                key.clone(),
                counts,
                status,
                at,
            )];
            let completed = completes.then(|| {
                next.status = BoardStatus::Complete;
                next.completed_at = Some(at);
                next.wish.status = WishStatus::Given;
                next.wish.given_at = Some(at);
                events.push(event(
                    HistoryKind::Completed,
                    0,
                    *by,
                    None,
                    counts,
                    BoardStatus::Complete,
                    at,
                ));
                (at, active.wish.id)
            });
            Ok(Plan::Change {
                change: change(
                    BoardOp::Update {
                        board_id: active.id,
                        granted: counts.granted,
                        attached: counts.attached,
                        completed,
                    },
                    events,
                ),
                next: Next::Shown(Some(next)),
                notify: None,
            })
        }
    }
}

/// Granting grapes, by hand or as a mission's reward.
struct Grant {
    by: i64,
    count: i32,
    key: Option<String>,
    approves: Option<(i64, DateTime<Utc>)>,
    notify: Notification,
    at: DateTime<Utc>,
}

fn grant(family_id: i64, loaded: &Loaded, grant: Grant) -> Result<Plan, BoardError> {
    let active = loaded.active().ok_or(BoardError::NoBoard)?;
    let counts = active.counts.grant(grant.count).map_err(refusal)?;
    let events = vec![event(
        HistoryKind::Granted,
        grant.count,
        grant.by,
        grant.key,
        counts,
        BoardStatus::Active,
        grant.at,
    )];
    Ok(Plan::Change {
        change: BoardChange {
            family_id,
            base_version: loaded.version,
            op: BoardOp::Update {
                board_id: active.id,
                granted: counts.granted,
                attached: counts.attached,
                completed: None,
            },
            events,
            approves: grant.approves,
        },
        next: Next::Shown(Some(BoardRow {
            counts,
            ..active.clone()
        })),
        notify: Some(grant.notify),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::MissionStatus;

    fn at() -> DateTime<Utc> {
        crate::model::now()
    }

    fn wish_row(status: WishStatus) -> wish::Model {
        wish::Model {
            id: 5,
            child_id: 2,
            name: "bike".into(),
            link: None,
            image_url: None,
            status,
            created_at: at(),
            picked_at: None,
            given_at: None,
        }
    }

    fn board(size: i32, granted: i32, attached: i32) -> Loaded {
        let mut wish = Wish::from(wish_row(WishStatus::Picked));
        wish.picked_at = Some(at());
        Loaded {
            version: 9,
            child_id: 2,
            board: Some(BoardRow {
                id: 3,
                wish,
                counts: Counts {
                    size,
                    granted,
                    attached,
                },
                status: BoardStatus::Active,
                created_at: at(),
                completed_at: None,
            }),
        }
    }

    fn empty() -> Loaded {
        Loaded {
            version: 0,
            child_id: 2,
            board: None,
        }
    }

    fn mission_row(status: MissionStatus, reward: i32) -> mission::Model {
        mission::Model {
            id: 8,
            family_id: 1,
            title: "dishes".into(),
            reward,
            due_on: None,
            status,
            reject_reason: None,
            created_at: at(),
            submitted_at: None,
            decided_at: None,
        }
    }

    fn change(plan: Result<Plan, BoardError>) -> (BoardChange, Next) {
        match plan {
            Ok(Plan::Change { change, next, .. }) => (change, next),
            other => panic!("expected a change, got {other:?}"),
        }
    }

    #[test]
    fn create_picks_a_wished_wish_and_refuses_the_rest() {
        let create = Command::Create {
            by: 1,
            wish_id: 5,
            size: 31,
        };
        let facts = |status| Facts {
            wish: Some(wish_row(status)),
            ..Facts::default()
        };
        let (change, next) = change(plan(1, &empty(), &create, facts(WishStatus::Wished), at()));
        assert_eq!(change.base_version, 0);
        assert_eq!(change.events[0].kind, HistoryKind::Created);
        assert_eq!(change.events[0].count, 31);
        assert!(matches!(next, Next::Created(row) if row.wish.status == WishStatus::Picked));
        for status in [WishStatus::Picked, WishStatus::Given] {
            let refused = plan(1, &empty(), &create, facts(status), at());
            assert_eq!(refused.err(), Some(BoardError::WishNotAvailable));
        }
        let missing = plan(1, &empty(), &create, Facts::default(), at());
        assert_eq!(missing.err(), Some(BoardError::NoSuchWish));
        let exists = plan(
            1,
            &board(31, 0, 0),
            &create,
            facts(WishStatus::Wished),
            at(),
        );
        assert_eq!(exists.err(), Some(BoardError::BoardExists));
        let too_big = Command::Create {
            by: 1,
            wish_id: 5,
            size: 101,
        };
        assert!(matches!(
            plan(1, &empty(), &too_big, facts(WishStatus::Wished), at()),
            Err(BoardError::InvalidField { field: "size", .. })
        ));
    }

    #[test]
    fn grant_fits_or_is_refused() {
        let grant = |count| Command::Grant {
            by: 1,
            count,
            key: None,
        };
        let (change, _) = change(plan(
            1,
            &board(31, 30, 0),
            &grant(1),
            Facts::default(),
            at(),
        ));
        assert!(matches!(change.op, BoardOp::Update { granted: 31, .. }));
        assert_eq!(change.base_version, 9);
        assert_eq!(
            plan(1, &board(31, 30, 0), &grant(2), Facts::default(), at()).err(),
            Some(BoardError::BoardFull)
        );
        assert_eq!(
            plan(1, &empty(), &grant(1), Facts::default(), at()).err(),
            Some(BoardError::NoBoard)
        );
    }

    #[test]
    fn the_last_attach_completes_the_board_and_gives_the_wish() {
        let attach = Command::Attach {
            by: 2,
            key: Some("k".into()),
        };
        let (change, next) = change(plan(1, &board(3, 3, 2), &attach, Facts::default(), at()));
        let kinds: Vec<_> = change.events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [HistoryKind::Attached, HistoryKind::Completed]);
        assert_eq!(change.events[0].idem_key.as_deref(), Some("k"));
        assert!(matches!(
            next,
            Next::Shown(Some(row)) if row.status == BoardStatus::Complete
                && row.wish.status == WishStatus::Given
        ));
        assert_eq!(
            plan(1, &board(3, 2, 2), &attach, Facts::default(), at()).err(),
            Some(BoardError::NothingToAttach)
        );
    }

    #[test]
    fn a_known_key_replays_the_first_answer() {
        let first = board(31, 1, 0)
            .board
            .map(|b| b.to_board(4))
            .expect("a board");
        let facts = Facts {
            replay: Some(first.clone()),
            ..Facts::default()
        };
        let grant = Command::Grant {
            by: 1,
            count: 99,
            key: Some("k".into()),
        };
        assert!(matches!(
            plan(1, &board(31, 31, 0), &grant, facts, at()),
            Ok(Plan::Replay(board)) if board == first
        ));
    }

    #[test]
    fn approve_needs_a_submitted_mission_and_a_board() {
        let approve = Command::Approve {
            by: 1,
            mission_id: 8,
        };
        let facts = |status| Facts {
            mission: Some(mission_row(status, 3)),
            ..Facts::default()
        };
        let (change, _) = change(plan(
            1,
            &board(31, 0, 0),
            &approve,
            facts(MissionStatus::Submitted),
            at(),
        ));
        assert_eq!(change.approves.map(|(id, _)| id), Some(8));
        assert!(matches!(change.op, BoardOp::Update { granted: 3, .. }));
        for status in [
            MissionStatus::Open,
            MissionStatus::Approved,
            MissionStatus::Rejected,
        ] {
            assert_eq!(
                plan(1, &board(31, 0, 0), &approve, facts(status), at()).err(),
                Some(BoardError::MissionLocked)
            );
        }
        assert_eq!(
            plan(1, &empty(), &approve, facts(MissionStatus::Submitted), at()).err(),
            Some(BoardError::NoBoardForReward)
        );
        assert_eq!(
            plan(1, &board(31, 0, 0), &approve, Facts::default(), at()).err(),
            Some(BoardError::NoSuchMission)
        );
    }
}
