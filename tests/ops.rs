//! Operations: `/ws/status` and `/ws/sendToAll` behind `Admin-Token`,
//! `/metrics`, a slow reader closed over its pending-bytes limit, and the
//! SIGTERM drain (issue 2 points 3 and 10, PROTOCOL §1.4, §2.1).

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

// ---------------------------------------------------------------------------
// Admin routes
// ---------------------------------------------------------------------------

#[test]
fn admin_routes_need_the_admin_token() {
    let node = Node::start();
    let routes = [
        Request::get("/ws/status"),
        Request::get("/ws/sendToAll"),
        Request::post("/ws/sendToAll").form(&[("body", "x")]),
    ];
    for route in &routes {
        for token in [None, Some(""), Some("wrong"), Some("test-admin-not")] {
            let req = match token {
                Some(t) => route.clone().header("Admin-Token", t),
                None => route.clone(),
            };
            let resp = node.request(&req);
            assert_eq!(
                resp.status,
                401,
                "{route:?} with {token:?}: {:?}",
                resp.text()
            );
            let reply = resp.envelope();
            assert_eq!(reply["code"], CODE_AUTH, "{reply}");
        }
        let resp = node.admin(route.clone());
        assert_eq!(resp.status, 200, "{route:?}: {:?}", resp.text());
        assert_eq!(resp.envelope()["code"], CODE_OK);
    }
}

#[test]
fn status_counts_connections_signed_in_connections_and_users() {
    let node = Node::start();
    let status = node.status();
    assert_eq!(status["authenticated"], 0, "{status}");
    assert_eq!(status["users"], 0, "{status}");
    assert!(status["connections"].is_i64(), "{status}");

    let alice = node.new_account();
    let bob = node.new_account();
    let _a1 = node.ws_signed_in(&alice.token);
    let _a2 = node.ws_signed_in(&alice.token);
    let _b1 = node.ws_signed_in(&bob.token);
    let _stranger = node.raw_ws();

    let mut last = json!(null);
    let ok = wait_until(Duration::from_secs(5), || {
        last = node.status();
        last["authenticated"] == 3
            && last["users"] == 2
            && last["connections"].as_i64().is_some_and(|n| n >= 4)
    });
    assert!(ok, "/ws/status: {last}");
}

#[test]
fn send_to_all_pushes_cmd_minus_1_with_the_body_or_the_default() {
    let node = Node::start();
    let account = node.new_account();
    let mut ws = node.ws_signed_in(&account.token);
    let mut stranger = node.raw_ws();

    let check = |ws: &mut Ws, body: &str| {
        let push = ws.recv_json();
        assert_server_frame(&push, -1);
        assert_eq!(push["FromId"], 0, "{push}");
        assert_eq!(push["ToId"], 0, "{push}");
        assert_eq!(push["Ope"], 0, "{push}");
        assert_eq!(push["Type"], 0, "{push}");
        assert_eq!(push["Body"], body, "{push}");
    };

    // POST without body.
    assert_eq!(node.send_to_all(None), 1);
    check(&mut ws, BROADCAST_DEFAULT_BODY);

    // POST with a form body.
    assert_eq!(node.send_to_all(Some("表单 & body")), 1);
    check(&mut ws, "表单 & body");

    // GET with a query string.
    // Spaces as %20 (a literal '+' would be encoded as %2B).
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("body", "查询 = query")
        .finish()
        .replace('+', "%20");
    let reply = node
        .admin(Request::get(&format!("/ws/sendToAll?{query}")))
        .api();
    assert_eq!(reply["code"], CODE_OK, "{reply}");
    assert_eq!(reply["data"]["local"], 1, "{reply}");
    check(&mut ws, "查询 = query");

    // GET without a body.
    let reply = node.admin(Request::get("/ws/sendToAll")).api();
    assert_eq!(reply["data"]["local"], 1, "{reply}");
    check(&mut ws, BROADCAST_DEFAULT_BODY);

    // Nothing reached the connection that never signed in.
    stranger.send_bytes(&client_frame(true, OP_PING, b"anyone?"));
    let first = stranger.recv_frame();
    assert_eq!(
        first.opcode, OP_PONG,
        "unauthenticated connection got {first:?}"
    );
}

