//! Accounts and sign-in: register, login, `user/me`, logout, login
//! throttling, WebSocket sign-in (Cmd 3 → 4 / 2), the auth and idle
//! deadlines, and several devices of one user (issue 2 points 8 and 9,
//! PROTOCOL §1.2, §1.3, §2.1).
//!
//! The flows that touch the store run on SQLite and on MariaDB: see the
//! `sqlite` and `mariadb` modules at the end.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------
// On both stores
// ---------------------------------------------------------------------------

fn register_then_login_return_the_same_user(store: Store) {
    let node = Node::start_on(store);
    let name = unique_name("reg");

    let registered = node.register(&name);
    let logged_in = node.login(&name);
    assert_eq!(registered.id, logged_in.id);

    // Both tokens are good.
    for token in [&registered.token, &logged_in.token] {
        let me = node.me(token);
        assert_eq!(me["code"], CODE_OK, "{me}");
        assert_eq!(me["data"]["user"]["id"], registered.id, "{me}");
    }

    // A second user gets another id.
    let other = node.new_account();
    assert_ne!(other.id, registered.id);
}

fn taken_username_is_refused(store: Store) {
    let node = Node::start_on(store);
    let name = unique_name("dup");
    node.register(&name);
    let again = node.register_raw(&name, "Another123");
    assert_eq!(again["code"], CODE_FAIL, "{again}");
    assert_eq!(again["msg"], MSG_USER_EXISTS, "{again}");
    // The first password still holds.
    node.login(&name);
}

fn unknown_user_and_wrong_password_are_refused(store: Store) {
    let node = Node::start_on(store);
    let name = unique_name("who");
    let reply = node.login_raw(&name, PASSWORD);
    assert_eq!(reply["code"], CODE_FAIL, "{reply}");
    assert_eq!(reply["msg"], MSG_NO_SUCH_USER, "{reply}");

    node.register(&name);
    let reply = node.login_raw(&name, "Wrong12345");
    assert_eq!(reply["code"], CODE_FAIL, "{reply}");
    assert_eq!(reply["msg"], MSG_WRONG_PASSWORD, "{reply}");
}

fn user_me_returns_the_profile_and_a_fresh_token(store: Store) {
    let node = Node::start_on(store);
    let account = node.new_account();
    let me = node.me(&account.token);
    assert_eq!(me["code"], CODE_OK, "{me}");
    let user = &me["data"]["user"];
    assert_eq!(user["id"], account.id, "{me}");
    assert_eq!(user["username"], account.username.as_str(), "{me}");
    for key in ["nickname", "avatar", "sex", "status", "realname_verified"] {
        assert!(
            user.get(key).is_some_and(|v| !v.is_null()),
            "user.{key} missing: {me}"
        );
    }
    // data.t is a working token too.
    let refreshed = me["data"]["t"].as_str().expect("data.t").to_string();
    let again = node.me(&refreshed);
    assert_eq!(again["code"], CODE_OK, "{again}");
    assert_eq!(again["data"]["user"]["id"], account.id);
}

fn logout_revokes_the_token(store: Store) {
    let node = Node::start_on(store);
    let account = node.new_account();
    assert_eq!(node.me(&account.token)["code"], CODE_OK);

    let bye = node.api_as(&account.token, "/api/v1/logout", &[]);
    assert_eq!(bye["code"], CODE_OK, "{bye}");

    let me = node.me(&account.token);
    assert_eq!(me["code"], CODE_AUTH, "revoked token still accepted: {me}");

    let mut ws = node.ws();
    ws.send_json(&json!({"Cmd": 3, "Body": account.token}));
    let reply = ws.recv_json();
    assert_system_frame(&reply, 2);
    assert_eq!(reply["Body"], WS_AUTH_FAILED, "{reply}");

    // Logging in again, even within the same second, gives a token that
    // works.
    let again = node.login(&account.username);
    assert_eq!(node.me(&again.token)["code"], CODE_OK);
    ws.sign_in(&again.token);
}

