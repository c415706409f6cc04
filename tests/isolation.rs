//! Failure isolation: a relation lookup of the committer that fails
//! refuses only the messages that needed it.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const CMD_FAIL: i64 = 2;
const CMD_SEND_ACK: i64 = 21;
const INTERNAL_ERROR: &str = "服务器内部错误";
const BATCHES: &str = "weim_commit_batches_total";

fn socket_send(ws: &mut Ws, ope: i64, to: i64, body: &str, cid: &str) {
    ws.send_json(&json!({"Cmd": 20, "Ope": ope, "ToId": to, "Type": 0, "Body": body, "Cid": cid}));
}

/// Receives frames until one with this Cmd (bounded: notices of the setup
/// may come first).
#[track_caller]
fn recv_cmd(ws: &mut Ws, cmd: i64) -> Value {
    for _ in 0..20 {
        let frame = ws.recv_json();
        if frame["Cmd"] == cmd {
            return frame;
        }
    }
    panic!("no Cmd {cmd} within 20 frames");
}

/// A socket signed in and done catching up.
fn caught_up(node: &Node, who: &Account) -> Ws {
    let mut ws = node.ws_signed_in(&who.token);
    ws.send_json(&json!({"Cmd": 30}));
    recv_cmd(&mut ws, 31);
    ws
}

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
