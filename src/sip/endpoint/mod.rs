//! The SIP endpoint: everything between parsed bytes and call decisions, with no I/O.
//!
//! [`Endpoint`] is fed datagrams or stream messages ([`Endpoint::handle_incoming`]) and timer
//! wake-ups ([`Endpoint::handle_timeout`]), each with the current time ([`Now`]). It queues
//! what to send ([`Endpoint::poll_transmit`]) and says when it next needs waking
//! ([`Endpoint::poll_timeout`]). The runtime (`crate::server`) owns sockets and the clock and
//! does nothing else, so everything here — transactions, digest auth, the registrar, UAS
//! dialogs — is tested by handing in bytes and instants.
//!
//! Responsibilities, by file:
//! - `mod.rs`: transaction table, dispatch by method, stateless answers to bad input, timers.
//! - `policy.rs`: the call layer's rules for new calls (trunk trust, routing, call limits) as
//!   the endpoint asks for them; `crate::call::policy` implements them.
//! - `media.rs`: the media backend as the endpoint sees it (a port for SDP, a browser's SDP);
//!   sockets and DTLS stay on the media side.
//! - `register.rs`: REGISTER with digest auth and the failure limiter.
//! - `proxy.rs`: requests relayed by a trusted proxy (the client's own address, Path).
//! - `outbound.rs`: outgoing INVITE legs (users' phones, trunks with digest).
//! - `info.rs`: digits we relay by SIP INFO to a party without telephone-event.
//! - `refer.rs`: blind transfer by REFER with NOTIFY sipfrag.
//! - `locate.rs`: RFC 3263: a trunk's address to an ordered list of targets (the lookups are
//!   the runtime's); `failover.rs`: a trunk leg moving on to its next target.
//! - `leg_timer.rs`: session timers on the legs we place (we refresh by UPDATE, or watch).
//! - `prack.rs`: PRACK for reliable provisional responses to our INVITEs (RFC 3262);
//!   `reliable.rs`: our own reliable provisionals to callers that require them.
//! - `trunk_reg.rs`: registration to providers for trunks with `register: true`.
//! - `reinvite.rs`: our re-INVITEs that pass hold/resume from one party to the other.
//! - `mwi.rs`: message waiting (SUBSCRIBE/NOTIFY message-summary, unsolicited NOTIFY).
//! - `invite.rs`: INVITE as UAS (tenant by domain, auth, the policy's routing, offer/answer, 2xx
//!   retransmission until ACK), CANCEL, BYE, re-INVITE, and hang-up on drain.

mod failover;
mod info;
mod invite;
pub use invite::info_digit;
mod leg_timer;
pub mod locate;
mod media;
#[cfg(test)]
pub use media::FakeMedia;
pub use media::{MediaBackend, MediaRefused};
mod mwi;
mod outbound;
mod policy;
mod prack;
mod reliable;
pub use policy::{CallPolicy, Refusal};
mod proxy;
mod refer;
mod register;
mod reinvite;
mod reuse;
pub use reuse::CertifiedPeer;
mod session_timer;
mod srtp;
mod trunk_reg;

pub use outbound::CallerId;
pub use trunk_reg::TrunkRegState;

use super::auth_guard::{AuthGuard, GuardLimits};
use super::digest::{challenge_values, DigestAlgorithm, NonceIssuer};
use super::ids::Ids;
use super::message::{parse, ParseError, SipMessage, SipRequest, SipResponse};
use super::registrar::{Binding, Registrar};
use super::response::ResponseBuilder;
use super::transaction::{
    ClientInviteTransaction, ClientNonInviteTransaction, ServerInviteTransaction,
    ServerNonInviteTransaction, TimerConfig, TxEvent,
};
use crate::tenant::SnapshotCell;
use bytes::Bytes;
use invite::Call;
use rsip::Method;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The two clocks the endpoint needs: monotonic for timers, wall (unix seconds) for nonces and
/// registration expiry, which must mean the same after a restart.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Monotonic time.
    pub instant: Instant,
    /// Seconds since the unix epoch.
    pub unix: u64,
}

/// SIP transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// UDP: unreliable, timers retransmit.
    Udp,
    /// TCP: reliable, one connection per peer.
    Tcp,
    /// SIP over TLS (RFC 3261 §26.2): a TCP connection inside TLS.
    Tls,
    /// SIP over WebSocket (RFC 7118), for browsers.
    Ws,
    /// SIP over secure WebSocket.
    Wss,
}

impl TransportKind {
    /// The Via token.
    pub fn token(self) -> &'static str {
        match self {
            TransportKind::Udp => "UDP",
            TransportKind::Tcp => "TCP",
            TransportKind::Tls => "TLS",
            TransportKind::Ws => "WS",
            TransportKind::Wss => "WSS",
        }
    }

    /// The transport a Via or Contact token names.
    pub fn from_token(t: &str) -> Option<TransportKind> {
        match t.to_ascii_uppercase().as_str() {
            "UDP" => Some(TransportKind::Udp),
            "TCP" => Some(TransportKind::Tcp),
            "TLS" => Some(TransportKind::Tls),
            "WS" => Some(TransportKind::Ws),
            "WSS" => Some(TransportKind::Wss),
            _ => None,
        }
    }

    /// Carried on a connection (answers and later requests go on the connection).
    pub fn is_stream(self) -> bool {
        self != TransportKind::Udp
    }

    fn is_reliable(self) -> bool {
        self != TransportKind::Udp
    }
}

/// Where a message came from, and so where its answers go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    /// Transport it arrived on.
    pub transport: TransportKind,
    /// Remote address.
    pub addr: SocketAddr,
    /// Stream connection id (TCP), so answers go back on the same connection.
    pub conn: Option<u64>,
}

/// Bytes to send.
#[derive(Debug, Clone)]
pub struct Transmit {
    /// Destination.
    pub peer: Peer,
    /// The message.
    pub payload: Bytes,
    /// For a TLS connection this node has to open: the name the server's certificate must
    /// carry (a trunk's SRV target or host).
    pub server_name: Option<Arc<str>>,
}

