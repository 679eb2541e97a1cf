//! Validation of a whole [`TenantConfig`] before it may enter the snapshot.
//!
//! Every problem is reported with the path of the offending value, in the document's own terms
//! (`ivrs.main.routes.3: unknown user 107`), so an admin can fix a file or an API body without
//! guessing. All problems are collected, not just the first.

use super::model::{IvrMenu, Target, TenantConfig};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

/// One problem in a tenant document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// Dotted path of the value at fault, e.g. `users.2.extension`.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

impl std::fmt::Display for ValidationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// All problems found in a document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct ValidationErrors(pub Vec<ValidationError>);

struct Ctx<'a> {
    cfg: &'a TenantConfig,
    errors: Vec<ValidationError>,
    user_exts: HashSet<&'a str>,
    mailboxes: HashSet<&'a str>,
}

impl Ctx<'_> {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ValidationError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn target(&mut self, path: &str, t: &Target, in_ivr: bool) {
        let problem = match t {
            Target::User { extension } if !self.user_exts.contains(extension.as_str()) => {
                Some(format!("unknown user {extension}"))
            }
            Target::Ivr { menu } if !self.cfg.ivrs.contains_key(menu) => {
                Some(format!("unknown IVR menu {menu}"))
            }
            Target::Voicemail { mailbox, .. } if !self.mailboxes.contains(mailbox.as_str()) => {
                Some(format!("unknown mailbox {mailbox}"))
            }
            Target::PromptLoop { prompt } if !valid_prompt_name(prompt) => {
                Some(format!("invalid prompt name {prompt:?}"))
            }
            Target::External { number }
                if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit() || c == '+') =>
            {
                Some(format!("invalid external number {number:?}"))
            }
            Target::Repeat if !in_ivr => {
                Some("repeat is only valid inside an IVR menu".to_string())
            }
            _ => None,
        };
        if let Some(message) = problem {
            self.err(path, message);
        }
    }
}

pub use crate::records::names::valid_prompt_name;

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 63
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// An optional `+` and 1-20 digits: what may go into a From user or Request-URI we send.
fn valid_phone_number(s: &str) -> bool {
    let digits = s.strip_prefix('+').unwrap_or(s);
    !digits.is_empty() && digits.len() <= 20 && digits.chars().all(|c| c.is_ascii_digit())
}

/// A SIP user name we send as is (digest username, REGISTER address of record): RFC 3261
/// `user` characters without escapes, at most 64.
fn valid_sip_user(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(crate::sip::headers::is_user_char)
}

/// Whether a trunk address is `host[:port]` with a host that is an IP a provider can have
/// or a DNS name. Unspecified, multicast, broadcast and link-local (cloud metadata)
/// addresses reach the node's host internals or nothing, not a provider (a name's answers
/// are held to the same rule when they arrive). Loopback stays allowed, as for a provider
/// on the same host.
fn trunk_address_problem(address: &str) -> Option<&'static str> {
    let Some((host, port)) = crate::sip::headers::split_host_port(address) else {
        return Some("must be host[:port]");
    };
    if port == Some(0) {
        return Some("port must be 1-65535");
    }
    let Ok(ip) = host.parse::<std::net::IpAddr>() else {
        return (!valid_dns_name(&host))
            .then_some("must be an IP address or a DNS name (letters, digits, '-', '.')");
    };
    if ip.is_unspecified() || ip.is_multicast() {
        return Some("must be a provider's unicast address");
    }
    let internal = match ip {
        std::net::IpAddr::V4(v4) => v4.is_link_local() || v4.is_broadcast(),
        std::net::IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    };
    if internal {
        return Some("must not be a link-local or broadcast address");
    }
    None
}

/// A host name as DNS and SIP URIs take it: labels of letters, digits and inner hyphens,
/// 1-63 characters each, at most 253 in all, a trailing dot allowed.
fn valid_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        // A last label of digits only would be a mistyped IPv4 address.
        && !name.rsplit('.').next().is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
}

