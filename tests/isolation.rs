//! Failure isolation (ARCHITECTURE.md, "Failure isolation"): a panic in
//! the committer fails only the batch in hand and the committer carries on;
//! a panic on a reactor fails the node, which answers 503 on `/healthz` and
//! exits with 70; a relation lookup that fails refuses only the messages
//! that needed it. Panics are injected with the test-only `WEIM_FAULT`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// The body that trips the fault `WEIM_FAULT` names.
const TRIGGER: &str = "weim-fault-trigger";
const SEND_USER: &str = "/api/v1/im/chat/send/user";
const CMD_FAIL: i64 = 2;
const CMD_FRIEND_MESSAGE: i64 = 6;
const CMD_SEND_ACK: i64 = 21;
const INTERNAL_ERROR: &str = "服务器内部错误";
const COMMITTER_PANICS: &str = r#"weim_thread_panics_total{thread="committer"}"#;
const BATCHES: &str = "weim_commit_batches_total";

/// The next `n` answers to sends (Cmd 21 or Cmd 2), skipping other frames.
#[track_caller]
fn answers(ws: &mut Ws, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for _ in 0..n + 20 {
        if out.len() == n {
            return out;
        }
        let frame = ws.recv_json();
        if frame["Cmd"] == CMD_SEND_ACK || frame["Cmd"] == CMD_FAIL {
            out.push(frame);
        }
    }
    panic!("only {} of {n} answers: {out:?}", out.len());
}

