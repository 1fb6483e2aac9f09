//! One SQL surface over both stores (SPEC §13). The data functions are
//! written once against `Conn`, which mimics the rusqlite calls they made
//! before (`prepare_cached`, `execute`, `query_row`, `query_map`,
//! `optional()`), and run on SQLite or on PostgreSQL. The SQL text is the
//! same for both wherever the dialects agree, and goes to each store as
//! written: placeholders are `$N`, which PostgreSQL numbers and SQLite
//! takes as a parameter named `$N` (bound here by that name, so `$2` may
//! come before `$1`). Where the dialects differ, the caller writes each
//! store's statement (`Conn::dialect`). What this layer does is convert
//! values to and from the column types PostgreSQL checks strictly (an i64
//! bound to an INTEGER column, BOOLEAN kept as 0/1 by SQLite, SUM of a
//! BIGINT being NUMERIC, COUNT being INT8).

use super::error::DbError;
use postgres::types::{FromSql, IsNull, ToSql, Type};
use std::cell::RefCell;
use std::collections::HashMap;

/// Which store a connection talks to, for the few statements the dialects
/// cannot share (each such place says why).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// The number PostgreSQL's advisory locks know `key` by.
fn advisory_id(key: &str) -> i64 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key.as_bytes());
    i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// A connection to either store. Owned by whoever holds it (the writer
/// thread, a reader, a PostgreSQL worker, a test); data functions borrow it.
pub enum Conn {
    Lite(rusqlite::Connection),
    Pg(Box<RefCell<PgSession>>),
}

/// A PostgreSQL client and the statements already prepared on it, by their
/// SQL text.
pub struct PgSession {
    client: postgres::Client,
    cache: HashMap<String, Prepared>,
    /// The advisory locks the open transaction (`Conn::begin`) already
    /// holds: asking again would cost a round trip for nothing.
    held: Vec<i64>,
    in_transaction: bool,
}

#[derive(Clone)]
struct Prepared {
    stmt: postgres::Statement,
}

impl PgSession {
    pub fn new(client: postgres::Client) -> PgSession {
        PgSession {
            client,
            cache: HashMap::new(),
            held: Vec::new(),
            in_transaction: false,
        }
    }

    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    fn prepare(&mut self, sql: &str, cache: bool) -> Result<Prepared, DbError> {
        if let Some(p) = self.cache.get(sql) {
            return Ok(p.clone());
        }
        let stmt = self.client.prepare(sql).map_err(DbError::Pg)?;
        let prepared = Prepared { stmt };
        if cache {
            self.cache.insert(sql.to_owned(), prepared.clone());
        }
        Ok(prepared)
    }
}

impl From<rusqlite::Connection> for Conn {
    fn from(c: rusqlite::Connection) -> Conn {
        Conn::Lite(c)
    }
}

impl From<postgres::Client> for Conn {
    fn from(c: postgres::Client) -> Conn {
        Conn::Pg(Box::new(RefCell::new(PgSession::new(c))))
    }
}

impl Conn {
    pub fn dialect(&self) -> Dialect {
        match self {
            Conn::Lite(_) => Dialect::Sqlite,
            Conn::Pg(_) => Dialect::Postgres,
        }
    }

    /// The SQLite connection, for what only SQLite has (pragmas, backups).
    pub fn lite(&self) -> Option<&rusqlite::Connection> {
        match self {
            Conn::Lite(c) => Some(c),
            Conn::Pg(_) => None,
        }
    }

    pub fn into_lite(self) -> Option<rusqlite::Connection> {
        match self {
            Conn::Lite(c) => Some(c),
            Conn::Pg(_) => None,
        }
    }

    /// A dead PostgreSQL connection (server restarted, network gone) is
    /// replaced rather than reused; SQLite's never dies.
    pub fn is_broken(&self) -> bool {
        match self {
            Conn::Lite(_) => false,
            Conn::Pg(s) => s.borrow().is_closed(),
        }
    }

