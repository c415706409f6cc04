//! Groups end to end (PROTOCOL §1.2 `im/group/*`, §1.3 `im/group/members`,
//! pushes 12, 13, 14, 17): create, search, join requests accepted and
//! rejected, members, my groups, kick, leave and the owner's rule, every
//! error text, through a real node and real WebSockets; several devices of
//! one user receive the same pushes.
//!
//! The flows run on SQLite and on MariaDB (modules `sqlite` and `mariadb`
//! at the end); validation, which does not depend on the store, on SQLite.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const CREATE: &str = "/api/v1/im/group/create";
const SEARCH: &str = "/api/v1/im/group/search";
const MY: &str = "/api/v1/im/group/my";
const MEMBERS: &str = "/api/v1/im/group/members";
const JOIN: &str = "/api/v1/im/group/join/request";
const JOIN_LIST: &str = "/api/v1/im/group/join/list";
const JOIN_HANDLE: &str = "/api/v1/im/group/join/handle";
const LEAVE: &str = "/api/v1/im/group/leave";
const KICK: &str = "/api/v1/im/group/shot";

const GROUP: i64 = 1;
const CMD_JOIN_REQUEST: i64 = 12;
const CMD_JOIN_ACCEPTED: i64 = 13;
const CMD_KICKED: i64 = 14;
const CMD_JOIN_REJECTED: i64 = 17;

/// Creates a group named `name` owned by `owner`; returns its id.
#[track_caller]
fn create(node: &Node, owner: &Account, name: &str) -> i64 {
    let reply = node.api_as(&owner.token, CREATE, &[("name", name)]);
    let data = expect_ok(&reply, "创建成功");
    data["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("no data.id: {reply}"))
}

/// The owner's pending join requests (`data.list`).
#[track_caller]
fn join_list(node: &Node, owner: &Account) -> Value {
    let reply = node.api_as(&owner.token, JOIN_LIST, &[]);
    expect_ok(&reply, "获取成功")["list"].clone()
}

/// `who` asks to join `group`; the owner's devices hear it. Returns the
/// request id from the owner's list.
#[track_caller]
fn ask(node: &Node, who: &Account, group: i64, owner: &Account, owner_ws: &mut [Ws]) -> i64 {
    let reply = node.api_as(&who.token, JOIN, &[("group_id", &group.to_string())]);
    expect_ok(&reply, "申请成功");
    for ws in owner_ws {
        assert_notice(
            &ws.recv_json(),
            CMD_JOIN_REQUEST,
            who.id,
            group,
            GROUP,
            "对方申请加入群组",
        );
    }
    let list = join_list(node, owner);
    let mine = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["UserId"] == who.id && r["GroupId"] == group);
    match mine {
        Some(r) => r["JoinId"].as_i64().unwrap(),
        None => panic!("request of {} not listed: {list}", who.id),
    }
}

#[track_caller]
fn handle(node: &Node, owner: &Account, join: i64, status: &str) -> Value {
    node.api_as(
        &owner.token,
        JOIN_HANDLE,
        &[("join_id", &join.to_string()), ("status", status)],
    )
}

#[track_caller]
fn members(node: &Node, who: &Account, group: i64, extra: &[(&str, &str)]) -> Value {
    let group = group.to_string();
    let mut params = vec![("group_id", group.as_str())];
    params.extend_from_slice(extra);
    node.api_as(&who.token, MEMBERS, &params)
}

fn sorted(mut v: Vec<i64>) -> Vec<i64> {
    v.sort_unstable();
    v
}

// ---------------------------------------------------------------------------
// On both stores
// ---------------------------------------------------------------------------

