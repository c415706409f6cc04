//! Chat end to end (PROTOCOL §1.2 chat rows, §1.3 history and sync, §2.2
//! Cmd 6, 7, 10, 11, 21, §2.3 Cmd 20 and 22): messages are stored before
//! they are answered or pushed, reach every device of their recipients,
//! wait for offline users and arrive in order when they sign in, and survive
//! a crash of the node.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const SEND_USER: &str = "/api/v1/im/chat/send/user";
const SEND_GROUP: &str = "/api/v1/im/chat/send/group";
const WITHDRAW_USER: &str = "/api/v1/im/chat/withdraw/user";
const WITHDRAW_GROUP: &str = "/api/v1/im/chat/withdraw/group";
const HISTORY: &str = "/api/v1/im/chat/history";
const SYNC: &str = "/api/v1/im/chat/sync";

const CMD_FRIEND_MESSAGE: i64 = 6;
const CMD_FRIEND_WITHDRAWN: i64 = 7;
const CMD_GROUP_MESSAGE: i64 = 10;
const CMD_GROUP_WITHDRAWN: i64 = 11;
const CMD_SEND_ACK: i64 = 21;

/// A group owned by `owner` with these members (join request + accept).
#[track_caller]
fn group_with(node: &Node, owner: &Account, members: &[&Account]) -> i64 {
    let created = node.api_as(
        &owner.token,
        "/api/v1/im/group/create",
        &[("name", &unique_name("grp"))],
    );
    let group = expect_ok(&created, "创建成功")["id"].as_i64().unwrap();
    for m in members {
        let asked = node.api_as(
            &m.token,
            "/api/v1/im/group/join/request",
            &[("group_id", &group.to_string())],
        );
        expect_ok(&asked, "申请成功");
        let list = node.api_as(&owner.token, "/api/v1/im/group/join/list", &[]);
        let join = list["data"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["UserId"] == m.id)
            .unwrap_or_else(|| panic!("join request of {} not listed: {list}", m.id))["JoinId"]
            .as_i64()
            .unwrap();
        let handled = node.api_as(
            &owner.token,
            "/api/v1/im/group/join/handle",
            &[("join_id", &join.to_string()), ("status", "1")],
        );
        expect_ok(&handled, "处理成功");
    }
    group
}

/// Checks a stored-message push (Cmd 6 or 10).
#[track_caller]
fn assert_message(frame: &Value, cmd: i64, from: i64, to: i64, body: &str) -> i64 {
    assert_server_frame(frame, cmd);
    assert_eq!(
        (&frame["FromId"], &frame["ToId"]),
        (&json!(from), &json!(to)),
        "{frame}"
    );
    assert_eq!(
        frame["Ope"],
        if cmd == CMD_GROUP_MESSAGE { 1 } else { 0 },
        "{frame}"
    );
    assert_eq!(frame["Body"], body, "{frame}");
    let id = frame["Id"].as_i64().unwrap();
    assert!(id > 0, "{frame}");
    id
}

fn send_user(node: &Node, from: &Account, to: &Account, body: &str) -> Value {
    node.api_as(
        &from.token,
        SEND_USER,
        &[
            ("to_uid", &to.id.to_string()),
            ("type", "0"),
            ("body", body),
        ],
    )
}

