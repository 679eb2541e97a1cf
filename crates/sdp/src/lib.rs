//! SDP (RFC 8866) reading and the RFC 3264 offer/answer for audio calls.
//!
//! Only what a telephony server negotiates is modelled: connection addresses, audio media lines,
//! `rtpmap`/`fmtp`, direction attributes, `ptime`, `rtcp-mux` and SDES keys for `RTP/SAVP`
//! ([`sdes`]). Unknown lines are kept out of
//! the answer; other media (video, …) are declined with port 0 as RFC 3264 §6 requires.
//!
//! Codec choice follows the offerer's order among the codecs we support (PCMU, PCMA), so a
//! phone that prefers A-law gets A-law; `telephone-event/8000` is accepted with whatever payload
//! type the offer used.

pub mod sdes;

pub use sdes::{CryptoAttr, SrtpKeys, SrtpSuite};
use std::net::IpAddr;

/// Why an offer could not be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// The body is not SDP we can read.
    #[error("malformed SDP: {0}")]
    Malformed(&'static str),
    /// No audio stream with a codec we support (answered 488).
    #[error("no acceptable audio codec offered")]
    NoCommonCodec,
    /// SRTP offered, but with no `a=crypto` line we can run (answered 488).
    #[error("no acceptable SRTP crypto suite offered")]
    NoCommonCrypto,
}

/// Media direction attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `a=sendrecv` (the default).
    SendRecv,
    /// `a=sendonly`
    SendOnly,
    /// `a=recvonly`
    RecvOnly,
    /// `a=inactive`
    Inactive,
}

impl Direction {
    fn parse(s: &str) -> Option<Direction> {
        match s {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }

    /// The attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The direction an answer takes for an offer with this one (RFC 3264 §6.1).
    pub fn answer(self) -> Direction {
        match self {
            Direction::SendRecv => Direction::SendRecv,
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            Direction::Inactive => Direction::Inactive,
        }
    }
}

/// An `a=rtpmap` entry (or the static meaning of payload types 0 and 8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    /// Payload type.
    pub pt: u8,
    /// Encoding name as written.
    pub name: String,
    /// Clock rate.
    pub rate: u32,
}

/// One `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    /// `audio`, `video`, …
    pub kind: String,
    /// Port (0 = disabled).
    pub port: u16,
    /// Transport profile, e.g. `RTP/AVP`.
    pub proto: String,
    /// Format list as written.
    pub formats: Vec<String>,
    /// Media-level `c=` address.
    pub connection: Option<IpAddr>,
    /// rtpmaps.
    pub rtpmaps: Vec<RtpMap>,
    /// Direction attribute, if given.
    pub direction: Option<Direction>,
    /// `a=rtcp-mux`.
    pub rtcp_mux: bool,
    /// `a=ptime`.
    pub ptime: Option<u32>,
    /// SDES keys offered (`a=crypto`, RFC 4568), at most 16.
    pub crypto: Vec<CryptoAttr>,
}

impl MediaDescription {
    /// rtpmap of a payload type, falling back to the static RFC 3551 table.
    pub fn rtpmap(&self, pt: u8) -> Option<RtpMap> {
        self.rtpmaps
            .iter()
            .find(|m| m.pt == pt)
            .cloned()
            .or(match pt {
                0 => Some(RtpMap {
                    pt,
                    name: "PCMU".into(),
                    rate: 8000,
                }),
                8 => Some(RtpMap {
                    pt,
                    name: "PCMA".into(),
                    rate: 8000,
                }),
                _ => None,
            })
    }
}

/// A parsed session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    /// Session-level `c=` address.
    pub connection: Option<IpAddr>,
    /// Session-level direction.
    pub direction: Option<Direction>,
    /// Media sections in order.
    pub media: Vec<MediaDescription>,
}