fn valid_dialable(ext: &str) -> bool {
    !ext.is_empty()
        && ext.len() <= 32
        && ext
            .chars()
            .all(|c| c.is_ascii_digit() || c == '*' || c == '#')
}

fn valid_hhmm(s: &str) -> bool {
    let Some((h, m)) = s.split_once(':') else {
        return false;
    };
    h.len() == 2
        && m.len() == 2
        && h.parse::<u8>().is_ok_and(|h| h < 24)
        && m.parse::<u8>().is_ok_and(|m| m < 60)
}

/// Parses an IP address or CIDR block (`192.0.2.0/24`).
pub fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, len) = match s.split_once('/') {
        Some((ip, len)) => (ip.parse::<IpAddr>().ok()?, len.parse::<u8>().ok()?),
        None => {
            let ip = s.parse::<IpAddr>().ok()?;
            (ip, if ip.is_ipv4() { 32 } else { 128 })
        }
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((ip, len))
}

/// Checks a tenant document. Clear-text secrets must already be hashed.
/// A host name: letters, digits, `-` and `.` only, lower case, at most 253 characters.
fn valid_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// An IP literal or `localhost`: what reaches the node itself rather than a tenant's name.
fn is_node_address(d: &str) -> bool {
    d == "localhost"
        || d.ends_with(".localhost")
        || d.parse::<std::net::IpAddr>().is_ok()
        || d.trim_matches(['[', ']'])
            .parse::<std::net::Ipv6Addr>()
            .is_ok()
}

