//! Friends end to end (PROTOCOL §1.2 `im/friend/*`, pushes 8, 9, 15, 16):
//! search, requests, accept and reject, the friend list with `Online`,
//! mutual deletion, every error text, through a real node and real
//! WebSockets; several devices of one user receive the same pushes.
//!
//! The flows run on SQLite and on MariaDB (modules `sqlite` and `mariadb`
//! at the end); validation, which does not depend on the store, on SQLite.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const SEARCH: &str = "/api/v1/im/friend/search";
const LIST: &str = "/api/v1/im/friend/list";
const REQUEST: &str = "/api/v1/im/friend/add/request";
const REQS: &str = "/api/v1/im/friend/add/reqs";
const HANDLE: &str = "/api/v1/im/friend/add/handle";
const DELETE: &str = "/api/v1/im/friend/del";

const FRIEND: i64 = 0;
const CMD_REQUEST: i64 = 8;
const CMD_ACCEPTED: i64 = 9;
const CMD_REJECTED: i64 = 15;
const CMD_REMOVED: i64 = 16;

/// The caller's friends (`data.lists`).
#[track_caller]
fn friends(node: &Node, who: &Account) -> Value {
    let reply = node.api_as(&who.token, LIST, &[]);
    expect_ok(&reply, "请求成功")["lists"].clone()
}

// ---------------------------------------------------------------------------
// On both stores
// ---------------------------------------------------------------------------

fn request_accept_list_delete(store: Store) {
    let node = Node::start_on(store);
    let (a, b) = (node.new_account(), node.new_account());
    let mut ws_a = node.ws_signed_in(&a.token);
    // b on two devices: both receive every push.
    let mut ws_b = [node.ws_signed_in(&b.token), node.ws_signed_in(&b.token)];

    // a finds b by username.
    let reply = node.api_as(&a.token, SEARCH, &[("word", &b.username)]);
    let found = &expect_ok(&reply, "请求成功")["list"];
    assert_eq!(
        found,
        &json!([{"Id": b.id, "Username": b.username, "Nickname": b.username, "Avatar": DEFAULT_AVATAR_URL, "Sex": 0}])
    );

    // a asks; both of b's devices hear it.
    let reply = node.api_as(
        &a.token,
        REQUEST,
        &[
            ("username", &b.username),
            ("channel", "search"),
            ("reason", "你好"),
        ],
    );
    let data = expect_ok(&reply, "成功发送添加请求");
    assert_eq!(data.as_object().unwrap().len(), 1, "only data.t: {data}");
    for ws in &mut ws_b {
        assert_notice(
            &ws.recv_json(),
            CMD_REQUEST,
            a.id,
            b.id,
            FRIEND,
            "您收到一条好友添加请求",
        );
    }
    let again = node.api_as(&a.token, REQUEST, &[("username", &b.username)]);
    expect_fail(&again, "请等待好友同意");

    // b sees the request.
    let reply = node.api_as(&b.token, REQS, &[]);
    let list = expect_ok(&reply, "请求成功")["list"].clone();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let req = &list[0];
    // `Id` is the requester (old clients feed it back as `f_uid`), the
    // request's own id is `ReqId`.
    assert_eq!(req["Id"], a.id, "{req}");
    assert!(req["ReqId"].as_i64().unwrap() > 0, "{req}");
    assert_eq!(req["Uid"], a.id);
    assert_eq!(req["Username"], a.username.as_str());
    assert_eq!(req["Nickname"], a.username.as_str());
    assert_eq!(
        (&req["Avatar"], &req["Channel"], &req["Reason"]),
        (&json!(DEFAULT_AVATAR_URL), &json!("search"), &json!("你好"))
    );
    assert_eq!(req["Status"], 0);
    // Unix seconds in a string, as the old server answered.
    let at: i64 = req["RequestAt"].as_str().unwrap().parse().unwrap();
    assert!((now_secs() - at).abs() < 60, "{req}");

    // b accepts: a hears it, both lists show the other, online.
    let a_id = a.id.to_string();
    let reply = node.api_as(&b.token, HANDLE, &[("f_uid", &a_id), ("status", "1")]);
    expect_ok(&reply, "处理成功");
    assert_notice(
        &ws_a.recv_json(),
        CMD_ACCEPTED,
        b.id,
        a.id,
        FRIEND,
        "对方通过了你的好友请求",
    );
    assert_eq!(
        friends(&node, &a),
        json!([{"Id": b.id, "Nickname": b.username, "Username": b.username, "Avatar": DEFAULT_AVATAR_URL, "Sex": 0, "Online": true}])
    );
    assert_eq!(ids(&friends(&node, &b)), vec![a.id]);
    assert_eq!(friends(&node, &b)[0]["Online"], true);
    let reply = node.api_as(&b.token, REQS, &[]);
    assert_eq!(expect_ok(&reply, "请求成功")["list"][0]["Status"], 1);
    let again = node.api_as(&a.token, REQUEST, &[("username", &b.username)]);
    expect_fail(&again, "对方已经是好友");
    let again = node.api_as(&b.token, HANDLE, &[("f_uid", &a_id), ("status", "1")]);
    expect_fail(&again, "添加好友请求不存在");

    // a goes offline.
    ws_a.close(1000);
    assert!(
        wait_until(Duration::from_secs(5), || friends(&node, &b)[0]["Online"]
            == false),
        "a still online: {}",
        friends(&node, &b)
    );

    // b removes a: mutual, pushed to a's device, only once.
    let mut ws_a = node.ws_signed_in(&a.token);
    let reply = node.api_as(&b.token, DELETE, &[("f_uid", &a_id)]);
    expect_ok(&reply, "删除成功");
    assert_notice(
        &ws_a.recv_json(),
        CMD_REMOVED,
        b.id,
        a.id,
        FRIEND,
        "对方已将你删除",
    );
    assert_eq!(friends(&node, &a), json!([]));
    assert_eq!(friends(&node, &b), json!([]));
    let again = node.api_as(&b.token, DELETE, &[("f_uid", &a_id)]);
    expect_fail(&again, "对方不是你的好友");
    let b_id = b.id.to_string();
    let again = node.api_as(&a.token, DELETE, &[("f_uid", &b_id)]);
    expect_fail(&again, "对方不是你的好友");

    // Nothing else was pushed to anyone.
    ws_a.expect_silence(QUIET);
    for ws in &mut ws_b {
        ws.expect_silence(QUIET);
    }
}