fn friend_messages_reach_every_device(store: Store) {
    let node = Node::start_on(store);
    let (alice, bob) = (node.new_account(), node.new_account());
    befriend(&node, &alice, &bob);
    let mut alice_phone = caught_up(&node, &alice);
    let mut alice_desk = caught_up(&node, &alice);
    let mut bob_phone = caught_up(&node, &bob);
    let mut bob_desk = caught_up(&node, &bob);

    // Over REST: every device of both sides hears it, with the stored id.
    let sent = send_user(&node, &alice, &bob, "hello bob");
    let id = expect_ok(&sent, "发送成功")["id"].as_i64().unwrap();
    for ws in [
        &mut bob_phone,
        &mut bob_desk,
        &mut alice_phone,
        &mut alice_desk,
    ] {
        let frame = recv_cmd(ws, CMD_FRIEND_MESSAGE);
        assert_eq!(
            assert_message(&frame, CMD_FRIEND_MESSAGE, alice.id, bob.id, "hello bob"),
            id
        );
    }

    // Over the socket: the sending connection gets Cmd 21 (Body = cid, Id =
    // stored id) instead of the push; everyone else gets the push.
    socket_send(&mut alice_phone, 0, bob.id, "via socket", "cid-1");
    let ack = recv_cmd(&mut alice_phone, CMD_SEND_ACK);
    assert_system_frame(&ack, CMD_SEND_ACK);
    assert_eq!(ack["Body"], "cid-1");
    let id2 = ack["Id"].as_i64().unwrap();
    assert!(id2 > id);
    for ws in [&mut bob_phone, &mut bob_desk, &mut alice_desk] {
        let frame = recv_cmd(ws, CMD_FRIEND_MESSAGE);
        assert_eq!(
            assert_message(&frame, CMD_FRIEND_MESSAGE, alice.id, bob.id, "via socket"),
            id2
        );
    }

    // A retry with the same cid is answered with the same id, pushed to nobody.
    socket_send(&mut alice_phone, 0, bob.id, "via socket", "cid-1");
    let again = recv_cmd(&mut alice_phone, CMD_SEND_ACK);
    assert_eq!(again["Id"], id2);
    bob_phone.expect_silence(Duration::from_millis(300));

    // Refusals over the socket are Cmd 2 with the REST texts; the socket lives.
    let stranger = node.new_account();
    socket_send(&mut alice_phone, 0, stranger.id, "who?", "cid-2");
    let refused = recv_cmd(&mut alice_phone, 2);
    assert_eq!(refused["Body"], "对方不是你的好友");
    socket_send(&mut alice_phone, 0, bob.id, "", "cid-3");
    assert_eq!(recv_cmd(&mut alice_phone, 2)["Body"], "请输入内容");
    alice_phone.send_json(&json!({"Cmd": 30}));
    recv_cmd(&mut alice_phone, 31);
}

