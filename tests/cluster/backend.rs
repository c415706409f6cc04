//! The server API and webhooks across three nodes: a backend calls any
//! node and reaches users wherever they are connected; `users/online` sees
//! every node; `message.offline` is posted only for recipients connected
//! nowhere; `user.online` / `user.offline` mark a user's first and last
//! connection in the cluster, not on each node.

use super::*;
use crate::common::hooks::{server_ok, Delivered, Receiver, API_KEY, HOOK_SECRET};

const CMD_SERVER_NOTICE: i64 = 40;
/// How long a node may take to record a user's presence.
const PRESENCE_WAIT: Duration = Duration::from_secs(10);
/// How long a test waits for a webhook event it expects.
const EVENT_WAIT: Duration = Duration::from_secs(10);

/// Three nodes with the server API and webhooks to `rx`.
fn backend_cluster(s: &Services, rx: &Receiver) -> (Vec<String>, Drained) {
    let ids = node_ids(3);
    let nodes = start_all(
        ids.iter()
            .map(|id| {
                cluster_node(Some(id), &s.etcd, &s.redis)
                    .env("WEIM_HTTP_SERVER_API_KEYS", API_KEY)
                    .env("WEIM_WEBHOOK_URL", &rx.url())
                    .env("WEIM_WEBHOOK_SECRET", HOOK_SECRET)
            })
            .collect(),
    );
    for n in &nodes {
        wait_servers(
            n,
            |s| ids.iter().all(|id| s.contains(id)),
            "every test node",
        );
    }
    (ids, nodes)
}

/// Waits until Redis records `uid` on exactly these nodes.
#[track_caller]
fn wait_presence(redis: &str, uid: i64, on: &[&String]) {
    let want: HashSet<String> = on.iter().map(|s| s.to_string()).collect();
    assert!(
        wait_until(PRESENCE_WAIT, || presence(redis, uid) == want),
        "presence of {uid}: {:?}, expected {want:?}",
        presence(redis, uid)
    );
}

fn is_notice(body: &str) -> impl Fn(&Value) -> bool + '_ {
    move |f: &Value| f["Cmd"] == CMD_SERVER_NOTICE && f["Body"] == body
}

#[test]
fn backend_reaches_users_on_every_node() {
    let s = services();
    let rx = Receiver::start();
    let (ids, nodes) = backend_cluster(&s, &rx);
    let (a, b, c, bot) = (
        nodes[1].new_account(),
        nodes[2].new_account(),
        nodes[0].new_account(),
        nodes[0].new_account(),
    );
    let mut wa = nodes[1].ws_signed_in(&a.token);
    let mut wb = nodes[2].ws_signed_in(&b.token);
    let mut wb0 = nodes[0].ws_signed_in(&b.token);
    wait_presence(&s.redis, a.id, &[&ids[1]]);
    wait_presence(&s.redis, b.id, &[&ids[0], &ids[2]]);

    // push/users through node 0: a (node 1) and b (nodes 0 and 2) reached,
    // c (connected nowhere) not.
    let body = unique_name("note");
    let data = server_ok(
        &nodes[0],
        "push/users",
        &json!({"uids": [a.id, b.id, c.id], "body": body}),
    );
    assert_eq!(data["online"], 2, "{data}");
    for ws in [&mut wa, &mut wb, &mut wb0] {
        let f = expect(ws, "the server notice", is_notice(&body));
        assert_eq!((&f["Ope"], &f["Type"]), (&json!(2), &json!(10)), "{f}");
    }

    // users/online from any node sees every node.
    for node in nodes.iter() {
        let data = server_ok(node, "users/online", &json!({"uids": [a.id, b.id, c.id]}));
        assert_eq!(data["online"], json!([true, true, false]), "{data}");
    }

    // push/group through node 2: the members on nodes 1 and 0.
    let r = nodes[1].api_as(
        &a.token,
        "/api/v1/im/group/create",
        &[("name", &unique_name("g"))],
    );
    let group = r["data"]["id"].as_i64().expect("group id");
    let mut db = mysql();
    db.exec_drop(
        "INSERT INTO group_members (group_id, user_id, joined_at) VALUES (?, ?, ?)",
        (group, b.id, now_secs()),
    )
    .expect("insert a member");
    let body = unique_name("gnote");
    let data = server_ok(
        &nodes[2],
        "push/group",
        &json!({"group_id": group, "body": body}),
    );
    assert_eq!(data["online"], 2, "{data}");
    for ws in [&mut wa, &mut wb, &mut wb0] {
        expect(ws, "the group notice", is_notice(&body));
    }

    // push/all through node 1: every node's connections.
    let body = unique_name("all");
    server_ok(&nodes[1], "push/all", &json!({"body": body}));
    for ws in [&mut wa, &mut wb, &mut wb0] {
        expect(ws, "the broadcast notice", is_notice(&body));
    }

    // messages/send through node 2 from a bot: to a on node 1 (online, no
    // webhook), then to c (offline: message.offline from node 2).
    let to_a = server_ok(
        &nodes[2],
        "messages/send",
        &json!({"from_uid": bot.id, "to_uid": a.id, "body": "hello a", "cid": unique_name("c")}),
    )["id"]
        .as_i64()
        .unwrap();
    let f = expect(&mut wa, "the bot's message", |f| {
        f["Cmd"] == CMD_FRIEND && f["Id"] == to_a
    });
    assert_eq!(f["FromId"], bot.id, "{f}");
    let to_c = server_ok(
        &nodes[2],
        "messages/send",
        &json!({"from_uid": bot.id, "to_uid": c.id, "body": "hello c"}),
    )["id"]
        .as_i64()
        .unwrap();
    let got = rx.wait_for(EVENT_WAIT, "message.offline for c", |g| {
        g.iter().any(|d| d.event["message"]["Id"] == to_c)
    });
    let d = got
        .iter()
        .find(|d| d.event["message"]["Id"] == to_c)
        .unwrap();
    assert!(d.signed_with(HOOK_SECRET));
    assert_eq!(d.event["uids"], json!([c.id]), "{}", d.event);
    assert!(
        !got.iter().any(|d| d.event["message"]["Id"] == to_a),
        "message.offline for a user online on another node"
    );
}

