//! One writer thread owns the only write connection and commits whatever
//! requests are waiting in one transaction (group commit), so a burst of
//! webhooks shares one fsync while each request is answered only after its
//! own rows are on disk. On PostgreSQL (SPEC §13) the same handle hands
//! each job to the connection pool instead, in a transaction of its own.

use rocket::tokio::sync::oneshot;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::checkpointer::CatchUp;
use super::error::{DbError, MAX_RUNS};
use super::pool::{PgJob, PgPool, Priority, Respond, Work, BEGIN};
use super::sql::Conn;

/// Upper bound of requests folded into one transaction; keeps a commit's
/// latency bounded when the queue is long.
const MAX_BATCH: usize = 512;

/// SQLite's job: run in the open transaction as often as its batch needs
/// (`run_batch`), then answered once, when the commit is known.
trait Job: Send {
    /// Runs the work, keeping its result for the answer; says whether it
    /// succeeded. `own_savepoint`: inside a savepoint of its own, so that a
    /// failure undoes only its writes.
    fn run(&mut self, conn: &Conn, own_savepoint: bool) -> bool;
    /// Tells the caller: its result if the batch committed, else why not.
    fn answer(self: Box<Self>, committed: Result<(), DbError>);
    /// Whether its caller waits for the commit to be on disk (all but
    /// `Framing::Unsynced`).
    fn synced(&self) -> bool;
}

type Jobs = mpsc::Sender<Box<dyn Job>>;

struct LiteWork<R, F> {
    work: F,
    /// The last run's result; `None` until the job has run.
    result: Option<Result<R, DbError>>,
    done: oneshot::Sender<Result<R, DbError>>,
    synced: bool,
}

