//! Opening the SQLite file: its permissions, each connection's pragmas, the
//! embedded migrations (with a copy beside the file before an upgrade), and
//! consistent copies through SQLite's online backup API.

use rusqlite::{Connection, OpenFlags};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// How long a connection waits for a lock held by another connection (the
/// backup command, a second reader) before giving up with SQLITE_BUSY.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

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

/// Process-wide SQLite settings, applied once before the first connection
/// opens (SQLite refuses them afterwards). Memory statistics off: with them
/// on, every allocation and free inside SQLite takes a global mutex, and
/// `pthread_mutex_lock`/`unlock` were a quarter of the writer thread's CPU
/// on one core (`perf record` of a delivery run). Nothing reads them.
fn configure_sqlite() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: SQLITE_CONFIG_MEMSTATUS takes one int. Called before any
        // connection of this process opens; if one already has, SQLite
        // answers SQLITE_MISUSE and changes nothing.
        let rc = unsafe {
            rusqlite::ffi::sqlite3_config(
                rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS,
                0 as std::ffi::c_int,
            )
        };
        if rc != rusqlite::ffi::SQLITE_OK {
            log::debug!("database: SQLite memory statistics stay on (code {rc})");
        }
    });
}

/// Prepared statements kept per connection (see `keep_statements_prepared`).
const STATEMENT_CACHE: usize = 128;

