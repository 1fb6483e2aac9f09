//! Black-box tests of the `orderlink` binary: spawned as a child process on a
//! fresh database, driven over HTTP, with a fake WhatsApp Graph API.

mod admin;
mod admin_page;
mod admin_page_seed;
mod cost;
mod delivery;
mod elder_chat;
mod faults;
mod first_hour;
mod gateways;
mod health;
mod invite;
mod lifecycle;
mod logging;
mod metrics;
mod multi;
mod payment_webhook;
mod postgres;
mod postgres_outage;
mod postgres_prod;
mod postgres_store;
mod properties;
mod reliability;
mod sandbox;
mod support;
mod template_health;
mod window;
