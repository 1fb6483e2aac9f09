//! WAL upkeep on its own thread, so the writer never pays for a checkpoint.

use rusqlite::Connection;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::periodic::Periodic;

use super::open::BUSY_TIMEOUT;

/// Copies the WAL back into the database file in the background, so the
/// writer never pays for it and the WAL stays small.
pub struct Checkpointer(Periodic);

/// How often the WAL is checkpointed while the server runs.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Frames in the WAL (4 KiB each) from which a round asks the writer to
/// catch up: SQLite's own automatic checkpoint starts at this many. Below
/// it the WAL starts over by itself between bursts.
const CATCH_UP_FROM_FRAMES: i64 = 1_000;

/// The checkpointer's word to the writer: "I copied the WAL as it was when
/// I began; copy what you wrote since, between two of your batches".
///
/// SQLite starts the WAL over from its first frame only when a write
/// transaction begins with every frame already copied into the database.
/// A writer that commits batch after batch never begins at such a moment:
/// this thread copies while the writer appends. In a 4,000-webhook run the
/// WAL grew to 144 MB and every commit extended the file, the kernel
/// allocating and zeroing each new block (`zero_user_segments` under
/// `ext4_block_write_begin`, 5.7 % of the writer thread's samples). The
/// writer, being the only one that appends, can copy the few frames
/// written since this thread's round and know none follow before its next
/// transaction, which then reuses the file from the start.
#[derive(Clone, Default)]
pub struct CatchUp(Arc<AtomicBool>);

impl CatchUp {
    fn ask(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether a round asked since the last call.
    pub(super) fn take(&self) -> bool {
        self.0.load(Ordering::Relaxed) && self.0.swap(false, Ordering::AcqRel)
    }
}

impl Checkpointer {
    pub fn start(path: &Path, catch_up: CatchUp) -> rusqlite::Result<Checkpointer> {
        Checkpointer::start_every(path, catch_up, CHECKPOINT_EVERY)
    }

    pub(super) fn start_every(
        path: &Path,
        catch_up: CatchUp,
        every: Duration,
    ) -> rusqlite::Result<Checkpointer> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let thread = Periodic::spawn("db-checkpoint", move |stop| {
            while !stop.wait(every) {
                // PASSIVE never waits for the writer or readers; what it
                // cannot copy now, it copies next time.
                match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                    row.get::<_, i64>(1)
                }) {
                    Ok(frames) if frames >= CATCH_UP_FROM_FRAMES => catch_up.ask(),
                    Ok(_) => {}
                    Err(e) => log::warn!("database: background checkpoint failed: {e}"),
                }
            }
            // Leave a tidy file behind: everything in the database, an
            // empty WAL.
            let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        })
        .expect("spawn the checkpoint thread");
        Ok(Checkpointer(thread))
    }

    /// Runs a last full checkpoint and stops; call after the writer stopped.
    pub fn stop(self) {
        self.0.stop();
    }
}
