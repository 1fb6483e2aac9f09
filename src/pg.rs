//! PostgreSQL (SPEC §13) outside the server's data path: connecting, the
//! same embedded migrations building the PostgreSQL schema, and `orderlink
//! copy-to postgres://…` moving a stopped SQLite database into an empty
//! PostgreSQL one. The server's statements go through `db::sql`.

use crate::db::open;
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{ToSql, Type};
use postgres::Client;
use rusqlite::types::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::Path;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Tables the migrations fill themselves (V1's heartbeat row): their rows in a
/// freshly migrated database are replaced by the SQLite ones, and they do not
/// make a database count as "already in use".
const SEEDED_BY_MIGRATIONS: &[&str] = &["heartbeat"];

/// Not data: each side keeps its own record of the migrations applied to it.
const SCHEMA_HISTORY: &str = "refinery_schema_history";

/// Connects with TLS as the URL's `sslmode`/`sslrootcert` ask (see
/// `pg_tls`). A refused certificate is named as such, with the roots it
/// was checked against, since "db error" alone sends a merchant looking
/// at passwords and firewalls.
pub fn connect(url: &str) -> Result<Client, String> {
    check_scheme(url)?;
    let target = crate::pg_tls::parse(url)?;
    let (config, tls) = crate::pg_tls::config(&target)?;
    config.connect(tls).map_err(|e| {
        let why = describe(&e);
        let roots = match &target.roots {
            crate::pg_tls::Roots::System => "the system's root certificates".to_owned(),
            crate::pg_tls::Roots::File(path) => format!("sslrootcert {path}"),
        };
        if why.contains("invalid peer certificate") {
            format!(
                "cannot connect to {}: certificate verify failed (checked against {roots}, sslmode={}): {why}",
                redact(url),
                target.mode.as_str()
            )
        } else {
            format!("cannot connect to {}: {why}", redact(url))
        }
    })
}

/// The client's own message ("db error") with the server's reason after it.
fn describe(e: &postgres::Error) -> String {
    match std::error::Error::source(e) {
        Some(why) => format!("{e}: {why}"),
        None => e.to_string(),
    }
}

fn check_scheme(url: &str) -> Result<(), String> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(())
    } else {
        Err("the PostgreSQL URL must start with postgres:// or postgresql://".into())
    }
}

/// The password in a URL, if it has one (to keep it out of the log).
pub fn password(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let (userinfo, _) = rest.rsplit_once('@')?;
    let (_, password) = userinfo.split_once(':')?;
    (!password.is_empty()).then(|| password.to_owned())
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(unreadable URL)".into();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}@{host}")
        }
        None => url.to_owned(),
    }
}

/// Applies the embedded migrations (the SQLite ones); returns how many were
/// applied now.
pub fn migrate(client: &mut Client) -> Result<usize, String> {
    // refinery creates its history table with IF NOT EXISTS, and on every
    // start after the first PostgreSQL answers with a NOTICE the log would
    // show; warnings and errors still come through.
    client
        .batch_execute("SET client_min_messages = warning")
        .map_err(|e| format!("migrating PostgreSQL: {}", describe(&e)))?;
    let report = embedded::migrations::runner()
        .run(client)
        .map_err(|e| format!("migrating PostgreSQL: {e}"))?;
    Ok(report.applied_migrations().len())
}

/// Names of embedded migrations the PostgreSQL database lacks.
pub fn pending_migrations(client: &mut Client) -> Result<Vec<String>, String> {
    let runner = embedded::migrations::runner();
    // refinery's lookup fails on a database it never touched.
    let has_history: bool = client
        .query_one(
            "SELECT to_regclass('refinery_schema_history') IS NOT NULL",
            &[],
        )
        .map_err(|e| format!("reading the schema: {}", describe(&e)))?
        .get(0);
    let applied = if has_history {
        runner
            .get_applied_migrations(client)
            .map_err(|e| format!("reading the applied migrations: {e}"))?
    } else {
        Vec::new()
    };
    Ok(runner
        .get_migrations()
        .iter()
        .filter(|m| !applied.iter().any(|a| a.version() == m.version()))
        .map(|m| m.to_string())
        .collect())
}

