//! Catching up on sign-in: a device still receiving its pending messages
//! when its user sends a message from another device holds that live
//! message back; since the user's own message is never pending for them,
//! the catching up must still end (it used to start over forever, one job
//! after another).
//!
//! Runs on MariaDB (`TEST_MYSQL_URL`, see `tests/common`).

mod common;

use std::time::Duration;

use common::*;
use mysql::prelude::Queryable;
use serde_json::json;

const PENDING: usize = 600;

#[test]
fn own_message_during_catch_up_does_not_restart_it_forever() {
    let node = Node::start_on(Store::Mysql);
    let a = node.new_account();
    let b = node.new_account();
    let mut db = mysql::Conn::new(mysql::Opts::from_url(&mysql_url()).unwrap()).unwrap();
    for (x, y) in [(a.id, b.id), (b.id, a.id)] {
        db.exec_drop(
            "INSERT IGNORE INTO friends (user_id, friend_id, created_at) VALUES (?, ?, ?)",
            (x, y, now_secs()),
        )
        .unwrap();
    }
    // Many pending messages for `a`, so that catching up takes a while.
    let mut wb = node.ws_signed_in(&b.token);
    for i in 0..PENDING {
        wb.send_json(&json!({"Cmd": 20, "ToId": a.id, "Ope": 0, "Type": 0, "Body": format!("m{i}"), "Cid": format!("c{i}")}));
    }
    for _ in 0..PENDING {
        let ack = wb.recv_json();
        assert_eq!(ack["Cmd"], 21, "{ack}");
    }

    // Device 2 starts catching up; device 1 signs in and sends at once.
    let mut d2 = node.ws();
    d2.send_json(&json!({"Cmd": 3, "Body": a.token}));
    let mut d1 = node.ws_signed_in(&a.token);
    d1.send_json(
        &json!({"Cmd": 20, "ToId": b.id, "Ope": 0, "Type": 0, "Body": "mine", "Cid": "own"}),
    );

    // Device 2 gets its sign-in answer and every pending message.
    let mut pending = 0;
    while pending < PENDING {
        let Some(f) = d2.recv_json_within(Duration::from_secs(10)) else {
            panic!("device 2 stopped after {pending} pending messages");
        };
        if f["Cmd"] == 6 && f["FromId"] == b.id {
            pending += 1;
        }
    }
    // Then the node goes quiet: no catch-up job runs again and again.
    std::thread::sleep(Duration::from_millis(500));
    let before = node.metrics().value("weim_job_latency_seconds_count");
    std::thread::sleep(Duration::from_millis(1000));
    let after = node.metrics().value("weim_job_latency_seconds_count");
    assert!(
        after - before < 10.0,
        "{} jobs in one idle second: catching up never ends",
        after - before
    );
}
