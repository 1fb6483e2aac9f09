//! `GET /healthz`: healthy means the database takes a write now and has
//! not reported itself damaged since the last good integrity check.

use crate::clock::now_ms;
use crate::db::damage;
use crate::db::MayRunTwice;
use crate::outbox;
use crate::state::AppState;
use rocket::http::Status;
use rocket::serde::json::{json, Value};
use rocket::{get, routes, State};

pub fn routes() -> Vec<rocket::Route> {
    routes![healthz]
}

#[get("/healthz")]
async fn healthz(state: &State<AppState>) -> (Status, Value) {
    if damage::reason().is_some() && damage::recheck_due() {
        let verdict = state
            .db
            .writer
            .run(MayRunTwice::new(|c| Ok(c.lite().map(damage::quick_check))))
            .await;
        if let Ok(Some(Ok(()))) = verdict {
            damage::clear();
        }
    }
    if let Some(reason) = damage::reason() {
        return (
            Status::ServiceUnavailable,
            json!({"status": "damaged", "error": {"code": "database_damaged", "message": format!("the database reported itself damaged: {reason}; run `orderlink check` and restore the latest backup")}}),
        );
    }
    let now = now_ms();
    let probe = state
        .db
        .writer
        .run(MayRunTwice::new(move |c| {
            c.prepare_cached("UPDATE heartbeat SET beat_at = $1 WHERE id = 1")?
                .execute([now])?;
            outbox::depth(c)
        }))
        .await;
    match probe {
        Ok((queued, dead)) => (
            Status::Ok,
            json!({
                "status": "ok",
                "mode": if state.config.is_sandbox() { "sandbox" } else { "live" },
                "queued": queued,
                "dead": dead,
                "queue": {"queued": queued, "dead": dead},
            }),
        ),
        Err(e) => {
            log::error!("healthz: database does not take writes: {e}");
            (
                Status::ServiceUnavailable,
                json!({"status": "unavailable", "error": {"code": "unavailable", "message": "the database does not take writes"}}),
            )
        }
    }
}