pub fn validate(cfg: &TenantConfig) -> Result<(), ValidationErrors> {
    let mut cx = Ctx {
        cfg,
        errors: Vec::new(),
        user_exts: cfg.users.iter().map(|u| u.extension.as_str()).collect(),
        mailboxes: cfg.mailboxes.iter().map(|m| m.id.as_str()).collect(),
    };
    if !valid_id(&cfg.id) {
        cx.err("id", "must be 1-63 characters of a-z, 0-9 and -");
    }
    if cfg.name.trim().is_empty() {
        cx.err("name", "must not be empty");
    }
    if cfg.timezone.is_empty() || cfg.timezone.contains(char::is_whitespace) {
        cx.err(
            "timezone",
            "must be an IANA time zone name such as Europe/Paris",
        );
    }
    let mut seen_domains = HashSet::new();
    for (i, d) in cfg.domains.iter().enumerate() {
        if !valid_domain(d) {
            cx.err(
                format!("domains.{i}"),
                format!("invalid domain {d:?} (lower case host name)"),
            );
        } else if is_node_address(d) {
            // Requests to the node's own addresses go to `tenant.default`; a tenant claiming
            // one would capture every phone that registers by IP.
            cx.err(
                format!("domains.{i}"),
                format!(
                    "{d} is an address, not a domain (use tenant.default for requests by address)"
                ),
            );
        }
        if !seen_domains.insert(d) {
            cx.err(format!("domains.{i}"), format!("duplicate domain {d}"));
        }
    }

    if let Some(r) = &cfg.realm {
        // It is written into WWW-Authenticate as a quoted string.
        if r.is_empty()
            || r.len() > 128
            || !r
                .bytes()
                .all(|b| (0x21..0x7f).contains(&b) && b != b'"' && b != b'\\')
        {
            cx.err(
                "realm",
                "must be 1-128 printable characters without spaces, quotes or backslashes",
            );
        } else if is_node_address(r) {
            cx.err(
                "realm",
                format!("{r} is an address of the node, not a realm"),
            );
        }
    }

    // Everything dialable shares one namespace.
    let mut dialable: HashMap<&str, String> = HashMap::new();
    let mut usernames = HashSet::new();
    for (i, u) in cfg.users.iter().enumerate() {
        let p = format!("users.{i}");
        if !valid_dialable(&u.extension) {
            cx.err(
                format!("{p}.extension"),
                format!("invalid extension {:?}", u.extension),
            );
        }
        if let Some(prev) = dialable.insert(&u.extension, p.clone()) {
            cx.err(
                format!("{p}.extension"),
                format!("duplicate extension {} (also {prev})", u.extension),
            );
        }
        if u.username.is_empty()
            || u.username
                .contains(|c: char| c.is_whitespace() || c == '"' || c == ':')
        {
            cx.err(
                format!("{p}.username"),
                "must be non-empty without spaces, quotes or colons",
            );
        }
        if !usernames.insert(&u.username) {
            cx.err(
                format!("{p}.username"),
                format!("duplicate username {}", u.username),
            );
        }
        let hex_len_ok = |h: &Option<String>, n: usize| {
            h.as_ref()
                .is_some_and(|h| h.len() == n && h.chars().all(|c| c.is_ascii_hexdigit()))
        };
        if !hex_len_ok(&u.ha1_md5, 32) {
            cx.err(
                format!("{p}.ha1_md5"),
                "missing or not 32 hex digits (give password to set it)",
            );
        }
        if !hex_len_ok(&u.ha1_sha256, 64) {
            cx.err(
                format!("{p}.ha1_sha256"),
                "missing or not 64 hex digits (give password to set it)",
            );
        }
        if let Some(mb) = &u.mailbox {
            if !cx.mailboxes.contains(mb.as_str()) {
                cx.err(format!("{p}.mailbox"), format!("unknown mailbox {mb}"));
            }
        }
        if let Some(cid) = &u.caller_id {
            if !valid_phone_number(cid) {
                cx.err(
                    format!("{p}.caller_id"),
                    "must be a phone number: an optional + and 1-20 digits",
                );
            }
        }
        if u.ring_timeout_secs == 0 || u.ring_timeout_secs > 600 {
            cx.err(format!("{p}.ring_timeout_secs"), "must be 1-600");
        }
        if let Some(f) = &u.forwarding {
            for (name, t) in [
                ("always", &f.always),
                ("busy", &f.busy),
                ("no_answer", &f.no_answer),
            ] {
                if let Some(t) = t {
                    cx.target(&format!("{p}.forwarding.{name}"), t, false);
                }
            }
        }
    }
    for (i, e) in cfg.extensions.iter().enumerate() {
        let p = format!("extensions.{i}");
        if !valid_dialable(&e.extension) {
            cx.err(
                format!("{p}.extension"),
                format!("invalid extension {:?}", e.extension),
            );
        }
        if let Some(prev) = dialable.insert(&e.extension, p.clone()) {
            cx.err(
                format!("{p}.extension"),
                format!("duplicate extension {} (also {prev})", e.extension),
            );
        }
        cx.target(&format!("{p}.target"), &e.target, false);
    }
    let mut numbers = HashSet::new();
    for (i, n) in cfg.numbers.iter().enumerate() {
        let p = format!("numbers.{i}");
        let ok = n.number.strip_prefix('+').is_some_and(|d| {
            !d.is_empty() && d.len() <= 15 && d.chars().all(|c| c.is_ascii_digit())
        });
        if !ok {
            cx.err(
                format!("{p}.number"),
                format!("{:?} is not E.164 (+ and up to 15 digits)", n.number),
            );
        }
        if !numbers.insert(&n.number) {
            cx.err(
                format!("{p}.number"),
                format!("duplicate number {}", n.number),
            );
        }
        cx.target(&format!("{p}.target"), &n.target, false);
    }
    let mut mb_ids = HashSet::new();
    for (i, m) in cfg.mailboxes.iter().enumerate() {
        let p = format!("mailboxes.{i}");
        if !valid_dialable(&m.id) {
            cx.err(
                format!("{p}.id"),
                format!("invalid mailbox number {:?}", m.id),
            );
        }
        if !mb_ids.insert(&m.id) {
            cx.err(format!("{p}.id"), format!("duplicate mailbox {}", m.id));
        }
        if let Some(o) = &m.owner {
            if !cx.user_exts.contains(o.as_str()) {
                cx.err(format!("{p}.owner"), format!("unknown user {o}"));
            }
        }
        if !(1..=3600).contains(&m.max_message_secs) {
            cx.err(format!("{p}.max_message_secs"), "must be 1-3600");
        }
        if let Some(g) = &m.greeting {
            if !valid_prompt_name(g) {
                cx.err(
                    format!("{p}.greeting"),
                    format!("invalid prompt name {g:?}"),
                );
            }
        }
    }
    for (id, menu) in &cfg.ivrs {
        validate_menu(&mut cx, id, menu);
    }
    check_ivr_exits(&mut cx, &cfg.ivrs);

    let mut trunk_ids = HashSet::new();
    for (i, t) in cfg.trunks.iter().enumerate() {
        let p = format!("trunks.{i}");
        if !valid_id(&t.id) {
            cx.err(
                format!("{p}.id"),
                "must be 1-63 characters of a-z, 0-9 and -",
            );
        }
        if !trunk_ids.insert(t.id.as_str()) {
            cx.err(format!("{p}.id"), format!("duplicate trunk {}", t.id));
        }
        for (j, s) in t.allowed_sources.iter().enumerate() {
            if parse_cidr(s).is_none() {
                cx.err(
                    format!("{p}.allowed_sources.{j}"),
                    format!("{s:?} is not an IP address or CIDR block"),
                );
            }
        }
        for (j, s) in t.allowed_prefixes.iter().enumerate() {
            if s.is_empty() || !s.chars().all(|c| c.is_ascii_digit() || c == '+') {
                cx.err(
                    format!("{p}.allowed_prefixes.{j}"),
                    format!("{s:?} is not a digit prefix"),
                );
            }
        }
        if let Some(a) = &t.address {
            if let Some(why) = trunk_address_problem(a) {
                cx.err(format!("{p}.address"), why);
            }
        }
        if t.username.as_deref().is_some_and(|u| !valid_sip_user(u)) {
            cx.err(
                format!("{p}.username"),
                "must be 1-64 characters of letters, digits and -_.!~*'()&=+$,",
            );
        }
        if t.password
            .as_deref()
            .is_some_and(|pw| pw.chars().any(char::is_control) || pw.len() > 128)
        {
            cx.err(
                format!("{p}.password"),
                "must be at most 128 characters, no control characters",
            );
        }
        if t.caller_id
            .as_deref()
            .is_some_and(|c| !valid_phone_number(c))
        {
            cx.err(
                format!("{p}.caller_id"),
                "must be a phone number: an optional + and 1-20 digits",
            );
        }
        if t.register && (t.address.is_none() || t.username.is_none()) {
            cx.err(
                format!("{p}.register"),
                "registration needs address and username",
            );
        }
    }
    for (i, r) in cfg.outbound_routes.iter().enumerate() {
        let p = format!("outbound_routes.{i}");
        match cfg.trunks.iter().find(|t| t.id == r.trunk) {
            None => cx.err(format!("{p}.trunk"), format!("unknown trunk {}", r.trunk)),
            Some(t) if t.address.is_none() => cx.err(
                format!("{p}.trunk"),
                format!("trunk {} has no address to dial", r.trunk),
            ),
            _ => {}
        }
        if r.strip > 32 {
            cx.err(format!("{p}.strip"), "must be 0-32");
        }
        if r.prepend.len() > 20 || !r.prepend.chars().all(|c| c.is_ascii_digit() || c == '+') {
            cx.err(format!("{p}.prepend"), "must be at most 20 digits (and +)");
        }
        if r.prefix.is_empty() || !r.prefix.chars().all(|c| c.is_ascii_digit() || c == '+') {
            cx.err(
                format!("{p}.prefix"),
                format!("{:?} is not a digit prefix", r.prefix),
            );
        }
    }
    if !(1..=1_000_000).contains(&cfg.limits.max_concurrent_calls) {
        cx.err("limits.max_concurrent_calls", "must be 1-1000000");
    }
    if !(1..=604_800).contains(&cfg.limits.max_call_secs) {
        cx.err("limits.max_call_secs", "must be 1-604800 (a week)");
    }
    let r = &cfg.settings.retention;
    for (name, v) in [
        ("call_logs_days", r.call_logs_days),
        ("recordings_days", r.recordings_days),
        ("voicemail_days", r.voicemail_days),
    ] {
        if v > 36_500 {
            cx.err(
                format!("settings.retention.{name}"),
                "must be 0-36500 (0 keeps forever)",
            );
        }
    }
    if cx.errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(cx.errors))
    }
}

