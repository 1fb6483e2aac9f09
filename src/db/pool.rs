//! PostgreSQL's side of the writer and the readers (SPEC §13). Connections
//! come from r2d2, a pool library: checked before use, replaced in the
//! background when the server drops them (with its own backoff), retired
//! after `MAX_LIFETIME`, and a checkout waits at most `CHECKOUT_WAIT`.
//!
//! In front of it stay a few worker threads and two queues, because the
//! blocking client must not run on Rocket's executor, and because who
//! waits matters (`Priority`): a worker takes a job, checks a connection
//! out for it, and gives it back. A write job runs in a transaction of its
//! own (`Writer` opens and commits it) and is answered after its COMMIT;
//! PostgreSQL groups concurrent commits itself, so there is no batching
//! here. Reads run outside a transaction.
//!
//! While the database is away (restarted, network cut), a checkout fails
//! after `CHECKOUT_WAIT`, and every job is answered `DbError::Unavailable`
//! at once instead of queueing behind it: webhooks get their 503, the
//! sender keeps its outcomes and tries again, and nothing spins.

use super::error::DbError;
use super::sql::Conn;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The default of `DATABASE_POOL_SIZE`: connections (and worker threads)
/// per instance. Enough for the webhook handlers and the sender's workers
/// to write side by side; each instance of a fleet opens its own, so
/// PostgreSQL's `max_connections` (100 by default) bounds the fleet.
pub const PG_CONNECTIONS: usize = 8;

/// Longest wait for a connection, and for a job in the queue before it is
/// answered `Unavailable` rather than run: a gateway that waited this long
/// has given up anyway, and would rather retry.
pub const CHECKOUT_WAIT: Duration = Duration::from_secs(5);

/// A connection older than this is closed and replaced when given back
/// (a managed database's failover, a proxy's idle limit, a leak on the
/// server side all age with the session).
pub const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// Any one statement longer than this is cancelled by the server: a lock
/// or a plan gone wrong must not hold a connection (and a request) for
/// ever. Webhook statements take milliseconds.
pub const STATEMENT_TIMEOUT: &str = "10s";

/// A connection that answered within this long is not asked again on
/// checkout: under load every job would otherwise cost one more round trip.
/// A connection the server closed meanwhile is still caught: the client
/// marks it closed, and `has_broken` sees it.
const TRUSTED_FOR: Duration = Duration::from_secs(1);

/// How long the check on checkout waits for PostgreSQL's answer.
const PING_WAIT: Duration = Duration::from_secs(2);

/// How a write job's transaction starts: READ COMMITTED, PostgreSQL's
/// default. The data functions were written for SQLite's one writer, where
/// a job never sees another half done; here the row locks of their upserts
/// and updates order jobs on the same order or message, a unique key that a
/// concurrent job inserted first fails the job and it runs again (`Writer`),
/// and the few look-ups that nothing else guards take `Conn::lock_key`.
/// (SERIALIZABLE was tried: on these small hot tables nearly every pair of
/// concurrent webhooks failed each other, and 503s came back at 64 at once.)
pub(crate) const BEGIN: &str = "BEGIN";

/// A job's work: runs on a connection (or, given `None`, learns that none
/// could be had), says whether it succeeded, and returns what to tell the
/// caller once the commit is known.
pub(crate) type Work = Box<dyn FnOnce(Option<&Conn>) -> (bool, Respond) + Send>;
pub(crate) type Respond = Box<dyn FnOnce(Result<(), DbError>) + Send>;

pub(crate) enum PgJob {
    /// In a transaction of its own, answered after COMMIT.
    Write(Work),
    /// Outside a transaction.
    Read(Work),
}

/// Who waits for a job. A request (a webhook, a page) is answered only after
/// its job; the sender's claims and outcomes, the click log and the roster
/// can wait a little. Without the distinction a burst of webhooks shared the
/// connections with the sender's writes for the messages those very webhooks
/// queued, and the bench measured webhooks at 0.56 of the raw PostgreSQL
/// ceiling with sending on, 2.1 with sending held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Priority {
    Request,
    Background,
}

/// Workers that take background jobs first, so the sender keeps moving
/// however busy the requests keep the others; when no request waits, every
/// worker takes background jobs.
pub const BACKGROUND_FIRST: usize = 2;

/// A job and when it was queued (its wait is bounded by `CHECKOUT_WAIT`).
type Queued = (Instant, PgJob);

#[derive(Default)]
struct Queues {
    request: VecDeque<Queued>,
    background: VecDeque<Queued>,
    closed: bool,
}

impl Queues {
    /// The next job for a worker that prefers `first`; `None` when both
    /// queues are empty.
    fn next(&mut self, first: Priority) -> Option<Queued> {
        match first {
            Priority::Request => self
                .request
                .pop_front()
                .or_else(|| self.background.pop_front()),
            Priority::Background => self
                .background
                .pop_front()
                .or_else(|| self.request.pop_front()),
        }
    }
}

