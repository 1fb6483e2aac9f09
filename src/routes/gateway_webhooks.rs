//! `POST /webhooks/razorpay`, `/webhooks/stripe`, `/webhooks/cashfree`
//! (§11). Each data guard verifies its gateway's signature and maps the
//! event; from there the path is §4's.

use super::payment_webhook::accept;
use crate::error::AppError;
use crate::gateways::cashfree::Cashfree;
use crate::gateways::razorpay::Razorpay;
use crate::gateways::stripe::Stripe;
use crate::gateways::Verified;
use crate::metrics::Metrics;
use crate::state::AppState;
use rocket::serde::json::Value;
use rocket::{post, routes, State};
use std::sync::Arc;

pub fn routes() -> Vec<rocket::Route> {
    routes![razorpay, stripe, cashfree]
}

#[post("/webhooks/razorpay", data = "<webhook>")]
async fn razorpay(
    webhook: Result<Verified<Razorpay>, AppError>,
    state: &State<AppState>,
    metrics: &State<Arc<Metrics>>,
) -> Result<Value, AppError> {
    accept(state, metrics, webhook?).await
}

#[post("/webhooks/stripe", data = "<webhook>")]
async fn stripe(
    webhook: Result<Verified<Stripe>, AppError>,
    state: &State<AppState>,
    metrics: &State<Arc<Metrics>>,
) -> Result<Value, AppError> {
    accept(state, metrics, webhook?).await
}

#[post("/webhooks/cashfree", data = "<webhook>")]
async fn cashfree(
    webhook: Result<Verified<Cashfree>, AppError>,
    state: &State<AppState>,
    metrics: &State<Arc<Metrics>>,
) -> Result<Value, AppError> {
    accept(state, metrics, webhook?).await
}