fn three_users_reject_and_retry(store: Store) {
    let node = Node::start_on(store);
    let (a, b, c) = (node.new_account(), node.new_account(), node.new_account());
    let mut ws_c = [node.ws_signed_in(&c.token), node.ws_signed_in(&c.token)];
    let mut ws_b = node.ws_signed_in(&b.token);

    // a and c both ask b; b's list has the newest first.
    for who in [&a, &c] {
        let reply = node.api_as(&who.token, REQUEST, &[("username", &b.username)]);
        expect_ok(&reply, "成功发送添加请求");
        assert_notice(
            &ws_b.recv_json(),
            CMD_REQUEST,
            who.id,
            b.id,
            FRIEND,
            "您收到一条好友添加请求",
        );
    }
    let reply = node.api_as(&b.token, REQS, &[]);
    let list = expect_ok(&reply, "请求成功")["list"].clone();
    let uids: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["Uid"].clone())
        .collect();
    assert_eq!(uids, vec![json!(c.id), json!(a.id)]);
    // Pagination: one per page.
    let reply = node.api_as(&b.token, REQS, &[("page", "2"), ("size", "1")]);
    assert_eq!(expect_ok(&reply, "请求成功")["list"][0]["Uid"], a.id);
    let reply = node.api_as(&b.token, REQS, &[("page", "3"), ("size", "1")]);
    assert_eq!(expect_ok(&reply, "请求成功")["list"], json!([]));

    // b rejects c: both of c's devices hear it; c is not a friend.
    let c_id = c.id.to_string();
    let reply = node.api_as(&b.token, HANDLE, &[("f_uid", &c_id), ("status", "-1")]);
    expect_ok(&reply, "处理成功");
    for ws in &mut ws_c {
        assert_notice(
            &ws.recv_json(),
            CMD_REJECTED,
            b.id,
            c.id,
            FRIEND,
            "对方拒绝了你的好友请求",
        );
    }
    assert_eq!(friends(&node, &c), json!([]));
    let again = node.api_as(&b.token, HANDLE, &[("f_uid", &c_id), ("status", "1")]);
    expect_fail(&again, "添加好友请求不存在");

    // c may ask again; b accepts this time. a's request is still pending.
    let reply = node.api_as(&c.token, REQUEST, &[("username", &b.username)]);
    expect_ok(&reply, "成功发送添加请求");
    assert_notice(
        &ws_b.recv_json(),
        CMD_REQUEST,
        c.id,
        b.id,
        FRIEND,
        "您收到一条好友添加请求",
    );
    let reply = node.api_as(&b.token, HANDLE, &[("f_uid", &c_id), ("status", "1")]);
    expect_ok(&reply, "处理成功");
    for ws in &mut ws_c {
        assert_notice(
            &ws.recv_json(),
            CMD_ACCEPTED,
            b.id,
            c.id,
            FRIEND,
            "对方通过了你的好友请求",
        );
    }
    let a_id = a.id.to_string();
    let reply = node.api_as(&b.token, HANDLE, &[("f_uid", &a_id), ("status", "1")]);
    expect_ok(&reply, "处理成功");

    // b has both (by id), each of them has b; a is offline.
    let list = friends(&node, &b);
    assert_eq!(ids(&list), vec![a.id, c.id]);
    assert_eq!(
        (&list[0]["Online"], &list[1]["Online"]),
        (&json!(false), &json!(true))
    );
    assert_eq!(ids(&friends(&node, &a)), vec![b.id]);
    assert_eq!(ids(&friends(&node, &c)), vec![b.id]);
    let reply = node.api_as(&b.token, LIST, &[("size", "1"), ("page", "2")]);
    assert_eq!(ids(&expect_ok(&reply, "请求成功")["lists"]), vec![c.id]);
}

