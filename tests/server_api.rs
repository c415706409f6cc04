//! The server API (`/server/v1/*`) on one node, over real sockets: pushes
//! (Cmd 40), presence, messages sent for a bot or a system account, and
//! its refusals (keys, throttling, bad input). The same endpoints across
//! three nodes are in `tests/cluster/backend.rs`.

mod common;

use std::time::Duration;

use common::hooks::{server_call, server_ok, API_KEY};
use common::*;
use serde_json::{json, Value};

const CMD_SERVER_NOTICE: i64 = 40;
const CMD_FRIEND: i64 = 6;
const CMD_GROUP: i64 = 10;

fn node_on(store: Store) -> Node {
    Node::builder()
        .store(store)
        .env(
            "WEIM_HTTP_SERVER_API_KEYS",
            &format!("other-key-abcdefghijk,{API_KEY}"),
        )
        .start()
}

/// Asserts a server notice with `body`.
#[track_caller]
fn assert_notice_frame(frame: &Value, body: &str) {
    assert_eq!(frame["Cmd"], CMD_SERVER_NOTICE, "{frame}");
    assert_eq!(frame["Ope"], 2, "{frame}");
    assert_eq!(frame["Type"], 10, "{frame}");
    assert_eq!(frame["Body"], body, "{frame}");
}

fn pushes_reach_every_connection_of_the_users(store: Store) {
    let node = node_on(store);
    let (a, b, c) = (node.new_account(), node.new_account(), node.new_account());
    let mut a1 = node.ws_signed_in(&a.token);
    let mut a2 = node.ws_signed_in(&a.token);
    let mut b1 = node.ws_signed_in(&b.token);
    // A body may be JSON text: it arrives as the same string.
    let body = r#"{"kind":"promo","text":"你好 \"quoted\""}"#;
    let data = server_ok(
        &node,
        "push/users",
        &json!({"uids": [a.id, b.id, c.id, 999_999_999_999i64], "body": body}),
    );
    assert_eq!(data["online"], 2, "{data}");
    for ws in [&mut a1, &mut a2, &mut b1] {
        assert_notice_frame(&ws.recv_json(), body);
    }
    // c signs in later: a notice is not stored, nothing comes.
    let mut c1 = node.ws_signed_in(&c.token);
    assert_eq!(c1.recv_json_within(QUIET), None);

    // push/group: every member online.
    let created = node.api_as(
        &a.token,
        "/api/v1/im/group/create",
        &[("name", &unique_name("g"))],
    );
    let group = expect_ok(&created, "创建成功")["id"].as_i64().unwrap();
    let data = server_ok(
        &node,
        "push/group",
        &json!({"group_id": group, "body": "to the group"}),
    );
    assert_eq!(data["online"], 1, "{data}");
    assert_notice_frame(&a1.recv_json(), "to the group");
    assert_notice_frame(&a2.recv_json(), "to the group");
    assert_eq!(b1.recv_json_within(QUIET), None);
    let resp = server_call(
        &node,
        "push/group",
        Some(API_KEY),
        &json!({"group_id": 999_999_999_999i64, "body": "x"}),
    );
    assert_eq!(resp.assert_error(404)["code"], CODE_NOT_FOUND);

    // push/all: every signed-in connection of this node.
    let data = server_ok(&node, "push/all", &json!({"body": "to everyone"}));
    assert!(data["local"].as_i64().unwrap() >= 4, "{data}");
    for ws in [&mut a1, &mut a2, &mut b1, &mut c1] {
        let frame = recv_cmd(ws, CMD_SERVER_NOTICE);
        assert_notice_frame(&frame, "to everyone");
    }
}

fn online_is_answered_in_order(store: Store) {
    let node = node_on(store);
    let (a, b) = (node.new_account(), node.new_account());
    let _a1 = node.ws_signed_in(&a.token);
    let data = server_ok(
        &node,
        "users/online",
        &json!({"uids": [b.id, a.id, 424_242_424_242i64, a.id]}),
    );
    assert_eq!(data["online"], json!([false, true, false, true]));
}

