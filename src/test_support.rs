//! What tests that drive a real peer (SIPp, PJSUA2, Chromium, PostgreSQL, an S3 or Azure
//! emulator) do when the peer is missing. Not part of the server.
//!
//! A test without its peer cannot pass: under `SWITCHYARD_REQUIRE_PEERS=1` (CI) it fails;
//! otherwise it returns early, prints `SKIP`, and appends its name to the file named by
//! `SWITCHYARD_SKIP_LOG`, which `integration/test.sh` (the README's test command) counts and
//! prints at the end of the run, so a machine without SIPp never reports a clean pass.

use std::io::Write;

/// Call when `what` (a peer, a service) is missing; returns false so a test can write
/// `if !peer_ok { return }`. Panics under `SWITCHYARD_REQUIRE_PEERS=1`.
pub fn peer_missing(what: &str) -> bool {
    if std::env::var("SWITCHYARD_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!("{what} is required (SWITCHYARD_REQUIRE_PEERS=1) but missing");
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("unnamed test")
        .to_string();
    eprintln!("SKIP: {test}: {what} missing");
    if let Ok(path) = std::env::var("SWITCHYARD_SKIP_LOG") {
        let line = format!("{test}: {what}\n");
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            eprintln!("could not note the skip in {path}: {e}");
        }
    }
    false
}
