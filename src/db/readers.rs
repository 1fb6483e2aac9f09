//! Read-only connections beside the writer (WAL lets them run while it
//! commits): a small pool for blocking callers, and reader threads that
//! serve async handlers in batches.

use rocket::tokio::sync::oneshot;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::error::DbError;
use super::open::open_reader;
use super::pool::{PgJob, PgPool, Priority, Respond};
use super::sql::Conn;

/// Read connections open at most.
const MAX_READERS: usize = 4;

/// A few read-only connections, handed out one at a time. At most
/// `MAX_READERS` exist: on two cores more would only add memory (each has
/// its own page cache) and contention, so a burst waits for a free one.
#[derive(Clone)]
pub struct ReadPool {
    path: PathBuf,
    inner: Arc<(Mutex<PoolState>, Condvar)>,
    queue: Arc<ReadQueue>,
    /// On PostgreSQL (SPEC §13), reads run on the shared pool's workers.
    pg: Option<Arc<PgPool>>,
}

struct PoolState {
    idle: Vec<Conn>,
    open: usize,
}

impl ReadPool {
    pub fn new(path: &Path) -> ReadPool {
        ReadPool {
            path: path.to_owned(),
            inner: Arc::new((
                Mutex::new(PoolState {
                    idle: Vec::new(),
                    open: 0,
                }),
                Condvar::new(),
            )),
            queue: Arc::new(ReadQueue::default()),
            pg: None,
        }
    }

    /// Reads through the PostgreSQL pool.
    pub fn postgres(pool: Arc<PgPool>) -> ReadPool {
        let mut reads = ReadPool::new(Path::new(""));
        reads.pg = Some(pool);
        reads
    }

    fn take(&self) -> Result<Conn, DbError> {
        let (lock, freed) = &*self.inner;
        let mut pool = lock.lock().expect("read pool lock");
        loop {
            if let Some(conn) = pool.idle.pop() {
                return Ok(conn);
            }
            if pool.open < MAX_READERS {
                pool.open += 1;
                drop(pool);
                return open_reader(&self.path).map(Conn::from).map_err(|e| {
                    lock.lock().expect("read pool lock").open -= 1;
                    freed.notify_one();
                    DbError::from(e)
                });
            }
            pool = freed.wait(pool).expect("read pool lock");
        }
    }

    /// Runs `work` on a pooled connection in the calling (blocking) thread.
    pub fn with<R: Send + 'static>(
        &self,
        work: impl FnOnce(&Conn) -> Result<R, DbError> + Send + 'static,
    ) -> Result<R, DbError> {
        if let Some(pool) = &self.pg {
            // Blocking callers are the sender and background jobs.
            let answer = send_pg(pool, Priority::Background, work);
            return answer.blocking_recv().unwrap_or(Err(DbError::Closed));
        }
        let conn = self.take()?;
        let result = work(&conn);
        let (lock, freed) = &*self.inner;
        lock.lock().expect("read pool lock").idle.push(conn);
        freed.notify_one();
        result
    }

    /// For async handlers: the read runs on one of the pool's reader
    /// threads, never on the executor. Under load a reader takes every
    /// waiting request in one wake-up and answers them on one connection,
    /// instead of one thread hand-off per request.
    pub async fn read<R, F>(&self, work: F) -> Result<R, DbError>
    where
        R: Send + 'static,
        F: FnOnce(&Conn) -> Result<R, DbError> + Send + 'static,
    {
        if let Some(pool) = &self.pg {
            return send_pg(pool, Priority::Request, work)
                .await
                .unwrap_or(Err(DbError::Closed));
        }
        let (done, answer) = oneshot::channel();
        let job: ReadJob = Box::new(move |conn: Option<&Conn>| {
            let _ = done.send(run_read(conn, work));
        });
        self.queue.push(job, self);
        answer.await.unwrap_or(Err(DbError::Closed))
    }
}

/// A read's answer: `Closed` without a connection, `Panicked` when `work`
/// panicked (the reader thread lives on).
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

/// A read waiting for a reader thread; `None` when no connection could be
/// opened.
type ReadJob = Box<dyn FnOnce(Option<&Conn>) + Send>;

/// Requests from async handlers, served by `READER_THREADS` threads that
/// start with the first request.
struct ReadQueue {
    state: Mutex<ReadQueueState>,
    waiting: Condvar,
}

#[derive(Default)]
struct ReadQueueState {
    jobs: std::collections::VecDeque<ReadJob>,
    threads: usize,
}

const READER_THREADS: usize = 2;
const READ_BATCH: usize = 64;

impl ReadQueue {
    fn push(&self, job: ReadJob, pool: &ReadPool) {
        let spawn = {
            let mut state = self.state.lock().expect("read queue lock");
            state.jobs.push_back(job);
            if state.threads < READER_THREADS {
                state.threads += 1;
                true
            } else {
                false
            }
        };
        if spawn {
            let weak = Arc::downgrade(&pool.queue);
            let pool = ReadPool {
                path: pool.path.clone(),
                inner: pool.inner.clone(),
                queue: Arc::new(ReadQueue::default()),
                pg: None,
            };
            let started = std::thread::Builder::new()
                .name("db-reader".into())
                .spawn(move || reader_loop(weak, pool));
            if started.is_err() {
                self.state.lock().expect("read queue lock").threads -= 1;
            }
        }
        self.waiting.notify_one();
    }
}

impl Default for ReadQueue {
    fn default() -> Self {
        ReadQueue {
            state: Mutex::new(ReadQueueState::default()),
            waiting: Condvar::new(),
        }
    }
}

/// Serves the queue until every `ReadPool` handle is gone.
fn reader_loop(queue: std::sync::Weak<ReadQueue>, pool: ReadPool) {
    loop {
        let Some(queue) = queue.upgrade() else { return };
        let batch: Vec<ReadJob> = {
            let mut state = queue.state.lock().expect("read queue lock");
            if state.jobs.is_empty() {
                state = queue
                    .waiting
                    .wait_timeout(state, Duration::from_secs(1))
                    .expect("read queue lock")
                    .0;
            }
            let n = state.jobs.len().min(READ_BATCH);
            state.jobs.drain(..n).collect()
        };
        drop(queue);
        if batch.is_empty() {
            continue;
        }
        let ran = pool.with(|conn| {
            let mut jobs = batch.into_iter();
            for job in jobs.by_ref() {
                job(Some(conn));
            }
            Ok(())
        });
        if let Err(e) = ran {
            // Only reachable when no connection could be opened; the jobs
            // were dropped with their channels, which answers them Closed.
            log::error!("database: reader cannot open a connection: {e}");
        }
    }
}