/// Endpoint settings.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Host (IP or name) written into Via and Contact.
    pub public_host: String,
    /// Address written into SDP.
    pub public_ip: IpAddr,
    /// Our UDP port, for Via/Contact over UDP.
    pub udp_port: Option<u16>,
    /// Our TCP port.
    pub tcp_port: Option<u16>,
    /// Our SIP-over-TLS port.
    pub tls_port: Option<u16>,
    /// Our WebSocket port.
    pub ws_port: Option<u16>,
    /// Our secure WebSocket port.
    pub wss_port: Option<u16>,
    /// Digest algorithms offered, in order.
    pub algorithms: Vec<DigestAlgorithm>,
    /// Nonce lifetime.
    pub nonce_lifetime: Duration,
    /// Nonce HMAC secret (random per start unless configured).
    pub nonce_secret: [u8; 32],
    /// Seed of the random source for tags, branches, Call-IDs and nonce salts (see
    /// [`crate::sip::ids`]): from the operating system in production, a constant in tests.
    pub id_seed: [u8; 32],
    /// SIP proxies in front of this node (networks): requests from them are judged by the
    /// client they relayed, and their REGISTERs' Path is kept (see `proxy.rs`).
    pub trusted_proxies: Vec<(IpAddr, u8)>,
    /// The first call id this endpoint gives (a cluster's nodes number calls in blocks of
    /// their own, so the admin API's ids are unique across nodes).
    pub first_call_id: u64,
    /// Brute-force limits (see [`crate::sip::auth_guard`]).
    pub auth_limits: GuardLimits,
    /// RFC 3261 timer base values.
    pub timers: TimerConfig,
    /// `Server` / `User-Agent` value.
    pub server_name: String,
    /// `Retry-After` seconds in 503 while draining.
    pub drain_retry_after: u32,
    /// The shortest session-timer interval we accept (RFC 4028 Min-SE), seconds.
    pub session_min_secs: u32,
    /// Server transactions alive at once, from everybody.
    pub max_server_transactions: usize,
    /// Server transactions alive at once from one address (trunks exempt).
    pub max_transactions_per_source: usize,
    /// MWI subscriptions one user may hold.
    pub max_subscriptions_per_user: usize,
    /// This node presents a certificate on the TLS connections it opens (mutual TLS): its
    /// Via there offers the connection for requests back (`alias`, RFC 5923).
    pub tls_alias: bool,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            public_host: "127.0.0.1".into(),
            public_ip: IpAddr::from([127, 0, 0, 1]),
            udp_port: Some(5060),
            tcp_port: Some(5060),
            tls_port: None,
            ws_port: None,
            wss_port: None,
            algorithms: vec![DigestAlgorithm::Md5, DigestAlgorithm::Sha256],
            nonce_lifetime: Duration::from_secs(300),
            nonce_secret: rand::random(),
            id_seed: rand::random(),
            first_call_id: 1,
            trusted_proxies: Vec::new(),
            auth_limits: GuardLimits {
                max_failures: 10,
                max_users: 10,
                window: Duration::from_secs(60),
                block: Duration::from_secs(300),
                block_max: Duration::from_secs(86_400),
            },
            timers: TimerConfig::default(),
            server_name: concat!("Switchyard/", env!("CARGO_PKG_VERSION")).into(),
            drain_retry_after: 30,
            session_min_secs: 90,
            max_server_transactions: 100_000,
            max_transactions_per_source: 1_000,
            max_subscriptions_per_user: 20,
            tls_alias: false,
        }
    }
}

/// What the endpoint tells the call layer about calls.
#[derive(Debug)]
pub enum CallEvent {
    /// A new call passed auth, routing and limits and is waiting (ringing state) for the call
    /// layer to ring, answer or refuse it.
    Incoming {
        /// Call id (the endpoint's).
        call: u64,
        /// The tenant as it was when the call arrived (kept for the whole call).
        tenant: Arc<crate::tenant::Tenant>,
        /// Who is calling.
        caller: crate::records::call::Caller,
        /// What was dialed.
        dialed: String,
        /// SIP Call-ID of the caller's dialog.
        call_id: String,
        /// Where the dialed string leads.
        target: crate::tenant::model::Target,
    },
    /// A call is answered and its audio negotiated: start its media. What the media backend
    /// reserved under this id (ports, a browser's transport) is the call layer's to take now.
    MediaStart {
        /// Call id (the endpoint's).
        call: u64,
        /// Negotiated audio.
        audio: crate::sdp::NegotiatedAudio,
        /// Where the party's SIP came from (the media latch trusts that host besides SDP's).
        signalling_ip: std::net::IpAddr,
    },
    /// An outgoing leg for call `parent` was started (INVITE sent).
    LegStarted {
        /// The leg's id (used like a call id in later events).
        leg: u64,
        /// The call it belongs to.
        parent: u64,
    },
    /// An outgoing leg got a provisional response (ringing).
    LegProgress {
        /// Leg id.
        leg: u64,
        /// 180, 183, …
        code: u16,
    },
    /// An outgoing leg sent early media (183 with SDP; its `MediaStart` follows).
    LegEarlyMedia {
        /// Leg id.
        leg: u64,
    },
    /// An outgoing leg was answered (its `MediaStart` follows).
    LegAnswered {
        /// Leg id.
        leg: u64,
    },
    /// An outgoing leg failed: a final error, or 408 when nothing answered the INVITE.
    LegFailed {
        /// Leg id.
        leg: u64,
        /// SIP status.
        code: u16,
    },
    /// The called party asked (REFER) to transfer the caller to `target` (a dial string).
    Transfer {
        /// The leg that sent the REFER.
        call: u64,
        /// Refer-To user part.
        target: String,
    },
    /// The called party asked (REFER with `Replaces`) for an attended transfer: the caller of
    /// its call is to be joined to the party it consulted in call `replaces` (a call the
    /// transferor placed through us, same tenant, same phone), and both of the transferor's
    /// dialogs end.
    AttendedTransfer {
        /// The leg that sent the REFER.
        call: u64,
        /// The transferor's consultation call (our id), named by `Replaces`.
        replaces: u64,
    },
    /// A party's own re-INVITE put the call on hold or took it off (pass it to the other).
    HoldChanged {
        /// Call or leg id.
        call: u64,
        /// On hold now.
        hold: bool,
    },
    /// A re-INVITE changed the audio (hold, resume, new address or codec).
    MediaUpdate {
        /// Call id.
        call: u64,
        /// New negotiation.
        audio: crate::sdp::NegotiatedAudio,
    },
    /// A digit arrived by SIP INFO.
    Digit {
        /// Call id.
        call: u64,
        /// The digit.
        digit: char,
    },
    /// The call (or leg) is over: stop its media.
    Ended {
        /// Call id.
        call: u64,
        /// Who ended it.
        by: EndedBy,
        /// The final SIP status when it ended without being answered (487 cancelled, 403, …).
        code: Option<u16>,
        /// Why, as call records say it.
        cause: HangupCause,
        /// Why, as logged (`caller hung up`, `no RTP from the caller (media timeout)`, …).
        reason: String,
    },
}

