//! WebRTC media for browser legs: ICE-lite, DTLS-SRTP, rtcp-mux and BUNDLE through the
//! sans-IO `str0m` crate in its RTP mode, so the rest of the engine sees a browser leg as
//! plain RTP: [`WebRtcTransport::receive`] turns datagrams from the browser into plain RTP
//! packets for the [`super::leg::Leg`], and [`WebRtcTransport::send_rtp`] turns the leg's
//! plain RTP packets into SRTP datagrams. RTCP towards the browser is str0m's; the leg's own
//! RTCP is not sent on a browser leg.
//!
//! The server is ICE-lite: it offers one host candidate (the public address and the leg's RTP
//! port) and answers the browser's checks; the browser nominates the pair. Audio is G.711
//! (PCMU, PCMA) with `telephone-event/8000`, which Chromium offers beside Opus.
//!
//! The SIP endpoint asks for the transport through its media interface when it answers a
//! browser's offer (or makes an offer to a browser), because the SDP comes from it; the
//! transport waits among the call's [`super::reserve::ReservedMedia`] until the call layer
//! starts the leg. The SIP side only ever sees SDP text.

use std::net::SocketAddr;
use std::time::Instant;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::{Codec, FormatParams};
use str0m::media::{Frequency, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

/// The payload type we use for `telephone-event/8000` in our own offers.
const DTMF_PT: u8 = 101;

/// Why a browser's media could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WebRtcError {
    /// The SDP could not be used.
    #[error("WebRTC SDP: {0}")]
    Sdp(String),
    /// str0m refused.
    #[error("WebRTC: {0}")]
    Rtc(String),
}

/// A browser leg's WebRTC state. See the module documentation.
pub struct WebRtcTransport {
    rtc: Rtc,
    local: SocketAddr,
    mid: Option<Mid>,
    pending: Option<SdpPendingOffer>,
    /// Extended sequence number of what we send (str0m wants 64-bit numbers).
    tx_seq: u64,
    last_seq: Option<u16>,
    /// Where the browser's last datagram came from.
    remote: Option<SocketAddr>,
    disconnected: bool,
}

impl std::fmt::Debug for WebRtcTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebRtcTransport")
            .field("local", &self.local)
            .field("mid", &self.mid)
            .finish()
    }
}

/// What one input produced.
#[derive(Debug, Default)]
pub struct WebRtcOutput {
    /// Datagrams to send from the leg's socket.
    pub transmits: Vec<(SocketAddr, Vec<u8>)>,
    /// Plain RTP packets from the browser, with where they came from.
    pub rtp: Vec<(SocketAddr, Vec<u8>)>,
}

fn new_rtc(now: Instant) -> Rtc {
    rtc_config(true).build(now)
}

fn rtc_config(ice_lite: bool) -> str0m::RtcConfig {
    let mut cfg = Rtc::builder()
        .set_ice_lite(ice_lite)
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_pcmu(true, false)
        .enable_pcma(true, false);
    cfg.codec_config().add_config(
        Pt::from(DTMF_PT),
        None,
        Codec::Tele,
        Frequency::EIGHT_KHZ,
        None,
        FormatParams::parse_line("0-16"),
    );
    cfg
}

impl WebRtcTransport {
    fn with_rtc(mut rtc: Rtc, local: SocketAddr) -> Result<WebRtcTransport, WebRtcError> {
        let c = Candidate::host(local, "udp").map_err(|e| WebRtcError::Rtc(e.to_string()))?;
        rtc.add_local_candidate(c);
        Ok(WebRtcTransport {
            rtc,
            local,
            mid: None,
            pending: None,
            tx_seq: 0,
            last_seq: None,
            remote: None,
            disconnected: false,
        })
    }