#[test]
fn send_to_all_with_nobody_signed_in_writes_nothing() {
    let node = Node::start();
    let _stranger = node.raw_ws();
    assert_eq!(node.send_to_all(Some("anyone?")), 0);
}

// ---------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------

const SERIES: &[&str] = &[
    "weim_connections_open",
    "weim_connections_authenticated",
    "weim_frames_in_total",
    "weim_frames_out_total",
    "weim_bytes_in_total",
    "weim_bytes_out_total",
    "weim_slow_consumer_drops_total",
    "weim_job_queue_depth",
    "weim_sends_deferred_total",
    "weim_commit_batches_total",
    "weim_commit_messages_total",
    "weim_job_latency_seconds_sum",
    "weim_job_latency_seconds_count",
];

const CLOSE_REASONS: &[&str] = &[
    "auth_timeout",
    "slow_consumer",
    "protocol",
    "too_big",
    "idle",
    "client",
];

fn closes(reason: &str) -> String {
    format!("weim_closes_total{{reason=\"{reason}\"}}")
}

#[test]
fn metrics_expose_the_documented_series() {
    let node = Node::start();
    let resp = node.get("/metrics");
    assert_eq!(resp.status, 200);
    assert!(
        resp.header("Content-Type")
            .is_some_and(|v| v.starts_with("text/plain")),
        "Content-Type: {:?}",
        resp.header("Content-Type")
    );
    let metrics = Metrics(resp.text());
    for series in SERIES {
        assert!(
            metrics.get(series).is_some(),
            "no {series} in:\n{}",
            metrics.0
        );
    }
    assert!(metrics.has("weim_closes_total"));
    for reason in CLOSE_REASONS {
        assert!(
            metrics.get(&closes(reason)).is_some(),
            "no {} in:\n{}",
            closes(reason),
            metrics.0
        );
    }
    // A fresh node has no WebSocket.
    assert_eq!(metrics.value("weim_connections_authenticated"), 0.0);
    assert_eq!(metrics.value("weim_slow_consumer_drops_total"), 0.0);
}

#[test]
fn metrics_follow_connections_and_traffic() {
    let node = Node::start();
    let account = node.new_account();
    let before = node.metrics();

    let mut ws = node.ws_signed_in(&account.token);
    for _ in 0..3 {
        ws.send_json(&json!({"Cmd": 30}));
        assert_system_frame(&ws.recv_json(), 31);
    }

    let after = node.metrics();
    assert!(after.value("weim_connections_open") >= 1.0);
    assert_eq!(after.value("weim_connections_authenticated"), 1.0);
    for (series, at_least) in [
        ("weim_frames_in_total", 4.0),
        ("weim_frames_out_total", 4.0),
        ("weim_bytes_in_total", 40.0),
        ("weim_bytes_out_total", 40.0),
    ] {
        let grown = after.value(series) - before.value(series);
        assert!(
            grown >= at_least,
            "{series} grew by {grown}, expected ≥ {at_least}"
        );
    }
    // register went through a worker.
    assert!(after.value("weim_job_latency_seconds_count") >= 1.0);
    assert!(after.value("weim_job_latency_seconds_sum") >= 0.0);

    ws.close(CLOSE_NORMAL);
    node.wait_metric(&closes("client"), before.value(&closes("client")) + 1.0);
    assert!(wait_until(Duration::from_secs(5), || {
        node.metrics().value("weim_connections_authenticated") == 0.0
    }));
}

