//! Shared harness for tests that start the real `switchyard` binary and drive it with real
//! peers (SIPp). A peer that is not installed makes the test skip with a message, unless
//! `SWITCHYARD_REQUIRE_PEERS=1` (set by `.ci/run`), where it fails instead.
#![allow(dead_code)]

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

pub mod netns;
pub mod postgres;

pub use netns::Host;

static NEXT: AtomicU16 = AtomicU16::new(0);

/// A block of ports for one test: SIP server, SIPp, SIPp media, RTP range.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub sip: u16,
    pub api: u16,
    pub sipp: u16,
    pub sipp_media: u16,
    pub rtp_first: u16,
}

/// Each test gets its own block of 20 ports, and each test process (by pid) its own slot of
/// 25 blocks. Everything stays below the kernel's ephemeral range (32768-60999 here), where
/// any outgoing socket of any test may take a port: a block there once found its API port
/// taken by one (CI, "Address already in use"). The ranges also step around the services'
/// ports (Azurite 10000, RabbitMQ 25672).
pub fn ports() -> Ports {
    let block = NEXT.fetch_add(1, Ordering::SeqCst);
    let slot = (std::process::id() % 12) as u16 * 500;
    let base = 11000 + slot + block * 20;
    let rtp = 17500 + slot + block * 20;
    Ports {
        sip: base,
        api: base + 10,
        sipp: base + 1,
        sipp_media: base + 4,
        rtp_first: rtp,
    }
}

/// Whether PJSUA2 (pjsip's Python binding) can be imported.
pub fn pjsua_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import pjsua2"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    ok || switchyard::test_support::peer_missing(
        "pjsua2 (pip install -r integration/pjsua/requirements.txt)",
    )
}