    /// Asks PostgreSQL for a no-op, waiting at most `timeout` (a network
    /// cut gives no error, only silence); SQLite's connection is in-process.
    pub fn ping(&self, timeout: std::time::Duration) -> Result<(), DbError> {
        match self {
            Conn::Lite(_) => Ok(()),
            Conn::Pg(s) => s.borrow_mut().client.is_valid(timeout).map_err(DbError::Pg),
        }
    }

    /// Makes jobs that name the same `key` run one after the other until
    /// this job's transaction ends. SQLite's one writer already runs every
    /// job alone; on PostgreSQL this is a transaction-level advisory lock,
    /// for a look-up-then-write that no unique key guards (see callers). A
    /// lock the transaction took as it began (`begin`) is not asked for
    /// again.
    pub fn lock_key(&self, key: &str) -> Result<(), DbError> {
        let Conn::Pg(s) = self else {
            return Ok(());
        };
        let id = advisory_id(key);
        if s.borrow().held.contains(&id) {
            return Ok(());
        }
        self.prepare_cached("SELECT pg_advisory_xact_lock($1)")?
            .query_row([id], |_| Ok(()))?;
        let mut session = s.borrow_mut();
        // Outside a transaction begun here the lock ended with its
        // statement (or with a transaction this session does not see end).
        if session.in_transaction {
            session.held.push(id);
        }
        Ok(())
    }

    /// PostgreSQL: starts a transaction with `begin` (BEGIN, perhaps with
    /// SET LOCAL) and, in the same round trip, takes the locks of `keys`
    /// in order (`lock_key`). A job whose first statements would be those
    /// locks saves their round trips.
    pub(crate) fn begin(&self, begin: &str, keys: &[String]) -> Result<(), DbError> {
        let Conn::Pg(s) = self else {
            return self.execute_batch(begin);
        };
        let ids: Vec<i64> = keys.iter().map(|k| advisory_id(k)).collect();
        let mut sql = begin.to_owned();
        for id in &ids {
            // An integer we made: nothing to quote. One statement each, so
            // they are taken in this order.
            sql.push_str(&format!("; SELECT pg_advisory_xact_lock({id})"));
        }
        let mut session = s.borrow_mut();
        session.held.clear();
        session.in_transaction = false;
        session.client.batch_execute(&sql).map_err(DbError::Pg)?;
        session.in_transaction = true;
        session.held.extend(ids);
        Ok(())
    }

    /// Ends what `begin` started (`COMMIT` or `ROLLBACK`); its locks are
    /// gone with it, whether the statement succeeded or not.
    pub(crate) fn end(&self, sql: &str) -> Result<(), DbError> {
        let Conn::Pg(s) = self else {
            return self.execute_batch(sql);
        };
        let mut session = s.borrow_mut();
        session.held.clear();
        session.in_transaction = false;
        session.client.batch_execute(sql).map_err(DbError::Pg)
    }

    /// A statement kept for reuse on this connection (hot paths).
    pub fn prepare_cached(&self, sql: &str) -> Result<Stmt<'_>, DbError> {
        Ok(Stmt(match self {
            Conn::Lite(c) => LiteStmt::Cached(c.prepare_cached(sql)?).into(),
            Conn::Pg(s) => StmtInner::Pg {
                session: s,
                prepared: s.borrow_mut().prepare(sql, true)?,
            },
        }))
    }

    /// A statement used once (text built at run time).
    pub fn prepare(&self, sql: &str) -> Result<Stmt<'_>, DbError> {
        Ok(Stmt(match self {
            Conn::Lite(c) => LiteStmt::Plain(c.prepare(sql)?).into(),
            Conn::Pg(s) => StmtInner::Pg {
                session: s,
                prepared: s.borrow_mut().prepare(sql, false)?,
            },
        }))
    }

    pub fn execute<P: Params>(&self, sql: &str, params: P) -> Result<usize, DbError> {
        self.prepare(sql)?.execute(params)
    }

    pub fn query_row<T, P, F>(&self, sql: &str, params: P, f: F) -> Result<T, DbError>
    where
        P: Params,
        F: FnOnce(&Row<'_>) -> Result<T, DbError>,
    {
        self.prepare(sql)?.query_row(params, f)
    }

    /// Statements without parameters, `;`-separated (transaction control,
    /// test fixtures).
    pub fn execute_batch(&self, sql: &str) -> Result<(), DbError> {
        match self {
            Conn::Lite(c) => Ok(c.execute_batch(sql)?),
            Conn::Pg(s) => s
                .borrow_mut()
                .client
                .batch_execute(sql)
                .map_err(DbError::Pg),
        }
    }
}

