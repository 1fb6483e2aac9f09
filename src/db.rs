//! SQLite access. One writer thread owns the only write connection and
//! commits whatever requests are waiting in one transaction (group commit),
//! so a burst of webhooks shares one fsync while each request is answered
//! only after its own rows are on disk. Reads use a small pool of read-only
//! connections; WAL lets them run beside the writer. Nothing here runs on
//! Rocket's async executor.

use rocket::tokio::sync::oneshot;
use rusqlite::{Connection, OpenFlags};
use std::fs;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// How long a connection waits for a lock held by another connection (the
/// backup command, a second reader) before giving up with SQLITE_BUSY.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Upper bound of requests folded into one transaction; keeps a commit's
/// latency bounded when the queue is long.
const MAX_BATCH: usize = 512;

/// Read connections open at most.
const MAX_READERS: usize = 4;

#[derive(Debug)]
pub enum DbError {
    Sql(rusqlite::Error),
    /// The batch's COMMIT failed: nothing of this request is on disk.
    Commit(rusqlite::Error),
    Panicked,
    /// The writer has stopped (shutdown).
    Closed,
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbError::Sql(e) => write!(f, "database error: {e}"),
            DbError::Commit(e) => write!(f, "commit failed: {e}"),
            DbError::Panicked => f.write_str("database job panicked"),
            DbError::Closed => f.write_str("database writer is closed"),
        }
    }
}

impl std::error::Error for DbError {}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        DbError::Sql(e)
    }
}

/// Creates the folder (owner-only) and the file (owner-read/write) before
/// SQLite does, so the database never exists with looser permissions.
/// SQLite gives its -wal and -shm files the main file's permissions.
pub fn prepare_path(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)?;
        }
    }
    if !path.exists() {
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
    }
    Ok(())
}

/// WAL, FULL sync (a commit is on disk before it returns: the durability the
/// webhook's 200 promises, even across a power cut), a busy timeout, and
/// foreign keys.
pub fn open_writer(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Checkpoints run on their own thread (`Checkpointer`): inline, every
    // thousandth page would stall a commit, and every webhook waiting on it,
    // for two fsyncs and a copy of the WAL.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    Ok(conn)
}

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

pub fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Small page cache: reads are point lookups, and memory is scarce on a
    // small VPS (the pool may hold several of these).
    conn.pragma_update(None, "cache_size", -512)?;
    Ok(conn)
}

/// Applies the embedded migrations; returns how many were applied now.
pub fn migrate(conn: &mut Connection) -> Result<usize, refinery::Error> {
    let report = embedded::migrations::runner().run(conn)?;
    Ok(report.applied_migrations().len())
}

/// Pre-migration copies kept beside the database; older ones are removed.
pub const MIGRATION_BACKUPS_KEPT: usize = 3;

/// Applies the embedded migrations. When the database already holds a schema and a
/// migration is pending (an upgrade), it first writes a copy beside the database
/// (`<file>.pre-migration-<UTC time>-v<version>.bak`, the newest three kept), so the
/// upgrade can be rolled back by stopping the server and putting the copy back.
/// Returns how many migrations were applied and the copy written, if any.
pub fn migrate_with_backup(
    conn: &mut Connection,
    path: &Path,
) -> Result<(usize, Option<PathBuf>), String> {
    let has_schema: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'refinery_schema_history')",
            [],
            |r| r.get(0),
        )
        .map_err(|e| format!("reading the schema: {e}"))?;
    let mut copy = None;
    if has_schema {
        let pending = pending_migrations(conn).map_err(|e| format!("migrations: {e}"))?;
        if let Some(first) = pending.first() {
            let dest = migration_backup_path(path, first);
            copy_database(conn, &dest)
                .map_err(|e| format!("backup before migrating to {}: {e}", dest.display()))?;
            prune_migration_backups(path, MIGRATION_BACKUPS_KEPT);
            copy = Some(dest);
        }
    }
    let applied = migrate(conn).map_err(|e| format!("migrations failed: {e}"))?;
    Ok((applied, copy))
}

fn migration_backup_prefix(path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    format!("{}.pre-migration-", name.unwrap_or_default())
}