/// Holds `DATABASE_PATH.lock` as the server does, so no server starts on the
/// file while it is copied, and none is running now.
fn lock_stopped(path: &Path) -> Result<File, String> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| format!("cannot open lock file {}: {e}", lock_path.to_string_lossy()))?;
    file.try_lock().map_err(|_| {
        format!(
            "an orderlink server is running on {} (lock file {} is held); stop it first",
            path.display(),
            lock_path.to_string_lossy()
        )
    })?;
    Ok(file)
}

/// Copies every table of the SQLite database at `source` into the empty
/// PostgreSQL database at `url`, in one PostgreSQL transaction: all of it or
/// nothing. Returns each table's row count, in the order copied.
pub fn copy_to(source: &Path, url: &str) -> Result<Vec<(String, u64)>, String> {
    check_scheme(url)?;
    if !source.is_file() {
        return Err(format!("DATABASE_PATH {} does not exist", source.display()));
    }
    let _lock = lock_stopped(source)?;
    let mut lite = open::open_writer(source).map_err(|e| format!("{}: {e}", source.display()))?;
    let pending = open::pending_migrations(&mut lite).map_err(|e| format!("migrations: {e}"))?;
    if !pending.is_empty() {
        return Err(format!(
            "{} has {} migration(s) pending ({}); run `orderlink migrate` first, so both sides have the same schema",
            source.display(),
            pending.len(),
            pending.join(", ")
        ));
    }
    let mut client = connect(url)?;
    migrate(&mut client)?;

    // One snapshot of the SQLite side (nothing else writes it: the lock is ours).
    let lite = lite
        .transaction()
        .map_err(|e| format!("reading {}: {e}", source.display()))?;
    let tables = copy_order(&lite)?;
    let mut tx = client
        .transaction()
        .map_err(|e| format!("PostgreSQL: {}", describe(&e)))?;
    let pg_tables: BTreeSet<String> = tx
        .query(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
            &[],
        )
        .map_err(|e| format!("PostgreSQL: {}", describe(&e)))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for table in &tables {
        if !pg_tables.contains(table) {
            return Err(format!("PostgreSQL has no table {table}"));
        }
        if SEEDED_BY_MIGRATIONS.contains(&table.as_str()) {
            continue;
        }
        let held: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {}", quote(table)), &[])
            .map_err(|e| format!("PostgreSQL: {}", describe(&e)))?
            .get(0);
        if held > 0 {
            return Err(format!(
                "the PostgreSQL database is not empty ({table} holds {held} row(s)); copy-to only fills an empty database"
            ));
        }
    }

    let mut counts = Vec::with_capacity(tables.len());
    for table in &tables {
        if SEEDED_BY_MIGRATIONS.contains(&table.as_str()) {
            tx.execute(&format!("DELETE FROM {}", quote(table)), &[])
                .map_err(|e| format!("PostgreSQL: {}", describe(&e)))?;
        }
        let copied = copy_table(&lite, &mut tx, table)?;
        let landed: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {}", quote(table)), &[])
            .map_err(|e| format!("PostgreSQL: {}", describe(&e)))?
            .get(0);
        if landed as u64 != copied {
            return Err(format!(
                "{table}: {copied} row(s) read from SQLite but {landed} in PostgreSQL"
            ));
        }
        counts.push((table.clone(), copied));
    }
    tx.commit().map_err(|e| {
        format!(
            "PostgreSQL commit failed, nothing was copied: {}",
            describe(&e)
        )
    })?;
    // Statistics now, not at autovacuum's next pass: a prepared statement's
    // plan made on tables PostgreSQL still believes empty can take the
    // wrong index and keep it until then (docs/postgresql.md, "The SQL each store gets").
    // The rows are committed whatever this answers.
    if let Err(e) = client.batch_execute("ANALYZE") {
        eprintln!(
            "orderlink: copy-to: ANALYZE failed ({}); autovacuum will gather the statistics",
            describe(&e)
        );
    }
    Ok(counts)
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// SQLite's tables, each after the tables its foreign keys point at, so every
/// row's references exist when it arrives (PostgreSQL checks them at once).
fn copy_order(lite: &rusqlite::Connection) -> Result<Vec<String>, String> {
    let sql_err = |e: rusqlite::Error| format!("reading the SQLite schema: {e}");
    let names: Vec<String> = lite
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table'
             AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name <> $1 ORDER BY name",
        )
        .map_err(sql_err)?
        .query_map([SCHEMA_HISTORY], |r| r.get(0))
        .map_err(sql_err)?
        .collect::<Result<_, _>>()
        .map_err(sql_err)?;
    let mut parents: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for name in &names {
        let refs: BTreeSet<String> = lite
            .prepare(&format!("PRAGMA foreign_key_list({})", quote(name)))
            .map_err(sql_err)?
            .query_map([], |r| r.get::<_, String>("table"))
            .map_err(sql_err)?
            .collect::<Result<_, _>>()
            .map_err(sql_err)?;
        parents.insert(
            name.clone(),
            refs.into_iter().filter(|p| p != name).collect(),
        );
    }
    let mut ordered: Vec<String> = Vec::with_capacity(names.len());
    while ordered.len() < names.len() {
        let ready: Vec<String> = names
            .iter()
            .filter(|n| !ordered.contains(n))
            .filter(|n| parents[*n].iter().all(|p| ordered.contains(p)))
            .cloned()
            .collect();
        if ready.is_empty() {
            return Err("the SQLite tables' foreign keys form a cycle".into());
        }
        ordered.extend(ready);
    }
    Ok(ordered)
}

