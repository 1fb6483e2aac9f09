//! `GET /healthz`: healthy means the database takes a write now.

use crate::clock::now_ms;
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
    let now = now_ms();
    let probe = state
        .db
        .writer
        .run(move |c| {
            c.prepare_cached("UPDATE heartbeat SET beat_at = ?1 WHERE id = 1")?
                .execute([now])?;
            outbox::depth(c)
        })
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