fn create_join_members_kick_leave(store: Store) {
    let node = Node::start_on(store);
    let (owner, a, b) = (node.new_account(), node.new_account(), node.new_account());
    // The owner on two devices: both receive every push.
    let mut ws_owner = [
        node.ws_signed_in(&owner.token),
        node.ws_signed_in(&owner.token),
    ];
    let mut ws_a = node.ws_signed_in(&a.token);
    let mut ws_b = [node.ws_signed_in(&b.token), node.ws_signed_in(&b.token)];

    let name = format!("茶话会 {}", unique_name("g"));
    let group = create(&node, &owner, &format!("  {name} "));
    let gid = group.to_string();

    // Anyone finds it, with its size.
    let reply = node.api_as(&a.token, SEARCH, &[("word", &name[10..].to_uppercase())]);
    let found = &expect_ok(&reply, "查询成功")["list"];
    assert_eq!(found.as_array().unwrap().len(), 1, "{found}");
    let item = &found[0];
    assert_eq!(
        (&item["Id"], &item["OUid"], &item["Name"]),
        (&json!(group), &json!(owner.id), &json!(name))
    );
    assert_eq!(item["Members"], 1);
    let created_at = item["CreatedAt"].as_i64().unwrap();
    assert!((now_secs() - created_at).abs() < 60, "{item}");

    // a asks and is accepted.
    let join_a = ask(&node, &a, group, &owner, &mut ws_owner);
    let again = node.api_as(&a.token, JOIN, &[("group_id", &gid)]);
    expect_fail(&again, "你的申请加入群组请求已经在处理中");
    let list = join_list(&node, &owner);
    assert_eq!(
        list,
        json!([{
            "JoinId": join_a, "UserId": a.id, "GroupId": group,
            "Username": a.username, "Nickname": a.username, "Avatar": DEFAULT_AVATAR_URL,
            "GroupName": name, "JoinAt": list[0]["JoinAt"],
        }])
    );
    assert!(list[0]["JoinAt"].as_i64().unwrap() >= created_at);
    expect_ok(&handle(&node, &owner, join_a, "1"), "处理成功");
    assert_notice(
        &ws_a.recv_json(),
        CMD_JOIN_ACCEPTED,
        group,
        a.id,
        GROUP,
        "群主同意您加入群组",
    );
    assert_eq!(join_list(&node, &owner), json!([]));
    expect_fail(&handle(&node, &owner, join_a, "1"), "加群申请不存在");
    expect_fail(
        &node.api_as(&a.token, JOIN, &[("group_id", &gid)]),
        "你已经在群组里",
    );
    expect_fail(
        &node.api_as(&owner.token, JOIN, &[("group_id", &gid)]),
        "你已经是群主",
    );

    // Members see the members; others do not.
    let reply = members(&node, &a, group, &[]);
    let list = expect_ok(&reply, "获取成功")["list"].clone();
    assert_eq!(ids(&list), sorted(vec![owner.id, a.id]));
    let a_item = list
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["Id"] == a.id)
        .unwrap();
    assert_eq!(
        (&a_item["Username"], &a_item["Nickname"]),
        (&json!(a.username), &json!(a.username))
    );
    assert_eq!(
        (&a_item["Avatar"], &a_item["Sex"]),
        (&json!(DEFAULT_AVATAR_URL), &json!(0))
    );
    assert!(a_item["JoinAt"].as_i64().unwrap() >= created_at);
    expect_fail(&members(&node, &b, group, &[]), "您不是群成员");

    // a's groups.
    let reply = node.api_as(&a.token, MY, &[]);
    let mine = expect_ok(&reply, "获取成功")["list"].clone();
    assert_eq!(
        mine,
        json!([{"Id": group, "OUid": owner.id, "Name": name, "CreatedAt": created_at, "JoinAt": a_item["JoinAt"]}])
    );

    // b is rejected (status 0, then -1): both of b's devices hear it each
    // time; then b is accepted.
    for status in ["0", "-1"] {
        let join_b = ask(&node, &b, group, &owner, &mut ws_owner);
        expect_ok(&handle(&node, &owner, join_b, status), "处理成功");
        for ws in &mut ws_b {
            assert_notice(
                &ws.recv_json(),
                CMD_JOIN_REJECTED,
                group,
                b.id,
                GROUP,
                "群主拒绝了你的加群申请",
            );
        }
        expect_fail(&members(&node, &b, group, &[]), "您不是群成员");
    }
    let join_b = ask(&node, &b, group, &owner, &mut ws_owner);
    expect_ok(&handle(&node, &owner, join_b, "1"), "处理成功");
    for ws in &mut ws_b {
        assert_notice(
            &ws.recv_json(),
            CMD_JOIN_ACCEPTED,
            group,
            b.id,
            GROUP,
            "群主同意您加入群组",
        );
    }
    let reply = node.api_as(&a.token, SEARCH, &[("word", &name)]);
    assert_eq!(expect_ok(&reply, "查询成功")["list"][0]["Members"], 3);
    // Members by pages of two.
    let all = sorted(vec![owner.id, a.id, b.id]);
    let page = |n: &str| {
        let reply = members(&node, &b, group, &[("size", "2"), ("page", n)]);
        ids(&expect_ok(&reply, "获取成功")["list"])
    };
    assert_eq!(
        (page("1"), page("2"), page("3")),
        (all[..2].to_vec(), all[2..].to_vec(), vec![])
    );

    // The owner kicks b: both devices hear it, b is out, only once.
    let b_id = b.id.to_string();
    let reply = node.api_as(
        &owner.token,
        KICK,
        &[("group_id", &gid), ("user_id", &b_id)],
    );
    expect_ok(&reply, "踢出群成功");
    for ws in &mut ws_b {
        assert_notice(
            &ws.recv_json(),
            CMD_KICKED,
            group,
            b.id,
            GROUP,
            "你被踢出群组",
        );
    }
    let reply = node.api_as(&b.token, MY, &[]);
    assert_eq!(expect_ok(&reply, "获取成功")["list"], json!([]));
    let again = node.api_as(
        &owner.token,
        KICK,
        &[("group_id", &gid), ("user_id", &b_id)],
    );
    expect_fail(&again, "用户不在群里");

    // Leaving: the owner stays while a is in; a leaves; then the owner
    // leaving the empty group deletes it.
    expect_fail(
        &node.api_as(&owner.token, LEAVE, &[("group_id", &gid)]),
        "群主不能退出群组",
    );
    expect_ok(
        &node.api_as(&a.token, LEAVE, &[("group_id", &gid)]),
        "退出群成功",
    );
    expect_fail(
        &node.api_as(&a.token, LEAVE, &[("group_id", &gid)]),
        "你不在群里",
    );
    expect_ok(
        &node.api_as(&owner.token, LEAVE, &[("group_id", &gid)]),
        "退出群成功",
    );
    let reply = node.api_as(&a.token, SEARCH, &[("word", &name)]);
    assert_eq!(expect_ok(&reply, "查询成功")["list"], json!([]));
    expect_fail(&members(&node, &owner, group, &[]), "群组不存在");
    expect_fail(
        &node.api_as(&b.token, JOIN, &[("group_id", &gid)]),
        "群组不存在",
    );
    // The name is free again.
    create(&node, &b, &name);

    // Nothing else was pushed to anyone.
    ws_a.expect_silence(QUIET);
    for ws in ws_owner.iter_mut().chain(ws_b.iter_mut()) {
        ws.expect_silence(QUIET);
    }
}