fn messages_are_sent_for_the_backend(store: Store) {
    let node = node_on(store);
    let (bot, user, member) = (node.new_account(), node.new_account(), node.new_account());
    let mut u = node.ws_signed_in(&user.token);
    // Not friends: the backend's message still goes through, stored and
    // pushed like a user's.
    let cid = unique_name("cid");
    let send = json!({"from_uid": bot.id, "to_uid": user.id, "type": 0, "body": "from the bot", "cid": cid});
    let id = server_ok(&node, "messages/send", &send)["id"]
        .as_i64()
        .unwrap();
    assert!(id > 0);
    let frame = u.recv_json();
    assert_eq!(
        (
            &frame["Cmd"],
            &frame["FromId"],
            &frame["ToId"],
            &frame["Body"],
            &frame["Id"]
        ),
        (
            &json!(CMD_FRIEND),
            &json!(bot.id),
            &json!(user.id),
            &json!("from the bot"),
            &json!(id)
        ),
        "{frame}"
    );
    // The same cid again: the same id, not pushed twice.
    let again = server_ok(&node, "messages/send", &send)["id"]
        .as_i64()
        .unwrap();
    assert_eq!(again, id);
    assert_eq!(u.recv_json_within(QUIET), None);
    // Stored: the recipient's history has it.
    let history = node.api_as(
        &user.token,
        "/api/v1/im/chat/history",
        &[("peer", &bot.id.to_string())],
    );
    assert!(history.to_string().contains("from the bot"), "{history}");

    // A group the sender is not a member of.
    let created = node.api_as(
        &member.token,
        "/api/v1/im/group/create",
        &[("name", &unique_name("g"))],
    );
    let group = expect_ok(&created, "创建成功")["id"].as_i64().unwrap();
    let mut m = node.ws_signed_in(&member.token);
    let data = server_ok(
        &node,
        "messages/send",
        &json!({"from_uid": bot.id, "group_id": group, "type": 10, "body": "system notice"}),
    );
    let frame = m.recv_json();
    assert_eq!(frame["Cmd"], CMD_GROUP, "{frame}");
    assert_eq!(frame["Id"], data["id"], "{frame}");
    assert_eq!(frame["Type"], 10, "{frame}");

    // Unknown ids and bad combinations.
    for (body, status) in [
        (
            json!({"from_uid": 999_999_999_999i64, "to_uid": user.id, "body": "x"}),
            404,
        ),
        (
            json!({"from_uid": bot.id, "to_uid": 999_999_999_999i64, "body": "x"}),
            404,
        ),
        (
            json!({"from_uid": bot.id, "group_id": 999_999_999_999i64, "body": "x"}),
            404,
        ),
        (
            json!({"from_uid": bot.id, "to_uid": user.id, "group_id": group, "body": "x"}),
            400,
        ),
        (json!({"from_uid": bot.id, "body": "x"}), 400),
        (
            json!({"from_uid": bot.id, "to_uid": bot.id, "body": "x"}),
            400,
        ),
        (
            json!({"from_uid": bot.id, "to_uid": user.id, "body": ""}),
            400,
        ),
        (
            json!({"from_uid": bot.id, "to_uid": user.id, "type": 100, "body": "x"}),
            400,
        ),
    ] {
        let resp = server_call(&node, "messages/send", Some(API_KEY), &body);
        resp.assert_error(status);
    }
    assert_eq!(u.recv_json_within(QUIET), None);
}

on_both_stores!(
    pushes_reach_every_connection_of_the_users,
    online_is_answered_in_order,
    messages_are_sent_for_the_backend,
    disconnect_closes_every_socket_of_the_user,
    ban_refuses_the_user_until_it_ends,
);

