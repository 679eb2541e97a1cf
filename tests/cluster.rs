//! Several nodes, one configuration: three NATS servers (JetStream, clustered) started by the
//! test, three Switchyard nodes pointed at them, tenant changes through one node's admin API
//! reaching the others' call path (SIPp calls a number added through another node), writes
//! racing through two nodes, and NATS failing under them: one server of three, then all
//! (calls go on, writes answer 503, a node restarted meanwhile serves its snapshot), then
//! back (the next change reaches every node).

mod common;

use common::netns::Lab;
use common::*;
use reqwest::blocking::Client;
use reqwest::StatusCode;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One NATS server, or three clustered, with JetStream: on loopback ports of the test's own, or
/// one on each of a [`Lab`]'s hosts.
struct NatsCluster {
    servers: Vec<Option<Child>>,
    hosts: Vec<Host>,
    client_ports: Vec<u16>,
    route_ports: Vec<u16>,
    dir: tempfile::TempDir,
    binary: PathBuf,
}

impl NatsCluster {
    fn start(binary: PathBuf, block: &Ports, servers: usize) -> NatsCluster {
        Self::start_on(
            binary,
            vec![Host::local(); servers],
            [block.sip, block.sip + 2, block.sip + 3][..servers].to_vec(),
            [block.sip + 5, block.sip + 6, block.sip + 7][..servers].to_vec(),
        )
    }

    /// A server on each of `hosts`, clustered when more than one.
    fn start_on(
        binary: PathBuf,
        hosts: Vec<Host>,
        client_ports: Vec<u16>,
        route_ports: Vec<u16>,
    ) -> NatsCluster {
        let servers = hosts.len();
        let mut c = NatsCluster {
            servers: (0..servers).map(|_| None).collect(),
            hosts,
            client_ports,
            route_ports,
            dir: tempfile::tempdir().expect("tmp"),
            binary,
        };
        for i in 0..servers {
            c.start_one(i);
        }
        c
    }