fn websocket_sign_in_flow(store: Store) {
    let node = Node::start_on(store);
    let name = unique_name("ws");
    node.register(&name);
    let account = node.login(&name);

    let mut ws = node.ws();
    ws.send_json(&json!({"Cmd": 3, "Body": account.token}));
    let reply = ws.recv_json();
    assert_system_frame(&reply, 4);
    assert_eq!(reply["Body"], WS_AUTH_OK);
    assert_eq!(reply["Id"], 0);

    // App heartbeat.
    ws.send_json(&json!({"Cmd": 30}));
    assert_system_frame(&ws.recv_json(), 31);

    // And the connection receives deliveries.
    assert_eq!(node.send_to_all(Some("hello")), 1);
    let push = ws.recv_json();
    assert_server_frame(&push, -1);
    assert_eq!(push["Body"], "hello");
}

on_both_stores!(
    register_then_login_return_the_same_user,
    taken_username_is_refused,
    unknown_user_and_wrong_password_are_refused,
    user_me_returns_the_profile_and_a_fresh_token,
    logout_revokes_the_token,
    websocket_sign_in_flow,
);

// ---------------------------------------------------------------------------
// REST validation and tokens
// ---------------------------------------------------------------------------

fn assert_refused(reply: &Value, msg: &str) {
    assert_eq!(reply["code"], CODE_FAIL, "{reply}");
    assert_eq!(reply["msg"], msg, "{reply}");
}

#[test]
fn register_validation_texts() {
    let node = Node::start();
    let cases: &[(&str, &str, &str)] = &[
        ("", PASSWORD, MSG_ENTER_USERNAME),
        ("abcde", PASSWORD, MSG_USERNAME_LENGTH),
        ("abcdefghijklmnopqrstu", PASSWORD, MSG_USERNAME_LENGTH),
        ("abcdef", "", MSG_ENTER_PASSWORD),
        ("abcdef", "12345", MSG_PASSWORD_LENGTH),
        ("abcdef", "123456789012345678901", MSG_PASSWORD_LENGTH),
        ("张三abcdef", PASSWORD, MSG_NO_HAN),
        ("abcdef", "密码abcdef", MSG_NO_HAN),
    ];
    for (username, password, msg) in cases {
        let reply = node.register_raw(username, password);
        assert_refused(&reply, msg);
    }
    // Missing parameters are the same as empty ones.
    assert_refused(&node.api("/api/v1/register", &[]), MSG_ENTER_USERNAME);
    assert_refused(
        &node.api("/api/v1/register", &[("username", "abcdef")]),
        MSG_ENTER_PASSWORD,
    );

    // The bounds themselves are fine.
    node.register("abcdef");
    node.register("abcdefghijklmnopqrst");
    let reply = node.register_raw("abcdefg", "123456");
    assert_eq!(reply["code"], CODE_OK, "{reply}");
    let reply = node.register_raw("abcdefgh", "12345678901234567890");
    assert_eq!(reply["code"], CODE_OK, "{reply}");
}

#[test]
fn login_validation_texts() {
    let node = Node::start();
    let cases: &[(&str, &str, &str)] = &[
        ("", PASSWORD, MSG_ENTER_USERNAME),
        ("abcde", PASSWORD, MSG_USERNAME_LENGTH),
        ("abcdefghijklmnopqrstu", PASSWORD, MSG_USERNAME_LENGTH),
        ("abcdef", "", MSG_ENTER_PASSWORD),
        ("abcdef", "12345", MSG_PASSWORD_LENGTH),
        ("abcdef", "123456789012345678901", MSG_PASSWORD_LENGTH),
        ("张三abcdef", PASSWORD, MSG_NO_HAN),
    ];
    for (username, password, msg) in cases {
        let reply = node.login_raw(username, password);
        assert_refused(&reply, msg);
    }
}

