//! Sessions: a login starts a session, refreshed tokens (`data.t`) belong
//! to it, logout ends it on every node (its tokens refused, its WebSockets
//! closed with 4001, also after a restart), it ends at its absolute end
//! (`auth.session_ttl`) however often it was refreshed, and tokens of
//! users that do not exist are refused (banned users: tests/server_api.rs) (docs/API.md,
//! "Sessions").
//!
//! The cluster test needs `TEST_ETCD_ENDPOINTS`, `TEST_REDIS_URL` and
//! `TEST_MYSQL_URL` (as tests/cluster.rs).

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// weim: the connection's session ended.
const CLOSE_LOGGED_OUT: u16 = 4001;
/// How long a test waits for a close or for news from another node.
const WAIT: Duration = Duration::from_secs(10);

fn refreshed(node: &Node, token: &str) -> String {
    let me = node.me(token);
    assert_eq!(me["code"], CODE_OK, "user/me: {me}");
    me["data"]["t"].as_str().expect("data.t").to_string()
}

fn logout(node: &Node, token: &str) {
    let bye = node.api_as(token, "/api/v1/logout", &[]);
    assert_eq!(bye["code"], CODE_OK, "logout: {bye}");
}

/// A sign-in with `token` on a fresh WebSocket is refused with Cmd 2.
#[track_caller]
fn assert_sign_in_refused(node: &Node, token: &str) {
    let mut ws = node.ws();
    ws.send_json(&json!({"Cmd": 3, "Body": token}));
    let reply = ws.recv_json();
    assert_system_frame(&reply, 2);
    assert_eq!(reply["Body"], WS_AUTH_FAILED, "{reply}");
}

/// The connection still answers an app ping: it is open and signed in.
#[track_caller]
fn assert_alive(ws: &mut Ws) {
    ws.send_json(&json!({"Cmd": 30}));
    assert_system_frame(&ws.recv_json(), 31);
}

/// A token signed with the nodes' key for `uid`, of a made-up session.
fn token_for(uid: u64) -> String {
    sign_jwt(
        &json!({
            "id": uid,
            "at": now_secs(),
            "exp": now_secs() + 3600,
            "sid": format!("{:016x}", fresh_u64() | 1),
            "end": now_secs() + 3600,
        }),
        JWT_SECRET,
    )
}

// ---------------------------------------------------------------------------
// One node
// ---------------------------------------------------------------------------

fn logout_ends_the_session_and_closes_its_sockets(store: Store) {
    let node = Node::start_on(store);
    // Two sessions of one user: the register's and a login's.
    let first = node.new_account();
    let second = node.login(&first.username);
    let renewed = refreshed(&node, &second.token);
    let mut same_session = node.ws_signed_in(&renewed);
    let mut other_session = node.ws_signed_in(&first.token);

    logout(&node, &second.token);

    // Every token of the session is refused: the one logged out with and
    // the one refreshed before.
    for token in [&second.token, &renewed] {
        let me = node.me(token);
        assert_eq!(me["code"], CODE_AUTH, "token of a revoked session: {me}");
        assert_sign_in_refused(&node, token);
    }
    // Its WebSocket is closed with 4001; the other session's stays.
    assert_eq!(same_session.expect_close(WAIT), CLOSE_LOGGED_OUT);
    assert_alive(&mut other_session);
    assert_eq!(node.me(&first.token)["code"], CODE_OK);
    assert!(
        node.metrics()
            .value("weim_closes_total{reason=\"logged_out\"}")
            >= 1.0
    );
    assert!(
        node.metrics()
            .value("weim_auth_refusals_total{reason=\"revoked\"}")
            >= 4.0
    );
}

on_both_stores!(logout_ends_the_session_and_closes_its_sockets);

#[test]
fn revocation_survives_a_restart() {
    let dir = tempfile::tempdir().expect("data directory");
    let node = Node::builder().data_dir(dir.path()).start();
    let account = node.new_account();
    let renewed = refreshed(&node, &account.token);
    logout(&node, &account.token);
    assert_eq!(node.me(&renewed)["code"], CODE_AUTH);
    drop(node);

    let node = Node::builder().data_dir(dir.path()).start();
    assert_eq!(node.metrics().value("weim_revoked_sessions"), 1.0);
    for token in [&account.token, &renewed] {
        let me = node.me(token);
        assert_eq!(me["code"], CODE_AUTH, "revoked before the restart: {me}");
        assert_sign_in_refused(&node, token);
    }
    // A new login is a new session.
    let again = node.login(&account.username);
    assert_eq!(node.me(&again.token)["code"], CODE_OK);
    node.ws_signed_in(&again.token);
}