fn offline_user_gets_pending_messages_in_order(store: Store) {
    let node = Node::start_on(store);
    let (alice, bob) = (node.new_account(), node.new_account());
    befriend(&node, &alice, &bob);
    let mut alice_ws = caught_up(&node, &alice);

    let mut ids = Vec::new();
    for i in 0..4 {
        let sent = send_user(&node, &alice, &bob, &format!("rest {i}"));
        ids.push(expect_ok(&sent, "发送成功")["id"].as_i64().unwrap());
        socket_send(
            &mut alice_ws,
            0,
            bob.id,
            &format!("socket {i}"),
            &format!("c{i}"),
        );
        ids.push(
            recv_cmd(&mut alice_ws, CMD_SEND_ACK)["Id"]
                .as_i64()
                .unwrap(),
        );
    }

    // Bob signs in: Cmd 4, then every pending message, oldest first.
    let mut bob_ws = node.ws();
    bob_ws.sign_in(&bob.token);
    let got: Vec<i64> = (0..ids.len())
        .map(|_| {
            let frame = bob_ws.recv_json();
            assert_server_frame(&frame, CMD_FRIEND_MESSAGE);
            frame["Id"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(got, ids);

    // Acknowledged with Cmd 22: nothing is pending on the next sign-in.
    bob_ws.send_json(&json!({"Cmd": 22, "Body": ids.last().unwrap().to_string()}));
    assert!(wait_until(Duration::from_secs(5), || {
        let mut probe = node.ws();
        probe.sign_in(&bob.token);
        probe.send_json(&json!({"Cmd": 30}));
        probe.recv_json()["Cmd"] == 31
    }));
}

fn live_messages_during_catch_up_keep_their_order() {
    let node = Node::start();
    let (alice, bob) = (node.new_account(), node.new_account());
    befriend(&node, &alice, &bob);
    let mut alice_ws = caught_up(&node, &alice);
    for i in 0..150 {
        socket_send(
            &mut alice_ws,
            0,
            bob.id,
            &format!("before {i}"),
            &format!("b{i}"),
        );
    }
    for _ in 0..150 {
        recv_cmd(&mut alice_ws, CMD_SEND_ACK);
    }
    // Bob signs in while alice keeps sending.
    let mut bob_ws = node.ws();
    bob_ws.send_json(&json!({"Cmd": 3, "Body": bob.token}));
    for i in 0..150 {
        socket_send(
            &mut alice_ws,
            0,
            bob.id,
            &format!("during {i}"),
            &format!("d{i}"),
        );
    }
    assert_system_frame(&bob_ws.recv_json(), 4);
    let mut last = 0;
    for n in 0..300 {
        let frame = bob_ws.recv_json();
        assert_server_frame(&frame, CMD_FRIEND_MESSAGE);
        let id = frame["Id"].as_i64().unwrap();
        assert!(
            id > last,
            "message {n}: id {id} after {last}: out of order or repeated"
        );
        last = id;
    }
    bob_ws.expect_silence(Duration::from_millis(300));
}

fn group_messages_reach_every_member(store: Store) {
    let node = Node::start_on(store);
    let (owner, ann, ben, outsider) = (
        node.new_account(),
        node.new_account(),
        node.new_account(),
        node.new_account(),
    );
    let group = group_with(&node, &owner, &[&ann, &ben]);
    let mut owner_ws = caught_up(&node, &owner);
    let mut ann_ws = caught_up(&node, &ann);
    let mut ben_ws = caught_up(&node, &ben);

    socket_send(&mut ann_ws, 1, group, "hello group", "g1");
    let id = recv_cmd(&mut ann_ws, CMD_SEND_ACK)["Id"].as_i64().unwrap();
    for ws in [&mut owner_ws, &mut ben_ws] {
        let frame = recv_cmd(ws, CMD_GROUP_MESSAGE);
        assert_eq!(
            assert_message(&frame, CMD_GROUP_MESSAGE, ann.id, group, "hello group"),
            id
        );
    }

    let sent = node.api_as(
        &ben.token,
        SEND_GROUP,
        &[
            ("group_id", &group.to_string()),
            ("type", "0"),
            ("body", "rest group"),
        ],
    );
    let data = expect_ok(&sent, "发送成功");
    assert_eq!(data["messageId"], data["id"]);
    for ws in [&mut owner_ws, &mut ann_ws, &mut ben_ws] {
        assert_message(
            &recv_cmd(ws, CMD_GROUP_MESSAGE),
            CMD_GROUP_MESSAGE,
            ben.id,
            group,
            "rest group",
        );
    }

    let not_member = node.api_as(
        &outsider.token,
        SEND_GROUP,
        &[
            ("group_id", &group.to_string()),
            ("type", "0"),
            ("body", "let me in"),
        ],
    );
    expect_fail(&not_member, "您不是群成员");
    let no_group = node.api_as(
        &outsider.token,
        SEND_GROUP,
        &[("group_id", "999999999"), ("type", "0"), ("body", "x")],
    );
    expect_fail(&no_group, "群组不存在");

    // History: members only, newest first.
    let history = node.api_as(&ann.token, HISTORY, &[("group_id", &group.to_string())]);
    let list = expect_ok(&history, "请求成功")["list"].clone();
    assert_eq!(list[0]["Body"], "rest group");
    assert_eq!(list[1]["Id"], id);
    let refused = node.api_as(
        &outsider.token,
        HISTORY,
        &[("group_id", &group.to_string())],
    );
    expect_fail(&refused, "您不是群成员");

    // A member offline when the message was sent gets it on sign-in.
    // Delivery is at least once: what ben received in the last moments
    // before leaving may come again (same Id), never anything newer first.
    drop(ben_ws);
    socket_send(&mut ann_ws, 1, group, "while ben was away", "g2");
    let away = recv_cmd(&mut ann_ws, CMD_SEND_ACK)["Id"].as_i64().unwrap();
    let mut ben_again = node.ws();
    ben_again.sign_in(&ben.token);
    for _ in 0..3 {
        let frame = recv_cmd(&mut ben_again, CMD_GROUP_MESSAGE);
        let got = frame["Id"].as_i64().unwrap();
        assert!(got <= away, "{frame}");
        if got == away {
            assert_message(
                &frame,
                CMD_GROUP_MESSAGE,
                ann.id,
                group,
                "while ben was away",
            );
            return;
        }
    }
    panic!("the message sent while ben was away never came");
}

fn withdraw_rules() {
    let node = Node::builder()
        .env("WEIM_CHAT_WITHDRAW_WINDOW", "1500ms")
        .start();
    let (alice, bob) = (node.new_account(), node.new_account());
    befriend(&node, &alice, &bob);
    let mut bob_ws = caught_up(&node, &bob);

    let id = expect_ok(&send_user(&node, &alice, &bob, "oops"), "发送成功")["id"]
        .as_i64()
        .unwrap();
    recv_cmd(&mut bob_ws, CMD_FRIEND_MESSAGE);
    // Only the sender may withdraw; others are told it does not exist.
    let by_bob = node.api_as(
        &bob.token,
        WITHDRAW_USER,
        &[("message_id", &id.to_string())],
    );
    expect_fail(&by_bob, "消息不存在");
    let missing = node.api_as(&alice.token, WITHDRAW_USER, &[("message_id", "987654321")]);
    expect_fail(&missing, "消息不存在");
    let bad = node.api_as(&alice.token, WITHDRAW_USER, &[("message_id", "x")]);
    expect_fail(&bad, "消息不存在");

    let done = node.api_as(
        &alice.token,
        WITHDRAW_USER,
        &[("message_id", &id.to_string())],
    );
    expect_ok(&done, "撤回成功");
    let notice = recv_cmd(&mut bob_ws, CMD_FRIEND_WITHDRAWN);
    assert_notice(
        &notice,
        CMD_FRIEND_WITHDRAWN,
        alice.id,
        bob.id,
        0,
        &id.to_string(),
    );
    let history = node.api_as(&bob.token, HISTORY, &[("peer", &alice.id.to_string())]);
    let item = expect_ok(&history, "请求成功")["list"][0].clone();
    assert_eq!(
        (&item["Id"], &item["Status"], &item["Body"]),
        (&json!(id), &json!(-1), &json!(""))
    );

    // Past the window (strictly more than it) the message stays.
    let late = expect_ok(&send_user(&node, &alice, &bob, "too late"), "发送成功")["id"]
        .as_i64()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1700));
    let refused = node.api_as(
        &alice.token,
        WITHDRAW_USER,
        &[("message_id", &late.to_string())],
    );
    expect_fail(&refused, "消息超过2分钟无法撤回");

    // Group withdraw: Cmd 11 to every member.
    let group = group_with(&node, &alice, &[&bob]);
    let mut alice_ws = caught_up(&node, &alice);
    socket_send(&mut alice_ws, 1, group, "group oops", "w1");
    let gid = recv_cmd(&mut alice_ws, CMD_SEND_ACK)["Id"]
        .as_i64()
        .unwrap();
    recv_cmd(&mut bob_ws, CMD_GROUP_MESSAGE);
    let as_friend = node.api_as(
        &alice.token,
        WITHDRAW_USER,
        &[("message_id", &gid.to_string())],
    );
    expect_fail(&as_friend, "消息不存在");
    let done = node.api_as(
        &alice.token,
        WITHDRAW_GROUP,
        &[("message_id", &gid.to_string())],
    );
    expect_ok(&done, "撤回成功");
    for ws in [&mut bob_ws, &mut alice_ws] {
        let notice = recv_cmd(ws, CMD_GROUP_WITHDRAWN);
        assert_notice(
            &notice,
            CMD_GROUP_WITHDRAWN,
            alice.id,
            group,
            1,
            &gid.to_string(),
        );
    }
}

fn send_errors() {
    let node = Node::builder()
        .env("WEIM_CHAT_MAX_BODY_CHARS", "10")
        .start();
    let (alice, bob, stranger) = (node.new_account(), node.new_account(), node.new_account());
    befriend(&node, &alice, &bob);
    let to = bob.id.to_string();
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("to_uid", &to), ("type", "0"), ("body", "")],
            "请输入内容",
        ),
        (&[("to_uid", &to), ("type", "0")], "请输入内容"),
        (
            &[("to_uid", &to), ("type", "0"), ("body", "12345678901")],
            "内容过长",
        ),
        (
            &[("to_uid", &to), ("type", "99"), ("body", "x")],
            "非法参数",
        ),
        (&[("to_uid", &to), ("type", "x"), ("body", "x")], "非法参数"),
        (
            &[("to_uid", "abc"), ("type", "0"), ("body", "x")],
            "非法参数",
        ),
        (
            &[("to_uid", "-3"), ("type", "0"), ("body", "x")],
            "非法参数",
        ),
        (&[("type", "0"), ("body", "x")], "非法参数"),
        (
            &[
                ("to_uid", &stranger.id.to_string()),
                ("type", "0"),
                ("body", "x"),
            ],
            "对方不是你的好友",
        ),
        (
            &[
                ("to_uid", &alice.id.to_string()),
                ("type", "0"),
                ("body", "x"),
            ],
            "对方不是你的好友",
        ),
    ];
    for (params, text) in cases {
        expect_fail(&node.api_as(&alice.token, SEND_USER, params), text);
    }
    // Exactly at the limit (characters, not bytes) is fine.
    expect_ok(
        &send_user(&node, &alice, &bob, "十个汉字十个汉字十个"),
        "发送成功",
    );
    let bad_history = node.api_as(&alice.token, HISTORY, &[("peer", "x")]);
    expect_fail(&bad_history, "非法参数");
    let bad_size = node.api_as(&alice.token, SYNC, &[("size", "1000")]);
    expect_fail(&bad_size, "非法参数");
    let no_token = node.api(SEND_USER, &[("to_uid", &to), ("type", "0"), ("body", "x")]);
    assert_eq!(no_token["code"], 1001, "{no_token}");
}