/// Work the endpoint needs done outside it, because it touches the disk. The runtime does it
/// off the SIP loop; a result, where there is one, comes back as an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// Store a user's registrations (empty: delete them), so a restart keeps phones
    /// reachable. Write these in order.
    SaveBindings(super::registrar::BindingsChanged),
    /// Count a mailbox's messages and give them back with [`Endpoint::mailbox_counts`].
    /// `changed`: the counts changed (a message arrived or was read), so every phone of the
    /// mailbox is told, not only the subscriptions.
    CountMailbox {
        /// Tenant id.
        tenant: String,
        /// Mailbox id.
        mailbox: String,
        /// The mailbox changed (rather than: a subscription needs its counts).
        changed: bool,
    },
}

pub use crate::records::call::{EndedBy, HangupCause};

/// A call in progress, as the endpoint knows it (the admin API adds the call layer's view).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveCall {
    /// Id to hang the call up with.
    pub id: u64,
    /// SIP Call-ID.
    pub call_id: String,
    /// Caller (From).
    pub from: String,
    /// Called party (To).
    pub to: String,
    /// `ringing`, `answered` (200 sent, no ACK yet) or `up`.
    pub state: &'static str,
    /// Seconds since the INVITE.
    pub duration_secs: u64,
    /// Negotiated codec.
    pub codec: Option<&'static str>,
    /// Where the call was routed.
    pub target: String,
    /// The caller put the call on hold.
    pub on_hold: bool,
    /// Caller's source address.
    pub source: std::net::SocketAddr,
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct EndpointStats {
    /// Messages that failed to parse.
    pub malformed: u64,
    /// Calls accepted (INVITE got past auth and routing).
    pub calls_started: u64,
    /// Calls ended.
    pub calls_ended: u64,
    /// Digest failures.
    pub auth_failures: u64,
    /// Requests refused because their (user, address) or address is blocked.
    pub auth_blocked: u64,
    /// Blocks started (a user from an address, or a scanning address).
    pub auth_blocks_started: u64,
    /// Server transactions alive.
    pub server_transactions: usize,
    /// Requests dropped because the transaction bounds were reached.
    pub requests_dropped: u64,
    /// Client transactions alive.
    pub client_transactions: usize,
    /// Trunk calls that failed because the trunk's name had no target.
    pub trunk_unresolved: u64,
    /// Trunk legs moved on to the next target (silence, unreachable, timeout, 503).
    pub trunk_failovers: u64,
    /// Offers refused for their SRTP (keys without TLS, against the tenant's policy).
    pub srtp_offers_refused: u64,
    /// Attended transfers refused: `Replaces` named no dialog the transferor has with us.
    pub replaces_refused: u64,
    /// `alias` offers refused (RFC 5923): a name the certificate does not hold, or too many
    /// (offers from connections without a verified certificate are routine, not counted).
    pub aliases_refused: u64,
    /// Names aliased to connections peers opened (RFC 5923), now.
    pub aliases: usize,
}

/// Identifies a server transaction (RFC 3261 §17.2.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct TxKey {
    branch: String,
    sent_by: String,
    /// Method, with ACK folded into INVITE.
    method: String,
}

impl TxKey {
    fn for_request(req: &SipRequest, method: &Method) -> TxKey {
        let method = match method {
            Method::Ack => "INVITE".to_string(),
            m => m.to_string(),
        };
        let sent_by = format!("{}:{}", req.via.host, req.via.port.unwrap_or(0));
        let branch = if req.via.has_rfc3261_branch() {
            req.via.branch.clone().unwrap_or_default()
        } else {
            // RFC 2543 peers: match on the request's identity instead (§17.2.3 fallback).
            format!(
                "{}|{}|{}|{}",
                req.call_id,
                req.cseq,
                req.from.tag().unwrap_or(""),
                req.vias.first().map(String::as_str).unwrap_or("")
            )
        };
        TxKey {
            branch,
            sent_by,
            method,
        }
    }
}

enum ServerTx {
    Invite(ServerInviteTransaction),
    NonInvite(ServerNonInviteTransaction),
}

struct ServerTxEntry {
    tx: ServerTx,
    peer: Peer,
}

/// Server transactions alive per source address, for the per-source bound.
#[derive(Default)]
struct TxCounts {
    by_ip: HashMap<IpAddr, usize>,
}

impl TxCounts {
    fn add(&mut self, ip: IpAddr) {
        *self.by_ip.entry(ip).or_default() += 1;
    }

    fn remove(&mut self, ip: IpAddr) {
        if let Some(n) = self.by_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.by_ip.remove(&ip);
            }
        }
    }

    fn of(&self, ip: IpAddr) -> usize {
        self.by_ip.get(&ip).copied().unwrap_or(0)
    }
}