pub fn peer_available(program: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    found
        || switchyard::test_support::peer_missing(&format!(
            "{program} (integration/peers.sh installs it)"
        ))
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The addresses servers on a [`Lab`]'s hosts serve their API at, by API port (the others
/// are on 127.0.0.1).
static API_ADDRS: std::sync::Mutex<Vec<(u16, String)>> = std::sync::Mutex::new(Vec::new());

/// `http://ADDR:PORT{path}` for the server whose API port is `port`.
pub fn api_url(port: u16, path: &str) -> String {
    let addrs = API_ADDRS.lock().unwrap_or_else(|e| e.into_inner());
    let addr = addrs
        .iter()
        .rev()
        .find(|(p, _)| *p == port)
        .map(|(_, a)| a.as_str())
        .unwrap_or("127.0.0.1");
    format!("http://{addr}:{port}{path}")
}

/// The admin key every test server is started with.
pub const ADMIN_KEY: &str = "test-admin-key-0123456789";

pub struct Server {
    pub child: Child,
    /// The address it listens on (127.0.0.1 unless started on a [`Host`]).
    pub addr: String,
    pub sip_port: u16,
    pub api_port: u16,
    pub data_dir: tempfile::TempDir,
    pub log: PathBuf,
}

impl Server {
    pub fn start(ports: &Ports, extra_env: &[(&str, &str)]) -> Server {
        let data_dir = tempfile::tempdir().expect("tmp");
        Self::start_in(ports, extra_env, data_dir)
    }

    pub fn start_in(
        ports: &Ports,
        extra_env: &[(&str, &str)],
        data_dir: tempfile::TempDir,
    ) -> Server {
        Self::launch(&Host::local(), ports, extra_env, data_dir, false)
    }

    /// A server on `host` (a network namespace of a [`Lab`]), listening on its address.
    pub fn start_on(
        host: &Host,
        ports: &Ports,
        extra_env: &[(&str, &str)],
        data_dir: tempfile::TempDir,
    ) -> Server {
        Self::launch(host, ports, extra_env, data_dir, false)
    }

    /// A server as an operator would start one: its working directory an empty folder, no
    /// prompt folder named (the system prompts are the ones built into the binary). The
    /// binary is the release build named by `SWITCHYARD_RELEASE_BINARY` when set (`.ci/run`
    /// builds it), else the test build.
    pub fn start_from_empty_dir(ports: &Ports) -> Server {
        Self::launch(
            &Host::local(),
            ports,
            &[],
            tempfile::tempdir().expect("tmp"),
            true,
        )
    }

    fn launch(
        host: &Host,
        ports: &Ports,
        extra_env: &[(&str, &str)],
        data_dir: tempfile::TempDir,
        bare: bool,
    ) -> Server {
        let log = data_dir.path().join("server.log");
        let logf = std::fs::File::create(&log).expect("log file");
        let binary = match std::env::var("SWITCHYARD_RELEASE_BINARY") {
            Ok(release) if bare => repo().join(release),
            _ => PathBuf::from(env!("CARGO_BIN_EXE_switchyard")),
        };
        let mut cmd = host.command(binary);
        let addr = host.addr.as_str();
        if bare {
            let cwd = data_dir.path().join("cwd");
            std::fs::create_dir_all(&cwd).expect("cwd");
            cmd.current_dir(cwd);
        }
        cmd.arg("serve")
            .arg("--demo")
            .env("SWITCHYARD_DATA_DIR", data_dir.path())
            .env(
                "SWITCHYARD_SIP_LISTEN",
                format!("udp:{addr}:{p},tcp:{addr}:{p}", p = ports.sip),
            )
            .env(
                "SWITCHYARD_MEDIA_RTP_PORTS",
                format!("{}-{}", ports.rtp_first, ports.rtp_first + 19),
            )
            .env(
                "SWITCHYARD_MEDIA_PROMPTS_DIR",
                if bare {
                    "prompts".into()
                } else {
                    repo().join("prompts")
                },
            )
            .env("SWITCHYARD_API_LISTEN", format!("{addr}:{}", ports.api))
            .env("SWITCHYARD_API_ADMIN_KEY", ADMIN_KEY)
            // Every test peer (providers included) runs on this machine.
            .env("SWITCHYARD_TENANT_ALLOW_LOCAL_TRUNKS", "true")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(logf);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start switchyard");
        if host.netns.is_some() {
            API_ADDRS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((ports.api, addr.to_string()));
        }
        let s = Server {
            child,
            addr: addr.to_string(),
            sip_port: ports.sip,
            api_port: ports.api,
            data_dir,
            log,
        };
        s.wait_ready();
        s
    }

    fn wait_ready(&self) {
        let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            let _ = sock.send_to(
                options(sock.local_addr().expect("addr").port()).as_bytes(),
                (self.addr.as_str(), self.sip_port),
            );
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                if buf[..n].starts_with(b"SIP/2.0 200") {
                    return;
                }
            }
        }
        panic!("server did not answer OPTIONS; log:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
    }

    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn data_path(&self) -> &Path {
        self.data_dir.path()
    }

    /// Kills the process at once (SIGKILL: no drain, no flush, as a crash or a power cut
    /// would) and hands back its data folder, to start a server on it again.
    pub fn kill_keeping_data(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.data_dir, tempfile::tempdir().expect("tmp"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn options(port: u16) -> String {
    format!("OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{}\r\nMax-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:127.0.0.1>\r\nCall-ID: probe-{}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n", rand_u32(), rand_u32())
}

pub fn rand_u32() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(7);
    t ^ (std::process::id() << 7)
}

/// Runs a SIPp scenario from integration/sipp against the server; returns (success, output
/// including SIPp's error log and statistics).
pub fn sipp(server: &Server, ports: &Ports, scenario: &str, args: &[&str]) -> (bool, String) {
    sipp_at(server.sip_port, ports, scenario, args)
}

/// [`sipp`] against a server known only by its SIP port (from another thread).
pub fn sipp_at(sip_port: u16, ports: &Ports, scenario: &str, args: &[&str]) -> (bool, String) {
    sipp_to(&format!("127.0.0.1:{sip_port}"), ports, scenario, args)
}

/// [`sipp`] against any `host:port` (a proxy in front of the server).
pub fn sipp_to(target: &str, ports: &Ports, scenario: &str, args: &[&str]) -> (bool, String) {
    sipp_from("127.0.0.1", target, ports, scenario, None, args)
}

/// Runs one SIPp call with `audio` written to `audio.wav` in its working directory (the file
/// the media scenarios stream with rtp_stream).
pub fn sipp_with_audio(
    server: &Server,
    ports: &Ports,
    scenario: &str,
    audio: Option<&[i16]>,
    args: &[&str],
) -> (bool, String) {
    sipp_with_audio_at(server.sip_port, ports, scenario, audio, args)
}

/// [`sipp_with_audio`] against a server known only by its SIP port (from another thread).
pub fn sipp_with_audio_at(
    sip_port: u16,
    ports: &Ports,
    scenario: &str,
    audio: Option<&[i16]>,
    args: &[&str],
) -> (bool, String) {
    run_sipp(
        "127.0.0.1",
        &format!("127.0.0.1:{sip_port}"),
        ports,
        scenario,
        audio,
        &["-m", "1"],
        args,
    )
}

/// [`sipp_with_audio`] against a server known only by its SIP port (from another thread).
pub fn sipp_at_with_audio(
    sip_port: u16,
    ports: &Ports,
    scenario: &str,
    audio: &[i16],
    args: &[&str],
) -> (bool, String) {
    run_sipp(
        "127.0.0.1",
        &format!("127.0.0.1:{sip_port}"),
        ports,
        scenario,
        Some(audio),
        &["-m", "1"],
        args,
    )
}

/// [`sipp_to`] from `local` (an address of the test's own on a [`Lab`]'s bridge), with
/// `audio` as `audio.wav` when given.
pub fn sipp_from(
    local: &str,
    target: &str,
    ports: &Ports,
    scenario: &str,
    audio: Option<&[i16]>,
    args: &[&str],
) -> (bool, String) {
    run_sipp(
        local,
        target,
        ports,
        scenario,
        audio,
        &["-trace_err", "-trace_stat", "-fd", "1"],
        args,
    )
}

fn run_sipp(
    local: &str,
    target: &str,
    ports: &Ports,
    scenario: &str,
    audio: Option<&[i16]>,
    fixed: &[&str],
    args: &[&str],
) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tmp");
    if let Some(a) = audio {
        write_ulaw_wav(&dir.path().join("audio.wav"), a);
    }
    let out = Command::new("sipp")
        .current_dir(dir.path())
        .arg("-sf")
        .arg(repo().join("integration/sipp").join(scenario))
        .arg(target)
        .args([
            "-i",
            local,
            "-p",
            &ports.sipp.to_string(),
            "-mp",
            &ports.sipp_media.to_string(),
        ])
        .args(["-nostdin", "-timeout", "60s", "-timeout_error"])
        .args(fixed)
        .args(args)
        .output()
        .expect("run sipp");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    // The error log names what went wrong for a failed call.
    if let Ok(entries) = std::fs::read_dir(dir.path()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with("_errors.log") || name.ends_with(".csv") {
                text.push_str(&format!("\n--- {name} ---\n"));
                text.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
    }
    (out.status.success(), text)
}

/// Adds `numbers` (JSON objects) to the demo tenant through `switchyard tenant import`, which
/// hands the document to the running server.
pub fn import_demo_with_numbers(
    server: &Server,
    numbers: &[serde_json::Value],
) -> std::process::Output {
    let mut demo: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("config/demo-tenant.json")).expect("demo"),
    )
    .expect("json");
    demo["numbers"]
        .as_array_mut()
        .expect("numbers")
        .extend(numbers.iter().cloned());
    import_tenant(server, &demo)
}

