//! One writer thread owns the only write connection and commits whatever
//! requests are waiting in one transaction (group commit), so a burst of
//! webhooks shares one fsync while each request is answered only after its
//! own rows are on disk.

use rocket::tokio::sync::oneshot;
use rusqlite::Connection;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::DbError;

/// Upper bound of requests folded into one transaction; keeps a commit's
/// latency bounded when the queue is long.
const MAX_BATCH: usize = 512;

/// Runs its work inside the open transaction (or, given `None`, does not run
/// it at all) and returns what to tell the caller once the commit is known.
type Job =
    Box<dyn FnOnce(Option<&Connection>) -> Box<dyn FnOnce(Result<(), DbError>) + Send> + Send>;

/// Handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: Arc<Mutex<Option<mpsc::Sender<Job>>>>,
}

impl Writer {
    pub fn start(conn: Connection) -> (Writer, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel::<Job>();
        let handle = std::thread::Builder::new()
            .name("db-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .expect("spawn the database writer");
        (
            Writer {
                tx: Arc::new(Mutex::new(Some(tx))),
            },
            handle,
        )
    }

    /// Queues `work`; it runs inside a savepoint of the next batch, and its
    /// result is delivered once that batch is committed (or has failed).
    /// An `Err` from `work` rolls back only its own savepoint.
    pub fn submit<R, F>(&self, work: F) -> oneshot::Receiver<Result<R, DbError>>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, DbError> + Send + 'static,
    {
        let (done_tx, done_rx) = oneshot::channel();
        let job: Job = Box::new(move |conn: Option<&Connection>| {
            let result = match conn {
                Some(conn) => run_in_savepoint(conn, work),
                None => Ok(None),
            };
            Box::new(move |committed: Result<(), DbError>| {
                let outcome = match (result, committed) {
                    (Err(e), _) => Err(e),
                    (Ok(_), Err(e)) => Err(e),
                    (Ok(Some(v)), Ok(())) => Ok(v),
                    (Ok(None), Ok(())) => Err(DbError::Closed),
                };
                let _ = done_tx.send(outcome);
            })
        });
        // A job refused by a closed writer is dropped with its reply
        // channel, which the receiver sees as `Closed`.
        if let Some(tx) = self.tx.lock().expect("writer handle lock").as_ref() {
            let _ = tx.send(job);
        }
        done_rx
    }

    /// For async handlers: waits without blocking the executor.
    pub async fn run<R, F>(&self, work: F) -> Result<R, DbError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, DbError> + Send + 'static,
    {
        self.submit(work).await.unwrap_or(Err(DbError::Closed))
    }

    /// For worker threads (never call from async code).
    pub fn run_blocking<R, F>(&self, work: F) -> Result<R, DbError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, DbError> + Send + 'static,
    {
        self.submit(work)
            .blocking_recv()
            .unwrap_or(Err(DbError::Closed))
    }

    /// Fire and forget: the write joins the next batch; nobody waits on its
    /// fsync (used for the click log, which must not slow a redirect).
    pub fn spawn<F>(&self, work: F)
    where
        F: FnOnce(&Connection) -> Result<(), DbError> + Send + 'static,
    {
        drop(self.submit(work));
    }

    /// Stops accepting work; the thread drains what is queued and exits.
    pub fn close(&self) {
        self.tx.lock().expect("writer handle lock").take();
    }
}

fn run_in_savepoint<R, F>(conn: &Connection, work: F) -> Result<Option<R>, DbError>
where
    F: FnOnce(&Connection) -> Result<R, DbError>,
{
    // Cached statements: parsing these three for every request showed up
    // in the writer's profile.
    conn.prepare_cached("SAVEPOINT job")?.execute([])?;
    let result = match catch_unwind(AssertUnwindSafe(|| work(conn))) {
        Ok(r) => r,
        Err(_) => Err(DbError::Panicked),
    };
    if result.is_err() {
        conn.prepare_cached("ROLLBACK TO job")?.execute([])?;
    }
    conn.prepare_cached("RELEASE job")?.execute([])?;
    result.map(Some)
}

fn writer_loop(conn: Connection, rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(&conn, batch);
    }
}

fn run_batch(conn: &Connection, batch: Vec<Job>) {
    if let Err(e) = conn
        .prepare_cached("BEGIN IMMEDIATE")
        .and_then(|mut s| s.execute([]))
    {
        log::error!("database: cannot start a write transaction: {e}");
        for job in batch {
            // Nothing runs: each caller learns the write did not happen.
            job(None)(Err(DbError::Commit(clone_error(&e))));
        }
        return;
    }
    let responders: Vec<_> = batch.into_iter().map(|job| job(Some(conn))).collect();
    let committed = conn
        .prepare_cached("COMMIT")
        .and_then(|mut s| s.execute([]))
        .map(|_| ());
    if let Err(e) = &committed {
        log::error!(
            "database: commit of {} request(s) failed: {e}",
            responders.len()
        );
        let _ = conn.execute_batch("ROLLBACK");
    }
    for respond in responders {
        respond(match &committed {
            Ok(()) => Ok(()),
            Err(e) => Err(DbError::Commit(clone_error(e))),
        });
    }
}

fn clone_error(e: &rusqlite::Error) -> rusqlite::Error {
    match e {
        rusqlite::Error::SqliteFailure(code, msg) => {
            rusqlite::Error::SqliteFailure(*code, msg.clone())
        }
        other => rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(other.to_string()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{open_writer, prepare_path, ReadPool};
    use std::path::PathBuf;

    fn temp_db() -> (tempfile::TempDir, Connection, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        prepare_path(&path).unwrap();
        let conn = open_writer(&path).unwrap();
        conn.execute_batch("CREATE TABLE t (k VARCHAR(10) PRIMARY KEY)")
            .unwrap();
        (dir, conn, path)
    }

    #[test]
    fn a_failing_job_rolls_back_only_itself() {
        let (_dir, conn, path) = temp_db();
        let (writer, handle) = Writer::start(conn);
        let a = writer.submit(|c| Ok(c.execute("INSERT INTO t VALUES ('a')", [])?));
        let b = writer.submit(|c| {
            c.execute("INSERT INTO t VALUES ('b')", [])?;
            c.execute("INSERT INTO t VALUES ('a')", [])?; // conflicts
            Ok(())
        });
        assert_eq!(a.blocking_recv().unwrap().unwrap(), 1);
        assert!(b.blocking_recv().unwrap().is_err());
        writer.close();
        handle.join().unwrap();
        let reads = ReadPool::new(&path);
        let keys: Vec<String> = reads
            .with(|c| {
                let mut s = c.prepare("SELECT k FROM t ORDER BY k")?;
                let rows = s.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
                Ok(rows)
            })
            .unwrap();
        assert_eq!(keys, vec!["a".to_string()]);
    }

    #[test]
    fn a_panicking_job_is_reported_and_the_writer_survives() {
        let (_dir, conn, _path) = temp_db();
        let (writer, handle) = Writer::start(conn);
        let bad: Result<(), DbError> = writer.run_blocking(|_| panic!("boom"));
        assert!(matches!(bad, Err(DbError::Panicked)));
        let good = writer.run_blocking(|c| Ok(c.execute("INSERT INTO t VALUES ('x')", [])?));
        assert_eq!(good.unwrap(), 1);
        writer.close();
        handle.join().unwrap();
    }
}
