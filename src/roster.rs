//! The roster of instances sharing one PostgreSQL (SPEC §13), so that
//! `WHATSAPP_MAX_MPS` holds for all of them together: each instance
//! refreshes its row in `sender_instances` every [`BEAT`] and gives its
//! pacer its [`share`](crate::pacer::share) of the cap among the rows seen
//! within [`LIVE_FOR`]. SQLite runs one instance (its lock file) and no
//! roster.
//!
//! The rules that keep the shares of instances sending at the same moment
//! within the cap while their views differ:
//! - a view is used for at most [`FRESH`] after its refresh began; a refresh
//!   that fails leaves the share to go stale, and the instance stops sending;
//! - a newcomer sends only [`FRESH`] after its row was committed, when every
//!   view still in use was read after it and counts it; except when its
//!   first refresh finds it alone (refreshes take turns on one row lock, so
//!   two instances starting at once cannot both find themselves alone);
//! - a row counts as live for [`LIVE_FOR`], well beyond [`FRESH`]: an
//!   instance still sending is always counted by the others.
//!
//! Times in rows are the instances' clocks, as leases already are: the
//! machines' clocks must agree (NTP) to well within `LIVE_FOR − FRESH`.

use crate::clock::now_ms;
use crate::db::sql::{params, Conn};
use crate::db::Db;
use crate::db::DbError;
use crate::db::MayRunTwice;
use crate::pacer::{share, Pacer};
use crate::periodic::Periodic;
use crate::sender::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often an instance refreshes its row and its view of the others.
pub const BEAT: Duration = Duration::from_millis(250);
/// How long one view of the roster may be used.
pub const FRESH: Duration = Duration::from_secs(1);
/// A row refreshed within this long is a live instance (milliseconds).
pub const LIVE_FOR_MS: i64 = 5_000;
pub const LIVE_FOR: Duration = Duration::from_millis(LIVE_FOR_MS as u64);
/// Rows of instances gone this long are removed by whoever refreshes.
const FORGET_AFTER_MS: i64 = 3_600_000;