struct ClientTxEntry {
    tx: ClientNonInviteTransaction,
    peer: Peer,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum TimerRef {
    Server(TxKey),
    Client(String),
    ClientInvite(String),
    ClientReinvite(String),
    TrunkReg(trunk_reg::TrunkKey),
    Call(u64),
    /// `limits.max_call_secs` of a call or outgoing leg is up.
    MaxLength(u64),
    /// A call's session timer (RFC 4028) may have run out.
    SessionExpiry(u64),
    /// A trunk leg's current target may have stayed silent (see `failover.rs`).
    TargetSilent(u64),
    /// A call's reliable provisional response may be due again (see `reliable.rs`).
    Reliable(u64),
    /// An outgoing leg's session refresh may be due, or its session over (`leg_timer.rs`).
    LegSession(u64),
    Housekeeping,
}

/// Methods we implement; others known to SIP get 405 with this list.
const ALLOW: &str =
    "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO, SUBSCRIBE, REFER, UPDATE, PRACK";

/// Option tags we support (RFC 3261 §20.37).
const SUPPORTED: &str = "timer, 100rel";

/// The SIP endpoint. See the module documentation.
pub struct Endpoint {
    cfg: EndpointConfig,
    tenants: SnapshotCell,
    media: Box<dyn MediaBackend>,
    registrar: Registrar,
    nonces: NonceIssuer,
    limiter: AuthGuard,
    server_txs: HashMap<TxKey, ServerTxEntry>,
    server_tx_counts: TxCounts,
    client_txs: HashMap<String, ClientTxEntry>,
    calls: HashMap<u64, Call>,
    dialogs: HashMap<(String, String), u64>,
    /// INVITE transaction → call, for CANCEL.
    invite_calls: HashMap<TxKey, u64>,
    /// Live calls per tenant, for `limits.max_concurrent_calls` (tenants with none leave).
    tenant_calls: HashMap<String, usize>,
    /// Bumped whenever `tenant_calls` changes, so a cluster shares counts only when they move.
    tenant_calls_version: u64,
    /// Live calls per tenant on the cluster's other nodes, counted against the limit with
    /// this node's own (see `set_remote_calls`).
    remote_calls: HashMap<String, usize>,
    next_call: u64,
    timers: BinaryHeap<Reverse<(Instant, TimerRef)>>,
    out: VecDeque<Transmit>,
    events: VecDeque<CallEvent>,
    draining: bool,
    stats: EndpointStats,
    subscriptions: HashMap<(String, String), mwi::Subscription>,
    /// Message waiting is offered (the runtime counts mailboxes for us).
    message_waiting: bool,
    /// Last known (new, saved) counts by (tenant, mailbox).
    mailbox_counts: HashMap<(String, String), (usize, usize)>,
    /// Contacts registered anew while their mailbox's counts were unknown, by (tenant,
    /// mailbox): told when the counts come, if there are new messages. At most the contacts
    /// of a configured mailbox's users (authenticated registrations only).
    mwi_after_register: HashMap<(String, String), Vec<(String, Binding)>>,
    /// The call layer's rules for new calls (trunk trust, routing, limits).
    policy: Box<dyn CallPolicy>,
    /// Where tags, branches and Call-IDs come from (seeded: randomness is an input).
    ids: Ids,
    /// Work for the runtime (see [`Work`]); registrar changes are taken from it directly.
    work: VecDeque<Work>,
    /// The latest time handed in (the endpoint never reads the clock itself).
    last_now: Option<Instant>,
    /// Outgoing legs by id (ids shared with `calls`).
    out_calls: HashMap<u64, outbound::OutCall>,
    /// Our INVITE transactions by branch, with their leg.
    client_invites: HashMap<String, (ClientInviteTransaction, u64)>,
    /// Our re-INVITEs (hold passed through) by branch, with their call or leg.
    client_reinvites: HashMap<String, (ClientInviteTransaction, u64)>,
    /// Registrations to providers.
    trunk_regs: HashMap<trunk_reg::TrunkKey, trunk_reg::TrunkRegistration>,
    /// Branches of our REGISTERs, to their trunk.
    reg_branches: HashMap<String, trunk_reg::TrunkKey>,
    /// The tenant snapshot the registrations were last matched to.
    trunk_reg_snapshot: Option<Arc<crate::tenant::Snapshot>>,
    /// The trunk targets the registrations were last matched to.
    trunk_reg_targets: Option<Arc<locate::TargetTable>>,
    /// Branches of our session refreshes (UPDATE) on outgoing legs, to their leg.
    leg_refreshes: HashMap<String, u64>,
    /// Trunk names' targets, resolved by the runtime in the background.
    trunk_targets: Arc<arc_swap::ArcSwap<locate::TargetTable>>,
    /// The certificate name for each TLS target this node has sent to (bounded by
    /// [`MAX_TLS_NAMES`]), so any request to it (a BYE too) can open a connection.
    tls_names: HashMap<SocketAddr, Arc<str>>,
    /// Peers' connections offered for requests back to them (RFC 5923).
    aliases: reuse::Aliases,
}

/// TLS target names remembered (trunk targets: a handful per trunk).
const MAX_TLS_NAMES: usize = 4096;

impl Endpoint {
    /// A new endpoint.
    pub fn new(
        cfg: EndpointConfig,
        tenants: SnapshotCell,
        media: Box<dyn MediaBackend>,
        policy: Box<dyn CallPolicy>,
        registrar: Registrar,
    ) -> Endpoint {
        let nonces = NonceIssuer::new(cfg.nonce_secret, cfg.nonce_lifetime);
        let limiter = AuthGuard::new(cfg.auth_limits);
        let ids = Ids::from_seed(cfg.id_seed);
        let first_call = cfg.first_call_id.max(1);
        Endpoint {
            cfg,
            tenants,
            media,
            registrar,
            nonces,
            limiter,
            server_txs: HashMap::new(),
            server_tx_counts: TxCounts::default(),
            client_txs: HashMap::new(),
            calls: HashMap::new(),
            dialogs: HashMap::new(),
            invite_calls: HashMap::new(),
            tenant_calls: HashMap::new(),
            tenant_calls_version: 0,
            remote_calls: HashMap::new(),
            next_call: first_call,
            timers: BinaryHeap::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            draining: false,
            stats: EndpointStats::default(),
            subscriptions: HashMap::new(),
            message_waiting: false,
            mailbox_counts: HashMap::new(),
            mwi_after_register: HashMap::new(),
            policy,
            ids,
            work: VecDeque::new(),
            last_now: None,
            out_calls: HashMap::new(),
            client_invites: HashMap::new(),
            client_reinvites: HashMap::new(),
            trunk_regs: HashMap::new(),
            reg_branches: HashMap::new(),
            trunk_reg_snapshot: None,
            trunk_reg_targets: None,
            leg_refreshes: HashMap::new(),
            trunk_targets: Arc::default(),
            tls_names: HashMap::new(),
            aliases: reuse::Aliases::default(),
        }
    }