enum LiteStmt<'c> {
    Cached(rusqlite::CachedStatement<'c>),
    Plain(rusqlite::Statement<'c>),
}

impl<'c> LiteStmt<'c> {
    fn get(&mut self) -> &mut rusqlite::Statement<'c> {
        match self {
            LiteStmt::Cached(s) => s,
            LiteStmt::Plain(s) => s,
        }
    }
}

enum StmtInner<'c> {
    Lite(LiteStmt<'c>),
    Pg {
        session: &'c RefCell<PgSession>,
        prepared: Prepared,
    },
}

impl<'c> From<LiteStmt<'c>> for StmtInner<'c> {
    fn from(s: LiteStmt<'c>) -> Self {
        StmtInner::Lite(s)
    }
}

/// A prepared statement on either store.
pub struct Stmt<'c>(StmtInner<'c>);

impl Stmt<'_> {
    pub fn execute<P: Params>(&mut self, params: P) -> Result<usize, DbError> {
        let binds = params.binds();
        match &mut self.0 {
            StmtInner::Lite(s) => {
                let s = s.get();
                bind_lite(s, &binds)?;
                Ok(s.raw_execute()?)
            }
            StmtInner::Pg { session, prepared } => {
                let values = pg_values(prepared, &binds)?;
                let args: Vec<&(dyn ToSql + Sync)> =
                    values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
                let n = session
                    .borrow_mut()
                    .client
                    .execute(&prepared.stmt, &args)
                    .map_err(DbError::Pg)?;
                Ok(n as usize)
            }
        }
    }

    /// The first row through `f`; no row is `QueryReturnedNoRows`, which
    /// `optional()` turns into `None`, as with rusqlite.
    pub fn query_row<T, P, F>(&mut self, params: P, f: F) -> Result<T, DbError>
    where
        P: Params,
        F: FnOnce(&Row<'_>) -> Result<T, DbError>,
    {
        let binds = params.binds();
        match &mut self.0 {
            StmtInner::Lite(s) => {
                let s = s.get();
                bind_lite(s, &binds)?;
                let mut rows = s.raw_query();
                match rows.next()? {
                    Some(r) => f(&Row(r)),
                    None => Err(no_rows()),
                }
            }
            StmtInner::Pg { session, prepared } => {
                let rows = pg_query(session, prepared, &binds)?;
                match rows.first() {
                    Some(r) => f(&Row(r)),
                    None => Err(no_rows()),
                }
            }
        }
    }

    /// Every row through `f`, read to the end before returning (a callback
    /// may query the same connection).
    pub fn query_map<T, P, F>(
        &mut self,
        params: P,
        mut f: F,
    ) -> Result<std::vec::IntoIter<Result<T, DbError>>, DbError>
    where
        P: Params,
        F: FnMut(&Row<'_>) -> Result<T, DbError>,
    {
        let binds = params.binds();
        let mut out = Vec::new();
        match &mut self.0 {
            StmtInner::Lite(s) => {
                let s = s.get();
                bind_lite(s, &binds)?;
                let mut rows = s.raw_query();
                while let Some(r) = rows.next()? {
                    out.push(f(&Row(r)));
                }
            }
            StmtInner::Pg { session, prepared } => {
                for r in pg_query(session, prepared, &binds)?.iter() {
                    out.push(f(&Row(r)));
                }
            }
        }
        Ok(out.into_iter())
    }
}

fn no_rows() -> DbError {
    DbError::Sql(rusqlite::Error::QueryReturnedNoRows)
}

/// Binds `$N` by its name: SQLite numbers named parameters in the order they
/// first appear, PostgreSQL by N. A `?`, `?N` or `:name` placeholder (the
/// other store would not take it) is refused here, on the store the tests
/// run most, with the statement's text.
fn bind_lite(s: &mut rusqlite::Statement<'_>, binds: &Binds<'_>) -> Result<(), DbError> {
    let expected = s.parameter_count();
    if binds.values.len() != expected {
        return Err(DbError::Sql(rusqlite::Error::InvalidParameterCount(
            binds.values.len(),
            expected,
        )));
    }
    for index in 1..=expected {
        let n = s
            .parameter_name(index)
            .and_then(|name| name.strip_prefix('$'))
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| (1..=expected).contains(n))
            .ok_or_else(|| {
                let name = s.parameter_name(index).unwrap_or("?").to_owned();
                DbError::Value(format!(
                    "placeholder {name} in `{}`: write $1, $2, … (both stores take them as written)",
                    s.expanded_sql().unwrap_or_default()
                ))
            })?;
        s.raw_bind_parameter(index, binds.values[n - 1])?;
    }
    Ok(())
}

