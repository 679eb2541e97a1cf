//! A PostgreSQL cluster of a test's own, which it can stop and start (the machine's shared
//! server can't be), on loopback or on a network the test made.

use std::path::PathBuf;
use std::process::Command;

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A PostgreSQL cluster of the test's own (PostgreSQL refuses to run as root: as root, its
/// commands run as the `postgres` user).
pub struct PrivatePostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    /// The address it listens on (loopback, or a test network's bridge).
    addr: String,
    port: u16,
}

impl PrivatePostgres {
    fn command(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        let mut c = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        c.current_dir("/");
        c
    }

    /// A new cluster on 127.0.0.1:`port` with a database `switchyard`.
    pub fn start_new(bin: PathBuf, port: u16) -> PrivatePostgres {
        Self::start_new_at(bin, "127.0.0.1", port)
    }

    /// [`Self::start_new`] listening on `addr`, taking anyone who reaches it (trust): for a
    /// network the test made itself.
    pub fn start_new_at(bin: PathBuf, addr: &str, port: u16) -> PrivatePostgres {
        let dir = tempfile::Builder::new()
            .prefix("sy-pg-")
            .tempdir_in("/tmp")
            .expect("tmp");
        if is_root() {
            let ok = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(ok.success());
        }
        let pg = PrivatePostgres {
            bin,
            dir,
            addr: addr.to_string(),
            port,
        };
        let out = pg
            .command("initdb")
            .arg("-D")
            .arg(pg.data())
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
            .output()
            .expect("initdb");
        assert!(out.status.success(), "initdb: {out:?}");
        if addr != "127.0.0.1" {
            let hba = pg.data().join("pg_hba.conf");
            let mut text = std::fs::read_to_string(&hba).expect("pg_hba.conf");
            text.push_str("host all all 0.0.0.0/0 trust\n");
            std::fs::write(&hba, text).expect("pg_hba.conf");
        }
        pg.start();
        let out = Command::new("psql")
            .args(["-h", addr, "-p", &port.to_string(), "-U", "postgres"])
            .args(["-d", "postgres", "-c", "CREATE DATABASE switchyard"])
            .output()
            .expect("psql");
        assert!(out.status.success(), "create database: {out:?}");
        pg
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@{}:{}/switchyard", self.addr, self.port)
    }

    pub fn start(&self) {
        let opts = format!(
            "-p {} -c listen_addresses={} -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.addr,
            self.dir.path().display()
        );
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("log"))
            .args(["-w", "-t", "60", "-o", &opts, "start"])
            .output()
            .expect("pg_ctl start");
        assert!(out.status.success(), "pg_ctl start: {out:?}");
    }

    /// Stops at once, as a crash would (no shutdown checkpoint).
    pub fn stop(&self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }

    /// `SELECT` through psql, one value.
    pub fn value(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .args([
                "-h",
                &self.addr,
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-d", "switchyard", "-tAc", sql])
            .output()
            .expect("psql");
        assert!(out.status.success(), "{sql}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.stop();
    }
}
