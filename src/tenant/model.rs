//! The tenant configuration document: what `tenant import` reads, `tenant export` writes, and
//! the snapshot stores. Every type is serde, with `deny_unknown_fields` so a typo in a key is
//! an error naming the key instead of a silently ignored setting.
//!
//! Secrets: users carry digest HA1 hashes, mailboxes a salted PIN hash. An import may give
//! `password` / `pin` in clear instead; [`TenantConfig::hash_secrets`] turns them into hashes
//! before anything is stored, and they are never written back out.

use crate::sip::digest::{ha1, DigestAlgorithm};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One tenant: its users, numbers, menus, mailboxes and trunks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Stable identifier (`[a-z0-9-]`), used in URLs and storage keys.
    #[schema(pattern = "^[a-z0-9-]{1,63}$")]
    pub id: String,
    /// Human name.
    #[schema(min_length = 1, pattern = "\\S")]
    pub name: String,
    /// SIP domains this tenant answers for (Request-URI / To host).
    #[serde(default)]
    pub domains: Vec<String>,
    /// Digest realm; the first domain when absent. HA1 hashes depend on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realm: Option<String>,
    /// IANA time zone for time-of-day routing.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Phone numbers (DIDs) that reach this tenant from trunks, and where they go.
    #[serde(default)]
    pub numbers: Vec<Number>,
    /// Users (phones) with their extensions.
    #[serde(default)]
    pub users: Vec<User>,
    /// Feature extensions: IVRs, echo test, voicemail access, …
    #[serde(default)]
    pub extensions: Vec<Extension>,
    /// IVR menus by id.
    #[serde(default)]
    pub ivrs: BTreeMap<String, IvrMenu>,
    /// Voicemail boxes.
    #[serde(default)]
    pub mailboxes: Vec<Mailbox>,
    /// SIP trunks to and from carriers.
    #[serde(default)]
    pub trunks: Vec<Trunk>,
    /// Outbound routes: which dialed prefixes may leave through which trunk.
    #[serde(default)]
    pub outbound_routes: Vec<OutboundRoute>,
    /// Limits.
    #[serde(default)]
    pub limits: Limits,
    /// Tenant-wide behaviour.
    #[serde(default)]
    pub settings: TenantSettings,
}

fn default_timezone() -> String {
    "UTC".into()
}

impl TenantConfig {
    /// The digest realm users authenticate in.
    pub fn realm(&self) -> &str {
        self.realm
            .as_deref()
            .or(self.domains.first().map(String::as_str))
            .unwrap_or(&self.id)
    }

    /// Replaces clear-text `password` and `pin` fields by their hashes.
    pub fn hash_secrets(&mut self) {
        let realm = self.realm().to_string();
        for u in &mut self.users {
            if let Some(pw) = u.password.take() {
                u.ha1_md5 = Some(ha1(DigestAlgorithm::Md5, &u.username, &realm, &pw));
                u.ha1_sha256 = Some(ha1(DigestAlgorithm::Sha256, &u.username, &realm, &pw));
            }
        }
        for m in &mut self.mailboxes {
            if let Some(pin) = m.pin.take() {
                m.pin_hash = Some(hash_pin(&pin));
            }
        }
    }
}

/// PBKDF2 rounds for voicemail PINs: a PIN has few digits, so what protects a leaked
/// document is the cost of each guess (a few ms here, per try and per PIN).
const PIN_ROUNDS: u32 = 20_000;

/// `pbkdf2-sha256$<rounds>$<salt hex>$<hex of PBKDF2-HMAC-SHA256(pin, salt, rounds)>`.
pub fn hash_pin(pin: &str) -> String {
    let salt: [u8; 16] = rand::random();
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(pin.as_bytes(), &salt, PIN_ROUNDS, &mut out);
    format!(
        "pbkdf2-sha256${PIN_ROUNDS}${}${}",
        hex::encode(salt),
        hex::encode(out)
    )
}