type Shared = Arc<(Mutex<Queues>, Condvar)>;

/// r2d2's side: how a connection is made and checked.
struct Manager {
    url: String,
}

/// A pooled connection and when it last answered.
struct Pooled {
    conn: Conn,
    answered: Instant,
}

impl r2d2::ManageConnection for Manager {
    type Connection = Pooled;
    type Error = PoolError;

    fn connect(&self) -> Result<Pooled, PoolError> {
        connect(&self.url)
            .map(|conn| Pooled {
                conn,
                answered: Instant::now(),
            })
            .map_err(PoolError)
    }

    fn is_valid(&self, pooled: &mut Pooled) -> Result<(), PoolError> {
        if pooled.answered.elapsed() < TRUSTED_FOR && !pooled.conn.is_broken() {
            return Ok(());
        }
        pooled
            .conn
            .ping(PING_WAIT)
            .map_err(|e| PoolError(e.to_string()))?;
        pooled.answered = Instant::now();
        Ok(())
    }

    fn has_broken(&self, pooled: &mut Pooled) -> bool {
        pooled.conn.is_broken()
    }
}

/// Why no connection could be had, in words (the password never in them).
#[derive(Debug)]
pub struct PoolError(String);

impl std::fmt::Display for PoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PoolError {}

/// r2d2 logs each failed connect through `log` (already redacted: our
/// `connect` builds the text); the default handler would print it twice.
#[derive(Debug)]
struct LogErrors;

impl r2d2::HandleError<PoolError> for LogErrors {
    fn handle_error(&self, error: PoolError) {
        log::error!("database: {error}");
    }
}

