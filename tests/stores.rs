//! Nothing is lost when the stores are down: a server whose history store is a PostgreSQL
//! cluster and whose blob storage is an Azurite emulator — both private to the test, so they
//! can be stopped and started — takes SIPp calls that leave voicemail and call recordings
//! while both are stopped, is killed with SIGKILL holding a full spool, starts again with the
//! stores still down, and once they are back every call record, voicemail message and
//! recording arrives exactly once, with its audio intact.
//!
//! Needs `SWITCHYARD_TEST_PG_BIN` (initdb, pg_ctl) and `SWITCHYARD_TEST_AZURITE_BIN`
//! (azurite-blob), which `integration/services/start.sh` prints; skipped without them unless
//! `SWITCHYARD_REQUIRE_PEERS=1`.

mod common;

use common::postgres::PrivatePostgres;
use common::*;
use reqwest::blocking::Client;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use switchyard::blob::{BlobOptions, BlobStore};

fn tool(var: &str) -> Option<PathBuf> {
    match std::env::var(var) {
        Ok(v) => Some(PathBuf::from(v)),
        Err(_) => {
            switchyard::test_support::peer_missing(&format!(
                "{var} (integration/services/start.sh prints it)"
            ));
            None
        }
    }
}

/// An Azurite blob emulator of the test's own, with its data in a folder that outlives a
/// restart.
struct PrivateAzurite {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl PrivateAzurite {
    fn start_new(bin: PathBuf, port: u16) -> PrivateAzurite {
        let mut a = PrivateAzurite {
            bin,
            dir: tempfile::tempdir().expect("tmp"),
            port,
            child: None,
        };
        a.start();
        let out = Command::new("python3")
            .arg(repo().join("integration/services/azurite_container.py"))
            .arg(port.to_string())
            .arg("switchyard")
            .output()
            .expect("python3");
        assert!(out.status.success(), "create container: {out:?}");
        a
    }