/// Whether `pin` matches a stored hash (compared in constant time). Hashes of the older
/// `sha256$salt$hash` form still verify, so stored mailboxes keep working until their PIN is
/// next set.
pub fn verify_pin(pin: &str, stored: &str) -> bool {
    use sha2::{Digest, Sha256};
    let parts: Vec<&str> = stored.split('$').collect();
    let (computed, expected) = match parts.as_slice() {
        ["pbkdf2-sha256", rounds, salt, hash] => {
            let (Ok(rounds), Ok(salt)) = (rounds.parse::<u32>(), hex::decode(salt)) else {
                return false;
            };
            if !(1..=1_000_000).contains(&rounds) {
                return false;
            }
            let mut out = [0u8; 32];
            pbkdf2::pbkdf2_hmac::<Sha256>(pin.as_bytes(), &salt, rounds, &mut out);
            (out.to_vec(), *hash)
        }
        ["sha256", salt, hash] => {
            let Ok(salt) = hex::decode(salt) else {
                return false;
            };
            let mut h = Sha256::new();
            h.update(&salt);
            h.update(pin.as_bytes());
            (h.finalize().to_vec(), *hash)
        }
        _ => return false,
    };
    let Ok(expected) = hex::decode(expected) else {
        return false;
    };
    computed.len() == expected.len()
        && computed
            .iter()
            .zip(&expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// A DID and where calls to it go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Number {
    /// E.164 with `+`, e.g. `+15550100`.
    pub number: String,
    /// Destination.
    pub target: Target,
}

/// A phone user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Extension dialed to reach the user, e.g. `100`.
    #[schema(pattern = "^[0-9*#]{1,32}$")]
    pub extension: String,
    /// Display name for caller ID.
    #[serde(default)]
    pub display_name: String,
    /// SIP username phones authenticate with.
    #[schema(pattern = "^[^\\s\":]+$")]
    pub username: String,
    /// HA1 for MD5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha1_md5: Option<String>,
    /// HA1 for SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha1_sha256: Option<String>,
    /// Clear-text password, accepted on import only, hashed at once and never stored.
    #[serde(default, skip_serializing)]
    pub password: Option<String>,
    /// Mailbox id for unanswered calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<String>,
    /// Seconds to ring before no-answer handling.
    #[serde(default = "default_ring_timeout")]
    #[schema(minimum = 1, maximum = 600)]
    pub ring_timeout_secs: u32,
    /// Call forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarding: Option<Forwarding>,
    /// Recording policy for this user's calls; the tenant's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<RecordingPolicy>,
    /// Caller ID presented on this user's calls out through a trunk (instead of the trunk's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^\\+?[0-9]{1,20}$")]
    pub caller_id: Option<String>,
}

fn default_ring_timeout() -> u32 {
    25
}

/// Call forwarding rules.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Forwarding {
    /// Forward every call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub always: Option<Target>,
    /// Forward when busy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy: Option<Target>,
    /// Forward when not answered within the ring timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_answer: Option<Target>,
}

/// When calls are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecordingPolicy {
    /// Every call.
    Always,
    /// Never.
    #[default]
    Never,
    /// When started through the admin API.
    OnDemand,
}

/// Where a call goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Target {
    /// Ring a user's registered phones.
    User {
        /// The user's extension.
        extension: String,
    },
    /// Run an IVR menu.
    Ivr {
        /// Menu id.
        menu: String,
    },
    /// Leave a message in a mailbox.
    Voicemail {
        /// Mailbox id.
        mailbox: String,
        /// Play the "busy" system greeting instead of "not available" (when the mailbox has no
        /// greeting of its own).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        busy: bool,
    },
    /// Voicemail access: the caller's own mailbox (`own`) or any mailbox by number.
    VoicemailMain {
        /// True for `*98`-style access to any mailbox.
        #[serde(default)]
        any_mailbox: bool,
    },
    /// Echo test: the caller hears itself.
    Echo,
    /// Play a prompt in a loop until hang-up.
    PromptLoop {
        /// Prompt name.
        prompt: String,
    },
    /// Ring without ever answering (test extension for ringback and CANCEL).
    RingTest,
    /// Dial an external number through the outbound routes.
    External {
        /// Number to dial.
        number: String,
    },
    /// Repeat the current IVR menu (only inside IVRs).
    Repeat,
    /// Hang up.
    Hangup,
}