/// Runs `switchyard tenant import` with `doc` against the server's data directory.
pub fn import_tenant(server: &Server, doc: &serde_json::Value) -> std::process::Output {
    let file = server
        .data_path()
        .join(format!("import-{}.json", rand_u32()));
    std::fs::write(&file, doc.to_string()).expect("write");
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["tenant", "import"])
        .arg(&file)
        .env("SWITCHYARD_DATA_DIR", server.data_path())
        .output()
        .expect("import")
}

/// The digits the server logged as received (`digit=…` of each "digit received" line), in
/// order: `*` for digits of a secret entry such as a PIN.
pub fn logged_digits(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("digit received"))
        .filter_map(|l| l.split("digit=").nth(1)?.split_whitespace().next())
        .collect()
}

/// Sends one UDP message and collects whatever arrives within `wait`.
pub fn udp_exchange(sock: &UdpSocket, to: u16, msg: &str, wait: Duration) -> Vec<String> {
    sock.send_to(msg.as_bytes(), ("127.0.0.1", to))
        .expect("send");
    let mut out = Vec::new();
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 8192];
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    while Instant::now() < deadline {
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    out
}

/// A tcpdump capture of UDP packets sent from a port range on the loopback interface.
pub struct Capture {
    child: Child,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

/// One captured UDP datagram.
#[derive(Debug, Clone)]
pub struct Datagram {
    /// Capture time, µs.
    pub at_us: u64,
    /// UDP source port.
    pub src_port: u16,
    /// UDP destination port.
    pub dst_port: u16,
    /// UDP payload.
    pub payload: Vec<u8>,
}

impl Capture {
    /// Starts capturing UDP from ports `first..=last` (the server's RTP range).
    pub fn start(first: u16, last: u16) -> Capture {
        Self::start_on("lo", &format!("udp and src portrange {first}-{last}"))
    }