fn search_and_my_groups_pages(store: Store) {
    let node = Node::start_on(store);
    let (owner, other) = (node.new_account(), node.new_account());
    let base = unique_name("p");
    let groups: Vec<i64> = ["a_b", "aXb", "a%b"]
        .iter()
        .map(|s| create(&node, &owner, &format!("{base}{s}")))
        .collect();
    let search = |word: &str, extra: &[(&str, &str)]| {
        let mut params = vec![("word", word)];
        params.extend_from_slice(extra);
        let reply = node.api_as(&other.token, SEARCH, &params);
        ids(&expect_ok(&reply, "查询成功")["list"])
    };
    assert_eq!(search(&base, &[]), groups);
    assert_eq!(search(&format!("{base}A_B"), &[]), vec![groups[0]]);
    assert_eq!(search(&format!("{base}a%"), &[]), vec![groups[2]]);
    assert_eq!(
        search(&base, &[("size", "2"), ("page", "2")]),
        vec![groups[2]]
    );
    assert_eq!(
        search(&base, &[("size", "2"), ("page", "3")]),
        Vec::<i64>::new()
    );

    let my = |extra: &[(&str, &str)]| {
        let reply = node.api_as(&owner.token, MY, extra);
        ids(&expect_ok(&reply, "获取成功")["list"])
    };
    assert_eq!(my(&[]), groups);
    assert_eq!(my(&[("size", "1"), ("page", "3")]), vec![groups[2]]);
    assert_eq!(my(&[("size", "1"), ("page", "4")]), Vec::<i64>::new());
    let reply = node.api_as(&other.token, MY, &[]);
    assert_eq!(expect_ok(&reply, "获取成功")["list"], json!([]));
}

