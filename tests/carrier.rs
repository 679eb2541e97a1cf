//! A carrier trunk given by name, as carriers publish them: NAPTR and SRV records (served by
//! dnsmasq, which the test starts on a loopback port) lead to three TLS servers; the first
//! is down, the second presents a certificate for another name, the third is Kamailio with
//! its TLS module, which requires the customer's certificate (mutual TLS) and relays the
//! call to a SIPp phone. The call fails over twice and completes; the caller hears its tone
//! echoed through the carrier; no SIP crosses the TLS port in clear. A second call, hung up
//! by the carrier's phone, shows RFC 5923 connection reuse: Kamailio sends the BYE down the
//! connection we opened (our Via offered it), not a new one to our listener.

mod common;

use common::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs openssl with `args`, panicking with its output when it fails.
fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

/// A test CA (`ca.pem`, `ca.key`) in `dir`.
fn make_ca(dir: &Path) -> PathBuf {
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=Test Carrier CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        dir,
    );
    dir.join("ca.pem")
}

/// A certificate for DNS name `name`, signed by the CA in `dir`: (`name.pem`, `name.key`).
fn issue(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(
        &ext,
        format!(
            "subjectAltName=DNS:{name}\nbasicConstraints=CA:FALSE\n\
             extendedKeyUsage=serverAuth,clientAuth\n"
        ),
    )
    .expect("ext");
    let (key, csr, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
    );
    openssl(
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &key,
            "-out",
            &csr,
        ],
        dir,
    );
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-out",
            &pem,
            "-extfile",
            &ext.to_string_lossy(),
        ],
        dir,
    );
    (dir.join(pem), dir.join(key))
}

/// A child process stopped (and waited for) when dropped, with its output in a file.
struct Running {
    child: Option<Child>,
    log: PathBuf,
}

impl Running {
    fn start(mut cmd: Command, log: PathBuf) -> Running {
        let file = std::fs::File::create(&log).expect("log");
        let child = cmd
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
        Running {
            child: Some(child),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for_log(&self, what: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.log().contains(what) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "{what:?} not seen in {}:\n{}",
            self.log.display(),
            self.log()
        );
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_gently(&mut c, Duration::from_secs(5));
        }
    }
}

fn binary(name: &str) -> Option<PathBuf> {
    let path = PathBuf::from("/usr/sbin").join(name);
    if path.exists() || peer_available(name) {
        Some(if path.exists() {
            path
        } else {
            PathBuf::from(name)
        })
    } else {
        None
    }
}

fn wait_until(
    what: &str,
    within: Duration,
    mut done: impl FnMut() -> bool,
    log: impl Fn() -> String,
) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} within {within:?}\n{}", log());
}