impl SessionDescription {
    /// Parses SDP text (CRLF or LF line ends).
    pub fn parse(body: &[u8]) -> Result<SessionDescription, SdpError> {
        let text = std::str::from_utf8(body).map_err(|_| SdpError::Malformed("not UTF-8"))?;
        let mut sd = SessionDescription {
            connection: None,
            direction: None,
            media: Vec::new(),
        };
        let mut saw_version = false;
        for line in text.lines() {
            let line = line.trim_end_matches('\r');
            if line.is_empty() {
                continue;
            }
            let (kind, value) = line
                .split_once('=')
                .ok_or(SdpError::Malformed("line without ="))?;
            match kind {
                "v" => {
                    if value.trim() != "0" {
                        return Err(SdpError::Malformed("version is not 0"));
                    }
                    saw_version = true;
                }
                "c" => {
                    let addr = parse_connection(value)?;
                    match sd.media.last_mut() {
                        Some(m) => m.connection = Some(addr),
                        None => sd.connection = Some(addr),
                    }
                }
                "m" => {
                    let mut parts = value.split_whitespace();
                    let kind = parts
                        .next()
                        .ok_or(SdpError::Malformed("m= without media"))?;
                    let port = parts
                        .next()
                        .and_then(|p| p.split('/').next())
                        .and_then(|p| p.parse::<u16>().ok())
                        .ok_or(SdpError::Malformed("m= port"))?;
                    let proto = parts.next().ok_or(SdpError::Malformed("m= proto"))?;
                    sd.media.push(MediaDescription {
                        kind: kind.to_string(),
                        port,
                        proto: proto.to_string(),
                        formats: parts.map(str::to_string).collect(),
                        connection: None,
                        rtpmaps: Vec::new(),
                        direction: None,
                        rtcp_mux: false,
                        ptime: None,
                        crypto: Vec::new(),
                    });
                }
                "a" => {
                    let (name, arg) = match value.split_once(':') {
                        Some((n, a)) => (n, Some(a)),
                        None => (value, None),
                    };
                    if let Some(dir) = Direction::parse(name) {
                        match sd.media.last_mut() {
                            Some(m) => m.direction = Some(dir),
                            None => sd.direction = Some(dir),
                        }
                        continue;
                    }
                    let Some(m) = sd.media.last_mut() else {
                        continue;
                    };
                    match (name, arg) {
                        ("rtpmap", Some(arg)) => {
                            if let Some(map) = parse_rtpmap(arg) {
                                m.rtpmaps.push(map);
                            }
                        }
                        ("rtcp-mux", _) => m.rtcp_mux = true,
                        ("ptime", Some(arg)) => m.ptime = arg.trim().parse().ok(),
                        ("crypto", Some(arg)) if m.crypto.len() < sdes::MAX_CRYPTO_LINES => {
                            if let Some(c) = sdes::parse_crypto(arg) {
                                m.crypto.push(c);
                            }
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        if !saw_version {
            return Err(SdpError::Malformed("missing v=0"));
        }
        Ok(sd)
    }
}

fn parse_connection(value: &str) -> Result<IpAddr, SdpError> {
    let mut parts = value.split_whitespace();
    let (_net, _addrtype, addr) = (parts.next(), parts.next(), parts.next());
    let addr = addr.ok_or(SdpError::Malformed("c= address"))?;
    // Multicast TTL suffix: 224.2.1.1/127.
    let addr = addr.split('/').next().unwrap_or(addr);
    addr.parse()
        .map_err(|_| SdpError::Malformed("c= address is not an IP address"))
}

fn parse_rtpmap(arg: &str) -> Option<RtpMap> {
    let (pt, enc) = arg.trim().split_once(char::is_whitespace)?;
    let mut enc = enc.trim().split('/');
    Some(RtpMap {
        pt: pt.parse().ok()?,
        name: enc.next()?.to_string(),
        rate: enc.next()?.parse().ok()?,
    })
}

/// Audio codecs the engine speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioCodec {
    /// G.711 µ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
}

impl AudioCodec {
    /// Encoding name.
    pub fn name(self) -> &'static str {
        match self {
            AudioCodec::Pcmu => "PCMU",
            AudioCodec::Pcma => "PCMA",
        }
    }
}

/// The outcome of negotiating one audio stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedAudio {
    /// Index of the audio `m=` line in the offer.
    pub media_index: usize,
    /// Chosen codec.
    pub codec: AudioCodec,
    /// Payload type of the codec as offered.
    pub codec_pt: u8,
    /// Payload type of `telephone-event/8000`, when offered.
    pub dtmf_pt: Option<u8>,
    /// Where the peer wants its RTP.
    pub remote_addr: IpAddr,
    /// Peer's RTP port.
    pub remote_port: u16,
    /// The peer's direction in its offer.
    pub offered_direction: Direction,
    /// Our direction in the answer.
    pub direction: Direction,
    /// Peer multiplexes RTCP on the RTP port.
    pub rtcp_mux: bool,
    /// Packetisation time in ms.
    pub ptime: u32,
    /// A browser leg (DTLS-SRTP and ICE): the media side's WebRTC transport carries it, and
    /// `remote_addr`/`remote_port` are our own leg's address.
    pub browser: bool,
    /// SRTP with SDES keys (an `RTP/SAVP` stream); `None` for plain RTP.
    pub srtp: Option<SrtpKeys>,
}

impl NegotiatedAudio {
    /// True when the peer put the call on hold (it will not send, or asked us not to).
    pub fn is_hold(&self) -> bool {
        matches!(
            self.offered_direction,
            Direction::SendOnly | Direction::Inactive
        ) || self.remote_addr.is_unspecified()
    }
}

/// Picks the audio stream and codec to answer an offer with.
pub fn negotiate(offer: &SessionDescription) -> Result<NegotiatedAudio, SdpError> {
    let mut crypto_refused = false;
    for (i, m) in offer.media.iter().enumerate() {
        let secure = m.proto == "RTP/SAVP";
        if m.kind != "audio" || m.port == 0 || !(secure || m.proto.starts_with("RTP/AVP")) {
            continue;
        }
        let srtp = if secure {
            let Some(keys) = sdes::choose(&m.crypto) else {
                crypto_refused = true;
                continue;
            };
            Some(keys)
        } else {
            None
        };
        let mut codec = None;
        let mut dtmf_pt = None;
        for f in &m.formats {
            let Ok(pt) = f.parse::<u8>() else { continue };
            let Some(map) = m.rtpmap(pt) else { continue };
            match (map.name.to_ascii_uppercase().as_str(), map.rate) {
                ("PCMU", 8000) if codec.is_none() => codec = Some((AudioCodec::Pcmu, pt)),
                ("PCMA", 8000) if codec.is_none() => codec = Some((AudioCodec::Pcma, pt)),
                ("TELEPHONE-EVENT", 8000) if dtmf_pt.is_none() => dtmf_pt = Some(pt),
                _ => {}
            }
        }
        let Some((codec, codec_pt)) = codec else {
            continue;
        };
        let remote_addr = m
            .connection
            .or(offer.connection)
            .ok_or(SdpError::Malformed("no c= line for the audio stream"))?;
        let mut offered = m
            .direction
            .or(offer.direction)
            .unwrap_or(Direction::SendRecv);
        if remote_addr.is_unspecified() && offered == Direction::SendRecv {
            // RFC 2543-style hold: c=0.0.0.0.
            offered = Direction::SendOnly;
        }
        return Ok(NegotiatedAudio {
            media_index: i,
            codec,
            codec_pt,
            dtmf_pt,
            remote_addr,
            remote_port: m.port,
            offered_direction: offered,
            direction: offered.answer(),
            rtcp_mux: m.rtcp_mux,
            ptime: m
                .ptime
                .filter(|p| (10..=60).contains(p) && p % 10 == 0)
                .unwrap_or(20),
            browser: false,
            srtp,
        });
    }
    Err(if crypto_refused {
        SdpError::NoCommonCrypto
    } else {
        SdpError::NoCommonCodec
    })
}

/// True for an SDP that asks for WebRTC media (DTLS-SRTP audio with ICE), which only the
/// media side's WebRTC transport can answer: [`negotiate`] is not for it.
pub fn is_browser_offer(sdp: &SessionDescription, text: &[u8]) -> bool {
    let has_fingerprint = String::from_utf8_lossy(text).contains("a=fingerprint:");
    has_fingerprint
        && sdp
            .media
            .iter()
            .any(|m| m.kind == "audio" && m.port != 0 && m.proto.contains("SAVPF"))
}

/// What a browser leg's SDP (our answer to the browser, or the browser's answer to our offer)
/// says of its audio: codec and payload types from the audio m-line. The address is `local`,
/// the leg's own (a browser leg is reached through its WebRTC transport, never by the SDP's
/// `c=` line, which is often 0.0.0.0).
pub fn browser_audio(
    sdp: &str,
    local: std::net::SocketAddr,
    offered_direction: Direction,
) -> Result<NegotiatedAudio, SdpError> {
    let d = SessionDescription::parse(sdp.as_bytes())?;
    let (i, m) = d
        .media
        .iter()
        .enumerate()
        .find(|(_, m)| m.kind == "audio" && m.port != 0)
        .ok_or(SdpError::Malformed("no audio stream"))?;
    let mut codec = None;
    let mut dtmf_pt = None;
    for f in &m.formats {
        let Ok(pt) = f.parse::<u8>() else { continue };
        let Some(map) = m.rtpmap(pt) else {
            continue;
        };
        match (map.name.to_ascii_uppercase().as_str(), map.rate) {
            ("PCMU", 8000) if codec.is_none() => codec = Some((AudioCodec::Pcmu, pt)),
            ("PCMA", 8000) if codec.is_none() => codec = Some((AudioCodec::Pcma, pt)),
            ("TELEPHONE-EVENT", 8000) if dtmf_pt.is_none() => dtmf_pt = Some(pt),
            _ => {}
        }
    }
    let (codec, codec_pt) = codec.ok_or(SdpError::NoCommonCodec)?;
    let direction = m.direction.or(d.direction).unwrap_or(Direction::SendRecv);
    Ok(NegotiatedAudio {
        media_index: i,
        codec,
        codec_pt,
        dtmf_pt,
        remote_addr: local.ip(),
        remote_port: local.port(),
        offered_direction,
        direction,
        rtcp_mux: true,
        ptime: 20,
        browser: true,
        srtp: None,
    })
}

/// Our side of an answer.
#[derive(Debug, Clone)]
pub struct LocalMedia {
    /// Address announced in `c=` and `o=` (the public address).
    pub address: IpAddr,
    /// Our RTP port.
    pub port: u16,
    /// Session id for `o=` (stable for the call).
    pub session_id: u64,
    /// Session version for `o=` (incremented on every new description).
    pub session_version: u64,
}

/// Writes the answer SDP for `offer` given the negotiation result.
pub fn build_answer(
    offer: &SessionDescription,
    neg: &NegotiatedAudio,
    local: &LocalMedia,
) -> String {
    let ip_kind = if local.address.is_ipv4() {
        "IP4"
    } else {
        "IP6"
    };
    let mut s = String::with_capacity(300);
    s.push_str("v=0\r\n");
    s.push_str(&format!(
        "o=switchyard {} {} IN {ip_kind} {}\r\n",
        local.session_id, local.session_version, local.address
    ));
    s.push_str("s=switchyard\r\n");
    s.push_str(&format!("c=IN {ip_kind} {}\r\n", local.address));
    s.push_str("t=0 0\r\n");
    for (i, m) in offer.media.iter().enumerate() {
        if i != neg.media_index {
            let fmt = m.formats.first().map(String::as_str).unwrap_or("0");
            s.push_str(&format!("m={} 0 {} {fmt}\r\n", m.kind, m.proto));
            continue;
        }
        let mut fmts = neg.codec_pt.to_string();
        if let Some(dt) = neg.dtmf_pt {
            fmts.push_str(&format!(" {dt}"));
        }
        s.push_str(&format!("m=audio {} {} {fmts}\r\n", local.port, m.proto));
        s.push_str(&format!(
            "a=rtpmap:{} {}/8000\r\n",
            neg.codec_pt,
            neg.codec.name()
        ));
        if let Some(dt) = neg.dtmf_pt {
            s.push_str(&format!(
                "a=rtpmap:{dt} telephone-event/8000\r\na=fmtp:{dt} 0-16\r\n"
            ));
        }
        s.push_str(&format!("a=ptime:{}\r\n", neg.ptime));
        if neg.rtcp_mux {
            s.push_str("a=rtcp-mux\r\n");
        }
        if let Some(keys) = neg.srtp.as_ref().filter(|k| !k.local.is_empty()) {
            s.push_str(&keys.crypto_line());
        }
        s.push_str(&format!("a={}\r\n", neg.direction.as_str()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n\
m=video 5000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n";

    fn local() -> LocalMedia {
        LocalMedia {
            address: "192.0.2.1".parse().expect("ip"),
            port: 20000,
            session_id: 7,
            session_version: 1,
        }
    }

    #[test]
    fn follows_offerer_codec_order_and_declines_video() {
        let offer = SessionDescription::parse(OFFER.as_bytes()).expect("sdp");
        let neg = negotiate(&offer).expect("neg");
        assert_eq!(neg.codec, AudioCodec::Pcma);
        assert_eq!(neg.dtmf_pt, Some(101));
        assert_eq!(neg.remote_port, 4000);
        let ans = build_answer(&offer, &neg, &local());
        assert!(ans.contains("m=audio 20000 RTP/AVP 8 101\r\n"));
        assert!(ans.contains("m=video 0 RTP/AVP 96\r\n"));
        assert!(ans.contains("a=sendrecv"));
    }

    #[test]
    fn hold_directions() {
        let held = OFFER.replace("a=fmtp:101 0-15\r\n", "a=fmtp:101 0-15\r\na=sendonly\r\n");
        let neg =
            negotiate(&SessionDescription::parse(held.as_bytes()).expect("sdp")).expect("neg");
        assert_eq!(neg.direction, Direction::RecvOnly);
        assert!(neg.is_hold());
        let old = OFFER.replace("c=IN IP4 10.0.0.5", "c=IN IP4 0.0.0.0");
        let neg = negotiate(&SessionDescription::parse(old.as_bytes()).expect("sdp")).expect("neg");
        assert!(neg.is_hold());
        assert_eq!(neg.direction, Direction::RecvOnly);
    }

    #[test]
    fn srtp_offer_is_answered_on_savp_with_our_key() {
        let key = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";
        let savp = OFFER
            .replace("RTP/AVP 8 0 101", "RTP/SAVP 8 0 101")
            .replace(
                "a=fmtp:101 0-15\r\n",
                &format!("a=fmtp:101 0-15\r\na=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:{key}\r\n"),
            );
        let offer = SessionDescription::parse(savp.as_bytes()).expect("sdp");
        let mut neg = negotiate(&offer).expect("neg");
        let keys = neg.srtp.as_mut().expect("srtp");
        assert_eq!(keys.suite, SrtpSuite::AesCm128HmacSha1_32);
        keys.local = vec![1; 30];
        let ans = build_answer(&offer, &neg, &local());
        assert!(ans.contains("m=audio 20000 RTP/SAVP 8 101\r\n"), "{ans}");
        assert!(
            ans.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:AQEB"),
            "{ans}"
        );
        let unusable = savp.replace("AES_CM_128_HMAC_SHA1_32", "F8_128_HMAC_SHA1_80");
        assert_eq!(
            negotiate(&SessionDescription::parse(unusable.as_bytes()).expect("sdp")),
            Err(SdpError::NoCommonCrypto)
        );
        let plain = negotiate(&SessionDescription::parse(OFFER.as_bytes()).expect("sdp"));
        assert_eq!(plain.expect("neg").srtp, None);
    }

    #[test]
    fn no_common_codec() {
        let g729 = "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 18\r\n";
        assert_eq!(
            negotiate(&SessionDescription::parse(g729.as_bytes()).expect("sdp")),
            Err(SdpError::NoCommonCodec)
        );
        assert!(SessionDescription::parse(b"garbage").is_err());
    }
}
