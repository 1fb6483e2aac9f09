//! One `free_port` for every harness that starts servers: the api tests'
//! support (and through it the browser tests), and the bench, which includes
//! this file with `#[path]` because a test helper has no place in the
//! product's library.

use std::net::TcpListener;

/// A port nobody listens on right now. Another process may take it before
/// the caller binds it; callers that must be sure check who answers.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free local port")
        .port()
}
