//! Keepalive: a signed-in connection that stays silent gets WebSocket
//! pings; a client that answers them (as browsers, gorilla/websocket and
//! `ws` do by themselves) stays connected however long it sends nothing,
//! and one that does not is closed after `ping_interval + idle_timeout`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const PING: &str = "300ms";
const IDLE: Duration = Duration::from_millis(500);

fn node() -> Node {
    Node::builder()
        .env("WEIM_LIMITS_PING_INTERVAL", PING)
        .env("WEIM_LIMITS_IDLE_TIMEOUT", "500ms")
        .start()
}

fn signed_in(node: &Node) -> RawWs {
    let account = node.new_account();
    let mut ws = node.raw_ws();
    ws.send_json(&json!({"Cmd": 3, "Body": account.token}));
    assert_eq!(ws.recv_json()["Cmd"], 4);
    ws
}

#[test]
fn a_client_that_answers_pings_stays_through_ten_idle_timeouts() {
    let node = node();
    let mut ws = signed_in(&node);
    ws.set_read_timeout(Duration::from_secs(2));
    let start = Instant::now();
    let mut pings = 0;
    while start.elapsed() < IDLE * 10 {
        let frame = ws.recv_frame();
        assert_eq!(frame.opcode, OP_PING, "only pings while silent: {frame:?}");
        pings += 1;
        ws.send_bytes(&client_frame(true, OP_PONG, &frame.payload));
    }
    assert!(pings >= 5, "{pings} pings in {:?}", start.elapsed());
    // Still signed in and served.
    ws.send_json(&json!({"Cmd": 30}));
    assert_eq!(ws.recv_json()["Cmd"], 31);
    assert!(node.metrics().get("weim_pings_total").unwrap_or(0.0) >= 5.0);
}

#[test]
fn a_client_that_does_not_answer_is_closed_after_ping_and_idle_timeout() {
    let node = node();
    let mut ws = signed_in(&node);
    let start = Instant::now();
    ws.set_read_timeout(Duration::from_secs(3));
    let first = ws.recv_frame();
    assert_eq!(first.opcode, OP_PING, "{first:?}");
    let closed = ws.wait_closed(Duration::from_secs(5));
    let took = start.elapsed();
    assert_eq!(closed, Some(Closed::Code(CLOSE_NORMAL)), "after {took:?}");
    // ping_interval (300 ms) + idle_timeout (500 ms), swept every 250 ms.
    assert!(took >= Duration::from_millis(800), "closed after {took:?}");
}

#[test]
fn any_frame_counts_as_activity() {
    let node = node();
    let mut ws = signed_in(&node);
    ws.set_read_timeout(Duration::from_secs(2));
    let start = Instant::now();
    // App-level pings every 200 ms: below the ping interval, so the node
    // never needs to ping.
    while start.elapsed() < IDLE * 6 {
        ws.send_json(&json!({"Cmd": 30}));
        let frame = ws.recv_frame();
        assert_eq!(frame.opcode, OP_TEXT, "{frame:?}");
        assert_eq!(frame.json()["Cmd"], 31);
        std::thread::sleep(Duration::from_millis(200));
    }
}