#[test]
fn a_committer_panic_fails_only_its_batch() {
    let node = Node::builder().env("WEIM_FAULT", "commit-panic").start();
    let (a, b) = (node.new_account(), node.new_account());
    befriend(&node, &a, &b);
    let mut ws_a = caught_up(&node, &a);
    let mut ws_b = caught_up(&node, &b);
    assert_eq!(node.metrics().value(COMMITTER_PANICS), 0.0);

    // The socket sender of the batch that panicked gets Cmd 2.
    socket_send(&mut ws_a, 0, b.id, TRIGGER, "boom");
    let failed = recv_cmd(&mut ws_a, CMD_FAIL);
    assert_eq!(failed["Body"], INTERNAL_ERROR, "{failed}");
    assert_eq!(node.metrics().value(COMMITTER_PANICS), 1.0);

    // The committer carries on: the next message is stored, pushed and
    // acknowledged.
    socket_send(&mut ws_a, 0, b.id, "after the panic", "after");
    let ack = recv_cmd(&mut ws_a, CMD_SEND_ACK);
    assert_eq!(ack["Body"], "after", "{ack}");
    let id = ack["Id"].as_i64().unwrap();
    assert!(id > 0, "{ack}");
    let pushed = recv_cmd(&mut ws_b, CMD_FRIEND_MESSAGE);
    assert_eq!(
        (&pushed["Body"], &pushed["Id"]),
        (&json!("after the panic"), &json!(id)),
        "{pushed}"
    );
    // The panicked message was not stored: b never got it.
    ws_b.expect_silence(QUIET);

    // A REST caller of a batch that panics gets an error, not a wait.
    let started = Instant::now();
    let resp = node.request(&Request::post(SEND_USER).login_token(&a.token).form(&[
        ("to_uid", &b.id.to_string()),
        ("type", "0"),
        ("body", TRIGGER),
    ]));
    assert_eq!(resp.status, 500, "{}", resp.text());
    assert_eq!(resp.envelope()["msg"], INTERNAL_ERROR);
    assert!(started.elapsed() < Duration::from_secs(5));
    let m = node.metrics();
    assert_eq!(m.value(COMMITTER_PANICS), 2.0);
    for other in ["reactor", "worker", "membership", "presence", "bus"] {
        let series = format!(r#"weim_thread_panics_total{{thread="{other}"}}"#);
        assert_eq!(m.value(&series), 0.0, "{series}");
    }
    assert_eq!(node.get("/healthz").status, 200);
}

#[test]
fn a_reactor_panic_fails_the_node_and_ends_the_process() {
    let mut node = Node::builder().env("WEIM_FAULT", "reactor-panic").start();
    let a = node.new_account();
    let mut ws = node.ws_signed_in(&a.token);
    socket_send(&mut ws, 0, a.id + 1, TRIGGER, "boom");

    // The other reactor answers /healthz with 503 until the process ends;
    // each attempt is a new connection with a short wait, in case the dead
    // reactor's listener took it before it closed.
    let mut seen = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while seen.is_none() && Instant::now() < deadline {
        let mut http = node.http();
        let _ = http
            .stream()
            .set_read_timeout(Some(Duration::from_millis(300)));
        http.send(&Request::get("/healthz"));
        if let Ok(resp) = http.try_read_response() {
            if resp.status == 503 {
                seen = Some(resp.text());
            }
        }
    }
    let Some(text) = seen else {
        panic!("/healthz never answered 503\n{}", node.log());
    };
    assert!(
        text.starts_with("failed: thread weim-reactor-") && text.contains("panicked"),
        "{text}"
    );
    let status = node.wait_exit(Duration::from_secs(15));
    let Some(status) = status else {
        panic!("the failed node did not exit\n{}", node.log());
    };
    assert_eq!(status.code(), Some(70), "{status}\n{}", node.log());
}

/// Holds SQLite's write lock on the node's database while `queue` runs, so
/// that what it sends waits behind the committer's batch in hand and is
/// then stored as one batch.
fn one_batch(db: &Path, ws: &mut Ws, blocker: impl FnOnce(&mut Ws), queue: impl FnOnce(&mut Ws)) {
    let mut lock = rusqlite::Connection::open(db).unwrap();
    lock.busy_timeout(Duration::from_secs(5)).unwrap();
    let tx = lock
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .unwrap();
    // The committer takes this one alone and waits for the lock…
    blocker(ws);
    std::thread::sleep(Duration::from_millis(300));
    // …while these queue up behind it.
    queue(ws);
    std::thread::sleep(Duration::from_millis(300));
    tx.rollback().unwrap();
}

#[test]
fn a_failed_relation_lookup_refuses_only_the_messages_that_needed_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::builder().data_dir(dir.path()).start();
    let db = dir.path().join("weim.db");
    let (a, b) = (node.new_account(), node.new_account());
    befriend(&node, &a, &b);
    let group = |name: &str| {
        let created = node.api_as(&a.token, "/api/v1/im/group/create", &[("name", name)]);
        expect_ok(&created, "创建成功")["id"].as_i64().unwrap()
    };
    let (good, broken) = (group(&unique_name("ok")), group(&unique_name("bad")));
    // A member row whose user id cannot be read: that group's member
    // list fails to load.
    let fix = rusqlite::Connection::open(&db).unwrap();
    fix.busy_timeout(Duration::from_secs(5)).unwrap();
    fix.execute(
        "INSERT INTO group_members (group_id, user_id, joined_at) VALUES (?1, -1, 0)",
        [broken],
    )
    .unwrap();
    let mut ws = caught_up(&node, &a);

    // One group's member list fails: its message only is refused.
    let batches = node.metrics().value(BATCHES);
    one_batch(
        &db,
        &mut ws,
        |ws| socket_send(ws, 1, good, "first", "c0"),
        |ws| {
            socket_send(ws, 1, broken, "to the broken group", "c1");
            socket_send(ws, 1, good, "to the good group", "c2");
            socket_send(ws, 0, b.id, "to a friend", "c3");
        },
    );
    let got = answers(&mut ws, 4);
    assert_eq!(
        node.metrics().value(BATCHES),
        batches + 2.0,
        "not one batch"
    );
    let acked: Vec<&Value> = got.iter().filter(|f| f["Cmd"] == CMD_SEND_ACK).collect();
    let bodies: Vec<&str> = acked.iter().map(|f| f["Body"].as_str().unwrap()).collect();
    assert_eq!(bodies, ["c0", "c2", "c3"], "{got:?}");
    let failed: Vec<&Value> = got.iter().filter(|f| f["Cmd"] == CMD_FAIL).collect();
    assert_eq!(failed.len(), 1, "{got:?}");
    assert_eq!(failed[0]["Body"], INTERNAL_ERROR, "{got:?}");

    // The friendship query fails: the friend messages only are refused.
    fix.execute_batch("ALTER TABLE friends RENAME TO friends_gone")
        .unwrap();
    let batches = node.metrics().value(BATCHES);
    one_batch(
        &db,
        &mut ws,
        |ws| socket_send(ws, 1, good, "second", "c4"),
        |ws| {
            socket_send(ws, 0, b.id, "to a friend", "c5");
            socket_send(ws, 1, good, "to the good group", "c6");
        },
    );
    let got = answers(&mut ws, 3);
    assert_eq!(
        node.metrics().value(BATCHES),
        batches + 2.0,
        "not one batch"
    );
    let acked: Vec<&str> = got
        .iter()
        .filter(|f| f["Cmd"] == CMD_SEND_ACK)
        .map(|f| f["Body"].as_str().unwrap())
        .collect();
    assert_eq!(acked, ["c4", "c6"], "{got:?}");
    let failed: Vec<&Value> = got.iter().filter(|f| f["Cmd"] == CMD_FAIL).collect();
    assert_eq!(failed.len(), 1, "{got:?}");
    assert_eq!(failed[0]["Body"], INTERNAL_ERROR, "{got:?}");
}