    /// Answers a browser's offer; `local` is the address the browser reaches the leg's RTP
    /// socket on. Returns the transport and the answer SDP.
    pub fn answer(
        offer: &str,
        local: SocketAddr,
        now: Instant,
    ) -> Result<(WebRtcTransport, String), WebRtcError> {
        let mut t = Self::with_rtc(new_rtc(now), local)?;
        let offer =
            SdpOffer::from_sdp_string(offer).map_err(|e| WebRtcError::Sdp(e.to_string()))?;
        let answer = t
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| WebRtcError::Rtc(e.to_string()))?;
        let text = answer.to_sdp_string();
        t.mid = audio_mid(&text);
        if t.mid.is_none() {
            return Err(WebRtcError::Sdp("no audio in the answer".into()));
        }
        Ok((t, text))
    }

    /// Makes an offer to a browser. Returns the transport and the offer SDP; the answer goes
    /// to [`WebRtcTransport::accept_answer`].
    pub fn offer(
        local: SocketAddr,
        now: Instant,
    ) -> Result<(WebRtcTransport, String), WebRtcError> {
        let mut t = Self::with_rtc(new_rtc(now), local)?;
        let mut change = t.rtc.sdp_api();
        let mid = change.add_media(
            MediaKind::Audio,
            str0m::media::Direction::SendRecv,
            None,
            None,
            None,
        );
        let (offer, pending) = change
            .apply()
            .ok_or_else(|| WebRtcError::Rtc("no offer".into()))?;
        t.mid = Some(mid);
        t.pending = Some(pending);
        Ok((t, offer.to_sdp_string()))
    }

    /// Takes the browser's answer to our offer.
    pub fn accept_answer(&mut self, answer: &str) -> Result<(), WebRtcError> {
        let pending = self
            .pending
            .take()
            .ok_or_else(|| WebRtcError::Rtc("no offer outstanding".into()))?;
        let answer =
            SdpAnswer::from_sdp_string(answer).map_err(|e| WebRtcError::Sdp(e.to_string()))?;
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| WebRtcError::Rtc(e.to_string()))
    }

    /// True once ICE says the browser is gone.
    pub fn disconnected(&self) -> bool {
        self.disconnected
    }

    /// A datagram from the browser.
    pub fn receive(
        &mut self,
        source: SocketAddr,
        data: &[u8],
        now: Instant,
        out: &mut WebRtcOutput,
    ) {
        let Ok(r) = Receive::new(Protocol::Udp, source, self.local, data) else {
            return; // not STUN, DTLS, RTP or RTCP
        };
        self.remote = Some(source);
        if let Err(e) = self.rtc.handle_input(Input::Receive(now, r)) {
            tracing::debug!(error = %e, "WebRTC input refused");
        }
        self.drain(out);
    }

    /// Time passed (call at least every tick).
    pub fn timeout(&mut self, now: Instant, out: &mut WebRtcOutput) {
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            tracing::debug!(error = %e, "WebRTC timeout refused");
        }
        self.drain(out);
    }

    /// Sends one of the leg's plain RTP packets to the browser (dropped until the browser is
    /// connected).
    pub fn send_rtp(&mut self, pkt: &[u8], now: Instant, out: &mut WebRtcOutput) {
        if pkt.len() < 12 || !self.rtc.is_connected() {
            return;
        }
        let Some(mid) = self.mid else { return };
        let cc = usize::from(pkt[0] & 0x0f);
        let ext = pkt[0] & 0x10 != 0;
        let mut off = 12 + cc * 4;
        if ext {
            if pkt.len() < off + 4 {
                return;
            }
            let words = usize::from(u16::from_be_bytes([pkt[off + 2], pkt[off + 3]]));
            off += 4 + words * 4;
        }
        if pkt.len() < off {
            return;
        }
        let marker = pkt[1] & 0x80 != 0;
        let pt = pkt[1] & 0x7f;
        let seq = u16::from_be_bytes([pkt[2], pkt[3]]);
        let ts = u32::from_be_bytes([pkt[4], pkt[5], pkt[6], pkt[7]]);
        // Extend the 16-bit sequence number: it only moves forward by small steps.
        self.tx_seq = match self.last_seq {
            None => u64::from(seq),
            Some(last) => self.tx_seq + u64::from(seq.wrapping_sub(last)),
        };
        self.last_seq = Some(seq);
        let mut api = self.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(mid, None) else {
            return;
        };
        tx.write_rtp(
            RtpWrite::new(
                Pt::from(pt),
                SeqNo::from(self.tx_seq),
                ts,
                now,
                pkt[off..].to_vec(),
            )
            .marker(marker),
        );
        self.drain(out);
    }

    fn drain(&mut self, out: &mut WebRtcOutput) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(_)) => return,
                Ok(Output::Transmit(t)) => out.transmits.push((t.destination, t.contents.to_vec())),
                Ok(Output::Event(e)) => match e {
                    Event::RtpPacket(p) => {
                        let h = &p.header;
                        let mut pkt = Vec::with_capacity(12 + p.payload.len());
                        pkt.push(0x80);
                        pkt.push((u8::from(h.marker) << 7) | (*h.payload_type & 0x7f));
                        pkt.extend_from_slice(&h.sequence_number.to_be_bytes());
                        pkt.extend_from_slice(&h.timestamp.to_be_bytes());
                        pkt.extend_from_slice(&(*h.ssrc).to_be_bytes());
                        pkt.extend_from_slice(&p.payload);
                        let from = self.remote.unwrap_or(self.local);
                        out.rtp.push((from, pkt));
                    }
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        self.disconnected = true;
                    }
                    Event::MediaAdded(m) if m.kind == MediaKind::Audio && self.mid.is_none() => {
                        self.mid = Some(m.mid);
                    }
                    Event::Connected => tracing::debug!(local = %self.local, "WebRTC connected"),
                    _ => {}
                },
                Err(e) => {
                    tracing::debug!(error = %e, "WebRTC poll failed");
                    return;
                }
            }
        }
    }
}

