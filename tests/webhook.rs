//! Webhooks on one node, posted to a real HTTP receiver the test runs
//! (`common::hooks::Receiver`): signatures, `message.offline` only for
//! offline recipients, the other event types, retries with the same
//! `event_id`, a backend down for a while, a backend that hangs (chat
//! delivery measured meanwhile) and a full queue. Across three nodes:
//! `tests/cluster/backend.rs`.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::hooks::{Delivered, Receiver, HOOK_SECRET};
use common::*;
use serde_json::{json, Value};

/// How long a test waits for an event it expects.
const EVENT_WAIT: Duration = Duration::from_secs(10);

fn hooked(receiver: &Receiver, events: &str) -> NodeBuilder {
    Node::builder()
        .env("WEIM_WEBHOOK_URL", &receiver.url())
        .env("WEIM_WEBHOOK_SECRET", HOOK_SECRET)
        .env("WEIM_WEBHOOK_EVENTS", events)
}

/// Sends a friend message over REST; its stored id.
#[track_caller]
fn send(node: &Node, from: &Account, to: &Account, body: &str) -> i64 {
    let reply = node.api_as(
        &from.token,
        "/api/v1/im/chat/send/user",
        &[
            ("to_uid", &to.id.to_string()),
            ("type", "0"),
            ("body", body),
        ],
    );
    assert_eq!(reply["code"], CODE_OK, "send: {reply}");
    reply["data"]["id"].as_i64().unwrap()
}

fn is_offline_for(id: i64) -> impl Fn(&[Delivered]) -> bool {
    move |got: &[Delivered]| got.iter().any(|d| d.event["message"]["Id"] == id)
}

#[test]
fn message_offline_is_signed_and_only_for_offline_recipients() {
    let rx = Receiver::start();
    let node = hooked(&rx, "message.offline").start();
    let (a, on, off) = (node.new_account(), node.new_account(), node.new_account());
    befriend(&node, &a, &on);
    befriend(&node, &a, &off);
    let _a_ws = node.ws_signed_in(&a.token);
    let mut on_ws = node.ws_signed_in(&on.token);
    let to_online = send(&node, &a, &on, "you are here");
    recv_cmd(&mut on_ws, 6);
    let to_offline = send(&node, &a, &off, "you are away");
    // Events leave in order: once the second message's arrived, the first
    // one's would have too.
    let got = rx.wait_for(EVENT_WAIT, "message.offline", is_offline_for(to_offline));
    assert!(
        !is_offline_for(to_online)(&got),
        "an event for an online recipient: {got:?}"
    );
    let d = got
        .iter()
        .find(|d| d.event["message"]["Id"] == to_offline)
        .unwrap();
    assert!(
        d.signed_with(HOOK_SECRET),
        "bad signature {:?}",
        d.signature
    );
    assert!(!d.signed_with("another-secret"));
    let e = &d.event;
    assert_eq!(e["type"], "message.offline");
    assert!(e["event_id"].as_str().is_some_and(|s| !s.is_empty()), "{e}");
    assert_eq!(e["uids"], json!([off.id]), "{e}");
    let m = &e["message"];
    assert_eq!(
        (&m["FromId"], &m["ToId"], &m["Ope"], &m["Type"], &m["Body"]),
        (
            &json!(a.id),
            &json!(off.id),
            &json!(0),
            &json!(0),
            &json!("you are away")
        ),
        "{e}"
    );
    assert!(m["Time"].as_i64().unwrap() > 0, "{e}");

    // A group: only the members connected nowhere, never the sender.
    let created = node.api_as(
        &a.token,
        "/api/v1/im/group/create",
        &[("name", &unique_name("g"))],
    );
    let group = expect_ok(&created, "创建成功")["id"].as_i64().unwrap();
    for member in [&on, &off] {
        join(&node, &a, member, group);
    }
    let reply = node.api_as(
        &a.token,
        "/api/v1/im/chat/send/group",
        &[
            ("group_id", &group.to_string()),
            ("type", "0"),
            ("body", "to all"),
        ],
    );
    let id = reply["data"]["id"].as_i64().unwrap();
    let got = rx.wait_for(EVENT_WAIT, "group message.offline", is_offline_for(id));
    let e = &got
        .iter()
        .find(|d| d.event["message"]["Id"] == id)
        .unwrap()
        .event;
    assert_eq!(e["uids"], json!([off.id]), "{e}");
    assert_eq!(e["message"]["Ope"], 1, "{e}");
    let ids: HashSet<&str> = got
        .iter()
        .filter_map(|d| d.event["event_id"].as_str())
        .collect();
    assert_eq!(ids.len(), got.len(), "event ids repeat: {got:?}");
}

