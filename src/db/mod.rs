//! The database, one room per job: `open` (files, pragmas, migrations,
//! copies), `writer` (the one write connection and its group commit),
//! `readers` (read-only connections for requests and pages) and
//! `checkpointer` (WAL upkeep off the writer's path). Nothing here runs on
//! Rocket's async executor.

mod checkpointer;
pub mod damage;
mod open;
pub mod pool;
mod readers;
pub mod sql;
mod writer;

pub use checkpointer::Checkpointer;
pub use open::{
    copy_database, migrate, migrate_with_backup, open_reader, open_writer, pending_migrations,
    prepare_path, BUSY_TIMEOUT, MIGRATION_BACKUPS_KEPT,
};
pub use readers::ReadPool;
pub use sql::{Conn, Dialect};
pub use writer::Writer;

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
        use postgres::error::SqlState;
        match self {
            DbError::Pg(e) => e.code().is_some_and(|c| {
                *c == SqlState::T_R_SERIALIZATION_FAILURE
                    || *c == SqlState::T_R_DEADLOCK_DETECTED
                    || *c == SqlState::UNIQUE_VIOLATION
            }),
            _ => false,
        }
    }
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        damage::note(&e);
        DbError::Sql(e)
    }
}

/// Both halves, as the rest of the program sees the database.
#[derive(Clone)]
pub struct Db {
    pub writer: Writer,
    pub reads: ReadPool,
}
