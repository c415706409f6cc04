//! WebSocket (RFC 6455) pieces the reactor drives over its own buffers: the
//! upgrade answer, check-then-parse of client frames, incremental UTF-8
//! validation, and encoding of server frames. Header parsing and formatting come from `tungstenite`; this module
//! adds the rules a gateway enforces (masking, control-frame limits, reserved
//! bits and opcodes, message size) and never panics on network input.

use std::io::Cursor;
use std::sync::Arc;

use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// An encoded server frame, immutable and shared by every recipient.
pub type SharedFrame = Arc<[u8]>;

/// Close status codes weim sends (RFC 6455 §7.4.1 and the 4000 range).
pub mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The node is going away (drain).
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol error.
    pub const PROTOCOL: u16 = 1002;
    /// Payload not consistent with the message type (bad UTF-8).
    pub const INVALID_DATA: u16 = 1007;
    /// Policy violation (auth deadline, slow consumer).
    pub const POLICY: u16 = 1008;
    /// Message too big.
    pub const TOO_BIG: u16 = 1009;
    /// Replaced by a newer connection of the same user.
    pub const REPLACED: u16 = 4000;
    /// weim: the connection's session ended (logout, or its absolute end).
    pub const LOGGED_OUT: u16 = 4001;
    /// weim: closed through the server API (`users/disconnect`, default).
    pub const DISCONNECTED: u16 = 4002;
    /// weim: the user was banned (`users/ban`).
    pub const BANNED: u16 = 4003;
}

/// Opcodes weim accepts from clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// Continuation of a fragmented message.
    Continue,
    /// UTF-8 text.
    Text,
    /// Binary data.
    Binary,
    /// Close handshake.
    Close,
    /// Ping.
    Ping,
    /// Pong.
    Pong,
}

impl Opcode {
    /// Control frames may not be fragmented and carry at most 125 bytes.
    pub fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// One complete client frame found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// FIN bit.
    pub fin: bool,
    /// The frame's opcode.
    pub opcode: Opcode,
    /// Offset of the payload in the buffer.
    pub payload_start: usize,
    /// Payload length in bytes.
    pub payload_len: usize,
    /// The client's masking key.
    pub mask: [u8; 4],
}

impl FrameInfo {
    /// Bytes the whole frame occupies in the buffer.
    pub fn total_len(&self) -> usize {
        self.payload_start + self.payload_len
    }
}

/// What the start of a buffer holds, as far as it is acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// Not a whole header yet.
    Header,
    /// A valid header; the payload is still arriving (`buf` holds its
    /// first bytes, from `payload_start`).
    Partial(FrameInfo),
    /// A whole, valid frame.
    Whole(FrameInfo),
}

/// Checks the client frame at the start of `buf`.
///
/// `Err(code)`: the peer broke the protocol; close with `code`.
/// A frame whose declared payload exceeds `max_payload` fails before its
/// payload arrives, so a peer cannot make the reactor buffer it.
pub fn check_frame(buf: &[u8], max_payload: usize) -> Result<Frame, u16> {
    let mut cursor = Cursor::new(buf);
    let (header, len) = match FrameHeader::parse(&mut cursor) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return Ok(Frame::Header),
        Err(_) => return Err(close::PROTOCOL),
    };
    if header.rsv1 || header.rsv2 || header.rsv3 {
        return Err(close::PROTOCOL);
    }
    let opcode = match header.opcode {
        OpCode::Data(Data::Continue) => Opcode::Continue,
        OpCode::Data(Data::Text) => Opcode::Text,
        OpCode::Data(Data::Binary) => Opcode::Binary,
        OpCode::Control(Control::Close) => Opcode::Close,
        OpCode::Control(Control::Ping) => Opcode::Ping,
        OpCode::Control(Control::Pong) => Opcode::Pong,
        OpCode::Data(Data::Reserved(_)) | OpCode::Control(Control::Reserved(_)) => {
            return Err(close::PROTOCOL)
        }
    };
    if opcode.is_control() && (!header.is_final || len > 125) {
        return Err(close::PROTOCOL);
    }
    let Some(mask) = header.mask else {
        return Err(close::PROTOCOL);
    };
    if len > max_payload as u64 {
        return Err(close::TOO_BIG);
    }
    let info = FrameInfo {
        fin: header.is_final,
        opcode,
        payload_start: cursor.position() as usize,
        payload_len: len as usize,
        mask,
    };
    Ok(if buf.len() < info.total_len() {
        Frame::Partial(info)
    } else {
        Frame::Whole(info)
    })
}

