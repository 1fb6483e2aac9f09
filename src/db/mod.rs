//! The database, one room per job: `open` (files, pragmas, migrations,
//! copies), `writer` (the one write connection and its group commit),
//! `readers` (read-only connections for requests and pages) and
//! `checkpointer` (WAL upkeep off the writer's path), with `error` (what a
//! failed job means to its caller) shared by all. Nothing here runs on
//! Rocket's async executor. The children name each other directly
//! (`super::error::DbError`), never through this file, which only gathers
//! their names for the rest of the program.

mod checkpointer;
pub mod damage;
mod error;
pub mod notify;
pub(crate) mod open;
pub mod pool;
mod readers;
pub mod sql;
mod writer;

pub use checkpointer::{CatchUp, Checkpointer};
pub use error::DbError;
pub use open::{
    copy_database, migrate, migrate_with_backup, open_reader, open_writer, pending_migrations,
    prepare_path, BUSY_TIMEOUT, MIGRATION_BACKUPS_KEPT,
};
pub use readers::ReadPool;
pub use sql::{Conn, Dialect};
pub use writer::{MayRunTwice, Writer};

/// Both halves, as the rest of the program sees the database.
#[derive(Clone)]
pub struct Db {
    pub writer: Writer,
    pub reads: ReadPool,
}