    /// Where trunk names' targets are read from (the runtime keeps them resolved).
    pub fn set_trunk_targets(&mut self, table: Arc<arc_swap::ArcSwap<locate::TargetTable>>) {
        self.trunk_targets = table;
    }

    /// Counters.
    pub fn stats(&self) -> EndpointStats {
        EndpointStats {
            server_transactions: self.server_txs.len(),
            client_transactions: self.client_txs.len(),
            aliases: self.aliases.len(),
            ..self.stats
        }
    }

    /// Calls in progress.
    pub fn live_calls(&self) -> usize {
        self.calls.len() + self.out_calls.len()
    }

    /// Live calls per tenant on this node, and a version that changes whenever they do.
    pub fn tenant_calls(&self) -> (u64, &HashMap<String, usize>) {
        (self.tenant_calls_version, &self.tenant_calls)
    }

    /// Live calls per tenant on the cluster's other nodes, as their heartbeats last told
    /// (replaces the previous figures). New calls are admitted against this node's count
    /// plus these.
    pub fn set_remote_calls(&mut self, calls: HashMap<String, usize>) {
        self.remote_calls = calls;
    }

    /// Calls of `tenant` in progress across the cluster, as far as this node knows.
    fn active_calls_of(&self, tenant: &str) -> usize {
        let local = self.tenant_calls.get(tenant).copied().unwrap_or(0);
        local + self.remote_calls.get(tenant).copied().unwrap_or(0)
    }

    /// Counts a call (or outgoing leg) of `tenant` that starts.
    fn tenant_call_started(&mut self, tenant: &str) {
        *self.tenant_calls.entry(tenant.to_string()).or_default() += 1;
        self.tenant_calls_version += 1;
    }

    /// Counts a call (or outgoing leg) of `tenant` that ended.
    fn tenant_call_ended(&mut self, tenant: &str) {
        if let Some(n) = self.tenant_calls.get_mut(tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.tenant_calls.remove(tenant);
            }
            self.tenant_calls_version += 1;
        }
    }

    /// Registered contacts across all users.
    pub fn registrations(&self) -> usize {
        self.registrar.count()
    }

    /// A user's registered contacts.
    pub fn registrations_of(
        &self,
        tenant: &str,
        extension: &str,
        unix_now: u64,
    ) -> Vec<super::registrar::Binding> {
        self.registrar.lookup(tenant, extension, unix_now)
    }

    /// Another node's bindings for a user, from the cluster's shared table (see
    /// `Registrar::set_remote`).
    pub fn set_remote_bindings(
        &mut self,
        tenant: &str,
        extension: &str,
        node: &str,
        bindings: Vec<super::registrar::Binding>,
    ) {
        self.registrar.set_remote(tenant, extension, node, bindings);
    }

    /// Every user's bindings as this node holds them (for the cluster's shared table).
    pub fn local_bindings(&self) -> Vec<super::registrar::BindingsChanged> {
        self.registrar.local_bindings()
    }

    /// Contacts registered through other nodes of the cluster, across all users.
    pub fn remote_registrations(&self) -> usize {
        self.registrar.remote_count()
    }

    /// Next queued message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// Next piece of disk work for the runtime (see [`Work`]).
    pub fn poll_work(&mut self) -> Option<Work> {
        if let Some(c) = self.registrar.poll_change() {
            return Some(Work::SaveBindings(c));
        }
        self.work.pop_front()
    }

    /// Next event for the call layer.
    pub fn poll_event(&mut self) -> Option<CallEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next needed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// Stop taking new calls: INVITEs (and OPTIONS, so load balancers that probe with them
    /// send new calls elsewhere) get 503 with Retry-After from now on.
    pub fn begin_drain(&mut self) {
        self.draining = true;
    }

    /// Take new calls again.
    pub fn end_drain(&mut self) {
        self.draining = false;
    }

    /// Whether new calls are refused.
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// Seconds from `since` to the latest time handed in, for log lines.
    fn secs_since(&self, since: Instant) -> f64 {
        self.last_now
            .map(|n| n.saturating_duration_since(since).as_secs_f64())
            .unwrap_or(0.0)
    }

    fn schedule(&mut self, at: Option<Instant>, r: TimerRef) {
        if let Some(at) = at {
            self.timers.push(Reverse((at, r)));
        }
    }

    fn send(&mut self, mut peer: Peer, payload: Bytes) {
        let server_name = match (peer.transport, peer.conn) {
            (TransportKind::Tls, None) => self.tls_names.get(&peer.addr).cloned(),
            _ => None,
        };
        // A connection the target opened and offered for this name (RFC 5923) goes first.
        let aliased = server_name
            .as_deref()
            .and_then(|name| self.aliases.route(name, peer.addr.port()));
        if let Some(conn) = aliased {
            peer.conn = Some(conn);
        }
        self.out.push_back(Transmit {
            peer,
            payload,
            server_name,
        });
    }

    /// Remembers the certificate name of a TLS target before the first request to it.
    fn remember_tls_name(&mut self, target: &locate::Target) {
        if target.transport != TransportKind::Tls {
            return;
        }
        if self.tls_names.len() >= MAX_TLS_NAMES && !self.tls_names.contains_key(&target.addr) {
            self.tls_names.clear();
        }
        self.tls_names
            .insert(target.addr, target.server_name.clone());
    }

    /// A message arrived from `peer`.
    pub fn handle_incoming(&mut self, now: Now, peer: Peer, data: &[u8]) {
        self.last_now = self.last_now.max(Some(now.instant));
        if self.timers.is_empty() {
            self.schedule(
                Some(now.instant + Duration::from_secs(10)),
                TimerRef::Housekeeping,
            );
        }
        match parse(data) {
            Ok(SipMessage::Request(req)) => self.handle_request(now, peer, req),
            Ok(SipMessage::Response(resp)) => self.handle_response(now, resp),
            Err(failure) => {
                self.stats.malformed += 1;
                tracing::debug!(peer = %peer.addr, error = %failure.error, "malformed SIP message");
                if let Some(h) = failure.reply_headers {
                    let code = match failure.error {
                        ParseError::UnknownMethod(_) => 501,
                        ParseError::BadVersion => 505,
                        _ => 400,
                    };
                    let mut b = ResponseBuilder::new(code);
                    if code == 400 {
                        b = b
                            .reason(
                                format!("Bad Request ({})", failure.error)
                                    .replace(['\r', '\n'], " "),
                            )
                            .header(
                                "Warning",
                                format!(
                                    "399 {} \"{}\"",
                                    self.cfg.public_host,
                                    failure.error.to_string().replace('"', "'")
                                ),
                            );
                    }
                    if code == 501 {
                        b = b.header("Allow", ALLOW);
                    }
                    let bytes = b.build_raw(&h, peer.addr, &self.cfg.server_name);
                    self.send(peer, bytes);
                }
            }
        }
    }