/// Keeps a cached statement compiled across uses. Two things made SQLite
/// parse and plan our statements again on nearly every run (the parser and
/// planner were a third of the writer thread's CPU): rusqlite's cache holds
/// 16 statements while the writer alone uses about 30, and SQLite (3.54)
/// expires a statement whose plan looked at a bound value (`LIMIT ?`, an
/// `=` term the index does not cover) whenever its bindings are cleared,
/// which rusqlite does each time it puts one back in its cache. The query
/// planner stability guarantee (QPSG) plans without looking at bound
/// values; with no `ANALYZE` statistics to use, no plan changes.
fn keep_statements_prepared(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

/// WAL, FULL sync (a commit is on disk before it returns: the durability the
/// webhook's 200 promises, even across a power cut), a busy timeout, and
/// foreign keys.
pub fn open_writer(path: &Path) -> rusqlite::Result<Connection> {
    configure_sqlite();
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Checkpoints run on their own thread (`Checkpointer`): inline, every
    // thousandth page would stall a commit, and every webhook waiting on it,
    // for two fsyncs and a copy of the WAL.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    // A savepoint (a batch's jobs after one of them failed, see `writer`)
    // and a statement that writes several rows keep a statement journal of
    // the pages they touch. On disk that was a temporary file made, written
    // and closed for about every other order while every job had a savepoint
    // (strace: 43 of 95 writes per paid order). It only undoes part of a
    // transaction that has not committed, so memory loses nothing a crash
    // would not.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    keep_statements_prepared(&conn)?;
    Ok(conn)
}

pub fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    configure_sqlite();
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Small page cache: reads are point lookups, and memory is scarce on a
    // small VPS (the pool may hold several of these).
    conn.pragma_update(None, "cache_size", -512)?;
    keep_statements_prepared(&conn)?;
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
/// Oldest first, by version number: the embedded list is in file-name order,
/// where `V10` comes before `V2`.
pub fn pending_migrations(conn: &mut Connection) -> Result<Vec<String>, refinery::Error> {
    let runner = embedded::migrations::runner();
    let applied = runner.get_applied_migrations(conn)?;
    let mut pending: Vec<_> = runner
        .get_migrations()
        .iter()
        .filter(|m| !applied.iter().any(|a| a.version() == m.version()))
        .collect();
    pending.sort_by_key(|m| m.version());
    Ok(pending.iter().map(|m| m.to_string()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// A database left by an older binary: migrations up to `version`
    /// applied, in a directory of its own.
    fn left_at(version: i32) -> (tempfile::TempDir, PathBuf, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.db");
        prepare_path(&path).unwrap();
        let mut conn = open_writer(&path).unwrap();
        embedded::migrations::runner()
            .set_target(refinery::Target::Version(version))
            .run(&mut conn)
            .unwrap();
        (dir, path, conn)
    }

    #[test]
    fn an_upgrade_copies_the_database_beside_it_before_migrating_and_keeps_three_copies() {
        let (dir, path, mut conn) = left_at(1);
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

    /// V16 rebuilds the click table without its REFERENCES: the clicks a
    /// database already has are all there after it, with every column, and
    /// a click is no longer looked up in the tables it names.
    #[test]
    fn v16_keeps_every_click_and_drops_only_the_reference_checks() {
        let (_dir, _path, mut conn) = left_at(15);
        conn.execute_batch(
            "INSERT INTO orders (id, status, total_amount, currency, created_at, updated_at)
             VALUES ('ORD-1', 'PAID', 100, 'INR', 0, 0);
             INSERT INTO whatsapp_tokens (id, order_id, token, expires_at, created_at)
             VALUES ('t1', 'ORD-1', 'tok', 1, 0);
             INSERT INTO invite_clicks (id, token_id, order_id, clicked_at, user_agent, is_preview)
             VALUES ('c1', 't1', 'ORD-1', 5, 'Mozilla/5.0', FALSE),
                    ('c2', 't1', 'ORD-1', 6, NULL, TRUE);",
        )
        .unwrap();
        let unknown = "INSERT INTO invite_clicks (id, token_id, order_id, clicked_at, is_preview)
                       VALUES ('c3', 'no-token', 'NO-ORDER', 7, FALSE)";
        assert!(conn.execute(unknown, []).is_err(), "V15 checks references");

        let report = embedded::migrations::runner()
            .set_target(refinery::Target::Version(16))
            .run(&mut conn)
            .unwrap();
        assert_eq!(report.applied_migrations().len(), 1);

        let clicks: Vec<(String, String, String, i64, Option<String>, bool)> = conn
            .prepare("SELECT * FROM invite_clicks ORDER BY id")
            .unwrap()
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            clicks,
            [
                (
                    "c1".into(),
                    "t1".into(),
                    "ORD-1".into(),
                    5,
                    Some("Mozilla/5.0".into()),
                    false
                ),
                ("c2".into(), "t1".into(), "ORD-1".into(), 6, None, true),
            ]
        );
        conn.execute(unknown, []).unwrap();
        let indexes: Vec<String> = conn
            .prepare(
                "SELECT name FROM sqlite_master
                 WHERE type = 'index' AND tbl_name = 'invite_clicks' AND sql IS NOT NULL
                 ORDER BY name",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(indexes, ["invite_clicks_order", "invite_clicks_time"]);
    }

    /// V17 spreads each count over slots: what V16 counted is kept, in
    /// slot 0, and a category may have a row per slot, which sum.
    #[test]
    fn v17_keeps_each_count_in_slot_0_and_a_category_sums_its_slots() {
        let (_dir, _path, mut conn) = left_at(16);
        conn.execute_batch(
            "INSERT INTO billable_counts (category, messages) VALUES ('utility', 3), ('', 1);
             INSERT INTO paid_counts (category, messages) VALUES ('utility', 2);",
        )
        .unwrap();

        assert_eq!(migrate(&mut conn).unwrap(), 1);

        let rows = |conn: &Connection, table: &str| -> Vec<(String, i64, i64)> {
            conn.prepare(&format!(
                "SELECT category, slot, messages FROM {table} ORDER BY 1, 2"
            ))
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
        };
        assert_eq!(
            rows(&conn, "billable_counts"),
            [("".into(), 0, 1), ("utility".into(), 0, 3)]
        );
        assert_eq!(rows(&conn, "paid_counts"), [("utility".into(), 0, 2)]);
        conn.execute_batch(
            "INSERT INTO billable_counts (category, slot, messages) VALUES ('utility', 7, -1)",
        )
        .unwrap();
        let again =
            "INSERT INTO billable_counts (category, slot, messages) VALUES ('utility', 7, 1)";
        assert!(
            conn.execute(again, []).is_err(),
            "one row per category and slot"
        );
        let utility: i64 = conn
            .query_row(
                "SELECT SUM(messages) FROM billable_counts WHERE category = 'utility'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(utility, 2);
    }
}
