//! The runtime: opens the local database and tenant store, binds the SIP listeners, and runs
//! the endpoint task — the one place that reads the clock and moves bytes between sockets and
//! the sans-IO [`Endpoint`].
//!
//! Shutdown (SIGTERM/SIGINT) drains: new INVITEs get `503` with `Retry-After`, live calls may
//! finish for up to `shutdown.drain_timeout_secs`, then the rest are hung up with BYE, and the
//! process exits 0 once those BYEs are answered (or after a short grace period).
//!
//! Live configuration: besides the admin API, a tenant document dropped into
//! `data_dir/inbox/` is imported within a second (that is how `switchyard tenant import`
//! reaches a running server, which holds the database lock). The result is left next to it
//! as `NAME.done` or `NAME.error`.

mod adapters;
mod call_counts;
mod trunk_dns;

use crate::api::live::{CallInfo, Control};
use crate::api::{ApiKeys, ApiState, LiveStats};
use crate::blob::{BlobError, BlobStore};
use crate::call::control::DialTarget;
use crate::call::{CallAction, CallRunner, EngineMedia, FinishedCall, Services};
use crate::cluster::bindings::BindingsSettings;
use crate::cluster::calls::CallBus;
use crate::cluster::config::ReplicaSettings;
use crate::cluster::keys::SharedKeys;
use crate::cluster::prompts::SharedPrompts;
use crate::cluster::{Basis, ConfigReplica, Nats, RemoteBindings, SharedBindings, TenantWriter};
use crate::history::{HistoryError, HistoryStore};
use crate::localdb::{LocalDb, LocalDbError};
use crate::media::{MediaConfig, MediaEngine, MediaError};
use crate::media::{MediaReservations, RtpPortPool};
use crate::settings::Settings;
use crate::sip::endpoint::{Endpoint, EndpointConfig, HangupCause, Now, TransportKind, Work};
use crate::sip::registrar::{Registrar, RegistrarConfig};
use crate::sip::transaction::TimerConfig;
use crate::sip::transport::{
    spawn_tcp_listener, spawn_tls_listener, spawn_udp_receiver, spawn_ws_listener, tls_acceptor,
    tls_connector, Inbound, TcpConnections, TlsClientFiles,
};
use crate::spool::{Spool, Stores};
use crate::tenant::{TenantConfig, TenantStore, TenantStoreError};
use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;

/// The demo tenant shipped with the binary (`serve --demo`).
pub const DEMO_TENANT: &str = include_str!("../../config/demo-tenant.json");

/// Start-up and run-time failures.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A settings value is unusable.
    #[error(transparent)]
    Settings(#[from] crate::settings::SettingsError),
    /// The local database failed (or another process holds it).
    #[error(transparent)]
    Db(#[from] LocalDbError),
    /// The tenant store failed.
    #[error(transparent)]
    Tenant(#[from] TenantStoreError),
    /// The cluster's NATS client could not be set up (a bad `cluster.nats_url`).
    #[error("cluster.nats_url: {0}")]
    Cluster(String),
    /// A listener could not be bound.
    #[error("cannot listen on {transport} {addr}: {source}")]
    Bind {
        /// Transport.
        transport: &'static str,
        /// Address.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
    /// Other I/O (data directory).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// OS error.
        source: std::io::Error,
    },
    /// The media engine could not start.
    #[error(transparent)]
    Media(#[from] MediaError),
    /// The history store settings are unusable.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// The blob storage settings are unusable.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// The demo tenant document is broken (a build problem).
    #[error("demo tenant: {0}")]
    Demo(String),
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn now() -> Now {
    Now {
        instant: Instant::now(),
        unix: unix_now(),
    }
}

/// Creates `data_dir` readable by its owner only (it holds trunk passwords, HA1 hashes,
/// recordings and voicemail), and takes group and world access away from one that exists.
/// Files and folders created under it by this process are private too: see
/// [`restrict_new_files`].
pub fn create_private_dir(dir: &std::path::Path) -> Result<(), ServerError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let io = |what: &str, source| ServerError::Io {
        what: format!("{what} data_dir {}", dir.display()),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io("creating", e))?;
    let mode = std::fs::metadata(dir)
        .map_err(|e| io("reading", e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o700))
            .map_err(|e| io("restricting", e))?;
    }
    Ok(())
}

/// Makes every file and folder this process creates private to its user (umask 077): the
/// sled files, spool entries, recordings and voicemail under `data_dir` are 0600 and their
/// folders 0700, whatever the service manager's umask was.
pub fn restrict_new_files() {
    // SAFETY: umask only changes this process's file-creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

/// Opens the tenant store under `data_dir` (creating the directory).
pub fn open_store(settings: &Settings) -> Result<(LocalDb, Arc<TenantStore>), ServerError> {
    create_private_dir(&settings.data_dir)?;
    let db = LocalDb::open(&settings.data_dir)?;
    let default = (!settings.tenant.default.is_empty()).then(|| settings.tenant.default.clone());
    let store = Arc::new(TenantStore::open(db.clone(), default)?);
    store.set_node_addresses(Vec::new(), settings.tenant.allow_local_trunks);
    Ok((db, store))
}

/// Opens the spool under `data_dir/spool` and the history and blob stores it drains into
/// (nothing is contacted yet: a store that is down only delays the spool).
pub fn open_stores(settings: &Settings) -> Result<Stores, ServerError> {
    let spool =
        Spool::open(&settings.data_dir.join("spool")).map_err(|source| ServerError::Io {
            what: "opening the spool (data_dir/spool)".into(),
            source,
        })?;
    let history = Arc::new(HistoryStore::open(
        &settings.history_url(),
        settings.history.max_connections,
    )?);
    let blobs = BlobStore::open(&settings.blob_url()?, &settings.blob_options())?;
    tracing::info!(history = %crate::history::redact_url(&settings.history_url()), blobs = %blobs.url(), "stores");
    Ok(Stores {
        spool,
        history,
        blobs,
    })
}

/// Runs a retention pass every `every` (the first a minute after start).
fn spawn_retention(
    stores: Stores,
    tenants: Arc<TenantStore>,
    services: Arc<Services>,
    every: Duration,
) {
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(60).min(every)).await;
        loop {
            let r = crate::retention::retention_pass(&stores, &tenants, &services.mail).await;
            if r != Default::default() {
                tracing::info!(
                    call_log_cuts = r.call_log_cuts,
                    recordings = r.recordings,
                    voicemail = r.voicemail,
                    "retention pass"
                );
            }
            tokio::time::sleep(every).await;
        }
    });
}