/// `who` asks to join `group` and `owner` accepts (no devices signed in).
#[track_caller]
fn join(node: &Node, who: &Account, group: i64, owner: &Account) {
    let reply = node.api_as(&who.token, JOIN, &[("group_id", &group.to_string())]);
    expect_ok(&reply, "申请成功");
    let list = join_list(node, owner);
    let id = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["UserId"] == who.id && r["GroupId"] == group)
        .unwrap_or_else(|| panic!("request of {} not listed: {list}", who.id))["JoinId"]
        .as_i64()
        .unwrap();
    expect_ok(&handle(node, owner, id, "1"), "处理成功");
}

/// A group's `history` starts at the caller's join, as their `sync` does:
/// a late joiner does not read what was said before they came, an earlier
/// member does.
fn history_starts_at_the_join(store: Store) {
    const HISTORY: &str = "/api/v1/im/chat/history";
    const SYNC: &str = "/api/v1/im/chat/sync";
    let node = Node::start_on(store);
    let (owner, early, late) = (node.new_account(), node.new_account(), node.new_account());
    let group = create(&node, &owner, &unique_name("h"));
    join(&node, &early, group, &owner);
    let say = |body: &str| -> i64 {
        let reply = node.api_as(
            &owner.token,
            "/api/v1/im/chat/send/group",
            &[
                ("group_id", &group.to_string()),
                ("type", "0"),
                ("body", body),
            ],
        );
        expect_ok(&reply, "发送成功")["id"].as_i64().unwrap()
    };
    let before = say("before the late joiner");
    // Joins are kept in seconds: the late joiner comes in a later second.
    let said = now_secs();
    assert!(wait_until(Duration::from_secs(3), || now_secs() > said));
    join(&node, &late, group, &owner);
    let after = say("after the late joiner");

    let history = |who: &Account| -> Vec<i64> {
        let reply = node.api_as(&who.token, HISTORY, &[("group_id", &group.to_string())]);
        ids(&expect_ok(&reply, "请求成功")["list"])
    };
    assert_eq!(history(&early), vec![after, before]);
    assert_eq!(history(&owner), vec![after, before]);
    assert_eq!(history(&late), vec![after], "history from before the join");
    let sync = node.api_as(&late.token, SYNC, &[]);
    assert_eq!(ids(&expect_ok(&sync, "请求成功")["list"]), vec![after]);
}

on_both_stores!(
    create_join_members_kick_leave,
    search_and_my_groups_pages,
    history_starts_at_the_join
);

// ---------------------------------------------------------------------------
// Validation and error texts
// ---------------------------------------------------------------------------