fn pg_query(
    session: &RefCell<PgSession>,
    prepared: &Prepared,
    binds: &Binds<'_>,
) -> Result<Vec<postgres::Row>, DbError> {
    let values = pg_values(prepared, binds)?;
    let args: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
    session
        .borrow_mut()
        .client
        .query(&prepared.stmt, &args)
        .map_err(DbError::Pg)
}

/// The values in `$N` order, as many as the statement has.
fn pg_values<'a>(prepared: &Prepared, binds: &Binds<'a>) -> Result<Vec<Value<'a>>, DbError> {
    let expected = prepared.stmt.params().len();
    if binds.values.len() != expected {
        return Err(DbError::Sql(rusqlite::Error::InvalidParameterCount(
            binds.values.len(),
            expected,
        )));
    }
    Ok(binds.values.clone())
}

/// One row of either store.
pub struct Row<'a>(&'a dyn RowSource);

trait RowSource {
    fn value(&self, idx: &dyn RowIndex) -> Result<Value<'_>, DbError>;
}

impl RowSource for rusqlite::Row<'_> {
    fn value(&self, idx: &dyn RowIndex) -> Result<Value<'_>, DbError> {
        let cell = match idx.position() {
            Ok(i) => self.get_ref(i)?,
            Err(name) => self.get_ref(name)?,
        };
        Ok(match cell {
            rusqlite::types::ValueRef::Null => Value::Null,
            rusqlite::types::ValueRef::Integer(n) => Value::Int(n),
            rusqlite::types::ValueRef::Real(f) => Value::Real(f),
            rusqlite::types::ValueRef::Text(t) => {
                Value::Text(std::str::from_utf8(t).map_err(|e| DbError::Value(e.to_string()))?)
            }
            rusqlite::types::ValueRef::Blob(b) => Value::Blob(b),
        })
    }
}

impl RowSource for postgres::Row {
    fn value(&self, idx: &dyn RowIndex) -> Result<Value<'_>, DbError> {
        let cell = match idx.position() {
            Ok(i) => self.try_get::<_, PgCell<'_>>(i),
            Err(name) => self.try_get::<_, PgCell<'_>>(name),
        };
        cell.map(|c| c.0).map_err(DbError::Pg)
    }
}

/// A column by position (from 0) or by name.
pub trait RowIndex {
    fn position(&self) -> Result<usize, &str>;
}

impl RowIndex for usize {
    fn position(&self) -> Result<usize, &str> {
        Ok(*self)
    }
}

impl RowIndex for &str {
    fn position(&self) -> Result<usize, &str> {
        Err(self)
    }
}

impl Row<'_> {
    /// The column as `T`; `get::<_, T>(i)` as with rusqlite.
    pub fn get<I: RowIndex, T: FromValue>(&self, idx: I) -> Result<T, DbError> {
        let v = self.0.value(&idx)?;
        T::from_value(v).map_err(|why| {
            let at = match idx.position() {
                Ok(i) => format!("column {i}"),
                Err(name) => format!("column {name}"),
            };
            DbError::Value(format!("{at}: {why}"))
        })
    }
}