    /// A peer's connection that presented a certificate the TLS listener verified: the names
    /// it holds may alias the connection (RFC 5923).
    pub fn connection_certified(&mut self, conn: u64, peer: Arc<dyn CertifiedPeer>) {
        self.aliases.certified(conn, peer);
    }

    /// A request offered its connection for requests back to its sent-by (RFC 5923): taken
    /// for a TLS connection whose verified certificate holds that name.
    fn alias_offered(&mut self, peer: Peer, via: &crate::sip::headers::Via) {
        let (TransportKind::Tls, Some(conn)) = (peer.transport, peer.conn) else {
            return;
        };
        let port = via.port.unwrap_or(5061);
        match self.aliases.offered(conn, &via.host, port) {
            reuse::Offer::Taken => {}
            // Routine: PJSIP phones offer every TLS connection; without a verified
            // certificate RFC 5923 forbids taking it, and there is nothing suspicious in it.
            reuse::Offer::Unproven => {
                tracing::debug!(peer = %peer.addr, "connection alias without a verified certificate: not taken");
            }
            refused => {
                self.stats.aliases_refused += 1;
                tracing::info!(
                    peer = %peer.addr,
                    sent_by = ?via.host,
                    port,
                    reason = ?refused,
                    "connection alias refused (RFC 5923)"
                );
            }
        }
    }

    /// Whether a new server transaction from `ip` fits the bounds: `max_server_transactions`
    /// in all, `max_transactions_per_source` per address (trunks' addresses are exempt: a
    /// carrier legitimately keeps thousands). Past them the request is dropped unanswered: a
    /// flood gets nothing back, and a real client retransmits.
    fn may_open_transaction(&mut self, ip: IpAddr) -> bool {
        if self.server_txs.len() >= self.cfg.max_server_transactions {
            self.stats.requests_dropped += 1;
            return false;
        }
        if self.server_tx_counts.of(ip) >= self.cfg.max_transactions_per_source
            && !self.is_trusted_proxy(ip)
        {
            let trunk = self
                .tenants
                .load()
                .tenants()
                .any(|t| t.trunk_for_source(ip).is_some());
            if !trunk {
                self.stats.requests_dropped += 1;
                return false;
            }
        }
        true
    }

    fn insert_server_tx(&mut self, key: TxKey, entry: ServerTxEntry) {
        self.server_tx_counts.add(entry.peer.addr.ip());
        if let Some(old) = self.server_txs.insert(key, entry) {
            self.server_tx_counts.remove(old.peer.addr.ip());
        }
    }

    fn handle_request(&mut self, now: Now, peer: Peer, req: SipRequest) {
        if req.via.alias {
            self.alias_offered(peer, &req.via);
        }
        let method = req.method();
        match method {
            Method::Ack => return self.handle_ack(now, peer, req),
            Method::Cancel => return self.handle_cancel(now, peer, req),
            _ => {}
        }
        let key = TxKey::for_request(&req, &method);
        if let Some(entry) = self.server_txs.get_mut(&key) {
            let resend = match &mut entry.tx {
                ServerTx::Invite(tx) => tx.on_request_retransmission(),
                ServerTx::NonInvite(tx) => tx.on_request_retransmission(),
            };
            if let Some(bytes) = resend {
                let p = entry.peer;
                self.send(p, bytes);
            }
            return;
        }
        if !self.may_open_transaction(peer.addr.ip()) {
            return;
        }
        let reliable = peer.transport.is_reliable();
        let tx = if method == Method::Invite {
            ServerTx::Invite(ServerInviteTransaction::new(reliable, self.cfg.timers))
        } else {
            ServerTx::NonInvite(ServerNonInviteTransaction::new(reliable, self.cfg.timers))
        };
        self.insert_server_tx(key.clone(), ServerTxEntry { tx, peer });

        if let Some(unsupported) = self.unsupported_requirements(&req) {
            let b = ResponseBuilder::new(420).header("Unsupported", unsupported);
            return self.respond(now, &key, &req, b);
        }
        match method {
            Method::Options if self.draining => {
                // A balancer's probe: this node takes no new calls (RFC 3261 §11.2 lets an
                // OPTIONS answer be what an INVITE would get).
                let b = ResponseBuilder::new(503)
                    .reason("Service Unavailable (draining)")
                    .header("Retry-After", self.cfg.drain_retry_after.to_string());
                self.respond(now, &key, &req, b)
            }
            Method::Options => {
                let b = ResponseBuilder::new(200)
                    .to_tag(&self.ids.token())
                    .header("Allow", ALLOW)
                    .header("Accept", "application/sdp")
                    .header("Supported", SUPPORTED);
                self.respond(now, &key, &req, b)
            }
            Method::Register => self.handle_register(now, key, peer, req),
            Method::Invite => self.handle_invite(now, key, peer, req),
            Method::Bye => self.handle_bye(now, key, req),
            Method::Info => self.handle_info(now, key, req),
            Method::Subscribe => self.handle_subscribe(now, key, peer, req),
            Method::Refer => self.handle_refer(now, key, req),
            Method::Update => self.handle_update(now, key, req),
            Method::PRack => self.handle_prack(now, key, req),
            _ => {
                let b = ResponseBuilder::new(405).header("Allow", ALLOW);
                self.respond(now, &key, &req, b)
            }
        }
    }