#[test]
fn register_and_login_accept_json_bodies() {
    let node = Node::start();
    let name = unique_name("json");
    let params = json!({"username": name, "password": PASSWORD});

    let reply = node
        .request(&Request::post("/api/v1/register").json(&params))
        .api();
    let registered = Account::from_sign_in(&name, &reply);

    let reply = node
        .request(&Request::post("/api/v1/login").json(&params))
        .api();
    let logged_in = Account::from_sign_in(&name, &reply);
    assert_eq!(registered.id, logged_in.id);

    // Validation applies to JSON bodies alike.
    let reply = node
        .request(&Request::post("/api/v1/login").json(&json!({"username": name})))
        .api();
    assert_refused(&reply, MSG_ENTER_PASSWORD);
}

#[test]
fn token_carries_id_at_and_exp_of_token_ttl() {
    let node = Node::builder().env("WEIM_AUTH_TOKEN_TTL", "1h").start();
    let account = node.new_account();
    let claims = jwt_claims(&account.token);
    assert_eq!(claims["id"], account.id, "{claims}");
    let at = claims["at"].as_i64().expect("at");
    let exp = claims["exp"].as_i64().expect("exp");
    assert!(
        (at - now_secs()).abs() <= 60,
        "at {at} is not now: {claims}"
    );
    assert!((exp - at - 3600).abs() <= 2, "exp − at ≠ 1h: {claims}");
}

#[test]
fn missing_garbage_forged_and_expired_tokens_are_1001() {
    let node = Node::start();
    let account = node.new_account();
    let claims = jwt_claims(&account.token);

    // No token at all.
    let reply = node.api("/api/v1/user/me", &[]);
    assert_eq!(reply["code"], CODE_AUTH, "no token: {reply}");

    let mut expired = claims.clone();
    expired["at"] = json!(now_secs() - 7200);
    expired["exp"] = json!(now_secs() - 3600);
    let mut other_user = claims.clone();
    other_user["id"] = json!(account.id + 1);
    let parts: Vec<&str> = account.token.split('.').collect();
    let alg_none = format!(
        "{}.{}.",
        base64url(br#"{"alg":"none","typ":"JWT"}"#),
        parts[1]
    );
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        base64url(other_user.to_string().as_bytes()),
        parts[2]
    );

    let bad: Vec<(&str, String)> = vec![
        ("empty", String::new()),
        ("garbage", "garbage".into()),
        ("three dots", "a.b.c".into()),
        ("not base64", "%%%.@@@.###".into()),
        ("forged secret", sign_jwt(&claims, "not-the-secret")),
        ("expired", sign_jwt(&expired, JWT_SECRET)),
        ("alg none", alg_none),
        ("tampered payload", tampered),
        (
            "truncated",
            account.token[..account.token.len() - 3].to_string(),
        ),
    ];
    for (what, token) in &bad {
        let resp = node.request(
            &Request::post("/api/v1/user/me")
                .login_token(token)
                .form(&[]),
        );
        assert_eq!(resp.status, 200, "{what}: HTTP {}", resp.status);
        let reply = resp.envelope();
        assert_eq!(reply["code"], CODE_AUTH, "{what}: {reply}");
    }

    // The real one works (the cases above failed for their own reason).
    assert_eq!(node.me(&account.token)["code"], CODE_OK);

    // The WebSocket refuses the expired and the forged token alike.
    let mut ws = node.ws();
    for token in [
        sign_jwt(&expired, JWT_SECRET),
        sign_jwt(&claims, "not-the-secret"),
    ] {
        ws.send_json(&json!({"Cmd": 3, "Body": token}));
        let reply = ws.recv_json();
        assert_system_frame(&reply, 2);
        assert_eq!(reply["Body"], WS_AUTH_FAILED, "{reply}");
    }
}

// ---------------------------------------------------------------------------
// Login throttling
// ---------------------------------------------------------------------------

