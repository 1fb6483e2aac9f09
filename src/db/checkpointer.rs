//! WAL upkeep on its own thread, so the writer never pays for a checkpoint.

use rusqlite::Connection;
use std::path::Path;
use std::time::Duration;

use crate::periodic::Periodic;

use super::open::BUSY_TIMEOUT;

/// Copies the WAL back into the database file in the background, so the
/// writer never pays for it and the WAL stays small.
pub struct Checkpointer(Periodic);

/// How often the WAL is checkpointed while the server runs.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

impl Checkpointer {
    pub fn start(path: &Path) -> rusqlite::Result<Checkpointer> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let thread = Periodic::spawn("db-checkpoint", move |stop| {
            while !stop.wait(CHECKPOINT_EVERY) {
                // PASSIVE never waits for the writer or readers; what it
                // cannot copy now, it copies next time.
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    log::warn!("database: background checkpoint failed: {e}");
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
