//! Settings: built-in defaults, overridden by a TOML file, overridden by environment variables
//! named `SWITCHYARD_<SECTION>_<KEY>` (`SWITCHYARD_<KEY>` for top-level keys such as
//! `data_dir`). `config/switchyard.toml` documents every key with its default.
//!
//! Every key has a concrete default (empty string means "not set"), so the list of keys that
//! environment variables may override is simply the default document's keys. A bad value fails
//! start-up with an error naming the key.

use crate::sip::digest::DigestAlgorithm;
use crate::sip::endpoint::TransportKind;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// A setting that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File path.
        path: PathBuf,
        /// I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys / wrong types.
    #[error("{path}: {message}")]
    File {
        /// File path.
        path: PathBuf,
        /// What is wrong (the TOML library names the key and line).
        message: String,
    },
    /// A key has an unusable value.
    #[error("setting {key}: {message}")]
    Invalid {
        /// Dotted key, e.g. `sip.listen`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

fn invalid(key: &str, message: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

/// All settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Where the node keeps its local database, spool and files.
    pub data_dir: PathBuf,
    /// Logging.
    pub log: LogSettings,
    /// SIP.
    pub sip: SipSettings,
    /// Media.
    pub media: MediaSettings,
    /// Admin API.
    pub api: ApiSettings,
    /// Tenants.
    pub tenant: TenantSettings,
    /// Shutdown behaviour.
    pub shutdown: ShutdownSettings,
    /// History store (call logs, voicemail and recording metadata, audit).
    pub history: HistorySettings,
    /// Blob storage (audio).
    pub blob: BlobSettings,
    /// Running as one of several nodes.
    pub cluster: ClusterSettings,
}

/// `[cluster]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// NATS servers (`nats://host:4222`, several for a NATS cluster). Empty: a single node.
    pub nats_url: Vec<String>,
    /// This node's name in the cluster (NATS client name, logs). Empty: the host name.
    pub node_id: String,
    /// The JetStream key-value bucket holding tenant documents.
    pub config_bucket: String,
    /// The JetStream key-value bucket holding registrations (every node's).
    pub bindings_bucket: String,
    /// The JetStream key-value bucket holding tenant API keys (hashes and records).
    pub keys_bucket: String,
    /// The JetStream key-value bucket holding which version of each prompt is current.
    pub prompts_bucket: String,
    /// The JetStream key-value bucket holding every voicemail message's metadata.
    pub voicemail_bucket: String,
    /// Copies of the bucket the NATS cluster keeps (3 with three NATS servers).
    pub config_replicas: u32,
    /// How long an admin API write may wait for NATS (a reconnect, a leader election) before
    /// answering 503.
    pub request_timeout_secs: u64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            nats_url: Vec::new(),
            node_id: String::new(),
            config_bucket: "switchyard_tenants".into(),
            bindings_bucket: "switchyard_bindings".into(),
            keys_bucket: "switchyard_keys".into(),
            prompts_bucket: "switchyard_prompts".into(),
            voicemail_bucket: "switchyard_voicemail".into(),
            config_replicas: 1,
            request_timeout_secs: 10,
        }
    }
}

/// `[history]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistorySettings {
    /// `sqlite://PATH` or `postgres://…`; empty: SQLite at `data_dir/history.sqlite`.
    pub url: String,
    /// Most connections to PostgreSQL.
    pub max_connections: u32,
    /// `/health/ready` fails once a store has been failing this long.
    pub failing_after_secs: u64,
    /// How often retention runs.
    pub retention_interval_secs: u64,
}

/// `[blob]`
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct BlobSettings {
    /// `file:///path`, `s3://bucket` or `az://container`; empty: `data_dir/blobs`.
    pub url: String,
    /// S3 or Azure endpoint (an S3-compatible server, Azurite).
    pub endpoint: String,
    /// S3 region.
    pub region: String,
    /// S3 access key id (else `AWS_ACCESS_KEY_ID`).
    pub access_key_id: String,
    /// S3 secret (else `AWS_SECRET_ACCESS_KEY`).
    pub secret_access_key: String,
    /// Allow http:// endpoints.
    pub allow_http: bool,
    /// S3 virtual-hosted-style requests instead of path-style.
    pub virtual_hosted: bool,
    /// Azure storage account (else `AZURE_STORAGE_ACCOUNT_NAME`).
    pub account: String,
    /// Azure access key (else `AZURE_STORAGE_ACCOUNT_KEY`).
    pub access_key: String,
    /// Azure: use the Azurite emulator (`devstoreaccount1`; endpoint from `blob.endpoint`).
    pub use_emulator: bool,
}