/// A dialable feature extension.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Extension {
    /// What is dialed, e.g. `500` or `*97`.
    pub extension: String,
    /// Label.
    #[serde(default)]
    pub name: String,
    /// What it does.
    pub target: Target,
}

/// One IVR menu.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IvrMenu {
    /// Label.
    #[serde(default)]
    pub name: String,
    /// Prompts played on entry, in order.
    #[serde(default)]
    pub prompts: Vec<String>,
    /// Digit routes.
    #[serde(default)]
    pub routes: Vec<DigitRoute>,
    /// Seconds to wait for a digit after the prompts.
    #[serde(default = "default_ivr_timeout")]
    #[schema(minimum = 1, maximum = 120)]
    pub timeout_secs: u32,
    /// How many times the menu is replayed after a timeout or invalid digit.
    #[serde(default = "default_retries")]
    #[schema(minimum = 0, maximum = 10)]
    pub max_retries: u32,
    /// Prompt played on an invalid digit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_prompt: Option<String>,
    /// Where the call goes once retries are used up.
    #[serde(default = "default_exhausted")]
    pub on_exhausted: Target,
    /// Time-of-day branches, checked in order on entry; the first that matches wins.
    #[serde(default)]
    pub schedule: Vec<TimeBranch>,
}

fn default_ivr_timeout() -> u32 {
    5
}
fn default_retries() -> u32 {
    2
}
fn default_exhausted() -> Target {
    Target::Hangup
}

/// A digit (or digit string) and its destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DigitRoute {
    /// Digits, e.g. `1` or `42`.
    pub digits: String,
    /// Destination.
    pub target: Target,
}

/// A time-of-day / day-of-week branch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeBranch {
    /// Days, `mon` … `sun`; all days when empty.
    #[serde(default)]
    pub days: Vec<String>,
    /// `HH:MM` start, inclusive.
    pub start: String,
    /// `HH:MM` end, exclusive.
    pub end: String,
    /// Destination while the branch matches.
    pub target: Target,
}

/// A voicemail box.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Mailbox {
    /// Mailbox number, e.g. `100`.
    pub id: String,
    /// Owner's extension, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Salted PIN hash (see [`hash_pin`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_hash: Option<String>,
    /// Clear-text PIN, accepted on import only.
    #[serde(default, skip_serializing)]
    pub pin: Option<String>,
    /// Custom greeting prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greeting: Option<String>,
    /// Longest message in seconds.
    #[serde(default = "default_max_message")]
    #[schema(minimum = 1, maximum = 3600)]
    pub max_message_secs: u32,
}

fn default_max_message() -> u32 {
    120
}

/// A SIP trunk.
#[derive(Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Trunk {
    /// Identifier.
    pub id: String,
    /// Provider's SIP address for outbound calls: an IP or a DNS name, with an optional
    /// port (`sip.carrier.example`, `192.0.2.10:5070`); absent for inbound-only. A name
    /// without a port is looked up as RFC 3263 says (NAPTR, SRV, then A/AAAA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Transport towards the provider; absent: UDP for an IP, DNS decides for a name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<TrunkTransport>,
    /// Username for digest auth towards the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password towards the provider (needed in clear for digest; never logged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Register to the provider.
    #[serde(default)]
    pub register: bool,
    /// Source addresses (IP or CIDR) allowed to send calls in through this trunk.
    #[serde(default)]
    pub allowed_sources: Vec<String>,
    /// Destination prefixes this trunk may dial out to; empty means none.
    #[serde(default)]
    pub allowed_prefixes: Vec<String>,
    /// Caller ID presented on outbound calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_id: Option<String>,
    /// SRTP on calls through this trunk, both ways; absent: the tenant's `settings.srtp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub srtp: Option<SrtpPolicy>,
}