impl<R, F> Job for LiteWork<R, F>
where
    R: Send,
    F: Fn(&Conn) -> Result<R, DbError> + Send,
{
    fn run(&mut self, conn: &Conn, own_savepoint: bool) -> bool {
        let result = if own_savepoint {
            run_in_savepoint(conn, &self.work)
        } else {
            run_caught(conn, &self.work)
        };
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn answer(self: Box<Self>, committed: Result<(), DbError>) {
        let outcome = match (self.result, committed) {
            (Some(Err(e)), _) => Err(e),
            (_, Err(e)) => Err(e),
            (Some(Ok(v)), Ok(())) => Ok(v),
            (None, Ok(())) => Err(DbError::Closed),
        };
        let _ = self.done.send(outcome);
    }

    fn synced(&self) -> bool {
        self.synced
    }
}

/// Handle to the writer thread (or the PostgreSQL pool); cheap to clone.
#[derive(Clone)]
pub struct Writer {
    target: Target,
}

#[derive(Clone)]
enum Target {
    Lite(Arc<Mutex<Option<Jobs>>>),
    /// The pool, and whether a NOTIFY is already on its way (`announce`).
    Pg(Arc<PgPool>, Arc<std::sync::atomic::AtomicBool>),
}

/// A writer's job, which may run more than once: on PostgreSQL a job whose
/// transaction another one got in the way of is rolled back and run again
/// from the start (up to `MAX_RUNS` times); on SQLite a job whose batch
/// another job of it failed in is rolled back with the batch and run again
/// (`run_batch`). So it must do nothing outside its transaction (no send,
/// no counter, no log it cannot repeat) and must read what it needs again
/// each time. Wrapping the closure says so where it is written.
pub struct MayRunTwice<F>(F);

impl<F> MayRunTwice<F> {
    /// The bound here, not only on the writer's methods, lets the compiler
    /// see the closure's argument as any `&Conn`.
    pub fn new<R>(work: F) -> MayRunTwice<F>
    where
        F: Fn(&Conn) -> Result<R, DbError> + Send + 'static,
    {
        MayRunTwice(work)
    }
}

impl Writer {
    /// A writer with no checkpointer beside it (tests, tools).
    pub fn start(conn: rusqlite::Connection) -> (Writer, JoinHandle<()>) {
        Writer::start_with(conn, CatchUp::default())
    }

    /// A writer that copies the WAL's last frames when the checkpointer
    /// asks (`CatchUp`).
    pub fn start_with(conn: rusqlite::Connection, catch_up: CatchUp) -> (Writer, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel::<Box<dyn Job>>();
        let conn = Conn::from(conn);
        let handle = std::thread::Builder::new()
            .name("db-writer".into())
            .spawn(move || writer_loop(conn, rx, catch_up))
            .expect("spawn the database writer");
        (
            Writer {
                target: Target::Lite(Arc::new(Mutex::new(Some(tx)))),
            },
            handle,
        )
    }

    /// Writes through the PostgreSQL pool: one transaction per job.
    pub fn postgres(pool: Arc<PgPool>) -> Writer {
        Writer {
            target: Target::Pg(pool, Default::default()),
        }
    }

    /// Queues `work`; it runs in the next batch's transaction, and its
    /// result is delivered once that batch is committed (or has failed).
    /// An `Err` from `work` undoes only its own writes.
    pub fn submit<R, F>(
        &self,
        MayRunTwice(work): MayRunTwice<F>,
    ) -> oneshot::Receiver<Result<R, DbError>>
    where
        R: Send + 'static,
        F: Fn(&Conn) -> Result<R, DbError> + Send + 'static,
    {
        self.submit_as(Priority::Background, Framing::Transaction, work)
    }

    /// `submit`, saying who waits: on PostgreSQL a request's job goes ahead
    /// of the sender's (`Priority`); SQLite's one writer batches both alike.
    fn submit_as<R, F>(
        &self,
        priority: Priority,
        framing: Framing,
        work: F,
    ) -> oneshot::Receiver<Result<R, DbError>>
    where
        R: Send + 'static,
        F: Fn(&Conn) -> Result<R, DbError> + Send + 'static,
    {
        let (done_tx, done_rx) = oneshot::channel();
        if let Target::Lite(tx) = &self.target {
            // A job refused by a closed writer is dropped with its reply
            // channel, which the receiver sees as `Closed`.
            if let Some(tx) = tx.lock().expect("writer handle lock").as_ref() {
                let _ = tx.send(Box::new(LiteWork {
                    work,
                    result: None,
                    done: done_tx,
                    synced: !matches!(framing, Framing::Unsynced(_)),
                }));
            }
            return done_rx;
        }
        let job: Work = Box::new(move |conn: Option<&Conn>| {
            let result = match conn {
                Some(conn) => run_in_transaction(conn, framing, work).map(Some),
                None => Ok(None),
            };
            let ok = result.is_ok();
            let respond: Respond = Box::new(move |committed: Result<(), DbError>| {
                let outcome = match (result, committed) {
                    (Err(e), _) => Err(e),
                    (Ok(_), Err(e)) => Err(e),
                    (Ok(Some(v)), Ok(())) => Ok(v),
                    (Ok(None), Ok(())) => Err(DbError::Closed),
                };
                let _ = done_tx.send(outcome);
            });
            (ok, respond)
        });
        if let Target::Pg(pool, _) = &self.target {
            pool.send(PgJob::Write(job), priority);
        }
        done_rx
    }

    /// For async handlers: waits without blocking the executor.
    pub async fn run<R, F>(&self, MayRunTwice(work): MayRunTwice<F>) -> Result<R, DbError>
    where
        R: Send + 'static,
        F: Fn(&Conn) -> Result<R, DbError> + Send + 'static,
    {
        self.submit_as(Priority::Request, Framing::Transaction, work)
            .await
            .unwrap_or(Err(DbError::Closed))
    }

    /// `run` for a job of exactly one statement: on PostgreSQL it is sent
    /// without BEGIN and COMMIT, so the statement is its own transaction and
    /// the job costs one round trip (SPEC §13) instead of three. Run again,
    /// like any job, when a concurrent one got in its way. A job with more
    /// than one statement must use `run`: here each would commit alone. On
    /// SQLite this is `run`.
    pub async fn run_alone<R, F>(&self, MayRunTwice(work): MayRunTwice<F>) -> Result<R, DbError>
    where
        R: Send + 'static,
        F: Fn(&Conn) -> Result<R, DbError> + Send + 'static,
    {
        self.submit_as(Priority::Request, Framing::Alone, work)
            .await
            .unwrap_or(Err(DbError::Closed))
    }

    /// For worker threads (never call from async code).
    pub fn run_blocking<R, F>(&self, work: MayRunTwice<F>) -> Result<R, DbError>
    where
        R: Send + 'static,
        F: Fn(&Conn) -> Result<R, DbError> + Send + 'static,
    {
        self.submit(work)
            .blocking_recv()
            .unwrap_or(Err(DbError::Closed))
    }

    /// `run_blocking` for a job that holds the lock of `key` (`Conn::
    /// lock_key`) from its start: on PostgreSQL the lock rides with BEGIN,
    /// and the job's own `lock_key(key)` costs nothing. On SQLite this is
    /// `run_blocking`.
    pub fn run_blocking_locked<R, F>(
        &self,
        key: String,
        MayRunTwice(work): MayRunTwice<F>,
    ) -> Result<R, DbError>
    where
        R: Send + 'static,
        F: Fn(&Conn) -> Result<R, DbError> + Send + 'static,
    {
        self.submit_as(Priority::Background, Framing::Locked(vec![key]), work)
            .blocking_recv()
            .unwrap_or(Err(DbError::Closed))
    }

    /// `run` for a job that takes the locks of `keys`, in that order, before
    /// anything else: on PostgreSQL they ride with BEGIN in one round trip
    /// (`run_blocking_locked`). The order must be the one the job's own
    /// `lock_key` calls follow, so that no two jobs wait for each other.
    pub async fn run_locked<R, F>(
        &self,
        keys: Vec<String>,
        MayRunTwice(work): MayRunTwice<F>,
    ) -> Result<R, DbError>
    where
        R: Send + 'static,
        F: Fn(&Conn) -> Result<R, DbError> + Send + 'static,
    {
        self.submit_as(Priority::Request, Framing::Locked(keys), work)
            .await
            .unwrap_or(Err(DbError::Closed))
    }

    /// `run_blocking` for a write a power cut may lose (the click log, a
    /// send's outcome): committed without waiting for the disk
    /// (`Framing::Unsynced`), holding the lock of `lock` from its start as
    /// `run_blocking_locked` does.
    pub fn run_blocking_unsynced<R, F>(
        &self,
        lock: Option<String>,
        MayRunTwice(work): MayRunTwice<F>,
    ) -> Result<R, DbError>
    where
        R: Send + 'static,
        F: Fn(&Conn) -> Result<R, DbError> + Send + 'static,
    {
        self.submit_as(
            Priority::Background,
            Framing::Unsynced(lock.into_iter().collect()),
            work,
        )
        .blocking_recv()
        .unwrap_or(Err(DbError::Closed))
    }

    /// Whether jobs go to PostgreSQL, for the few callers that write a
    /// statement only PostgreSQL takes (`run_alone`'s).
    pub fn is_postgres(&self) -> bool {
        matches!(self.target, Target::Pg(..))
    }

    /// Tells every instance's senders that a message was queued (SPEC §13,
    /// `db::notify`); on SQLite the caller's own wake is all there is. A
    /// burst of webhooks shares one NOTIFY: while one waits to be sent, the
    /// next announcements ride on it.
    pub fn announce(&self) {
        use std::sync::atomic::Ordering;
        let Target::Pg(pool, pending) = &self.target else {
            return;
        };
        if pending.swap(true, Ordering::SeqCst) {
            return;
        }
        let pending = pending.clone();
        let sql = format!("NOTIFY {}", super::notify::CHANNEL);
        pool.send(
            PgJob::Read(Box::new(move |conn: Option<&Conn>| {
                // Cleared before the NOTIFY: what is queued from now on is
                // announced again.
                pending.store(false, Ordering::SeqCst);
                if let Some(conn) = conn {
                    if let Err(e) = conn.execute_batch(&sql) {
                        log::warn!("database: NOTIFY: {e}");
                    }
                }
                let respond: Respond = Box::new(|_| ());
                (true, respond)
            })),
            Priority::Request,
        );
    }

    /// Stops accepting work; the thread drains what is queued and exits.
    pub fn close(&self) {
        match &self.target {
            Target::Lite(tx) => drop(tx.lock().expect("writer handle lock").take()),
            Target::Pg(pool, _) => pool.close(),
        }
    }
}

/// How a job is committed. On SQLite every job joins the group commit;
/// only `Unsynced` changes how that commit is made.
#[derive(Clone)]
enum Framing {
    /// BEGIN, the work, COMMIT, answered once the commit is on disk.
    Transaction,
    /// PostgreSQL: the work's one statement alone, committed by PostgreSQL
    /// as it ends.
    Alone,
    /// `Transaction` whose commit does not wait for the disk, holding the
    /// locks of these keys from its BEGIN as `Locked` does. For writes that
    /// a power cut may lose without breaking a promise: the click log's
    /// (its callers were answered before it was written, and each commit's
    /// fsync was a third of a click's CPU in the writer: 6.06 against
    /// 4.12 µs, `bench/clicks/cost.py`), and a send's outcome (the claim
    /// before the send waited for the disk; an outcome lost leaves the
    /// message claimed, and SPEC §5 makes it unsure, never sent again at
    /// once). SQLite commits a batch of only these with
    /// `synchronous=NORMAL`: the WAL keeps them in order behind the commits
    /// before them, a crash of the process loses none of them, and the next
    /// synced commit or checkpoint (the checkpointer's round comes every
    /// 500 ms) carries them to disk. PostgreSQL turns `synchronous_commit` off for
    /// the transaction.
    Unsynced(Vec<String>),
    /// `Transaction` that holds the locks of these keys (`Conn::lock_key`)
    /// from its BEGIN, taken in order in the same round trip on PostgreSQL.
    Locked(Vec<String>),
}

/// `BEGIN` for `Framing::Unsynced` on PostgreSQL, in the same round trip.
static BEGIN_UNSYNCED: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("{BEGIN}; SET LOCAL synchronous_commit TO OFF"));

