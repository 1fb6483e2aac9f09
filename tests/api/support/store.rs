//! Which store the black-box apps run on (SPEC §13): a temp SQLite file by
//! default, or, with `ORDERLINK_TEST_STORE=postgres`, a fresh PostgreSQL
//! database of their own on the server named by ORDERLINK_TEST_POSTGRES_URL
//! (created per app, dropped at the end). `.ci/run` runs the suite both ways.

use ::postgres::Client;

/// The variable that switches the suite to PostgreSQL.
pub const SWITCH: &str = "ORDERLINK_TEST_STORE";

/// True when this run's apps keep their data in PostgreSQL.
pub fn on_postgres() -> bool {
    match std::env::var(SWITCH).as_deref().map(str::trim) {
        Ok("postgres") => true,
        Ok("") | Ok("sqlite") | Err(_) => false,
        Ok(other) => panic!("{SWITCH}={other}: use sqlite or postgres"),
    }
}

/// The admin connection for scratch databases; required under the switch.
pub fn admin_url() -> String {
    match std::env::var("ORDERLINK_TEST_POSTGRES_URL") {
        Ok(url) if !url.trim().is_empty() => url.trim().to_owned(),
        _ => panic!(
            "{SWITCH}=postgres needs ORDERLINK_TEST_POSTGRES_URL (`source .ci/postgres` starts a throwaway PostgreSQL and sets it)"
        ),
    }
}

/// For tests about SQLite itself (its file, WAL, lock file, backups): true,
/// after one line saying why, when this run is on PostgreSQL.
pub fn skip_on_postgres(test: &str, why: &str) -> bool {
    if !on_postgres() {
        return false;
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped on PostgreSQL: {test}: {why}");
    true
}

/// The one way tests connect to PostgreSQL themselves: as the server does
/// (`orderlink::pg::connect`), so the URL's `sslmode`/`sslrootcert` hold
/// (`.ci/postgres` hands out a `verify-full` URL: every test goes through
/// TLS, as a merchant's rented database would have it).
pub fn connect(url: &str) -> Result<Client, String> {
    orderlink::pg::connect(url)
}

/// A database of its own on the test server, dropped when done.
pub struct Scratch {
    admin_url: String,
    pub name: String,
    pub url: String,
}

impl Scratch {
    pub fn create(admin_url: &str) -> Scratch {
        let name = format!("orderlink_t_{}", uuid::Uuid::new_v4().simple());
        let mut admin = connect(admin_url).expect("connect to the test PostgreSQL");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("CREATE DATABASE (the test user needs CREATEDB)");
        let (base, query) = match admin_url.split_once('?') {
            Some((b, q)) => (b, format!("?{q}")),
            None => (admin_url, String::new()),
        };
        let scheme_end = base.find("://").expect("a URL") + 3;
        let host_part = match base[scheme_end..].find('/') {
            Some(slash) => &base[..scheme_end + slash],
            None => base,
        };
        Scratch {
            admin_url: admin_url.to_owned(),
            url: format!("{host_part}/{name}{query}"),
            name,
        }
    }

    pub fn client(&self) -> Client {
        connect(&self.url).expect("connect to the scratch database")
    }

    /// A connection to the scratch database after the product's migrations.
    pub fn migrated(&self) -> orderlink::db::Conn {
        let mut client = self.client();
        orderlink::pg::migrate(&mut client).expect("migrate the scratch database");
        orderlink::db::Conn::from(client)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Ok(mut admin) = connect(&self.admin_url) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}