#[test]
fn refreshing_never_extends_a_session_past_session_ttl() {
    let node = Node::builder()
        .env("WEIM_AUTH_SESSION_TTL", "3s")
        .env("WEIM_AUTH_TOKEN_TTL", "1h")
        .start();
    let account = node.new_account();
    let claims = jwt_claims(&account.token);
    let end = claims["end"].as_i64().expect("end claim");
    assert!(end - now_secs() <= 3, "session end {end}: {claims}");
    assert_eq!(claims["exp"], end, "exp past the session's end: {claims}");
    let mut ws = node.ws_signed_in(&account.token);

    // Refreshed while the session lasts: the same session and end.
    let renewed = refreshed(&node, &account.token);
    let renewed_claims = jwt_claims(&renewed);
    assert_eq!(renewed_claims["sid"], claims["sid"], "{renewed_claims}");
    assert_eq!(renewed_claims["end"], end, "{renewed_claims}");
    assert!(
        renewed_claims["exp"].as_i64() <= Some(end),
        "{renewed_claims}"
    );

    // Past the end: the fresh token is refused and the socket closed.
    assert!(wait_until(Duration::from_secs(8), || now_secs() > end));
    let me = node.me(&renewed);
    assert_eq!(me["code"], CODE_AUTH, "token past its session's end: {me}");
    assert_eq!(me["msg"], "登录状态已过期，请重新登录", "{me}");
    assert_sign_in_refused(&node, &renewed);
    assert_eq!(ws.expect_close(WAIT), CLOSE_LOGGED_OUT);
    let m = node.metrics();
    assert!(m.value("weim_auth_refusals_total{reason=\"session_ended\"}") >= 2.0);
    assert_eq!(m.value("weim_closes_total{reason=\"session_ended\"}"), 1.0);
    // A login starts a new session.
    let again = node.login(&account.username);
    assert_eq!(node.me(&again.token)["code"], CODE_OK);
}

#[test]
fn tokens_of_missing_users_are_refused_by_rest_and_sign_in() {
    let node = Node::start();
    let real = node.new_account();
    for uid in [0, 999_999_999, i64::MAX as u64, u64::MAX] {
        let token = token_for(uid);
        for path in ["/api/v1/user/me", "/api/v1/im/friend/list"] {
            let reply = node.api_as(&token, path, &[]);
            assert_eq!(reply["code"], CODE_AUTH, "uid {uid}, {path}: {reply}");
        }
        assert_sign_in_refused(&node, &token);
    }
    // A made-up session of a real user is a valid token (sessions are not
    // listed anywhere, only revoked ones): the refusals above were for
    // their users.
    let token = token_for(real.id as u64);
    assert_eq!(
        node.api_as(&token, "/api/v1/im/friend/list", &[])["code"],
        CODE_OK
    );
    node.ws_signed_in(&token);
    let m = node.metrics();
    assert!(m.value("weim_auth_refusals_total{reason=\"no_user\"}") >= 6.0);
    assert!(m.value("weim_auth_refusals_total{reason=\"invalid\"}") >= 6.0);
}

#[test]
fn tokens_without_a_session_are_refused() {
    let node = Node::start();
    let account = node.new_account();
    let legacy = sign_jwt(
        &json!({"id": account.id, "at": now_secs(), "exp": now_secs() + 3600}),
        JWT_SECRET,
    );
    assert_eq!(node.me(&legacy)["code"], CODE_AUTH);
    assert_sign_in_refused(&node, &legacy);
}

// ---------------------------------------------------------------------------
// Two nodes
// ---------------------------------------------------------------------------

#[track_caller]
fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().to_string(),
        _ => panic!("{name} is not set: this test needs real etcd, Redis and MariaDB"),
    }
}

fn servers(node: &Node) -> HashSet<String> {
    let reply: Value = node.admin(Request::get("/cluster")).api();
    reply["data"]["servers"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|s| s["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn logout_on_one_node_ends_the_session_on_another() {
    env("TEST_MYSQL_URL");
    let (etcd, redis) = (env("TEST_ETCD_ENDPOINTS"), env("TEST_REDIS_URL"));
    let base = unique_name("s");
    let ids = [format!("{base}-a"), format!("{base}-b")];
    let start = |id: &str| {
        Node::builder()
            .store(Store::Mysql)
            .cluster_mode()
            .env("WEIM_CLUSTER_ETCD", &etcd)
            .env("WEIM_CLUSTER_REDIS", &redis)
            .env("WEIM_CLUSTER_LEASE_TTL", "3s")
            .env("WEIM_CLUSTER_NODE_ID", id)
            .start()
    };
    let a = start(&ids[0]);
    let b = start(&ids[1]);
    for n in [&a, &b] {
        assert!(
            wait_until(Duration::from_secs(15), || {
                let s = servers(n);
                ids.iter().all(|id| s.contains(id))
            }),
            "{}: the nodes never saw each other",
            n.addr
        );
        // The bus is subscribed (kicks and revocations are heard).
        n.wait_metric("weim_bus_up", 1.0);
    }

    let first = a.new_account();
    let second = a.login(&first.username);
    let renewed = refreshed(&b, &second.token);
    let mut on_b = b.ws_signed_in(&renewed);
    let mut on_a = a.ws_signed_in(&second.token);
    let mut other_session = b.ws_signed_in(&first.token);

    logout(&a, &second.token);

    assert_eq!(on_a.expect_close(WAIT), CLOSE_LOGGED_OUT);
    assert_eq!(on_b.expect_close(WAIT), CLOSE_LOGGED_OUT);
    let mut last = Value::Null;
    assert!(
        wait_until(WAIT, || {
            last = b.me(&renewed);
            last["code"] == CODE_AUTH
        }),
        "node b still accepts the session's refreshed token: {last}"
    );
    assert_sign_in_refused(&b, &renewed);
    assert_alive(&mut other_session);
    assert_eq!(b.me(&first.token)["code"], CODE_OK);

    for n in [&a, &b] {
        n.sigterm();
    }
    let (mut a, mut b) = (a, b);
    a.wait_exit(Duration::from_secs(12));
    b.wait_exit(Duration::from_secs(12));
}