/// Removes the client's mask from a payload in place.
pub fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = payload.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let v = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

fn encode(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let header = FrameHeader {
        opcode,
        ..FrameHeader::default()
    };
    let len = payload.len() as u64;
    let mut out = Vec::with_capacity(header.len(len) + payload.len());
    // Writing into a Vec cannot fail.
    let _ = header.format(len, &mut out);
    out.extend_from_slice(payload);
    out
}

/// An unmasked, final server text frame.
pub fn text_frame(payload: &[u8]) -> Vec<u8> {
    encode(OpCode::Data(Data::Text), payload)
}

/// A pong echoing `payload` (≤ 125 bytes, checked by `check_frame`).
pub fn pong_frame(payload: &[u8]) -> Vec<u8> {
    encode(OpCode::Control(Control::Pong), payload)
}

/// An unmasked, final server binary frame.
pub fn binary_frame(payload: &[u8]) -> Vec<u8> {
    encode(OpCode::Data(Data::Binary), payload)
}

/// A keepalive ping (empty payload).
pub fn ping_frame() -> Vec<u8> {
    encode(OpCode::Control(Control::Ping), &[])
}

/// A close frame with a status code and a short reason.
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..reason.len().min(123)]);
    encode(OpCode::Control(Control::Close), &payload)
}

/// Incremental UTF-8 validation of a text message arriving in pieces
/// (fragments, or the reads of a frame not yet whole): an invalid sequence
/// is known at the piece that holds it (RFC 6455 §8.1: fail fast), a
/// character cut between two pieces is fine.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Utf8 {
    /// The start of a character cut at the end of the last piece.
    tail: [u8; 3],
    tail_len: u8,
}

impl Utf8 {
    /// Validates the next piece; `false` once the text is invalid.
    pub fn feed(&mut self, mut bytes: &[u8]) -> bool {
        if self.tail_len > 0 {
            // Complete the cut character with the first bytes of this piece.
            let n = usize::from(self.tail_len);
            let take = (4 - n).min(bytes.len());
            let mut joined = [0u8; 4];
            joined[..n].copy_from_slice(&self.tail[..n]);
            joined[n..n + take].copy_from_slice(&bytes[..take]);
            let used = match std::str::from_utf8(&joined[..n + take]) {
                Ok(_) => take,
                Err(e) if e.valid_up_to() > 0 => e.valid_up_to() - n,
                // Still cut short (this piece had too few bytes; four
                // bytes always hold a whole character).
                Err(e) if e.error_len().is_none() && n + take < 4 => {
                    self.tail[n..n + take].copy_from_slice(&bytes[..take]);
                    self.tail_len += take as u8;
                    return true;
                }
                Err(_) => return false,
            };
            self.tail_len = 0;
            bytes = &bytes[used..];
        }
        match std::str::from_utf8(bytes) {
            Ok(_) => true,
            Err(e) if e.error_len().is_none() => {
                let rest = &bytes[e.valid_up_to()..];
                self.tail[..rest.len()].copy_from_slice(rest);
                self.tail_len = rest.len() as u8;
                true
            }
            Err(_) => false,
        }
    }

    /// Like [`Utf8::feed`], for payload bytes still masked with `mask`
    /// that start `offset` bytes into their frame's payload (a frame not
    /// yet whole is checked as its bytes arrive and unmasked only once
    /// whole).
    pub fn feed_masked(&mut self, masked: &[u8], mask: [u8; 4], offset: usize) -> bool {
        let mask: [u8; 4] = std::array::from_fn(|i| mask[(offset + i) % 4]);
        // A multiple of 4: each piece starts at the same mask phase.
        let mut buf = [0u8; 1024];
        masked.chunks(buf.len()).all(|piece| {
            let bytes = &mut buf[..piece.len()];
            bytes.copy_from_slice(piece);
            unmask(bytes, mask);
            self.feed(bytes)
        })
    }

    /// Whether the text fed so far ends on a whole character.
    pub fn complete(&self) -> bool {
        self.tail_len == 0
    }
}