    /// `Require` options we do not support (RFC 3261 §8.2.2.3).
    fn unsupported_requirements(&self, req: &SipRequest) -> Option<String> {
        let required = req.header_values("Require");
        // Path (RFC 3327; a proxy may require it), session timers (RFC 4028), and reliable
        // provisional responses (RFC 3262) for an INVITE, the only request that gets them.
        let invite = req.method() == Method::Invite;
        let unsupported: Vec<String> = required
            .into_iter()
            .filter(|r| {
                let r = r.trim();
                let ours = r.eq_ignore_ascii_case("path")
                    || r.eq_ignore_ascii_case("timer")
                    || (invite && r.eq_ignore_ascii_case("100rel"));
                !r.is_empty() && !ours
            })
            .collect();
        (!unsupported.is_empty()).then(|| unsupported.join(", "))
    }

    /// Sends a response through the request's server transaction.
    fn respond(&mut self, now: Now, key: &TxKey, req: &SipRequest, b: ResponseBuilder) {
        self.respond_with(now, key, req, b, false)
    }

    /// Answers a request from a source that proved nothing (a challenge, a refusal) without
    /// Timer G repeats of an INVITE's final response (see
    /// [`ServerInviteTransaction::send_response_once`]): a spoofed source must not make us
    /// an amplifier.
    fn respond_once(&mut self, now: Now, key: &TxKey, req: &SipRequest, b: ResponseBuilder) {
        self.respond_with(now, key, req, b, true)
    }

    fn respond_with(
        &mut self,
        now: Now,
        key: &TxKey,
        req: &SipRequest,
        b: ResponseBuilder,
        once: bool,
    ) {
        let Some(entry) = self.server_txs.get_mut(key) else {
            return;
        };
        let code = b.code();
        let bytes = b.build(req, entry.peer.addr, &self.cfg.server_name);
        let peer = entry.peer;
        let mut events = Vec::new();
        match &mut entry.tx {
            ServerTx::Invite(tx) => {
                let sent = if once {
                    tx.send_response_once(code, bytes, now.instant)
                } else {
                    tx.send_response(code, bytes, now.instant)
                };
                if let Some(b) = sent {
                    events.push(TxEvent::Transmit(b));
                }
            }
            ServerTx::NonInvite(tx) => events = tx.send_response(code, bytes, now.instant),
        }
        self.apply_server_events(key, peer, events);
        let next = self.server_txs.get(key).and_then(|e| match &e.tx {
            ServerTx::Invite(tx) => tx.poll_timeout(),
            ServerTx::NonInvite(tx) => tx.poll_timeout(),
        });
        self.schedule(next, TimerRef::Server(key.clone()));
    }

    fn apply_server_events(&mut self, key: &TxKey, peer: Peer, events: Vec<TxEvent>) {
        for ev in events {
            match ev {
                TxEvent::Transmit(b) => self.send(peer, b),
                TxEvent::TimedOut => {
                    tracing::debug!(branch = %key.branch, "server transaction timed out waiting for ACK");
                    if let Some(call) = self.invite_calls.remove(key) {
                        self.end_call(call, HangupCause::NoAck, "no ACK for final response");
                    }
                }
                TxEvent::Terminated => {
                    if let Some(e) = self.server_txs.remove(key) {
                        self.server_tx_counts.remove(e.peer.addr.ip());
                    }
                    self.invite_calls.remove(key);
                }
            }
        }
    }

    /// A challenge response (401 for REGISTER, 407 otherwise).
    fn challenge(
        &mut self,
        now: Now,
        key: &TxKey,
        req: &SipRequest,
        realm: &str,
        stale: bool,
        proxy: bool,
    ) {
        let salt = self.ids.salt();
        let nonce = self.nonces.issue(realm, now.unix, salt);
        let header = if proxy {
            "Proxy-Authenticate"
        } else {
            "WWW-Authenticate"
        };
        let mut b = ResponseBuilder::new(if proxy { 407 } else { 401 }).to_tag(&self.ids.token());
        // Browser SIP stacks speak MD5 only, and JsSIP answers the *last* challenge while
        // SIPp and most phones answer the first: over WebSocket the challenge is MD5 alone
        // (wss encrypts the exchange), elsewhere the configured list in order.
        let browser = matches!(
            TransportKind::from_token(&req.via.transport),
            Some(TransportKind::Ws | TransportKind::Wss)
        );
        let algorithms: Vec<DigestAlgorithm> =
            if browser && self.cfg.algorithms.contains(&DigestAlgorithm::Md5) {
                vec![DigestAlgorithm::Md5]
            } else {
                self.cfg.algorithms.clone()
            };
        for v in challenge_values(realm, &nonce, &algorithms, stale) {
            b = b.header(header, v);
        }
        self.respond_once(now, key, req, b);
    }

    fn handle_response(&mut self, now: Now, resp: SipResponse) {
        if resp.cseq_method == Method::Invite {
            if self.handle_reinvite_response(now, &resp) {
                return;
            }
            return self.handle_invite_response(now, resp);
        }
        let Some(mut branch) = resp.via.branch.clone() else {
            return;
        };
        if resp.cseq_method == Method::Cancel {
            // Our CANCELs share their INVITE's branch; their transactions are keyed apart.
            branch.push_str("-cancel");
        }
        let Some(entry) = self.client_txs.get_mut(&branch) else {
            tracing::debug!(%branch, code = resp.code, "response matches no transaction");
            return;
        };
        let d = entry.tx.on_response(resp.code, now.instant);
        let terminated = d.events.contains(&TxEvent::Terminated) || entry.tx.is_terminated();
        let next = entry.tx.poll_timeout();
        if terminated {
            self.client_txs.remove(&branch);
        } else {
            self.schedule(next, TimerRef::Client(branch.clone()));
        }
        if d.pass_to_user && resp.code >= 200 && resp.cseq_method == Method::Register {
            return self.trunk_register_result(now, &branch, Some(&resp));
        }
        if d.pass_to_user && resp.code >= 200 && resp.cseq_method == Method::Update {
            return self.leg_refresh_result(now, &branch, Some(&resp));
        }
        if d.pass_to_user && resp.code >= 300 {
            tracing::debug!(%branch, code = resp.code, method = %resp.cseq_method, "request refused by peer");
        }
    }