impl Default for HistorySettings {
    fn default() -> Self {
        HistorySettings {
            url: String::new(),
            max_connections: 8,
            failing_after_secs: 60,
            retention_interval_secs: 3600,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `pretty` or `json`.
    pub format: String,
    /// Filter in `RUST_LOG` syntax; `RUST_LOG` itself wins when set.
    pub level: String,
}

/// `[sip]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipSettings {
    /// Listeners, `transport:ip:port`.
    pub listen: Vec<String>,
    /// Address put in Via, Contact and SDP when it differs from the bound one (NAT, load
    /// balancer). Empty: the listen address (or this host's primary address for 0.0.0.0).
    pub public_address: String,
    /// Digest algorithms offered, in this order.
    pub auth_algorithms: Vec<String>,
    /// Seconds a nonce stays valid.
    pub nonce_lifetime_secs: u64,
    /// Secret for nonces (hex, 64 digits); empty: random at each start. Set it on every node
    /// behind a load balancer so any node accepts another's nonces.
    pub nonce_secret: String,
    /// Wrong passwords for one username from one source address within `auth_window_secs`
    /// before that username is refused from that address (other users there keep working).
    pub auth_max_failures: u32,
    /// Distinct usernames failing from one source address within `auth_window_secs` before
    /// the address is treated as a scanner and refused for every user.
    pub auth_max_users_per_source: u32,
    /// Window for counting failures.
    pub auth_window_secs: u64,
    /// First block; each repeat doubles it, up to `auth_block_max_secs`.
    pub auth_block_secs: u64,
    /// Longest block, and how long repeats are remembered.
    pub auth_block_max_secs: u64,
    /// Shortest registration accepted (shorter: 423).
    pub min_expires: u32,
    /// Longest registration granted.
    pub max_expires: u32,
    /// Registration length when the phone names none.
    pub default_expires: u32,
    /// RFC 3261 T1 in milliseconds.
    pub t1_ms: u64,
    /// Shortest session-timer interval accepted (RFC 4028 Min-SE), seconds.
    pub session_min_secs: u32,
    /// Server transactions alive at once (beyond: new requests are dropped unanswered).
    pub max_transactions: u32,
    /// Server transactions alive at once from one address; trunks' addresses are exempt.
    pub max_transactions_per_source: u32,
    /// MWI subscriptions one user may hold (beyond: 403).
    pub max_subscriptions_per_user: u32,
    /// Close TCP connections idle this long.
    pub tcp_idle_timeout_secs: u64,
    /// Most simultaneous TCP connections (and, separately, WebSocket connections).
    pub tcp_max_connections: u32,
    /// Open TCP/WebSocket connections from one address (more are closed at once).
    pub tcp_max_connections_per_ip: u32,
    /// PEM certificate chain for `tls:` and `wss:` listeners (reloaded when the file changes).
    pub tls_cert: String,
    /// SIP proxies in front of this node (IPs or CIDR networks): requests from them are
    /// judged by the client they relayed, and their REGISTERs' Path is kept.
    pub trusted_proxies: Vec<String>,
    /// PEM private key for `tls:` and `wss:` listeners.
    pub tls_key: String,
    /// Extra CA certificates (PEM) trusted for TLS trunks, beside the system's roots.
    pub tls_trunk_ca: String,
    /// PEM certificate chain this node presents to TLS trunks that ask for one (mutual TLS);
    /// reloaded when the file changes.
    pub tls_client_cert: String,
    /// PEM private key for `tls_client_cert`.
    pub tls_client_key: String,
    /// CA certificates (PEM) that client certificates on `tls:` listeners are verified
    /// against (peers proving a name for RFC 5923 connection reuse); empty: none asked for.
    pub tls_client_ca: String,
    /// DNS servers (`IP` or `IP:port`) for trunk names; empty: the system's
    /// (`/etc/resolv.conf`).
    pub dns_servers: Vec<String>,
}

/// `[media]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaSettings {
    /// RTP port range, `first-last`.
    pub rtp_ports: String,
    /// Address RTP sockets bind to; empty: all interfaces.
    pub bind_address: String,
    /// Media worker threads; 0: one per core.
    pub workers: u32,
    /// Hang a call up after this many seconds without RTP from the caller (not while on hold).
    pub rtp_timeout_secs: u64,
    /// In-band DTMF detection: `auto` (when the phone negotiated no telephone-event), `always`, `off`.
    pub inband_dtmf: String,
    /// Folder of prompt WAV files (`system/beep` is `prompts_dir/system/beep.wav`).
    pub prompts_dir: String,
}