fn search_is_literal_and_paginated(store: Store) {
    let node = Node::start_on(store);
    let base = unique_name("s");
    // Usernames hold no `%` or `\`: those two are nicknames.
    let names = ["aXb", "a_b", "p3", "p4"].map(|suffix| format!("{base}{suffix}"));
    let users: Vec<Account> = names.iter().map(|n| node.register(n)).collect();
    for (user, nickname) in users[2..].iter().zip(["a%b", "a\\b"]) {
        let nickname = format!("{base}{nickname}");
        let reply = node.api_as(
            &user.token,
            "/api/v1/user/update/nickname",
            &[("nickname", &nickname)],
        );
        expect_ok(&reply, "设置成功");
    }
    let me = node.register(&format!("{base}me"));
    let search = |word: &str, extra: &[(&str, &str)]| {
        let mut params = vec![("word", word)];
        params.extend_from_slice(extra);
        let reply = node.api_as(&me.token, SEARCH, &params);
        ids(&expect_ok(&reply, "请求成功")["list"])
    };
    let all: Vec<i64> = users.iter().map(|u| u.id).collect();
    // The caller is never in the list.
    assert_eq!(search(&base, &[]), all);
    assert_eq!(search(&format!("{base}a_b"), &[]), vec![all[1]]);
    assert_eq!(search(&format!("{base}a%"), &[]), vec![all[2]]);
    assert_eq!(search(&format!("{base}A\\B"), &[]), vec![all[3]]);
    assert_eq!(
        search(&format!("  {}AXB ", base.to_uppercase()), &[]),
        vec![all[0]]
    );
    assert_eq!(search(&format!("{base}me"), &[]), Vec::<i64>::new());
    // Pages of two, then nothing; the largest page size is 100.
    assert_eq!(search(&base, &[("size", "2")]), all[..2]);
    assert_eq!(search(&base, &[("size", "2"), ("page", "2")]), all[2..]);
    assert_eq!(
        search(&base, &[("size", "2"), ("page", "3")]),
        Vec::<i64>::new()
    );
    assert_eq!(
        search(&base, &[("size", "100"), ("page", "1000000")]),
        Vec::<i64>::new()
    );
}

on_both_stores!(
    request_accept_list_delete,
    three_users_reject_and_retry,
    search_is_literal_and_paginated,
);

// ---------------------------------------------------------------------------
// Validation and error texts
// ---------------------------------------------------------------------------