/// A value on its way in or out, borrowed where it can be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Null,
    Int(i64),
    Real(f64),
    Bool(bool),
    Text(&'a str),
    Blob(&'a [u8]),
    /// A `u64` above `i64::MAX`: neither store has a column for it, so
    /// binding it is an error, never a silently smaller number.
    TooLarge(u64),
}

impl Value<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Int(_) => "an integer",
            Value::Real(_) => "a real",
            Value::Bool(_) => "a boolean",
            Value::Text(_) => "text",
            Value::Blob(_) => "a blob",
            Value::TooLarge(_) => "an integer above 2^63-1",
        }
    }
}

/// Something that can be bound to a placeholder.
pub trait Param {
    fn value(&self) -> Value<'_>;
}

/// Something a column can be read as.
pub trait FromValue: Sized {
    fn from_value(v: Value<'_>) -> Result<Self, String>;
}

impl<T: Param + ?Sized> Param for &T {
    fn value(&self) -> Value<'_> {
        (**self).value()
    }
}

impl<T: Param> Param for Option<T> {
    fn value(&self) -> Value<'_> {
        match self {
            Some(v) => v.value(),
            None => Value::Null,
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: Value<'_>) -> Result<Self, String> {
        match v {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

impl Param for str {
    fn value(&self) -> Value<'_> {
        Value::Text(self)
    }
}

impl Param for String {
    fn value(&self) -> Value<'_> {
        Value::Text(self)
    }
}

impl FromValue for String {
    fn from_value(v: Value<'_>) -> Result<Self, String> {
        match v {
            Value::Text(t) => Ok(t.to_owned()),
            other => Err(format!("{} is not text", other.kind())),
        }
    }
}

impl Param for [u8] {
    fn value(&self) -> Value<'_> {
        Value::Blob(self)
    }
}

impl Param for Vec<u8> {
    fn value(&self) -> Value<'_> {
        Value::Blob(self)
    }
}

impl FromValue for Vec<u8> {
    fn from_value(v: Value<'_>) -> Result<Self, String> {
        match v {
            Value::Blob(b) => Ok(b.to_vec()),
            other => Err(format!("{} is not a blob", other.kind())),
        }
    }
}

impl Param for bool {
    fn value(&self) -> Value<'_> {
        Value::Bool(*self)
    }
}

impl FromValue for bool {
    /// SQLite keeps BOOLEAN as 0/1, and its comparisons are integers too.
    fn from_value(v: Value<'_>) -> Result<Self, String> {
        match v {
            Value::Bool(b) => Ok(b),
            Value::Int(i) => Ok(i != 0),
            other => Err(format!("{} is not a boolean", other.kind())),
        }
    }
}

impl Param for f64 {
    fn value(&self) -> Value<'_> {
        Value::Real(*self)
    }
}

impl FromValue for f64 {
    fn from_value(v: Value<'_>) -> Result<Self, String> {
        match v {
            Value::Real(f) => Ok(f),
            Value::Int(i) => Ok(i as f64),
            other => Err(format!("{} is not a number", other.kind())),
        }
    }
}

macro_rules! integer {
    ($($t:ty),*) => {$(
        impl Param for $t {
            fn value(&self) -> Value<'_> {
                Value::Int(*self as i64)
            }
        }

        impl FromValue for $t {
            /// PostgreSQL's comparisons and EXISTS are booleans where
            /// SQLite's are integers.
            fn from_value(v: Value<'_>) -> Result<Self, String> {
                match v {
                    Value::Int(i) => <$t>::try_from(i)
                        .map_err(|_| format!("{i} is out of range for {}", stringify!($t))),
                    Value::Bool(b) => Ok(b as $t),
                    other => Err(format!("{} is not an integer", other.kind())),
                }
            }
        }
    )*};
}
integer!(i64, i32, i16, u32, u16, u8);

impl Param for usize {
    fn value(&self) -> Value<'_> {
        Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

impl FromValue for usize {
    fn from_value(v: Value<'_>) -> Result<Self, String> {
        let i = i64::from_value(v)?;
        usize::try_from(i).map_err(|_| format!("{i} is out of range for usize"))
    }
}

impl Param for u64 {
    fn value(&self) -> Value<'_> {
        i64::try_from(*self).map_or(Value::TooLarge(*self), Value::Int)
    }
}

