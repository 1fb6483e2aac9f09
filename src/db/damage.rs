//! Whether the SQLite file has reported itself damaged (SPEC §10): SQLite's
//! "malformed" (corrupt, not a database) or an I/O error on any read or
//! write. Such a database may still take the health probe's one-row write
//! while every payment fails, so `/healthz` must hear of it from wherever
//! it happened. Errors are converted to `DbError` in one place, which
//! notes them here; the note is process-wide because the database file is.
//! It is cleared only by an integrity check that passes.

use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Damage {
    reason: String,
    checked: Option<Instant>,
}

static DAMAGE: Mutex<Option<Damage>> = Mutex::new(None);

/// How often `/healthz` runs the integrity check again while damaged: it
/// reads the whole file, so not at every probe.
pub const RECHECK_EVERY: Duration = Duration::from_secs(60);

/// Whether this error is SQLite saying the file itself is bad.
pub fn is_damage(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase, SystemIoFailure};
    matches!(
        e.sqlite_error_code(),
        Some(DatabaseCorrupt | NotADatabase | SystemIoFailure)
    )
}

/// Notes `e` when it reports damage; the first reason is kept.
pub fn note(e: &rusqlite::Error) {
    if !is_damage(e) {
        return;
    }
    let Ok(mut damage) = DAMAGE.lock() else {
        return;
    };
    if damage.is_none() {
        log::error!("DATABASE DAMAGED: {e}; /healthz answers 503 until `orderlink check` passes (restore the latest backup)");
        *damage = Some(Damage {
            reason: e.to_string(),
            checked: None,
        });
    }
}

/// The reason, while the database is known damaged.
pub fn reason() -> Option<String> {
    DAMAGE.lock().ok()?.as_ref().map(|d| d.reason.clone())
}

/// Whether an integrity check is due (damaged, and none ran lately); marks
/// it as running.
pub fn recheck_due() -> bool {
    let Ok(mut damage) = DAMAGE.lock() else {
        return false;
    };
    match damage.as_mut() {
        Some(d) if d.checked.is_none_or(|t| t.elapsed() >= RECHECK_EVERY) => {
            d.checked = Some(Instant::now());
            true
        }
        _ => false,
    }
}

/// An integrity check passed: the database is sound again.
pub fn clear() {
    if let Ok(mut damage) = DAMAGE.lock() {
        if damage.take().is_some() {
            log::warn!("database: the integrity check passes again");
        }
    }
}

/// `PRAGMA quick_check`'s verdict: `Ok` when sound, else what it found.
pub fn quick_check(conn: &rusqlite::Connection) -> Result<(), String> {
    let mut stmt = conn
        .prepare("PRAGMA quick_check")
        .map_err(|e| e.to_string())?;
    let lines: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| e.to_string())?;
    match lines.as_slice() {
        [ok] if ok == "ok" => Ok(()),
        [] => Err("the integrity check returned nothing".into()),
        found => Err(found.join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_corruption_and_io_errors_count_as_damage() {
        let corrupt = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            Some("database disk image is malformed".into()),
        );
        let io = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR_READ),
            None,
        );
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        assert!(is_damage(&corrupt));
        assert!(is_damage(&io));
        assert!(!is_damage(&busy));
        assert!(!is_damage(&rusqlite::Error::QueryReturnedNoRows));
    }
}