#[test]
fn every_error_text() {
    let node = Node::start();
    let (a, b) = (node.new_account(), node.new_account());
    let call = |path: &str, params: &[(&str, &str)]| node.api_as(&a.token, path, params);

    // search
    for word in [None, Some(""), Some("   ")] {
        let params: Vec<_> = word.map(|w| ("word", w)).into_iter().collect();
        expect_fail(&call(SEARCH, &params), "请输入好友昵称");
    }
    expect_fail(&call(SEARCH, &[("word", &"x".repeat(65))]), "非法参数");
    for (key, value) in [
        ("page", "0"),
        ("page", "-1"),
        ("page", "x"),
        ("page", "1000001"),
        ("size", "0"),
        ("size", "101"),
        ("size", "1e2"),
        ("size", "99999999999999999999999"),
    ] {
        let reply = call(SEARCH, &[("word", "x"), (key, value)]);
        expect_fail(&reply, "非法参数");
        expect_fail(&call(LIST, &[(key, value)]), "非法参数");
        expect_fail(&call(REQS, &[(key, value)]), "非法参数");
    }

    // add/request
    expect_fail(&call(REQUEST, &[]), "用户未找到");
    expect_fail(&call(REQUEST, &[("username", "  ")]), "用户未找到");
    expect_fail(
        &call(REQUEST, &[("username", &unique_name("nobody"))]),
        "用户未找到",
    );
    expect_fail(
        &call(REQUEST, &[("username", &"n".repeat(5000))]),
        "用户未找到",
    );
    expect_fail(&call(REQUEST, &[("username", &a.username)]), "不能添加自己");
    let upper = a.username.to_uppercase();
    expect_fail(&call(REQUEST, &[("username", &upper)]), "不能添加自己");
    let target = ("username", b.username.as_str());
    let long_channel = "渠".repeat(33);
    expect_fail(
        &call(REQUEST, &[target, ("channel", &long_channel)]),
        "非法参数",
    );
    let long_reason = "因".repeat(256);
    expect_fail(
        &call(REQUEST, &[target, ("reason", &long_reason)]),
        "非法参数",
    );

    // add/handle
    let b_id = b.id.to_string();
    for f_uid in [
        None,
        Some(""),
        Some("x"),
        Some("0"),
        Some("-3"),
        Some("1.5"),
        Some("9223372036854775808"),
    ] {
        let mut params = vec![("status", "1")];
        params.extend(f_uid.map(|v| ("f_uid", v)));
        expect_fail(&call(HANDLE, &params), "非法参数");
    }
    for status in [
        None,
        Some(""),
        Some("0"),
        Some("2"),
        Some("-2"),
        Some("yes"),
    ] {
        let mut params = vec![("f_uid", b_id.as_str())];
        params.extend(status.map(|v| ("status", v)));
        expect_fail(&call(HANDLE, &params), "非法参数");
    }
    for status in ["1", "-1"] {
        let reply = call(HANDLE, &[("f_uid", &b_id), ("status", status)]);
        expect_fail(&reply, "添加好友请求不存在");
    }
    // A request to someone else is not the caller's to handle.
    let reply = node.api_as(
        &b.token,
        REQUEST,
        &[("username", &node.new_account().username)],
    );
    expect_ok(&reply, "成功发送添加请求");
    expect_fail(
        &call(HANDLE, &[("f_uid", &b_id), ("status", "1")]),
        "添加好友请求不存在",
    );
    // Nor is one the caller sent.
    expect_ok(&call(REQUEST, &[target]), "成功发送添加请求");
    let a_id = a.id.to_string();
    expect_fail(
        &call(HANDLE, &[("f_uid", &a_id), ("status", "1")]),
        "添加好友请求不存在",
    );
    let reply = node.api_as(&b.token, HANDLE, &[("f_uid", &b_id), ("status", "1")]);
    expect_fail(&reply, "添加好友请求不存在");

    // del
    for f_uid in ["", "x", "0", "-1", "18446744073709551616"] {
        expect_fail(&call(DELETE, &[("f_uid", f_uid)]), "非法参数");
    }
    expect_fail(&call(DELETE, &[]), "非法参数");
    expect_fail(&call(DELETE, &[("f_uid", &b_id)]), "对方不是你的好友");
    expect_fail(
        &call(DELETE, &[("f_uid", "9223372036854775807")]),
        "对方不是你的好友",
    );

    // JSON bodies work as forms do, numbers included.
    let reply = node
        .request(
            &Request::post(HANDLE)
                .login_token(&b.token)
                .json(&json!({"f_uid": a.id, "status": -1})),
        )
        .api();
    expect_ok(&reply, "处理成功");

    // Every friend route needs a valid token.
    for path in [SEARCH, LIST, REQUEST, REQS, HANDLE, DELETE] {
        let reply = node.api(path, &[("word", "x")]);
        assert_eq!(reply["code"], CODE_AUTH, "{path}: {reply}");
        assert_eq!(reply["msg"], "鉴权失败", "{path}: {reply}");
        let reply = node.api_as("not-a-token", path, &[]);
        assert_eq!(reply["code"], CODE_AUTH, "{path}: {reply}");
    }
}