    /// Starts a client transaction for a request we originate.
    fn send_request(&mut self, now: Now, peer: Peer, branch: String, bytes: Bytes) {
        let tx = ClientNonInviteTransaction::new(
            bytes.clone(),
            peer.transport.is_reliable(),
            self.cfg.timers,
            now.instant,
        );
        let next = tx.poll_timeout();
        self.client_txs
            .insert(branch.clone(), ClientTxEntry { tx, peer });
        self.schedule(next, TimerRef::Client(branch));
        self.send(peer, bytes);
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Now) {
        self.last_now = self.last_now.max(Some(now.instant));
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now.instant {
                break;
            }
            let Some(Reverse((_, r))) = self.timers.pop() else {
                break;
            };
            match r {
                TimerRef::Server(key) => {
                    let Some(entry) = self.server_txs.get_mut(&key) else {
                        continue;
                    };
                    let (events, next) = match &mut entry.tx {
                        ServerTx::Invite(tx) => (tx.handle_timeout(now.instant), tx.poll_timeout()),
                        ServerTx::NonInvite(tx) => {
                            (tx.handle_timeout(now.instant), tx.poll_timeout())
                        }
                    };
                    let peer = entry.peer;
                    let had_events = !events.is_empty();
                    self.apply_server_events(&key, peer, events);
                    if had_events && self.server_txs.contains_key(&key) {
                        self.schedule(next, TimerRef::Server(key));
                    }
                }
                TimerRef::Client(branch) => {
                    let Some(entry) = self.client_txs.get_mut(&branch) else {
                        continue;
                    };
                    let events = entry.tx.handle_timeout(now.instant);
                    let next = entry.tx.poll_timeout();
                    let peer = entry.peer;
                    let had_events = !events.is_empty();
                    for ev in events {
                        match ev {
                            TxEvent::Transmit(b) => self.send(peer, b),
                            TxEvent::TimedOut => {
                                tracing::debug!(%branch, "client transaction timed out");
                                self.trunk_register_result(now, &branch, None);
                                self.leg_refresh_result(now, &branch, None);
                            }
                            TxEvent::Terminated => {
                                self.client_txs.remove(&branch);
                            }
                        }
                    }
                    if had_events && self.client_txs.contains_key(&branch) {
                        self.schedule(next, TimerRef::Client(branch));
                    }
                }
                TimerRef::ClientInvite(branch) => {
                    let Some((tx, leg)) = self.client_invites.get_mut(&branch) else {
                        continue;
                    };
                    let leg = *leg;
                    let events = tx.handle_timeout(now.instant);
                    let next = tx.poll_timeout();
                    let had_events = !events.is_empty();
                    let peer = self.out_calls.get(&leg).map(|c| c.peer);
                    for ev in events {
                        match ev {
                            TxEvent::Transmit(b) => {
                                if let Some(p) = peer {
                                    self.send(p, b);
                                }
                            }
                            TxEvent::TimedOut => self.leg_timed_out(now, leg),
                            TxEvent::Terminated => {
                                self.client_invites.remove(&branch);
                            }
                        }
                    }
                    if had_events && self.client_invites.contains_key(&branch) {
                        self.schedule(next, TimerRef::ClientInvite(branch));
                    }
                }
                TimerRef::TrunkReg(key) => self.trunk_reg_timeout(now, key),
                TimerRef::TargetSilent(id) => self.target_silent(now, id),
                TimerRef::Reliable(id) => self.reliable_timeout(now, id),
                TimerRef::LegSession(id) => self.leg_session_timer(now, id),
                TimerRef::ClientReinvite(branch) => self.reinvite_timeout(now, branch),
                TimerRef::Call(id) => self.call_timeout(now, id),
                TimerRef::MaxLength(id) => {
                    if self.calls.contains_key(&id) || self.out_calls.contains_key(&id) {
                        tracing::info!(call = id, "maximum call length reached: hanging up");
                        self.hangup_call(
                            now,
                            id,
                            HangupCause::MaxDuration,
                            "maximum call length reached",
                        );
                    }
                }
                TimerRef::SessionExpiry(id) => self.session_timer_fired(now, id),
                TimerRef::Housekeeping => {
                    self.registrar.expire(now.unix);
                    self.expire_subscriptions(now);
                    self.schedule(
                        Some(now.instant + Duration::from_secs(10)),
                        TimerRef::Housekeeping,
                    );
                }
            }
        }
    }

    fn port_for(&self, transport: TransportKind) -> Option<u16> {
        match transport {
            TransportKind::Udp => self.cfg.udp_port,
            TransportKind::Tcp => self.cfg.tcp_port,
            TransportKind::Tls => self.cfg.tls_port,
            TransportKind::Ws => self.cfg.ws_port,
            TransportKind::Wss => self.cfg.wss_port,
        }
    }

    /// Where requests we originate in a dialog say they come from.
    /// Over TLS with our certificate presented, the connection is offered for requests
    /// back to us (`alias`, RFC 5923): a carrier that honours it sends its BYEs and calls
    /// down the connection we opened rather than opening one to our listener.
    fn via_for(&self, transport: TransportKind, branch: &str) -> String {
        let port = self
            .port_for(transport)
            .map(|p| format!(":{p}"))
            .unwrap_or_default();
        let alias = if transport == TransportKind::Tls && self.cfg.tls_alias {
            ";alias"
        } else {
            ""
        };
        format!(
            "SIP/2.0/{} {}{port};branch={branch};rport{alias}",
            transport.token(),
            self.cfg.public_host
        )
    }

    /// Our Contact URI for a dialog on `transport`.
    fn contact_for(&self, user: &str, transport: TransportKind) -> String {
        let port = self
            .port_for(transport)
            .map(|p| format!(":{p}"))
            .unwrap_or_default();
        let user = if user.is_empty() {
            String::new()
        } else {
            format!("{user}@")
        };
        let tp = match transport {
            TransportKind::Udp => "",
            TransportKind::Tcp => ";transport=tcp",
            TransportKind::Tls => ";transport=tls",
            TransportKind::Ws => ";transport=ws",
            TransportKind::Wss => ";transport=wss",
        };
        format!("<sip:{user}{}{port}{tp}>", self.cfg.public_host)
    }
}

#[cfg(test)]
mod tests;
