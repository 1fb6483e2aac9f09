//! The Bearer check shared by the admin API and `/metrics`.

/// The check of a Bearer-protected route (the admin API, `/metrics`): 404 when
/// no token is configured, as if the route did not exist; 401 for a missing or
/// wrong bearer, compared in constant time.
pub fn bearer(
    req: &rocket::Request<'_>,
    configured: impl Fn(&crate::config::Config) -> Option<&str>,
) -> rocket::request::Outcome<(), ()> {
    use rocket::http::Status;
    use rocket::request::Outcome;
    let Some(state) = req.rocket().state::<crate::state::AppState>() else {
        return Outcome::Error((Status::InternalServerError, ()));
    };
    let Some(expected) = configured(&state.config) else {
        return Outcome::Error((Status::NotFound, ()));
    };
    let given = req
        .headers()
        .get_one("Authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(token) if crate::signature::constant_time_eq(expected, token) => Outcome::Success(()),
        _ => Outcome::Error((Status::Unauthorized, ())),
    }
}
