//! Hosts for multi-host tests: network namespaces the test makes itself, each joined by a veth
//! pair to one bridge in the test's own namespace (the "outside": carriers, phones and the
//! shared stores). Traffic stays on this machine. A host's cable can be cut (its veth set down)
//! to make a partition, not only a crash.
//!
//! Needs root (`ip netns`); without it [`Lab::create`] says so through
//! `test_support::peer_missing` (a failure under `SWITCHYARD_REQUIRE_PEERS`).

use std::process::{Command, Stdio};

/// Where a test process runs: a namespace of a [`Lab`] (or the test's own), and the address
/// it is reached at.
#[derive(Clone, Debug)]
pub struct Host {
    pub netns: Option<String>,
    pub addr: String,
}

impl Host {
    /// The test's own namespace on loopback.
    pub fn local() -> Host {
        Host {
            netns: None,
            addr: "127.0.0.1".into(),
        }
    }

    /// `program` to be run on this host.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match &self.netns {
            Some(ns) => {
                // `ip netns exec` execs the program: the child's pid is the program's, so
                // kill() reaches it.
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }
}

/// A bridge and named hosts on 10.213.`net`.0/24: the bridge (the test's side) is `.1`, host
/// `i` of the names given is `.11 + i`.
pub struct Lab {
    tag: String,
    net: u8,
    names: Vec<String>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Lab {
    /// Makes the bridge and one namespace per name (at most 8; names of one or two letters, as
    /// interface names are short). None, with a visible message, where the machine can't.
    pub fn create(names: &[&str]) -> Option<Lab> {
        assert!(names.len() <= 8 && names.iter().all(|n| n.len() <= 2));
        let net = (std::process::id() % 250) as u8 + 1;
        let lab = Lab {
            tag: format!("sy{net}"),
            net,
            names: names.iter().map(|n| n.to_string()).collect(),
        };
        // A run that was killed may have left its namespaces behind.
        lab.remove();
        match lab.build() {
            Ok(()) => Some(lab),
            Err(e) => {
                lab.remove();
                switchyard::test_support::peer_missing(&format!(
                    "network namespaces (ip netns, as root): {e}"
                ));
                None
            }
        }
    }

    fn bridge(&self) -> String {
        format!("{}br", self.tag)
    }

    fn veth(&self, name: &str) -> String {
        format!("{}{name}", self.tag)
    }

    fn netns(&self, name: &str) -> String {
        format!("{}-{name}", self.tag)
    }

    fn build(&self) -> Result<(), String> {
        let br = self.bridge();
        ip(&["link", "add", &br, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", self.gateway().addr),
            "dev",
            &br,
        ])?;
        ip(&["link", "set", &br, "up"])?;
        for name in &self.names {
            let (ns, veth) = (self.netns(name), self.veth(name));
            let addr = self.host(name).addr;
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["link", "set", &veth, "master", &br, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            // The test's other addresses (where a phone's SDP may point) are through the
            // bridge too.
            let gateway = self.gateway().addr;
            ip(&["-n", &ns, "route", "add", "default", "via", &gateway])?;
        }
        Ok(())
    }

    fn remove(&self) {
        for name in &self.names {
            let _ = ip(&["netns", "del", &self.netns(name)]);
            let _ = ip(&["link", "del", &self.veth(name)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }

    /// The test's own side of the bridge.
    pub fn gateway(&self) -> Host {
        Host {
            netns: None,
            addr: format!("10.213.{}.1", self.net),
        }
    }

    /// The lab's network, `10.213.N.0/24`.
    pub fn subnet(&self) -> String {
        format!("10.213.{}.0/24", self.net)
    }

    /// The bridge's interface name (to capture on).
    pub fn interface(&self) -> String {
        self.bridge()
    }

    /// Host `name`.
    pub fn host(&self, name: &str) -> Host {
        let i = self
            .names
            .iter()
            .position(|n| n == name)
            .unwrap_or_else(|| panic!("no host {name} in the lab"));
        Host {
            netns: Some(self.netns(name)),
            addr: format!("10.213.{}.{}", self.net, 11 + i),
        }
    }

    /// Cuts host `name` off the network (its link down: packets to and from it are lost, as
    /// in a partition; its processes run on).
    pub fn cut(&self, name: &str) {
        ip(&["link", "set", &self.veth(name), "down"]).expect("cut");
    }

    /// Joins host `name` again after [`Self::cut`].
    pub fn mend(&self, name: &str) {
        ip(&["link", "set", &self.veth(name), "up"]).expect("mend");
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Processes still inside keep a namespace alive: their owners are dropped first (a
        // lab is made before what runs in it).
        self.remove();
    }
}