/// `member` asks to join `owner`'s group and is accepted.
#[track_caller]
fn join(node: &Node, owner: &Account, member: &Account, group: i64) {
    let asked = node.api_as(
        &member.token,
        "/api/v1/im/group/join/request",
        &[("group_id", &group.to_string())],
    );
    assert_eq!(asked["code"], CODE_OK, "{asked}");
    let list = node.api_as(&owner.token, "/api/v1/im/group/join/list", &[]);
    let join_id = list["data"]["list"]
        .as_array()
        .and_then(|l| {
            l.iter()
                .find(|r| r["UserId"] == member.id && r["GroupId"] == group)
                .and_then(|r| r["JoinId"].as_i64())
        })
        .unwrap_or_else(|| panic!("no join request in {list}"));
    let handled = node.api_as(
        &owner.token,
        "/api/v1/im/group/join/handle",
        &[("join_id", &join_id.to_string()), ("status", "1")],
    );
    assert_eq!(handled["code"], CODE_OK, "{handled}");
}

#[test]
fn social_and_presence_events_arrive() {
    let rx = Receiver::start();
    let node = hooked(&rx, "").start();
    let (a, b) = (node.new_account(), node.new_account());
    befriend(&node, &a, &b);
    let got = rx.wait_for(EVENT_WAIT, "friend.added", |g| {
        g.iter().any(|d| d.event["type"] == "friend.added")
    });
    let e = &got
        .iter()
        .find(|d| d.event["type"] == "friend.added")
        .unwrap()
        .event;
    let mut uids: Vec<i64> = e["uids"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_i64)
        .collect();
    uids.sort();
    let mut want = vec![a.id, b.id];
    want.sort();
    assert_eq!(uids, want, "{e}");

    let created = node.api_as(
        &a.token,
        "/api/v1/im/group/create",
        &[("name", &unique_name("g"))],
    );
    let group = expect_ok(&created, "创建成功")["id"].as_i64().unwrap();
    join(&node, &a, &b, group);
    let left = node.api_as(
        &b.token,
        "/api/v1/im/group/leave",
        &[("group_id", &group.to_string())],
    );
    assert_eq!(left["code"], CODE_OK, "{left}");
    rx.wait_for(EVENT_WAIT, "member events", |g| {
        let has = |t: &str| {
            g.iter().any(|d| {
                d.event["type"] == t && d.event["group_id"] == group && d.event["uid"] == b.id
            })
        };
        has("group.member_joined") && has("group.member_left")
    });

    // First connection → user.online; the second → nothing; the last
    // closed → user.offline.
    let mut w1 = node.ws_signed_in(&a.token);
    let mut w2 = node.ws_signed_in(&a.token);
    let online = |g: &[Delivered], t: &str| {
        g.iter()
            .filter(|d| d.event["type"] == t && d.event["uid"] == a.id)
            .count()
    };
    rx.wait_for(EVENT_WAIT, "user.online", |g| online(g, "user.online") == 1);
    w1.close(1000);
    w1.wait_closed(Duration::from_secs(5));
    w2.send_json(&json!({"Cmd": 30}));
    recv_cmd(&mut w2, 31);
    assert_eq!(online(&rx.got(), "user.offline"), 0);
    w2.close(1000);
    let got = rx.wait_for(EVENT_WAIT, "user.offline", |g| {
        online(g, "user.offline") == 1
    });
    assert_eq!(online(&got, "user.online"), 1);
    assert!(got.iter().all(|d| d.signed_with(HOOK_SECRET)));
}

