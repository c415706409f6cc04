//! WebSocket (RFC 6455) on `GET /ws`: handshake validation, framing rules,
//! fragmentation, control frames and close codes; and the echo endpoint
//! (`ws.echo_path`) that shares them.
//!
//! Most tests drive the connection frame by frame with `RawWs`, so they
//! can send what a well-behaved client never would.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn node_with_4kib_messages() -> Node {
    Node::builder()
        .env("WEIM_LIMITS_MAX_MESSAGE", "4KiB")
        .start()
}

/// Sends `bytes` on a fresh connection and returns the close code the
/// server answers with.
#[track_caller]
fn close_code_after(node: &Node, bytes: &[u8]) -> u16 {
    let mut ws = node.raw_ws();
    // The server may close before it has read everything: a failed write
    // is fine, the close frame is what matters.
    let _ = ws.try_send_bytes(bytes);
    ws.expect_close()
}

// ---- handshake ----

#[test]
fn handshake_answers_101_with_the_accept_key() {
    let node = Node::start();
    // RawWs::connect checks 101, Upgrade, Connection and
    // Sec-WebSocket-Accept (RFC 6455 §4.2.2).
    let _ws = node.raw_ws();
    // tungstenite as a client agrees.
    let _ws = node.ws();
}

#[test]
fn handshake_without_key_is_400() {
    let node = Node::start();
    let req = Request::get("/ws")
        .header("Upgrade", "websocket")
        .header("Connection", "Upgrade")
        .header("Sec-WebSocket-Version", "13");
    assert_eq!(node.request(&req).status, 400);
}

#[test]
fn handshake_with_version_other_than_13_is_400() {
    let node = Node::start();
    for version in ["8", "12", "14", "x"] {
        let req = Request::get("/ws")
            .header("Upgrade", "websocket")
            .header("Connection", "Upgrade")
            .header("Sec-WebSocket-Key", KEY)
            .header("Sec-WebSocket-Version", version);
        assert_eq!(node.request(&req).status, 400, "version {version}");
    }
}

#[test]
fn handshake_without_upgrade_headers_is_400() {
    let node = Node::start();
    let no_upgrade = Request::get("/ws")
        .header("Connection", "Upgrade")
        .header("Sec-WebSocket-Key", KEY)
        .header("Sec-WebSocket-Version", "13");
    assert_eq!(node.request(&no_upgrade).status, 400);

    let no_connection = Request::get("/ws")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Key", KEY)
        .header("Sec-WebSocket-Version", "13");
    assert_eq!(node.request(&no_connection).status, 400);

    let wrong_upgrade = Request::get("/ws")
        .header("Upgrade", "h2c")
        .header("Connection", "Upgrade")
        .header("Sec-WebSocket-Key", KEY)
        .header("Sec-WebSocket-Version", "13");
    assert_eq!(node.request(&wrong_upgrade).status, 400);
}

#[test]
fn handshake_accepts_token_lists_and_any_case() {
    let node = Node::start();
    let mut http = node.http();
    let req = Request::get("/ws")
        .header("upgrade", "WebSocket")
        .header("connection", "keep-alive, Upgrade")
        .header("sec-websocket-key", KEY)
        .header("sec-websocket-version", "13");
    let resp = http.request(&req);
    assert_eq!(resp.status, 101, "{resp:?}");
}

// ---- framing rules: close 1002 ----