#[test]
fn closes_are_counted_by_reason() {
    let node = Node::builder()
        .env("WEIM_AUTH_AUTH_TIMEOUT", "1s")
        .env("WEIM_LIMITS_IDLE_TIMEOUT", "2s")
        .env("WEIM_LIMITS_PING_INTERVAL", "500ms")
        .env("WEIM_LIMITS_MAX_MESSAGE", "4KiB")
        .start();
    let account = node.new_account();

    // protocol: an unmasked frame.
    let mut ws = node.raw_ws();
    let _ = ws.try_send_bytes(&encode_frame(true, 0, OP_TEXT, None, b"{}"));
    assert_eq!(ws.expect_close(), CLOSE_PROTOCOL);
    node.wait_metric(&closes("protocol"), 1.0);

    // too_big: a message over max_message.
    let mut ws = node.raw_ws();
    let _ = ws.try_send_bytes(&client_frame(true, OP_TEXT, &[b'a'; 5000]));
    assert_eq!(ws.expect_close(), CLOSE_TOO_BIG);
    node.wait_metric(&closes("too_big"), 1.0);

    // auth_timeout: no sign-in.
    let mut ws = node.raw_ws();
    assert_eq!(ws.expect_close(), CLOSE_POLICY);
    node.wait_metric(&closes("auth_timeout"), 1.0);

    // idle: signed in, then silent (pings not answered).
    let mut ws = node.raw_ws();
    ws.send_json(&json!({"Cmd": 3, "Body": account.token}));
    assert_system_frame(&ws.recv_json(), 4);
    assert!(ws.wait_closed(Duration::from_secs(8)).is_some());
    node.wait_metric(&closes("idle"), 1.0);

    // client: the client closes.
    let mut ws = node.ws_signed_in(&account.token);
    ws.close(CLOSE_NORMAL);
    node.wait_metric(&closes("client"), 1.0);
}

// ---------------------------------------------------------------------------
// Slow reader
// ---------------------------------------------------------------------------

#[test]
fn slow_reader_is_closed_over_max_pending_bytes_while_others_keep_receiving() {
    let node = Node::builder()
        .env("WEIM_LIMITS_MAX_PENDING_BYTES", "64KiB")
        .env("WEIM_LIMITS_MAX_BODY", "1MiB")
        .start();
    let reader = node.new_account();
    let sleeper = node.new_account();

    let mut normal = node.ws_signed_in(&reader.token);
    // Never reads after signing in, with a receive buffer as small as the
    // kernel allows.
    let mut slow = Ws::over(node.addr, tcp_connect_small_rcvbuf(node.addr));
    slow.sign_in(&sleeper.token);

    let padding = "x".repeat(200 * 1024);
    let start = Instant::now();
    let mut rounds = 0;
    let mut dropped = false;
    while rounds < 300 && start.elapsed() < Duration::from_secs(30) {
        rounds += 1;
        let body = format!("{rounds:05}-{padding}");
        let local = node.send_to_all(Some(&body));
        assert!((1..=2).contains(&local), "round {rounds}: local {local}");
        let push = normal.recv_json();
        assert_server_frame(&push, -1);
        let got = push["Body"].as_str().unwrap_or_default();
        assert!(
            got == body,
            "round {rounds}: the normal client got {} bytes starting {:?}",
            got.len(),
            &got[..got.len().min(16)]
        );
        if node.metrics().value("weim_slow_consumer_drops_total") >= 1.0 {
            dropped = true;
            break;
        }
    }
    assert!(
        dropped,
        "no slow-consumer drop after {rounds} rounds in {:?}",
        start.elapsed()
    );
    node.wait_metric(&closes("slow_consumer"), 1.0);
    assert!(
        wait_until(Duration::from_secs(5), || node.status()["authenticated"]
            == 1),
        "the slow reader is still registered: {}",
        node.status()
    );

    // The normal client goes on receiving every round.
    for extra in 1..=3 {
        let body = format!("after-{extra}");
        assert_eq!(node.send_to_all(Some(&body)), 1);
        let push = normal.recv_json();
        assert_eq!(push["Body"], body.as_str());
    }

    // The slow reader's connection has ended: what it finds after the
    // frames already in flight is the end.
    assert!(
        slow.wait_closed(Duration::from_secs(20)).is_some(),
        "the slow reader's connection is still open"
    );
}

// ---------------------------------------------------------------------------
// SIGTERM
// ---------------------------------------------------------------------------

#[test]
fn sigterm_closes_websockets_with_1001_and_exits_0() {
    let mut node = Node::start();
    let account = node.new_account();
    let mut signed_in = node.ws_signed_in(&account.token);
    let mut pending = node.raw_ws();

    node.sigterm();
    let start = Instant::now();

    assert_eq!(
        signed_in.expect_close(Duration::from_secs(10)),
        CLOSE_GOING_AWAY
    );
    assert_eq!(pending.expect_close(), CLOSE_GOING_AWAY);

    let status = node
        .wait_exit(Duration::from_secs(10).saturating_sub(start.elapsed()))
        .expect("still running 10 s after SIGTERM");
    assert_eq!(status.code(), Some(0), "exit status {status}");
}
