//! Property tests against a running node (issue 2 point 11): arbitrary
//! bytes on the HTTP port, arbitrary frames on a WebSocket and arbitrary
//! JSON from a signed-in client never take weim down, never get a 500, and
//! never make it send a malformed frame.

mod common;

use std::cell::RefCell;
use std::io::Read;
use std::time::{Duration, Instant};

use common::*;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        // A failing input is reported as found: shrinking would rerun it
        // against a node that may be gone.
        max_shrink_iters: 0,
        failure_persistence: None,
        ..Config::default()
    })
}

/// After every case: the process is alive and `/healthz` answers.
fn still_serving(node: &mut Node) -> Result<(), TestCaseError> {
    if let Some(status) = node.exited() {
        return Err(TestCaseError::fail(format!("weim exited: {status}")));
    }
    let resp = node.get("/healthz");
    prop_assert_eq!(resp.status, 200);
    Ok(())
}

fn http_input() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        Just(&b"GET /healthz HTTP/1.1\r\n"[..]),
        Just(&b"POST /api/v1/login HTTP/1.1\r\n"[..]),
        Just(&b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n"[..]),
        Just(&b"OPTIONS * HTTP/1.1\r\n"[..]),
        Just(&b""[..]),
    ];
    let header = prop_oneof![
        Just("Content-Length: 5\r\n".to_string()),
        Just("Content-Length: -1\r\n".to_string()),
        Just("Content-Length: 99999999999999999999\r\n".to_string()),
        Just("Transfer-Encoding: chunked\r\n".to_string()),
        Just("Content-Type: application/json\r\n".to_string()),
        Just("Connection: Upgrade\r\n".to_string()),
        Just("Sec-WebSocket-Version: 13\r\n".to_string()),
        Just("Host: weim.test\r\n".to_string()),
        "[ -~]{0,40}: [ -~]{0,40}\r\n",
    ];
    (
        line,
        vec(header, 0..6),
        prop::bool::ANY,
        vec(any::<u8>(), 0..1024),
    )
        .prop_map(|(line, headers, end, tail)| {
            let mut bytes = line.to_vec();
            for h in headers {
                bytes.extend_from_slice(h.as_bytes());
            }
            if end {
                bytes.extend_from_slice(b"\r\n");
            }
            bytes.extend(tail);
            bytes
        })
}

#[test]
fn arbitrary_bytes_on_the_http_port_never_take_weim_down() {
    let node = RefCell::new(
        Node::builder()
            .env("WEIM_LIMITS_HTTP_TIMEOUT", "300ms")
            .start(),
    );
    let addr = node.borrow().addr;
    let input = prop_oneof![vec(any::<u8>(), 0..2048), http_input()];
    runner(64)
        .run(&input, |bytes| {
            let mut conn = tcp_connect(addr);
            let _ = std::io::Write::write_all(&mut conn, &bytes);
            let _ = conn.shutdown(std::net::Shutdown::Write);
            // Whatever comes back within 1 s: no 5xx but 503.
            conn.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(1);
            let mut answer = Vec::new();
            let mut chunk = [0u8; 4096];
            while Instant::now() < deadline && answer.len() < 1 << 20 {
                match conn.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => answer.extend_from_slice(&chunk[..n]),
                }
            }
            let text = String::from_utf8_lossy(&answer);
            for status in text
                .match_indices("HTTP/1.1 ")
                .filter_map(|(i, _)| text.get(i + 9..i + 12))
            {
                prop_assert!(
                    !status.starts_with('5') || status == "503",
                    "answered {} to {:?}",
                    status,
                    String::from_utf8_lossy(&bytes)
                );
            }
            still_serving(&mut node.borrow_mut())
        })
        .unwrap();
}

#[derive(Debug, Clone)]
struct FuzzFrame {
    fin: bool,
    rsv: u8,
    opcode: u8,
    masked: bool,
    payload: Vec<u8>,
}

fn fuzz_frame() -> impl Strategy<Value = FuzzFrame> {
    let opcode = prop_oneof![
        4 => prop::sample::select(vec![OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_PING, OP_PONG]),
        1 => Just(OP_CLOSE),
        1 => 0u8..16,
    ];
    let payload = prop_oneof![
        vec(any::<u8>(), 0..300),
        (any::<i16>(), "[ -~\u{4e00}-\u{4e20}]{0,40}")
            .prop_map(|(cmd, body)| json!({"Cmd": cmd, "Body": body}).to_string().into_bytes()),
    ];
    (
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.1),
        0u8..8,
        opcode,
        prop::bool::weighted(0.95),
        payload,
    )
        .prop_map(|(fin, use_rsv, rsv, opcode, masked, payload)| FuzzFrame {
            fin,
            rsv: if use_rsv { rsv } else { 0 },
            opcode,
            masked,
            payload,
        })
}