fn run_caught<R, F>(conn: &Conn, work: &F) -> Result<R, DbError>
where
    F: Fn(&Conn) -> Result<R, DbError>,
{
    match catch_unwind(AssertUnwindSafe(|| work(conn))) {
        Ok(r) => r,
        Err(_) => Err(DbError::Panicked),
    }
}

fn run_in_savepoint<R, F>(conn: &Conn, work: &F) -> Result<R, DbError>
where
    F: Fn(&Conn) -> Result<R, DbError>,
{
    // Cached statements: parsing these three for every request showed up
    // in the writer's profile.
    conn.prepare_cached("SAVEPOINT job")?.execute([])?;
    let result = run_caught(conn, work);
    if result.is_err() {
        conn.prepare_cached("ROLLBACK TO job")?.execute([])?;
    }
    conn.prepare_cached("RELEASE job")?.execute([])?;
    result
}

/// PostgreSQL: the job in a transaction of its own, committed before it is
/// answered; rolled back whole when it fails (no savepoint), and run again
/// from a fresh transaction when a concurrent job got in its way, which
/// SERIALIZABLE may report at any statement or at COMMIT.
fn run_in_transaction<R, F>(conn: &Conn, framing: Framing, work: F) -> Result<R, DbError>
where
    F: Fn(&Conn) -> Result<R, DbError>,
{
    let (begin, keys) = match &framing {
        Framing::Transaction => (Some(BEGIN), &[][..]),
        Framing::Unsynced(keys) => (Some(BEGIN_UNSYNCED.as_str()), keys.as_slice()),
        Framing::Locked(keys) => (Some(BEGIN), keys.as_slice()),
        Framing::Alone => (None, &[][..]),
    };
    let framed = begin.is_some();
    let mut runs = 1;
    loop {
        if let Some(begin) = begin {
            if let Err(e) = conn.begin(begin, keys) {
                // The lock may have failed after BEGIN (its wait timed
                // out): the connection must not go back to the pool inside
                // that aborted transaction. Its error says what it is, as
                // it would from the job's own `lock_key`.
                let _ = conn.end("ROLLBACK");
                return Err(if keys.is_empty() {
                    DbError::Commit(e.to_string())
                } else {
                    e
                });
            }
        }
        let result = match catch_unwind(AssertUnwindSafe(|| work(conn))) {
            Ok(r) => r,
            Err(_) => Err(DbError::Panicked),
        };
        let result = match result {
            Ok(v) if framed => conn.end("COMMIT").map(|()| v),
            other => other,
        };
        match result {
            Ok(v) => return Ok(v),
            Err(e) => {
                // After a failed COMMIT PostgreSQL has already ended the
                // transaction; ROLLBACK then only warns.
                if framed {
                    let _ = conn.end("ROLLBACK");
                }
                if runs >= e.runs_allowed().min(MAX_RUNS) {
                    return Err(e);
                }
                // A little random wait, so two jobs that collided do not
                // collide again in step.
                let wait = rand::random::<u64>() % (2 * u64::from(runs)) + 1;
                std::thread::sleep(std::time::Duration::from_millis(wait));
                runs += 1;
            }
        }
    }
}

