//! `switchyard doctor`: checks what an operator gets wrong before the first phone does, and
//! says what to fix. Each check gives a [`Finding`]; nothing is changed on the machine (the
//! data directory gets a probe file that is removed at once).
//!
//! Checks: the SIP listeners and the admin API can bind (or are held, by a running server),
//! the data directory is writable and private, the history store and blob storage answer,
//! the public address is one phones elsewhere can reach, and the RTP range has free ports.

use crate::settings::Settings;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::path::Path;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Fine.
    Ok,
    /// Works, but probably not as meant.
    Warn,
    /// Will not work: fix it before starting.
    Fail,
}

/// One check's result: what was checked, how it came out, and what to do.
#[derive(Debug, Clone)]
pub struct Finding {
    /// Ok, Warn or Fail.
    pub level: Level,
    /// What was checked.
    pub what: String,
    /// What was found and, when not ok, what to fix.
    pub detail: String,
}

fn finding(level: Level, what: impl Into<String>, detail: impl Into<String>) -> Finding {
    Finding {
        level,
        what: what.into(),
        detail: detail.into(),
    }
}

/// Runs every check for `settings`.
pub async fn run(settings: &Settings) -> Vec<Finding> {
    let mut out = Vec::new();
    listeners(settings, &mut out);
    out.push(data_dir(&settings.data_dir));
    stores(settings, &mut out).await;
    out.push(public_address(settings));
    out.push(rtp_range(settings));
    out
}

fn bind_problem(kind: &str, addr: SocketAddr) -> Option<std::io::Error> {
    let r = if kind == "udp" {
        UdpSocket::bind(addr).map(drop)
    } else {
        TcpListener::bind(addr).map(drop)
    };
    r.err()
}

fn listeners(settings: &Settings, out: &mut Vec<Finding>) {
    let mut wanted: Vec<(String, SocketAddr)> = Vec::new();
    match settings.listeners() {
        Ok(ls) => wanted.extend(ls.iter().map(|l| {
            let kind = format!("{:?}", l.transport).to_ascii_lowercase();
            (format!("sip {kind}:{}", l.addr), l.addr)
        })),
        Err(e) => out.push(finding(Level::Fail, "sip.listen", e.to_string())),
    }
    match settings.api_listen() {
        Ok(a) => wanted.push((format!("api tcp:{a}"), a)),
        Err(e) => out.push(finding(Level::Fail, "api.listen", e.to_string())),
    }
    for (name, addr) in wanted {
        let kind = if name.starts_with("sip udp") {
            "udp"
        } else {
            "tcp"
        };
        match bind_problem(kind, addr) {
            None => out.push(finding(Level::Ok, format!("listener {name}"), "can bind")),
            Some(e) if e.kind() == std::io::ErrorKind::AddrInUse => out.push(finding(
                Level::Fail,
                format!("listener {name}"),
                "address in use: another program (or a running switchyard) holds it; stop it or change the port",
            )),
            Some(e) if e.kind() == std::io::ErrorKind::PermissionDenied => out.push(finding(
                Level::Fail,
                format!("listener {name}"),
                "permission denied: ports below 1024 need CAP_NET_BIND_SERVICE (the systemd unit grants it)",
            )),
            Some(e) => out.push(finding(
                Level::Fail,
                format!("listener {name}"),
                format!("cannot bind: {e} (is the address one of this host's?)"),
            )),
        }
    }
}

fn data_dir(dir: &Path) -> Finding {
    use std::os::unix::fs::PermissionsExt;
    let what = format!("data_dir {}", dir.display());
    if let Err(e) = std::fs::create_dir_all(dir) {
        return finding(Level::Fail, what, format!("cannot create it: {e}"));
    }
    let probe = dir.join(format!(".doctor-{}", std::process::id()));
    if let Err(e) = std::fs::write(&probe, b"probe").and_then(|()| std::fs::remove_file(&probe)) {
        return finding(Level::Fail, what, format!("not writable: {e}"));
    }
    let mode = std::fs::metadata(dir)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0);
    if mode & 0o077 != 0 {
        return finding(
            Level::Warn,
            what,
            format!(
                "mode {mode:o}: it holds trunk passwords and recordings; the server makes it 0700 at start (chmod 700 now)"
            ),
        );
    }
    finding(Level::Ok, what, "writable, private (0700)")
}