fn history_and_sync_page(store: Store) {
    let node = Node::start_on(store);
    let (alice, bob) = (node.new_account(), node.new_account());
    befriend(&node, &alice, &bob);
    let ids: Vec<i64> = (0..5)
        .map(|i| {
            let (from, to) = if i % 2 == 0 {
                (&alice, &bob)
            } else {
                (&bob, &alice)
            };
            expect_ok(&send_user(&node, from, to, &format!("m{i}")), "发送成功")["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    let page = |who: &Account, extra: &[(&str, &str)]| -> Vec<i64> {
        let peer = if who.id == alice.id { bob.id } else { alice.id }.to_string();
        let mut params = vec![("peer", peer.as_str())];
        params.extend_from_slice(extra);
        let reply = node.api_as(&who.token, HISTORY, &params);
        expect_ok(&reply, "请求成功")["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Id"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(page(&alice, &[("size", "2")]), vec![ids[4], ids[3]]);
    let before = ids[3].to_string();
    assert_eq!(
        page(&bob, &[("size", "2"), ("before", &before)]),
        vec![ids[2], ids[1]]
    );

    let since = ids[0].to_string();
    let sync = node.api_as(&bob.token, SYNC, &[("since", &since), ("size", "3")]);
    let data = expect_ok(&sync, "请求成功");
    let got: Vec<i64> = data["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["Id"].as_i64().unwrap())
        .collect();
    assert_eq!(got, ids[1..4].to_vec(), "oldest first, sent and received");
    assert_eq!(data["more"], true);
    let last = ids[3].to_string();
    let rest = node.api_as(&bob.token, SYNC, &[("since", &last), ("size", "3")]);
    assert_eq!(expect_ok(&rest, "请求成功")["more"], false);
    let item = &data["list"][0];
    for key in ["Id", "FromId", "ToId", "Ope", "Type", "Status", "CreatedAt"] {
        assert!(item[key].is_i64(), "{key} in {item}");
    }
    assert!(item["Body"].is_string());
}

/// A node killed right after answering keeps every acknowledged message:
/// the recipient gets them all when it signs in to the restarted node.
#[test]
fn a_crash_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().to_string_lossy().into_owned();
    let node = Node::builder().env("WEIM_NODE_DATA_DIR", &data).start();
    let (alice, bob) = (node.new_account(), node.new_account());
    befriend(&node, &alice, &bob);
    let mut alice_ws = caught_up(&node, &alice);
    for i in 0..50 {
        socket_send(
            &mut alice_ws,
            0,
            bob.id,
            &format!("durable {i}"),
            &format!("k{i}"),
        );
    }
    let acked: Vec<i64> = (0..50)
        .map(|_| {
            recv_cmd(&mut alice_ws, CMD_SEND_ACK)["Id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    drop(node); // SIGKILL

    let node = Node::builder().env("WEIM_NODE_DATA_DIR", &data).start();
    let mut bob_ws = node.ws();
    bob_ws.sign_in(&bob.token);
    let got: Vec<i64> = (0..50)
        .map(|_| {
            recv_cmd(&mut bob_ws, CMD_FRIEND_MESSAGE)["Id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(got, acked);
}

#[test]
fn live_messages_while_catching_up_stay_in_order() {
    live_messages_during_catch_up_keep_their_order();
}

#[test]
fn withdraw_window_and_rules() {
    withdraw_rules();
}

#[test]
fn send_refusals_have_the_documented_texts() {
    send_errors();
}

mod sqlite {
    use super::*;

    #[test]
    fn friend_messages_reach_every_device_once() {
        friend_messages_reach_every_device(Store::Sqlite);
    }
    #[test]
    fn offline_user_gets_pending_in_order() {
        offline_user_gets_pending_messages_in_order(Store::Sqlite);
    }
    #[test]
    fn group_messages_reach_members() {
        group_messages_reach_every_member(Store::Sqlite);
    }
    #[test]
    fn history_and_sync() {
        history_and_sync_page(Store::Sqlite);
    }
}

mod mariadb {
    use super::*;

    #[test]
    fn friend_messages_reach_every_device_once() {
        friend_messages_reach_every_device(Store::Mysql);
    }
    #[test]
    fn offline_user_gets_pending_in_order() {
        offline_user_gets_pending_messages_in_order(Store::Mysql);
    }
    #[test]
    fn group_messages_reach_members() {
        group_messages_reach_every_member(Store::Mysql);
    }
    #[test]
    fn history_and_sync() {
        history_and_sync_page(Store::Mysql);
    }
}

/// A client sending faster than messages are stored is slowed down (its
/// socket is not read while its send waits for room in the committer
/// queue), never refused: every send is acknowledged, in order.
#[test]
fn a_full_commit_queue_slows_senders_down_instead_of_refusing() {
    let node = Node::builder().env("WEIM_CHAT_COMMIT_QUEUE", "1").start();
    let (alice, bob) = (node.new_account(), node.new_account());
    befriend(&node, &alice, &bob);
    let mut alice_ws = caught_up(&node, &alice);
    for i in 0..200 {
        socket_send(
            &mut alice_ws,
            0,
            bob.id,
            &format!("burst {i}"),
            &format!("q{i}"),
        );
    }
    let mut last = 0;
    for i in 0..200 {
        let ack = alice_ws.recv_json();
        assert_system_frame(&ack, CMD_SEND_ACK);
        assert_eq!(ack["Body"], format!("q{i}"), "{ack}");
        let id = ack["Id"].as_i64().unwrap();
        assert!(id > last, "{ack}");
        last = id;
    }
    let metrics = node.metrics();
    assert!(
        metrics.value("weim_sends_deferred_total") > 0.0,
        "200 sends into a queue of one never waited for room"
    );
    let batches = metrics.value("weim_commit_batches_total");
    assert!((1.0..=200.0).contains(&batches), "{batches} batches");
    assert!(metrics.value("weim_commit_messages_total") >= 200.0);
}