impl FromValue for u64 {
    fn from_value(v: Value<'_>) -> Result<Self, String> {
        let i = i64::from_value(v)?;
        u64::try_from(i).map_err(|_| format!("{i} is out of range for u64"))
    }
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match *self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(i)),
            Value::Real(f) => ToSqlOutput::Borrowed(ValueRef::Real(f)),
            Value::Bool(b) => ToSqlOutput::Borrowed(ValueRef::Integer(b as i64)),
            Value::Text(t) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
            Value::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            Value::TooLarge(n) => {
                return Err(rusqlite::Error::ToSqlConversionFailure(
                    format!("{n} is out of range for an SQLite integer").into(),
                ))
            }
        })
    }
}

type BoxError = Box<dyn std::error::Error + Sync + Send>;

impl ToSql for Value<'_> {
    /// Converted to the type PostgreSQL inferred for the placeholder; a
    /// value that does not fit is an error, never a silent change.
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> Result<IsNull, BoxError> {
        let mismatch = || -> BoxError { format!("cannot bind {} as {ty}", self.kind()).into() };
        match (*self, ty) {
            (Value::Null, _) => Ok(IsNull::Yes),
            (Value::Int(i), &Type::INT8) => i.to_sql(ty, out),
            (Value::Int(i), &Type::INT4) => i32::try_from(i)
                .map_err(|_| format!("{i} is out of range for {ty}"))?
                .to_sql(ty, out),
            (Value::Int(i), &Type::INT2) => i16::try_from(i)
                .map_err(|_| format!("{i} is out of range for {ty}"))?
                .to_sql(ty, out),
            (Value::Int(i), &Type::BOOL) => match i {
                0 => false.to_sql(ty, out),
                1 => true.to_sql(ty, out),
                _ => Err(mismatch()),
            },
            (Value::Int(i), &Type::FLOAT8) => (i as f64).to_sql(ty, out),
            (Value::Int(i), &Type::TEXT | &Type::VARCHAR) => i.to_string().to_sql(ty, out),
            (Value::Bool(b), &Type::BOOL) => b.to_sql(ty, out),
            (Value::Bool(b), &Type::INT8) => (b as i64).to_sql(ty, out),
            (Value::Bool(b), &Type::INT4) => (b as i32).to_sql(ty, out),
            (Value::Bool(b), &Type::INT2) => (b as i16).to_sql(ty, out),
            (Value::Real(f), &Type::FLOAT8) => f.to_sql(ty, out),
            (Value::Real(f), &Type::FLOAT4) => (f as f32).to_sql(ty, out),
            (Value::Text(t), &Type::TEXT | &Type::VARCHAR | &Type::BPCHAR | &Type::NAME) => {
                t.to_sql(ty, out)
            }
            (Value::Blob(b), &Type::BYTEA) => b.to_sql(ty, out),
            _ => Err(mismatch()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// A PostgreSQL cell of any type this program's schema uses, as a `Value`.
struct PgCell<'a>(Value<'a>);

impl<'a> FromSql<'a> for PgCell<'a> {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(PgCell(match *ty {
            Type::INT8 => Value::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => Value::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT2 => Value::Int(i16::from_sql(ty, raw)?.into()),
            Type::BOOL => Value::Bool(bool::from_sql(ty, raw)?),
            Type::FLOAT8 => Value::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => Value::Real(f32::from_sql(ty, raw)?.into()),
            Type::NUMERIC => numeric(raw)?,
            Type::BYTEA => Value::Blob(<&[u8]>::from_sql(ty, raw)?),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
                Value::Text(<&str>::from_sql(ty, raw)?)
            }
            // A UUID, TIMESTAMPTZ or JSONB column read as text would work
            // here and nowhere on SQLite: a column type the schema gains
            // must be added above, on purpose.
            _ => return Err(format!("orderlink does not read columns of type {ty}").into()),
        }))
    }

    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(PgCell(Value::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// PostgreSQL's binary NUMERIC (what SUM of a BIGINT gives): an integer when
/// it has no fraction, else a real. Layout: digit count, weight (of the
/// first base-10000 digit), sign, display scale, then the digits.
fn numeric(raw: &[u8]) -> Result<Value<'static>, BoxError> {
    let word = |i: usize| -> Result<i16, BoxError> {
        raw.get(i * 2..i * 2 + 2)
            .map(|b| i16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "short NUMERIC".into())
    };
    let ndigits = word(0)? as usize;
    let weight = word(1)? as i32;
    let sign = word(2)? as u16;
    if sign == 0xC000 {
        return Ok(Value::Real(f64::NAN));
    }
    let mut int: i128 = 0;
    let mut real = 0f64;
    let mut whole = true;
    for d in 0..ndigits {
        let digit = word(4 + d)? as i128;
        let power = weight - d as i32;
        real += digit as f64 * 10000f64.powi(power);
        if power >= 0 {
            let scale = 10000i128
                .checked_pow(power as u32)
                .ok_or("NUMERIC too large")?;
            int = digit
                .checked_mul(scale)
                .and_then(|v| int.checked_add(v))
                .ok_or("NUMERIC too large")?;
        } else if digit != 0 {
            whole = false;
        }
    }
    let negative = sign == 0x4000;
    if whole {
        let n = if negative { -int } else { int };
        let n = i64::try_from(n).map_err(|_| "NUMERIC out of range for i64")?;
        Ok(Value::Int(n))
    } else {
        Ok(Value::Real(if negative { -real } else { real }))
    }
}

/// The values of one statement, `$1` first.
pub struct Binds<'a> {
    values: Vec<Value<'a>>,
}

