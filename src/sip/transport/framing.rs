//! Cutting SIP messages out of a byte stream (RFC 3261 §18.3): header section up to the empty
//! line, then exactly `Content-Length` body bytes. Also recognises RFC 5626 keep-alives (a
//! double CRLF "ping" between messages, answered with a single CRLF "pong").
//!
//! Pure: bytes in, frames out; the TCP task only moves bytes. Linear: each byte is searched
//! for the end of the header section once (a sender trickling a 64 KiB header one byte at a
//! time costs 64 KiB of scanning, not 2 GiB), and a header section is parsed once while its
//! body arrives.

use bytes::{Buf, Bytes, BytesMut};

/// Something cut from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// One complete SIP message.
    Message(Bytes),
    /// A CRLFCRLF keep-alive ping: answer with CRLF.
    Ping,
}

/// Why the stream must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// The header section grew past the limit without ending.
    #[error("header section larger than {0} bytes")]
    HeadersTooLarge(usize),
    /// Content-Length is missing a number or is larger than the limit.
    #[error("invalid or too large Content-Length")]
    BadContentLength,
}

/// Accumulates stream bytes and yields frames.
#[derive(Debug)]
pub struct StreamFramer {
    buf: BytesMut,
    max_message: usize,
    /// Bytes of `buf` already searched for the blank line (without finding it).
    scanned: usize,
    /// Total length of the message at the front once its header section is known.
    pending_total: Option<usize>,
    /// Bytes searched for blank lines so far (the work done, for tests).
    searched: u64,
}

impl StreamFramer {
    /// A framer refusing messages larger than `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        StreamFramer {
            buf: BytesMut::with_capacity(4096),
            max_message,
            scanned: 0,
            pending_total: None,
            searched: 0,
        }
    }

    /// Adds received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes waiting (for tests and limits).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, if the buffer holds one.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FramingError> {
        if let Some(total) = self.pending_total {
            return Ok(self.take_message(total));
        }
        // Leading CRLFs: a double CRLF is a ping; single ones are tolerated and skipped.
        let mut crlfs = 0;
        while self.buf.len() >= 2 && &self.buf[..2] == b"\r\n" {
            self.buf.advance(2);
            self.scanned = self.scanned.saturating_sub(2);
            crlfs += 1;
            if crlfs == 2 {
                return Ok(Some(Frame::Ping));
            }
        }
        if crlfs == 1 && self.buf.len() < 2 {
            // Could be the first half of a ping; a lone CRLF is harmless either way.
            return Ok(None);
        }
        // Resume the search where the last one stopped (3 bytes back: the blank line may
        // straddle two reads).
        let from = self.scanned.saturating_sub(3);
        self.searched += (self.buf.len() - from) as u64;
        let Some(head_end) = find(&self.buf[from..], b"\r\n\r\n").map(|i| i + from) else {
            self.scanned = self.buf.len();
            if self.buf.len() > self.max_message {
                return Err(FramingError::HeadersTooLarge(self.max_message));
            }
            return Ok(None);
        };
        let head = &self.buf[..head_end];
        let body_len = content_length(head)?;
        let total = head_end + 4 + body_len;
        if total > self.max_message {
            return Err(FramingError::BadContentLength);
        }
        self.pending_total = Some(total);
        Ok(self.take_message(total))
    }

    /// The message at the front once all `total` bytes are here.
    fn take_message(&mut self, total: usize) -> Option<Frame> {
        if self.buf.len() < total {
            return None;
        }
        self.pending_total = None;
        self.scanned = 0;
        Some(Frame::Message(self.buf.split_to(total).freeze()))
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Content-Length from a header section; absent means 0 (RFC 3261 §18.3 requires it on
/// streams, but a message without a body is unambiguous).
fn content_length(head: &[u8]) -> Result<usize, FramingError> {
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = std::str::from_utf8(&line[..colon]).unwrap_or("").trim();
        if name.eq_ignore_ascii_case("Content-Length") || name.eq_ignore_ascii_case("l") {
            let v = std::str::from_utf8(&line[colon + 1..])
                .map_err(|_| FramingError::BadContentLength)?;
            return v.trim().parse().map_err(|_| FramingError::BadContentLength);
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 4\r\n\r\nbody";

    #[test]
    fn partial_reads_and_pipelining() {
        let mut f = StreamFramer::new(65535);
        for chunk in MSG.chunks(5) {
            assert_eq!(f.next_frame(), Ok(None));
            f.push(chunk);
        }
        assert_eq!(
            f.next_frame(),
            Ok(Some(Frame::Message(Bytes::from_static(MSG))))
        );
        let mut two = MSG.to_vec();
        two.extend_from_slice(b"\r\n\r\n");
        two.extend_from_slice(MSG);
        f.push(&two);
        assert!(matches!(f.next_frame(), Ok(Some(Frame::Message(_)))));
        assert_eq!(f.next_frame(), Ok(Some(Frame::Ping)));
        assert!(matches!(f.next_frame(), Ok(Some(Frame::Message(_)))));
        assert_eq!(f.next_frame(), Ok(None));
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn a_trickled_header_is_scanned_once() {
        // One byte per read: the work must stay proportional to the bytes, which the
        // `scanned` mark shows (it only moves forward until the message is cut).
        let mut f = StreamFramer::new(70_000);
        let mut head = b"OPTIONS sip:a SIP/2.0\r\n".to_vec();
        while head.len() < 60_000 {
            head.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        head.extend_from_slice(b"Content-Length: 2\r\n\r\nhi");
        let mut frames = 0;
        for b in &head {
            f.push(std::slice::from_ref(b));
            if let Ok(Some(Frame::Message(m))) = f.next_frame() {
                assert_eq!(m.len(), head.len());
                frames += 1;
            }
        }
        assert_eq!(frames, 1);
        // Rescanning from the start would search ~head²/2 = 1.8e9 bytes.
        assert!(
            f.searched < 5 * head.len() as u64,
            "searched {} bytes",
            f.searched
        );
    }

    #[test]
    fn limits() {
        let mut f = StreamFramer::new(100);
        f.push(&[b'a'; 200]);
        assert_eq!(f.next_frame(), Err(FramingError::HeadersTooLarge(100)));
        let mut f = StreamFramer::new(100);
        f.push(b"INVITE x SIP/2.0\r\nl: 99999\r\n\r\n");
        assert_eq!(f.next_frame(), Err(FramingError::BadContentLength));
        let mut f = StreamFramer::new(100);
        f.push(b"INVITE x SIP/2.0\r\nContent-Length: -1\r\n\r\n");
        assert_eq!(f.next_frame(), Err(FramingError::BadContentLength));
    }
}