#[test]
fn repeated_failed_logins_for_one_user_are_throttled_until_the_window_passes() {
    // The wait outlasts the test; the window ends it.
    let node = Node::builder()
        .env("WEIM_AUTH_LOGIN_FAIL_LIMIT_USER", "3")
        .env("WEIM_AUTH_LOGIN_FAIL_WINDOW", "2s")
        .env("WEIM_AUTH_FAIL_DELAY", "1m")
        .start();
    let victim = node.new_account();
    let bystander = node.new_account();

    for _ in 0..3 {
        let reply = node.login_raw(&victim.username, "Wrong12345");
        assert_refused(&reply, MSG_WRONG_PASSWORD);
    }
    // Now even the right password is refused from this address, as is a
    // wrong one.
    assert_refused(
        &node.login_raw(&victim.username, PASSWORD),
        MSG_TOO_MANY_FAILURES,
    );
    assert_refused(
        &node.login_raw(&victim.username, "Wrong12345"),
        MSG_TOO_MANY_FAILURES,
    );
    // Other users are not affected.
    node.login(&bystander.username);

    // Once the window has passed, the right password works again.
    thread::sleep(Duration::from_millis(3000));
    node.login(&victim.username);
}

#[test]
fn repeated_failed_logins_from_one_address_are_throttled() {
    let node = Node::builder()
        .env("WEIM_AUTH_LOGIN_FAIL_LIMIT_USER", "100")
        .env("WEIM_AUTH_LOGIN_FAIL_LIMIT_IP", "4")
        .env("WEIM_AUTH_LOGIN_FAIL_WINDOW", "1m")
        .env("WEIM_AUTH_FAIL_DELAY", "1m")
        .start();
    let accounts: Vec<Account> = (0..5).map(|_| node.new_account()).collect();
    for account in &accounts[..4] {
        let reply = node.login_raw(&account.username, "Wrong12345");
        assert_refused(&reply, MSG_WRONG_PASSWORD);
    }
    assert_refused(
        &node.login_raw(&accounts[4].username, PASSWORD),
        MSG_TOO_MANY_FAILURES,
    );
}

// ---------------------------------------------------------------------------
// WebSocket sign-in
// ---------------------------------------------------------------------------

#[test]
fn bad_token_answers_cmd2_and_the_client_may_retry() {
    let node = Node::start();
    let account = node.new_account();
    let mut ws = node.ws();
    for token in ["", "garbage", "a.b.c"] {
        ws.send_json(&json!({"Cmd": 3, "Body": token}));
        let reply = ws.recv_json();
        assert_system_frame(&reply, 2);
        assert_eq!(reply["Body"], WS_AUTH_FAILED, "{reply}");
    }
    ws.sign_in(&account.token);
}

#[test]
fn commands_before_sign_in_answer_not_signed_in() {
    let node = Node::start();
    let account = node.new_account();
    let mut ws = node.ws();
    for message in [
        json!({"Cmd": 20, "Ope": 0, "ToId": 1, "Type": 0, "Body": "hi"}),
        json!({"Cmd": 22, "Body": "5"}),
        json!({"Cmd": 12345}),
    ] {
        ws.send_json(&message);
        let reply = ws.recv_json();
        assert_system_frame(&reply, 2);
        assert_eq!(reply["Body"], WS_NOT_SIGNED_IN, "after {message}: {reply}");
    }
    // Still open, and signing in works.
    ws.sign_in(&account.token);
}

#[test]
fn non_json_answers_bad_format_and_the_connection_lives() {
    let node = Node::start();
    let account = node.new_account();
    let mut ws = node.ws();
    for text in ["hello", "{\"Cmd\":", "{Cmd:3}"] {
        ws.send_text(text);
        let reply = ws.recv_json();
        assert_system_frame(&reply, 2);
        assert_eq!(reply["Body"], WS_BAD_FORMAT, "after {text:?}: {reply}");
    }
    ws.sign_in(&account.token);
    // Signed in, the same.
    ws.send_text("still not json");
    let reply = ws.recv_json();
    assert_system_frame(&reply, 2);
    assert_eq!(reply["Body"], WS_BAD_FORMAT, "{reply}");
    ws.send_json(&json!({"Cmd": 30}));
    assert_system_frame(&ws.recv_json(), 31);
}

