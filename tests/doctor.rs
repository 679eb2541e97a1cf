//! `switchyard doctor` as an operator runs it: a machine where everything fits says so and
//! exits 0; a port held by another program and a public address copied from documentation
//! are named, with what to do, and exit 1.

mod common;

use common::*;
use std::process::Command;

fn doctor(env: &[(&str, String)]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("doctor")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("run doctor");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn doctor_passes_a_machine_that_fits_and_names_what_does_not() {
    let p = ports();
    let data = tempfile::tempdir().expect("tmp");
    let env = |api: u16, public: &str| {
        vec![
            (
                "SWITCHYARD_DATA_DIR",
                data.path().join("d").display().to_string(),
            ),
            (
                "SWITCHYARD_SIP_LISTEN",
                format!("udp:127.0.0.1:{p},tcp:127.0.0.1:{p}", p = p.sip),
            ),
            ("SWITCHYARD_API_LISTEN", format!("127.0.0.1:{api}")),
            (
                "SWITCHYARD_MEDIA_RTP_PORTS",
                format!("{}-{}", p.rtp_first, p.rtp_first + 19),
            ),
            ("SWITCHYARD_SIP_PUBLIC_ADDRESS", public.to_string()),
        ]
    };
    let (ok, text) = doctor(&env(p.api, "127.0.0.1"));
    assert!(ok, "{text}");
    assert!(!text.contains("FAIL"), "{text}");
    for what in [
        "sip udp:",
        "sip tcp:",
        "api tcp:",
        "data_dir",
        "history",
        "blob storage",
        "media.rtp_ports",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("ok") && l.contains(what)),
            "{what}: {text}"
        );
    }
    // Another program holds the API port; the public address is a documentation address.
    let holder = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
    let held = holder.local_addr().expect("addr").port();
    let (ok, text) = doctor(&env(held, "192.0.2.10"));
    assert!(!ok, "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("FAIL")
            && l.contains("api tcp:")
            && l.contains("address in use")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("FAIL")
            && l.contains("192.0.2.10")
            && l.contains("documentation")),
        "{text}"
    );
}
