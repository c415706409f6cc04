//! WebSocket (RFC 6455) pieces the reactor drives over its own buffers: the
//! upgrade answer, check-then-parse of client frames, and encoding of server
//! frames. Header parsing and formatting come from `tungstenite`; this module
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

/// Checks whether `buf` starts with one complete, valid client frame.
///
/// `Ok(None)`: more bytes are needed (and the frame so far is acceptable).
/// `Err(code)`: the peer broke the protocol; close with `code`.
/// A frame whose declared payload exceeds `max_payload` fails before its
/// payload arrives, so a peer cannot make the reactor buffer it.
pub fn check_frame(buf: &[u8], max_payload: usize) -> Result<Option<FrameInfo>, u16> {
    let mut cursor = Cursor::new(buf);
    let (header, len) = match FrameHeader::parse(&mut cursor) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return Ok(None),
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
    let payload_start = cursor.position() as usize;
    let payload_len = len as usize;
    if buf.len() - payload_start < payload_len {
        return Ok(None);
    }
    Ok(Some(FrameInfo {
        fin: header.is_final,
        opcode,
        payload_start,
        payload_len,
        mask,
    }))
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
        let info = check_frame(&buf, 1024).unwrap().unwrap();
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
        for cut in 0..buf.len() {
            assert_eq!(check_frame(&buf[..cut], 1024), Ok(None), "cut at {cut}");
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