/// `[api]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSettings {
    /// Admin API listen address.
    pub listen: String,
    /// Admin key (Bearer token) that manages tenants; empty disables admin access.
    pub admin_key: String,
    /// Unknown keys per address within a minute before it gets 429 for 5 minutes (doubling on
    /// repeats). Valid keys always work.
    pub auth_max_failures: u32,
    /// Who may read `/metrics` without a key: `loopback` (clients on 127.0.0.1/::1; others
    /// need a key), `key` (everyone needs a key) or `open`.
    pub metrics: String,
}

/// `[tenant]`
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TenantSettings {
    /// Tenant used when the request host is an IP address or an unknown domain.
    pub default: String,
    /// Let trunks point at this node's own addresses (loopback, the public address): only for
    /// a provider or test peer running on the same machine. Off: such trunks are refused.
    pub allow_local_trunks: bool,
}

/// `[shutdown]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownSettings {
    /// Seconds live calls may continue after SIGTERM before they are hung up.
    pub drain_timeout_secs: u64,
    /// Retry-After seconds on the 503 sent to new calls while draining.
    pub retry_after_secs: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            data_dir: PathBuf::from("switchyard-data"),
            log: LogSettings::default(),
            sip: SipSettings::default(),
            media: MediaSettings::default(),
            api: ApiSettings::default(),
            tenant: TenantSettings::default(),
            shutdown: ShutdownSettings::default(),
            history: HistorySettings::default(),
            blob: BlobSettings::default(),
            cluster: ClusterSettings::default(),
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: "pretty".into(),
            level: "info".into(),
        }
    }
}

impl Default for SipSettings {
    fn default() -> Self {
        SipSettings {
            listen: vec![
                "udp:0.0.0.0:5060".into(),
                "tcp:0.0.0.0:5060".into(),
                "ws:0.0.0.0:5066".into(),
            ],
            public_address: String::new(),
            auth_algorithms: vec!["MD5".into(), "SHA-256".into()],
            nonce_lifetime_secs: 300,
            nonce_secret: String::new(),
            auth_max_failures: 10,
            auth_max_users_per_source: 10,
            auth_window_secs: 60,
            auth_block_secs: 300,
            auth_block_max_secs: 86_400,
            min_expires: 60,
            max_expires: 7200,
            default_expires: 3600,
            t1_ms: 500,
            session_min_secs: 90,
            max_transactions: 100_000,
            max_transactions_per_source: 1_000,
            max_subscriptions_per_user: 20,
            tcp_idle_timeout_secs: 600,
            tcp_max_connections: 4096,
            tcp_max_connections_per_ip: 100,
            tls_cert: String::new(),
            trusted_proxies: Vec::new(),
            tls_trunk_ca: String::new(),
            tls_client_cert: String::new(),
            tls_client_key: String::new(),
            tls_client_ca: String::new(),
            dns_servers: Vec::new(),
            tls_key: String::new(),
        }
    }
}

impl Default for MediaSettings {
    fn default() -> Self {
        MediaSettings {
            rtp_ports: "20000-29999".into(),
            bind_address: String::new(),
            workers: 0,
            rtp_timeout_secs: 30,
            inband_dtmf: "auto".into(),
            prompts_dir: "prompts".into(),
        }
    }
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            listen: "127.0.0.1:8080".into(),
            admin_key: String::new(),
            auth_max_failures: 20,
            metrics: "loopback".into(),
        }
    }
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        ShutdownSettings {
            drain_timeout_secs: 60,
            retry_after_secs: 30,
        }
    }
}