/// Fetches tenants' prompts this node lacks from blob storage at start and every minute (an
/// upload taken by another node, or a node restored from a backup).
fn spawn_prompt_sync(stores: Stores, tenants: Arc<TenantStore>, services: Arc<Services>) {
    tokio::spawn(async move {
        loop {
            let ids = tenants.list();
            let n = services.prompts.sync_from(&stores.blobs, &ids).await;
            if n > 0 {
                tracing::info!(fetched = n, "prompts fetched from blob storage");
            }
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
    });
}

/// Parses the embedded demo tenant.
pub fn demo_tenant() -> Result<TenantConfig, ServerError> {
    serde_json::from_str(DEMO_TENANT).map_err(|e| ServerError::Demo(e.to_string()))
}

/// The host's primary address, for `0.0.0.0` listeners without `sip.public_address`.
fn primary_ip() -> IpAddr {
    // A connected UDP socket learns its source address without sending anything.
    StdUdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|_| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

/// Runs the server until SIGTERM/SIGINT and a completed drain.
pub async fn run(mut settings: Settings, demo: bool) -> Result<(), ServerError> {
    if demo && settings.tenant.default.is_empty() {
        settings.tenant.default = "demo".into();
    }
    let (db, store) = open_store(&settings)?;
    let node_id = settings.node_id();
    let data_at = std::fs::canonicalize(&settings.data_dir).unwrap_or(settings.data_dir.clone());
    tracing::info!(data_dir = %data_at.display(), "data (tenants, registrations, spool, voicemail; history and blobs unless [history]/[blob] say otherwise) lives here");
    if demo && store.get("demo")?.is_none() {
        let rev = store.put(demo_tenant()?)?;
        tracing::info!(revision = rev, "demo tenant loaded");
    }

    let listeners = settings.listeners()?;
    let (to_endpoint, mut inbound) = mpsc::channel::<Inbound>(8192);
    let mut udp_socket: Option<Arc<UdpSocket>> = None;
    let mut udp_port = None;
    let mut tcp_port = None;
    let mut ws_port = None;
    let mut wss_port = None;
    let mut tls_port = None;
    // `tls:` listeners ask for client certificates when a CA for them is set (RFC 5923
    // aliases need a proven name); `wss:` never does (browsers would ask their users).
    let client_ca =
        (!settings.sip.tls_client_ca.is_empty()).then(|| Path::new(&settings.sip.tls_client_ca));
    let server_tls = |client_ca: Option<&Path>| {
        tls_acceptor(
            Path::new(&settings.sip.tls_cert),
            Path::new(&settings.sip.tls_key),
            client_ca,
        )
        .map_err(|e| crate::settings::SettingsError::Invalid {
            key: "sip.tls_cert".into(),
            message: e.to_string(),
        })
    };
    let stream_limits = crate::sip::transport::StreamLimits {
        max_connections: settings.sip.tcp_max_connections as usize,
        max_per_ip: settings.sip.tcp_max_connections_per_ip as usize,
        idle: Duration::from_secs(settings.sip.tcp_idle_timeout_secs),
    };
    let mut bound_ip = None;
    let mut bound: Vec<String> = Vec::new();
    for l in &listeners {
        match l.transport {
            TransportKind::Udp => {
                let s = UdpSocket::bind(l.addr)
                    .await
                    .map_err(|source| ServerError::Bind {
                        transport: "udp",
                        addr: l.addr,
                        source,
                    })?;
                let local = s.local_addr().map_err(|source| ServerError::Io {
                    what: "udp local address".into(),
                    source,
                })?;
                tracing::info!(addr = %local, "SIP listening on UDP");
                bound.push(format!("udp {local}"));
                udp_port = Some(local.port());
                bound_ip.get_or_insert(local.ip());
                let s = Arc::new(s);
                spawn_udp_receiver(s.clone(), to_endpoint.clone());
                udp_socket = Some(s);
            }
            TransportKind::Tcp => {
                let s = TcpListener::bind(l.addr)
                    .await
                    .map_err(|source| ServerError::Bind {
                        transport: "tcp",
                        addr: l.addr,
                        source,
                    })?;
                let local = s.local_addr().map_err(|source| ServerError::Io {
                    what: "tcp local address".into(),
                    source,
                })?;
                tracing::info!(addr = %local, "SIP listening on TCP");
                bound.push(format!("tcp {local}"));
                tcp_port = Some(local.port());
                bound_ip.get_or_insert(local.ip());
                spawn_tcp_listener(s, to_endpoint.clone(), stream_limits);
            }
            TransportKind::Tls => {
                let acceptor = server_tls(client_ca)?;
                let s = TcpListener::bind(l.addr)
                    .await
                    .map_err(|source| ServerError::Bind {
                        transport: "tls",
                        addr: l.addr,
                        source,
                    })?;
                let local = s.local_addr().map_err(|source| ServerError::Io {
                    what: "tls local address".into(),
                    source,
                })?;
                tracing::info!(addr = %local, "SIP listening on TLS");
                bound.push(format!("tls {local}"));
                tls_port = Some(local.port());
                bound_ip.get_or_insert(local.ip());
                spawn_tls_listener(s, acceptor, to_endpoint.clone(), stream_limits);
            }
            TransportKind::Ws | TransportKind::Wss => {
                let secure = l.transport == TransportKind::Wss;
                let name = if secure { "wss" } else { "ws" };
                let tls = if secure {
                    Some(server_tls(None)?)
                } else {
                    None
                };
                let s = TcpListener::bind(l.addr)
                    .await
                    .map_err(|source| ServerError::Bind {
                        transport: name,
                        addr: l.addr,
                        source,
                    })?;
                let local = s.local_addr().map_err(|source| ServerError::Io {
                    what: format!("{name} local address"),
                    source,
                })?;
                tracing::info!(addr = %local, "SIP listening on {}", name.to_uppercase());
                bound.push(format!("{name} {local}"));
                if secure {
                    wss_port = Some(local.port());
                } else {
                    ws_port = Some(local.port());
                }
                bound_ip.get_or_insert(local.ip());
                spawn_ws_listener(s, tls, to_endpoint.clone(), stream_limits);
            }
        }
    }
    let nonce_secret: [u8; 32] = settings.nonce_secret()?.unwrap_or_else(rand::random);
    crate::api::set_etag_secret(&nonce_secret);
    let public_ip = match settings.public_ip()? {
        Some(ip) => ip,
        None => {
            let (ip, from) = match bound_ip {
                Some(ip) if !ip.is_unspecified() => (ip, "the SIP listen address"),
                _ => (primary_ip(), "this host's primary address"),
            };
            tracing::info!(public = %ip, from, "sip.public_address not set: Via, Contact and SDP carry {ip}; phones and trunks must reach this node there (set sip.public_address behind NAT or a load balancer)");
            ip
        }
    };
    let own_ips: Vec<IpAddr> = std::iter::once(public_ip)
        .chain(bound_ip.filter(|ip: &IpAddr| !ip.is_unspecified()))
        .collect();
    store.set_node_addresses(own_ips.clone(), settings.tenant.allow_local_trunks);
    let (rtp_first, rtp_last) = settings.rtp_ports()?;
    let rtp_bind: IpAddr = if settings.media.bind_address.is_empty() {
        IpAddr::from([0, 0, 0, 0])
    } else {
        settings.media.bind_address.parse().map_err(|_| {
            crate::settings::SettingsError::Invalid {
                key: "media.bind_address".into(),
                message: "must be an IP address".into(),
            }
        })?
    };
    let ports = RtpPortPool::new(rtp_bind, rtp_first, rtp_last);
    let reservations = MediaReservations::new(ports, public_ip);
    let registrations = db.tree("registrations")?;
    let registrar = Registrar::new(
        RegistrarConfig {
            min_expires: settings.sip.min_expires,
            max_expires: settings.sip.max_expires,
            default_expires: settings.sip.default_expires,
            max_contacts: 10,
        },
        adapters::stored_bindings(&registrations)?,
    );
    let cfg = EndpointConfig {
        public_host: public_ip.to_string(),
        public_ip,
        udp_port,
        tcp_port,
        tls_port,
        ws_port,
        wss_port,
        algorithms: settings.algorithms()?,
        nonce_lifetime: Duration::from_secs(settings.sip.nonce_lifetime_secs),
        nonce_secret,
        // Each process its own, from the operating system. Unlike the nonce secret it is never
        // shared: two nodes with one seed would make the same tags and branches.
        id_seed: rand::random(),
        auth_limits: crate::sip::auth_guard::GuardLimits {
            max_failures: settings.sip.auth_max_failures,
            max_users: settings.sip.auth_max_users_per_source,
            window: Duration::from_secs(settings.sip.auth_window_secs),
            block: Duration::from_secs(settings.sip.auth_block_secs),
            block_max: Duration::from_secs(
                settings
                    .sip
                    .auth_block_max_secs
                    .max(settings.sip.auth_block_secs),
            ),
        },
        timers: TimerConfig {
            t1: Duration::from_millis(settings.sip.t1_ms),
            ..TimerConfig::default()
        },
        drain_retry_after: settings.shutdown.retry_after_secs,
        session_min_secs: settings.sip.session_min_secs,
        max_server_transactions: settings.sip.max_transactions as usize,
        max_transactions_per_source: settings.sip.max_transactions_per_source as usize,
        max_subscriptions_per_user: settings.sip.max_subscriptions_per_user as usize,
        tls_alias: !settings.sip.tls_client_cert.is_empty(),
        trusted_proxies: settings.trusted_proxies()?,
        first_call_id: if settings.cluster.nats_url.is_empty() {
            1
        } else {
            crate::cluster::first_call_id(&node_id)
        },
        ..EndpointConfig::default()
    };
    tracing::info!(public = %public_ip, rtp = %settings.media.rtp_ports, "endpoint ready");
    let mut endpoint = Endpoint::new(
        cfg,
        store.snapshots(),
        Box::new(adapters::EndpointMedia(reservations.clone())),
        Box::new(crate::call::policy::TenantPolicy),
        registrar,
    );
    // Trunk names resolved in the background (RFC 3263); a node whose resolver cannot be
    // made still runs, with trunks by IP only.
    let trunk_targets = Arc::new(arc_swap::ArcSwap::default());
    endpoint.set_trunk_targets(trunk_targets.clone());
    match trunk_dns::resolver(&settings.dns_servers()?) {
        Ok(resolver) => {
            let own = trunk_dns::OwnAddresses {
                ips: own_ips,
                allowed: settings.tenant.allow_local_trunks,
            };
            trunk_dns::spawn(store.snapshots(), trunk_targets, resolver, own);
        }
        Err(e) => tracing::warn!(error = %e, "trunks given by name will not be reached"),
    }
    // A cluster: one NATS connection for the shared registrations (here) and the tenant
    // configuration (with the admin API below).
    let nats = if settings.cluster.nats_url.is_empty() {
        None
    } else {
        Some(
            Nats::connect(&settings.cluster.nats_url, &node_id)
                .await
                .map_err(|e| ServerError::Cluster(e.to_string()))?,
        )
    };
    let (shared_bindings, mut remote_bindings) = match &nats {
        Some(n) => {
            let (shared, remote) = SharedBindings::start(
                BindingsSettings {
                    bucket: settings.cluster.bindings_bucket.clone(),
                    replicas: settings.cluster.config_replicas as usize,
                    node_id: node_id.clone(),
                    max_expires: Duration::from_secs(u64::from(settings.sip.max_expires)),
                },
                n.clone(),
            );
            for c in endpoint.local_bindings() {
                shared.publish(c);
            }
            (Some(shared), Some(remote))
        }
        None => (None, None),
    };
    let node_status_source: Arc<std::sync::OnceLock<Arc<ApiState>>> = Arc::default();
    // Heartbeats: other nodes' calls count against tenant limits here, and the admin API
    // knows how many nodes should answer a listing.
    let (mut call_counts, presence) = match &nats {
        Some(n) => {
            // Each heartbeat carries this node's row of the cluster page (once the API is up).
            let api = node_status_source.clone();
            let status: crate::cluster::presence::StatusFn = Arc::new(move || {
                api.get()
                    .and_then(|st| serde_json::to_value(st.node_status()).ok())
                    .unwrap_or(serde_json::Value::Null)
            });
            let (counts, presence) = call_counts::SharedCallCounts::start(
                n,
                &settings.cluster.config_bucket,
                &node_id,
                status,
            );
            (Some(counts), Some(presence))
        }
        None => (None, None),
    };
    let stores = open_stores(&settings)?;
    stores.spawn_drains();
    let services = Arc::new(Services::with_stores(
        settings.data_dir.join("voicemail"),
        stores.clone(),
    ));
    spawn_prompt_sync(stores.clone(), store.clone(), services.clone());
    spawn_retention(
        stores.clone(),
        store.clone(),
        services.clone(),
        Duration::from_secs(settings.history.retention_interval_secs),
    );
    endpoint.enable_message_waiting();
    let (work, mut work_done) = adapters::EndpointWork::start(registrations, services.clone())
        .map_err(|source| ServerError::Io {
            what: "starting the registration and mailbox threads".into(),
            source,
        })?;
    let (engine, mut media_events) = MediaEngine::start(MediaConfig {
        workers: settings.media.workers as usize,
        prompts_dir: PathBuf::from(&settings.media.prompts_dir),
        tenant_prompts_dir: Some(services.prompts.dir().to_path_buf()),
    })?;
    let mut runner = CallRunner::new(
        Box::new(EngineMedia {
            engine: engine.clone(),
            reservations,
            rtp_timeout: Duration::from_secs(settings.media.rtp_timeout_secs),
            inband: settings.inband_dtmf()?,
        }),
        services.clone(),
        crate::apps::for_target,
    );

    // Admin API.
    let live = Arc::new(LiveStats::default());
    live.sip_ready.store(true, Ordering::Relaxed);
    let keys = ApiKeys::open(&db, &settings.api.admin_key)?;
    let api_addr = settings.api_listen()?;
    let api_listener = TcpListener::bind(api_addr)
        .await
        .map_err(|source| ServerError::Bind {
            transport: "http (api.listen)",
            addr: api_addr,
            source,
        })?;
    tracing::info!(addr = %api_listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), admin_key = !settings.api.admin_key.is_empty(), "admin API listening");
    if settings.api.admin_key.is_empty() {
        tracing::warn!("api.admin_key is empty: nobody can create tenants or keys through the admin API (tenant keys still work); set SWITCHYARD_API_ADMIN_KEY to manage tenants");
    }
    let (api_stop, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let (control_tx, mut control_rx) = mpsc::channel::<Control>(64);
    let api_state = ApiState::new(
        store.clone(),
        keys,
        live.clone(),
        Some(control_tx),
        services.clone(),
        settings.api.auth_max_failures,
        settings.metrics_access()?,
    );
    api_state.set_node_id(node_id.clone());
    let _ = node_status_source.set(api_state.clone());
    api_state.set_store_failing_after(Duration::from_secs(settings.history.failing_after_secs));
    if let Ok(mut l) = api_state.listeners.lock() {
        *l = bound.clone();
    }
    if let Ok(mut d) = api_state.phone_defaults.lock() {
        d.domain = public_ip.to_string();
        d.ws_url = match (wss_port, ws_port) {
            (Some(p), _) => Some(format!("wss://{public_ip}:{p}")),
            (None, Some(p)) => Some(format!("ws://{public_ip}:{p}")),
            _ => None,
        };
    }
    let writer = match &nats {
        None => TenantWriter::Local(store.clone()),
        Some(n) => {
            let replica = ConfigReplica::start(
                ReplicaSettings {
                    bucket: settings.cluster.config_bucket.clone(),
                    replicas: settings.cluster.config_replicas as usize,
                    request_timeout: Duration::from_secs(settings.cluster.request_timeout_secs),
                },
                n.clone(),
                store.clone(),
            );
            let bus = CallBus::new(n.clone(), &settings.cluster.config_bucket, &node_id)
                .with_presence(presence.clone());
            services.events.set_node(&node_id);
            share_call_events(
                crate::cluster::events::EventBus::new(
                    n.clone(),
                    &settings.cluster.config_bucket,
                    &node_id,
                ),
                services.clone(),
            );
            crate::cluster::voicemail::share(
                n.clone(),
                &settings.cluster.voicemail_bucket,
                settings.cluster.config_replicas as usize,
                services.mail.clone(),
                stores.blobs.clone(),
                crate::cluster::outbox::Outbox::open(
                    settings.data_dir.join("cluster-voicemail-outbox.json"),
                ),
            );
            api_state.share_prompts(SharedPrompts::start(
                n.clone(),
                &settings.cluster.prompts_bucket,
                settings.cluster.config_replicas as usize,
                Duration::from_secs(settings.cluster.request_timeout_secs),
                services.prompts.clone(),
                stores.blobs.clone(),
            ));
            api_state.share_keys(SharedKeys::start(
                n.clone(),
                &settings.cluster.keys_bucket,
                settings.cluster.config_replicas as usize,
                Duration::from_secs(settings.cluster.request_timeout_secs),
                Arc::new(api_state.keys.clone()),
            ));
            api_state.join_cluster(replica.clone(), bus);
            TenantWriter::Cluster(replica)
        }
    };
    tokio::spawn(async move {
        let stop = async {
            let _ = api_stopped.await;
        };
        if let Err(e) = crate::api::serve(api_listener, api_state, stop).await {
            tracing::error!(error = %e, "admin API stopped");
        }
    });

    let inbox = settings.data_dir.join("inbox");
    spawn_inbox_watcher(
        inbox,
        writer,
        store.clone(),
        db.clone(),
        stores.history.clone(),
    );

    // Connections phones opened, and those this node opens to TCP phones whose own closed.
    let trunk_tls = tls_connector(TlsClientFiles {
        extra_ca: (!settings.sip.tls_trunk_ca.is_empty())
            .then(|| Path::new(&settings.sip.tls_trunk_ca)),
        identity: (!settings.sip.tls_client_cert.is_empty()).then(|| {
            (
                Path::new(&settings.sip.tls_client_cert),
                Path::new(&settings.sip.tls_client_key),
            )
        }),
    })
    .map_err(|e| crate::settings::SettingsError::Invalid {
        key: "sip.tls_trunk_ca".into(),
        message: e.to_string(),
    })?;
    let mut tcp = TcpConnections::with_dialer(to_endpoint.clone(), stream_limits, Some(trunk_tls));
    let drain_timeout = Duration::from_secs(settings.shutdown.drain_timeout_secs);
    let mut shutdown = Box::pin(shutdown_signal());
    let mut drain_deadline: Option<Instant> = None;
    let mut last_publish = Instant::now();
    let mut final_deadline: Option<Instant> = None;
    let sleep = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(sleep);

    loop {
        let wake = endpoint
            .poll_timeout()
            .into_iter()
            .chain(runner.poll_timeout())
            .chain(drain_deadline)
            .chain(final_deadline)
            // Metrics stay at most a second old even when nothing happens.
            .chain(Some(last_publish + Duration::from_secs(1)))
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        sleep.as_mut().reset(tokio::time::Instant::from_std(wake));
        tokio::select! {
            msg = inbound.recv() => {
                let Some(msg) = msg else { break };
                handle_inbound(&mut endpoint, &mut tcp, msg);
                // Take whatever else is already queued before flushing: fewer wake-ups under load.
                for _ in 0..256 {
                    match inbound.try_recv() {
                        Ok(m) => handle_inbound(&mut endpoint, &mut tcp, m),
                        Err(_) => break,
                    }
                }
            }
            _ = &mut sleep => {
                endpoint.handle_timeout(now());
                runner.handle_timeout(Instant::now(), unix_now());
            }
            Some(ctrl) = control_rx.recv() => {
                match ctrl {
                    Control::Calls { tenant, reply } => {
                        let calls = endpoint
                            .calls_of(&tenant, now())
                            .into_iter()
                            .map(|c| {
                                let (app, path) = (runner.app_of(c.id), runner.path_of(c.id));
                                CallInfo::new(c, app.map(str::to_string), path)
                            })
                            .collect();
                        let _ = reply.send(calls);
                    }
                    Control::Hangup { tenant, id, reply } => {
                        let ours = endpoint.call_tenant(id) == Some(tenant.as_str());
                        if ours {
                            endpoint.hangup_call(now(), id, HangupCause::Admin, "hung up through the admin API");
                        }
                        let _ = reply.send(ours);
                    }
                    Control::Transfer { tenant, id, destination, reply } => {
                        let ours = endpoint.call_tenant(id) == Some(tenant.as_str());
                        let result = ours.then(|| runner.transfer(id, &destination, Instant::now(), unix_now()));
                        let _ = reply.send(result);
                    }
                    Control::Recording { tenant, id, start, reply } => {
                        let ours = endpoint.call_tenant(id) == Some(tenant.as_str());
                        let result = if ours { runner.record_call(id, start, unix_now()) } else { None };
                        let _ = reply.send(result);
                    }
                    Control::Drain { on, reply } => {
                        if on {
                            endpoint.begin_drain();
                        } else if drain_deadline.is_none() {
                            endpoint.end_drain();
                        }
                        let _ = reply.send(endpoint.is_draining());
                    }
                    Control::Registrations { tenant, extension, reply } => {
                        let _ = reply.send(endpoint.registrations_of(&tenant, &extension, unix_now()));
                    }
                }
            }
            Some(rb) = next_remote(&mut remote_bindings) => {
                endpoint.set_remote_bindings(&rb.tenant, &rb.user, &rb.node, rb.bindings);
            }
            remote = call_counts::remote_changed(&mut call_counts) => {
                endpoint.set_remote_calls((*remote).clone());
            }
            Some(done) = work_done.recv() => match done {
                adapters::WorkDone::MailboxCounts { tenant, mailbox, counts, changed } => {
                    endpoint.mailbox_counts(now(), &tenant, &mailbox, counts, changed);
                }
            },
            ev = media_events.recv() => {
                if let Some(ev) = ev {
                    runner.on_media_event(ev, Instant::now(), unix_now());
                }
            }
            _ = &mut shutdown, if drain_deadline.is_none() => {
                tracing::info!(live_calls = endpoint.live_calls(), timeout_s = drain_timeout.as_secs(), "draining: refusing new calls");
                endpoint.begin_drain();
                drain_deadline = Some(Instant::now() + drain_timeout);
            }
        }
        pump(&mut endpoint, &mut runner);
        store_finished(&mut runner, &services);
        flush(
            &mut endpoint,
            udp_socket.as_deref(),
            &mut tcp,
            &work,
            shared_bindings.as_ref(),
        );
        if let Some(c) = call_counts.as_mut() {
            c.share(&endpoint);
        }
        // Metrics are scraped every few seconds: no need to copy them on every message.
        if last_publish.elapsed() >= Duration::from_millis(250) {
            endpoint.sync_trunk_registrations(now());
            // Mailboxes changed through the admin API: message-waiting NOTIFYs.
            runner.collect_changes();
            pump(&mut endpoint, &mut runner);
            flush(
                &mut endpoint,
                udp_socket.as_deref(),
                &mut tcp,
                &work,
                shared_bindings.as_ref(),
            );
            publish(&live, &endpoint, &engine);
            last_publish = Instant::now();
        }
        if let Some(d) = drain_deadline {
            if final_deadline.is_none() && (endpoint.live_calls() == 0 || Instant::now() >= d) {
                if endpoint.live_calls() > 0 {
                    tracing::info!(
                        live_calls = endpoint.live_calls(),
                        "drain timeout: hanging up remaining calls"
                    );
                }
                endpoint.hangup_all(now());
                pump(&mut endpoint, &mut runner);
                flush(
                    &mut endpoint,
                    udp_socket.as_deref(),
                    &mut tcp,
                    &work,
                    shared_bindings.as_ref(),
                );
                final_deadline = Some(Instant::now() + Duration::from_secs(2));
            }
            if let Some(f) = final_deadline {
                // Done once the BYEs are answered and every call's record is written (a
                // call's record waits for its media's last figures): the last calls of a
                // drain are recorded like any other.
                let settled = endpoint.stats().client_transactions == 0 && runner.unfinished() == 0;
                if settled || Instant::now() >= f {
                    if !settled {
                        tracing::warn!(
                            unrecorded = runner.unfinished(),
                            "stopping with calls whose media never reported its end"
                        );
                    }
                    break;
                }
            }
        }
    }
    let _ = api_stop.send(());
    engine.shutdown();
    store_finished(&mut runner, &services);
    submit_work(&mut endpoint, &work, shared_bindings.as_ref());
    work.finish();
    // What the last calls left goes to the stores if they answer within a few seconds; the
    // rest stays in the spool for the next start.
    if !stores.spool.wait_empty(Duration::from_secs(5)).await {
        stores.spool.refresh_figures();
        tracing::info!(
            history = stores.spool.status.history.depth.load(Ordering::Relaxed),
            blobs = stores.spool.status.blob.depth.load(Ordering::Relaxed),
            "spool not empty at exit; it drains at the next start"
        );
    }
    db.flush()?;
    tracing::info!("stopped");
    Ok(())
}

/// This node's call events out to the other nodes, and theirs into this node's event
/// streams: a tenant's stream on any node shows every node's calls.
fn share_call_events(bus: crate::cluster::events::EventBus, services: Arc<Services>) {
    use crate::call::events::CallNotice;
    use tokio::sync::broadcast::error::RecvError;
    /// What travels: the notice and its tenant (which a stream never shows).
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Wire {
        tenant: String,
        notice: CallNotice,
    }
    let mut feed = services.events.feed();
    let out = bus.clone();
    let own = services.clone();
    tokio::spawn(async move {
        loop {
            match feed.recv().await {
                Ok(n) if own.events.is_own(&n) => {
                    let wire = Wire {
                        tenant: n.tenant.clone(),
                        notice: (*n).clone(),
                    };
                    if let Ok(bytes) = serde_json::to_vec(&wire) {
                        out.publish(bytes).await;
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "call events not shared with the other nodes: fell behind"
                    )
                }
                Err(RecvError::Closed) => break,
            }
        }
    });
    tokio::spawn(bus.follow(move |payload| {
        match serde_json::from_slice::<Wire>(&payload) {
            // Another node's, named as such (never one of ours coming back).
            Ok(w) if w.notice.node.is_some() && !services.events.is_own(&w.notice) => {
                let mut n = w.notice;
                n.tenant = w.tenant;
                services.events.publish(n);
            }
            _ => tracing::debug!("a call event from another node was not taken"),
        }
    }));
}

/// Hands finished calls' records and recordings to the stores (through the spool), and
/// every call's steps to the tenants' event streams.
fn store_finished(runner: &mut CallRunner, services: &Services) {
    while let Some(notice) = runner.poll_notice() {
        services.events.publish(notice);
    }
    while let Some(FinishedCall { record, recordings }) = runner.poll_finished() {
        let Some(stores) = &services.stores else {
            continue;
        };
        for path in recordings {
            stores.recording_finished(&record.tenant, &record.id, &path);
        }
        stores.call_finished(record);
    }
}

/// Passes endpoint events to the call layer and its actions back, until both are quiet.
fn pump(endpoint: &mut Endpoint, runner: &mut CallRunner) {
    loop {
        let mut busy = false;
        while let Some(ev) = endpoint.poll_event() {
            busy = true;
            runner.on_call_event(ev, Instant::now(), unix_now());
        }
        while let Some(action) = runner.poll_action() {
            busy = true;
            match action {
                CallAction::Ring { call } => endpoint.ring_call(now(), call),
                CallAction::Answer { call } => endpoint.answer_call(now(), call),
                CallAction::EarlyMedia { call } => endpoint.early_media_call(now(), call),
                CallAction::Reject { call, code, reason } => {
                    endpoint.reject_call(now(), call, code, &reason)
                }
                CallAction::Hangup {
                    call,
                    cause,
                    reason,
                } => endpoint.hangup_call(now(), call, cause, &reason),
                CallAction::Dial {
                    call,
                    tenant,
                    targets,
                    caller,
                } => {
                    let started: usize = targets
                        .iter()
                        .map(|t| match t {
                            DialTarget::User(u) => {
                                endpoint.dial_user(now(), call, &tenant, u, &caller)
                            }
                            DialTarget::Number(n) => {
                                endpoint.dial_number(now(), call, &tenant, n, &caller)
                            }
                        })
                        .sum();
                    runner.dial_done(call, started, Instant::now(), unix_now());
                }
                CallAction::Hold { call, hold } => endpoint.reinvite_hold(now(), call, hold),
                CallAction::SendDigit { call, digit } => {
                    endpoint.send_digit_info(now(), call, digit)
                }
                CallAction::MailboxChanged { tenant, mailbox } => {
                    endpoint.mailbox_changed(&tenant, &mailbox)
                }
            }
        }
        if !busy {
            return;
        }
    }
}

/// Copies the endpoint's and the media engine's figures where `/metrics` reads them.
fn publish(live: &LiveStats, endpoint: &Endpoint, engine: &MediaEngine) {
    let st = endpoint.stats();
    live.calls_active
        .store(endpoint.live_calls() as u64, Ordering::Relaxed);
    live.calls_started
        .store(st.calls_started, Ordering::Relaxed);
    live.calls_ended.store(st.calls_ended, Ordering::Relaxed);
    live.draining
        .store(endpoint.is_draining(), Ordering::Relaxed);
    live.registrations
        .store(endpoint.registrations() as u64, Ordering::Relaxed);
    live.sip_malformed.store(st.malformed, Ordering::Relaxed);
    live.sip_tls_handshake_failures.store(
        crate::sip::transport::tls_handshake_failures(),
        Ordering::Relaxed,
    );
    live.trunk_dns_failures
        .store(trunk_dns::failures(), Ordering::Relaxed);
    live.trunk_failovers
        .store(st.trunk_failovers, Ordering::Relaxed);
    live.trunk_unresolved
        .store(st.trunk_unresolved, Ordering::Relaxed);
    live.srtp_offers_refused
        .store(st.srtp_offers_refused, Ordering::Relaxed);
    live.sip_replaces_refused
        .store(st.replaces_refused, Ordering::Relaxed);
    live.sip_aliases_refused
        .store(st.aliases_refused, Ordering::Relaxed);
    live.sip_auth_failures
        .store(st.auth_failures, Ordering::Relaxed);
    live.sip_auth_refused
        .store(st.auth_blocked, Ordering::Relaxed);
    live.sip_auth_blocks
        .store(st.auth_blocks_started, Ordering::Relaxed);
    let (mut legs, mut pin, mut pout, mut late, mut srtp) = (0, 0, 0, 0, 0);
    for w in engine.worker_stats() {
        srtp += w.srtp_refused.load(Ordering::Relaxed);
        legs += w.legs.load(Ordering::Relaxed) as u64;
        pin += w.packets_in.load(Ordering::Relaxed);
        pout += w.packets_out.load(Ordering::Relaxed);
        late += w.late_ticks.load(Ordering::Relaxed);
    }
    live.media_legs.store(legs, Ordering::Relaxed);
    live.rtp_packets_in.store(pin, Ordering::Relaxed);
    live.rtp_packets_out.store(pout, Ordering::Relaxed);
    live.rtp_late_ticks.store(late, Ordering::Relaxed);
    live.srtp_packets_refused.store(srtp, Ordering::Relaxed);
}

fn handle_inbound(endpoint: &mut Endpoint, tcp: &mut TcpConnections, msg: Inbound) {
    match msg {
        Inbound::Message { peer, data } => endpoint.handle_incoming(now(), peer, &data),
        Inbound::Opened {
            conn,
            writer,
            certified,
        } => {
            tcp.opened(conn, writer);
            if let Some(peer) = certified {
                endpoint.connection_certified(conn, peer);
            }
        }
        Inbound::Closed { conn } => {
            tcp.closed(conn);
            endpoint.connection_closed(now(), conn);
        }
        Inbound::Unreachable { peer } => {
            endpoint.peer_unreachable(now(), peer.transport, peer.addr)
        }
    }
}

/// The next of the other nodes' registrations (never, on a single node).
async fn next_remote(rx: &mut Option<mpsc::Receiver<RemoteBindings>>) -> Option<RemoteBindings> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Hands the endpoint's disk work to its threads, and in a cluster each change of this
/// node's registrations to the shared table too.
fn submit_work(
    endpoint: &mut Endpoint,
    work: &adapters::EndpointWork,
    shared: Option<&SharedBindings>,
) {
    while let Some(w) = endpoint.poll_work() {
        if let (Work::SaveBindings(c), Some(shared)) = (&w, shared) {
            shared.publish(c.clone());
        }
        work.submit(w);
    }
}

fn flush(
    endpoint: &mut Endpoint,
    udp: Option<&UdpSocket>,
    tcp: &mut TcpConnections,
    work: &adapters::EndpointWork,
    shared: Option<&SharedBindings>,
) {
    submit_work(endpoint, work, shared);
    while let Some(t) = endpoint.poll_transmit() {
        match (t.peer.transport, t.peer.conn) {
            (TransportKind::Udp, _) => {
                if let Some(s) = udp {
                    if let Err(e) = s.try_send_to(&t.payload, t.peer.addr) {
                        tracing::debug!(peer = %t.peer.addr, error = %e, "udp send failed");
                    }
                }
            }
            (
                TransportKind::Tcp | TransportKind::Tls | TransportKind::Ws | TransportKind::Wss,
                Some(conn),
            ) => {
                if !tcp.send(conn, t.payload) {
                    tracing::debug!(peer = %t.peer.addr, "tcp connection gone or congested: message dropped");
                }
            }
            (TransportKind::Tcp | TransportKind::Tls, None) => {
                // A trunk, or a TCP phone whose connection closed: reached by a connection
                // this node opens (TLS verified for the target's name).
                if !tcp.send_to(t.peer.addr, t.peer.transport, t.server_name, t.payload) {
                    tracing::debug!(peer = %t.peer.addr, "no connection could take the message");
                }
            }
            (TransportKind::Ws | TransportKind::Wss, None) => {
                tracing::debug!(peer = %t.peer.addr, "no connection to send on");
            }
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Imports tenant documents dropped into `inbox` and writes the backups asked for there
/// (see the module docs).
fn spawn_inbox_watcher(
    inbox: PathBuf,
    writer: TenantWriter,
    store: Arc<TenantStore>,
    db: LocalDb,
    history: Arc<HistoryStore>,
) {
    tokio::spawn(async move {
        if let Err(e) = std::fs::create_dir_all(&inbox) {
            tracing::warn!(error = %e, dir = %inbox.display(), "cannot create tenant inbox");
            return;
        }
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            let (store, writer) = (store.clone(), writer.clone());
            let dir = inbox.clone();
            let runtime = tokio::runtime::Handle::current();
            // In a cluster an import is a write through the cluster's authority, as an API
            // write is: it replaces the version this node holds, or fails if that changed.
            let put = move |cfg: TenantConfig| {
                let basis = Basis(store.snapshot().source_revision_of(&cfg.id));
                runtime
                    .block_on(writer.put(cfg, basis))
                    .map_err(|e| e.to_string())
            };
            let _ = tokio::task::spawn_blocking(move || import_inbox(&dir, put)).await;
            backup_requests(&inbox, &db, &history).await;
        }
    });
}

/// `NAME.backup` files in the inbox name a file to write a backup to; the outcome is left as
/// `NAME.done` or `NAME.error`.
async fn backup_requests(dir: &Path, db: &LocalDb, history: &HistoryStore) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("backup") {
            continue;
        }
        let dest = std::fs::read_to_string(&path).unwrap_or_default();
        let _ = std::fs::remove_file(&path);
        let result = crate::backup::create(db, history, Path::new(dest.trim())).await;
        let (ext, text) = match result {
            Ok(m) => (
                "done",
                format!(
                    "backup written to {} by the running server ({} tenant(s), history: {})\n",
                    dest.trim(),
                    m.tenants.len(),
                    if m.history_schema.is_some() {
                        "included"
                    } else {
                        "PostgreSQL, not included (use pg_dump)"
                    }
                ),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "backup failed");
                ("error", format!("{e}\n"))
            }
        };
        let _ = std::fs::write(path.with_extension(ext), text);
    }
}

/// One pass over the inbox: `*.json` files are imported and renamed with their outcome.
pub fn import_inbox(dir: &Path, put: impl Fn(TenantConfig) -> Result<(), String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let result = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|text| serde_json::from_str::<TenantConfig>(&text).map_err(|e| e.to_string()))
            .and_then(&put);
        let (ext, text) = match result {
            Ok(()) => ("done", "imported\n".to_string()),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "tenant import refused");
                ("error", format!("{e}\n"))
            }
        };
        let _ = std::fs::write(path.with_extension(ext), text);
        let _ = std::fs::remove_file(&path);
    }
}