#[test]
fn user_online_and_offline_are_cluster_wide() {
    let s = services();
    let rx = Receiver::start();
    let (ids, nodes) = backend_cluster(&s, &rx);
    let d = nodes[0].new_account();
    // Over what the receiver got (`wait_for` holds it while it asks).
    let count = |got: &[Delivered], t: &str| {
        got.iter()
            .filter(|g| g.event["type"] == t && g.event["uid"] == d.id)
            .count()
    };
    let mut w1 = nodes[1].ws_signed_in(&d.token);
    wait_presence(&s.redis, d.id, &[&ids[1]]);
    let mut w2 = nodes[2].ws_signed_in(&d.token);
    wait_presence(&s.redis, d.id, &[&ids[1], &ids[2]]);
    rx.wait_for(EVENT_WAIT, "user.online", |g| count(g, "user.online") == 1);
    w1.close(1000);
    wait_presence(&s.redis, d.id, &[&ids[2]]);
    // The user is still connected on node 2: no user.offline, no second
    // user.online.
    thread::sleep(Duration::from_millis(500));
    let got = rx.got();
    assert_eq!(
        (count(&got, "user.online"), count(&got, "user.offline")),
        (1, 0)
    );
    w2.close(1000);
    let got = rx.wait_for(EVENT_WAIT, "user.offline", |g| {
        count(g, "user.offline") == 1
    });
    assert_eq!(count(&got, "user.online"), 1);
    assert!(got.iter().all(|g| g.signed_with(HOOK_SECRET)));
}

#[test]
fn disconnect_and_ban_close_sockets_on_every_node() {
    let s = services();
    let rx = Receiver::start();
    let (ids, nodes) = backend_cluster(&s, &rx);
    let (a, b) = (nodes[0].new_account(), nodes[0].new_account());
    let mut a1 = nodes[1].ws_signed_in(&a.token);
    let mut a2 = nodes[2].ws_signed_in(&a.token);
    let mut b1 = nodes[1].ws_signed_in(&b.token);
    wait_presence(&s.redis, a.id, &[&ids[1], &ids[2]]);
    // Through node 0, where a has no socket.
    server_ok(&nodes[0], "users/disconnect", &json!({"uid": a.id}));
    assert_eq!(a1.expect_close(FRAME_WAIT), 4002);
    assert_eq!(a2.expect_close(FRAME_WAIT), 4002);

    // Signed in again on two nodes (node 2's answer is cached: the ban
    // must drop it), then banned through node 1.
    let mut a1 = nodes[1].ws_signed_in(&a.token);
    let mut a2 = nodes[2].ws_signed_in(&a.token);
    let until = now_secs() + 600;
    server_ok(
        &nodes[1],
        "users/ban",
        &json!({"uid": a.id, "until": until, "reason": "test"}),
    );
    assert_eq!(a1.expect_close(FRAME_WAIT), 4003);
    assert_eq!(a2.expect_close(FRAME_WAIT), 4003);
    for node in nodes.iter() {
        let mut ws = node.ws();
        ws.send_json(&json!({"Cmd": 3, "Body": a.token}));
        let reply = ws.recv_json();
        assert_eq!(
            (&reply["Cmd"], &reply["Body"]),
            (&json!(2), &json!("账号已被封禁")),
            "{reply}"
        );
        let login = node.login_raw(&a.username, PASSWORD);
        assert_eq!(login["code"], CODE_AUTH, "{login}");
    }
    // The other user's socket is untouched.
    b1.send_json(&json!({"Cmd": 30}));
    expect(&mut b1, "pong", |f| f["Cmd"] == 31);
    server_ok(&nodes[2], "users/unban", &json!({"uid": a.id}));
    let login = nodes[2].login(&a.username);
    assert_eq!(nodes[2].me(&login.token)["code"], CODE_OK);
}
