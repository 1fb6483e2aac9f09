//! `cfg(orderlink_pg)`: set when the PostgreSQL tests can run (or must: CI).
//! libtest decides "ignored" at compile time only, so the tests that need a
//! PostgreSQL server carry `#[cfg_attr(not(orderlink_pg), ignore = "…")]`:
//! without a server they are reported as ignored, never counted as passed.
//! Under CI=true they are compiled in, and fail loudly without a server.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(orderlink_pg)");
    println!("cargo::rerun-if-env-changed=ORDERLINK_TEST_POSTGRES_URL");
    println!("cargo::rerun-if-env-changed=CI");
    println!("cargo::rerun-if-changed=build.rs");
    // The migrations are embedded at compile time (refinery): a new or changed
    // file must rebuild the crate.
    println!("cargo::rerun-if-changed=migrations");
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    if set("ORDERLINK_TEST_POSTGRES_URL") || std::env::var("CI").is_ok_and(|v| v == "true") {
        println!("cargo::rustc-cfg=orderlink_pg");
    }
}
