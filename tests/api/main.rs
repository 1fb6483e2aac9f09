//! Black-box tests of the `orderlink` binary: spawned as a child process on a
//! fresh database, driven over HTTP, with a fake WhatsApp Graph API.

mod admin;
mod delivery;
mod elder_chat;
mod gateways;
mod invite;
mod lifecycle;
mod logging;
mod payment_webhook;
mod properties;
mod reliability;
mod sandbox;
mod support;