fn writer_loop(conn: Conn, rx: mpsc::Receiver<Box<dyn Job>>, catch_up: CatchUp) {
    // As `open_writer` left it.
    let mut synced = true;
    while let Ok(first) = rx.recv() {
        // Woken by the first job, give the threads that are about to submit
        // theirs a turn before taking the batch. On one core the writer
        // otherwise runs the moment one job arrives, and commits (an fsync,
        // a sleep and a wake-up each) nearly one job at a time; on more
        // cores this returns at once.
        std::thread::yield_now();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(&conn, batch, &mut synced);
        if catch_up.take() {
            copy_the_wal_s_tail(&conn);
        }
    }
}

/// After a batch was answered and before the next begins, so no frame is
/// appended meanwhile: copies what the checkpointer's last round left, and
/// the next transaction starts the WAL over (`CatchUp`). Frames a reader
/// still needs stay, and the WAL starts over after a later round instead.
fn copy_the_wal_s_tail(conn: &Conn) {
    let lite = conn.lite().expect("the batching writer is SQLite's");
    if let Err(e) = lite.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
        log::warn!("database: checkpoint between batches failed: {e}");
    }
}

/// Runs a batch in one transaction and commits it. First without a
/// savepoint per job: SQLite copies every page a savepoint touches into its
/// statement journal, 9 % of the server's user-space CPU under a burst of
/// webhooks (perf). Jobs fail only on a database error, so rarely; when one does,
/// its writes are mixed with the others', so the whole batch is rolled back
/// and run again with a savepoint per job, the failed one keeping its error.
fn run_batch(conn: &Conn, mut batch: Vec<Box<dyn Job>>, synced: &mut bool) {
    let lite = conn.lite().expect("the batching writer is SQLite's");
    if let Err(e) = sync_for(lite, &batch, synced) {
        return answer_all(batch, Err(e));
    }
    if let Err(e) = begin(lite) {
        return answer_all(batch, Err(e));
    }
    if let Some(failed) = batch.iter_mut().position(|job| !job.run(conn, false)) {
        let _ = lite.execute_batch("ROLLBACK");
        if let Err(e) = begin(lite) {
            return answer_all(batch, Err(e));
        }
        for (i, job) in batch.iter_mut().enumerate() {
            if i != failed {
                job.run(conn, true);
            }
        }
    }
    let committed = lite
        .prepare_cached("COMMIT")
        .and_then(|mut s| s.execute([]))
        .map(|_| ());
    if let Err(e) = &committed {
        super::damage::note(e);
        log::error!("database: commit of {} request(s) failed: {e}", batch.len());
        let _ = lite.execute_batch("ROLLBACK");
    }
    answer_all(batch, committed.map_err(|e| e.to_string()));
}

