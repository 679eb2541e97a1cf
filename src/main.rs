//! The `switchyard` command line: the binary's edge, where `anyhow` turns every error into a
//! readable message and an exit code.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::time::Duration;
use switchyard::settings::Settings;
use switchyard::tenant::TenantConfig;

/// Switchyard: SIP registrar, B2BUA and call-control server.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Settings file (TOML); `SWITCHYARD_<SECTION>_<KEY>` environment variables override it.
    #[arg(long, global = true, env = "SWITCHYARD_CONFIG")]
    config: Option<PathBuf>,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server until SIGTERM/SIGINT (then drain live calls and exit 0).
    Serve {
        /// Load the demo tenant (users 100-102, IVR 500, echo 600, …) if it is missing, and
        /// make it the default tenant.
        #[arg(long)]
        demo: bool,
    },
    /// Drain the node running with these settings without stopping it: it answers new calls
    /// (and the balancer's OPTIONS probes) with 503 + Retry-After while its live calls go on.
    /// Talks to the node's admin API (`api.listen`, `api.admin_key`).
    Drain {
        /// Take new calls again instead.
        #[arg(long)]
        off: bool,
        /// Then wait up to this many seconds for the node's live calls to end (exit 1 if they
        /// have not).
        #[arg(long, value_name = "SECS")]
        wait: Option<u64>,
    },
    /// Tenant configuration.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Check this machine for what the settings need: listeners bind, data directory writable
    /// and private, history and blob stores answer, a public address phones can reach, free
    /// RTP ports. Prints what to fix; exits 1 when something will not work.
    Doctor,
    /// Check a settings file (and the environment) without starting anything.
    CheckConfig {
        /// The settings file.
        file: PathBuf,
    },
    /// Write the configuration (tenants, API keys) and the SQLite history to one file. Works
    /// with the server running (it writes the file) or stopped. The file holds secrets.
    Backup {
        /// Where to write (replaced if it exists).
        file: PathBuf,
    },
    /// Replace the configuration (and the SQLite history, when that is the history store)
    /// with a backup's. Needs the server stopped; refuses a file from a newer schema.
    Restore {
        /// The backup file.
        file: PathBuf,
    },
    /// Print the digest HA1 hashes for a user, for writing tenant files by hand.
    HashPassword {
        /// SIP username.
        username: String,
        /// Tenant realm (the tenant's `realm`, or its first domain).
        realm: String,
        /// The password (read from SWITCHYARD_PASSWORD when omitted, to keep it out of shell history).
        password: Option<String>,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Validate and store a tenant document (JSON). Works with the server running: the change
    /// reaches new calls at once.
    Import {
        /// The tenant document.
        file: PathBuf,
    },
    /// Print a tenant's stored document. User passwords and PINs exist only as hashes; trunk
    /// passwords (which must be kept in clear for digest towards the provider) are left out
    /// unless --include-secrets is given. Needs the server stopped.
    Export {
        /// Tenant id.
        id: String,
        /// Include trunk passwords.
        #[arg(long)]
        include_secrets: bool,
    },
    /// List tenant ids. Needs the server stopped.
    List,
}

