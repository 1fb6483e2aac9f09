//! PostgreSQL's side of the writer and the readers (SPEC §13): a fixed set
//! of connections, each owned by one worker thread. A write job runs in a
//! transaction of its own on whichever worker is free (`Writer` opens and
//! commits it), and is answered after its COMMIT; PostgreSQL groups
//! concurrent commits itself, so there is no batching here. Reads run on the
//! same workers, outside a transaction.
//!
//! Worker threads rather than a pool crate (r2d2, deadpool): the blocking
//! `postgres` client must not run on Rocket's executor anyway, so a thread
//! per connection is needed either way; a thread owning its connection also
//! owns that connection's prepared statements, and replaces the connection
//! when it dies, with no checkout and no extra dependency.

use super::sql::Conn;
use super::DbError;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// Connections (and worker threads) per instance. Enough for the webhook
/// handlers and the sender's workers to write side by side; each instance
/// of a fleet opens its own, so PostgreSQL's `max_connections` (100 by
/// default) bounds the fleet, not one instance.
pub const PG_CONNECTIONS: usize = 8;

/// How a write job's transaction starts: READ COMMITTED, PostgreSQL's
/// default. The data functions were written for SQLite's one writer, where
/// a job never sees another half done; here the row locks of their upserts
/// and updates order jobs on the same order or message, a unique key that a
/// concurrent job inserted first fails the job and it runs again (`Writer`),
/// and the few look-ups that nothing else guards take `Conn::lock_key`.
/// (SERIALIZABLE was tried: on these small hot tables nearly every pair of
/// concurrent webhooks failed each other, and 503s came back at 64 at once.)
pub(crate) const BEGIN: &str = "BEGIN";

/// Runs of one job before its error is the answer.
pub(crate) const MAX_RUNS: u32 = 12;

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

#[derive(Default)]
struct Queues {
    request: VecDeque<PgJob>,
    background: VecDeque<PgJob>,
    closed: bool,
}

impl Queues {
    /// The next job for a worker that prefers `first`; `None` when both
    /// queues are empty.
    fn next(&mut self, first: Priority) -> Option<PgJob> {
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

pub struct PgPool {
    url: String,
    queues: Shared,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl PgPool {
    /// Connects every worker up front, so a wrong URL or password stops the
    /// start with PostgreSQL's reason rather than failing the first request.
    pub fn start(url: &str, size: usize) -> Result<Arc<PgPool>, String> {
        let pool = Arc::new(PgPool {
            url: url.to_owned(),
            queues: Arc::new((Mutex::new(Queues::default()), Condvar::new())),
            threads: Mutex::new(Vec::new()),
        });
        for i in 0..size.max(1) {
            let conn = connect(url)?;
            let queues = pool.queues.clone();
            let url = url.to_owned();
            let first = if i < BACKGROUND_FIRST {
                Priority::Background
            } else {
                Priority::Request
            };
            let handle = std::thread::Builder::new()
                .name(format!("db-pg-{i}"))
                .spawn(move || worker(&url, conn, &queues, first))
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
        match priority {
            Priority::Request => q.request.push_back(job),
            Priority::Background => q.background.push_back(job),
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
/// its rows are on PostgreSQL's disk, whatever the server's default), and a
/// lock wait bounded like SQLite's busy timeout.
pub fn connect(url: &str) -> Result<Conn, String> {
    let mut client = crate::pg::connect(url)?;
    client
        .batch_execute("SET synchronous_commit = on; SET lock_timeout = '5s'")
        .map_err(|e| format!("PostgreSQL session settings: {e}"))?;
    Ok(Conn::from(client))
}

fn worker(url: &str, mut conn: Conn, queues: &Shared, first: Priority) {
    let (lock, ready) = &**queues;
    loop {
        let job = {
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
        if conn.is_broken() {
            match connect(url) {
                Ok(fresh) => conn = fresh,
                Err(e) => log::error!("database: reconnecting: {e}"),
            }
        }
        let usable = !conn.is_broken();
        // A write job opens, commits and, when a concurrent job got in its
        // way, retries its own transaction (`Writer`); a read needs none.
        let (PgJob::Write(work) | PgJob::Read(work)) = job;
        let (_, respond) = run(&usable.then_some(&conn), work);
        respond(if usable { Ok(()) } else { Err(DbError::Closed) });
    }
}

/// A panic in a job is reported as `Panicked` by the job's own wrapper; this
/// keeps the worker alive if a wrapper itself panics, and ends whatever
/// transaction it left open, so the next job does not run inside it.
fn run(conn: &Option<&Conn>, work: Work) -> (bool, Respond) {
    match catch_unwind(AssertUnwindSafe(|| work(*conn))) {
        Ok(r) => r,
        Err(_) => {
            if let Some(conn) = conn {
                let _ = conn.execute_batch("ROLLBACK");
            }
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
        let (PgJob::Write(work) | PgJob::Read(work)) = q.next(first).expect("a job");
        let _ = work(None);
    }

    #[test]
    fn request_workers_take_requests_first_and_background_workers_the_sender_first() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut q = Queues::default();
        q.background.push_back(job("claim", &log));
        q.request.push_back(job("webhook-1", &log));
        q.request.push_back(job("webhook-2", &log));
        q.background.push_back(job("outcome", &log));

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
