//! Sign-in sessions of the merchant's page (SPEC §12): an opaque random id in
//! an `HttpOnly`, `SameSite=Strict` cookie, and a row in `admin_sessions`
//! keyed by its SHA-256. Chosen over Rocket's private cookies because it
//! needs no extra key to keep across restarts (sessions survive a restart
//! because they live in the database), sign-out really ends a session, and
//! changing `ADMIN_TOKEN` ends them all. Wrong sign-ins are slowed down by
//! [`Throttle`].

use crate::db::sql::{params, Conn, OptionalExtension};
use crate::db::DbError;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

pub const COOKIE: &str = "orderlink_admin";
/// How long a session lasts after sign-in (the cookie's Max-Age too).
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn random_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

/// A signed-in browser: the CSRF token its forms must carry.
#[derive(Debug, Clone)]
pub struct Session {
    pub id_hash: String,
    pub csrf: String,
}

/// Opens a session; returns the cookie value (never stored) and the session.
/// Expired sessions are swept at the same time.
pub fn open(c: &Conn, admin_token: &str, now: i64) -> Result<(String, Session), DbError> {
    let cookie = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes());
    let session = Session {
        id_hash: sha256_hex(&cookie),
        csrf: hex::encode(random_bytes()),
    };
    c.prepare_cached("DELETE FROM admin_sessions WHERE expires_at <= $1")?
        .execute([now])?;
    c.prepare_cached(
        "INSERT INTO admin_sessions (id_hash, token_hash, csrf_token, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5)",
    )?
    .execute(params![
        session.id_hash,
        sha256_hex(admin_token),
        session.csrf,
        now,
        now + SESSION_TTL.as_millis() as i64
    ])?;
    Ok((cookie, session))
}

/// The live session this cookie names, if any: unexpired, and opened with
/// the `ADMIN_TOKEN` configured now.
pub fn find(
    c: &Conn,
    cookie: &str,
    admin_token: &str,
    now: i64,
) -> Result<Option<Session>, DbError> {
    let id_hash = sha256_hex(cookie);
    Ok(c.prepare_cached(
        "SELECT csrf_token FROM admin_sessions
             WHERE id_hash = $1 AND token_hash = $2 AND expires_at > $3",
    )?
    .query_row(params![id_hash, sha256_hex(admin_token), now], |r| {
        r.get::<_, String>(0)
    })
    .optional()?
    .map(|csrf| Session { id_hash, csrf }))
}

pub fn close(c: &Conn, id_hash: &str) -> Result<(), DbError> {
    c.prepare_cached("DELETE FROM admin_sessions WHERE id_hash = $1")?
        .execute([id_hash])?;
    Ok(())
}

/// Slows down guessing `ADMIN_TOKEN`. Wrong sign-ins queue one at a time
/// behind an async mutex (a waiting request parks, it holds no thread), and
/// each holds the line for a delay that doubles with every failure in a row,
/// from 250 ms up to 10 s, so parallel guesses gain nothing. The right token
/// never joins that line (SPEC §12: a guessing attack must not lock the owner
/// out): it is compared first and answered at once. A right token, or 15
/// quiet minutes, resets the count.
#[derive(Default)]
pub struct Throttle {
    /// Held by a wrong sign-in for its whole delay.
    line: rocket::tokio::sync::Mutex<()>,
    failures: std::sync::Mutex<Failures>,
}

#[derive(Default)]
struct Failures {
    count: u32,
    last: Option<Instant>,
}

const FIRST_DELAY: Duration = Duration::from_millis(250);
const MAX_DELAY: Duration = Duration::from_secs(10);
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);

pub fn delay_after(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    FIRST_DELAY
        .saturating_mul(1u32 << (failures - 1).min(16))
        .min(MAX_DELAY)
}

impl Throttle {
    /// Compares `given` with `expected` in constant time; on a mismatch,
    /// waits its turn in the line of wrong ones and then its penalty before
    /// answering `false`.
    pub async fn check(&self, expected: &str, given: &str) -> bool {
        if crate::signature::constant_time_eq(expected, given) {
            *self.failures.lock().expect("throttle lock") = Failures::default();
            return true;
        }
        let _turn = self.line.lock().await;
        let (count, delay) = {
            let mut failures = self.failures.lock().expect("throttle lock");
            if failures.last.is_some_and(|t| t.elapsed() > FORGET_AFTER) {
                *failures = Failures::default();
            }
            failures.count = failures.count.saturating_add(1);
            failures.last = Some(Instant::now());
            (failures.count, delay_after(failures.count))
        };
        log::warn!(
            "admin page: wrong sign-in ({count} in a row); answering in {} ms",
            delay.as_millis()
        );
        rocket::tokio::time::sleep(delay).await;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_doubles_from_a_quarter_second_up_to_ten() {
        assert_eq!(delay_after(0), Duration::ZERO);
        assert_eq!(delay_after(1), Duration::from_millis(250));
        assert_eq!(delay_after(2), Duration::from_millis(500));
        assert_eq!(delay_after(4), Duration::from_secs(2));
        assert_eq!(delay_after(7), Duration::from_secs(10));
        assert_eq!(delay_after(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn a_session_is_found_by_its_cookie_until_it_expires_or_the_token_changes() {
        let mut c = rusqlite::Connection::open_in_memory().unwrap();
        crate::db::migrate(&mut c).unwrap();
        let c = Conn::from(c);
        let (cookie, session) = open(&c, "admin-token", 1_000).unwrap();
        let stored: String = c
            .query_row("SELECT id_hash FROM admin_sessions", [], |r| r.get(0))
            .unwrap();
        assert_ne!(stored, cookie, "the cookie itself is never stored");
        let found = find(&c, &cookie, "admin-token", 2_000).unwrap().unwrap();
        assert_eq!(found.csrf, session.csrf);
        assert!(find(&c, "other", "admin-token", 2_000).unwrap().is_none());
        assert!(find(&c, &cookie, "new-token", 2_000).unwrap().is_none());
        let later = 1_000 + SESSION_TTL.as_millis() as i64;
        assert!(find(&c, &cookie, "admin-token", later).unwrap().is_none());
        close(&c, &session.id_hash).unwrap();
        assert!(find(&c, &cookie, "admin-token", 2_000).unwrap().is_none());
    }
}