pub struct PgPool {
    url: String,
    connections: r2d2::Pool<Manager>,
    queues: Shared,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl PgPool {
    /// Connects once up front, so a wrong URL, password or certificate
    /// stops the start with PostgreSQL's reason rather than a pool timeout.
    pub fn start(url: &str, size: usize) -> Result<Arc<PgPool>, String> {
        let size = size.max(1);
        drop(connect(url)?);
        let connections = r2d2::Pool::builder()
            .max_size(size as u32)
            .min_idle(Some(size as u32))
            .test_on_check_out(true)
            .connection_timeout(CHECKOUT_WAIT)
            .max_lifetime(Some(MAX_LIFETIME))
            .idle_timeout(None)
            .error_handler(Box::new(LogErrors))
            .build(Manager {
                url: url.to_owned(),
            })
            .map_err(|e| format!("PostgreSQL pool: {e}"))?;
        let pool = Arc::new(PgPool {
            url: url.to_owned(),
            connections,
            queues: Arc::new((Mutex::new(Queues::default()), Condvar::new())),
            threads: Mutex::new(Vec::new()),
        });
        for i in 0..size {
            let queues = pool.queues.clone();
            let connections = pool.connections.clone();
            let first = if i < BACKGROUND_FIRST {
                Priority::Background
            } else {
                Priority::Request
            };
            let handle = std::thread::Builder::new()
                .name(format!("db-pg-{i}"))
                .spawn(move || worker(&connections, &queues, first))
                .map_err(|e| format!("cannot start a database thread: {e}"))?;
            pool.threads.lock().expect("pool threads").push(handle);
        }
        Ok(pool)
    }

    /// The URL, without its password, for the log.
    pub fn describe(&self) -> String {
        crate::pg::redact(&self.url)
    }

    /// Queues a job; `false` once the pool is closed (the job is dropped
    /// with its reply channel, which its caller sees as `Closed`).
    pub(crate) fn send(&self, job: PgJob, priority: Priority) -> bool {
        let (lock, ready) = &*self.queues;
        let mut q = lock.lock().expect("pool queue lock");
        if q.closed {
            return false;
        }
        let queued = (Instant::now(), job);
        match priority {
            Priority::Request => q.request.push_back(queued),
            Priority::Background => q.background.push_back(queued),
        }
        drop(q);
        ready.notify_one();
        true
    }

    /// Stops accepting work; the workers finish what is queued and exit.
    pub fn close(&self) {
        let (lock, ready) = &*self.queues;
        lock.lock().expect("pool queue lock").closed = true;
        ready.notify_all();
    }

    /// Waits for the workers after `close`.
    pub fn join(&self) {
        let threads = std::mem::take(&mut *self.threads.lock().expect("pool threads"));
        for t in threads {
            let _ = t.join();
        }
    }
}

/// A session for the server: `synchronous_commit` on (a webhook's 200 means
/// its rows are on PostgreSQL's disk, whatever the server's default), a
/// lock wait bounded like SQLite's busy timeout, and no statement longer
/// than `STATEMENT_TIMEOUT`.
pub fn connect(url: &str) -> Result<Conn, String> {
    let mut client = crate::pg::connect(url)?;
    client
        .batch_execute(&format!(
            "SET synchronous_commit = on; SET lock_timeout = '5s'; \
             SET statement_timeout = '{STATEMENT_TIMEOUT}'"
        ))
        .map_err(|e| format!("PostgreSQL session settings: {e}"))?;
    Ok(Conn::from(client))
}

/// Every job that waited longer than `CHECKOUT_WAIT`, or all of them when
/// no connection can be had: answered `Unavailable` without running.
fn refuse(queues: &Shared, all: bool, why: &str) -> Vec<PgJob> {
    let (lock, _) = &**queues;
    let mut guard = lock.lock().expect("pool queue lock");
    let q = &mut *guard;
    let mut refused = Vec::new();
    for queue in [&mut q.request, &mut q.background] {
        let kept: VecDeque<Queued> = queue
            .drain(..)
            .filter_map(|(at, job)| {
                if all || at.elapsed() > CHECKOUT_WAIT {
                    refused.push(job);
                    None
                } else {
                    Some((at, job))
                }
            })
            .collect();
        *queue = kept;
    }
    drop(guard);
    if !refused.is_empty() {
        log::warn!(
            "database: {} queued job(s) answered 503: {why}",
            refused.len()
        );
    }
    refused
}

fn answer_unavailable(job: PgJob, why: &str) {
    let (PgJob::Write(work) | PgJob::Read(work)) = job;
    // Given no connection, a job does not run; it only learns the answer.
    let (_, respond) = work(None);
    respond(Err(DbError::Unavailable(why.to_owned())));
}

fn worker(connections: &r2d2::Pool<Manager>, queues: &Shared, first: Priority) {
    let (lock, ready) = &**queues;
    loop {
        let (queued_at, job) = {
            let mut q = lock.lock().expect("pool queue lock");
            loop {
                if let Some(job) = q.next(first) {
                    break job;
                }
                if q.closed {
                    return;
                }
                q = ready.wait(q).expect("pool queue lock");
            }
        };
        if queued_at.elapsed() > CHECKOUT_WAIT {
            let why = format!(
                "no database connection free within {} s",
                CHECKOUT_WAIT.as_secs()
            );
            answer_unavailable(job, &why);
            for job in refuse(queues, false, &why) {
                answer_unavailable(job, &why);
            }
            continue;
        }
        let mut pooled = match connections.get() {
            Ok(pooled) => pooled,
            Err(e) => {
                // The database is away: so is it for every queued job.
                let why = format!("the database is unreachable: {e}");
                answer_unavailable(job, &why);
                for job in refuse(queues, true, &why) {
                    answer_unavailable(job, &why);
                }
                continue;
            }
        };
        // A write job opens, commits and, when a concurrent job got in its
        // way, retries its own transaction (`Writer`); a read needs none.
        let (PgJob::Write(work) | PgJob::Read(work)) = job;
        let (_, respond) = run(&pooled.conn, work);
        if pooled.conn.is_broken() {
            // The job's own error says what it lost (`DbError::is_unavailable`);
            // r2d2 drops the connection when it is given back and makes a
            // new one in the background.
            log::warn!("database: a connection was lost; the pool replaces it");
        } else {
            pooled.answered = Instant::now();
        }
        respond(Ok(()));
    }
}

/// A panic in a job is reported as `Panicked` by the job's own wrapper; this
/// keeps the worker alive if a wrapper itself panics, and ends whatever
/// transaction it left open, so the next job does not run inside it.
fn run(conn: &Conn, work: Work) -> (bool, Respond) {
    match catch_unwind(AssertUnwindSafe(|| work(Some(conn)))) {
        Ok(r) => r,
        Err(_) => {
            let _ = conn.execute_batch("ROLLBACK");
            (false, Box::new(|_| ()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(tag: &'static str, log: &Arc<Mutex<Vec<&'static str>>>) -> PgJob {
        let log = log.clone();
        PgJob::Write(Box::new(move |_| {
            log.lock().unwrap().push(tag);
            (true, Box::new(|_| ()))
        }))
    }

    fn take(q: &mut Queues, first: Priority) {
        let (_, PgJob::Write(work) | PgJob::Read(work)) = q.next(first).expect("a job");
        let _ = work(None);
    }

    #[test]
    fn request_workers_take_requests_first_and_background_workers_the_sender_first() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut q = Queues::default();
        let now = Instant::now();
        q.background.push_back((now, job("claim", &log)));
        q.request.push_back((now, job("webhook-1", &log)));
        q.request.push_back((now, job("webhook-2", &log)));
        q.background.push_back((now, job("outcome", &log)));

        take(&mut q, Priority::Request);
        take(&mut q, Priority::Background);
        take(&mut q, Priority::Request);
        // No request waits: a request worker helps the sender.
        take(&mut q, Priority::Request);

        assert_eq!(
            *log.lock().unwrap(),
            vec!["webhook-1", "claim", "webhook-2", "outcome"]
        );
        assert!(q.next(Priority::Request).is_none());
        assert!(q.next(Priority::Background).is_none());
    }
}