/// The `a=mid` of the first audio m-line of an SDP.
fn audio_mid(sdp: &str) -> Option<Mid> {
    let mut in_audio = false;
    for line in sdp.lines() {
        if let Some(m) = line.strip_prefix("m=") {
            in_audio = m.starts_with("audio ") && !m.starts_with("audio 0 ");
        } else if in_audio {
            if let Some(mid) = line.strip_prefix("a=mid:") {
                return Some(Mid::from(mid.trim()));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A full-ICE str0m peer standing in for a browser: offers audio with PCMU and
    /// telephone-event, connects to our ICE-lite transport, and RTP flows both ways as plain
    /// packets on our side.
    #[test]
    fn browser_offer_is_answered_and_rtp_flows_both_ways_in_plain_form() {
        let mut now = Instant::now();
        let browser_addr: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        let server_addr: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let mut browser = rtc_config(false).build(now);
        browser.add_local_candidate(Candidate::host(browser_addr, "udp").unwrap());
        let mut change = browser.sdp_api();
        let mid = change.add_media(
            MediaKind::Audio,
            str0m::media::Direction::SendRecv,
            None,
            None,
            None,
        );
        let (offer, pending) = change.apply().unwrap();
        let offer_text = offer.to_sdp_string();
        assert!(crate::sdp::is_browser_offer(
            &crate::sdp::SessionDescription::parse(offer_text.as_bytes()).unwrap(),
            offer_text.as_bytes()
        ));
        let (mut ours, answer) = WebRtcTransport::answer(&offer_text, server_addr, now).unwrap();
        assert!(answer.contains("a=ice-lite"), "{answer}");
        assert!(answer.contains("telephone-event/8000"), "{answer}");
        let neg = crate::sdp::browser_audio(&answer, server_addr, crate::sdp::Direction::SendRecv)
            .unwrap();
        assert_eq!(neg.codec, crate::sdp::AudioCodec::Pcmu);
        assert_eq!(neg.dtmf_pt, Some(DTMF_PT));
        browser
            .sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
            .unwrap();

        let mut got_plain = Vec::new();
        let mut browser_got = Vec::new();
        let mut seq = 1000u16;
        for step in 0..400 {
            now += Duration::from_millis(5);
            // Browser side.
            browser.handle_input(Input::Timeout(now)).unwrap();
            let mut to_server = Vec::new();
            loop {
                match browser.poll_output().unwrap() {
                    Output::Timeout(_) => break,
                    Output::Transmit(t) => to_server.push(t.contents.to_vec()),
                    Output::Event(Event::RtpPacket(p)) => browser_got.push(p),
                    Output::Event(_) => {}
                }
            }
            let mut out = WebRtcOutput::default();
            for d in to_server {
                ours.receive(browser_addr, &d, now, &mut out);
            }
            ours.timeout(now, &mut out);
            if browser.is_connected() && step % 4 == 0 {
                // The browser speaks: 160 µ-law bytes.
                let mut api = browser.direct_api();
                let tx = api.stream_tx_by_mid(mid, None).unwrap();
                tx.write_rtp(RtpWrite::new(
                    Pt::from(0),
                    SeqNo::from(u64::from(step)),
                    step * 40,
                    now,
                    vec![0x55u8; 160],
                ));
                // And we speak back with a plain packet.
                let mut pkt = vec![0x80, 0x00];
                pkt.extend_from_slice(&seq.to_be_bytes());
                pkt.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
                pkt.extend_from_slice(&0x1234_5678u32.to_be_bytes());
                pkt.extend_from_slice(&[0x2au8; 160]);
                seq = seq.wrapping_add(1);
                ours.send_rtp(&pkt, now, &mut out);
            }
            for (_, pkt) in out.rtp.drain(..) {
                got_plain.push(pkt);
            }
            for (dst, d) in out.transmits {
                assert_eq!(dst, browser_addr);
                let r = Receive::new(Protocol::Udp, server_addr, browser_addr, &d).unwrap();
                browser.handle_input(Input::Receive(now, r)).unwrap();
            }
        }
        assert!(browser.is_connected(), "ICE and DTLS completed");
        assert!(got_plain.len() > 20, "{} plain packets", got_plain.len());
        let p = &got_plain[got_plain.len() - 1];
        assert_eq!(p[0], 0x80);
        assert_eq!(p[1] & 0x7f, 0);
        assert_eq!(&p[12..], &[0x55u8; 160][..]);
        assert!(
            browser_got.len() > 20,
            "{} packets reached the browser",
            browser_got.len()
        );
        assert!(browser_got
            .iter()
            .all(|p| p.payload.as_ref() == [0x2au8; 160]));
    }
}