#[test]
fn failed_posts_are_retried_with_the_same_event_id() {
    let rx = Receiver::start();
    rx.script(&[500, 500, 500]);
    let node = hooked(&rx, "friend.added").start();
    let (a, b) = (node.new_account(), node.new_account());
    befriend(&node, &a, &b);
    let got = rx.wait_for(EVENT_WAIT, "four attempts", |g| g.len() >= 4);
    let ids: HashSet<&str> = got
        .iter()
        .filter_map(|d| d.event["event_id"].as_str())
        .collect();
    assert_eq!(ids.len(), 1, "event_id changed between attempts: {got:?}");
    assert!(got
        .iter()
        .all(|d| d.body == got[0].body && d.signed_with(HOOK_SECRET)));
    let gaps: Vec<Duration> = got.windows(2).map(|w| w[1].at - w[0].at).collect();
    println!("webhook: retry gaps {gaps:?}");
    // Answered 200 the fourth time: not posted again.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(rx.got().len(), 4);
    let m = node.metrics();
    assert_eq!(m.value("weim_webhook_retries_total"), 3.0);
    assert_eq!(m.value("weim_webhook_sent_total"), 1.0);
    assert_eq!(m.value("weim_webhook_queue_depth"), 0.0);

    // 429 is retried; a 4xx other than 429 is dropped at once and counted.
    rx.script(&[429, 400]);
    let c = node.new_account();
    befriend(&node, &a, &c);
    let got = rx.wait_for(EVENT_WAIT, "the refused event", |g| g.len() >= 6);
    assert_eq!(got[4].body, got[5].body, "the 429 was not retried");
    node.wait_metric(r#"weim_webhook_dropped_total{reason="rejected"}"#, 1.0);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(rx.got().len(), 6);
    assert_eq!(node.metrics().value("weim_webhook_retries_total"), 4.0);
}

#[test]
fn events_wait_for_a_backend_that_is_down() {
    let rx = Receiver::start();
    let node = hooked(&rx, "friend.added").start();
    rx.set_down(true);
    let (a, b) = (node.new_account(), node.new_account());
    befriend(&node, &a, &b);
    node.wait_metric("weim_webhook_retries_total", 2.0);
    assert!(rx.got().is_empty());
    let back = Instant::now();
    rx.set_down(false);
    let got = rx.wait_for(
        Duration::from_secs(40),
        "the event after the backend came back",
        |g| !g.is_empty(),
    );
    println!(
        "webhook: delivered {:?} after the backend came back",
        got[0].at - back
    );
    assert_eq!(got[0].event["type"], "friend.added");
    // Counted once the receiver's answer is read.
    node.wait_metric("weim_webhook_sent_total", 1.0);
}

#[test]
fn a_hanging_backend_does_not_slow_chat() {
    let rx = Receiver::start();
    rx.hang(true);
    let node = hooked(&rx, "message.offline")
        .env("WEIM_WEBHOOK_TIMEOUT", "30s")
        .start();
    let (a, b, away) = (node.new_account(), node.new_account(), node.new_account());
    befriend(&node, &a, &b);
    befriend(&node, &a, &away);
    // The backend is holding the first event.
    send(&node, &a, &away, "first");
    rx.wait_for(EVENT_WAIT, "the held event", |g| !g.is_empty());
    let mut aw = node.ws_signed_in(&a.token);
    let mut bw = node.ws_signed_in(&b.token);
    let mut rtts = Vec::new();
    for i in 0..50 {
        // Each round also queues a message.offline (behind the held one).
        send(&node, &a, &away, &format!("queued {i}"));
        let body = format!("ping {i}");
        let start = Instant::now();
        aw.send_json(&json!({"Cmd": 20, "ToId": b.id, "Ope": 0, "Type": 0, "Body": body, "Cid": format!("c{i}")}));
        loop {
            let f = bw.recv_json();
            if f["Body"] == body {
                break;
            }
        }
        rtts.push(start.elapsed());
    }
    rtts.sort();
    println!(
        "webhook: chat round trip while the backend hangs: median {:?}, max {:?} (50 messages)",
        rtts[rtts.len() / 2],
        rtts[rtts.len() - 1]
    );
    assert!(rtts[rtts.len() - 1] < Duration::from_secs(3), "{rtts:?}");
    assert!(node.metrics().value("weim_webhook_queue_depth") >= 40.0);
    rx.hang(false);
}

#[test]
fn a_full_queue_drops_the_oldest_events() {
    let rx = Receiver::start();
    rx.hang(true);
    let node = hooked(&rx, "message.offline")
        .env("WEIM_WEBHOOK_QUEUE", "4")
        .env("WEIM_WEBHOOK_TIMEOUT", "30s")
        .start();
    let (a, away) = (node.new_account(), node.new_account());
    befriend(&node, &a, &away);
    let mut ids = vec![send(&node, &a, &away, "m0")];
    // The first is in the backend's hands; nine more find room for four.
    rx.wait_for(EVENT_WAIT, "the held event", |g| g.len() == 1);
    for i in 1..10 {
        ids.push(send(&node, &a, &away, &format!("m{i}")));
    }
    let m = node.metrics();
    assert_eq!(
        m.value(r#"weim_webhook_dropped_total{reason="queue_full"}"#),
        5.0
    );
    assert_eq!(m.value("weim_webhook_queue_depth"), 4.0);
    rx.hang(false);
    let got = rx.wait_for(EVENT_WAIT, "the kept events", |g| g.len() >= 5);
    let delivered: Vec<i64> = got
        .iter()
        .map(|d| d.event["message"]["Id"].as_i64().unwrap())
        .collect();
    let mut want = vec![ids[0]];
    want.extend_from_slice(&ids[6..]);
    assert_eq!(delivered, want, "the newest four after the held one");
}