/// Sets `synchronous` for the batch's commit (`Framing::Unsynced`): FULL if
/// any of its callers waits for the disk, else NORMAL. `synced` is what the
/// connection has now; the pragma runs only when that changes.
fn sync_for(
    lite: &rusqlite::Connection,
    batch: &[Box<dyn Job>],
    synced: &mut bool,
) -> Result<(), String> {
    let wanted = batch.iter().any(|job| job.synced());
    if wanted == *synced {
        return Ok(());
    }
    let pragma = if wanted {
        "PRAGMA synchronous = FULL"
    } else {
        "PRAGMA synchronous = NORMAL"
    };
    match lite.execute_batch(pragma) {
        Ok(()) => {
            *synced = wanted;
            Ok(())
        }
        // Still FULL: the batch only waits for a disk it did not need.
        Err(e) if !wanted => {
            log::warn!("database: {pragma}: {e}");
            Ok(())
        }
        // A commit its callers would take for durable might not be.
        Err(e) => {
            log::error!("database: {pragma}: {e}");
            Err(e.to_string())
        }
    }
}

fn begin(lite: &rusqlite::Connection) -> Result<(), String> {
    lite.prepare_cached("BEGIN IMMEDIATE")
        .and_then(|mut s| s.execute([]))
        .map(|_| ())
        .map_err(|e| {
            super::damage::note(&e);
            log::error!("database: cannot start a write transaction: {e}");
            e.to_string()
        })
}

