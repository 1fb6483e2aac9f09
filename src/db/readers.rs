//! Read-only connections beside the writer (WAL lets them run while it
//! commits), from r2d2, the pool library PostgreSQL's side uses too: at
//! most `MAX_READERS` opened on demand and kept, a bounded wait for a free
//! one. Blocking callers read on their own thread; async handlers hand the
//! read to Tokio's blocking threads, never running it on the executor.

use rocket::tokio::sync::oneshot;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::error::DbError;
use super::open::open_reader;
use super::pool::{PgJob, PgPool, Priority, Respond};
use super::sql::Conn;

/// Read connections open at most. On two cores more would only add memory
/// (each has its own page cache) and contention, so a burst waits for a
/// free one.
const MAX_READERS: u32 = 4;

/// Longest wait for a free reader. Reads take milliseconds; a wait this
/// long means something holds every connection, and the request is better
/// answered 503 than left hanging.
const CHECKOUT_WAIT: Duration = Duration::from_secs(30);

/// Handle to the readers; cheap to clone.
#[derive(Clone)]
pub struct ReadPool {
    target: Target,
}

#[derive(Clone)]
enum Target {
    Lite(r2d2::Pool<LiteReaders>),
    /// On PostgreSQL (SPEC §13), reads run on the shared pool's workers.
    Pg(Arc<PgPool>),
}

/// Opens the read-only connections of one SQLite file for r2d2.
#[derive(Debug)]
struct LiteReaders {
    path: PathBuf,
}

impl r2d2::ManageConnection for LiteReaders {
    type Connection = Conn;
    type Error = DbError;

    fn connect(&self) -> Result<Conn, DbError> {
        open_reader(&self.path)
            .map(Conn::from)
            .map_err(DbError::from)
    }

    /// An in-process file: nothing to ask before use.
    fn is_valid(&self, _: &mut Conn) -> Result<(), DbError> {
        Ok(())
    }

    fn has_broken(&self, _: &mut Conn) -> bool {
        false
    }
}

/// A reader that cannot be opened is logged once here and answered to its
/// caller as `Unavailable`.
#[derive(Debug)]
struct LogErrors;

impl r2d2::HandleError<DbError> for LogErrors {
    fn handle_error(&self, error: DbError) {
        log::error!("database: cannot open a reader: {error}");
    }
}

impl ReadPool {
    pub fn new(path: &Path) -> ReadPool {
        let pool = r2d2::Pool::builder()
            .max_size(MAX_READERS)
            // Opened when first needed, then kept: a reader's page cache is
            // what makes the next read cheap, and SQLite's never ages.
            .min_idle(Some(0))
            .idle_timeout(None)
            .max_lifetime(None)
            .test_on_check_out(false)
            .connection_timeout(CHECKOUT_WAIT)
            // r2d2 opens connections on its own threads: one is plenty for
            // a local file (its default is three).
            .thread_pool(Arc::new(
                scheduled_thread_pool::ScheduledThreadPool::builder()
                    .num_threads(1)
                    .thread_name_pattern("db-reader-open")
                    .build(),
            ))
            .error_handler(Box::new(LogErrors))
            .build_unchecked(LiteReaders {
                path: path.to_owned(),
            });
        ReadPool {
            target: Target::Lite(pool),
        }
    }

    /// Reads through the PostgreSQL pool.
    pub fn postgres(pool: Arc<PgPool>) -> ReadPool {
        ReadPool {
            target: Target::Pg(pool),
        }
    }

    /// Runs `work` on a pooled connection in the calling (blocking) thread.
    pub fn with<R: Send + 'static>(
        &self,
        work: impl FnOnce(&Conn) -> Result<R, DbError> + Send + 'static,
    ) -> Result<R, DbError> {
        match &self.target {
            Target::Lite(pool) => {
                let conn = pool
                    .get()
                    .map_err(|e| DbError::Unavailable(format!("no free reader: {e}")))?;
                run_read(Some(&conn), work)
            }
            Target::Pg(pool) => {
                // Blocking callers are the sender and background jobs.
                send_pg(pool, Priority::Background, work)
                    .blocking_recv()
                    .unwrap_or(Err(DbError::Closed))
            }
        }
    }

    /// For async handlers: the read runs on a blocking thread, never on
    /// the executor.
    pub async fn read<R, F>(&self, work: F) -> Result<R, DbError>
    where
        R: Send + 'static,
        F: FnOnce(&Conn) -> Result<R, DbError> + Send + 'static,
    {
        match &self.target {
            Target::Lite(_) => {
                let reads = self.clone();
                rocket::tokio::task::spawn_blocking(move || reads.with(work))
                    .await
                    .unwrap_or(Err(DbError::Panicked))
            }
            Target::Pg(pool) => send_pg(pool, Priority::Request, work)
                .await
                .unwrap_or(Err(DbError::Closed)),
        }
    }
}

/// A read's answer: `Closed` without a connection, `Panicked` when `work`
/// panicked (the thread lives on).
fn run_read<R>(
    conn: Option<&Conn>,
    work: impl FnOnce(&Conn) -> Result<R, DbError>,
) -> Result<R, DbError> {
    match conn {
        Some(conn) => {
            catch_unwind(AssertUnwindSafe(|| work(conn))).unwrap_or(Err(DbError::Panicked))
        }
        None => Err(DbError::Closed),
    }
}

/// A read on a PostgreSQL worker; a panic in `work` is a `Panicked` answer.
fn send_pg<R, F>(
    pool: &PgPool,
    priority: Priority,
    work: F,
) -> oneshot::Receiver<Result<R, DbError>>
where
    R: Send + 'static,
    F: FnOnce(&Conn) -> Result<R, DbError> + Send + 'static,
{
    let (done, answer) = oneshot::channel();
    pool.send(
        PgJob::Read(Box::new(move |conn: Option<&Conn>| match conn {
            Some(conn) => {
                let _ = done.send(run_read(Some(conn), work));
                let respond: Respond = Box::new(|_| ());
                (true, respond)
            }
            // No connection: the pool says why (the database is away).
            None => {
                let respond: Respond = Box::new(move |why| {
                    let _ = done.send(Err(why.err().unwrap_or(DbError::Closed)));
                });
                (false, respond)
            }
        })),
        priority,
    );
    answer
}