#[test]
fn arbitrary_frames_never_take_weim_down_nor_garble_its_frames() {
    let node = RefCell::new(
        Node::builder()
            .env("WEIM_LIMITS_MAX_MESSAGE", "1KiB")
            .start(),
    );
    let input = (vec(fuzz_frame(), 1..8), vec(any::<u8>(), 0..64));
    runner(64)
        .run(&input, |(frames, trailer)| {
            let mut ws = node.borrow().raw_ws();
            let mut wire = Vec::new();
            for f in &frames {
                let mask = f.masked.then_some([0x11, 0x22, 0x33, 0x44]);
                wire.extend(encode_frame(f.fin, f.rsv, f.opcode, mask, &f.payload));
            }
            wire.extend(trailer);
            let _ = ws.try_send_bytes(&wire);
            // Read what the server answers until it has been quiet for
            // 200 ms: every frame must parse (unmasked, complete), until the
            // end or a close.
            ws.set_read_timeout(Duration::from_millis(200));
            for _ in 0..64 {
                match ws.read_frame() {
                    Ok(Some(frame)) if frame.opcode == OP_CLOSE => break,
                    Ok(Some(frame)) => {
                        prop_assert!(
                            matches!(frame.opcode, OP_TEXT | OP_PONG | OP_PING),
                            "server sent {:?}",
                            frame
                        );
                        if frame.opcode == OP_TEXT {
                            let v: Value = serde_json::from_slice(&frame.payload)
                                .map_err(|e| TestCaseError::fail(format!("not JSON: {e}")))?;
                            prop_assert!(v["Cmd"].is_i64(), "frame without Cmd: {}", v);
                        }
                    }
                    Ok(None) => break,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock
                                | std::io::ErrorKind::TimedOut
                                | std::io::ErrorKind::ConnectionReset
                        ) =>
                    {
                        break
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("bad server frame: {e}"))),
                }
            }
            still_serving(&mut node.borrow_mut())
        })
        .unwrap();
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[ -~\u{4e00}-\u{4e20}]{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::from),
            vec(("[a-zA-Z]{1,6}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

#[test]
fn arbitrary_json_from_a_signed_in_client_never_ends_its_connection() {
    let node = RefCell::new(Node::start());
    let account = node.borrow().new_account();
    let cmd = prop_oneof![
        // Every Cmd but 3 (sign-in) and 30 (ping, used below as the probe).
        (-5i64..40)
            .prop_filter("not 3 or 30", |c| *c != 3 && *c != 30)
            .prop_map(Value::from),
        any::<i64>()
            .prop_filter("not 3 or 30", |c| *c != 3 && *c != 30)
            .prop_map(Value::from),
        any_json(),
    ];
    let input = (
        cmd,
        vec(
            (
                prop::sample::select(vec![
                    "Body", "ToId", "FromId", "Ope", "Type", "Cid", "Id", "x",
                ]),
                any_json(),
            ),
            0..5,
        ),
    );
    runner(64)
        .run(&input, |(cmd, fields)| {
            let mut message = serde_json::Map::new();
            for (key, value) in fields {
                message.insert(key.to_string(), value);
            }
            if cmd.as_f64().is_some_and(|c| c == 3.0 || c == 30.0)
                || cmd
                    .as_str()
                    .is_some_and(|s| s.trim() == "3" || s.trim() == "30")
            {
                return Ok(());
            }
            message.insert("Cmd".to_string(), cmd);
            let message = Value::Object(message);

            let mut ws = node.borrow().ws_signed_in(&account.token);
            ws.send_json(&message);
            ws.send_json(&json!({"Cmd": 30}));
            // Whatever the answer to the message, the probe is answered.
            let mut probed = false;
            for _ in 0..8 {
                let frame = ws.recv_json();
                prop_assert!(frame["Cmd"].is_i64(), "frame without Cmd: {}", frame);
                if frame["Cmd"] == 31 {
                    probed = true;
                    break;
                }
            }
            prop_assert!(probed, "no Cmd 31 after {}", message);
            still_serving(&mut node.borrow_mut())
        })
        .unwrap();
}