/// What `execute`, `query_row` and `query_map` take: `params![…]`, an
/// array of one type, `[]`, or `params_from_iter(…)`.
pub trait Params {
    fn binds(&self) -> Binds<'_>;
}

impl Params for &[&dyn Param] {
    fn binds(&self) -> Binds<'_> {
        Binds {
            values: self.iter().map(|p| p.value()).collect(),
        }
    }
}

impl Params for [&dyn Param; 0] {
    fn binds(&self) -> Binds<'_> {
        Binds { values: Vec::new() }
    }
}

macro_rules! array_params {
    ($($n:literal),*) => {$(
        impl<T: Param> Params for [T; $n] {
            fn binds(&self) -> Binds<'_> {
                Binds { values: self.iter().map(|p| p.value()).collect() }
            }
        }
    )*};
}
array_params!(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16);

/// Values from an iterator, positional (collected, so they can be lent).
#[derive(Clone)]
pub struct ParamsFromIter<T>(Vec<T>);

pub fn params_from_iter<I>(iter: I) -> ParamsFromIter<I::Item>
where
    I: IntoIterator,
    I::Item: Param,
{
    ParamsFromIter(iter.into_iter().collect())
}

impl<T: Param> Params for ParamsFromIter<T> {
    fn binds(&self) -> Binds<'_> {
        Binds {
            values: self.0.iter().map(|p| p.value()).collect(),
        }
    }
}

/// `params![a, b, …]`: a list of values of mixed types, as rusqlite's.
#[macro_export]
macro_rules! sql_params {
    () => {
        &[] as &[&dyn $crate::db::sql::Param]
    };
    ($($p:expr),+ $(,)?) => {
        &[$(&$p as &dyn $crate::db::sql::Param),+] as &[&dyn $crate::db::sql::Param]
    };
}
// `#[macro_export]` puts the macro at the crate root; this names it where
// its room is, so callers write `db::sql::params!` like every other name.
pub use sql_params as params;

/// `.optional()` on a query's result, as with rusqlite.
pub trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>, DbError>;
}

