//! One line per request, written by us instead of Rocket so it goes through
//! the masking logger (an invite URI carries a token).

use rocket::fairing::{Fairing, Info, Kind};
use rocket::{Data, Request, Response};
use std::time::Instant;

pub struct RequestLog;

struct Started(Instant);

#[rocket::async_trait]
impl Fairing for RequestLog {
    fn info(&self) -> Info {
        Info {
            name: "request log",
            kind: Kind::Request | Kind::Response,
        }
    }

    async fn on_request(&self, req: &mut Request<'_>, _: &mut Data<'_>) {
        req.local_cache(|| Started(Instant::now()));
    }

    async fn on_response<'r>(&self, req: &'r Request<'_>, res: &mut Response<'r>) {
        let started = req.local_cache(|| Started(Instant::now()));
        log::info!(
            target: "orderlink::http",
            "{} {} {} {:.1}ms",
            req.method(),
            req.uri().path(),
            res.status().code,
            started.0.elapsed().as_secs_f64() * 1000.0
        );
    }
}
