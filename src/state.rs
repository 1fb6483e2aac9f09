//! What every route can reach, managed by Rocket: the configuration, the
//! database and a handle to nudge the sender.

use crate::clicks::ClickLog;
use crate::config::Config;
use crate::db::Db;
use crate::sender::Sender;
use std::sync::Arc;

pub struct AppState {
    pub config: Arc<Config>,
    pub db: Db,
    pub sender: Sender,
    pub clicks: ClickLog,
    /// Invite tokens the redirect has seen or a webhook has just made.
    pub tokens: crate::token_cache::TokenCache,
    /// When Meta's webhook next prunes week-old statuses and proofs.
    pub prune: crate::periodic::AtMostEvery,
}