/// Each caller learns whether its write is on disk; a job that never ran
/// (no transaction could start) learns the write did not happen.
fn answer_all(batch: Vec<Box<dyn Job>>, committed: Result<(), String>) {
    for job in batch {
        job.answer(committed.clone().map_err(DbError::Commit));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::open::{open_writer, prepare_path};
    use crate::db::readers::ReadPool;
    use rusqlite::Connection;
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

    /// The first column of `sql`'s rows, read back after the writer closed.
    fn texts(path: &std::path::Path, sql: &'static str) -> Vec<String> {
        ReadPool::new(path)
            .with(move |c| {
                let mut s = c.prepare(sql)?;
                let rows = s.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
                Ok(rows)
            })
            .unwrap()
    }

    /// A writer that is never idle for long must still start the WAL over
    /// when the checkpointer asks, not extend it by every commit. Without
    /// the writer's catch-up the WAL ended at 64 MB, every page committed;
    /// with it, at 6 to 8 MB.
    #[test]
    fn a_busy_writer_starts_the_wal_over_when_the_checkpointer_asks() {
        let (_dir, conn, path) = temp_db();
        conn.execute_batch("CREATE TABLE blobs (b BLOB)").unwrap();
        let catch_up = CatchUp::default();
        let (writer, handle) = Writer::start_with(conn, catch_up.clone());
        let checkpointer = crate::db::checkpointer::Checkpointer::start_every(
            &path,
            catch_up,
            std::time::Duration::from_millis(5),
        )
        .unwrap();
        // Eight callers keep a batch waiting while one commits; a row
        // fills most of a 4 KiB page.
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..1_250 {
                        writer
                            .run_blocking_unsynced(
                                None,
                                MayRunTwice::new(|c| {
                                    c.execute("INSERT INTO blobs VALUES (zeroblob(3500))", [])
                                }),
                            )
                            .unwrap();
                    }
                });
            }
        });
        let wal = std::fs::metadata(path.with_extension("db-wal"))
            .unwrap()
            .len();
        writer.close();
        handle.join().unwrap();
        checkpointer.stop();
        assert!(
            wal < 24 << 20,
            "the WAL grew to {wal} bytes: it never started over"
        );
    }

    #[test]
    fn a_failing_job_rolls_back_only_itself() {
        let (_dir, conn, path) = temp_db();
        let (writer, handle) = Writer::start(conn);
        let a = writer.submit(MayRunTwice::new(|c| {
            c.execute("INSERT INTO t VALUES ('a')", [])
        }));
        let b = writer.submit(MayRunTwice::new(|c| {
            c.execute("INSERT INTO t VALUES ('b')", [])?;
            c.execute("INSERT INTO t VALUES ('a')", [])?; // conflicts
            Ok(())
        }));
        assert_eq!(a.blocking_recv().unwrap().unwrap(), 1);
        assert!(b.blocking_recv().unwrap().is_err());
        writer.close();
        handle.join().unwrap();
        assert_eq!(texts(&path, "SELECT k FROM t ORDER BY k"), ["a"]);
    }

    /// Jobs run without savepoints until one fails; then the batch is
    /// rolled back and run again, each in a savepoint. The others' writes
    /// must then be there once, not twice, and the failed one's not at all.
    #[test]
    fn a_failure_in_a_batch_reruns_the_others_once_each() {
        let (_dir, conn, path) = temp_db();
        conn.execute_batch("CREATE TABLE log (what TEXT)").unwrap();
        let (writer, handle) = Writer::start(conn);
        // Holds the writer inside a job until the next three are queued,
        // so that they make one batch.
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let go_rx = Mutex::new(go_rx);
        let gate = writer.submit(MayRunTwice::new(move |_| {
            let _ = go_rx.lock().unwrap().recv();
            Ok(())
        }));
        let before = writer.submit(MayRunTwice::new(|c| {
            c.execute("INSERT INTO log VALUES ('before')", [])
        }));
        let bad = writer.submit(MayRunTwice::new(|c| {
            c.execute("INSERT INTO log VALUES ('bad')", [])?;
            c.execute("INSERT INTO t VALUES (NULL, 'no such column')", [])
        }));
        let after = writer.submit(MayRunTwice::new(|c| {
            c.execute("INSERT INTO log VALUES ('after')", [])
        }));
        go_tx.send(()).unwrap();
        // The gate runs again with the batch when it shares one with the
        // failure: closed, its second wait ends at once.
        drop(go_tx);
        gate.blocking_recv().unwrap().unwrap();
        assert_eq!(before.blocking_recv().unwrap().unwrap(), 1);
        assert!(bad.blocking_recv().unwrap().is_err());
        assert_eq!(after.blocking_recv().unwrap().unwrap(), 1);
        writer.close();
        handle.join().unwrap();
        assert_eq!(
            texts(&path, "SELECT what FROM log ORDER BY rowid"),
            ["before", "after"]
        );
    }

    /// `synchronous` as a job sees it, inside its batch.
    fn sync_seen(c: &Conn) -> Result<i64, DbError> {
        c.query_row("PRAGMA synchronous", [], |r| r.get(0))
    }

    /// A batch of only unsynced jobs commits with `synchronous=NORMAL`
    /// (1), a lock held or not (a send's outcome holds one); one synced job
    /// makes its whole batch FULL (2), whatever the batch before it was.
    #[test]
    fn only_a_batch_of_unsynced_jobs_skips_the_wait_for_the_disk() {
        let (_dir, conn, _path) = temp_db();
        let (writer, handle) = Writer::start(conn);
        let alone = writer.run_blocking_unsynced(None, MayRunTwice::new(sync_seen));
        assert_eq!(alone.unwrap(), 1);
        let after = writer.run_blocking(MayRunTwice::new(sync_seen));
        assert_eq!(after.unwrap(), 2);
        let locked = writer.run_blocking_unsynced(Some("m".into()), MayRunTwice::new(sync_seen));
        assert_eq!(locked.unwrap(), 1);
        let locked_synced = writer.run_blocking_locked("m".into(), MayRunTwice::new(sync_seen));
        assert_eq!(locked_synced.unwrap(), 2);

        // A gate holds the writer, alone in its batch, while an unsynced
        // and a synced job queue behind it; they make the next batch.
        let (running_tx, running_rx) = std::sync::mpsc::channel::<()>();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let (running_tx, go_rx) = (Mutex::new(running_tx), Mutex::new(go_rx));
        let gate = writer.submit_as(
            Priority::Background,
            Framing::Unsynced(Vec::new()),
            move |_| {
                let _ = running_tx.lock().unwrap().send(());
                let _ = go_rx.lock().unwrap().recv();
                Ok(())
            },
        );
        running_rx.recv().unwrap();
        let unsynced = writer.submit_as(
            Priority::Background,
            Framing::Unsynced(Vec::new()),
            sync_seen,
        );
        let synced = writer.submit(MayRunTwice::new(sync_seen));
        go_tx.send(()).unwrap();
        gate.blocking_recv().unwrap().unwrap();
        assert_eq!(unsynced.blocking_recv().unwrap().unwrap(), 2);
        assert_eq!(synced.blocking_recv().unwrap().unwrap(), 2);
        writer.close();
        handle.join().unwrap();
    }

    #[test]
    fn a_panicking_job_is_reported_and_the_writer_survives() {
        let (_dir, conn, _path) = temp_db();
        let (writer, handle) = Writer::start(conn);
        let bad: Result<(), DbError> = writer.run_blocking(MayRunTwice::new(|_| panic!("boom")));
        assert!(matches!(bad, Err(DbError::Panicked)));
        let good = writer.run_blocking(MayRunTwice::new(|c| {
            c.execute("INSERT INTO t VALUES ('x')", [])
        }));
        assert_eq!(good.unwrap(), 1);
        writer.close();
        handle.join().unwrap();
    }
}