#[test]
fn keys_are_required_and_wrong_ones_are_throttled() {
    let node = Node::builder()
        .env("WEIM_HTTP_SERVER_API_KEYS", API_KEY)
        // Wrong keys share the wrong Admin-Token allowance of an address:
        // one here, then a wait far longer than the test.
        .env("WEIM_HTTP_ADMIN_FAIL_LIMIT", "1")
        .env("WEIM_AUTH_FAIL_DELAY", "60s")
        .start();
    let body = json!({"uids": [1]});
    let missing = server_call(&node, "users/online", None, &body).assert_error(401);
    assert_eq!(missing["code"], CODE_AUTH);
    // Admin-Token and a user's token are not API keys.
    let admin = node.request(
        &Request::post("/server/v1/users/online")
            .header("Admin-Token", ADMIN_TOKEN)
            .json(&body),
    );
    assert_eq!(admin.assert_error(401)["code"], CODE_AUTH);
    let wrong = server_call(
        &node,
        "users/online",
        Some("test-server-api-key-012345678X"),
        &body,
    );
    assert_eq!(wrong.assert_error(401)["code"], CODE_AUTH);
    // A missing key is no guess; past the allowance the address is
    // refused, even with the right key (429, Retry-After).
    let throttled = server_call(&node, "users/online", Some(API_KEY), &body);
    assert_eq!(throttled.assert_error(429)["code"], CODE_AUTH);
    let m = node.metrics();
    assert_eq!(
        m.value(r#"weim_server_api_requests_total{outcome="bad_key"}"#),
        3.0
    );
    assert_eq!(
        m.value(r#"weim_server_api_requests_total{outcome="throttled"}"#),
        1.0
    );
    // Only POST.
    let get = node.request(&Request::get("/server/v1/users/online").header("Api-Key", API_KEY));
    assert_eq!(get.status, 405);
}

#[test]
fn without_keys_the_api_is_off() {
    let node = Node::start();
    let resp = server_call(&node, "users/online", Some(API_KEY), &json!({"uids": [1]}));
    assert_eq!(resp.status, 404);
}

#[test]
fn bad_input_is_refused_with_the_reason() {
    let node = Node::builder()
        .env("WEIM_HTTP_SERVER_API_KEYS", API_KEY)
        .env("WEIM_LIMITS_MAX_MESSAGE", "1KiB")
        .env("WEIM_LIMITS_MAX_BODY", "64KiB")
        .start();
    let a = node.new_account();
    let mut ws = node.ws_signed_in(&a.token);
    let call = |path: &str, body: &[u8]| {
        node.request(
            &Request::post(&format!("/server/v1/{path}"))
                .header("Api-Key", API_KEY)
                .body("application/json", body.to_vec()),
        )
    };
    for (path, body, needle) in [
        ("push/users", &b"{\"uids\":[1],"[..], "malformed JSON"),
        ("push/users", b"[1,2]", "malformed JSON"),
        ("push/users", b"{\"body\":\"x\"}", "uids"),
        (
            "push/users",
            b"{\"uids\":[-1],\"body\":\"x\"}",
            "malformed JSON",
        ),
        (
            "push/users",
            b"{\"uids\":[\"a\"],\"body\":\"x\"}",
            "malformed JSON",
        ),
        ("push/users", b"{\"uids\":[],\"body\":\"x\"}", "uids"),
        ("push/users", b"{\"uids\":[0],\"body\":\"x\"}", "uids"),
        ("push/users", b"{\"uids\":[1],\"body\":\"\"}", "body"),
        ("users/online", b"{\"uids\":[9223372036854775808]}", "uids"),
        (
            "push/group",
            b"{\"group_id\":\"x\",\"body\":\"b\"}",
            "malformed JSON",
        ),
    ] {
        let v = call(path, body).assert_error(400);
        assert_eq!(v["code"], CODE_FAIL, "{v}");
        assert!(v["msg"].as_str().unwrap().contains(needle), "{path} {v}");
    }
    // A push body over limits.max_message.
    let long = "x".repeat(1025);
    let v = server_call(
        &node,
        "push/users",
        Some(API_KEY),
        &json!({"uids": [a.id], "body": long}),
    )
    .assert_error(400);
    assert!(
        v["msg"].as_str().unwrap().contains("limits.max_message"),
        "{v}"
    );
    // A request body over limits.max_body: 413 before it is read.
    let huge = json!({"uids": [a.id], "body": "y".repeat(70 * 1024)});
    let resp = server_call(&node, "push/users", Some(API_KEY), &huge);
    assert_eq!(resp.status, 413, "{}", resp.text());
    // Unknown route.
    assert_eq!(call("push/nobody", b"{}").status, 404);
    assert_eq!(ws.recv_json_within(QUIET), None, "nothing was pushed");
    let m = node.metrics();
    assert!(m.value(r#"weim_server_api_requests_total{outcome="invalid"}"#) >= 11.0);
    // The node still serves.
    let data = server_ok(&node, "users/online", &json!({"uids": [a.id]}));
    assert_eq!(data["online"], json!([true]));
}

const CLOSE_DISCONNECTED: u16 = 4002;
const CLOSE_BANNED: u16 = 4003;
const BANNED_TEXT: &str = "账号已被封禁";

fn disconnect_closes_every_socket_of_the_user(store: Store) {
    let node = node_on(store);
    let (a, b) = (node.new_account(), node.new_account());
    let mut a1 = node.ws_signed_in(&a.token);
    let mut a2 = node.ws_signed_in(&a.token);
    let mut b1 = node.ws_signed_in(&b.token);
    server_ok(&node, "users/disconnect", &json!({"uid": a.id}));
    assert_eq!(a1.expect_close(IO_TIMEOUT), CLOSE_DISCONNECTED);
    assert_eq!(a2.expect_close(IO_TIMEOUT), CLOSE_DISCONNECTED);
    b1.send_json(&json!({"Cmd": 30}));
    recv_cmd(&mut b1, 31);
    // A code of the caller's choice; the user may sign in again.
    let mut a3 = node.ws_signed_in(&a.token);
    server_ok(
        &node,
        "users/disconnect",
        &json!({"uid": a.id, "code": 4100}),
    );
    assert_eq!(a3.expect_close(IO_TIMEOUT), 4100);
    for code in [999, 1001, 2999, 5000] {
        let resp = server_call(
            &node,
            "users/disconnect",
            Some(API_KEY),
            &json!({"uid": a.id, "code": code}),
        );
        resp.assert_error(400);
    }
}

/// Whether `account` is refused everywhere with the ban's text: login,
/// REST with its token, WebSocket sign-in.
#[track_caller]
fn assert_banned(node: &Node, account: &Account) {
    let login = node.login_raw(&account.username, PASSWORD);
    assert_eq!(
        (&login["code"], &login["msg"]),
        (&json!(CODE_AUTH), &json!(BANNED_TEXT)),
        "{login}"
    );
    let me = node.request(
        &Request::post("/api/v1/user/me")
            .login_token(&account.token)
            .form(&[]),
    );
    let me = me.envelope();
    assert_eq!(
        (&me["code"], &me["msg"]),
        (&json!(CODE_AUTH), &json!(BANNED_TEXT)),
        "{me}"
    );
    let mut ws = node.ws();
    ws.send_json(&json!({"Cmd": 3, "Body": account.token}));
    let reply = ws.recv_json();
    assert_eq!(
        (&reply["Cmd"], &reply["Body"]),
        (&json!(2), &json!(BANNED_TEXT)),
        "{reply}"
    );
}

fn ban_refuses_the_user_until_it_ends(store: Store) {
    let node = node_on(store);
    let (a, b) = (node.new_account(), node.new_account());
    let mut a1 = node.ws_signed_in(&a.token);
    let mut b1 = node.ws_signed_in(&b.token);
    let until = now_secs() + 3;
    server_ok(
        &node,
        "users/ban",
        &json!({"uid": a.id, "until": until, "reason": "spam"}),
    );
    assert_eq!(a1.expect_close(IO_TIMEOUT), CLOSE_BANNED);
    assert_banned(&node, &a);
    b1.send_json(&json!({"Cmd": 30}));
    recv_cmd(&mut b1, 31);
    assert!(
        node.metrics()
            .value(r#"weim_auth_refusals_total{reason="banned"}"#)
            >= 3.0
    );
    // After `until`: everything works again.
    assert!(wait_until(Duration::from_secs(10), || now_secs() > until));
    let login = node.login(&a.username);
    assert_eq!(node.me(&login.token)["code"], CODE_OK);
    let mut again = node.ws_signed_in(&a.token);
    again.send_json(&json!({"Cmd": 30}));
    recv_cmd(&mut again, 31);

    // Bad input.
    for (body, status) in [
        (json!({"uid": a.id, "until": now_secs() - 10}), 400),
        (json!({"uid": a.id, "until": -1}), 400),
        (json!({"uid": a.id, "reason": "r".repeat(256)}), 400),
        (json!({"uid": 999_999_999_999i64}), 404),
    ] {
        server_call(&node, "users/ban", Some(API_KEY), &body).assert_error(status);
    }
    server_call(
        &node,
        "users/unban",
        Some(API_KEY),
        &json!({"uid": 999_999_999_999i64}),
    )
    .assert_error(404);
}

#[test]
fn a_ban_for_ever_survives_a_restart_until_lifted() {
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        Node::builder()
            .data_dir(dir.path())
            .env("WEIM_HTTP_SERVER_API_KEYS", API_KEY)
            .start()
    };
    let node = start();
    let a = node.new_account();
    server_ok(&node, "users/ban", &json!({"uid": a.id, "until": 0}));
    assert_banned(&node, &a);
    drop(node);
    let node = start();
    assert_banned(&node, &a);
    server_ok(&node, "users/unban", &json!({"uid": a.id}));
    let login = node.login(&a.username);
    assert_eq!(node.me(&login.token)["code"], CODE_OK);
    node.ws_signed_in(&a.token);
}