/// The close code a client's close payload asks to echo, or an error code
/// when the payload itself is invalid (1 byte, reserved code, bad UTF-8).
pub fn close_reply_code(payload: &[u8]) -> u16 {
    match payload.len() {
        0 => close::NORMAL,
        1 => close::PROTOCOL,
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !valid {
                close::PROTOCOL
            } else if std::str::from_utf8(&payload[2..]).is_err() {
                close::INVALID_DATA
            } else {
                code
            }
        }
    }
}

/// The subprotocol this node speaks, selected when a client offers it.
pub const SUBPROTOCOL: &str = "weim.v1";

/// Whether the `Sec-WebSocket-Protocol` values a client sent (each a
/// comma-separated list) offer [`SUBPROTOCOL`]. Tokens are compared
/// exactly (RFC 6455 §4.1).
pub fn offers_subprotocol<'a>(values: impl IntoIterator<Item = &'a str>) -> bool {
    values
        .into_iter()
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == SUBPROTOCOL)
}

/// The `101 Switching Protocols` answer to a client's `Sec-WebSocket-Key`,
/// selecting `protocol` when given (only ever one the client offered: a
/// client that offered none gets no `Sec-WebSocket-Protocol`, RFC 6455
/// §4.2.2).
pub fn upgrade_response(key: &[u8], protocol: Option<&str>) -> Vec<u8> {
    let accept = tungstenite::handshake::derive_accept_key(key);
    let protocol = protocol
        .map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n"))
        .unwrap_or_default();
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{protocol}\r\n"
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut out = vec![first];
        if payload.len() < 126 {
            out.push(0x80 | payload.len() as u8);
        } else {
            out.push(0x80 | 126);
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        let mut body = payload.to_vec();
        unmask(&mut body, mask);
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn parses_masked_text_frame_and_unmasks() {
        let mut buf = client_frame(0x81, b"hello world");
        let Ok(Frame::Whole(info)) = check_frame(&buf, 1024) else {
            panic!("not whole");
        };
        assert!(info.fin);
        assert_eq!(info.opcode, Opcode::Text);
        assert_eq!(info.total_len(), buf.len());
        let payload = &mut buf[info.payload_start..info.total_len()];
        unmask(payload, info.mask);
        assert_eq!(payload, b"hello world");
    }

    #[test]
    fn incomplete_frames_ask_for_more() {
        let buf = client_frame(0x81, &[b'x'; 300]);
        // 4 header bytes (a 16-bit length), the mask, then the payload.
        for cut in 0..8 {
            assert_eq!(
                check_frame(&buf[..cut], 1024),
                Ok(Frame::Header),
                "cut at {cut}"
            );
        }
        for cut in 8..buf.len() {
            match check_frame(&buf[..cut], 1024) {
                Ok(Frame::Partial(info)) => assert_eq!(info.total_len(), buf.len()),
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn rejects_what_rfc6455_forbids() {
        let unmasked = [0x81, 0x02, b'h', b'i'];
        assert_eq!(check_frame(&unmasked, 1024), Err(close::PROTOCOL));
        assert_eq!(
            check_frame(&client_frame(0xC1, b"x"), 1024),
            Err(close::PROTOCOL)
        );
        assert_eq!(
            check_frame(&client_frame(0x83, b"x"), 1024),
            Err(close::PROTOCOL)
        );
        assert_eq!(
            check_frame(&client_frame(0x8B, b"x"), 1024),
            Err(close::PROTOCOL)
        );
        assert_eq!(
            check_frame(&client_frame(0x09, b"x"), 1024),
            Err(close::PROTOCOL)
        );
        assert_eq!(
            check_frame(&client_frame(0x89, &[0; 126]), 1024),
            Err(close::PROTOCOL)
        );
        // Too big is known from the header alone.
        assert_eq!(
            check_frame(&client_frame(0x81, &[0; 300])[..8], 200),
            Err(close::TOO_BIG)
        );
    }

    /// Feeds `text` cut at every position into two and three fragments.
    fn fragmented(text: &[u8]) -> impl Iterator<Item = (bool, bool)> + '_ {
        (0..=text.len()).flat_map(move |a| {
            (a..=text.len()).map(move |b| {
                let mut v = Utf8::default();
                let ok = v.feed(&text[..a]) && v.feed(&text[a..b]) && v.feed(&text[b..]);
                (ok, ok && v.complete())
            })
        })
    }

    #[test]
    fn utf8_is_validated_across_fragments() {
        let valid = "aé认😀z".as_bytes();
        assert!(fragmented(valid).all(|r| r == (true, true)));
        // Cut short at the end: valid so far, incomplete.
        let cut = &valid[..valid.len() - 3];
        assert!(fragmented(cut).all(|r| r == (true, false)));
        // Invalid sequences fail whatever the cuts: a stray continuation
        // byte, a surrogate, a code point above U+10FFFF, an overlong form.
        for bad in [
            &b"ab\x80cd"[..],
            b"\xed\xa0\x80",
            b"\xce\xba\xf4\x90\x80\x80\x65",
            b"\xc0\xaf",
            b"\xe2\x82x",
        ] {
            assert!(fragmented(bad).all(|(ok, _)| !ok), "{bad:?}");
        }
    }

    #[test]
    fn masked_bytes_are_checked_from_any_offset() {
        let text = "héllo 认证 wörld 😀 ".repeat(100);
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut masked = text.as_bytes().to_vec();
        unmask(&mut masked, mask);
        for cut in [0, 1, 2, 3, 5, 1023, 1024, 1027, masked.len()] {
            let mut v = Utf8::default();
            assert!(v.feed_masked(&masked[..cut], mask, 0));
            assert!(v.feed_masked(&masked[cut..], mask, cut), "cut at {cut}");
            assert!(v.complete());
        }
        let mut bad = text.into_bytes();
        bad[1500] = 0xff;
        unmask(&mut bad, mask);
        let mut v = Utf8::default();
        assert!(v.feed_masked(&bad[..1499], mask, 0));
        assert!(!v.feed_masked(&bad[1499..1502], mask, 1499));
    }

    #[test]
    fn invalid_utf8_fails_at_the_fragment_that_holds_it() {
        // Autobahn 6.4.1: valid, then a code point above U+10FFFF.
        let mut v = Utf8::default();
        assert!(v.feed(b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"));
        assert!(!v.feed(b"\xf4\x90\x80\x80"));
        // Its first byte alone is a valid start.
        let mut v = Utf8::default();
        assert!(v.feed(b"\xf4"));
        assert!(!v.complete());
        assert!(!v.feed(b"\x90"));
    }

    #[test]
    fn close_codes_are_validated() {
        assert_eq!(close_reply_code(&[]), close::NORMAL);
        assert_eq!(close_reply_code(&[3]), close::PROTOCOL);
        assert_eq!(close_reply_code(&1000u16.to_be_bytes()), 1000);
        assert_eq!(close_reply_code(&1005u16.to_be_bytes()), close::PROTOCOL);
        assert_eq!(close_reply_code(&[0x0f, 0xa0, 0xff]), close::INVALID_DATA);
        assert_eq!(close_reply_code(&4321u16.to_be_bytes()), 4321);
    }

    #[test]
    fn server_frames_are_unmasked() {
        assert_eq!(text_frame(b"ab"), vec![0x81, 2, b'a', b'b']);
        let big = text_frame(&[b'x'; 70_000]);
        assert_eq!(&big[..2], &[0x81, 127]);
        assert_eq!(pong_frame(b"p"), vec![0x8A, 1, b'p']);
        assert_eq!(binary_frame(&[0, 255]), vec![0x82, 2, 0, 255]);
        assert_eq!(close_frame(1009, ""), vec![0x88, 2, 0x03, 0xf1]);
    }

    #[test]
    fn accept_key_matches_rfc_example() {
        let resp = String::from_utf8(upgrade_response(b"dGhlIHNhbXBsZSBub25jZQ==", None)).unwrap();
        assert!(resp.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(!resp.contains("Sec-WebSocket-Protocol"));
        assert!(resp.ends_with("\r\n\r\n"));
        let resp = upgrade_response(b"dGhlIHNhbXBsZSBub25jZQ==", Some(SUBPROTOCOL));
        let resp = String::from_utf8(resp).unwrap();
        assert!(resp.ends_with("\r\nSec-WebSocket-Protocol: weim.v1\r\n\r\n"));
    }

    #[test]
    fn subprotocol_is_selected_only_when_offered() {
        assert!(offers_subprotocol(["weim.v1"]));
        assert!(offers_subprotocol(["chat, weim.v1"]));
        assert!(offers_subprotocol(["chat", " weim.v1 "]));
        assert!(!offers_subprotocol(["chat, mqtt"]));
        assert!(!offers_subprotocol(["WEIM.V1", "weim.v10", "weim"]));
        assert!(!offers_subprotocol(Vec::<&str>::new()));
    }
}