fn init_logging(settings: &Settings, json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.log.level));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json || settings.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn doctor(settings: &Settings) -> Result<()> {
    use switchyard::doctor::Level;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let findings = runtime.block_on(switchyard::doctor::run(settings));
    for f in &findings {
        let tag = match f.level {
            Level::Ok => "ok  ",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        };
        println!("{tag} {}: {}", f.what, f.detail);
    }
    let failed = findings.iter().filter(|f| f.level == Level::Fail).count();
    if failed > 0 {
        // A verdict, not an error of the program: no backtrace, just the count and exit 1.
        println!("{failed} check(s) failed: fix them before starting the server");
        std::process::exit(1);
    }
    println!("nothing blocks the server from starting");
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let settings =
        Settings::load(cli.config.as_deref(), std::env::vars()).context("invalid settings")?;
    switchyard::server::restrict_new_files();
    match cli.command {
        Command::Serve { demo } => {
            init_logging(&settings, cli.log_json);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(switchyard::server::run(settings, demo))?;
            Ok(())
        }
        Command::Drain { off, wait } => drain(&settings, off, wait),
        Command::Tenant { command } => tenant_command(&settings, command),
        Command::Doctor => doctor(&settings),
        Command::Backup { file } => backup(&settings, &file),
        Command::Restore { file } => restore(&settings, &file),
        Command::CheckConfig { file } => {
            let s = Settings::load(Some(&file), std::env::vars())
                .with_context(|| format!("{} is not valid", file.display()))?;
            println!(
                "{}: ok ({} SIP listener(s), RTP {})",
                file.display(),
                s.listeners()?.len(),
                s.media.rtp_ports
            );
            Ok(())
        }
        Command::HashPassword {
            username,
            realm,
            password,
        } => {
            use switchyard::sip::digest::{ha1, DigestAlgorithm};
            let password = match password {
                Some(p) => p,
                None => std::env::var("SWITCHYARD_PASSWORD")
                    .context("give the password or set SWITCHYARD_PASSWORD")?,
            };
            println!(
                "\"ha1_md5\": \"{}\",",
                ha1(DigestAlgorithm::Md5, &username, &realm, &password)
            );
            println!(
                "\"ha1_sha256\": \"{}\"",
                ha1(DigestAlgorithm::Sha256, &username, &realm, &password)
            );
            Ok(())
        }
    }
}

/// The admin API's base URL for a client on this machine: a wildcard listen address is
/// reached on loopback.
fn local_api(settings: &Settings) -> Result<String> {
    let listen: std::net::SocketAddr = settings
        .api
        .listen
        .parse()
        .with_context(|| format!("api.listen {:?} is not an address", settings.api.listen))?;
    let ip = match listen.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    Ok(format!(
        "http://{}",
        std::net::SocketAddr::new(ip, listen.port())
    ))
}

