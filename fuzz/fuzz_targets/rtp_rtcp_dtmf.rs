//! Fuzzes what arrives on an RTP port: RTP, RTCP compound packets, RFC 4733 events and the
//! event de-duplicator.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::media::dtmf::{EventDeduplicator, TelephoneEvent};
use switchyard::media::rtcp;
use switchyard::media::rtp::RtpPacket;

fuzz_target!(|data: &[u8]| {
    let _ = rtcp::parse(data, 0x1234_5678, 0xdead_beef_0000_0000);
    if let Some(p) = RtpPacket::parse(data) {
        assert!(p.payload.len() <= data.len());
        let mut dedup = EventDeduplicator::default();
        if let Some(ev) = TelephoneEvent::parse(p.payload) {
            let _ = ev.digit();
            let _ = dedup.on_packet(p.timestamp, ev);
            assert_eq!(TelephoneEvent::parse(&ev.to_bytes()), Some(ev));
        }
    }
});
