//! What went wrong with a database job, and what the caller should make of
//! it: run it again (a PostgreSQL collision), answer 503 (the database away
//! or busy) or 500 (a bug or bad data).

/// Runs of one job before its error is the answer.
pub(crate) const MAX_RUNS: u32 = 12;

#[derive(Debug)]
pub enum DbError {
    Sql(rusqlite::Error),
    /// A PostgreSQL statement failed (SPEC §13).
    Pg(postgres::Error),
    /// A value did not fit where it was bound or read (see `sql`).
    Value(String),
    /// The batch's COMMIT failed: nothing of this request is on disk.
    Commit(String),
    Panicked,
    /// The writer has stopped (shutdown).
    Closed,
    /// No connection could be had (PostgreSQL unreachable, restarting, or
    /// every connection busy past the wait): nothing ran.
    Unavailable(String),
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbError::Sql(e) => write!(f, "database error: {e}"),
            DbError::Pg(e) => match std::error::Error::source(e) {
                // The client's own text ("db error") says little; the
                // server's reason follows it.
                Some(why) => write!(f, "database error: {e}: {why}"),
                None => write!(f, "database error: {e}"),
            },
            DbError::Value(why) => write!(f, "database value: {why}"),
            DbError::Commit(e) => write!(f, "commit failed: {e}"),
            DbError::Panicked => f.write_str("database job panicked"),
            DbError::Closed => f.write_str("database writer is closed"),
            DbError::Unavailable(why) => write!(f, "database unavailable: {why}"),
        }
    }
}

impl std::error::Error for DbError {}

impl DbError {
    /// PostgreSQL refused the job because a concurrent one got there first:
    /// a serialization failure, a deadlock, or a unique key another
    /// instance just inserted. Run again, the job sees that work committed
    /// and gives the answer SQLite's one-at-a-time writer would have.
    pub fn is_retryable(&self) -> bool {
        self.runs_allowed() > 1
    }

    /// How many runs in all a job that failed with this error may have.
    /// A collision clears when the other transaction ends, so it is worth
    /// a few; a unique key already taken is there for good after one more
    /// run has seen the committed row (and answered from it), so a second
    /// failure is the job's own bug, not a race.
    pub fn runs_allowed(&self) -> u32 {
        use postgres::error::SqlState;
        match self {
            DbError::Pg(e) => match e.code() {
                Some(c)
                    if *c == SqlState::T_R_SERIALIZATION_FAILURE
                        || *c == SqlState::T_R_DEADLOCK_DETECTED =>
                {
                    MAX_RUNS
                }
                Some(c) if *c == SqlState::UNIQUE_VIOLATION => 2,
                _ => 1,
            },
            _ => 1,
        }
    }

    /// The database is away or too busy to answer now, and the same
    /// request later may well succeed (a 503, SPEC §13): a connection
    /// refused or lost, the server shutting down or out of resources, a
    /// lock or statement timeout, SQLite's file busy, full or read-only.
    /// Everything else (a constraint refused, a value that does not
    /// convert, a statement PostgreSQL does not understand, a panic) is a
    /// bug or bad data that the same request repeats: a 500.
    pub fn is_unavailable(&self) -> bool {
        use rusqlite::ErrorCode;
        match self {
            DbError::Closed | DbError::Unavailable(_) | DbError::Commit(_) => true,
            DbError::Value(_) | DbError::Panicked => false,
            DbError::Sql(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                ErrorCode::DatabaseBusy
                    | ErrorCode::DatabaseLocked
                    | ErrorCode::DiskFull
                    | ErrorCode::ReadOnly
                    | ErrorCode::SystemIoFailure
                    | ErrorCode::CannotOpen
                    | ErrorCode::OutOfMemory
            ),
            DbError::Sql(_) => false,
            DbError::Pg(e) => pg_unavailable(e),
        }
    }
}

fn pg_unavailable(e: &postgres::Error) -> bool {
    use postgres::error::SqlState;
    match e.code() {
        Some(c) => {
            let class = &c.code()[..2];
            // 08: connection exception; 53: insufficient resources;
            // 57: operator intervention (admin/crash shutdown, cannot
            // connect now, statement timeout); 40: a collision that
            // outlived its runs; 55P03: lock timeout.
            matches!(class, "08" | "53" | "57" | "40") || *c == SqlState::LOCK_NOT_AVAILABLE
        }
        None => {
            // No server code: the client's own failure. A closed or
            // broken connection (an io error under it) is the database
            // away; a value that did not convert to or from SQL is a bug.
            if e.is_closed() {
                return true;
            }
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                if s.is::<std::io::Error>() {
                    return true;
                }
                source = s.source();
            }
            let text = e.to_string();
            !(text.contains("serializing") || text.contains("deserializing"))
        }
    }
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        super::damage::note(&e);
        DbError::Sql(e)
    }
}