impl std::fmt::Debug for Trunk {
    // Hand-written so the password can never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trunk")
            .field("id", &self.id)
            .field("address", &self.address)
            .field("transport", &self.transport)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("register", &self.register)
            .field("allowed_sources", &self.allowed_sources)
            .field("allowed_prefixes", &self.allowed_prefixes)
            .field("caller_id", &self.caller_id)
            .field("srtp", &self.srtp)
            .finish()
    }
}

/// How requests reach a trunk's provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TrunkTransport {
    /// SIP over UDP.
    Udp,
    /// SIP over TCP (this node opens the connection).
    Tcp,
    /// SIP over TLS: the provider's certificate is verified against the system's roots
    /// (and `sip.tls_trunk_ca`); this node presents `sip.tls_client_cert` when set.
    Tls,
}

/// An outbound route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutboundRoute {
    /// Label.
    #[serde(default)]
    pub name: String,
    /// Dialed prefix this route matches, e.g. `+1` or `00`.
    pub prefix: String,
    /// Trunk id.
    pub trunk: String,
    /// Digits stripped from the front before dialing.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 32)]
    pub strip: u32,
    /// Digits put in front after stripping.
    #[serde(default)]
    pub prepend: String,
}

/// Tenant limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Concurrent calls the tenant may have.
    #[serde(default = "default_max_calls")]
    #[schema(minimum = 1, maximum = 1000000)]
    pub max_concurrent_calls: u32,
    /// Longest call in seconds.
    #[serde(default = "default_max_call")]
    #[schema(minimum = 1, maximum = 604800)]
    pub max_call_secs: u32,
}

fn default_max_calls() -> u32 {
    100
}
fn default_max_call() -> u32 {
    4 * 3600
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_concurrent_calls: default_max_calls(),
            max_call_secs: default_max_call(),
        }
    }
}

/// Tenant-wide settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantSettings {
    /// Default recording policy.
    #[serde(default)]
    pub recording: RecordingPolicy,
    /// Retention in days (0 = keep forever).
    #[serde(default)]
    pub retention: Retention,
    /// SRTP (SDES keys, RFC 4568) on calls from this tenant's phones and trunks.
    #[serde(default)]
    pub srtp: SrtpPolicy,
}

/// Whether calls must, may or must not carry SRTP. SRTP is only ever answered over TLS
/// (its keys travel in the SDP); whatever the policy, an `RTP/SAVP` offer over UDP or TCP
/// is refused with 488.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SrtpPolicy {
    /// SRTP offers are refused (488); plain RTP only.
    Off,
    /// An SRTP offer over TLS is answered with SRTP; plain RTP offers too.
    #[default]
    Optional,
    /// Only SRTP over TLS: plain RTP offers, and calls without an offer, get 488.
    Required,
}

/// Retention in days; 0 keeps forever.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Call logs.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 36500)]
    pub call_logs_days: u32,
    /// Recordings.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 36500)]
    pub recordings_days: u32,
    /// Voicemail.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 36500)]
    pub voicemail_days: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_hash_round_trip() {
        let h = hash_pin("1234");
        assert!(verify_pin("1234", &h));
        assert!(!verify_pin("1235", &h));
        assert!(!verify_pin("1234", "plain"));
    }

    #[test]
    fn trunk_debug_hides_password() {
        let t = Trunk {
            id: "t".into(),
            address: None,
            transport: None,
            username: Some("u".into()),
            password: Some("hunter2".into()),
            register: false,
            allowed_sources: vec![],
            allowed_prefixes: vec![],
            caller_id: None,
            srtp: None,
        };
        assert!(!format!("{t:?}").contains("hunter2"));
    }
}
