//! The grape board's rules as pure functions: no actix, no database. The FamilyBoard actor asks
//! these before it commits anything, so a refused change never reaches the database.

use crate::status::{MissionStatus, WishStatus};

pub const DEFAULT_SIZE: i32 = 31;
pub const MAX_SIZE: i32 = 100;
pub const MAX_GRANT: i32 = 100;

/// The counts of one board. Invariant: `0 <= attached <= granted <= size`, `1 <= size <= 100`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    pub size: i32,
    pub granted: i32,
    pub attached: i32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `granted + count > size`.
    BoardFull,
    /// Nothing granted is left to attach.
    NothingToAttach,
    /// A count or size outside its bounds.
    OutOfBounds,
}

impl Counts {
    /// Whether the invariant holds (for counts that came from outside: another node's event).
    pub fn is_valid(&self) -> bool {
        (1..=MAX_SIZE).contains(&self.size)
            && 0 <= self.attached
            && self.attached <= self.granted
            && self.granted <= self.size
    }

    /// A new, empty board.
    pub fn new(size: i32) -> Result<Counts, Refusal> {
        if (1..=MAX_SIZE).contains(&size) {
            Ok(Counts {
                size,
                granted: 0,
                attached: 0,
            })
        } else {
            Err(Refusal::OutOfBounds)
        }
    }

    pub fn unattached(self) -> i32 {
        self.granted - self.attached
    }

    pub fn is_complete(self) -> bool {
        self.attached == self.size
    }

    /// Grants `count` grapes; the board can never hold more granted grapes than its size.
    pub fn grant(self, count: i32) -> Result<Counts, Refusal> {
        if !(1..=MAX_GRANT).contains(&count) {
            return Err(Refusal::OutOfBounds);
        }
        if self.granted + count > self.size {
            return Err(Refusal::BoardFull);
        }
        Ok(Counts {
            granted: self.granted + count,
            ..self
        })
    }

    /// Attaches one granted grape. Returns the new counts and whether this attach completes the
    /// board (exactly when `attached` reaches `size`).
    pub fn attach(self) -> Result<(Counts, bool), Refusal> {
        if self.unattached() <= 0 {
            return Err(Refusal::NothingToAttach);
        }
        let next = Counts {
            attached: self.attached + 1,
            ..self
        };
        Ok((next, next.is_complete()))
    }
}

/// A board may be opened on a wish only while it is `wished`.
/// Only a submitted mission can be approved (and its reward granted).
pub fn can_approve(mission: MissionStatus) -> bool {
    mission == MissionStatus::Submitted
}

pub fn can_pick(wish: WishStatus) -> bool {
    wish == WishStatus::Wished
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::WishStatus;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Grant(i32),
        Attach,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![(-5i32..110).prop_map(Op::Grant), Just(Op::Attach)]
    }

    proptest! {
        #[test]
        fn invariants_hold_for_any_sequence(size in -3i32..110, ops in proptest::collection::vec(op(), 0..200)) {
            let Ok(mut board) = Counts::new(size) else {
                prop_assert!(!(1..=MAX_SIZE).contains(&size));
                return Ok(());
            };
            let mut completions = 0;
            for op in ops {
                let before = board;
                let result = match op {
                    Op::Grant(n) => board.grant(n).map(|b| (b, false)),
                    Op::Attach => board.attach(),
                };
                match result {
                    Ok((next, completes)) => {
                        board = next;
                        prop_assert_eq!(completes, next.attached == next.size);
                        if completes { completions += 1; }
                    }
                    // A refusal leaves the board exactly as it was.
                    Err(_) => prop_assert_eq!(board, before),
                }
                prop_assert!(0 <= board.attached && board.attached <= board.granted && board.granted <= board.size);
            }
            prop_assert!(completions <= 1);
            prop_assert_eq!(completions == 1, board.is_complete());
        }
    }

    #[test]
    fn grant_refuses_overflow_and_bad_counts() {
        let board = Counts::new(31)
            .and_then(|b| b.grant(30))
            .expect("30 of 31 fit");
        assert_eq!(board.grant(2), Err(Refusal::BoardFull));
        assert_eq!(board.grant(0), Err(Refusal::OutOfBounds));
        assert_eq!(board.grant(101), Err(Refusal::OutOfBounds));
        assert_eq!(board.grant(1).expect("the 31st fits").granted, 31);
    }

    #[test]
    fn the_last_attach_completes() {
        let mut board = Counts::new(2).and_then(|b| b.grant(2)).expect("2 of 2 fit");
        let (next, done) = board.attach().expect("a granted grape is there");
        assert!(!done);
        board = next;
        let (next, done) = board.attach().expect("a granted grape is there");
        assert!(done);
        assert_eq!(next.attach(), Err(Refusal::NothingToAttach));
    }

    #[test]
    fn only_wished_wishes_can_be_picked() {
        assert!(can_pick(WishStatus::Wished));
        assert!(!can_pick(WishStatus::Picked));
        assert!(!can_pick(WishStatus::Given));
    }
}