    fn start(&mut self) {
        let child = Command::new(&self.bin)
            .args([
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                &self.port.to_string(),
            ])
            .arg("--location")
            .arg(self.dir.path())
            .args([
                "--skipApiVersionCheck",
                "--loose",
                "--silent",
                "--disableTelemetry",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("azurite");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "azurite did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops it the way a service manager would (SIGTERM: it saves its metadata and exits).
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_gently(&mut c, Duration::from_secs(15));
        }
    }

    fn options(&self) -> BlobOptions {
        BlobOptions {
            endpoint: self.endpoint(),
            use_emulator: true,
            ..BlobOptions::default()
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/devstoreaccount1", self.port)
    }
}

impl Drop for PrivateAzurite {
    fn drop(&mut self) {
        self.stop();
    }
}

fn get(http: &Client, port: u16, path: &str) -> reqwest::blocking::Response {
    http.get(format!("http://127.0.0.1:{port}{path}"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .expect("GET")
}

/// A Prometheus sample's value (`name{labels}` as written).
fn metric(http: &Client, port: u16, sample: &str) -> Option<u64> {
    let text = get(http, port, "/metrics").text().ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
}

fn wait_for(what: &str, within: Duration, f: impl FnMut() -> bool) {
    wait_for_or(what, within, String::new, f)
}

/// [`wait_for`], saying `context()` when it times out.
fn wait_for_or(
    what: &str,
    within: Duration,
    context: impl Fn() -> String,
    mut f: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting for {what}\n{}", context());
}

/// One call to voicemail: silence through the greeting (~5.4 s), then a 2 s tone. Recorded
/// on demand through the admin API as soon as it is up, so the call recording and the
/// voicemail recording run side by side.
fn leave_message(server: &Server, p: &Ports, freq: f32) {
    let recorder = record_first_call(p.api);
    let mut audio = vec![0i16; 8000 * 6];
    audio.extend(sine_wave(freq, 2.0));
    audio.extend(vec![0i16; 4000]);
    let (ok, out) = sipp_with_audio(
        server,
        p,
        "media_stream.xml",
        Some(&audio),
        &["-s", "+15550300", "-d", "8500"],
    );
    assert!(ok, "{out}\n{}", server.log_text());
    assert_eq!(recorder.join().expect("recorder"), 204, "recording started");
}

fn start_server(
    p: &Ports,
    data: tempfile::TempDir,
    pg: &PrivatePostgres,
    az: &PrivateAzurite,
) -> Server {
    let url = pg.url();
    let endpoint = az.endpoint();
    Server::start_in(
        p,
        &[
            ("SWITCHYARD_HISTORY_URL", url.as_str()),
            ("SWITCHYARD_HISTORY_FAILING_AFTER_SECS", "2"),
            ("SWITCHYARD_BLOB_URL", "az://switchyard"),
            ("SWITCHYARD_BLOB_ENDPOINT", endpoint.as_str()),
            ("SWITCHYARD_BLOB_USE_EMULATOR", "true"),
        ],
        data,
    )
}

#[test]
fn records_and_audio_survive_stopped_stores_and_a_killed_server() {
    if !peer_available("sipp") {
        return;
    }
    let (Some(pg_bin), Some(az_bin)) = (
        tool("SWITCHYARD_TEST_PG_BIN"),
        tool("SWITCHYARD_TEST_AZURITE_BIN"),
    ) else {
        return;
    };
    let p = ports();
    let pg = PrivatePostgres::start_new(pg_bin, p.sip + 15);
    let mut az = PrivateAzurite::start_new(az_bin, p.sip + 16);
    let mut server = start_server(&p, tempfile::tempdir().expect("tmp"), &pg, &az);
    let http = Client::new();
    assert_eq!(get(&http, p.api, "/health/ready").status().as_u16(), 200);
    // A short greeting (beep) keeps each call short.
    short_greeting(&server);

    pg.stop();
    az.stop();
    let tones = [500.0, 700.0, 900.0];
    for f in tones {
        leave_message(&server, &p, f);
    }
    // The node says it is not ready (a load balancer should prefer another), and its spool
    // holds what could not be written.
    wait_for("not ready", Duration::from_secs(20), || {
        get(&http, p.api, "/health/ready").status().as_u16() == 503
    });
    let reason: Value = get(&http, p.api, "/health/ready").json().expect("json");
    assert!(
        reason["reason"].as_str().unwrap_or("").contains("failing"),
        "{reason}"
    );
    let spool_figures = || {
        get(&http, p.api, "/metrics")
            .text()
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("switchyard_spool") || l.starts_with("switchyard_store"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    wait_for_or(
        "a full spool",
        Duration::from_secs(20),
        spool_figures,
        || {
            metric(&http, p.api, "switchyard_spool_depth{queue=\"history\"}").unwrap_or(0) >= 9
                && metric(&http, p.api, "switchyard_spool_depth{queue=\"blob\"}").unwrap_or(0) >= 6
        },
    );
    assert_eq!(
        get(&http, p.api, "/v1/tenants/demo/call-logs")
            .status()
            .as_u16(),
        503,
        "reads of a stopped store say so"
    );

    // SIGKILL: no drain, no goodbye. Then the same data directory, stores still down.
    let _ = server.child.kill();
    let _ = server.child.wait();
    let data = std::mem::replace(&mut server.data_dir, tempfile::tempdir().expect("tmp"));
    drop(server);
    let server = start_server(&p, data, &pg, &az);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        metric(&http, p.api, "switchyard_spool_depth{queue=\"history\"}").unwrap_or(0) >= 9,
        "the spool survived the kill"
    );

    pg.start();
    az.start();
    wait_for("the spool to drain", Duration::from_secs(90), || {
        metric(&http, p.api, "switchyard_spool_depth{queue=\"history\"}") == Some(0)
            && metric(&http, p.api, "switchyard_spool_depth{queue=\"blob\"}") == Some(0)
    });
    assert_eq!(get(&http, p.api, "/health/ready").status().as_u16(), 200);

    // Exactly once in the database.
    assert_eq!(
        pg.value(
            "SELECT COUNT(*) || '/' || COUNT(DISTINCT id) FROM call_records WHERE tenant = 'demo'"
        ),
        "3/3"
    );
    assert_eq!(
        pg.value("SELECT COUNT(*) FROM voicemail_messages WHERE tenant = 'demo'"),
        "3"
    );
    assert_eq!(
        pg.value("SELECT COUNT(*) FROM recordings WHERE tenant = 'demo'"),
        "3"
    );
    // Exactly once in blob storage: three messages and three recordings, nothing else.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let blobs = BlobStore::open("az://switchyard", &az.options()).expect("blob store");
    let keys = rt
        .block_on(blobs.list("tenants/demo/"))
        .expect("list blobs");
    let vm: Vec<&String> = keys
        .iter()
        .filter(|k| k.contains("/voicemail/100/"))
        .collect();
    let rec: Vec<&String> = keys.iter().filter(|k| k.contains("/recordings/")).collect();
    assert_eq!((vm.len(), rec.len(), keys.len()), (3, 3, 6), "{keys:?}");

    // The audio is the callers' audio: each message holds its caller's tone, as stored.
    let mut heard: Vec<f32> = vm
        .iter()
        .map(|k| {
            let b = rt.block_on(blobs.get_bytes(k)).expect("voicemail blob");
            tone_after_onset(&wav_samples(&b))
        })
        .collect();
    heard.sort_by(f32::total_cmp);
    for (h, f) in heard.iter().zip(tones) {
        assert!((h - f).abs() < 15.0, "message tone {h} Hz, sent {f} Hz");
    }
    // The call logs through the API reference them, and each recording (from blob storage:
    // the node's copies are gone) holds the caller's tone in the caller's channel.
    let logs: Value = get(&http, p.api, "/v1/tenants/demo/call-logs")
        .json()
        .expect("json");
    let items = logs["items"].as_array().expect("items");
    assert_eq!(items.len(), 3, "{logs}");
    for r in items {
        assert!(r["voicemail"].as_str().is_some(), "{r}");
        let name = r["recording"].as_str().expect("recording");
        let file = name.rsplit('/').next().expect("file");
        assert!(!server
            .data_path()
            .join("recordings/demo")
            .join(file)
            .exists());
        let b = get(&http, p.api, &format!("/v1/tenants/demo/recordings/{file}"))
            .bytes()
            .expect("bytes");
        assert_eq!(
            &b[..4],
            b"RIFF",
            "{}",
            String::from_utf8_lossy(&b[..b.len().min(300)])
        );
        assert_eq!(u16::from_le_bytes([b[22], b[23]]), 2, "stereo");
        let caller: Vec<i16> = wav_samples(&b).chunks_exact(2).map(|f| f[0]).collect();
        // The tone comes ~6 s in; the first second holds a short burst from SIPp's stream
        // start (seen in every run, not looked into), so the search starts after it.
        let f = tone_after_onset(&caller[8000 * 3..]);
        assert!(
            tones.iter().any(|t| (t - f).abs() < 15.0),
            "recording's caller channel at {f} Hz"
        );
    }
    assert_no_local_leftovers(server.data_path());
}

/// The spool folders are empty once everything is stored.
fn assert_no_local_leftovers(data: &Path) {
    for q in ["spool/history", "spool/blob"] {
        let left: Vec<_> = std::fs::read_dir(data.join(q))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{q}: {left:?}");
    }
}

fn switchyard(data: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env("SWITCHYARD_DATA_DIR", data)
        .output()
        .expect("switchyard")
}

/// `switchyard backup` while the server runs (the server writes it), `switchyard restore`
/// into another data directory, and a server there has the configuration and the history.
#[test]
fn backup_of_a_running_server_restores_elsewhere() {
    let p = ports();
    let mut server = Server::start(&p, &[]);
    edit_demo(&server, |doc| {
        doc["settings"]["retention"]["call_logs_days"] = json!(400);
    });
    let http = Client::new();
    wait_for("the audit entry", Duration::from_secs(10), || {
        get(&http, p.api, "/v1/tenants/demo/audit")
            .json::<Value>()
            .is_ok_and(|v| v["items"].as_array().is_some_and(|a| !a.is_empty()))
    });
    let out_dir = tempfile::tempdir().expect("tmp");
    let file = out_dir.path().join("node.backup");
    let out = switchyard(server.data_path(), &["backup", &file.to_string_lossy()]);
    assert!(out.status.success(), "{out:?}\n{}", server.log_text());
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("by the running server"), "{said}");
    assert!(said.contains("history: included"), "{said}");
    // Restore refuses while a server holds the target's database.
    let busy = switchyard(server.data_path(), &["restore", &file.to_string_lossy()]);
    assert!(!busy.status.success());
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("stop the server first"),
        "{busy:?}"
    );
    server.terminate();
    assert!(server.wait_exit(Duration::from_secs(20)).is_some());

    let elsewhere = tempfile::tempdir().expect("tmp");
    let out = switchyard(elsewhere.path(), &["restore", &file.to_string_lossy()]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("history: restored"),
        "{out:?}"
    );
    let p2 = ports();
    let server = Server::start_in(&p2, &[], elsewhere);
    let doc: Value = get(&http, p2.api, "/v1/tenants/demo").json().expect("json");
    assert_eq!(doc["settings"]["retention"]["call_logs_days"], 400, "{doc}");
    let audit: Value = get(&http, p2.api, "/v1/tenants/demo/audit")
        .json()
        .expect("json");
    assert_eq!(audit["items"][0]["action"], "PUT", "{audit}");
    assert_eq!(audit["items"][0]["target"], "/v1/tenants/demo", "{audit}");
    drop(server);
}