/// The time comes first in the name, so the names sort oldest first.
fn migration_backup_path(path: &Path, first_pending: &str) -> PathBuf {
    let stamp = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_default();
    let version: String = first_pending
        .chars()
        .take_while(|c| *c != '_')
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let mut name = migration_backup_prefix(path);
    name.push_str(&format!("{stamp}-{}.bak", version.to_ascii_lowercase()));
    path.with_file_name(name)
}

fn prune_migration_backups(path: &Path, keep: usize) {
    let prefix = migration_backup_prefix(path);
    let folder = match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(p) => p.to_path_buf(),
        None => PathBuf::from("."),
    };
    let Ok(entries) = fs::read_dir(&folder) else {
        return;
    };
    let mut copies: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".bak"))
        })
        .collect();
    copies.sort();
    let excess = copies.len().saturating_sub(keep);
    for old in &copies[..excess] {
        if let Err(e) = fs::remove_file(old) {
            log::warn!("could not remove the old backup {}: {e}", old.display());
        }
    }
}

/// A consistent copy of the database behind `src` into a new file at `dest` (created
/// owner-only), through SQLite's online backup API; checked with `integrity_check`.
/// Returns the copy's page count. A concurrent writer neither blocks nor restarts it.
pub fn copy_database(src: &Connection, dest: &Path) -> Result<i32, String> {
    use rusqlite::backup::{Backup, StepResult};
    if dest.exists() {
        return Err(format!(
            "{} already exists and a backup never overwrites a file; choose a new path, e.g. a dated name such as orderlink-$(date +%Y%m%d-%H%M%S).db",
            dest.display()
        ));
    }
    prepare_path(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    let mut out = Connection::open(dest).map_err(|e| e.to_string())?;
    {
        let backup = Backup::new(src, &mut out).map_err(|e| e.to_string())?;
        // All pages in one step, inside one read transaction: a consistent
        // snapshot that a concurrent writer can neither block nor restart
        // (WAL readers see the database as of their first read).
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match backup.step(-1).map_err(|e| e.to_string())? {
                StepResult::Done => break,
                _ if std::time::Instant::now() > deadline => {
                    return Err("the database stayed locked for 60 s".into())
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
    let pages: i32 = out
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    let ok: String = out
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if ok != "ok" {
        return Err(format!("the copy fails its integrity check: {ok}"));
    }
    Ok(pages)
}

/// Names of migrations embedded in this binary that the database lacks.
pub fn pending_migrations(conn: &mut Connection) -> Result<Vec<String>, refinery::Error> {
    let runner = embedded::migrations::runner();
    let applied = runner.get_applied_migrations(conn)?;
    Ok(runner
        .get_migrations()
        .iter()
        .filter(|m| !applied.iter().any(|a| a.version() == m.version()))
        .map(|m| m.to_string())
        .collect())
}

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

/// A few read-only connections, handed out one at a time. At most
/// `MAX_READERS` exist: on two cores more would only add memory (each has
/// its own page cache) and contention, so a burst waits for a free one.
#[derive(Clone)]
pub struct ReadPool {
    path: PathBuf,
    inner: Arc<(Mutex<PoolState>, Condvar)>,
    queue: Arc<ReadQueue>,
}

struct PoolState {
    idle: Vec<Connection>,
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
        }
    }

    fn take(&self) -> Result<Connection, DbError> {
        let (lock, freed) = &*self.inner;
        let mut pool = lock.lock().expect("read pool lock");
        loop {
            if let Some(conn) = pool.idle.pop() {
                return Ok(conn);
            }
            if pool.open < MAX_READERS {
                pool.open += 1;
                drop(pool);
                return open_reader(&self.path).map_err(|e| {
                    lock.lock().expect("read pool lock").open -= 1;
                    freed.notify_one();
                    DbError::from(e)
                });
            }
            pool = freed.wait(pool).expect("read pool lock");
        }
    }

    /// Runs `work` on a pooled connection in the calling (blocking) thread.
    pub fn with<R>(
        &self,
        work: impl FnOnce(&Connection) -> Result<R, DbError>,
    ) -> Result<R, DbError> {
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
        F: FnOnce(&Connection) -> Result<R, DbError> + Send + 'static,
    {
        let (done, answer) = oneshot::channel();
        let job: ReadJob = Box::new(move |conn: Option<&Connection>| {
            let result = match conn {
                Some(conn) => match catch_unwind(AssertUnwindSafe(|| work(conn))) {
                    Ok(r) => r,
                    Err(_) => Err(DbError::Panicked),
                },
                None => Err(DbError::Closed),
            };
            let _ = done.send(result);
        });
        self.queue.push(job, self);
        answer.await.unwrap_or(Err(DbError::Closed))
    }
}

/// A read waiting for a reader thread; `None` when no connection could be
/// opened.
type ReadJob = Box<dyn FnOnce(Option<&Connection>) + Send>;

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

/// Both halves, as the rest of the program sees the database.
#[derive(Clone)]
pub struct Db {
    pub writer: Writer,
    pub reads: ReadPool,
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn database_files_are_private_to_the_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/o.db");
        prepare_path(&path).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }

    fn applied_versions(conn: &Connection) -> Vec<i64> {
        let mut stmt = conn
            .prepare("SELECT version FROM refinery_schema_history ORDER BY version")
            .unwrap();
        let rows = stmt.query_map([], |r| r.get(0)).unwrap();
        rows.map(Result::unwrap).collect()
    }

    #[test]
    fn an_upgrade_copies_the_database_beside_it_before_migrating_and_keeps_three_copies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.db");
        prepare_path(&path).unwrap();
        let mut conn = open_writer(&path).unwrap();
        // A database left by an older binary: only the first migration applied.
        embedded::migrations::runner()
            .set_target(refinery::Target::Version(1))
            .run(&mut conn)
            .unwrap();
        conn.execute(
            "INSERT INTO orders (id, status, total_amount, currency, created_at, updated_at)
             VALUES ('ORD-OLD', 'PAID', 100, 'INR', 1, 1)",
            [],
        )
        .unwrap();
        // Three copies from earlier upgrades, older than any made now.
        for stamp in ["20200101T000000Z", "20200102T000000Z", "20200103T000000Z"] {
            fs::write(
                dir.path()
                    .join(format!("o.db.pre-migration-{stamp}-v1.bak")),
                "old",
            )
            .unwrap();
        }

        let (applied, copy) = migrate_with_backup(&mut conn, &path).unwrap();

        assert!(applied >= 1);
        let copy = copy.expect("an upgrade writes a copy first");
        let name = copy.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("o.db.pre-migration-") && name.ends_with("-v2.bak"),
            "{name}"
        );
        let old = Connection::open(&copy).unwrap();
        assert_eq!(
            applied_versions(&old),
            vec![1],
            "the copy is the database before the upgrade"
        );
        let order: String = old
            .query_row("SELECT id FROM orders", [], |r| r.get(0))
            .unwrap();
        assert_eq!(order, "ORD-OLD");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&copy).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".bak"))
            .collect();
        left.sort();
        assert_eq!(left.len(), MIGRATION_BACKUPS_KEPT, "{left:?}");
        assert!(
            !left.iter().any(|n| n.contains("20200101")),
            "the oldest copy goes: {left:?}"
        );
        assert!(left.contains(&name));
    }

    #[test]
    fn a_new_database_and_an_up_to_date_one_are_not_copied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.db");
        prepare_path(&path).unwrap();
        let mut conn = open_writer(&path).unwrap();
        let (applied, copy) = migrate_with_backup(&mut conn, &path).unwrap();
        assert!(applied >= 1);
        assert!(copy.is_none(), "nothing to roll back to on a new database");
        let (applied, copy) = migrate_with_backup(&mut conn, &path).unwrap();
        assert_eq!((applied, copy), (0, None));
        let baks = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".bak")
            })
            .count();
        assert_eq!(baks, 0);
    }

    #[test]
    fn migrations_apply_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let mut conn = open_writer(&path).unwrap();
        assert!(migrate(&mut conn).unwrap() >= 1);
        assert_eq!(migrate(&mut conn).unwrap(), 0);
        assert!(pending_migrations(&mut conn).unwrap().is_empty());
    }
}