#[test]
fn cmd_as_a_numeric_string_and_keys_in_any_case_are_accepted() {
    let node = Node::start();
    let account = node.new_account();
    let token = account.token.as_str();
    for message in [
        json!({"Cmd": "3", "Body": token}),
        json!({"cmd": 3, "body": token}),
        json!({"CMD": "3", "BoDy": token, "Unknown": [1, 2, 3]}),
    ] {
        let mut ws = node.ws();
        ws.send_json(&message);
        let reply = ws.recv_json();
        assert_system_frame(&reply, 4);
        assert_eq!(reply["Body"], WS_AUTH_OK, "after {message}: {reply}");
    }
}

#[test]
fn unknown_cmd_after_sign_in_is_ignored_and_the_connection_lives() {
    // As the old server: no answer at all (old clients' heartbeats).
    let node = Node::start();
    let account = node.new_account();
    let mut ws = node.ws_signed_in(&account.token);
    ws.send_json(&json!({"Cmd": 999, "Body": "?"}));
    ws.expect_silence(QUIET);
    ws.send_json(&json!({"Cmd": 30}));
    assert_system_frame(&ws.recv_json(), 31);
}

#[test]
fn app_ping_cmd30_answers_cmd31() {
    let node = Node::start();
    let account = node.new_account();
    let mut ws = node.ws_signed_in(&account.token);
    for _ in 0..3 {
        ws.send_json(&json!({"Cmd": 30}));
        let pong = ws.recv_json();
        assert_system_frame(&pong, 31);
        assert_eq!(pong["Body"], "", "{pong}");
    }
    // The string form too.
    ws.send_json(&json!({"cmd": "30"}));
    assert_system_frame(&ws.recv_json(), 31);
}

// ---------------------------------------------------------------------------
// Deadlines
// ---------------------------------------------------------------------------

#[test]
fn no_sign_in_within_auth_timeout_closes_with_1008() {
    let node = Node::builder().env("WEIM_AUTH_AUTH_TIMEOUT", "1s").start();
    let mut ws = node.raw_ws();
    let start = Instant::now();
    ws.set_read_timeout(Duration::from_secs(8));
    assert_eq!(ws.expect_close(), CLOSE_POLICY);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took <= Duration::from_secs(6),
        "closed after {took:?} with a 1 s auth timeout"
    );
}

#[test]
fn activity_without_sign_in_does_not_extend_the_auth_deadline() {
    let node = Node::builder().env("WEIM_AUTH_AUTH_TIMEOUT", "1s").start();
    let mut ws = node.raw_ws();
    let start = Instant::now();
    ws.set_read_timeout(Duration::from_millis(300));
    // Chatter every 250 ms (failed sign-ins and pings), for at most 6 s.
    let mut closed = None;
    while start.elapsed() < Duration::from_secs(6) {
        let mut chatter = client_frame(true, OP_TEXT, br#"{"Cmd":3,"Body":"bad"}"#);
        chatter.extend(client_frame(true, OP_PING, b"hi"));
        // A write may fail once the server has closed: the close frame is
        // still there to read.
        let wait = if ws.try_send_bytes(&chatter).is_ok() {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(2)
        };
        closed = ws.wait_closed(wait);
        if closed.is_some() {
            break;
        }
    }
    assert_eq!(
        closed,
        Some(Closed::Code(CLOSE_POLICY)),
        "after {:?}",
        start.elapsed()
    );
}

#[test]
fn signed_in_connection_outlives_the_auth_timeout() {
    let node = Node::builder().env("WEIM_AUTH_AUTH_TIMEOUT", "1s").start();
    let account = node.new_account();
    let mut ws = node.ws_signed_in(&account.token);
    thread::sleep(Duration::from_millis(1800));
    ws.send_json(&json!({"Cmd": 30}));
    assert_system_frame(&ws.recv_json(), 31);
}

#[test]
fn silent_connection_is_closed_after_idle_timeout() {
    // Without keepalive pings (tests/keepalive.rs has them).
    let node = Node::builder()
        .env("WEIM_LIMITS_IDLE_TIMEOUT", "1s")
        .env("WEIM_LIMITS_PING_INTERVAL", "0s")
        .start();
    let account = node.new_account();
    let mut ws = node.raw_ws();
    ws.send_json(&json!({"Cmd": 3, "Body": account.token}));
    assert_system_frame(&ws.recv_json(), 4);

    // Silent from now on: no frame of ours, not even a pong.
    let start = Instant::now();
    let closed = ws.wait_closed(Duration::from_secs(8));
    let took = start.elapsed();
    assert!(closed.is_some(), "still open {took:?} after going silent");
    assert!(took >= Duration::from_millis(500), "closed after {took:?}");
}

#[test]
fn active_connection_is_not_closed_as_idle() {
    let node = Node::builder()
        .env("WEIM_LIMITS_IDLE_TIMEOUT", "1s")
        .start();
    let account = node.new_account();
    let mut ws = node.raw_ws();
    ws.send_json(&json!({"Cmd": 3, "Body": account.token}));
    assert_system_frame(&ws.recv_json(), 4);
    // 3 s of app pings every 300 ms: each one answered.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        ws.send_json(&json!({"Cmd": 30}));
        assert_system_frame(&ws.recv_json(), 31);
        thread::sleep(Duration::from_millis(300));
    }
}

