//! Minimal WebSocket client codec: the HTTP upgrade request, the check of the
//! server's 101 answer, masked client frames and the parser of server frames.
//!
//! Only what a load generator needs: no extensions, no subprotocols. The
//! parser never panics on odd input; it returns an error instead.

/// The RFC 6455 sample nonce. A load generator needs no secrecy here, and a
/// fixed key lets the answer be checked without SHA-1.
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// `base64(sha1(KEY + GUID))` for [`KEY`] (RFC 6455, section 1.3).
pub const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Largest response head accepted before giving up on the upgrade.
pub const MAX_RESPONSE_HEAD: usize = 8192;

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// The upgrade request for `path` on `host` (the `Host` header value).
pub fn upgrade_request(host: &str, path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// Outcome of looking at the bytes received so far after the upgrade request.
#[derive(Debug, PartialEq, Eq)]
pub enum Upgrade {
    /// The head is not complete yet.
    Partial,
    /// A valid 101; the head is this many bytes long (frames may follow).
    Done(usize),
    /// Anything else, with a short reason.
    Failed(String),
}

/// Checks the server's answer to [`upgrade_request`].
pub fn check_upgrade(buf: &[u8]) -> Upgrade {
    let end = match find(buf, b"\r\n\r\n") {
        Some(p) => p + 4,
        None if buf.len() > MAX_RESPONSE_HEAD => {
            return Upgrade::Failed("upgrade: response head too large".into())
        }
        None => return Upgrade::Partial,
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    let mut parts = status.split(' ');
    let version = parts.next().unwrap_or("");
    let code = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Upgrade::Failed("upgrade: not an HTTP response".into());
    }
    if code != "101" {
        let code: String = code.chars().take(3).collect();
        return Upgrade::Failed(format!("upgrade: HTTP {code}"));
    }
    let mut accept_ok = false;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("sec-websocket-accept") {
                accept_ok = value.trim() == ACCEPT;
            }
        }
    }
    if !accept_ok {
        return Upgrade::Failed("upgrade: bad Sec-WebSocket-Accept".into());
    }
    Upgrade::Done(end)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Appends one masked client frame (FIN set) to `out`.
pub fn encode_client_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | (opcode & 0x0F));
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
}

/// Header of one frame found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    /// Reserved bits (must be zero without extensions).
    pub rsv: u8,
    /// The mask key when the frame was masked (servers must not mask).
    pub mask: Option<[u8; 4]>,
    /// Offset of the payload from the start of the frame.
    pub header_len: usize,
    pub payload_len: usize,
}

impl Frame {
    /// Total length of the frame in bytes.
    pub fn total_len(&self) -> usize {
        self.header_len + self.payload_len
    }
}

/// Why a server frame could not be accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Payload longer than the configured maximum.
    TooLarge(u64),
    /// Control frame longer than 125 bytes or fragmented.
    BadControl,
}

/// Parses the frame header at the start of `buf`. `Ok(None)` means that the
/// whole frame (header and payload) is not in `buf` yet.
pub fn parse_frame(buf: &[u8], max_payload: usize) -> Result<Option<Frame>, FrameError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let b0 = buf[0];
    let b1 = buf[1];
    let fin = b0 & 0x80 != 0;
    let rsv = (b0 >> 4) & 0x07;
    let opcode = b0 & 0x0F;
    let masked = b1 & 0x80 != 0;
    let len7 = (b1 & 0x7F) as usize;
    let (len, mut pos) = match len7 {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        n => (n as u64, 2),
    };
    if opcode >= 0x8 && (len > 125 || !fin) {
        return Err(FrameError::BadControl);
    }
    if len > max_payload as u64 {
        return Err(FrameError::TooLarge(len));
    }
    let mask = if masked {
        if buf.len() < pos + 4 {
            return Ok(None);
        }
        let m = [buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]];
        pos += 4;
        Some(m)
    } else {
        None
    };
    let frame = Frame {
        fin,
        opcode,
        rsv,
        mask,
        header_len: pos,
        payload_len: len as usize,
    };
    if buf.len() < frame.total_len() {
        return Ok(None);
    }
    Ok(Some(frame))
}

