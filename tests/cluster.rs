//! Several nodes, one configuration: three NATS servers (JetStream, clustered) started by the
//! test, three Switchyard nodes pointed at them, tenant changes through one node's admin API
//! reaching the others' call path (SIPp calls a number added through another node), writes
//! racing through two nodes, and NATS failing under them: one server of three, then all
//! (calls go on, writes answer 503, a node restarted meanwhile serves its snapshot), then
//! back (the next change reaches every node).

mod common;

use common::*;
use reqwest::blocking::Client;
use reqwest::StatusCode;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Three clustered NATS servers with JetStream, on loopback ports of the test's own.
struct NatsCluster {
    servers: Vec<Option<Child>>,
    client_ports: Vec<u16>,
    route_ports: Vec<u16>,
    dir: tempfile::TempDir,
    binary: PathBuf,
}

impl NatsCluster {
    fn start(binary: PathBuf, block: &Ports) -> NatsCluster {
        let mut c = NatsCluster {
            servers: vec![None, None, None],
            client_ports: vec![block.sip, block.sip + 2, block.sip + 3],
            route_ports: vec![block.sip + 5, block.sip + 6, block.sip + 7],
            dir: tempfile::tempdir().expect("tmp"),
            binary,
        };
        for i in 0..3 {
            c.start_one(i);
        }
        c
    }