/// One table, by its column names (both sides were built by the same
/// migrations), through PostgreSQL's binary COPY. Each SQLite value is
/// converted to the PostgreSQL column's type; a value that does not fit is an
/// error naming the table and column, never a silent change.
fn copy_table(
    lite: &rusqlite::Connection,
    tx: &mut postgres::Transaction<'_>,
    table: &str,
) -> Result<u64, String> {
    let sql_err = |e: rusqlite::Error| format!("reading {table} from SQLite: {e}");
    let pg_err = |e: postgres::Error| format!("writing {table} to PostgreSQL: {}", describe(&e));
    let columns: Vec<String> = lite
        .prepare(&format!("PRAGMA table_info({})", quote(table)))
        .map_err(sql_err)?
        .query_map([], |r| r.get::<_, String>("name"))
        .map_err(sql_err)?
        .collect::<Result<_, _>>()
        .map_err(sql_err)?;
    let list = columns
        .iter()
        .map(|c| quote(c))
        .collect::<Vec<_>>()
        .join(", ");
    // The PostgreSQL types, by asking PostgreSQL to describe the same select
    // (a column SQLite has and PostgreSQL lacks fails here, by name).
    let types: Vec<Type> = tx
        .prepare(&format!("SELECT {list} FROM {}", quote(table)))
        .map_err(pg_err)?
        .columns()
        .iter()
        .map(|c| c.type_().clone())
        .collect();
    let sink = tx
        .copy_in(&format!("COPY {} ({list}) FROM STDIN BINARY", quote(table)))
        .map_err(pg_err)?;
    let mut writer = BinaryCopyInWriter::new(sink, &types);
    let mut select = lite
        .prepare(&format!("SELECT {list} FROM {}", quote(table)))
        .map_err(sql_err)?;
    let mut rows = select.query([]).map_err(sql_err)?;
    let mut copied = 0u64;
    while let Some(row) = rows.next().map_err(sql_err)? {
        let mut cells: Vec<Box<dyn ToSql + Sync>> = Vec::with_capacity(columns.len());
        for (i, ty) in types.iter().enumerate() {
            let value: Value = row.get(i).map_err(sql_err)?;
            cells.push(convert(value, ty).map_err(|why| format!("{table}.{}: {why}", columns[i]))?);
        }
        let refs: Vec<&(dyn ToSql + Sync)> = cells.iter().map(|c| c.as_ref()).collect();
        writer.write(&refs).map_err(pg_err)?;
        copied += 1;
    }
    writer.finish().map_err(pg_err)?;
    Ok(copied)
}

