//! SQLite WAL checkpoints off the write path.
//!
//! SQLite's automatic checkpoint runs inside the COMMIT that crosses `wal_autocheckpoint` pages:
//! that commit copies the WAL's pages into the database file and fsyncs it while every waiter of
//! the batch, and every batch queued behind it, waits. Chat at 10,000 messages/s writes about
//! 22,000 WAL pages/s, mostly index leaves spread over the whole file, so the automatic
//! checkpoint ran 22 times a second with 1,000 random page writes and an fsync each (~25 ms): on a
//! grown database the writer spent most of its time there and acks queued for 100+ ms.
//!
//! So the writer connection has the automatic checkpoint off, and:
//! - the Checkpointer copies the WAL on a connection of its own with `wal_checkpoint(PASSIVE)`,
//!   which never blocks the writer or readers, every [`INTERVAL`] after commits happened. A page
//!   written many times within the interval (a busy family's index leaf) is copied once;
//! - a WAL only starts over from its beginning when a write starts with every frame copied, which
//!   a checkpoint on another connection never achieves under a steady stream of commits. Once a
//!   restart is due (see [`restart_due`]), the Checkpointer runs more passes right away while
//!   readers hold part of the WAL back, and then asks the Persister to finish between two
//!   batches: the Persister's own passive checkpoint copies what was committed since the last
//!   pass began (about a pass's worth), and its next commit restarts the WAL.
//!
//! The Checkpointer acts only after a batch committed, so an idle server sends no statements.
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use sea_orm::{DatabaseConnection, DbErr};

use super::sqlite::passive_checkpoint;
use crate::metrics::Metrics;

/// How often the Checkpointer looks for new commits.
const INTERVAL: Duration = Duration::from_millis(1000);
/// The final pass of a restart pauses commits for 30–80 ms (it copies the ~1,000 random pages
/// written during the Checkpointer's last pass, and fsyncs them one I/O each), so restarts are
/// spaced: a WAL of at least [`RESTART_MIN_BYTES`] restarts at most every [`RESTART_SPACING`],
/// and one of [`RESTART_MAX_BYTES`] restarts regardless. Chat at 10,000 msgs/s over 2,000 rooms
/// writes ~40 MB of WAL a second with 1 KiB pages (~105 MB with 4 KiB): restarting every ~5 s
/// put the pauses into the ack p99 (13–50 ms over 15–60 s runs), one restart per 15 s run kept it
/// at 7–12 ms, two made it 40–47 ms.
const RESTART_SPACING: Duration = Duration::from_secs(30);
/// Below this a WAL is left to grow: a restart is not worth a pause.
const RESTART_MIN_BYTES: i64 = 64 << 20;
/// The most `podo.db-wal` grows to under sustained writes (plus up to one interval's worth).
const RESTART_MAX_BYTES: i64 = 1 << 30;

/// Whether a WAL of `bytes` should be made to start over, `since` the last restart.
fn restart_due(bytes: i64, since: Duration) -> bool {
    bytes >= RESTART_MAX_BYTES || (bytes >= RESTART_MIN_BYTES && since >= RESTART_SPACING)
}

/// Passes before the Persister finishes a restart, and the frames left for it that end them early.
const MAX_PASSES: usize = 4;
const FINAL_PASS_FRAMES: i64 = 256;

/// Asks the Persister to run a passive WAL checkpoint on the writer connection between batches.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FinishCheckpoint;

pub struct Checkpointer {
    conn: DatabaseConnection,
    /// Asks the Persister (whichever runs now) to finish a restart.
    finish: Box<dyn Fn()>,
    metrics: Arc<Metrics>,
    /// `metrics.batches()` when the last checkpoint started.
    seen_batches: u64,
    running: bool,
    /// When the Checkpointer last had the WAL restarted (or started).
    restarted: Instant,
    page_size: i64,
}

impl Checkpointer {
    pub fn new(
        conn: DatabaseConnection,
        page_size: i64,
        finish: impl Fn() + 'static,
        metrics: Arc<Metrics>,
    ) -> Self {
        Checkpointer {
            conn,
            finish: Box::new(finish),
            metrics,
            seen_batches: 0,
            running: false,
            restarted: Instant::now(),
            page_size,
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let batches = self.metrics.batches();
        if self.running || batches == self.seen_batches {
            return;
        }
        self.running = true;
        self.seen_batches = batches;
        let conn = self.conn.clone();
        let since = self.restarted.elapsed();
        let page_size = self.page_size;
        ctx.spawn(
            async move {
                let (mut frames, mut copied) = passive_checkpoint(&conn).await?;
                if !restart_due(frames * page_size, since) {
                    return Ok(false);
                }
                // A pass copies the WAL as it was when the pass began, unless a reader holds part
                // of it back; pass again until that part is small, so the Persister's final pass
                // (the only one that pauses commits) has little more than one pass's commits left.
                for _ in 1..MAX_PASSES {
                    if frames - copied <= FINAL_PASS_FRAMES {
                        break;
                    }
                    (frames, copied) = passive_checkpoint(&conn).await?;
                }
                Ok(true)
            }
            .into_actor(self)
            .map(|result: Result<bool, DbErr>, act, _| {
                act.running = false;
                match result {
                    Ok(true) => {
                        act.restarted = Instant::now();
                        (act.finish)();
                    }
                    Ok(false) => {}
                    Err(err) => log::warn!("WAL checkpoint failed: {err}"),
                }
            }),
        );
    }
}

impl Actor for Checkpointer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.seen_batches = self.metrics.batches();
        ctx.run_interval(INTERVAL, Self::tick);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_are_spaced_unless_the_wal_is_at_its_cap() {
        let soon = RESTART_SPACING / 2;
        assert!(!restart_due(RESTART_MIN_BYTES - 1, RESTART_SPACING * 6));
        assert!(restart_due(RESTART_MIN_BYTES, RESTART_SPACING));
        assert!(!restart_due(RESTART_MAX_BYTES - 1, soon));
        assert!(restart_due(RESTART_MAX_BYTES, soon));
    }
}