    fn start_one(&mut self, i: usize) {
        let routes: Vec<String> = self
            .route_ports
            .iter()
            .zip(&self.hosts)
            .map(|(p, h)| format!("nats://{}:{p}", h.addr))
            .collect();
        let dir = self.dir.path().join(format!("n{i}"));
        std::fs::create_dir_all(&dir).expect("nats dir");
        let host = &self.hosts[i];
        let mut cmd = host.command(&self.binary);
        cmd.args(["-js", "-a", &host.addr])
            .args(["-p", &self.client_ports[i].to_string()])
            .args(["-sd", &dir.to_string_lossy()])
            .args(["-n", &format!("sy-nats-{i}")])
            .args([
                "-l",
                &self.dir.path().join(format!("n{i}.log")).to_string_lossy(),
            ]);
        if self.servers.len() > 1 {
            cmd.args(["--cluster_name", "sy-test"])
                .args([
                    "--cluster",
                    &format!("nats://{}:{}", host.addr, self.route_ports[i]),
                ])
                .args(["--routes", &routes.join(",")]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.servers[i] = Some(child);
        let addr = host.addr.clone();
        wait_for(
            &format!("NATS server {i} to accept connections"),
            Duration::from_secs(10),
            || TcpStream::connect((addr.as_str(), self.client_ports[i])).is_ok(),
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
            .zip(&self.hosts)
            .map(|(p, h)| format!("nats://{}:{p}", h.addr))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn logs(&self) -> String {
        (0..self.servers.len())
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
        for i in 0..self.servers.len() {
            self.kill(i);
        }
    }
}

fn nats_server() -> Option<PathBuf> {
    // Debian installs it in /usr/sbin, which is not on every user's PATH.
    let sbin = Path::new("/usr/sbin/nats-server");
    if sbin.exists() {
        return Some(sbin.to_path_buf());
    }
    peer_available("nats-server").then(|| PathBuf::from("nats-server"))
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
        .get(api_url(port, path))
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
        .put(api_url(port, "/v1/tenants/demo"))
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

/// The stores a cluster's nodes share, as in production: a PostgreSQL database of the test's
/// own for history and an S3 bucket of its own (moto) for audio. Needs the services
/// `integration/services/start.sh` describes; without them the test says so (a failure under
/// `SWITCHYARD_REQUIRE_PEERS`) and returns None.
struct SharedStores {
    postgres_base: String,
    database: String,
    vars: Vec<(String, String)>,
}

impl SharedStores {
    fn create(tag: &str) -> Option<SharedStores> {
        let (Ok(pg), Ok(s3)) = (
            std::env::var("SWITCHYARD_TEST_POSTGRES_URL"),
            std::env::var("SWITCHYARD_TEST_S3_ENDPOINT"),
        ) else {
            switchyard::test_support::peer_missing(
                "PostgreSQL and an S3 server (SWITCHYARD_TEST_POSTGRES_URL, \
                 SWITCHYARD_TEST_S3_ENDPOINT: integration/services/start.sh)",
            );
            return None;
        };
        let database = format!("sy_cluster_{tag}");
        let out = Command::new("psql")
            .args([pg.as_str(), "-qAtc", &format!("CREATE DATABASE {database}")])
            .output()
            .expect("psql");
        assert!(out.status.success(), "CREATE DATABASE: {out:?}");
        let url = match pg.rfind('/') {
            Some(i) if i > "postgres://".len() => format!("{}/{database}", &pg[..i]),
            _ => format!("{pg}/{database}"),
        };
        let bucket = format!("sy-cluster-{}", tag.replace('_', "-"));
        let r = Client::new()
            .put(format!("{s3}/{bucket}"))
            .send()
            .expect("create S3 bucket");
        assert!(r.status().is_success(), "S3 bucket: {:?}", r.text());
        let vars = [
            ("SWITCHYARD_HISTORY_URL", url),
            ("SWITCHYARD_BLOB_URL", format!("s3://{bucket}")),
            ("SWITCHYARD_BLOB_ENDPOINT", s3),
            ("SWITCHYARD_BLOB_REGION", "us-east-1".into()),
            ("SWITCHYARD_BLOB_ACCESS_KEY_ID", "test".into()),
            ("SWITCHYARD_BLOB_SECRET_ACCESS_KEY", "test".into()),
            ("SWITCHYARD_BLOB_ALLOW_HTTP", "true".into()),
        ];
        Some(SharedStores {
            postgres_base: pg,
            database,
            vars: vars.map(|(k, v)| (k.to_string(), v)).to_vec(),
        })
    }

    fn vars(&self) -> Vec<(&str, &str)> {
        self.vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    /// One value from the shared history database.
    fn query(&self, sql: &str) -> String {
        let url = self
            .vars
            .iter()
            .find(|(k, _)| k == "SWITCHYARD_HISTORY_URL")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let out = Command::new("psql")
            .args([url.as_str(), "-qAtc", sql])
            .output()
            .expect("psql");
        assert!(out.status.success(), "{sql}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for SharedStores {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                self.postgres_base.as_str(),
                "-qAtc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database),
            ])
            .output();
    }
}

/// A Switchyard node (`--demo`) of the cluster using `nats`.
fn start_node(nats: &NatsCluster, p: &Ports, node: &str, dir: Option<tempfile::TempDir>) -> Server {
    start_node_with(nats, p, node, dir, &[])
}

/// [`start_node`] with more settings.
fn start_node_with(
    nats: &NatsCluster,
    p: &Ports,
    node: &str,
    dir: Option<tempfile::TempDir>,
    extra: &[(&str, &str)],
) -> Server {
    start_node_on(&Host::local(), nats, p, node, dir, extra)
}

/// [`start_node_with`] on `host`.
fn start_node_on(
    host: &Host,
    nats: &NatsCluster,
    p: &Ports,
    node: &str,
    dir: Option<tempfile::TempDir>,
    extra: &[(&str, &str)],
) -> Server {
    let urls = nats.urls();
    let replicas = nats.servers.len().to_string();
    // Per test: a test's nodes share their buckets, nobody else's.
    let tag = format!("{}_{}", std::process::id(), nats.client_ports[0]);
    let config_bucket = format!("sy_tenants_{tag}");
    let bindings_bucket = format!("sy_bindings_{tag}");
    let mut vars: Vec<(&str, &str)> = vec![
        ("SWITCHYARD_CLUSTER_NATS_URL", &urls),
        ("SWITCHYARD_CLUSTER_NODE_ID", node),
        ("SWITCHYARD_CLUSTER_CONFIG_BUCKET", &config_bucket),
        ("SWITCHYARD_CLUSTER_BINDINGS_BUCKET", &bindings_bucket),
        ("SWITCHYARD_CLUSTER_CONFIG_REPLICAS", &replicas),
        // Room for JetStream's leader election after a NATS server is lost.
        ("SWITCHYARD_CLUSTER_REQUEST_TIMEOUT_SECS", "20"),
        // One secret for the cluster: ETags (and nonces) are checked on any node.
        (
            "SWITCHYARD_SIP_NONCE_SECRET",
            "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        ),
    ];
    vars.extend_from_slice(extra);
    let dir = dir.unwrap_or_else(|| tempfile::tempdir().expect("tmp"));
    Server::start_on(host, p, &vars, dir)
}

/// Waits until every node in `api` applies the same tenant configuration.
fn wait_converged(http: &Client, api: &[u16], within: Duration) -> Result<Duration, String> {
    let t0 = Instant::now();
    loop {
        let states: Vec<serde_json::Value> = api
            .iter()
            .map(|p| get_json(http, *p, "/v1/node").2["config"].clone())
            .collect();
        let tags: Vec<Option<String>> = api
            .iter()
            .map(|p| get_json(http, *p, "/v1/tenants/demo").1)
            .collect();
        if states
            .iter()
            .all(|s| s["state"] == "ok" && s["revision"].as_u64() > Some(0))
            && tags.iter().all(|t| t.is_some() && *t == tags[0])
        {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > within {
            return Err(format!("nodes did not converge: {states:?} {tags:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
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
    let mut nats = NatsCluster::start(nats_bin, &nats_ports, 3);
    let (pa, pb, pc) = (ports(), ports(), ports());
    let a = start_node(&nats, &pa, "node-a", None);
    let b = start_node(&nats, &pb, "node-b", None);
    let mut c = start_node(&nats, &pc, "node-c", None);
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
    match wait_converged(&http, &api, Duration::from_secs(40)) {
        Ok(took) => println!("three nodes joined and agreed in {took:?}"),
        Err(e) => panic!("{e}\n{}\n{}", nats.logs(), logs(&[&a, &b, &c])),
    }

    // A tenant key made through A works on C; revoked through B, it works nowhere.
    let r = http
        .post(format!(
            "http://127.0.0.1:{}/v1/tenants/demo/keys",
            a.api_port
        ))
        .bearer_auth(ADMIN_KEY)
        .json(&serde_json::json!({"name": "crm", "read_only": true}))
        .send()
        .expect("POST key");
    assert_eq!(r.status(), StatusCode::CREATED);
    let made: serde_json::Value = r.json().expect("key");
    let tenant_key = made["key"].as_str().expect("key").to_string();
    let key_id = made["id"].as_str().expect("id").to_string();
    let with_key = |port: u16| {
        http.get(format!("http://127.0.0.1:{port}/v1/tenants/demo"))
            .bearer_auth(&tenant_key)
            .send()
            .map(|r| r.status())
            .unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
    };
    wait_for("the key on C", Duration::from_secs(10), || {
        with_key(c.api_port) == StatusCode::OK
    });
    let r = http
        .delete(format!(
            "http://127.0.0.1:{}/v1/tenants/demo/keys/{key_id}",
            b.api_port
        ))
        .bearer_auth(ADMIN_KEY)
        .send()
        .expect("DELETE key");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    wait_for(
        "the key revoked everywhere",
        Duration::from_secs(10),
        || api.iter().all(|p| with_key(*p) == StatusCode::UNAUTHORIZED),
    );

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
    let published = |s: &Server| -> String {
        s.log_text()
            .lines()
            .filter(|l| l.contains("published") || l.contains("refused") || l.contains("applied"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        codes,
        vec![200, 412],
        "{:?}\nB:\n{}\nC:\n{}",
        results
            .iter()
            .map(|((s, _), n)| (*s, *n))
            .collect::<Vec<_>>(),
        published(&b),
        published(&c)
    );
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
    let answered = lost_one.elapsed();
    wait_for(
        "the change with one NATS down",
        Duration::from_secs(30),
        || api.iter().all(|p| name_on(&http, *p) == "one NATS down"),
    );
    println!(
        "one of three NATS servers killed: the next write answered 200 after {answered:?}, every node served it after {:?}",
        lost_one.elapsed()
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
        metrics.contains("switchyard_config_source_up{node=\"node-a\"} 0"),
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
    let c = start_node(&nats, &pc, "node-c", Some(c_data));
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

/// A phone registers through node A; a carrier's call to its number arrives at node B, rings
/// it, and the caller hears its own tone back through the phone's echo. B's admin API lists a
/// call running on A (naming A) and hangs it up. Node A then dies: the registration outlives
/// it and B still reaches the phone.
#[test]
fn a_phone_registered_through_one_node_rings_for_a_call_at_another() {
    let Some(nats_bin) = nats_server() else {
        return;
    };
    if !peer_available("sipp") || !peer_available("tcpdump") {
        return;
    }
    let mut nats = NatsCluster::start(nats_bin, &ports(), 1);
    let (pa, pb) = (ports(), ports());
    // History in one PostgreSQL database, audio in one S3 bucket: what both nodes share.
    let Some(stores) = SharedStores::create(&format!("{}_{}", std::process::id(), pa.sip)) else {
        return;
    };
    let a = start_node_with(&nats, &pa, "node-a", None, &stores.vars());
    let b = start_node_with(&nats, &pb, "node-b", None, &stores.vars());
    let http = Client::new();
    if let Err(e) = wait_converged(&http, &[a.api_port, b.api_port], Duration::from_secs(30)) {
        panic!("{e}\n{}\n{}\n{}", nats.logs(), a.log_text(), b.log_text());
    }
    number_for_101(&http, &a, &b);

    // A prompt uploaded through A is served by B; deleted through A, B drops it.
    let prompt =
        |port: u16| format!("http://127.0.0.1:{port}/v1/tenants/demo/prompts/cluster-hello");
    let r = http
        .put(prompt(a.api_port))
        .bearer_auth(ADMIN_KEY)
        .header("Content-Type", "audio/wav")
        .body(pcm_wav(&tone_at(440.0, 8000, 1.0), 8000))
        .send()
        .expect("PUT prompt");
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text());
    let audio_on = |port: u16| {
        http.get(prompt(port))
            .bearer_auth(ADMIN_KEY)
            .send()
            .ok()
            .filter(|r| r.status() == StatusCode::OK)
            .and_then(|r| r.bytes().ok())
    };
    let uploaded = Instant::now();
    wait_for("the prompt on B", Duration::from_secs(20), || {
        audio_on(b.api_port).is_some()
    });
    println!(
        "prompt uploaded through A served by B after {:?}",
        uploaded.elapsed()
    );
    assert_eq!(audio_on(b.api_port), audio_on(a.api_port), "the same audio");
    let r = http
        .delete(prompt(a.api_port))
        .bearer_auth(ADMIN_KEY)
        .send()
        .expect("DELETE prompt");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    wait_for("the prompt gone from B", Duration::from_secs(10), || {
        http.get(prompt(b.api_port))
            .bearer_auth(ADMIN_KEY)
            .send()
            .is_ok_and(|r| r.status() == StatusCode::NOT_FOUND)
    });

    let phone = ports();
    let registered = Instant::now();
    let (ok, out) = sipp(
        &a,
        &phone,
        "register_only.xml",
        &["-m", "1", "-s", "101", "-au", "101", "-ap", "demo101"],
    );
    assert!(ok, "register through A: {out}");
    wait_for_101_on(&http, &b);
    println!(
        "registration through A usable on B after {:?}",
        registered.elapsed()
    );

    // A tenant's event stream on A shows the call B takes, named for B.
    let events_dir = tempfile::tempdir().expect("tmp");
    let events_file = events_dir.path().join("a.sse");
    let mut follow_a = std::process::Command::new("curl")
        .args(["-sN", "--max-time", "120", "-H"])
        .arg(format!("Authorization: Bearer {ADMIN_KEY}"))
        .arg(format!(
            "http://127.0.0.1:{}/v1/tenants/demo/events",
            a.api_port
        ))
        .stdout(std::fs::File::create(&events_file).expect("file"))
        .spawn()
        .expect("curl (integration/peers.sh installs it)");
    std::thread::sleep(Duration::from_millis(300));
    call_hears_echo("phone registered through A", &b, &pb, &phone);
    let on_a = || std::fs::read_to_string(&events_file).unwrap_or_default();
    wait_for(
        "B's call on A's event stream",
        Duration::from_secs(15),
        || {
            on_a()
                .lines()
                .any(|l| l.contains("\"event\":\"ended\"") && l.contains("\"node\":\"node-b\""))
        },
    );
    let _ = follow_a.kill();
    let _ = follow_a.wait();
    assert!(
        on_a()
            .lines()
            .any(|l| l.contains("\"event\":\"started\"") && l.contains("\"node\":\"node-b\"")),
        "{}",
        on_a()
    );

    // B's admin API lists a call running on A, naming A, and hangs it up. Meanwhile the
    // tenant may have one call at a time across the cluster.
    set_call_limit(&http, &a, &b, 1);
    let sip_a = a.sip_port;
    let caller = ports();
    let began = Instant::now();
    let long_call = std::thread::spawn(move || {
        sipp_at(
            sip_a,
            &caller,
            "invite_trunk.xml",
            &["-m", "1", "-s", "+15550100", "-d", "30000"],
        )
    });
    let mut listed = serde_json::Value::Null;
    wait_for("B to list the call on A", Duration::from_secs(10), || {
        let (_, _, page) = get_json(&http, b.api_port, "/v1/tenants/demo/calls");
        match page["items"].as_array().and_then(|i| i.first()) {
            Some(c) => {
                listed = c.clone();
                true
            }
            None => false,
        }
    });
    assert_eq!(listed["node"], "node-a", "{listed}");
    // B admits calls against A's count as A's heartbeat tells it, which may come a moment
    // after the shared call list shows the call (CI once probed in between).
    wait_for("B to hear A's call count", Duration::from_secs(15), || {
        let (_, _, view) = get_json(&http, b.api_port, "/v1/cluster");
        view["nodes"].as_array().is_some_and(|nodes| {
            nodes
                .iter()
                .any(|n| n["node"] == "node-a" && n["live_calls"].as_u64().unwrap_or(0) >= 1)
        })
    });
    std::thread::sleep(Duration::from_millis(500));
    // The tenant's one allowed call is the one on A: a call arriving at B is refused.
    let refused = invite_status(b.sip_port, "+15550100");
    assert!(
        refused.starts_with("SIP/2.0 503") && refused.contains("tenant call limit"),
        "B must count A's call against the tenant's limit of 1: {refused}\n{}",
        b.log_text()
    );
    let id = listed["id"].as_u64().expect("call id");
    let status = hang_up(&http, b.api_port, id);
    assert_eq!(status, StatusCode::NO_CONTENT);
    wait_for("the call to end on A", Duration::from_secs(10), || {
        get_json(&http, a.api_port, "/v1/tenants/demo/calls").2["items"]
            .as_array()
            .is_some_and(|i| i.is_empty())
    });
    let _ = long_call.join().expect("caller");
    assert!(
        began.elapsed() < Duration::from_secs(25),
        "the caller was not hung up on"
    );
    let status = hang_up(&http, b.api_port, id);
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a call that ended is gone everywhere"
    );
    // A's call ended: B takes the tenant's call again (once A's next heartbeat says so).
    let freed = Instant::now();
    let mut last = String::new();
    wait_for("B to admit a call again", Duration::from_secs(10), || {
        let (ok, out) = sipp(
            &b,
            &ports(),
            "invite_trunk.xml",
            &["-m", "1", "-s", "+15550100", "-d", "200"],
        );
        last = out;
        ok
    });
    println!(
        "a call ended on A freed the tenant's limit on B within {:?}",
        freed.elapsed()
    );
    set_call_limit(&http, &a, &b, 50);

    // Voicemail: a message left through A is announced to a subscription held by B, heard
    // through *97 on B, and saved there, which A then shows.
    short_greeting(&a);
    wait_for("the short greeting on B", Duration::from_secs(10), || {
        get_json(&http, b.api_port, "/v1/tenants/demo").2["mailboxes"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["greeting"] == "system/beep"))
    });
    let subscriber = {
        let (sip_port, p1) = (b.sip_port, ports());
        std::thread::spawn(move || {
            let args = ["-m", "1", "-s", "100", "-au", "100", "-ap", "demo100"];
            sipp_at(sip_port, &p1, "subscribe_mwi.xml", &args)
        })
    };
    std::thread::sleep(Duration::from_millis(1000));
    let left = Instant::now();
    let (ok, out) = leave_600hz_message(a.sip_port, &ports());
    assert!(ok, "deposit through A: {out}\n{}", a.log_text());
    let (ok, out) = subscriber.join().expect("subscriber");
    assert!(
        ok,
        "B's subscription must hear of A's message:\n{out}\n{}",
        b.log_text()
    );
    println!(
        "voicemail left through A announced by B {:?} after the deposit began",
        left.elapsed()
    );
    let (ok, out, heard) = listen_through_star97(b.sip_port, pb.rtp_first);
    assert!(ok, "*97 on B: {out}\n{}", b.log_text());
    assert!(
        has_a_second_of_600hz(&heard),
        "B did not play A's message ({} samples heard)\n{}",
        heard.len(),
        b.log_text()
    );
    let messages = format!(
        "http://127.0.0.1:{}/v1/tenants/demo/mailboxes/100/messages",
        a.api_port
    );
    // Mailbox 100's one message as A lists it.
    let message_on_a = || {
        http.get(&messages)
            .bearer_auth(ADMIN_KEY)
            .send()
            .ok()
            .and_then(|r| r.json::<serde_json::Value>().ok())
            .map(|l| l["items"][0].clone())
            .unwrap_or_default()
    };
    wait_for(
        "A to show the message saved on B",
        Duration::from_secs(10),
        || message_on_a()["folder"] == "saved",
    );

    // A change made on B while NATS is away survives B dying before NATS returns: B
    // publishes it when it is back, and A shows it (the bucket's older state does not win).
    let id = message_on_a()["id"]
        .as_str()
        .map(str::to_string)
        .expect("the message's id");
    nats.kill(0);
    let r = http
        .put(format!(
            "http://127.0.0.1:{}/v1/tenants/demo/mailboxes/100/messages/{id}",
            b.api_port
        ))
        .bearer_auth(ADMIN_KEY)
        .json(&serde_json::json!({"folder": "new"}))
        .send()
        .expect("PUT message");
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text());
    let dir = b.kill_keeping_data();
    nats.start_one(0);
    let b = start_node_with(&nats, &pb, "node-b", Some(dir), &stores.vars());
    wait_for(
        "A to show the change B made while NATS was away",
        Duration::from_secs(20),
        || message_on_a()["folder"] == "new",
    );
    // Restarted, B learns the registrations other nodes hold (the latest of each key, not
    // only changes from now on).
    wait_for_101_on(&http, &b);

    // A dies; what it registered lives on in the shared table until it expires.
    let _ = a.kill_keeping_data();
    call_hears_echo("after A was killed", &b, &pb, &phone);

    // Both nodes' call records are in the one database, each once: A's long call (and the
    // deposit) and B's calls.
    let recorded = |sql: &str| stores.query(sql).parse::<i64>().unwrap_or(-1);
    wait_for(
        "B's calls recorded in PostgreSQL",
        Duration::from_secs(20),
        || {
            recorded("SELECT COUNT(*) FROM call_records WHERE tenant = 'demo' AND to_number = '+15550101'") >= 2
        },
    );
    let (rows, distinct) = (
        recorded("SELECT COUNT(*) FROM call_records"),
        recorded("SELECT COUNT(DISTINCT call_id) FROM call_records"),
    );
    assert_eq!(rows, distinct, "a call recorded twice");
    assert!(
        recorded("SELECT COUNT(*) FROM call_records WHERE to_number = '+15550100'") >= 2,
        "A's long call and B's call after it, both in the shared history"
    );
    println!("{rows} call records from both nodes in PostgreSQL, each once");
}

/// Sets the demo tenant's `max_concurrent_calls` through `a` and waits until `b` has it.
fn set_call_limit(http: &Client, a: &Server, b: &Server, calls: u32) {
    let (tag, mut doc) = demo(http, a.api_port);
    doc["limits"]["max_concurrent_calls"] = serde_json::json!(calls);
    let (status, body) = put_demo(http, a.api_port, &tag, &doc);
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_for("the call limit on B", Duration::from_secs(10), || {
        get_json(http, b.api_port, "/v1/tenants/demo").2["limits"]["max_concurrent_calls"]
            == serde_json::json!(calls)
    });
}

/// The final answer to a trunk INVITE (no SDP) for `number` at `sip_port` (from 127.0.0.1).
fn invite_status(sip_port: u16, number: &str) -> String {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let me = sock.local_addr().expect("addr").port();
    let invite = format!(
        "INVITE sip:{number}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKlim{me}\r\nMax-Forwards: 70\r\nFrom: <sip:+15557654321@127.0.0.1>;tag=lim\r\nTo: <sip:{number}@127.0.0.1>\r\nCall-ID: limit-{me}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    );
    udp_exchange(&sock, sip_port, &invite, Duration::from_millis(1000))
        .into_iter()
        .find(|r| !r.starts_with("SIP/2.0 1"))
        .unwrap_or_default()
}

/// A carrier's call at `node` to +15550101 (user 101) rings the SIPp phone at `phone` (which
/// registered from there and answers echoing), and the caller hears its 1000 Hz tone back.
fn call_hears_echo(what: &str, node: &Server, node_ports: &Ports, phone: &Ports) {
    call_hears_echo_or_tell(what, node, node_ports, phone, &String::new)
}

/// [`call_hears_echo`], with `more` (another peer's log) in what a failure prints.
fn call_hears_echo_or_tell(
    what: &str,
    node: &Server,
    node_ports: &Ports,
    phone: &Ports,
    more: &dyn Fn() -> String,
) {
    let sip_port = node.sip_port;
    let phone = same_ports(phone);
    let callee = std::thread::spawn(move || {
        sipp_at(
            sip_port,
            &phone,
            "uas_answer.xml",
            &["-m", "1", "-rtp_echo"],
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    let cap = Capture::start(node_ports.rtp_first, node_ports.rtp_first + 19);
    let mut audio = sine_wave(1000.0, 2.0);
    audio.extend(vec![0i16; 8000]);
    let (ok, out) = sipp_with_audio(
        node,
        node_ports,
        "media_stream.xml",
        Some(&audio),
        &["-s", "+15550101", "-d", "3500"],
    );
    assert!(ok, "{what}: caller: {out}\n{}\n{}", node.log_text(), more());
    let (ok, out) = callee.join().expect("callee");
    assert!(
        ok,
        "{what}: the phone must be rung:\n{out}\n{}\n{}",
        node.log_text(),
        more()
    );
    let heard = heard_by(cap, node_ports);
    let start = heard
        .iter()
        .position(|s| s.unsigned_abs() > 2000)
        .unwrap_or_else(|| panic!("{what}: no tone came back\n{}", node.log_text()));
    let f = tone_frequency(&heard[start + 400..start + 8000]);
    assert!((f - 1000.0).abs() < 10.0, "{what}: caller heard {f} Hz");
}

/// DELETE of call `id` through the API at `port`.
fn hang_up(http: &Client, port: u16, id: u64) -> StatusCode {
    http.delete(format!(
        "http://127.0.0.1:{port}/v1/tenants/demo/calls/{id}"
    ))
    .bearer_auth(ADMIN_KEY)
    .send()
    .expect("DELETE")
    .status()
}

/// Number +15550101 reaches user 101: added through `a`, waited for on `b`.
fn number_for_101(http: &Client, a: &Server, b: &Server) {
    edit_demo(a, |doc| {
        doc["numbers"].as_array_mut().expect("numbers").push(
            serde_json::json!({"number": "+15550101", "target": {"type": "user", "extension": "101"}}),
        );
    });
    wait_for("the number on B", Duration::from_secs(10), || {
        get_json(http, b.api_port, "/v1/tenants/demo").2["numbers"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n["number"] == "+15550101"))
    });
}

/// Waits until node `b` knows a registration of user 101 (taken by any node).
fn wait_for_101_on(http: &Client, b: &Server) {
    wait_for("B to know the phone", Duration::from_secs(10), || {
        get_json(http, b.api_port, "/v1/tenants/demo/users/101/registrations")
            .2
            .as_array()
            .is_some_and(|l| !l.is_empty())
    });
}

/// The same ports again (a phone answers on the port it registered from).
fn same_ports(p: &Ports) -> Ports {
    Ports {
        sip: p.sip,
        api: p.api,
        sipp: p.sipp,
        sipp_media: p.sipp_media,
        rtp_first: p.rtp_first,
    }
}

/// Kamailio (Debian's) in front of a node, with `integration/kamailio/front.cfg`.
struct Kamailio {
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Kamailio {
    /// The tests' one-node proxy (`integration/kamailio/front.cfg`) in front of `node_port`.
    fn start(listen: &str, node_port: u16) -> Kamailio {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = std::fs::read_to_string(repo().join("integration/kamailio/front.cfg"))
            .expect("front.cfg")
            .replace("@LISTEN@", &format!("udp:{listen}"))
            .replace("@NODE@", &format!("sip:127.0.0.1:{node_port}"));
        let path = dir.path().join("front.cfg");
        std::fs::write(&path, cfg).expect("write cfg");
        Self::launch(&Host::local(), dir, &path, &[])
    }

    /// The shipped front door (`config/kamailio/kamailio.cfg`: dispatcher, probing, failover)
    /// on `host`, listening on `listen`, in front of the nodes at `nodes` (`addr:port`).
    fn dispatcher_on(host: &Host, listen: &str, nodes: &[String]) -> Kamailio {
        let dir = tempfile::tempdir().expect("tmp");
        let list = dir.path().join("dispatcher.list");
        let nodes: String = nodes.iter().map(|n| format!("1 sip:{n} 0 0\n")).collect();
        std::fs::write(&list, nodes).expect("dispatcher.list");
        let defines = [
            format!("LISTEN=udp:{listen}"),
            format!("DISPATCHER_LIST=\"{}\"", list.display()),
        ];
        Self::launch(
            host,
            dir,
            &repo().join("config/kamailio/kamailio.cfg"),
            &defines,
        )
    }

    fn launch(host: &Host, dir: tempfile::TempDir, cfg: &Path, defines: &[String]) -> Kamailio {
        let log = std::fs::File::create(dir.path().join("kamailio.log")).expect("log");
        let mut cmd = host.command(kamailio_binary());
        cmd.arg("-f")
            .arg(cfg)
            .args(["-DD", "-E", "-Y"])
            .arg(dir.path());
        for d in defines {
            cmd.arg("-A").arg(d);
        }
        let child = cmd
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start kamailio");
        let k = Kamailio {
            child: Some(child),
            dir,
        };
        wait_for("Kamailio to listen", Duration::from_secs(10), || {
            k.log().contains("Listening on")
        });
        std::thread::sleep(Duration::from_millis(300));
        k
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kamailio.log")).unwrap_or_default()
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGTERM: the main process stops its workers.
            stop_gently(&mut c, Duration::from_secs(5));
        }
    }
}

fn kamailio_binary() -> PathBuf {
    PathBuf::from("/usr/sbin/kamailio")
}

fn kamailio_available() -> bool {
    kamailio_binary().exists() || peer_available("kamailio")
}

/// Kamailio in front of node A at 127.0.0.2 (the nodes trust it as their proxy): a phone
/// registers through it (Kamailio adds Path with the phone's real address), a carrier's call
/// at node B goes to the phone along that Path, through Kamailio, and the caller hears its
/// tone echoed back. A carrier relayed by Kamailio is trusted as the demo's trunk by its own
/// address (127.0.0.1), which only its Via tells: the proxy's (127.0.0.2) is no trunk's.
#[test]
fn behind_kamailio_phones_are_reached_along_their_path_and_trunks_by_their_own_address() {
    let Some(nats_bin) = nats_server() else {
        return;
    };
    if !peer_available("sipp") || !peer_available("tcpdump") || !kamailio_available() {
        return;
    }
    let nats = NatsCluster::start(nats_bin, &ports(), 1);
    let (pa, pb) = (ports(), ports());
    let trust = [("SWITCHYARD_SIP_TRUSTED_PROXIES", "127.0.0.2")];
    let a = start_node_with(&nats, &pa, "node-a", None, &trust);
    let b = start_node_with(&nats, &pb, "node-b", None, &trust);
    let http = Client::new();
    if let Err(e) = wait_converged(&http, &[a.api_port, b.api_port], Duration::from_secs(30)) {
        panic!("{e}\n{}\n{}\n{}", nats.logs(), a.log_text(), b.log_text());
    }
    let front = format!("127.0.0.2:{}", ports().sip);
    let kamailio = Kamailio::start(&front, a.sip_port);
    number_for_101(&http, &a, &b);

    let phone = ports();
    let (ok, out) = sipp_to(
        &front,
        &phone,
        "register_only.xml",
        &["-m", "1", "-s", "101", "-au", "101", "-ap", "demo101"],
    );
    assert!(ok, "register through Kamailio: {out}\n{}", kamailio.log());
    wait_for_101_on(&http, &b);
    assert!(
        a.log_text().contains("path=1"),
        "A kept Kamailio's Path:\n{}",
        a.log_text()
    );
    call_hears_echo_or_tell("phone behind Kamailio, call at B", &b, &pb, &phone, &|| {
        kamailio.log()
    });

    let carrier = ports();
    let (ok, out) = sipp_to(
        &front,
        &carrier,
        "invite_trunk.xml",
        &["-m", "1", "-s", "+15550100", "-d", "500"],
    );
    assert!(
        ok,
        "a carrier relayed by Kamailio must be trusted by its own address:\n{out}\n{}\n{}",
        a.log_text(),
        kamailio.log()
    );
    assert!(
        a.log_text().contains("caller=trunk:sandbox"),
        "{}",
        a.log_text()
    );
}

/// The final answer to an OPTIONS (a load balancer's probe) at `sip_port`.
fn probe(sip_port: u16) -> String {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let me = sock.local_addr().expect("addr").port();
    let options = format!(
        "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKprobe{me}\r\nMax-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:127.0.0.1>\r\nCall-ID: probe-{me}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    udp_exchange(&sock, sip_port, &options, Duration::from_millis(500))
        .into_iter()
        .next()
        .unwrap_or_default()
}

/// `switchyard drain` with `args`, set up as on `node`'s machine: (exit 0, what it printed).
fn drain_cli(node: &Server, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("drain")
        .args(args)
        .env(
            "SWITCHYARD_API_LISTEN",
            format!("0.0.0.0:{}", node.api_port),
        )
        .env("SWITCHYARD_API_ADMIN_KEY", ADMIN_KEY)
        .output()
        .expect("switchyard drain");
    let mut said = String::from_utf8_lossy(&out.stdout).into_owned();
    said.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), said)
}

/// `node`'s state on the cluster page served by `port` ("" when it is not listed).
fn state_on_page(http: &Client, port: u16, node: &str) -> String {
    let (_, _, page) = get_json(http, port, "/v1/cluster");
    page["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["node"] == node))
        .and_then(|n| n["state"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// A node drained through its admin API answers OPTIONS and INVITEs with 503 (so a balancer
/// probing with OPTIONS moves new calls away) and /health/ready with 503, while the other
/// node's cluster page shows it draining; undrained it takes calls again. SIGKILLed, the
/// other node's page shows it gone within seconds; restarted, ready again.
#[test]
fn drained_and_dead_nodes_show_on_the_cluster_page() {
    let Some(nats_bin) = nats_server() else {
        return;
    };
    if !peer_available("sipp") {
        return;
    }
    let nats = NatsCluster::start(nats_bin, &ports(), 1);
    let (pa, pb) = (ports(), ports());
    let a = start_node(&nats, &pa, "node-a", None);
    let b = start_node(&nats, &pb, "node-b", None);
    let http = Client::new();
    if let Err(e) = wait_converged(&http, &[a.api_port, b.api_port], Duration::from_secs(30)) {
        panic!("{e}\n{}\n{}\n{}", nats.logs(), a.log_text(), b.log_text());
    }
    wait_for("A's page to show B ready", Duration::from_secs(10), || {
        state_on_page(&http, a.api_port, "node-b") == "ready"
    });
    let (_, _, page) = get_json(&http, a.api_port, "/v1/cluster");
    assert_eq!(page["this_node"], "node-a", "{page}");
    assert_eq!(page["nodes"][0]["state"], "ready", "{page}");
    assert!(probe(b.sip_port).starts_with("SIP/2.0 200"));

    // Drained through its API: probes and calls refused, live calls would go on.
    // `switchyard drain` on B's machine (its settings name the API and the admin key).
    let (ok, said) = drain_cli(&b, &["--wait", "10"]);
    assert!(
        ok && said.contains("draining") && said.contains("no live calls"),
        "switchyard drain: {said}"
    );
    let answer = probe(b.sip_port);
    assert!(
        answer.starts_with("SIP/2.0 503") && answer.contains("Retry-After:"),
        "OPTIONS to a draining node: {answer}"
    );
    let refused = invite_status(b.sip_port, "+15550100");
    assert!(refused.starts_with("SIP/2.0 503"), "INVITE: {refused}");
    let (status, _, ready) = get_json(&http, b.api_port, "/health/ready");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    assert_eq!(ready["status"], "draining", "{ready}");
    wait_for(
        "A's page to show B draining",
        Duration::from_secs(5),
        || state_on_page(&http, a.api_port, "node-b") == "draining",
    );
    let (ok, out) = short_call(&a);
    assert!(ok, "A takes calls meanwhile: {out}");

    // Undrained: takes calls again.
    let (ok, said) = drain_cli(&b, &["--off"]);
    assert!(ok && said.contains("taking calls"), "drain --off: {said}");
    assert!(probe(b.sip_port).starts_with("SIP/2.0 200"));
    let (ok, out) = short_call(&b);
    assert!(ok, "B takes calls again: {out}");
    wait_for(
        "A's page to show B ready again",
        Duration::from_secs(5),
        || state_on_page(&http, a.api_port, "node-b") == "ready",
    );

    // SIGKILLed: gone within seconds; restarted: ready again.
    let dir = b.kill_keeping_data();
    let killed = Instant::now();
    wait_for("A's page to show B gone", Duration::from_secs(15), || {
        state_on_page(&http, a.api_port, "node-b") == "gone"
    });
    let detected = killed.elapsed();
    let b = start_node(&nats, &pb, "node-b", Some(dir));
    let restarted = Instant::now();
    wait_for("A's page to show B back", Duration::from_secs(30), || {
        state_on_page(&http, a.api_port, "node-b") == "ready"
    });
    println!(
        "dead node shown gone after {detected:?}; restarted node shown ready after {:?}",
        restarted.elapsed()
    );
    assert!(probe(b.sip_port).starts_with("SIP/2.0 200"));

    // Tenant keys do not see the service's nodes.
    let tenant_key = http
        .post(format!(
            "http://127.0.0.1:{}/v1/tenants/demo/keys",
            a.api_port
        ))
        .bearer_auth(ADMIN_KEY)
        .json(&serde_json::json!({"name": "page", "read_only": true}))
        .send()
        .expect("key")
        .json::<serde_json::Value>()
        .expect("json")["key"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let r = http
        .get(format!("http://127.0.0.1:{}/v1/cluster", a.api_port))
        .bearer_auth(&tenant_key)
        .send()
        .expect("page");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

/// One short trunk call to the demo's +15550100 through `node`.
fn short_call(node: &Server) -> (bool, String) {
    sipp(
        node,
        &ports(),
        "invite_trunk.xml",
        &["-m", "1", "-s", "+15550100", "-d", "200"],
    )
}

/// SIPp's successful and failed calls, from the last row of its `-trace_stat` CSV.
fn sipp_counts(out: &str) -> (u64, u64) {
    let mut header: Vec<&str> = Vec::new();
    let mut last: Vec<&str> = Vec::new();
    for line in out.lines() {
        let fields: Vec<&str> = line.split(';').collect();
        if line.starts_with("StartTime;") {
            header = fields;
        } else if !header.is_empty() && fields.len() == header.len() {
            last = fields;
        }
    }
    let column = |name: &str| {
        header
            .iter()
            .position(|c| *c == name)
            .and_then(|i| last.get(i))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (column("SuccessfulCall(C)"), column("FailedCall(C)"))
}

/// The echo number (+15550600) called through the front door at `front` from the test's
/// address `from`: `calls` of 3 s at `rate` per second, each streaming a 1000 Hz tone, in a
/// thread of their own.
fn load_through(
    from: &str,
    front: &str,
    rate: u32,
    calls: u32,
) -> std::thread::JoinHandle<(bool, String)> {
    let (from, front) = (from.to_string(), front.to_string());
    std::thread::spawn(move || {
        let (rate, calls) = (rate.to_string(), calls.to_string());
        sipp_from(
            &from,
            &front,
            &ports(),
            "media_stream_loop.xml",
            Some(&sine_wave(1000.0, 1.0)),
            &[
                "-r",
                &rate,
                "-m",
                &calls,
                "-l",
                "100",
                "-s",
                "+15550600",
                "-d",
                "3000",
                "-timeout",
                "150s",
                // A proxy with several worker processes (Kamailio) can relay a 180 after the
                // 200 that followed it at once; a UA ignores such a late 180 (RFC 3261
                // §13.2.2.4), SIPp would abort the call. A message that is really wrong
                // still fails the call: it never completes.
                "-default_behaviors",
                "all,-abortunexp",
            ],
        )
    })
}

/// What the callers heard, stream by stream (one per call: a node's RTP port and SSRC), in a
/// capture of RTP from the nodes: (streams of a second or more that carry the 1000 Hz tone
/// back, such streams that don't).
fn echoed_streams(cap: Capture) -> (usize, usize) {
    let mut streams: std::collections::BTreeMap<(u16, u32), Vec<i16>> = Default::default();
    for d in cap.finish() {
        let p = &d.payload;
        // PCMU, 20 ms.
        if p.len() == 172 && p[0] >> 6 == 2 && p[1] & 0x7f == 0 {
            let ssrc = u32::from_be_bytes([p[8], p[9], p[10], p[11]]);
            streams
                .entry((d.src_port, ssrc))
                .or_default()
                .extend(p[12..].iter().map(|&b| ulaw_to_linear(b)));
        }
    }
    let (mut tone, mut not) = (0, 0);
    for samples in streams.values().filter(|s| s.len() >= 8000) {
        let heard = samples
            .iter()
            .position(|s| s.unsigned_abs() > 2000)
            .and_then(|start| samples.get(start + 400..start + 4400))
            .map(tone_frequency);
        match heard {
            Some(f) if (f - 1000.0).abs() < 15.0 => tone += 1,
            _ => not += 1,
        }
    }
    (tone, not)
}

/// An S3 server (moto) of the test's own at `addr:port` with one bucket, for nodes on a
/// [`Lab`]'s hosts (the machine's is on loopback, which they can't reach).
struct LabS3 {
    child: Child,
    endpoint: String,
}

impl LabS3 {
    fn start(addr: &str, port: u16, bucket: &str) -> LabS3 {
        let child = Command::new("python3")
            .args(["-m", "moto.server", "-H", addr, "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto");
        let s3 = LabS3 {
            child,
            endpoint: format!("http://{addr}:{port}"),
        };
        wait_for("moto to listen", Duration::from_secs(30), || {
            TcpStream::connect((addr, port)).is_ok()
        });
        let r = Client::new()
            .put(format!("{}/{bucket}", s3.endpoint))
            .send()
            .expect("create bucket");
        assert!(r.status().is_success(), "S3 bucket: {:?}", r.text());
        s3
    }
}

impl Drop for LabS3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the nodes' logs say of the calls SIPp's error log names (for a failure's message).
fn failed_calls_in_logs(sipp_out: &str, nodes: &[Option<Server>]) -> String {
    let ids: Vec<&str> = sipp_out
        .lines()
        .flat_map(|l| l.split(['\'', ' ']))
        .filter(|w| w.contains('@') && w.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .collect();
    let mut text = String::new();
    for node in nodes.iter().flatten() {
        for line in node.log_text().lines() {
            if ids.iter().any(|id| line.contains(id)) {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    format!("--- node log lines naming {ids:?} ---\n{text}")
}

/// SIPp's successful and failed calls of a load, printed and returned.
fn load_result(what: &str, load: std::thread::JoinHandle<(bool, String)>) -> (u64, u64, String) {
    let (_, out) = load.join().expect("load");
    let (ok, failed) = sipp_counts(&out);
    println!("{what}: {failed} of {} calls failed", ok + failed);
    (ok, failed, out)
}

/// The service as separate hosts, network namespaces made by the test: Kamailio (the shipped
/// `config/kamailio/kamailio.cfg`: dispatcher, probing, failover) on one, three Switchyard
/// nodes each with a NATS server (clustered, JetStream R3) on three others; the carrier, a
/// PJSUA2 phone and the shared stores (a PostgreSQL and an S3 server of the test's own) on
/// the test's side of the bridge. Calls to the echo number arrive through Kamailio all along,
/// each streaming a tone, and what comes back is checked as audio:
/// - one node SIGKILLed under load: at most its own calls and one new call fail;
/// - one node's cable cut under load (a partition: node and its NATS server unreachable, both
///   still running): at most its calls and one new call fail; mended, it rejoins;
/// - a rolling upgrade (each node in turn SIGTERMed, drained, started again) under load: no
///   call fails;
/// - every completed call's record is in PostgreSQL once;
/// - the cluster page shows a lost node gone within seconds, and ready after;
/// - a phone registered through Kamailio is rung by whichever node takes a carrier's call, and
///   calls out through each node in turn, hearing the carrier's echo.
#[test]
fn behind_the_kamailio_dispatcher_a_lost_node_costs_its_calls_and_upgrades_cost_none() {
    let Some(nats_bin) = nats_server() else {
        return;
    };
    if !peer_available("sipp")
        || !peer_available("tcpdump")
        || !kamailio_available()
        || !pjsua_available()
    {
        return;
    }
    let Ok(pg_bin) = std::env::var("SWITCHYARD_TEST_PG_BIN") else {
        switchyard::test_support::peer_missing(
            "SWITCHYARD_TEST_PG_BIN (integration/services/start.sh prints it)",
        );
        return;
    };
    let Some(lab) = Lab::create(&["k", "a", "b", "c"]) else {
        return;
    };
    let outside = lab.gateway().addr;
    let hosts = [lab.host("a"), lab.host("b"), lab.host("c")];
    let names = ["node-a", "node-b", "node-c"];
    let node_ports = [ports(), ports(), ports()];
    let block = ports();
    let pg = postgres::PrivatePostgres::start_new_at(pg_bin.into(), &outside, block.sip + 15);
    let s3 = LabS3::start(&outside, block.sip + 16, "switchyard");
    let nats = NatsCluster::start_on(nats_bin, hosts.to_vec(), vec![4222; 3], vec![6222; 3]);
    let kamailio_host = lab.host("k");
    let history = pg.url();
    let vars: Vec<(&str, &str)> = vec![
        ("SWITCHYARD_HISTORY_URL", &history),
        ("SWITCHYARD_BLOB_URL", "s3://switchyard"),
        ("SWITCHYARD_BLOB_ENDPOINT", &s3.endpoint),
        ("SWITCHYARD_BLOB_REGION", "us-east-1"),
        ("SWITCHYARD_BLOB_ACCESS_KEY_ID", "test"),
        ("SWITCHYARD_BLOB_SECRET_ACCESS_KEY", "test"),
        ("SWITCHYARD_BLOB_ALLOW_HTTP", "true"),
        // Calls through the front door come from Kamailio: the per-source limits are the
        // proxy's, which trusted proxies are exempt from.
        ("SWITCHYARD_SIP_TRUSTED_PROXIES", &kamailio_host.addr),
        // Each node is a host of its own: room for every call of the load on one node.
        ("SWITCHYARD_MEDIA_RTP_PORTS", "20000-20199"),
    ];
    let start = |i: usize, dir: Option<tempfile::TempDir>| {
        start_node_on(&hosts[i], &nats, &node_ports[i], names[i], dir, &vars)
    };
    let mut nodes: Vec<Option<Server>> = (0..3).map(|i| Some(start(i, None))).collect();
    let api = |nodes: &[Option<Server>]| -> Vec<u16> {
        nodes.iter().flatten().map(|n| n.api_port).collect()
    };
    let http = Client::new();
    if let Err(e) = wait_converged(&http, &api(&nodes), Duration::from_secs(60)) {
        panic!("{e}\n{}", nats.logs());
    }
    // The carrier: calls in from the test's address, and takes calls out at a port there.
    let carrier = ports();
    edit_demo(nodes[0].as_ref().expect("A"), |doc| {
        doc["trunks"][0]["allowed_sources"] = serde_json::json!([outside]);
        doc["trunks"]
            .as_array_mut()
            .expect("trunks")
            .push(serde_json::json!({
                "id": "carrier", "address": format!("{outside}:{}", carrier.sipp),
                "allowed_prefixes": ["+1"]
            }));
        doc["outbound_routes"] =
            serde_json::json!([{"name": "nanp", "prefix": "+1", "trunk": "carrier"}]);
        doc["numbers"].as_array_mut().expect("numbers").push(
            serde_json::json!({"number": "+15550101", "target": {"type": "user", "extension": "101"}}),
        );
    });
    if let Err(e) = wait_converged(&http, &api(&nodes), Duration::from_secs(20)) {
        panic!("{e}\n{}", nats.logs());
    }
    let front = format!("{}:5060", kamailio_host.addr);
    let members: Vec<String> = (0..3)
        .map(|i| format!("{}:{}", hosts[i].addr, node_ports[i].sip))
        .collect();
    let kamailio = Kamailio::dispatcher_on(&kamailio_host, &front, &members);
    // The page of any node that runs.
    let state_of = |nodes: &[Option<Server>], name: &str| {
        api(nodes)
            .first()
            .map(|p| state_on_page(&http, *p, name))
            .unwrap_or_default()
    };
    for name in names {
        wait_for("every node on the page", Duration::from_secs(10), || {
            state_of(&nodes, name) == "ready"
        });
    }
    // Kamailio's first probes.
    std::thread::sleep(Duration::from_secs(2));

    // Someone who is not a node sends a Path-style Route (received= naming a victim): the
    // front door refuses it rather than relay there.
    let victim = std::net::UdpSocket::bind((outside.as_str(), 0)).expect("victim");
    victim
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .expect("timeout");
    let victim_port = victim.local_addr().expect("addr").port();
    let attacker = std::net::UdpSocket::bind((outside.as_str(), 0)).expect("attacker");
    let me = attacker.local_addr().expect("addr").port();
    let forged = format!(
        "INVITE sip:101@{outside} SIP/2.0\r\nVia: SIP/2.0/UDP {outside}:{me};branch=z9hG4bKforged\r\nRoute: <sip:{front};lr;received=sip:{outside}:{victim_port}>\r\nMax-Forwards: 70\r\nFrom: <sip:x@{outside}>;tag=f\r\nTo: <sip:101@{outside}>\r\nCall-ID: forged-{me}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    );
    attacker
        .send_to(forged.as_bytes(), &front)
        .expect("send forged");
    attacker
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    let answer = attacker
        .recv_from(&mut buf)
        .map(|(n, _)| String::from_utf8_lossy(&buf[..n]).into_owned())
        .unwrap_or_default();
    assert!(
        answer.starts_with("SIP/2.0 403"),
        "a forged Path-style Route must be refused: {answer:?}\n{}",
        kamailio.log()
    );
    assert!(
        victim.recv_from(&mut buf).is_err(),
        "the front door relayed a forged request to the address it named"
    );

    // RTP from the nodes to the callers, for the whole run.
    let cap = Capture::start_on(
        &lab.interface(),
        &format!(
            "udp and dst host {outside} and src net {} and not src port 5060",
            lab.subnet()
        ),
    );
    // Calls on `name` now, as any node's listing (which gathers every node's) tells.
    let calls_on = |nodes: &[Option<Server>], name: &str| {
        let port = api(nodes).first().copied().unwrap_or(0);
        let (_, _, listed) = get_json(&http, port, "/v1/tenants/demo/calls");
        listed["items"]
            .as_array()
            .map(|calls| calls.iter().filter(|c| c["node"] == name).count())
            .unwrap_or(0) as u64
    };

    // A node lost mid-load.
    let load = load_through(&outside, &front, 4, 60);
    std::thread::sleep(Duration::from_secs(6));
    let on_victim = calls_on(&nodes, "node-c");
    let victim = nodes[2].take().expect("node C");
    let dir = victim.kill_keeping_data();
    let killed = Instant::now();
    wait_for("the page to show C gone", Duration::from_secs(15), || {
        state_of(&nodes, "node-c") == "gone"
    });
    let detected_kill = killed.elapsed();
    let (ok_kill, failed_kill, out) = load_result("node SIGKILLed under load", load);
    println!(
        "  {on_victim} calls were on it; the cluster page showed it gone after {detected_kill:?}"
    );
    assert_eq!(ok_kill + failed_kill, 60, "{out}");
    assert!(
        failed_kill <= on_victim + 1,
        "only the lost node's calls (and one new call) may fail: {failed_kill} failed, \
         {on_victim} were on it\n{out}\n{}",
        kamailio.log()
    );
    nodes[2] = Some(start(2, Some(dir)));
    wait_for("C back on the page", Duration::from_secs(30), || {
        state_of(&nodes, "node-c") == "ready"
    });
    std::thread::sleep(Duration::from_secs(2));

    // A node cut off mid-load: a partition, with the node and its NATS server still running.
    let load = load_through(&outside, &front, 4, 60);
    std::thread::sleep(Duration::from_secs(6));
    let on_cut = calls_on(&nodes, "node-b");
    lab.cut("b");
    let cut = Instant::now();
    let others = |nodes: &[Option<Server>]| {
        state_on_page(&http, nodes[0].as_ref().expect("A").api_port, "node-b")
    };
    wait_for("A's page to show B gone", Duration::from_secs(15), || {
        others(&nodes) == "gone"
    });
    let detected_cut = cut.elapsed();
    let (ok_cut, failed_cut, out) = load_result("node cut off under load", load);
    println!("  {on_cut} calls were on it; the cluster page showed it gone after {detected_cut:?}");
    assert_eq!(ok_cut + failed_cut, 60, "{out}");
    assert!(
        failed_cut <= on_cut + 1,
        "only the cut-off node's calls (and one new call) may fail: {failed_cut} failed, \
         {on_cut} were on it\n{out}\n{}",
        kamailio.log()
    );
    lab.mend("b");
    let mended = Instant::now();
    wait_for("B ready again on A's page", Duration::from_secs(60), || {
        others(&nodes) == "ready"
    });
    println!("B mended: ready on A's page after {:?}", mended.elapsed());
    std::thread::sleep(Duration::from_secs(2));

    // A rolling upgrade under load: each node in turn stops (SIGTERM: drains, exits) and
    // starts again.
    let load = load_through(&outside, &front, 4, 160);
    let began = Instant::now();
    for i in 0..3 {
        std::thread::sleep(Duration::from_secs(3));
        let mut node = nodes[i].take().expect("node");
        node.terminate();
        let exited = node.wait_exit(Duration::from_secs(30));
        assert!(
            exited.is_some_and(|s| s.success()),
            "{} did not drain and exit 0: {exited:?}\n{}",
            names[i],
            node.log_text()
        );
        let dir = node.kill_keeping_data();
        nodes[i] = Some(start(i, Some(dir)));
        wait_for("the node back on the page", Duration::from_secs(30), || {
            state_of(&nodes, names[i]) == "ready"
        });
        // Kamailio's next probe puts it back in rotation.
        std::thread::sleep(Duration::from_secs(2));
    }
    let upgraded = began.elapsed();
    let (ok_roll, failed_roll, out) =
        load_result(&format!("rolling upgrade in {upgraded:?} under load"), load);
    assert_eq!(
        (ok_roll, failed_roll),
        (160, 0),
        "no call may fail in a rolling upgrade\n{out}\n{}\n{}",
        kamailio.log(),
        failed_calls_in_logs(&out, &nodes)
    );

    // What the callers heard.
    let completed = ok_kill + ok_cut + ok_roll;
    let (with_tone, without) = echoed_streams(cap);
    println!("{with_tone} calls heard their tone echoed, {without} heard something else");
    assert!(
        with_tone as u64 >= completed && without == 0,
        "every completed call ({completed}) must hear its tone: {with_tone} did, {without} \
         streams held something else"
    );

    // Every completed call recorded once, whichever node took it (a killed node's spool
    // delivers after its restart, a cut-off node's after the cable is back).
    let recorded = |sql: &str| pg.value(sql).parse::<u64>().unwrap_or(0);
    let answered = "SELECT COUNT(*) FROM call_records WHERE to_number = '+15550600' AND disposition = 'answered'";
    let deadline = Instant::now() + Duration::from_secs(60);
    while recorded(answered) < completed {
        assert!(
            Instant::now() < deadline,
            "{} of {completed} completed calls recorded; by disposition and number:\n{}",
            recorded(answered),
            pg.value(
                "SELECT string_agg(d || ' ' || t || ' ' || n, ', ') FROM \
                 (SELECT disposition d, to_number t, COUNT(*) n FROM call_records GROUP BY 1, 2) x"
            )
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // One INVITE may be taken by two nodes: the first got it just before its cable was cut,
    // its answer never reached Kamailio, which then tried another node. The first node's
    // attempt ends unconfirmed and is recorded as such (a second record of that Call-ID, not
    // a completed call recorded twice). Completed calls (ended by the caller's BYE) must each
    // be recorded exactly once.
    let doubled = pg.value(
        "SELECT COALESCE(string_agg(call_id || ' ' || disposition || ' ' || hangup_cause, ', '), '') \
         FROM call_records WHERE call_id IN \
         (SELECT call_id FROM call_records GROUP BY call_id HAVING COUNT(*) > 1)",
    );
    if !doubled.trim().is_empty() {
        println!("Call-IDs with more than one record (one INVITE, two nodes): {doubled}");
    }
    assert_eq!(
        recorded("SELECT COUNT(*) FROM call_records WHERE hangup_cause = 'caller_hangup'"),
        recorded(
            "SELECT COUNT(DISTINCT call_id) FROM call_records WHERE hangup_cause = 'caller_hangup'"
        ),
        "a completed call recorded twice: {doubled}"
    );
    println!("{completed} completed calls, each recorded once in PostgreSQL");

    // A phone registered through the front door (whichever node took the REGISTER) is rung
    // by whichever node takes a carrier's call: three calls, round robin over the nodes.
    let phone = ports();
    let (ok, out) = sipp_from(
        &outside,
        &front,
        &phone,
        "register_only.xml",
        None,
        &["-m", "1", "-s", "101", "-au", "101", "-ap", "demo101"],
    );
    assert!(
        ok,
        "register through the front door: {out}\n{}",
        kamailio.log()
    );
    wait_for_101_on(&http, nodes[1].as_ref().expect("B"));
    for round in 0..3 {
        let (front2, phone2, from) = (front.clone(), same_ports(&phone), outside.clone());
        let callee = std::thread::spawn(move || {
            sipp_from(
                &from,
                &front2,
                &phone2,
                "uas_answer.xml",
                None,
                &["-m", "1"],
            )
        });
        std::thread::sleep(Duration::from_millis(300));
        let (ok, out) = sipp_from(
            &outside,
            &front,
            &ports(),
            "invite_trunk.xml",
            None,
            &["-m", "1", "-s", "+15550101", "-d", "500"],
        );
        assert!(ok, "call {round} to the phone: {out}\n{}", kamailio.log());
        let (ok, out) = callee.join().expect("phone");
        assert!(ok, "call {round}: the phone must be rung: {out}");
    }

    // A PJSUA2 phone (user 100) calls out through the front door three times: round robin
    // sends each call out through another node, the carrier echoes, and the phone hears its
    // own tone back.
    let work = tempfile::tempdir().expect("tmp");
    let messages = work.path().join("carrier-messages.log");
    let messages_arg = messages.to_string_lossy().into_owned();
    let (from, carrier_ports) = (outside.clone(), same_ports(&carrier));
    let carrier_side = std::thread::spawn(move || {
        sipp_from(
            &from,
            &format!("{from}:5999"),
            &carrier_ports,
            "uas_answer.xml",
            None,
            &[
                "-m",
                "3",
                "-rtp_echo",
                "-trace_msg",
                "-message_file",
                &messages_arg,
            ],
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    let tone = work.path().join("tone.wav");
    std::fs::write(&tone, pcm_wav(&tone_at(700.0, 8000, 3.0), 8000)).expect("tone");
    for round in 0..3 {
        let heard = work.path().join(format!("heard-{round}.wav"));
        let out = Command::new("python3")
            .arg(repo().join("integration/pjsua/echo_call.py"))
            .args(["--server", &front, "--to", "+15559990000"])
            .args(["--user", "100", "--password", "demo100", "--bind", &outside])
            .arg("--play")
            .arg(&tone)
            .arg("--record")
            .arg(&heard)
            .args(["--seconds", "3"])
            .output()
            .expect("run echo_call.py");
        assert!(
            out.status.success(),
            "the phone's call {round} out: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            kamailio.log()
        );
        let samples = wav_data(&std::fs::read(&heard).expect("recording"));
        let f = tone_after_onset(&samples);
        assert!(
            (f - 700.0).abs() < 15.0,
            "call {round} out: the phone heard {f} Hz, not its 700 Hz tone"
        );
    }
    let (ok, out) = carrier_side.join().expect("carrier");
    assert!(ok, "the carrier must take three calls: {out}");
    let log = std::fs::read_to_string(&messages).unwrap_or_default();
    let mut via_nodes: Vec<&str> = hosts
        .iter()
        .map(|h| h.addr.as_str())
        .filter(|addr| log.contains(&format!("Via: SIP/2.0/UDP {addr}:")))
        .collect();
    via_nodes.dedup();
    assert_eq!(
        via_nodes.len(),
        3,
        "the phone's three calls must leave through the three nodes: {via_nodes:?}\n{log}"
    );
    println!("a PJSUA2 phone called out through each of the three nodes and heard its echo");
}