fn drain(settings: &Settings, off: bool, wait: Option<u64>) -> Result<()> {
    if settings.api.admin_key.is_empty() {
        bail!("api.admin_key is not set: the drain goes through the admin API");
    }
    let base = local_api(settings)?;
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("HTTP client")?;
    let url = format!("{base}/v1/node/drain");
    let request = if off {
        http.delete(&url)
    } else {
        http.post(&url)
    };
    let r = request
        .bearer_auth(&settings.api.admin_key)
        .send()
        .with_context(|| format!("is the node running? {url}"))?;
    if !r.status().is_success() {
        bail!("{url}: {}", r.status());
    }
    let state: serde_json::Value = r.json().context("the node's answer")?;
    let draining = state["draining"].as_bool().unwrap_or(false);
    println!(
        "{}",
        if draining {
            "draining: new calls are refused (503), live calls go on"
        } else {
            "taking calls"
        }
    );
    let Some(secs) = wait.filter(|_| draining) else {
        return Ok(());
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let page: serde_json::Value = http
            .get(format!("{base}/v1/cluster"))
            .bearer_auth(&settings.api.admin_key)
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.json())
            .context("reading the node's live calls")?;
        let me = page["this_node"].clone();
        let live = page["nodes"]
            .as_array()
            .and_then(|nodes| nodes.iter().find(|n| n["node"] == me))
            .and_then(|n| n["live_calls"].as_u64())
            .unwrap_or(0);
        if live == 0 {
            println!("no live calls: the node can be stopped");
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            println!("{live} live call(s) still up after {secs} s");
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn tenant_command(settings: &Settings, command: TenantCommand) -> Result<()> {
    match command {
        TenantCommand::Import { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let cfg: TenantConfig = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a tenant document", file.display()))?;
            match switchyard::server::open_store(settings) {
                Ok((_db, store)) => {
                    let id = cfg.id.clone();
                    let rev = store.put(cfg)?;
                    println!("tenant {id} stored (revision {rev})");
                    Ok(())
                }
                // The server holds the database: hand the document to its inbox instead.
                Err(switchyard::server::ServerError::Db(_)) => {
                    import_via_inbox(&settings.data_dir, &cfg.id, &text)
                }
                Err(e) => Err(e.into()),
            }
        }
        TenantCommand::Export {
            id,
            include_secrets,
        } => {
            let (_db, store) = switchyard::server::open_store(settings)
                .context("opening the store (is the server running? stop it first)")?;
            let Some(mut cfg) = store.get(&id)? else {
                bail!("no tenant {id}")
            };
            if !include_secrets {
                for t in &mut cfg.trunks {
                    t.password = None;
                }
            }
            println!("{}", serde_json::to_string_pretty(&cfg)?);
            Ok(())
        }
        TenantCommand::List => {
            let (_db, store) = switchyard::server::open_store(settings)
                .context("opening the store (is the server running? stop it first)")?;
            for id in store.list() {
                println!("{id}");
            }
            Ok(())
        }
    }
}

fn import_via_inbox(data_dir: &Path, id: &str, text: &str) -> Result<()> {
    let done = inbox_request(
        data_dir,
        &format!("{id}-{}", std::process::id()),
        "json",
        text,
        Duration::from_secs(10),
    )?
    .map_err(|e| anyhow::anyhow!("the running server refused the tenant: {e}"))?;
    println!("tenant {id} stored by the running server ({done})");
    Ok(())
}

/// Hands `text` to the running server as `inbox/NAME.EXT` and waits up to `wait` for its
/// answer: `NAME.done` gives Ok(Ok(text)), `NAME.error` Ok(Err(text)); no answer is an error.
fn inbox_request(
    data_dir: &Path,
    name: &str,
    ext: &str,
    text: &str,
    wait: Duration,
) -> Result<std::result::Result<String, String>> {
    let inbox = data_dir.join("inbox");
    std::fs::create_dir_all(&inbox)?;
    let tmp = inbox.join(format!("{name}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, inbox.join(format!("{name}.{ext}")))?;
    let end = std::time::Instant::now() + wait;
    while std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
        for (answer, ok) in [("done", true), ("error", false)] {
            let path = inbox.join(format!("{name}.{answer}"));
            if let Ok(t) = std::fs::read_to_string(&path) {
                let _ = std::fs::remove_file(&path);
                let t = t.trim().to_string();
                return Ok(if ok { Ok(t) } else { Err(t) });
            }
        }
    }
    bail!(
        "the database is locked and no running server answered within {} s",
        wait.as_secs()
    )
}

fn absolute(p: &Path) -> Result<PathBuf> {
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    })
}

fn backup(settings: &Settings, file: &Path) -> Result<()> {
    let dest = absolute(file)?;
    std::fs::create_dir_all(&settings.data_dir)?;
    match switchyard::localdb::LocalDb::open(&settings.data_dir) {
        Ok(db) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let m = runtime.block_on(async {
                let history = switchyard::history::HistoryStore::open(
                    &settings.history_url(),
                    settings.history.max_connections,
                )?;
                let m = switchyard::backup::create(&db, &history, &dest).await;
                history.close().await;
                m
            })?;
            println!(
                "backup written to {} ({} tenant(s), history: {})",
                dest.display(),
                m.tenants.len(),
                if m.history_schema.is_some() {
                    "included"
                } else {
                    "PostgreSQL, not included (use pg_dump)"
                }
            );
            Ok(())
        }
        // The server holds the database: it writes the backup itself.
        Err(_) => {
            let done = inbox_request(
                &settings.data_dir,
                &format!("backup-{}", std::process::id()),
                "backup",
                &dest.to_string_lossy(),
                Duration::from_secs(60),
            )?
            .map_err(|e| anyhow::anyhow!("the running server could not do the backup: {e}"))?;
            println!("{done}");
            Ok(())
        }
    }
}

fn restore(settings: &Settings, file: &Path) -> Result<()> {
    let db = switchyard::localdb::LocalDb::open(&settings.data_dir)
        .context("opening the local database (a running server holds it: stop the server first)")?;
    let url = settings.history_url();
    let sqlite = url
        .strip_prefix("sqlite://")
        .map(|p| PathBuf::from(p.split('?').next().unwrap_or(p)));
    let r = switchyard::backup::restore(file, &db, sqlite.as_deref())
        .with_context(|| format!("restoring {}", file.display()))?;
    println!(
        "restored {} tenant(s) from a backup of {} (switchyard {}); history: {}",
        r.manifest.tenants.len(),
        r.manifest.created_unix,
        r.manifest.switchyard_version,
        match (r.history_restored, r.manifest.history_schema.is_some()) {
            (true, _) => "restored",
            (false, true) => "in the file but not restored (this node's history is PostgreSQL)",
            (false, false) => "not in the file",
        }
    );
    Ok(())
}
