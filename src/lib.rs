//! orderlink: a paid order becomes a WhatsApp confirmation and a forwardable
//! link that brings an elder's chat back to the order.

pub mod admin_view;
pub mod app;
pub mod cli;
pub mod clicks;
pub mod clock;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod gateways;
pub mod held_payments;
pub mod ids;
pub mod inbound;
pub mod links;
pub mod logging;
pub mod metrics;
pub mod outbox;
pub mod pacer;
pub mod payments;
pub mod periodic;
pub mod pg;
pub mod pg_tls;
pub mod raw_body;
pub mod roster;
pub mod routes;
pub mod sender;
pub mod signature;
pub mod state;
pub mod template_health;
pub mod token_cache;
pub mod whatsapp;