// ---------------------------------------------------------------------------
// Several devices of one user
// ---------------------------------------------------------------------------

fn assert_broadcast(push: &Value, body: &str) {
    assert_server_frame(push, -1);
    assert_eq!(push["FromId"], 0, "{push}");
    assert_eq!(push["ToId"], 0, "{push}");
    assert_eq!(push["Ope"], 0, "{push}");
    assert_eq!(push["Type"], 0, "{push}");
    assert_eq!(push["Body"], body, "{push}");
}

#[test]
fn every_device_of_a_user_receives_a_broadcast() {
    let node = Node::start();
    let alice = node.new_account();
    let bob = node.new_account();
    let mut alice_devices: Vec<Ws> = (0..3).map(|_| node.ws_signed_in(&alice.token)).collect();
    let mut bob_device = node.ws_signed_in(&bob.token);
    let mut stranger = node.raw_ws();

    assert_eq!(node.send_to_all(Some("设备广播")), 4);
    for device in &mut alice_devices {
        assert_broadcast(&device.recv_json(), "设备广播");
    }
    assert_broadcast(&bob_device.recv_json(), "设备广播");

    // The connection that never signed in got nothing: the first frame it
    // sees is the pong to its own ping.
    stranger.send_bytes(&client_frame(true, OP_PING, b"anyone?"));
    let first = stranger.recv_frame();
    assert_eq!(
        first.opcode, OP_PONG,
        "unauthenticated connection got {first:?}"
    );

    // A device that leaves does not unregister the others.
    alice_devices.pop().unwrap().close(CLOSE_NORMAL);
    assert!(wait_until(Duration::from_secs(5), || {
        node.status()["authenticated"] == 3
    }));
    assert_eq!(node.send_to_all(Some("second")), 3);
    for device in &mut alice_devices {
        assert_broadcast(&device.recv_json(), "second");
    }
    assert_broadcast(&bob_device.recv_json(), "second");
}

#[test]
fn over_conns_per_user_the_oldest_is_closed_with_4000() {
    let node = Node::builder()
        .env("WEIM_LIMITS_CONNS_PER_USER", "2")
        .start();
    let alice = node.new_account();
    let mut oldest = node.ws_signed_in(&alice.token);
    let mut second = node.ws_signed_in(&alice.token);
    let mut newest = node.ws_signed_in(&alice.token);

    assert_eq!(oldest.expect_close(Duration::from_secs(5)), CLOSE_REPLACED);

    assert!(wait_until(Duration::from_secs(5), || {
        node.status()["authenticated"] == 2
    }));
    let status = node.status();
    assert_eq!(status["users"], 1, "{status}");

    assert_eq!(node.send_to_all(None), 2);
    assert_broadcast(&second.recv_json(), BROADCAST_DEFAULT_BODY);
    assert_broadcast(&newest.recv_json(), BROADCAST_DEFAULT_BODY);
}