/// XORs `data` with a 4-byte mask key in place.
pub fn unmask(data: &mut [u8], mask: [u8; 4]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![(if fin { 0x80 } else { 0 }) | opcode];
        let len = payload.len();
        if len < 126 {
            v.push(len as u8);
        } else if len <= 0xFFFF {
            v.push(126);
            v.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            v.push(127);
            v.extend_from_slice(&(len as u64).to_be_bytes());
        }
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn parses_the_three_length_forms() {
        for len in [0usize, 5, 125, 126, 300, 65535, 65536, 100_000] {
            let payload = vec![b'x'; len];
            let bytes = server_frame(OP_TEXT, true, &payload);
            let f = parse_frame(&bytes, 1 << 20).unwrap().unwrap();
            assert!(f.fin);
            assert_eq!(f.opcode, OP_TEXT);
            assert_eq!(f.payload_len, len);
            assert_eq!(f.total_len(), bytes.len());
            assert_eq!(f.mask, None);
            // Every proper prefix is incomplete, never an error.
            for cut in [0, 1, f.header_len - 1, f.header_len, bytes.len() - 1] {
                if cut < bytes.len() {
                    assert_eq!(
                        parse_frame(&bytes[..cut], 1 << 20),
                        Ok(None),
                        "len {len} cut {cut}"
                    );
                }
            }
        }
    }

    #[test]
    fn two_frames_back_to_back() {
        let mut bytes = server_frame(OP_TEXT, true, br#"{"Cmd":4}"#);
        bytes.extend(server_frame(OP_PING, true, b"hi"));
        let f = parse_frame(&bytes, 1024).unwrap().unwrap();
        assert_eq!(&bytes[f.header_len..f.total_len()], br#"{"Cmd":4}"#);
        let g = parse_frame(&bytes[f.total_len()..], 1024).unwrap().unwrap();
        assert_eq!(g.opcode, OP_PING);
        assert_eq!(g.payload_len, 2);
    }

    #[test]
    fn rejects_bad_frames() {
        let big = server_frame(OP_TEXT, true, &[b'a'; 2000]);
        assert_eq!(parse_frame(&big, 1000), Err(FrameError::TooLarge(2000)));
        let long_ping = server_frame(OP_PING, true, &[0; 126]);
        assert_eq!(
            parse_frame(&long_ping, 1 << 20),
            Err(FrameError::BadControl)
        );
        let frag_close = server_frame(OP_CLOSE, false, &[3, 232]);
        assert_eq!(
            parse_frame(&frag_close, 1 << 20),
            Err(FrameError::BadControl)
        );
        // A 64-bit length with the top bit set must not overflow anything.
        let mut huge = vec![0x81, 127];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(
            parse_frame(&huge, 1 << 20),
            Err(FrameError::TooLarge(u64::MAX))
        );
    }

    #[test]
    fn client_frames_round_trip_through_the_parser() {
        for len in [0usize, 3, 200, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut out = Vec::new();
            encode_client_frame(&mut out, OP_TEXT, &payload, [1, 2, 3, 4]);
            let f = parse_frame(&out, 1 << 20).unwrap().unwrap();
            assert_eq!(f.mask, Some([1, 2, 3, 4]));
            let mut body = out[f.header_len..f.total_len()].to_vec();
            unmask(&mut body, [1, 2, 3, 4]);
            assert_eq!(body, payload);
        }
    }

    #[test]
    fn upgrade_answers() {
        let mut ok = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             sec-websocket-accept: {ACCEPT}\r\n\r\n"
        )
        .into_bytes();
        let head_len = ok.len();
        ok.extend_from_slice(&[0x81, 2, b'{', b'}']);
        assert_eq!(check_upgrade(&ok), Upgrade::Done(head_len));
        assert_eq!(check_upgrade(&ok[..20]), Upgrade::Partial);
        let refused = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            check_upgrade(refused),
            Upgrade::Failed("upgrade: HTTP 503".into())
        );
        let wrong = b"HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: nope\r\n\r\n";
        assert!(matches!(check_upgrade(wrong), Upgrade::Failed(_)));
        assert!(matches!(check_upgrade(&[b'x'; 9000]), Upgrade::Failed(_)));
        assert!(matches!(
            check_upgrade(b"garbage\r\n\r\n"),
            Upgrade::Failed(_)
        ));
    }
}