/// One SIP listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    /// Transport.
    pub transport: TransportKind,
    /// Address to bind.
    pub addr: SocketAddr,
}

impl Settings {
    /// Defaults ← `file` (if any) ← environment (`vars`, normally `std::env::vars()`).
    pub fn load(
        file: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, SettingsError> {
        let mut doc = toml::Value::try_from(Settings::default())
            .map_err(|e| invalid("(defaults)", e.to_string()))?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            let file_doc: toml::Value = toml::from_str(&text).map_err(|e| SettingsError::File {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
            merge(&mut doc, file_doc, "").map_err(|message| SettingsError::File {
                path: path.to_path_buf(),
                message,
            })?;
        }
        let vars: Vec<(String, String)> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with("SWITCHYARD_"))
            .collect();
        apply_env(&mut doc, &vars)?;
        let settings: Settings = doc
            .try_into()
            .map_err(|e: toml::de::Error| invalid("(settings)", e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks every value that has a format, naming the key at fault.
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.listeners()?;
        self.rtp_ports()?;
        self.public_ip()?;
        self.algorithms()?;
        self.nonce_secret()?;
        self.api_listen()?;
        self.inband_dtmf()?;
        self.metrics_access()?;
        if self.media.rtp_timeout_secs == 0 {
            return Err(invalid("media.rtp_timeout_secs", "must be at least 1"));
        }
        if !matches!(self.log.format.as_str(), "pretty" | "json") {
            return Err(invalid("log.format", "must be pretty or json"));
        }
        if self.sip.min_expires == 0 || self.sip.min_expires > self.sip.max_expires {
            return Err(invalid(
                "sip.min_expires",
                "must be at least 1 and at most sip.max_expires",
            ));
        }
        if self.sip.default_expires < self.sip.min_expires
            || self.sip.default_expires > self.sip.max_expires
        {
            return Err(invalid(
                "sip.default_expires",
                "must lie between sip.min_expires and sip.max_expires",
            ));
        }
        if !(50..=5000).contains(&self.sip.t1_ms) {
            return Err(invalid("sip.t1_ms", "must be 50-5000"));
        }
        if !(1..=86_400).contains(&self.sip.session_min_secs) {
            return Err(invalid("sip.session_min_secs", "must be 1-86400"));
        }
        if self.sip.nonce_lifetime_secs < 10 {
            return Err(invalid("sip.nonce_lifetime_secs", "must be at least 10"));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        let h = self.history_url();
        if !(h.starts_with("sqlite://")
            || h.starts_with("postgres://")
            || h.starts_with("postgresql://"))
        {
            return Err(invalid(
                "history.url",
                "must be sqlite://PATH or postgres://…",
            ));
        }
        if self.history.max_connections == 0 {
            return Err(invalid("history.max_connections", "must be at least 1"));
        }
        if self.history.retention_interval_secs < 10 {
            return Err(invalid(
                "history.retention_interval_secs",
                "must be at least 10",
            ));
        }
        self.blob_url()?;
        self.cluster_checks()?;
        self.trusted_proxies()?;
        self.dns_servers()?;
        if self.sip.tls_client_cert.is_empty() != self.sip.tls_client_key.is_empty() {
            return Err(invalid(
                "sip.tls_client_cert",
                "sip.tls_client_cert and sip.tls_client_key go together",
            ));
        }
        Ok(())
    }

    /// Parsed `sip.dns_servers` (port 53 when none is given).
    pub fn dns_servers(&self) -> Result<Vec<std::net::SocketAddr>, SettingsError> {
        self.sip
            .dns_servers
            .iter()
            .map(|s| {
                let s = s.trim();
                s.parse::<std::net::SocketAddr>()
                    .ok()
                    .or_else(|| {
                        s.trim_matches(|c| c == '[' || c == ']')
                            .parse::<IpAddr>()
                            .ok()
                            .map(|ip| std::net::SocketAddr::new(ip, 53))
                    })
                    .ok_or_else(|| {
                        invalid(
                            "sip.dns_servers",
                            format!("{s:?} is not IP or IP:port (127.0.0.53, 10.0.0.2:5353)"),
                        )
                    })
            })
            .collect()
    }

    /// Parsed `sip.trusted_proxies`.
    pub fn trusted_proxies(&self) -> Result<Vec<(IpAddr, u8)>, SettingsError> {
        self.sip
            .trusted_proxies
            .iter()
            .map(|p| {
                crate::tenant::validate::parse_cidr(p.trim()).ok_or_else(|| {
                    invalid(
                        "sip.trusted_proxies",
                        format!("{p:?} is not an IP address or network (10.0.0.5, 10.0.0.0/24)"),
                    )
                })
            })
            .collect()
    }

    /// `[cluster]`: URLs NATS can use, a bucket name JetStream accepts, sane numbers.
    fn cluster_checks(&self) -> Result<(), SettingsError> {
        let c = &self.cluster;
        for url in &c.nats_url {
            if url.parse::<async_nats::ServerAddr>().is_err() {
                return Err(invalid(
                    "cluster.nats_url",
                    format!("{url:?} is not a NATS server address (nats://host:4222)"),
                ));
            }
        }
        for (key, bucket) in [
            ("cluster.config_bucket", &c.config_bucket),
            ("cluster.bindings_bucket", &c.bindings_bucket),
            ("cluster.keys_bucket", &c.keys_bucket),
            ("cluster.prompts_bucket", &c.prompts_bucket),
            ("cluster.voicemail_bucket", &c.voicemail_bucket),
        ] {
            let ok = !bucket.is_empty()
                && bucket.len() <= 64
                && bucket
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-');
            if !ok {
                return Err(invalid(
                    key,
                    "must be 1-64 characters of A-Z, a-z, 0-9, _ and -",
                ));
            }
        }
        let buckets = [
            &c.config_bucket,
            &c.bindings_bucket,
            &c.keys_bucket,
            &c.prompts_bucket,
            &c.voicemail_bucket,
        ];
        if (0..buckets.len()).any(|i| buckets[i + 1..].contains(&buckets[i])) {
            return Err(invalid(
                "cluster.bindings_bucket",
                "cluster.config_bucket, bindings_bucket, keys_bucket, prompts_bucket and voicemail_bucket must differ",
            ));
        }
        if !(1..=5).contains(&c.config_replicas) {
            return Err(invalid("cluster.config_replicas", "must be 1-5"));
        }
        if !(1..=60).contains(&c.request_timeout_secs) {
            return Err(invalid("cluster.request_timeout_secs", "must be 1-60"));
        }
        if c.node_id.len() > 64 || c.node_id.chars().any(|ch| ch.is_control() || ch == ' ') {
            return Err(invalid(
                "cluster.node_id",
                "must be at most 64 characters, without spaces or control characters",
            ));
        }
        Ok(())
    }

    /// This node's name: `cluster.node_id`, else the host name.
    pub fn node_id(&self) -> String {
        if !self.cluster.node_id.is_empty() {
            return self.cluster.node_id.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "switchyard".into())
    }

    /// Parsed `sip.listen`.
    pub fn listeners(&self) -> Result<Vec<Listener>, SettingsError> {
        if self.sip.listen.is_empty() {
            return Err(invalid("sip.listen", "at least one listener is needed"));
        }
        let mut out = Vec::new();
        for entry in &self.sip.listen {
            let (tp, addr) = entry.split_once(':').ok_or_else(|| {
                invalid("sip.listen", format!("{entry:?} is not transport:ip:port"))
            })?;
            let transport = match tp.to_ascii_lowercase().as_str() {
                "udp" => TransportKind::Udp,
                "tcp" => TransportKind::Tcp,
                "tls" => TransportKind::Tls,
                "ws" => TransportKind::Ws,
                "wss" => TransportKind::Wss,
                other => {
                    return Err(invalid(
                        "sip.listen",
                        format!("unknown transport {other:?} (udp, tcp, tls, ws or wss)"),
                    ))
                }
            };
            if matches!(transport, TransportKind::Wss | TransportKind::Tls)
                && (self.sip.tls_cert.is_empty() || self.sip.tls_key.is_empty())
            {
                return Err(invalid(
                    "sip.tls_cert",
                    format!("a {tp} listener needs sip.tls_cert and sip.tls_key (PEM files)"),
                ));
            }
            let addr: SocketAddr = addr
                .parse()
                .map_err(|_| invalid("sip.listen", format!("{addr:?} is not ip:port")))?;
            if out.iter().any(|l: &Listener| l.transport == transport) {
                return Err(invalid(
                    "sip.listen",
                    format!("more than one {tp} listener"),
                ));
            }
            out.push(Listener { transport, addr });
        }
        Ok(out)
    }

    /// Parsed `media.rtp_ports`.
    pub fn rtp_ports(&self) -> Result<(u16, u16), SettingsError> {
        let key = "media.rtp_ports";
        let (a, b) = self
            .media
            .rtp_ports
            .split_once('-')
            .ok_or_else(|| invalid(key, "must be first-last, e.g. 20000-29999"))?;
        let a: u16 = a
            .trim()
            .parse()
            .map_err(|_| invalid(key, "first port is not a number"))?;
        let b: u16 = b
            .trim()
            .parse()
            .map_err(|_| invalid(key, "last port is not a number"))?;
        if a < 1024 || b <= a + 2 {
            return Err(invalid(
                key,
                "range must start at 1024 or above and hold at least two ports pairs",
            ));
        }
        Ok((a, b))
    }

    /// Parsed `sip.public_address` (None when unset).
    pub fn public_ip(&self) -> Result<Option<IpAddr>, SettingsError> {
        if self.sip.public_address.is_empty() {
            return Ok(None);
        }
        self.sip
            .public_address
            .parse()
            .map(Some)
            .map_err(|_| invalid("sip.public_address", "must be an IP address"))
    }

    /// Parsed `sip.auth_algorithms`.
    pub fn algorithms(&self) -> Result<Vec<DigestAlgorithm>, SettingsError> {
        let key = "sip.auth_algorithms";
        if self.sip.auth_algorithms.is_empty() {
            return Err(invalid(key, "at least one algorithm is needed"));
        }
        self.sip
            .auth_algorithms
            .iter()
            .map(|a| {
                DigestAlgorithm::from_token(a)
                    .ok_or_else(|| invalid(key, format!("unknown algorithm {a:?} (MD5, SHA-256)")))
            })
            .collect()
    }

    /// Parsed `sip.nonce_secret` (None: random).
    pub fn nonce_secret(&self) -> Result<Option<[u8; 32]>, SettingsError> {
        if self.sip.nonce_secret.is_empty() {
            return Ok(None);
        }
        let bytes = hex::decode(&self.sip.nonce_secret)
            .map_err(|_| invalid("sip.nonce_secret", "must be hex"))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| invalid("sip.nonce_secret", "must be 64 hex digits (32 bytes)"))?;
        Ok(Some(arr))
    }

    /// Parsed `api.metrics`.
    pub fn metrics_access(&self) -> Result<crate::api::MetricsAccess, SettingsError> {
        use crate::api::MetricsAccess;
        match self.api.metrics.as_str() {
            "loopback" => Ok(MetricsAccess::Loopback),
            "key" => Ok(MetricsAccess::Key),
            "open" => Ok(MetricsAccess::Open),
            _ => Err(invalid("api.metrics", "must be loopback, key or open")),
        }
    }

    /// Parsed `media.inband_dtmf`.
    pub fn inband_dtmf(&self) -> Result<crate::media::leg::InbandDtmf, SettingsError> {
        use crate::media::leg::InbandDtmf;
        match self.media.inband_dtmf.as_str() {
            "auto" => Ok(InbandDtmf::Auto),
            "always" => Ok(InbandDtmf::Always),
            "off" => Ok(InbandDtmf::Off),
            _ => Err(invalid("media.inband_dtmf", "must be auto, always or off")),
        }
    }

    /// Parsed `api.listen`.
    /// The history store URL (SQLite under `data_dir` when unset).
    pub fn history_url(&self) -> String {
        if self.history.url.is_empty() {
            format!(
                "sqlite://{}",
                self.data_dir.join("history.sqlite").display()
            )
        } else {
            self.history.url.clone()
        }
    }

    /// The blob store URL (`file://data_dir/blobs` when unset).
    pub fn blob_url(&self) -> Result<String, SettingsError> {
        if self.blob.url.is_empty() {
            let dir = if self.data_dir.is_absolute() {
                self.data_dir.join("blobs")
            } else {
                std::env::current_dir()
                    .map_err(|e| invalid("data_dir", e.to_string()))?
                    .join(&self.data_dir)
                    .join("blobs")
            };
            return Ok(format!("file://{}", dir.display()));
        }
        let u = &self.blob.url;
        if !(u.starts_with("file:///") || u.starts_with("s3://") || u.starts_with("az://")) {
            return Err(invalid(
                "blob.url",
                "must be file:///absolute/path, s3://bucket or az://container",
            ));
        }
        Ok(u.clone())
    }

    /// Options for the S3 and Azure backends.
    pub fn blob_options(&self) -> crate::blob::BlobOptions {
        let b = &self.blob;
        crate::blob::BlobOptions {
            endpoint: b.endpoint.clone(),
            region: b.region.clone(),
            access_key_id: b.access_key_id.clone(),
            secret_access_key: b.secret_access_key.clone(),
            allow_http: b.allow_http,
            virtual_hosted: b.virtual_hosted,
            account: b.account.clone(),
            access_key: b.access_key.clone(),
            use_emulator: b.use_emulator,
        }
    }

    pub fn api_listen(&self) -> Result<SocketAddr, SettingsError> {
        self.api
            .listen
            .parse()
            .map_err(|_| invalid("api.listen", "must be ip:port"))
    }
}

/// Overlays `from` onto `into`, refusing keys the defaults do not have.
fn merge(into: &mut toml::Value, from: toml::Value, path: &str) -> Result<(), String> {
    match (into, from) {
        (toml::Value::Table(a), toml::Value::Table(b)) => {
            for (k, v) in b {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match a.get_mut(&k) {
                    Some(slot) => merge(slot, v, &p)?,
                    None => return Err(format!("unknown setting {p}")),
                }
            }
            Ok(())
        }
        (slot, v) => {
            if std::mem::discriminant(slot) != std::mem::discriminant(&v) {
                return Err(format!(
                    "setting {path}: expected {}, found {}",
                    slot.type_str(),
                    v.type_str()
                ));
            }
            *slot = v;
            Ok(())
        }
    }
}

fn apply_env(doc: &mut toml::Value, vars: &[(String, String)]) -> Result<(), SettingsError> {
    let toml::Value::Table(root) = doc else {
        return Ok(());
    };
    // (variable name, section, key within section)
    let mut known: Vec<(String, String, Option<String>)> = Vec::new();
    for (section, value) in root.iter() {
        match value {
            toml::Value::Table(t) => {
                for key in t.keys() {
                    let name = format!("SWITCHYARD_{section}_{key}").to_ascii_uppercase();
                    known.push((name, section.clone(), Some(key.clone())));
                }
            }
            _ => known.push((
                format!("SWITCHYARD_{section}").to_ascii_uppercase(),
                section.clone(),
                None,
            )),
        }
    }
    for (name, value) in vars {
        if name == "SWITCHYARD_CONFIG" {
            continue;
        }
        let Some((_, section, key)) = known.iter().find(|(n, _, _)| n == name) else {
            // A typo in a setting of a known section is an error; other SWITCHYARD_* names
            // (SWITCHYARD_PASSWORD, test harness switches, …) are not settings.
            let in_section = root.iter().any(|(sec, v)| {
                v.is_table()
                    && name.starts_with(&format!("SWITCHYARD_{}_", sec.to_ascii_uppercase()))
            });
            if in_section {
                return Err(invalid(name, "unknown environment setting"));
            }
            continue;
        };
        let dotted = match key {
            Some(k) => format!("{section}.{k}"),
            None => section.clone(),
        };
        let slot = match (root.get_mut(section), key) {
            (Some(toml::Value::Table(t)), Some(k)) => t.get_mut(k),
            (slot, None) => slot,
            _ => None,
        };
        let Some(slot) = slot else { continue };
        *slot = env_value(slot, name, value, &dotted)?;
    }
    Ok(())
}

/// Converts an environment string to the type the default has.
fn env_value(
    slot: &toml::Value,
    name: &str,
    value: &str,
    key: &str,
) -> Result<toml::Value, SettingsError> {
    Ok(match slot {
        toml::Value::String(_) => toml::Value::String(value.to_string()),
        toml::Value::Integer(_) => toml::Value::Integer(
            value
                .trim()
                .parse()
                .map_err(|_| invalid(key, format!("{name}={value:?} is not a whole number")))?,
        ),
        toml::Value::Boolean(_) => toml::Value::Boolean(
            value
                .trim()
                .parse()
                .map_err(|_| invalid(key, format!("{name}={value:?} is not true or false")))?,
        ),
        toml::Value::Array(_) => toml::Value::Array(
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ),
        _ => return Err(invalid(key, "cannot be set from the environment")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid() {
        let s = Settings::load(None, env(&[])).expect("defaults");
        assert_eq!(s.listeners().expect("listeners").len(), 3);
        assert_eq!(s.rtp_ports().expect("ports"), (20000, 29999));
        assert_eq!(s.algorithms().expect("algs")[0], DigestAlgorithm::Md5);
    }

    #[test]
    fn environment_overrides() {
        let s = Settings::load(
            None,
            env(&[
                ("SWITCHYARD_DATA_DIR", "/tmp/x"),
                (
                    "SWITCHYARD_SIP_LISTEN",
                    "udp:127.0.0.1:5070, tcp:127.0.0.1:5071",
                ),
                ("SWITCHYARD_MEDIA_RTP_PORTS", "30000-30100"),
                ("SWITCHYARD_API_ADMIN_KEY", "k"),
                ("SWITCHYARD_SIP_T1_MS", "250"),
            ]),
        )
        .expect("load");
        assert_eq!(s.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(s.listeners().expect("l")[1].addr.port(), 5071);
        assert_eq!(s.rtp_ports().expect("p"), (30000, 30100));
        assert_eq!(s.api.admin_key, "k");
        assert_eq!(s.sip.t1_ms, 250);
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = Settings::load(None, env(&[("SWITCHYARD_SIP_LISTEN", "sctp:1.2.3.4:5060")]))
            .expect_err("bad");
        assert!(e.to_string().contains("sip.listen"), "{e}");
        let e =
            Settings::load(None, env(&[("SWITCHYARD_MEDIA_RTP_PORTS", "abc")])).expect_err("bad");
        assert!(e.to_string().contains("media.rtp_ports"), "{e}");
        let e = Settings::load(None, env(&[("SWITCHYARD_SIP_T1_MS", "soon")])).expect_err("bad");
        assert!(e.to_string().contains("sip.t1_ms"), "{e}");
        // A TLS listener without a certificate is refused before anything binds.
        let e = Settings::load(None, env(&[("SWITCHYARD_SIP_LISTEN", "tls:0.0.0.0:5061")]))
            .expect_err("bad");
        assert!(e.to_string().contains("sip.tls_cert"), "{e}");
        let e = Settings::load(None, env(&[("SWITCHYARD_SIP_NOPE", "1")])).expect_err("bad");
        assert!(e.to_string().contains("SWITCHYARD_SIP_NOPE"), "{e}");
        // Not a setting at all: ignored.
        Settings::load(
            None,
            env(&[
                ("SWITCHYARD_REQUIRE_PEERS", "1"),
                ("SWITCHYARD_PASSWORD", "x"),
            ]),
        )
        .expect("ignored");
    }

    #[test]
    fn file_with_unknown_key_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("s.toml");
        std::fs::write(&p, "[sip]\nlisten = [\"udp:127.0.0.1:5090\"]\nlisen = 1\n").expect("write");
        let e = Settings::load(Some(&p), env(&[])).expect_err("bad");
        assert!(e.to_string().contains("sip.lisen"), "{e}");
        std::fs::write(&p, "[sip]\nlisten = [\"udp:127.0.0.1:5090\"]\n").expect("write");
        let s = Settings::load(Some(&p), env(&[])).expect("ok");
        assert_eq!(s.listeners().expect("l").len(), 1);
    }
}