fn validate_menu(cx: &mut Ctx<'_>, id: &str, menu: &IvrMenu) {
    let p = format!("ivrs.{id}");
    if !valid_id(id) {
        cx.err(
            p.clone(),
            "menu id must be 1-63 characters of a-z, 0-9 and -",
        );
    }
    for (i, pr) in menu.prompts.iter().enumerate() {
        if !valid_prompt_name(pr) {
            cx.err(
                format!("{p}.prompts.{i}"),
                format!("invalid prompt name {pr:?}"),
            );
        }
    }
    let mut digits = HashSet::new();
    for (i, r) in menu.routes.iter().enumerate() {
        let rp = format!("{p}.routes.{i}");
        if r.digits.is_empty()
            || r.digits.len() > 16
            || !r
                .digits
                .chars()
                .all(|c| c.is_ascii_digit() || c == '*' || c == '#')
        {
            cx.err(
                format!("{rp}.digits"),
                format!("invalid digits {:?}", r.digits),
            );
        }
        if !digits.insert(r.digits.as_str()) {
            cx.err(
                format!("{rp}.digits"),
                format!("duplicate digits {}", r.digits),
            );
        }
        cx.target(&rp, &r.target, true);
    }
    if menu.timeout_secs == 0 || menu.timeout_secs > 120 {
        cx.err(format!("{p}.timeout_secs"), "must be 1-120");
    }
    if menu.max_retries > 10 {
        cx.err(format!("{p}.max_retries"), "must be 0-10");
    }
    if matches!(menu.on_exhausted, Target::Repeat) {
        cx.err(
            format!("{p}.on_exhausted"),
            "repeat would never end the menu",
        );
    } else {
        cx.target(&format!("{p}.on_exhausted"), &menu.on_exhausted, true);
    }
    for (i, b) in menu.schedule.iter().enumerate() {
        let bp = format!("{p}.schedule.{i}");
        if !valid_hhmm(&b.start) {
            cx.err(format!("{bp}.start"), format!("{:?} is not HH:MM", b.start));
        }
        if !valid_hhmm(&b.end) {
            cx.err(format!("{bp}.end"), format!("{:?} is not HH:MM", b.end));
        }
        for (j, d) in b.days.iter().enumerate() {
            if !["mon", "tue", "wed", "thu", "fri", "sat", "sun"].contains(&d.as_str()) {
                cx.err(
                    format!("{bp}.days.{j}"),
                    format!("{d:?} is not one of mon..sun"),
                );
            }
        }
        cx.target(&bp, &b.target, true);
    }
}