impl<T> OptionalExtension<T> for Result<T, DbError> {
    fn optional(self) -> Result<Option<T>, DbError> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(DbError::Sql(rusqlite::Error::QueryReturnedNoRows)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite numbers `$N` by first appearance; bound by name, a statement
    /// whose `$2` comes first still gets each value where it belongs.
    #[test]
    fn sqlite_binds_dollar_placeholders_by_their_number_in_any_order() {
        let conn = Conn::from(rusqlite::Connection::open_in_memory().unwrap());
        let got: (String, String, String) = conn
            .query_row("SELECT $2, $1, $2 || $1", ["a", "b"], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!(got, ("b".into(), "a".into(), "ba".into()));
        // Text that only looks like a placeholder stays text.
        let quoted: String = conn
            .query_row("SELECT '$1 $2 :x' || $1 -- it's $2\n", ["!"], |r| r.get(0))
            .unwrap();
        assert_eq!(quoted, "$1 $2 :x!");
    }

    /// What PostgreSQL would refuse is refused on SQLite too, with a message
    /// that says how to write it; a gap in the numbers is a count error.
    #[test]
    fn other_placeholder_forms_and_gaps_are_refused_on_sqlite() {
        let conn = Conn::from(rusqlite::Connection::open_in_memory().unwrap());
        for sql in ["SELECT ?1", "SELECT ?", "SELECT :k", "SELECT @k"] {
            let err = conn
                .query_row(sql, ["a"], |r| r.get::<_, String>(0))
                .unwrap_err();
            assert!(err.to_string().contains("write $1, $2"), "{sql}: {err}");
        }
        let err = conn
            .query_row("SELECT $1, $3", ["a", "b"], |r| r.get::<_, String>(0))
            .unwrap_err();
        assert!(err.to_string().contains("write $1, $2"), "{err}");
        let err = conn
            .query_row("SELECT $1", ["a", "b"], |r| r.get::<_, String>(0))
            .unwrap_err();
        assert!(
            matches!(
                err,
                DbError::Sql(rusqlite::Error::InvalidParameterCount(2, 1))
            ),
            "{err}"
        );
    }

    #[test]
    fn a_u64_too_large_for_either_store_is_an_error_not_a_smaller_number() {
        let conn = Conn::from(rusqlite::Connection::open_in_memory().unwrap());
        conn.execute_batch("CREATE TABLE t (n INTEGER)").unwrap();
        let fits: u64 = i64::MAX as u64;
        conn.execute("INSERT INTO t (n) VALUES ($1)", params![fits])
            .unwrap();
        let err = conn
            .execute("INSERT INTO t (n) VALUES ($1)", params![fits + 1])
            .unwrap_err();
        assert!(err.to_string().contains("out of range"), "{err}");
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn numeric_sums_read_as_integers() {
        // 123456789 = 1|2345|6789 base 10000, weight 2, positive, scale 0.
        let raw: Vec<u8> = [3i16, 2, 0, 0, 1, 2345, 6789]
            .iter()
            .flat_map(|w| w.to_be_bytes())
            .collect();
        assert_eq!(numeric(&raw).unwrap(), Value::Int(123_456_789));
        let zero: Vec<u8> = [0i16, 0, 0, 0]
            .iter()
            .flat_map(|w| w.to_be_bytes())
            .collect();
        assert_eq!(numeric(&zero).unwrap(), Value::Int(0));
        let neg: Vec<u8> = [1i16, 0, 0x4000u16 as i16, 0, 42]
            .iter()
            .flat_map(|w| w.to_be_bytes())
            .collect();
        assert_eq!(numeric(&neg).unwrap(), Value::Int(-42));
    }

    #[test]
    fn sqlite_values_round_trip_through_the_layer() {
        let conn = Conn::from(rusqlite::Connection::open_in_memory().unwrap());
        conn.execute_batch("CREATE TABLE t (k VARCHAR(10) PRIMARY KEY, n INTEGER, b BOOLEAN)")
            .unwrap();
        let n = conn
            .prepare_cached("INSERT INTO t (k, n, b) VALUES ($1, $2, $3)")
            .unwrap()
            .execute(params!["a", 7u32, true])
            .unwrap();
        assert_eq!(n, 1);
        let (k, n, b): (String, i64, bool) = conn
            .query_row("SELECT k, n, b FROM t WHERE k = $1", ["a"], |r| {
                Ok((r.get(0)?, r.get("n")?, r.get(2)?))
            })
            .unwrap();
        assert_eq!((k.as_str(), n, b), ("a", 7, true));
        let none = conn
            .query_row("SELECT k FROM t WHERE k = 'zz'", [], |r| {
                r.get::<_, String>(0)
            })
            .optional()
            .unwrap();
        assert_eq!(none, None);
        let keys = ["a".to_owned()];
        let n: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM t WHERE k = $1",
                params_from_iter(keys.iter()),
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1);
    }
}