#[test]
fn every_error_text() {
    let node = Node::start();
    let (owner, a, stranger) = (node.new_account(), node.new_account(), node.new_account());
    let mut ws_owner = [node.ws_signed_in(&owner.token)];
    let name = unique_name("e");
    let group = create(&node, &owner, &name);
    let gid = group.to_string();
    let missing = (group + 1_000_000).to_string();
    let bad_ids = ["", " ", "x", "0", "-1", "2.5", "1e3", "9223372036854775808"];

    // create
    for params in [vec![], vec![("name", "")], vec![("name", " \t ")]] {
        expect_fail(&node.api_as(&a.token, CREATE, &params), "请输入群名称");
    }
    expect_fail(
        &node.api_as(&a.token, CREATE, &[("name", &"群".repeat(65))]),
        "非法参数",
    );
    create(&node, &a, &"群".repeat(64));
    expect_fail(
        &node.api_as(&a.token, CREATE, &[("name", &name.to_uppercase())]),
        "群组已存在",
    );

    // search, my, join/list: words and pages
    for params in [vec![], vec![("word", "  ")]] {
        expect_fail(&node.api_as(&a.token, SEARCH, &params), "请输入群组名称");
    }
    expect_fail(
        &node.api_as(&a.token, SEARCH, &[("word", &"x".repeat(65))]),
        "非法参数",
    );
    for (key, value) in [
        ("page", "0"),
        ("page", "x"),
        ("size", "0"),
        ("size", "101"),
        ("size", "-5"),
    ] {
        let reply = node.api_as(&a.token, SEARCH, &[("word", "x"), (key, value)]);
        expect_fail(&reply, "非法参数");
        for path in [MY, JOIN_LIST] {
            expect_fail(&node.api_as(&a.token, path, &[(key, value)]), "非法参数");
        }
        expect_fail(&members(&node, &owner, group, &[(key, value)]), "非法参数");
    }

    // members
    for id in bad_ids {
        let reply = node.api_as(&owner.token, MEMBERS, &[("group_id", id)]);
        expect_fail(&reply, "非法参数");
    }
    expect_fail(&node.api_as(&owner.token, MEMBERS, &[]), "非法参数");
    expect_fail(
        &node.api_as(&owner.token, MEMBERS, &[("group_id", &missing)]),
        "群组不存在",
    );
    expect_fail(&members(&node, &a, group, &[]), "您不是群成员");

    // join/request
    for id in bad_ids {
        expect_fail(
            &node.api_as(&a.token, JOIN, &[("group_id", id)]),
            "非法参数",
        );
    }
    expect_fail(
        &node.api_as(&a.token, JOIN, &[("group_id", &missing)]),
        "群组不存在",
    );

    // join/handle
    let join = ask(&node, &a, group, &owner, &mut ws_owner);
    for id in bad_ids {
        let reply = node.api_as(
            &owner.token,
            JOIN_HANDLE,
            &[("join_id", id), ("status", "1")],
        );
        expect_fail(&reply, "非法参数");
    }
    let join_id = join.to_string();
    for status in [None, Some(""), Some("2"), Some("-2"), Some("yes")] {
        let mut params = vec![("join_id", join_id.as_str())];
        params.extend(status.map(|s| ("status", s)));
        expect_fail(&node.api_as(&owner.token, JOIN_HANDLE, &params), "非法参数");
    }
    expect_fail(
        &handle(&node, &owner, join + 1_000_000, "1"),
        "加群申请不存在",
    );
    // Somebody else's request looks like no request at all; its applicant
    // is told why they cannot handle it.
    expect_fail(&handle(&node, &stranger, join, "1"), "加群申请不存在");
    expect_fail(&handle(&node, &a, join, "1"), "您不是群主，无法处理申请");
    // ... and, once the group is gone, that it is gone.
    expect_ok(
        &node.api_as(&owner.token, LEAVE, &[("group_id", &gid)]),
        "退出群成功",
    );
    expect_fail(&handle(&node, &a, join, "1"), "群组不存在");
    expect_fail(&handle(&node, &owner, join, "1"), "加群申请不存在");

    // leave
    let group = create(&node, &owner, &name);
    let gid = group.to_string();
    for id in bad_ids {
        expect_fail(
            &node.api_as(&a.token, LEAVE, &[("group_id", id)]),
            "非法参数",
        );
    }
    expect_fail(
        &node.api_as(&a.token, LEAVE, &[("group_id", &missing)]),
        "你不在群里",
    );
    expect_fail(
        &node.api_as(&a.token, LEAVE, &[("group_id", &gid)]),
        "你不在群里",
    );

    // shot (kick)
    let a_id = a.id.to_string();
    for id in bad_ids {
        let reply = node.api_as(&owner.token, KICK, &[("group_id", id), ("user_id", &a_id)]);
        expect_fail(&reply, "非法参数");
        let reply = node.api_as(&owner.token, KICK, &[("group_id", &gid), ("user_id", id)]);
        expect_fail(&reply, "非法参数");
    }
    let kick = |who: &Account, group: &str, user: &str| {
        node.api_as(&who.token, KICK, &[("group_id", group), ("user_id", user)])
    };
    expect_fail(&kick(&owner, &missing, &a_id), "群组不存在");
    expect_fail(&kick(&a, &gid, &owner.id.to_string()), "你不是群主");
    expect_fail(&kick(&owner, &gid, &owner.id.to_string()), "不能踢出自己");
    expect_fail(&kick(&owner, &gid, &a_id), "用户不在群里");
    expect_fail(&kick(&owner, &gid, "9223372036854775807"), "用户不在群里");

    // JSON bodies work as forms do.
    let reply = node
        .request(
            &Request::post(JOIN)
                .login_token(&a.token)
                .json(&json!({"group_id": group})),
        )
        .api();
    expect_ok(&reply, "申请成功");

    // Every group route needs a valid token.
    for path in [
        CREATE,
        SEARCH,
        MY,
        MEMBERS,
        JOIN,
        JOIN_LIST,
        JOIN_HANDLE,
        LEAVE,
        KICK,
    ] {
        let reply = node.api(path, &[("name", "x")]);
        assert_eq!(reply["code"], CODE_AUTH, "{path}: {reply}");
        assert_eq!(reply["msg"], "鉴权失败", "{path}: {reply}");
    }
}