/// Refreshes this instance's row and returns the ids of the live instances
/// (this one included), sorted. One transaction: the turn row's lock first,
/// so refreshes of all instances take turns.
pub fn refresh(conn: &Conn, me: &str, now: i64) -> Result<Vec<String>, DbError> {
    conn.prepare_cached(
        "INSERT INTO sender_roster_turn (id, turns) VALUES (1, 1)
         ON CONFLICT (id) DO UPDATE SET turns = sender_roster_turn.turns + 1",
    )?
    .execute(params![])?;
    conn.prepare_cached(
        "INSERT INTO sender_instances (id, seen_at, started_at) VALUES ($1, $2, $2)
         ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at",
    )?
    .execute(params![me, now])?;
    conn.prepare_cached("DELETE FROM sender_instances WHERE seen_at < $1")?
        .execute(params![now - FORGET_AFTER_MS])?;
    let mut stmt =
        conn.prepare_cached("SELECT id FROM sender_instances WHERE seen_at > $1 ORDER BY id")?;
    let live = stmt
        .query_map(params![now - LIVE_FOR_MS], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(live)
}

/// Removes this instance's row: the others take up its share at their next
/// refresh. Called once this instance sends no more.
pub fn leave(conn: &Conn, me: &str) -> Result<(), DbError> {
    conn.prepare_cached("DELETE FROM sender_instances WHERE id = $1")?
        .execute(params![me])?;
    Ok(())
}

/// This instance's standing in the roster across refreshes: the pure part
/// of the rules above.
#[derive(Debug, Default)]
pub struct Standing {
    /// When the first refresh returned (its row committed).
    joined: Option<Instant>,
    open: bool,
}

impl Standing {
    /// The share to pace at and until when, after a refresh that began at
    /// `began`, returned at `returned` and found `live`.
    pub fn refreshed(
        &mut self,
        cap: u32,
        me: &str,
        live: &[String],
        began: Instant,
        returned: Instant,
    ) -> (u32, Instant) {
        let joined = *self.joined.get_or_insert_with(|| {
            // Alone at the first refresh: nobody else holds a view to
            // update, and the next to refresh will count this one.
            self.open = live.iter().all(|id| id == me);
            returned
        });
        if returned >= joined + FRESH {
            self.open = true;
        }
        let share = if self.open {
            let mut live = live.to_vec();
            if !live.iter().any(|id| id == me) {
                live.push(me.to_owned());
                live.sort();
            }
            share(cap, &live, me)
        } else {
            0
        };
        (share, began + FRESH)
    }
}

/// Puts this instance on the roster of the shared database `db`: its
/// pacer gets its share of `cap`, and `sender` is woken when it may send.
pub fn join(db: &Db, cap: u32, pacer: Arc<Pacer>, sender: Sender) -> Roster {
    let me = uuid::Uuid::new_v4().simple().to_string();
    let (writer, last) = (db.writer.clone(), db.writer.clone());
    Roster::start(
        me,
        cap,
        pacer,
        move |me: &str| {
            let me = me.to_owned();
            // The time is read when the job runs, not when it was queued.
            writer
                .run_blocking(MayRunTwice::new(move |c| refresh(c, &me, now_ms())))
                .map_err(|e| e.to_string())
        },
        move || sender.wake(),
        move |me: &str| {
            let me = me.to_owned();
            if let Err(e) = last.run_blocking(MayRunTwice::new(move |c| leave(c, &me))) {
                log::warn!("roster: this instance's row was not removed ({e}); the others count it for {LIVE_FOR:?} more");
            }
        },
    )
}

/// The thread that keeps this instance on the roster and its pacer at its
/// share.
pub struct Roster(Periodic);

impl Roster {
    /// Starts refreshing as `me`; `refresh` runs one refresh (a database
    /// job), `opened` is called when the share goes from none to some (to
    /// wake the sender), `leave` once at stop.
    pub fn start<R, O, L>(
        me: String,
        cap: u32,
        pacer: Arc<Pacer>,
        mut refresh: R,
        opened: O,
        leave: L,
    ) -> Roster
    where
        R: FnMut(&str) -> Result<Vec<String>, String> + Send + 'static,
        O: Fn() + Send + 'static,
        L: FnOnce(&str) + Send + 'static,
    {
        let thread = Periodic::spawn("roster", move |stop| {
                let mut standing = Standing::default();
                // What was last logged: (share, live instances).
                let mut last = (0u32, 0usize);
                let mut failing = false;
                loop {
                    let began = Instant::now();
                    match refresh(&me) {
                        Ok(live) => {
                            if failing {
                                log::warn!("roster: refreshed again; sending resumes at this instance's share");
                                failing = false;
                            }
                            let (share, until) =
                                standing.refreshed(cap, &me, &live, began, Instant::now());
                            pacer.set_share(share, Some(until));
                            let now = (share, live.len().max(1));
                            if now != last {
                                // Once at start, then when an instance
                                // joins or leaves: the operator's view of
                                // the split.
                                if share > 0 {
                                    log::info!(
                                        "roster: {} live instance(s); this one sends up to {share} of WHATSAPP_MAX_MPS={cap} per second",
                                        now.1
                                    );
                                }
                                if share > 0 && last.0 == 0 {
                                    opened();
                                }
                                last = now;
                            }
                        }
                        Err(e) => {
                            if !failing {
                                log::error!("roster: cannot refresh this instance's row ({e}); it stops sending within {FRESH:?} so the instances together stay under WHATSAPP_MAX_MPS");
                                failing = true;
                            }
                            last = (0, 0);
                        }
                    }
                    if stop.wait(BEAT.saturating_sub(began.elapsed())) {
                        break;
                    }
                }
                leave(&me);
            })
            .expect("spawn the roster thread");
        Roster(thread)
    }

    /// Stops refreshing and leaves the roster; call once the sender stopped.
    pub fn stop(self) {
        self.0.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_instance_alone_at_its_first_refresh_sends_at_once_with_the_whole_cap() {
        let mut standing = Standing::default();
        let t = Instant::now();
        let (share, until) = standing.refreshed(80, "a", &ids(&["a"]), t, t);
        assert_eq!(share, 80);
        assert_eq!(until, t + FRESH);
    }

    #[test]
    fn a_newcomer_waits_until_every_view_in_use_counts_it() {
        let mut standing = Standing::default();
        let t = Instant::now();
        let live = ids(&["a", "b"]);
        assert_eq!(standing.refreshed(80, "b", &live, t, t).0, 0);
        let soon = t + FRESH - Duration::from_millis(1);
        assert_eq!(standing.refreshed(80, "b", &live, soon, soon).0, 0);
        let then = t + FRESH;
        assert_eq!(standing.refreshed(80, "b", &live, then, then).0, 40);
        // Once counted, it stays open as others come and go.
        let later = then + BEAT;
        assert_eq!(
            standing
                .refreshed(80, "b", &ids(&["a", "b", "c"]), later, later)
                .0,
            26
        );
        assert_eq!(
            standing.refreshed(80, "b", &ids(&["b"]), later, later).0,
            80
        );
    }

    #[test]
    fn a_view_is_used_for_fresh_from_when_its_refresh_began() {
        let mut standing = Standing::default();
        let began = Instant::now();
        let returned = began + Duration::from_millis(400);
        let (_, until) = standing.refreshed(80, "a", &ids(&["a"]), began, returned);
        assert_eq!(until, began + FRESH);
    }

    #[test]
    fn liveness_outlasts_a_views_use_by_a_margin_for_clocks() {
        assert!(LIVE_FOR >= FRESH * 4);
        assert!(BEAT * 3 <= FRESH);
    }

    #[test]
    fn a_refresh_counts_live_rows_only_and_leaving_removes_the_row() {
        let mut lite = rusqlite::Connection::open_in_memory().unwrap();
        crate::db::migrate(&mut lite).unwrap();
        let conn = Conn::from(lite);
        let now = 1_000_000_000;
        assert_eq!(refresh(&conn, "b", now).unwrap(), ids(&["b"]));
        assert_eq!(refresh(&conn, "a", now + 10).unwrap(), ids(&["a", "b"]));
        // "b" went quiet: dead after LIVE_FOR.
        let later = now + LIVE_FOR_MS + 1;
        assert_eq!(refresh(&conn, "a", later).unwrap(), ids(&["a"]));
        assert_eq!(refresh(&conn, "b", later).unwrap(), ids(&["a", "b"]));
        leave(&conn, "b").unwrap();
        assert_eq!(refresh(&conn, "a", later + 1).unwrap(), ids(&["a"]));
        // Forgotten after an hour.
        let much_later = later + FORGET_AFTER_MS + 10;
        refresh(&conn, "c", much_later).unwrap();
        let rows: i64 = conn
            .query_row("SELECT COUNT(*) FROM sender_instances", params![], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(rows, 1);
    }

    #[test]
    fn the_roster_thread_sets_the_share_and_leaves_at_stop() {
        let pacer = Arc::new(Pacer::held());
        let left = Arc::new(Mutex::new(None));
        let opened = Arc::new(Mutex::new(0));
        let (l, o) = (left.clone(), opened.clone());
        let roster = Roster::start(
            "me".into(),
            10,
            pacer.clone(),
            |me: &str| Ok(vec![me.to_owned(), "zz".to_owned()]),
            move || *o.lock().unwrap() += 1,
            move |me: &str| *l.lock().unwrap() = Some(me.to_owned()),
        );
        let deadline = Instant::now() + FRESH * 5;
        while pacer.share() != 5 {
            assert!(Instant::now() < deadline, "no share after {:?}", FRESH * 5);
            std::thread::sleep(Duration::from_millis(10));
        }
        roster.stop();
        assert_eq!(left.lock().unwrap().as_deref(), Some("me"));
        assert_eq!(*opened.lock().unwrap(), 1);
    }
}