    fn start_one(&mut self, i: usize) {
        let routes: Vec<String> = self
            .route_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect();
        let dir = self.dir.path().join(format!("n{i}"));
        std::fs::create_dir_all(&dir).expect("nats dir");
        let child = Command::new(&self.binary)
            .args(["-js", "-a", "127.0.0.1"])
            .args(["-p", &self.client_ports[i].to_string()])
            .args(["-sd", &dir.to_string_lossy()])
            .args(["-n", &format!("sy-nats-{i}")])
            .args(["--cluster_name", "sy-test"])
            .args([
                "--cluster",
                &format!("nats://127.0.0.1:{}", self.route_ports[i]),
            ])
            .args(["--routes", &routes.join(",")])
            .args([
                "-l",
                &self.dir.path().join(format!("n{i}.log")).to_string_lossy(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.servers[i] = Some(child);
        wait_for(
            &format!("NATS server {i} to accept connections"),
            Duration::from_secs(10),
            || TcpStream::connect(("127.0.0.1", self.client_ports[i])).is_ok(),
        );
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.servers[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn urls(&self) -> String {
        self.client_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn logs(&self) -> String {
        (0..3)
            .map(|i| {
                let text = std::fs::read_to_string(self.dir.path().join(format!("n{i}.log")))
                    .unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                format!(
                    "--- nats {i} ---\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..3 {
            self.kill(i);
        }
    }
}

fn nats_server() -> Option<PathBuf> {
    if peer_available("nats-server") {
        return Some(PathBuf::from("nats-server"));
    }
    // Debian installs it in /usr/sbin, which is not on every user's PATH.
    let sbin = Path::new("/usr/sbin/nats-server");
    sbin.exists().then(|| sbin.to_path_buf())
}

/// Polls `done` every 20 ms until it holds; panics after `within`.
fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

fn get_json(
    http: &Client,
    port: u16,
    path: &str,
) -> (StatusCode, Option<String>, serde_json::Value) {
    match http
        .get(format!("http://127.0.0.1:{port}{path}"))
        .bearer_auth(ADMIN_KEY)
        .timeout(Duration::from_secs(5))
        .send()
    {
        Ok(r) => {
            let status = r.status();
            let tag = r
                .headers()
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            (status, tag, r.json().unwrap_or(serde_json::Value::Null))
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            serde_json::Value::Null,
        ),
    }
}

fn demo(http: &Client, port: u16) -> (String, serde_json::Value) {
    let (status, tag, doc) = get_json(http, port, "/v1/tenants/demo");
    assert_eq!(status, StatusCode::OK, "GET demo on {port}: {doc}");
    (tag.expect("etag"), doc)
}

fn put_demo(http: &Client, port: u16, tag: &str, doc: &serde_json::Value) -> (StatusCode, String) {
    let r = http
        .put(format!("http://127.0.0.1:{port}/v1/tenants/demo"))
        .bearer_auth(ADMIN_KEY)
        .header("If-Match", tag)
        .timeout(Duration::from_secs(30))
        .json(doc)
        .send()
        .expect("PUT demo");
    (r.status(), r.text().unwrap_or_default())
}

/// The demo tenant's name as `port` serves it.
fn name_on(http: &Client, port: u16) -> String {
    let (_, _, doc) = get_json(http, port, "/v1/tenants/demo");
    doc["name"].as_str().unwrap_or_default().to_string()
}

/// Renames the demo tenant through `port`'s API (read, change, write with If-Match).
fn rename(http: &Client, port: u16, name: &str) -> (StatusCode, String) {
    let (tag, mut doc) = demo(http, port);
    doc["name"] = serde_json::json!(name);
    put_demo(http, port, &tag, &doc)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A trunk call to `+15550777` (added through another node as an echo number) on `node`.
fn call_number(node: &Server, ports: &Ports) -> (bool, String) {
    sipp(
        node,
        ports,
        "invite_trunk.xml",
        &["-m", "1", "-s", "+15550777", "-d", "200"],
    )
}

#[test]
fn tenant_config_over_nats_reaches_every_node_and_survives_nats_outages() {
    let Some(nats_bin) = nats_server() else {
        return;
    };
    if !peer_available("sipp") {
        return;
    }
    let nats_ports = ports();
    let mut nats = NatsCluster::start(nats_bin, &nats_ports);
    let urls = nats.urls();
    let bucket = format!("sy_test_{}", std::process::id());
    let env = |node: &'static str| -> Vec<(&'static str, String)> {
        vec![
            ("SWITCHYARD_CLUSTER_NATS_URL", urls.clone()),
            ("SWITCHYARD_CLUSTER_NODE_ID", node.to_string()),
            ("SWITCHYARD_CLUSTER_CONFIG_BUCKET", bucket.clone()),
            ("SWITCHYARD_CLUSTER_CONFIG_REPLICAS", "3".into()),
            // Room for JetStream's leader election after a NATS server is lost.
            ("SWITCHYARD_CLUSTER_REQUEST_TIMEOUT_SECS", "20".into()),
            // One secret for the cluster: ETags (and nonces) are checked on any node.
            (
                "SWITCHYARD_SIP_NONCE_SECRET",
                "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff".into(),
            ),
        ]
    };
    let start = |p: &Ports, node: &'static str, dir: Option<tempfile::TempDir>| {
        let owned = env(node);
        let vars: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
        match dir {
            Some(d) => Server::start_in(p, &vars, d),
            None => Server::start(p, &vars),
        }
    };
    let (pa, pb, pc) = (ports(), ports(), ports());
    let a = start(&pa, "node-a", None);
    let b = start(&pb, "node-b", None);
    let mut c = start(&pc, "node-c", None);
    let http = Client::new();
    let api = [a.api_port, b.api_port, c.api_port];
    let logs = |nodes: &[&Server]| -> String {
        nodes
            .iter()
            .map(|s| s.log_text())
            .collect::<Vec<_>>()
            .join("\n=====\n")
    };

    // Every node pushed its --demo tenant; one copy won and every node serves that one.
    let joined = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let states: Vec<serde_json::Value> = api
            .iter()
            .map(|p| get_json(&http, *p, "/v1/node").2["config"].clone())
            .collect();
        let tags: Vec<Option<String>> = api
            .iter()
            .map(|p| get_json(&http, *p, "/v1/tenants/demo").1)
            .collect();
        let ok = states
            .iter()
            .all(|s| s["state"] == "ok" && s["revision"].as_u64() > Some(0))
            && tags.iter().all(|t| t.is_some() && *t == tags[0]);
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nodes did not converge: {states:?} {tags:?}\n{}\n{}",
            nats.logs(),
            logs(&[&a, &b, &c])
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("three nodes joined and agreed in {:?}", joined.elapsed());

    // Config propagation: a change through node A, timed until the last node serves it.
    let mut took = Vec::new();
    for i in 0..20 {
        let name = format!("Demo {i}");
        let t0 = Instant::now();
        let (status, body) = rename(&http, a.api_port, &name);
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(name_on(&http, a.api_port), name, "A reads its own write");
        wait_for("the change on B and C", Duration::from_secs(10), || {
            name_on(&http, b.api_port) == name && name_on(&http, c.api_port) == name
        });
        took.push(t0.elapsed());
    }
    took.sort();
    println!(
        "config propagation (write through A → applied on the last of B and C), 20 writes: p50 {:?}, p99 {:?}, max {:?}",
        percentile(&took, 0.5),
        percentile(&took, 0.99),
        took[took.len() - 1]
    );

    // The call path follows: a number added through A answers on B and C.
    let (tag, mut doc) = demo(&http, a.api_port);
    doc["numbers"]
        .as_array_mut()
        .expect("numbers")
        .push(serde_json::json!({"number": "+15550777", "target": {"type": "echo"}}));
    let (status, body) = put_demo(&http, a.api_port, &tag, &doc);
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_for("the number on B and C", Duration::from_secs(10), || {
        [b.api_port, c.api_port].iter().all(|p| {
            get_json(&http, *p, "/v1/tenants/demo").2["numbers"]
                .as_array()
                .is_some_and(|n| n.iter().any(|n| n["number"] == "+15550777"))
        })
    });
    for (node, p) in [(&b, &pb), (&c, &pc)] {
        let (ok, out) = call_number(node, p);
        assert!(
            ok,
            "call to the number added through A failed:\n{out}\n{}",
            node.log_text()
        );
    }

    // Two admins write the same version through two nodes at once: one wins, the other is
    // told (412), nobody's change is lost silently.
    let (tag_b, doc_b) = demo(&http, b.api_port);
    let (tag_c, doc_c) = demo(&http, c.api_port);
    assert_eq!(tag_b, tag_c, "one document, one ETag on every node");
    let racers: Vec<_> = [
        (b.api_port, tag_b, doc_b, "from B"),
        (c.api_port, tag_c, doc_c, "from C"),
    ]
    .into_iter()
    .map(|(port, tag, mut doc, name)| {
        doc["name"] = serde_json::json!(name);
        let http = http.clone();
        std::thread::spawn(move || (put_demo(&http, port, &tag, &doc), name))
    })
    .collect();
    let results: Vec<((StatusCode, String), &str)> = racers
        .into_iter()
        .map(|h| h.join().expect("racer"))
        .collect();
    let mut codes: Vec<u16> = results.iter().map(|((s, _), _)| s.as_u16()).collect();
    codes.sort();
    assert_eq!(codes, vec![200, 412], "{results:?}");
    let winner = results
        .iter()
        .find(|((s, _), _)| *s == StatusCode::OK)
        .map(|(_, n)| n.to_string())
        .expect("winner");
    wait_for("the winner everywhere", Duration::from_secs(10), || {
        api.iter().all(|p| name_on(&http, *p) == winner)
    });

    // One NATS server of three lost: nothing an admin or a caller sees, except that the
    // first write waits out JetStream's leader election when the lost server led the bucket.
    nats.kill(0);
    let lost_one = Instant::now();
    let (status, body) = rename(&http, b.api_port, "one NATS down");
    assert_eq!(
        status,
        StatusCode::OK,
        "write with two of three NATS servers:\n{body}\n{}\n{}",
        nats.logs(),
        b.log_text()
    );
    println!(
        "one of three NATS servers killed: the next write answered 200 after {:?}",
        lost_one.elapsed()
    );
    wait_for(
        "the change with one NATS down",
        Duration::from_secs(10),
        || api.iter().all(|p| name_on(&http, *p) == "one NATS down"),
    );
    let (ok, out) = call_number(&a, &pa);
    assert!(ok, "call with one NATS server down failed:\n{out}");

    // Every NATS server gone: calls go on from the snapshot, writes answer 503 with a clear
    // problem, readiness stays ready and says the source is degraded.
    nats.kill(1);
    nats.kill(2);
    wait_for(
        "A to report its config source degraded",
        Duration::from_secs(15),
        || {
            let (status, _, h) = get_json(&http, a.api_port, "/health/ready");
            status == StatusCode::OK && h["config"]["state"] == "degraded"
        },
    );
    let (status, body) = rename(&http, a.api_port, "written while NATS is down");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("config-source-unavailable"), "{body}");
    assert_eq!(
        name_on(&http, a.api_port),
        "one NATS down",
        "no local write"
    );
    let metrics = http
        .get(format!("http://127.0.0.1:{}/metrics", a.api_port))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default();
    assert!(
        metrics.contains("switchyard_config_source_up 0"),
        "{metrics}"
    );
    let (ok, out) = call_number(&b, &pb);
    assert!(ok, "call with NATS down failed:\n{out}\n{}", b.log_text());

    // A node restarted while NATS is down serves from its snapshot.
    c.terminate();
    assert!(
        c.wait_exit(Duration::from_secs(20)).is_some(),
        "C did not stop"
    );
    let c_data = c.kill_keeping_data();
    let c = start(&pc, "node-c", Some(c_data));
    assert_eq!(name_on(&http, c.api_port), "one NATS down");
    let (ok, out) = call_number(&c, &pc);
    assert!(
        ok,
        "call to C restarted without NATS failed:\n{out}\n{}",
        c.log_text()
    );

    // NATS back: the next change reaches every node, C included.
    for i in 0..3 {
        nats.start_one(i);
    }
    let back = Instant::now();
    loop {
        let (status, body) = rename(&http, a.api_port, "after the outage");
        if status == StatusCode::OK {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(45),
            "writes did not resume after NATS came back: {status} {body}\n{}\n{}",
            nats.logs(),
            a.log_text()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    println!(
        "NATS restarted: writes accepted again after {:?}",
        back.elapsed()
    );
    wait_for(
        "the change after the outage on every node",
        Duration::from_secs(20),
        || {
            [a.api_port, b.api_port, c.api_port]
                .iter()
                .all(|p| name_on(&http, *p) == "after the outage")
        },
    );
    wait_for("every node up to date", Duration::from_secs(15), || {
        [a.api_port, b.api_port, c.api_port]
            .iter()
            .all(|p| get_json(&http, *p, "/v1/node").2["config"]["state"] == "ok")
    });
}