/// A SQLite value as the PostgreSQL column's type. SQLite stores BOOLEAN as
/// 0/1 and every integer as 64 bits; PostgreSQL wants `bool` and checks
/// narrower integers' range.
fn convert(value: Value, ty: &Type) -> Result<Box<dyn ToSql + Sync>, String> {
    let mismatch = |v: &Value| format!("cannot store SQLite {} as PostgreSQL {ty}", kind(v));
    Ok(match *ty {
        Type::BOOL => Box::new(match value {
            Value::Null => None,
            Value::Integer(0) => Some(false),
            Value::Integer(1) => Some(true),
            other => return Err(mismatch(&other)),
        }),
        Type::INT8 => Box::new(match value {
            Value::Null => None,
            Value::Integer(i) => Some(i),
            other => return Err(mismatch(&other)),
        }),
        Type::INT4 => Box::new(match value {
            Value::Null => None,
            Value::Integer(i) => {
                Some(i32::try_from(i).map_err(|_| format!("{i} is out of range for {ty}"))?)
            }
            other => return Err(mismatch(&other)),
        }),
        Type::INT2 => Box::new(match value {
            Value::Null => None,
            Value::Integer(i) => {
                Some(i16::try_from(i).map_err(|_| format!("{i} is out of range for {ty}"))?)
            }
            other => return Err(mismatch(&other)),
        }),
        Type::FLOAT8 => Box::new(match value {
            Value::Null => None,
            Value::Real(f) => Some(f),
            Value::Integer(i) => Some(i as f64),
            other => return Err(mismatch(&other)),
        }),
        Type::VARCHAR | Type::TEXT | Type::BPCHAR => Box::new(match value {
            Value::Null => None,
            Value::Text(s) => Some(s),
            other => return Err(mismatch(&other)),
        }),
        Type::BYTEA => Box::new(match value {
            Value::Null => None,
            Value::Blob(b) => Some(b),
            other => return Err(mismatch(&other)),
        }),
        _ => return Err(format!("PostgreSQL type {ty} is not supported by copy-to")),
    })
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "NULL",
        Value::Integer(_) => "integer",
        Value::Real(_) => "real",
        Value::Text(_) => "text",
        Value::Blob(_) => "blob",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_drops_the_password_only() {
        assert_eq!(
            redact("postgres://shop:s3cret@db.internal:5432/orderlink"),
            "postgres://shop@db.internal:5432/orderlink"
        );
        assert_eq!(redact("postgres://shop@h/d"), "postgres://shop@h/d");
        assert_eq!(redact("postgres://h/d"), "postgres://h/d");
        assert_eq!(
            password("postgres://shop:s3cret@db.internal:5432/orderlink").as_deref(),
            Some("s3cret")
        );
        assert_eq!(password("postgres://shop@h/d"), None);
    }

    #[test]
    fn values_convert_to_the_column_type_or_say_why_not() {
        assert!(convert(Value::Integer(1), &Type::BOOL).is_ok());
        assert!(convert(Value::Integer(2), &Type::BOOL).is_err());
        assert!(convert(Value::Integer(i64::MAX), &Type::INT8).is_ok());
        let wide = convert(Value::Integer(1 << 40), &Type::INT4).err().unwrap();
        assert!(wide.contains("out of range"), "{wide}");
        assert!(convert(Value::Text("x".into()), &Type::INT8).is_err());
        assert!(convert(Value::Integer(5), &Type::VARCHAR).is_err());
        assert!(convert(Value::Null, &Type::VARCHAR).is_ok());
    }
}