    /// Starts capturing what `filter` (tcpdump's syntax) takes on `interface`. Packets are
    /// handed over one by one (`--immediate-mode`): otherwise the kernel passes them in
    /// blocks, and what the last block held when the capture is stopped is lost.
    pub fn start_on(interface: &str, filter: &str) -> Capture {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("cap.pcap");
        let child = Command::new("tcpdump")
            .args(["-i", interface, "--immediate-mode", "-U", "-n", "-w"])
            .arg(&path)
            .arg(filter)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tcpdump");
        // tcpdump needs a moment to open the interface.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !path.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        Capture {
            child,
            path,
            _dir: dir,
        }
    }

    /// Stops and returns the capture file's bytes (every packet whole, any protocol).
    pub fn finish_raw(mut self) -> Vec<u8> {
        std::thread::sleep(Duration::from_millis(200));
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        std::fs::read(&self.path).expect("pcap")
    }

    /// Stops and parses the capture.
    pub fn finish(self) -> Vec<Datagram> {
        parse_pcap(&self.finish_raw())
    }
}

/// Reads a classic pcap file (Ethernet, Linux cooked or null link types; IPv4/UDP only).
pub fn parse_pcap(b: &[u8]) -> Vec<Datagram> {
    ipv4_packets(b)
        .into_iter()
        .filter_map(|(at_us, ip)| {
            if ip[9] != 17 {
                return None;
            }
            let ihl = (ip[0] & 0x0f) as usize * 4;
            let udp = ip.get(ihl..).filter(|u| u.len() >= 8)?;
            Some(Datagram {
                at_us,
                src_port: u16::from_be_bytes([udp[0], udp[1]]),
                dst_port: u16::from_be_bytes([udp[2], udp[3]]),
                payload: udp[8..].to_vec(),
            })
        })
        .collect()
}

/// The (source, destination) ports of every TCP segment in a classic pcap file.
pub fn tcp_ports_in_pcap(b: &[u8]) -> Vec<(u16, u16)> {
    ipv4_packets(b)
        .into_iter()
        .filter_map(|(_, ip)| {
            if ip[9] != 6 {
                return None;
            }
            let ihl = (ip[0] & 0x0f) as usize * 4;
            let tcp = ip.get(ihl..).filter(|t| t.len() >= 20)?;
            Some((
                u16::from_be_bytes([tcp[0], tcp[1]]),
                u16::from_be_bytes([tcp[2], tcp[3]]),
            ))
        })
        .collect()
}