/// Every menu must be able to reach an exit (a destination other than another menu), or a
/// caller is trapped in a loop forever.
fn check_ivr_exits(cx: &mut Ctx<'_>, ivrs: &BTreeMap<String, IvrMenu>) {
    let targets = |m: &IvrMenu| -> Vec<Target> {
        let mut v: Vec<Target> = m.routes.iter().map(|r| r.target.clone()).collect();
        v.extend(m.schedule.iter().map(|b| b.target.clone()));
        v.push(m.on_exhausted.clone());
        v
    };
    for id in ivrs.keys() {
        let mut stack = vec![id.as_str()];
        let mut seen = HashSet::new();
        let mut exits = false;
        while let Some(cur) = stack.pop() {
            if !seen.insert(cur) {
                continue;
            }
            let Some(menu) = ivrs.get(cur) else { continue };
            for t in targets(menu) {
                match t {
                    Target::Ivr { menu } => {
                        if let Some((k, _)) = ivrs.get_key_value(&menu) {
                            stack.push(k.as_str());
                        }
                    }
                    Target::Repeat => {}
                    _ => exits = true,
                }
            }
        }
        if !exits {
            cx.err(
                format!("ivrs.{id}"),
                "menu loop without exit: no route leads out of the menus",
            );
        }
    }
}