async fn stores(settings: &Settings, out: &mut Vec<Finding>) {
    let url = settings.history_url();
    let shown = crate::history::redact_url(&url);
    let history = crate::history::HistoryStore::open(&url, 1);
    out.push(match history {
        Err(e) => finding(Level::Fail, format!("history {shown}"), e.to_string()),
        Ok(h) => {
            let r = tokio::time::timeout(std::time::Duration::from_secs(5), h.ping()).await;
            h.close().await;
            match r {
                Ok(Ok(())) => finding(Level::Ok, format!("history {shown}"), "answers"),
                Ok(Err(e)) => finding(
                    Level::Warn,
                    format!("history {shown}"),
                    format!("does not answer ({e}): calls work, records wait in the spool"),
                ),
                Err(_) => finding(
                    Level::Warn,
                    format!("history {shown}"),
                    "no answer within 5 s: calls work, records wait in the spool",
                ),
            }
        }
    });
    let blob = settings
        .blob_url()
        .map_err(|e| e.to_string())
        .and_then(|u| {
            crate::blob::BlobStore::open(&u, &settings.blob_options()).map_err(|e| e.to_string())
        });
    out.push(match blob {
        Err(e) => finding(Level::Fail, "blob storage", e),
        Ok(b) => {
            let what = format!("blob storage {}", b.url());
            match tokio::time::timeout(std::time::Duration::from_secs(5), b.ping()).await {
                Ok(Ok(())) => finding(Level::Ok, what, "answers"),
                Ok(Err(e)) => finding(
                    Level::Warn,
                    what,
                    format!("does not answer ({e}): audio waits in the spool"),
                ),
                Err(_) => finding(Level::Warn, what, "no answer within 5 s"),
            }
        }
    });
}

/// Addresses documentation uses (RFC 5737, RFC 3849): a config copied from an example.
fn is_documentation(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            matches!(
                (o[0], o[1], o[2]),
                (192, 0, 2) | (198, 51, 100) | (203, 0, 113)
            )
        }
        IpAddr::V6(v6) => v6.segments()[0] == 0x2001 && v6.segments()[1] == 0x0db8,
    }
}

fn public_address(settings: &Settings) -> Finding {
    let what = "sip.public_address";
    let ip = match settings.public_ip() {
        Err(e) => return finding(Level::Fail, what, e.to_string()),
        Ok(Some(ip)) => ip,
        Ok(None) => {
            return finding(
                Level::Warn,
                what,
                "not set: the listen address (or this host's primary address) goes into Via, Contact and SDP; set it when phones or trunks reach this node through NAT or a load balancer",
            )
        }
    };
    if is_documentation(ip) {
        return finding(
            Level::Fail,
            what,
            format!("{ip} is a documentation address (TEST-NET): nobody can reach it; put this node's real address"),
        );
    }
    if ip.is_loopback() || ip.is_unspecified() {
        return finding(
            Level::Warn,
            what,
            format!("{ip}: only phones on this machine can reach it"),
        );
    }
    let private = match ip {
        IpAddr::V4(v4) => v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00,
    };
    if private {
        return finding(
            Level::Ok,
            what,
            format!("{ip} (private: phones and trunks outside this network need NAT in front)"),
        );
    }
    finding(Level::Ok, what, format!("{ip}"))
}

fn rtp_range(settings: &Settings) -> Finding {
    let what = "media.rtp_ports";
    let (first, last) = match settings.rtp_ports() {
        Ok(r) => r,
        Err(e) => return finding(Level::Fail, what, e.to_string()),
    };
    let bind_ip: IpAddr = settings
        .media
        .bind_address
        .parse()
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    // A sample across the range: some ports taken is normal, most taken is not.
    let pairs: Vec<u16> = (first..last).step_by(2).collect();
    let step = (pairs.len() / 50).max(1);
    let sample: Vec<u16> = pairs.iter().copied().step_by(step).collect();
    let free = sample
        .iter()
        .filter(|&&p| UdpSocket::bind(SocketAddr::new(bind_ip, p)).is_ok())
        .count();
    let detail = format!(
        "{first}-{last}: {} call legs at most; {free} of {} sampled ports free (open the range in the firewall for UDP)",
        pairs.len(),
        sample.len()
    );
    if free * 2 < sample.len() {
        return finding(
            Level::Fail,
            what,
            format!("{detail}: most are taken by other programs; choose another range"),
        );
    }
    finding(Level::Ok, what, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documentation_addresses_are_recognised() {
        assert!(is_documentation("192.0.2.10".parse().expect("ip")));
        assert!(is_documentation("2001:db8::1".parse().expect("ip")));
        assert!(!is_documentation("8.8.8.8".parse().expect("ip")));
    }
}
