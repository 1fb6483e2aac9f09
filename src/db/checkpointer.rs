//! WAL upkeep on its own thread, so the writer never pays for a checkpoint.

use rusqlite::Connection;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::BUSY_TIMEOUT;

/// Copies the WAL back into the database file in the background, so the
/// writer never pays for it and the WAL stays small.
pub struct Checkpointer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    handle: Option<JoinHandle<()>>,
}

/// How often the WAL is checkpointed while the server runs.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

impl Checkpointer {
    pub fn start(path: &Path) -> rusqlite::Result<Checkpointer> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let signal = stop.clone();
        let handle = std::thread::Builder::new()
            .name("db-checkpoint".into())
            .spawn(move || {
                let (lock, cv) = &*signal;
                let mut stopped = lock.lock().expect("checkpoint lock");
                while !*stopped {
                    stopped = cv
                        .wait_timeout(stopped, CHECKPOINT_EVERY)
                        .expect("checkpoint lock")
                        .0;
                    // PASSIVE never waits for the writer or readers; what it
                    // cannot copy now, it copies next time.
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        log::warn!("database: background checkpoint failed: {e}");
                    }
                }
                drop(stopped);
                // Leave a tidy file behind: everything in the database, an
                // empty WAL.
                let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
            })
            .expect("spawn the checkpoint thread");
        Ok(Checkpointer {
            stop,
            handle: Some(handle),
        })
    }

    /// Runs a last full checkpoint and stops; call after the writer stopped.
    pub fn stop(mut self) {
        let (lock, cv) = &*self.stop;
        *lock.lock().expect("checkpoint lock") = true;
        cv.notify_all();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