#[test]
fn a_carrier_found_by_naptr_and_srv_takes_the_call_over_mutual_tls_after_two_failovers() {
    if !peer_available("sipp") || !peer_available("tcpdump") {
        return;
    }
    let (Some(dnsmasq), Some(kamailio)) = (binary("dnsmasq"), binary("kamailio")) else {
        return;
    };
    if !Path::new("/usr/lib/x86_64-linux-gnu/kamailio/modules/tls.so").exists()
        && !switchyard::test_support::peer_missing(
            "Kamailio's TLS module (kamailio-tls-modules; integration/peers.sh installs it)",
        )
    {
        return;
    }
    let work = tempfile::tempdir().expect("tmp");
    let dir = work.path();
    let ca = make_ca(dir);
    let (good_cert, good_key) = issue(dir, "sip2.carrier.test");
    let (imposter_cert, imposter_key) = issue(dir, "imposter.test");
    let (client_cert, client_key) = issue(dir, "switchyard.customer.test");

    let p = ports();
    let c = ports();
    // The carrier's ports: the phone (SIPp) at c.sipp, the rest in the block's spare range.
    let (down, imposter, good, towards_phone, dns) =
        (c.api + 1, c.api + 2, c.api + 3, c.api + 4, c.api + 5);

    // DNS: NAPTR → _sips._tcp SRV with three targets in priority order.
    let dns_server = {
        let mut cmd = Command::new(&dnsmasq);
        cmd.args([
            "--no-daemon",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
        ])
        .args([
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--user=root",
        ])
        .args(["--log-queries", "--log-facility=-", "--local=/test/"])
        .arg(format!("--port={dns}"))
        .arg("--naptr-record=carrier.test,10,10,s,SIPS+D2T,,_sips._tcp.carrier.test")
        .arg(format!(
            "--srv-host=_sips._tcp.carrier.test,sip1.carrier.test,{down},10,10"
        ))
        .arg(format!(
            "--srv-host=_sips._tcp.carrier.test,sip3.carrier.test,{imposter},20,10"
        ))
        .arg(format!(
            "--srv-host=_sips._tcp.carrier.test,sip2.carrier.test,{good},30,10"
        ))
        .args(["--host-record=sip1.carrier.test,127.0.0.1"])
        .args(["--host-record=sip2.carrier.test,127.0.0.1"])
        .args(["--host-record=sip3.carrier.test,127.0.0.1"]);
        let r = Running::start(cmd, dir.join("dnsmasq.log"));
        r.wait_for_log("started", Duration::from_secs(10));
        r
    };

    // The carrier: Kamailio with TLS on `good` (and the imposter's certificate on `imposter`).
    let tls_cfg = dir.join("tls.cfg");
    let server_section = |cert: &Path, key: &Path| {
        format!(
            "method = TLSv1.2+\nverify_certificate = yes\nrequire_certificate = yes\n\
             certificate = {}\nprivate_key = {}\nca_list = {}\n",
            cert.display(),
            key.display(),
            ca.display()
        )
    };
    std::fs::write(
        &tls_cfg,
        format!(
            "[server:default]\n{}\n[server:127.0.0.1:{imposter}]\n{}\n\
             [client:default]\nverify_certificate = no\nrequire_certificate = no\n",
            server_section(&good_cert, &good_key),
            server_section(&imposter_cert, &imposter_key),
        ),
    )
    .expect("tls.cfg");
    let cfg = std::fs::read_to_string(repo().join("integration/kamailio/carrier_tls.cfg"))
        .expect("carrier_tls.cfg")
        .replace("@TLS@", &format!("tls:127.0.0.1:{good}"))
        .replace("@IMPOSTER@", &format!("tls:127.0.0.1:{imposter}"))
        .replace("@UDP@", &format!("udp:127.0.0.1:{towards_phone}"))
        .replace("@PHONE@", &format!("sip:127.0.0.1:{}", c.sipp))
        .replace("@TLSCFG@", &tls_cfg.to_string_lossy());
    let cfg_path = dir.join("carrier.cfg");
    std::fs::write(&cfg_path, cfg).expect("cfg");
    let rundir = dir.join("run");
    std::fs::create_dir_all(&rundir).expect("rundir");
    let carrier = {
        let mut cmd = Command::new(&kamailio);
        cmd.arg("-f")
            .arg(&cfg_path)
            .args(["-DD", "-E", "-Y"])
            .arg(&rundir);
        let r = Running::start(cmd, dir.join("kamailio.log"));
        r.wait_for_log("Listening on", Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(300));
        r
    };

    // Switchyard: its own TLS listener, the carrier's CA trusted for trunks, a customer
    // certificate to present, and the test's DNS server.
    let (own_cert, own_key) = self_signed_cert(dir, "switchyard");
    let listen = format!("udp:127.0.0.1:{},tls:127.0.0.1:{}", p.sip, p.api + 3);
    let (own_cert, own_key) = (own_cert.to_string_lossy(), own_key.to_string_lossy());
    let (ca_s, client_cert_s, client_key_s) = (
        ca.to_string_lossy().into_owned(),
        client_cert.to_string_lossy().into_owned(),
        client_key.to_string_lossy().into_owned(),
    );
    let dns_setting = format!("127.0.0.1:{dns}");
    let server = Server::start(
        &p,
        &[
            ("SWITCHYARD_SIP_LISTEN", listen.as_str()),
            ("SWITCHYARD_SIP_TLS_CERT", &own_cert),
            ("SWITCHYARD_SIP_TLS_KEY", &own_key),
            ("SWITCHYARD_SIP_TLS_TRUNK_CA", ca_s.as_str()),
            ("SWITCHYARD_SIP_TLS_CLIENT_CERT", client_cert_s.as_str()),
            ("SWITCHYARD_SIP_TLS_CLIENT_KEY", client_key_s.as_str()),
            ("SWITCHYARD_SIP_DNS_SERVERS", dns_setting.as_str()),
        ],
    );
    edit_demo(&server, |doc| {
        doc["trunks"].as_array_mut().expect("trunks").extend([
            json!({"id": "carrier", "address": "carrier.test", "allowed_prefixes": ["+1"]}),
            json!({"id": "gone", "address": "gone.test", "allowed_prefixes": ["+44"]}),
        ]);
        doc["outbound_routes"] = json!([
            {"name": "nanp", "prefix": "+1", "trunk": "carrier"},
            {"name": "uk", "prefix": "+44", "trunk": "gone"}
        ]);
        doc["numbers"]
            .as_array_mut()
            .expect("numbers")
            .push(json!({"number": "+15550555", "target": {"type": "external", "number": "+15551234567"}}));
    });
    wait_until(
        "the trunk's name resolved",
        Duration::from_secs(15),
        || server.log_text().contains("trunk address resolved"),
        || format!("{}\n{}", server.log_text(), dns_server.log()),
    );
    // A name with no records: looked up, logged and counted; the trunk is simply unusable.
    wait_until(
        "the missing name's failure logged",
        Duration::from_secs(15),
        || server.log_text().contains("trunk address lookup failed"),
        || server.log_text(),
    );

    // The carrier's phone answers and echoes what it hears.
    let phone = {
        std::thread::spawn(move || {
            sipp_at(
                towards_phone,
                &c,
                "uas_answer.xml",
                &["-m", "1", "-rtp_echo"],
            )
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let wire = Capture::start_on("lo", &format!("tcp port {good}"));
    let rtp = Capture::start(p.rtp_first, p.rtp_first + 19);
    let (ok, out) = call_out_with_tone(&server, &p);
    let (phone_ok, phone_out) = phone.join().expect("phone");
    let logs = || {
        format!(
            "--- switchyard\n{}\n--- kamailio\n{}\n--- dnsmasq\n{}",
            server.log_text(),
            carrier.log(),
            dns_server.log()
        )
    };
    assert!(ok, "caller: {out}\n{}", logs());
    assert!(phone_ok, "carrier's phone: {phone_out}\n{}", logs());

    // The tone came back through the carrier.
    let heard = heard_by(rtp, &p);
    assert!(
        heard.iter().any(|s| s.unsigned_abs() > 2000),
        "no tone back through the carrier\n{}",
        logs()
    );
    let f = tone_after_onset(&heard);
    assert!((f - 1000.0).abs() < 10.0, "caller heard {f} Hz");

    // DNS was asked as RFC 3263 says, and the call went down the SRV list.
    let dns_log = dns_server.log();
    assert!(dns_log.contains("query[NAPTR] carrier.test"), "{dns_log}");
    assert!(
        dns_log.contains("query[SRV] _sips._tcp.carrier.test"),
        "{dns_log}"
    );
    let log = server.log_text();
    let moves = log.matches("trying the next one").count();
    assert_eq!(moves, 2, "down, then the wrong certificate:\n{}", logs());
    assert!(
        log.contains("TLS handshake"),
        "the imposter's certificate was refused\n{log}"
    );
    // Mutual TLS: the carrier saw the customer's certificate, and only TLS.
    let k = carrier.log();
    assert!(
        k.contains("INVITE for +15551234567 over tls from customer switchyard.customer.test"),
        "{k}"
    );
    assert!(!k.contains("refused INVITE"), "{k}");
    // On the wire to the carrier: TLS, no SIP in clear.
    let bytes = wire.finish_raw();
    assert!(
        bytes.len() > 2000,
        "TLS traffic captured ({} bytes)",
        bytes.len()
    );
    for clear in [&b"INVITE sip:"[..], b"SIP/2.0 200", b"Via: SIP/2.0"] {
        assert!(
            !bytes.windows(clear.len()).any(|w| w == clear),
            "{:?} in clear on the TLS port",
            String::from_utf8_lossy(clear)
        );
    }

    // RFC 5923: the carrier's phone hangs up a second call itself. Our Via offered the
    // connection we opened (`alias`: we present a certificate) and Kamailio takes such
    // offers (tcp_accept_aliases), so its BYE comes down that connection: nothing connects
    // to our own TLS listener, though the BYE's target is our Contact there.
    let our_tls = p.api + 3;
    let tls_wire = Capture::start_on("lo", &format!("tcp port {our_tls} or tcp port {good}"));
    let phone = std::thread::spawn(move || {
        sipp_at(towards_phone, &c, "uas_answer_then_bye.xml", &["-m", "1"])
    });
    std::thread::sleep(Duration::from_millis(300));
    let (ok, out) = sipp(
        &server,
        &p,
        "wait_for_bye.xml",
        &["-s", "+15550555", "-m", "1"],
    );
    let (phone_ok, phone_out) = phone.join().expect("phone");
    assert!(
        ok,
        "caller hung up by the carrier's phone: {out}\n{}",
        logs()
    );
    assert!(phone_ok, "carrier's phone: {phone_out}\n{}", logs());
    assert!(
        carrier.log().contains("carrier: in-dialog BYE over udp"),
        "the phone's BYE went through the carrier\n{}",
        logs()
    );
    let segments = tcp_ports_in_pcap(&tls_wire.finish_raw());
    assert!(
        segments.iter().any(|&(s, d)| s == good || d == good),
        "the capture saw our connection to the carrier ({} segments)",
        segments.len()
    );
    assert!(
        !segments.iter().any(|&(s, d)| s == our_tls || d == our_tls),
        "the carrier connected to our TLS listener instead of reusing our connection\n{}",
        logs()
    );

    let figure = |name: &str| metric_value(server.api_port, name);
    // Two per call: down, then the wrong certificate.
    assert_eq!(figure("switchyard_trunk_failovers_total"), 4.0);
    assert!(figure("switchyard_trunk_dns_failures_total") >= 1.0);
    assert!(figure("switchyard_sip_tls_handshake_failures_total") >= 1.0);
}