/// The IPv4 packets in a classic pcap file, with their capture time (µs).
fn ipv4_packets(b: &[u8]) -> Vec<(u64, &[u8])> {
    let mut out = Vec::new();
    if b.len() < 24 {
        return out;
    }
    let le = b[0..4] == [0xd4, 0xc3, 0xb2, 0xa1] || b[0..4] == [0x4d, 0x3c, 0xb2, 0xa1];
    let nanos = b[0..4] == [0x4d, 0x3c, 0xb2, 0xa1] || b[0..4] == [0xa1, 0xb2, 0x3c, 0x4d];
    let rd32 = |o: usize| {
        let a = [b[o], b[o + 1], b[o + 2], b[o + 3]];
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let link = rd32(20);
    let skip = match link {
        1 => 14,
        113 => 16,
        276 => 20,
        0 => 4,
        _ => 14,
    };
    let mut off = 24;
    while off + 16 <= b.len() {
        let (sec, frac, len) = (
            rd32(off) as u64,
            rd32(off + 4) as u64,
            rd32(off + 8) as usize,
        );
        let data = &b[off + 16..(off + 16 + len).min(b.len())];
        off += 16 + len;
        let at_us = sec * 1_000_000 + if nanos { frac / 1000 } else { frac };
        let Some(ip) = data.get(skip..) else { continue };
        if ip.len() < 20 || ip[0] >> 4 != 4 {
            continue;
        }
        out.push((at_us, ip));
    }
    out
}

/// µ-law to linear (G.711). The tests keep their own codec on purpose: checking the server's
/// output with the server's own tables would prove nothing.
pub fn ulaw_to_linear(u: u8) -> i16 {
    let u = !u;
    let sign = u & 0x80;
    let exponent = (u >> 4) & 0x07;
    let mantissa = u & 0x0f;
    let v = (((i32::from(mantissa) << 3) + 0x84) << exponent) - 0x84;
    (if sign != 0 { -v } else { v }) as i16
}

/// Linear to µ-law (G.711).
pub fn linear_to_ulaw(pcm: i16) -> u8 {
    let mut v = i32::from(pcm);
    let sign = if v < 0 {
        v = -v;
        0x80
    } else {
        0
    };
    v = v.min(32635) + 0x84;
    let mut exponent = 7;
    let mut mask = 0x4000;
    while exponent > 0 && v & mask == 0 {
        exponent -= 1;
        mask >>= 1;
    }
    let mantissa = (v >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

/// Writes an 8 kHz µ-law WAV (what SIPp's rtp_stream plays).
pub fn write_ulaw_wav(path: &Path, samples: &[i16]) {
    let data: Vec<u8> = samples.iter().map(|&s| linear_to_ulaw(s)).collect();
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + 14 + data.len() as u32).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&18u32.to_le_bytes());
    b.extend_from_slice(&7u16.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&8000u32.to_le_bytes());
    b.extend_from_slice(&8000u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&8u16.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(b"fact");
    b.extend_from_slice(&4u32.to_le_bytes());
    b.extend_from_slice(&(samples.len() as u32).to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&(data.len() as u32).to_le_bytes());
    b.extend_from_slice(&data);
    std::fs::write(path, b).expect("write wav");
}

/// The tone in `s` as the median of its 100 ms blocks' frequencies: a lost or repeated
/// frame here and there (a loaded machine) does not move it.
pub fn median_tone(s: &[i16]) -> f32 {
    let mut f: Vec<f32> = s.chunks_exact(800).map(tone_frequency).collect();
    if f.is_empty() {
        return 0.0;
    }
    f.sort_by(|a, b| a.total_cmp(b));
    f[f.len() / 2]
}

/// Frequency of a pure tone by zero crossings.
pub fn tone_frequency(s: &[i16]) -> f32 {
    let crossings = s.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
    crossings as f32 * 8000.0 / (2.0 * s.len() as f32)
}

/// Changes the demo tenant through the admin API (GET, edit, PUT with If-Match).
/// One SIPp caller to the voicemail number (+15550300) of the server at `sip_port`: 6 s of
/// silence (through the short greeting: see [`short_greeting`]), 2 s of 600 Hz, then BYE.
pub fn leave_600hz_message(sip_port: u16, ports: &Ports) -> (bool, String) {
    let mut audio = vec![0i16; 8000 * 6];
    audio.extend(sine_wave(600.0, 2.0));
    audio.extend(vec![0i16; 4000]);
    sipp_with_audio_at(
        sip_port,
        ports,
        "media_stream.xml",
        Some(&audio),
        &["-s", "+15550300", "-d", "8500"],
    )
}

/// Mailbox 100's greeting becomes the short beep (beep, "leave a message", beep: ~5.4 s),
/// which keeps a deposit short.
pub fn short_greeting(server: &Server) {
    edit_demo(server, |doc| {
        for m in doc["mailboxes"].as_array_mut().expect("mailboxes") {
            if m["id"] == "100" {
                m["greeting"] = serde_json::json!("system/beep");
            }
        }
    });
}

pub fn edit_demo(server: &Server, edit: impl FnOnce(&mut serde_json::Value)) {
    let http = reqwest::blocking::Client::new();
    let url = api_url(server.api_port, "/v1/tenants/demo");
    let r = http.get(&url).bearer_auth(ADMIN_KEY).send().expect("GET");
    let tag = r.headers()["etag"].to_str().expect("etag").to_string();
    let mut doc: serde_json::Value = r.json().expect("doc");
    edit(&mut doc);
    let r = http
        .put(&url)
        .bearer_auth(ADMIN_KEY)
        .header("If-Match", tag)
        .json(&doc)
        .send()
        .expect("PUT");
    assert!(r.status().is_success(), "{:?}", r.text());
}

/// The samples of a 16-bit WAV with a 44-byte header.
pub fn wav_samples(b: &[u8]) -> Vec<i16> {
    b[44..]
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect()
}

/// A self-signed certificate for 127.0.0.1 (`CN`=`cn`, SAN IP:127.0.0.1) and its key, as PEM
/// files in `dir` named after `cn`; made by openssl.
pub fn self_signed_cert(dir: &Path, cn: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{cn}-cert.pem")),
        dir.join(format!("{cn}-key.pem")),
    );
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            &format!("/CN={cn}"),
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{out:?}");
    (cert, key)
}

/// A server with `listen` (`SWITCHYARD_SIP_LISTEN`) and the certificate and key at `cert` and
/// `key` for its `tls:`/`wss:` listeners.
pub fn start_with_certificate(p: &Ports, listen: &str, cert: &Path, key: &Path) -> Server {
    let (cert, key) = (
        cert.to_string_lossy().into_owned(),
        key.to_string_lossy().into_owned(),
    );
    Server::start(
        p,
        &[
            ("SWITCHYARD_SIP_LISTEN", listen),
            ("SWITCHYARD_SIP_TLS_CERT", cert.as_str()),
            ("SWITCHYARD_SIP_TLS_KEY", key.as_str()),
        ],
    )
}

/// The subject of the certificate a TLS server at 127.0.0.1:`port` presents (openssl
/// s_client), empty when none.
pub fn presented_subject(port: u16) -> String {
    let Ok(mut client) = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    else {
        return String::new();
    };
    let mut pem = Vec::new();
    if let Some(mut out) = client.stdout.take() {
        use std::io::Read;
        let _ = out.read_to_end(&mut pem);
    }
    let _ = client.wait();
    let Ok(mut x509) = Command::new("openssl")
        .args(["x509", "-noout", "-subject"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    else {
        return String::new();
    };
    if let Some(mut input) = x509.stdin.take() {
        use std::io::Write;
        let _ = input.write_all(&pem);
    }
    x509.wait_with_output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The 16-bit samples of a WAV file's data chunk (wherever the writer put it).
pub fn wav_data(b: &[u8]) -> Vec<i16> {
    // Find the data chunk.
    let mut off = 12;
    while off + 8 <= b.len() {
        let len = u32::from_le_bytes([b[off + 4], b[off + 5], b[off + 6], b[off + 7]]) as usize;
        if &b[off..off + 4] == b"data" {
            let end = (off + 8 + len).min(b.len());
            return b[off + 8..end]
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect();
        }
        off += 8 + len + (len & 1);
    }
    panic!("no data chunk");
}

/// A 8 kHz sine tone.
pub fn sine_wave(freq: f32, secs: f32) -> Vec<i16> {
    (0..(8000.0 * secs) as usize)
        .map(|i| ((2.0 * std::f32::consts::PI * freq * i as f32 / 8000.0).sin() * 8000.0) as i16)
        .collect()
}

/// A 16-bit PCM mono WAV at `rate` (uploads; Chromium's fake microphone takes 48 kHz).
pub fn pcm_wav(samples: &[i16], rate: u32) -> Vec<u8> {
    let data = samples.len() as u32 * 2;
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * 2).to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data.to_le_bytes());
    for s in samples {
        b.extend_from_slice(&s.to_le_bytes());
    }
    b
}

/// A sine tone at `rate`.
pub fn tone_at(freq: f32, rate: u32, secs: f32) -> Vec<i16> {
    (0..(rate as f32 * secs) as usize)
        .map(|i| {
            ((2.0 * std::f32::consts::PI * freq * i as f32 / rate as f32).sin() * 9000.0) as i16
        })
        .collect()
}

/// Starts recording the demo tenant's first live call through the admin API as soon as it
/// is answered (in a thread); the thread returns the status of the POST (204), 0 when no
/// call came.
pub fn record_first_call(api_port: u16) -> std::thread::JoinHandle<u16> {
    std::thread::spawn(move || {
        let http = reqwest::blocking::Client::new();
        let base = format!("http://127.0.0.1:{api_port}/v1/tenants/demo/calls");
        for _ in 0..300 {
            let calls: serde_json::Value = http
                .get(&base)
                .bearer_auth(ADMIN_KEY)
                .send()
                .and_then(|r| r.json())
                .unwrap_or(serde_json::Value::Null);
            if let Some(id) = calls["items"][0]["id"].as_u64() {
                // 409 until the call is answered.
                let status = http
                    .post(format!("{base}/{id}/recording"))
                    .bearer_auth(ADMIN_KEY)
                    .send()
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                if status != 409 {
                    return status;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        0
    })
}

/// The audio of the demo tenant's newest call recording, once its call record has it.
pub fn newest_recording(api_port: u16) -> Vec<u8> {
    let http = reqwest::blocking::Client::new();
    let api = format!("http://127.0.0.1:{api_port}/v1/tenants/demo");
    for _ in 0..100 {
        let logs: serde_json::Value = http
            .get(format!("{api}/call-logs"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .and_then(|r| r.json())
            .unwrap_or(serde_json::Value::Null);
        if let Some(file) = logs["items"][0]["recording"]
            .as_str()
            .and_then(|n| n.rsplit('/').next())
        {
            if let Ok(r) = http
                .get(format!("{api}/recordings/{file}"))
                .bearer_auth(ADMIN_KEY)
                .send()
            {
                if r.status().is_success() {
                    return r.bytes().map(|b| b.to_vec()).unwrap_or_default();
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no recording of the newest call");
}

/// The frequency of the tone that starts somewhere in `samples`.
pub fn tone_after_onset(samples: &[i16]) -> f32 {
    let start = samples
        .iter()
        .position(|s| s.unsigned_abs() > 2000)
        .expect("a tone in the audio");
    assert!(samples.len() >= start + 8000, "tone cut short");
    tone_frequency(&samples[start + 400..start + 8000])
}

/// SIPp calls the DID +15550555 (which the test forwarded to an external number) and
/// streams 2 s of 1000 Hz then silence, staying 3.5 s: SIPp's verdict and output.
pub fn call_out_with_tone(server: &Server, p: &Ports) -> (bool, String) {
    let mut audio = sine_wave(1000.0, 2.0);
    audio.extend(vec![0i16; 8000]);
    sipp_with_audio(
        server,
        p,
        "media_stream.xml",
        Some(&audio),
        &["-s", "+15550555", "-d", "3500"],
    )
}

/// The PCMU audio the server sent to a SIPp caller's media port.
pub fn heard_by(cap: Capture, p: &Ports) -> Vec<i16> {
    cap.finish()
        .iter()
        .filter(|d| {
            d.dst_port == p.sipp_media && d.payload.len() == 172 && d.payload[1] & 0x7f == 0
        })
        .flat_map(|d| {
            d.payload[12..]
                .iter()
                .map(|&b| ulaw_to_linear(b))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Stops `child` the way a service manager would: SIGTERM, up to `within` to exit, then
/// SIGKILL.
pub fn stop_gently(child: &mut Child, within: Duration) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// User 100 calls *97 on the server at `sip_port` (PIN by SIP INFO, listens, saves) from
/// ports of its own; returns SIPp's verdict and output, and the PCMU audio the server sent
/// it (captured on the server's RTP range from `rtp_first`).
pub fn listen_through_star97(sip_port: u16, rtp_first: u16) -> (bool, String, Vec<i16>) {
    let listener = ports();
    let cap = Capture::start(rtp_first, rtp_first + 19);
    let (ok, out) = sipp_with_audio_at(
        sip_port,
        &listener,
        "mailbox_listen.xml",
        Some(&vec![0i16; 8000 * 25]),
        &[
            "-s", "*97", "-key", "caller", "100", "-au", "100", "-ap", "demo100", "-d", "18000",
        ],
    );
    let heard: Vec<i16> = cap
        .finish()
        .iter()
        .filter(|d| d.dst_port == listener.sipp_media && d.payload.len() == 172)
        .flat_map(|d| {
            let law = d.payload[1] & 0x7f;
            d.payload[12..]
                .iter()
                .map(move |&b| if law == 0 { ulaw_to_linear(b) } else { 0 })
                .collect::<Vec<_>>()
        })
        .collect();
    (ok, out, heard)
}

/// Whether some second of `heard` is the 600 Hz tone [`leave_600hz_message`] leaves.
pub fn has_a_second_of_600hz(heard: &[i16]) -> bool {
    heard.chunks(8000).any(|w| {
        w.len() == 8000 && w.iter().all(|s| s.unsigned_abs() < 9000) && {
            let loud = w.iter().filter(|s| s.unsigned_abs() > 2000).count();
            loud > 4000 && (tone_frequency(w) - 600.0).abs() < 10.0
        }
    })
}

/// The tenant's call records through the admin API, oldest first, once `n` have reached the
/// history store (they are spooled and written a moment after each call ends).
pub fn call_records(server: &Server, n: usize) -> Vec<serde_json::Value> {
    let http = reqwest::blocking::Client::new();
    let url = format!(
        "http://127.0.0.1:{}/v1/tenants/demo/call-logs?limit=500",
        server.api_port
    );
    let mut out: Vec<serde_json::Value> = Vec::new();
    for _ in 0..100 {
        out = http
            .get(&url)
            .bearer_auth(ADMIN_KEY)
            .send()
            .ok()
            .and_then(|r| r.json::<serde_json::Value>().ok())
            .and_then(|v| v["items"].as_array().cloned())
            .unwrap_or_default();
        if out.len() >= n {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    out.sort_by_key(|r: &serde_json::Value| r["start_unix"].as_u64());
    out
}

/// A figure from the server's `/metrics` (the first line starting with `name`), 0 when absent.
pub fn metric_value(api_port: u16, name: &str) -> f64 {
    let metrics = reqwest::blocking::get(api_url(api_port, "/metrics"))
        .and_then(|r| r.text())
        .unwrap_or_default();
    metrics
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// True once the figure `name` reaches `at_least` within 4 s (the server gathers its figures
/// from the SIP loop about once a second).
pub fn metric_reaches(api_port: u16, name: &str, at_least: f64) -> bool {
    (0..40).any(|_| {
        if metric_value(api_port, name) >= at_least {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
        false
    })
}