#[test]
fn unmasked_client_frame_is_closed_with_1002() {
    let node = Node::start();
    let frame = encode_frame(true, 0, OP_TEXT, None, br#"{"Cmd":30}"#);
    assert_eq!(close_code_after(&node, &frame), CLOSE_PROTOCOL);
}

#[test]
fn control_frame_over_125_bytes_is_closed_with_1002() {
    let node = Node::start();
    let ping = client_frame(true, OP_PING, &[b'p'; 126]);
    assert_eq!(close_code_after(&node, &ping), CLOSE_PROTOCOL);
}

#[test]
fn fragmented_control_frame_is_closed_with_1002() {
    let node = Node::start();
    let ping = client_frame(false, OP_PING, b"half");
    assert_eq!(close_code_after(&node, &ping), CLOSE_PROTOCOL);
}

#[test]
fn reserved_bits_are_closed_with_1002() {
    let node = Node::start();
    for rsv in [1u8, 2, 4] {
        let frame = encode_frame(true, rsv, OP_TEXT, Some([1, 2, 3, 4]), br#"{"Cmd":30}"#);
        assert_eq!(close_code_after(&node, &frame), CLOSE_PROTOCOL, "rsv {rsv}");
    }
}

#[test]
fn reserved_opcodes_are_closed_with_1002() {
    let node = Node::start();
    for opcode in [0x3u8, 0x7, 0xB, 0xF] {
        let frame = client_frame(true, opcode, b"x");
        assert_eq!(
            close_code_after(&node, &frame),
            CLOSE_PROTOCOL,
            "opcode {opcode:#x}"
        );
    }
}

#[test]
fn continuation_without_a_started_message_is_closed_with_1002() {
    let node = Node::start();
    let frame = client_frame(true, OP_CONTINUATION, br#"{"Cmd":30}"#);
    assert_eq!(close_code_after(&node, &frame), CLOSE_PROTOCOL);
}

#[test]
fn new_data_frame_inside_a_fragmented_message_is_closed_with_1002() {
    let node = Node::start();
    let mut bytes = client_frame(false, OP_TEXT, br#"{"Cmd""#);
    bytes.extend(client_frame(true, OP_TEXT, br#"{"Cmd":30}"#));
    assert_eq!(close_code_after(&node, &bytes), CLOSE_PROTOCOL);
}

// ---- payload rules: 1007 and 1009 ----

#[test]
fn invalid_utf8_text_is_closed_with_1007() {
    let node = Node::start();
    let frame = client_frame(true, OP_TEXT, b"{\"Cmd\":3,\"Body\":\"\xff\xfe\"}");
    assert_eq!(close_code_after(&node, &frame), CLOSE_BAD_DATA);

    // A character cut short at the end of the message.
    let mut bytes = client_frame(false, OP_TEXT, b"{\"Body\":\"");
    bytes.extend(client_frame(
        true,
        OP_CONTINUATION,
        "认".as_bytes().split_at(2).0,
    ));
    assert_eq!(close_code_after(&node, &bytes), CLOSE_BAD_DATA);
}

#[test]
fn single_frame_over_max_message_is_closed_with_1009() {
    let node = node_with_4kib_messages();
    let frame = client_frame(true, OP_TEXT, &[b'a'; 4097]);
    assert_eq!(close_code_after(&node, &frame), CLOSE_TOO_BIG);
}

#[test]
fn fragmented_message_over_max_message_is_closed_with_1009() {
    let node = node_with_4kib_messages();
    // Each fragment is small; together they pass 4 KiB.
    let mut bytes = client_frame(false, OP_TEXT, &[b'a'; 1500]);
    bytes.extend(client_frame(false, OP_CONTINUATION, &[b'a'; 1500]));
    bytes.extend(client_frame(true, OP_CONTINUATION, &[b'a'; 1500]));
    assert_eq!(close_code_after(&node, &bytes), CLOSE_TOO_BIG);
}

#[test]
fn message_of_exactly_max_message_is_handled() {
    let node = node_with_4kib_messages();
    let mut ws = node.raw_ws();
    // 4096 bytes, not JSON: answered "bad format", and the connection lives.
    ws.send_text(&"a".repeat(4096));
    let reply = ws.recv_json();
    assert_system_frame(&reply, 2);
    assert_eq!(reply["Body"], WS_BAD_FORMAT, "{reply}");

    // The same size in fragments.
    let mut bytes = client_frame(false, OP_TEXT, &[b'b'; 2048]);
    bytes.extend(client_frame(true, OP_CONTINUATION, &[b'b'; 2048]));
    ws.send_bytes(&bytes);
    let reply = ws.recv_json();
    assert_eq!(reply["Body"], WS_BAD_FORMAT, "{reply}");
}

// ---- control frames ----

#[test]
fn ping_is_answered_with_a_pong_carrying_the_same_payload() {
    let node = Node::start();
    let mut ws = node.raw_ws();
    for payload in [&b""[..], b"hello weim", &[0xA5u8; 125]] {
        ws.send_bytes(&client_frame(true, OP_PING, payload));
        let pong = ws.recv_frame();
        assert_eq!(pong.opcode, OP_PONG, "{pong:?}");
        assert!(pong.fin);
        assert_eq!(pong.payload, payload);
    }
}

#[test]
fn unsolicited_pong_is_ignored() {
    let node = Node::start();
    let mut ws = node.raw_ws();
    ws.send_bytes(&client_frame(true, OP_PONG, b"unasked"));
    ws.send_bytes(&client_frame(true, OP_PING, b"still here"));
    let pong = ws.recv_frame();
    assert_eq!(pong.opcode, OP_PONG);
    assert_eq!(pong.payload, b"still here");
}

#[test]
fn close_is_echoed_with_the_same_status_code() {
    let node = Node::start();
    for code in [CLOSE_NORMAL, CLOSE_GOING_AWAY, 3000, 4321] {
        let mut ws = node.raw_ws();
        ws.send_bytes(&client_frame(true, OP_CLOSE, &close_payload(code, "bye")));
        let echo = ws.recv_frame();
        assert_eq!(echo.opcode, OP_CLOSE, "{echo:?}");
        assert_eq!(echo.close_code(), Some(code));
        // Then the server ends the TCP connection.
        ws.expect_end(Duration::from_secs(5));
    }
}

#[test]
fn close_from_the_tungstenite_client_completes() {
    let node = Node::start();
    let mut ws = node.ws();
    ws.close(CLOSE_NORMAL);
    match ws.wait_closed(Duration::from_secs(5)) {
        Some(Closed::Code(code)) => assert_eq!(code, CLOSE_NORMAL),
        other => panic!("close not echoed: {other:?}"),
    }
}

// ---- fragmentation ----

#[test]
fn fragmented_text_with_an_interleaved_ping_is_reassembled() {
    let node = Node::start();
    let account = node.new_account();
    let message = json!({"Cmd": 3, "Body": account.token}).to_string();
    let bytes = message.as_bytes();
    let (a, rest) = bytes.split_at(5);
    let (b, c) = rest.split_at(rest.len() / 2);

    let mut ws = node.raw_ws();
    let mut wire = client_frame(false, OP_TEXT, a);
    wire.extend(client_frame(true, OP_PING, b"between fragments"));
    wire.extend(client_frame(false, OP_CONTINUATION, b));
    wire.extend(client_frame(true, OP_CONTINUATION, c));
    ws.send_bytes(&wire);

    let mut pong = None;
    let mut signed_in = None;
    for _ in 0..4 {
        if pong.is_some() && signed_in.is_some() {
            break;
        }
        let frame = ws.recv_frame();
        match frame.opcode {
            OP_PONG => pong = Some(frame.payload),
            OP_TEXT => signed_in = Some(frame.json()),
            _ => panic!("unexpected frame {frame:?}"),
        }
    }
    assert_eq!(pong.as_deref(), Some(&b"between fragments"[..]));
    let reply = signed_in.expect("no answer to the reassembled sign-in");
    assert_system_frame(&reply, 4);
    assert_eq!(reply["Body"], WS_AUTH_OK);
}

#[test]
fn fragments_split_inside_a_utf8_character_are_reassembled() {
    let node = Node::start();
    let account = node.new_account();
    // An unknown key carrying Han characters; the cut falls inside "认".
    let message = json!({"Cmd": 3, "Body": account.token, "Note": "认证"}).to_string();
    let bytes = message.as_bytes();
    let cut = message.find('认').unwrap() + 1;
    let mut wire = client_frame(false, OP_TEXT, &bytes[..cut]);
    wire.extend(client_frame(true, OP_CONTINUATION, &bytes[cut..]));

    let mut ws = node.raw_ws();
    ws.send_bytes(&wire);
    let reply = ws.recv_json();
    assert_system_frame(&reply, 4);
}

#[test]
fn frames_split_across_tcp_writes_are_reassembled() {
    let node = Node::start();
    let mut ws = node.raw_ws();
    // A 2-byte then a 16-bit extended length header, written a byte at a
    // time.
    let mut wire = client_frame(true, OP_TEXT, b"not json");
    wire.extend(client_frame(true, OP_TEXT, &[b'z'; 300]));
    for byte in &wire {
        ws.send_bytes(&[*byte]);
    }
    for _ in 0..2 {
        let reply = ws.recv_json();
        assert_eq!(reply["Body"], WS_BAD_FORMAT, "{reply}");
    }
}

// ---- UTF-8 fails fast ----

/// A text message whose second fragment makes it invalid: the server
/// closes with 1007 at that fragment, with the final one never sent.
#[track_caller]
fn invalid_fragment_is_refused_at_once(ws: &mut RawWs) {
    // Autobahn 6.4.1: valid text, then a code point above U+10FFFF.
    ws.send_bytes(&client_frame(
        false,
        OP_TEXT,
        b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5",
    ));
    ws.send_bytes(&client_frame(false, OP_CONTINUATION, b"\xf4\x90\x80\x80"));
    assert_eq!(ws.expect_close(), CLOSE_BAD_DATA);
}

#[test]
fn invalid_utf8_fails_at_the_first_bad_fragment() {
    let node = Node::builder().env("WEIM_WS_ECHO_PATH", "/echo").start();
    invalid_fragment_is_refused_at_once(&mut node.raw_ws());
    invalid_fragment_is_refused_at_once(&mut node.raw_ws_at("/echo"));

    // The invalid sequence straddles two fragments: a valid first byte at
    // the end of one, the byte that breaks it at the start of the next.
    let mut ws = node.raw_ws_at("/echo");
    ws.send_bytes(&client_frame(false, OP_TEXT, b"abc\xf4"));
    ws.send_bytes(&client_frame(false, OP_CONTINUATION, b"\x90\x80\x80def"));
    assert_eq!(ws.expect_close(), CLOSE_BAD_DATA);

    // A character cut between fragments is fine.
    let mut ws = node.raw_ws_at("/echo");
    let text = "认证 ok".as_bytes();
    ws.send_bytes(&client_frame(false, OP_TEXT, &text[..1]));
    ws.send_bytes(&client_frame(false, OP_CONTINUATION, &text[1..4]));
    ws.send_bytes(&client_frame(true, OP_CONTINUATION, &text[4..]));
    let echo = ws.recv_frame();
    assert_eq!((echo.opcode, echo.payload.as_slice()), (OP_TEXT, text));
}

#[test]
fn invalid_utf8_fails_before_its_frame_is_whole() {
    let node = Node::builder().env("WEIM_WS_ECHO_PATH", "/echo").start();
    let invalid = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80edited";
    // Autobahn 6.4.3: one frame; everything but its last 6 bytes is sent,
    // the bytes that make it invalid included.
    let frame = client_frame(true, OP_TEXT, invalid);
    for path in ["/ws", "/echo"] {
        let mut ws = node.raw_ws_at(path);
        ws.send_bytes(&frame[..frame.len() - 6]);
        assert_eq!(ws.expect_close(), CLOSE_BAD_DATA, "{path}");
    }
    // The same inside a continuation frame.
    let mut ws = node.raw_ws_at("/echo");
    ws.send_bytes(&client_frame(false, OP_TEXT, b"ok "));
    let frame = client_frame(true, OP_CONTINUATION, invalid);
    ws.send_bytes(&frame[..frame.len() - 6]);
    assert_eq!(ws.expect_close(), CLOSE_BAD_DATA);

    // Valid text written a byte at a time (characters cut between reads)
    // is echoed whole.
    let mut ws = node.raw_ws_at("/echo");
    let text = "认证 wörld 😀".repeat(20);
    let mut wire = client_frame(false, OP_TEXT, &text.as_bytes()[..77]);
    wire.extend(client_frame(true, OP_CONTINUATION, &text.as_bytes()[77..]));
    for byte in &wire {
        ws.send_bytes(&[*byte]);
    }
    let echo = ws.recv_frame();
    assert_eq!(
        (echo.opcode, echo.payload.as_slice()),
        (OP_TEXT, text.as_bytes())
    );
}

// ---- the echo endpoint ----

#[test]
fn echo_path_is_off_by_default() {
    let node = Node::start();
    let resp = node.request(&ws_handshake_at("/echo", KEY));
    assert_eq!(resp.status, 404, "{resp:?}");
    assert_eq!(node.metrics().value("weim_ws_echo_sessions_total"), 0.0);
}

#[test]
fn echo_path_echoes_text_binary_and_fragmented_messages() {
    let node = Node::builder().env("WEIM_WS_ECHO_PATH", "/echo").start();
    #[track_caller]
    fn expect(ws: &mut RawWs, opcode: u8, payload: &[u8]) {
        let echo = ws.recv_frame();
        assert!(echo.fin, "{echo:?}");
        assert_eq!((echo.opcode, echo.payload.as_slice()), (opcode, payload));
    }
    let mut ws = node.raw_ws_at("/echo");
    // No sign-in: a command is echoed, not answered.
    ws.send_text(r#"{"Cmd":30}"#);
    expect(&mut ws, OP_TEXT, br#"{"Cmd":30}"#);
    ws.send_bytes(&client_frame(true, OP_TEXT, b""));
    expect(&mut ws, OP_TEXT, b"");
    let binary: Vec<u8> = (0..=255u8).rev().collect();
    ws.send_bytes(&client_frame(true, OP_BINARY, &binary));
    expect(&mut ws, OP_BINARY, &binary);

    // Fragmented, with a ping between the fragments: the pong comes at
    // once, the message once whole, as one message.
    let mut wire = client_frame(false, OP_TEXT, "认".as_bytes());
    wire.extend(client_frame(true, OP_PING, b"between"));
    wire.extend(client_frame(false, OP_CONTINUATION, b""));
    wire.extend(client_frame(true, OP_CONTINUATION, "证".as_bytes()));
    ws.send_bytes(&wire);
    expect(&mut ws, OP_PONG, b"between");
    expect(&mut ws, OP_TEXT, "认证".as_bytes());
    let mut wire = client_frame(false, OP_BINARY, &binary[..100]);
    wire.extend(client_frame(true, OP_CONTINUATION, &binary[100..]));
    ws.send_bytes(&wire);
    expect(&mut ws, OP_BINARY, &binary);

    // The close handshake as on /ws.
    ws.send_bytes(&client_frame(true, OP_CLOSE, &close_payload(4321, "bye")));
    assert_eq!(ws.expect_close(), 4321);
    ws.expect_end(Duration::from_secs(5));

    // /ws on the same node still reads commands.
    let mut ws = node.raw_ws();
    ws.send_text(r#"{"Cmd":30}"#);
    assert_system_frame(&ws.recv_json(), 2);
    assert_eq!(node.metrics().value("weim_ws_echo_sessions_total"), 1.0);
}

#[test]
fn echo_path_keeps_the_framing_rules_of_ws() {
    let node = Node::builder()
        .env("WEIM_WS_ECHO_PATH", "/echo")
        .env("WEIM_LIMITS_MAX_MESSAGE", "4KiB")
        .start();
    let refused = |bytes: Vec<u8>| {
        let mut ws = node.raw_ws_at("/echo");
        let _ = ws.try_send_bytes(&bytes);
        ws.expect_close()
    };
    assert_eq!(
        refused(client_frame(true, OP_TEXT, &[b'a'; 4097])),
        CLOSE_TOO_BIG
    );
    assert_eq!(
        refused(client_frame(true, OP_TEXT, b"\xff")),
        CLOSE_BAD_DATA
    );
    assert_eq!(
        refused(client_frame(true, OP_CONTINUATION, b"x")),
        CLOSE_PROTOCOL
    );
    assert_eq!(
        refused(encode_frame(true, 0, OP_TEXT, None, b"x")),
        CLOSE_PROTOCOL
    );
    assert_eq!(
        refused(encode_frame(true, 4, OP_TEXT, Some([1, 2, 3, 4]), b"x")),
        CLOSE_PROTOCOL
    );
}

#[test]
fn echo_sessions_need_no_sign_in_and_get_keepalive_pings() {
    // A connection on /ws would be closed with 1008 after a second without
    // Cmd 3; one on the echo path gets the keepalive ping instead.
    let node = Node::builder()
        .env("WEIM_WS_ECHO_PATH", "/echo")
        .env("WEIM_AUTH_AUTH_TIMEOUT", "1s")
        .env("WEIM_LIMITS_PING_INTERVAL", "1s")
        .start();
    let mut pending = node.raw_ws();
    let mut ws = node.raw_ws_at("/echo");
    assert_eq!(pending.expect_close(), CLOSE_POLICY);
    let ping = ws.recv_frame();
    assert_eq!(ping.opcode, OP_PING, "{ping:?}");
    ws.send_text("still here");
    let echo = ws.recv_frame();
    assert_eq!(
        (echo.opcode, echo.payload.as_slice()),
        (OP_TEXT, &b"still here"[..])
    );
}

#[test]
fn large_echoes_are_flow_controlled_not_dropped() {
    // Each echo is four times limits.max_pending_bytes: a client that
    // reads them is never dropped as a slow consumer, and the server
    // reads its next message only once the echo before has gone out.
    let node = Node::builder()
        .env("WEIM_WS_ECHO_PATH", "/echo")
        .env("WEIM_LIMITS_MAX_MESSAGE", "1MiB")
        .env("WEIM_LIMITS_MAX_PENDING_BYTES", "256KiB")
        .start();
    let mut ws = node.raw_ws_at("/echo");
    let messages: Vec<Vec<u8>> = (0..4u8)
        .map(|i| (0..1 << 20).map(|j: u32| (j as u8) ^ i).collect())
        .collect();
    let mut wire = Vec::new();
    for m in &messages {
        wire.extend(client_frame(true, OP_BINARY, m));
    }
    // Written from another thread: the server stops reading while its
    // echoes wait, so one thread writing everything first would block.
    let mut writer = ws.stream().try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        use std::io::Write;
        writer.write_all(&wire).unwrap();
    });
    for m in &messages {
        let echo = ws.recv_frame();
        assert_eq!(echo.opcode, OP_BINARY);
        assert!(echo.payload == *m, "echo differs");
    }
    sender.join().unwrap();
    assert_eq!(node.metrics().value("weim_slow_consumer_drops_total"), 0.0);
}
