//! A hostile client's reach, end to end: rate limits on socket frames and
//! on a user's sends (weighted by recipients, over REST too), caps on
//! connections per address and on connections not signed in, running out
//! of file descriptors, and a second node on a port in use.

mod common;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const TOO_FAST: &str = "发送过快";
const CMD_FAIL: i64 = 2;
const CMD_SEND_ACK: i64 = 21;
const CMD_PONG: i64 = 31;
const SEND_USER: &str = "/api/v1/im/chat/send/user";
const SEND_GROUP: &str = "/api/v1/im/chat/send/group";

/// The bytes of `n` Cmd 20 frames from one client to `to`, Cid `c0`…
fn sends(to: i64, n: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    for i in 0..n {
        let msg = json!({"Cmd": 20, "Ope": 0, "ToId": to, "Type": 0, "Body": format!("m{i}"), "Cid": format!("c{i}")});
        bytes.extend(client_frame(true, OP_TEXT, msg.to_string().as_bytes()));
    }
    bytes
}

/// What a client heard from the node.
#[derive(Default, Debug)]
struct Heard {
    acks: usize,
    too_fast: usize,
    close: Option<u16>,
}

impl Heard {
    /// Reads frames until `until` (or a close frame, or `want` acks).
    fn read(&mut self, ws: &mut RawWs, until: Instant, want: usize) {
        while Instant::now() < until && self.close.is_none() && self.acks < want {
            let left = until.saturating_duration_since(Instant::now());
            ws.set_read_timeout(left.max(Duration::from_millis(1)));
            match ws.read_frame() {
                Ok(Some(f)) if f.opcode == OP_CLOSE => self.close = f.close_code(),
                Ok(Some(f)) if f.opcode == OP_TEXT => {
                    let v = f.json();
                    match v["Cmd"].as_i64() {
                        Some(CMD_SEND_ACK) => {
                            assert_eq!(v["Body"], format!("c{}", self.acks), "in order: {v}");
                            self.acks += 1;
                        }
                        Some(CMD_FAIL) if v["Body"] == TOO_FAST => self.too_fast += 1,
                        _ => panic!("unexpected frame {v}"),
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => panic!("connection ended without a close frame: {self:?}"),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("reading: {e} ({self:?})"),
            }
        }
    }
}

/// Two friends, the first signed in on a raw WebSocket.
fn friends_on_raw_ws(node: &Node) -> (Account, Account, RawWs) {
    let a = node.new_account();
    let b = node.new_account();
    befriend(node, &a, &b);
    let mut ws = node.raw_ws();
    ws.send_json(&json!({"Cmd": 3, "Body": a.token}));
    assert_eq!(ws.recv_json()["Cmd"], 4);
    (a, b, ws)
}

/// A socket sending Cmd 20 flat out gets at most `burst + rate × elapsed`
/// stored, hears `发送过快` once, and every message is stored in order in
/// the end, on a connection that still answers.
#[test]
fn a_flood_is_paced_told_once_and_the_connection_still_works() {
    const RATE: usize = 20;
    const BURST: usize = 20;
    const N: usize = 80;
    let node = Node::builder()
        .env("WEIM_LIMITS_CMD_RATE", &RATE.to_string())
        .env("WEIM_LIMITS_CMD_BURST", &BURST.to_string())
        .env("WEIM_LIMITS_FLOOD_CLOSE", "0s")
        .start();
    let (a, b, mut ws) = friends_on_raw_ws(&node);

    let start = Instant::now();
    ws.send_bytes(&sends(b.id, N));
    let mut heard = Heard::default();
    heard.read(&mut ws, start + Duration::from_millis(1000), N);
    // Measured after the last ack read: at least the node's elapsed time.
    let elapsed = start.elapsed().as_secs_f64();
    let bound = BURST + (RATE as f64 * elapsed) as usize + 1;
    assert!(
        heard.acks <= bound,
        "{} of {N} stored within {elapsed:.2} s, at most {bound} allowed",
        heard.acks
    );
    assert!(
        heard.acks < N,
        "the whole flood was stored at once: {heard:?}"
    );

    // The rest follows at the rate; one warning for the whole flood.
    heard.read(&mut ws, Instant::now() + Duration::from_secs(20), N);
    assert_eq!(heard.acks, N, "{heard:?}");
    assert_eq!(heard.too_fast, 1, "{heard:?}");
    assert_eq!(heard.close, None);
    ws.send_json(&json!({"Cmd": 30}));
    assert_eq!(ws.recv_json()["Cmd"], CMD_PONG);
    // Stored once each: the history holds the whole flood.
    let history = node.api_as(
        &a.token,
        "/api/v1/im/chat/history",
        &[("peer", &b.id.to_string()), ("size", "100")],
    );
    let list = expect_ok(&history, "请求成功")["list"].clone();
    assert_eq!(list.as_array().map(Vec::len), Some(N), "{history}");
    let m = node.metrics();
    assert!(m.value("weim_rate_limited_total{kind=\"command\"}") >= 1.0);
    assert_eq!(m.value("weim_closes_total{reason=\"flood\"}"), 0.0);
}

/// A client held back at every token for `limits.flood_close` is closed
/// with 1008.
#[test]
fn sustained_flooding_is_closed_with_1008() {
    let node = Node::builder()
        .env("WEIM_LIMITS_CMD_RATE", "10")
        .env("WEIM_LIMITS_CMD_BURST", "5")
        .env("WEIM_LIMITS_FLOOD_CLOSE", "1s")
        .start();
    let (_a, b, mut ws) = friends_on_raw_ws(&node);
    // 200 frames need 20 s at 10 a second: the client stays over the
    // limit far longer than a second.
    ws.send_bytes(&sends(b.id, 200));
    let mut heard = Heard::default();
    heard.read(&mut ws, Instant::now() + Duration::from_secs(15), 200);
    assert_eq!(heard.close, Some(CLOSE_POLICY), "{heard:?}");
    assert_eq!(heard.too_fast, 1, "{heard:?}");
    assert!(heard.acks < 200, "{heard:?}");
    ws.expect_end(Duration::from_secs(5));
    assert_eq!(
        node.metrics().value("weim_closes_total{reason=\"flood\"}"),
        1.0
    );
}

/// A group with `owner` and `others` as members (join requests accepted
/// through REST); its id.
fn group_of(node: &Node, owner: &Account, others: &[Account]) -> i64 {
    let reply = node.api_as(
        &owner.token,
        "/api/v1/im/group/create",
        &[("name", &unique_name("g"))],
    );
    let group = expect_ok(&reply, "创建成功")["id"].as_i64().unwrap();
    let gid = group.to_string();
    for who in others {
        let asked = node.api_as(
            &who.token,
            "/api/v1/im/group/join/request",
            &[("group_id", &gid)],
        );
        expect_ok(&asked, "申请成功");
    }
    let list = node.api_as(&owner.token, "/api/v1/im/group/join/list", &[]);
    for req in expect_ok(&list, "获取成功")["list"].as_array().unwrap() {
        let join = req["JoinId"].as_i64().unwrap().to_string();
        let done = node.api_as(
            &owner.token,
            "/api/v1/im/group/join/handle",
            &[("join_id", &join), ("status", "1")],
        );
        expect_ok(&done, "处理成功");
    }
    group
}

/// REST sends until the first refusal (at most `max`): how many were
/// stored, and the refusal.
fn send_until_refused(
    node: &Node,
    token: &str,
    path: &str,
    to: (&str, &str),
    max: usize,
) -> (usize, Response) {
    for i in 0..max {
        let body = format!("r{i}");
        let resp = node.request(&Request::post(path).login_token(token).form(&[
            to,
            ("type", "0"),
            ("body", &body),
        ]));
        if resp.status != 200 {
            return (i, resp);
        }
        expect_ok(&resp.api(), "发送成功");
    }
    panic!("{max} sends over {path} and none refused");
}

/// The send limit counts recipients: with a burst of 6, six friend
/// messages pass, but only two messages to a group of six (five
/// recipients each); a refused REST send is answered 429 `发送过快`.
#[test]
fn a_group_send_costs_its_recipients() {
    let node = Node::builder()
        .env("WEIM_LIMITS_SEND_RATE", "1")
        .env("WEIM_LIMITS_SEND_BURST", "6")
        .start();
    let start = Instant::now();
    let a = node.new_account();
    let b = node.new_account();
    befriend(&node, &a, &b);
    let (friend_sends, refusal) = send_until_refused(
        &node,
        &a.token,
        SEND_USER,
        ("to_uid", &b.id.to_string()),
        30,
    );
    assert_eq!(refusal.status, 429, "{}", refusal.text());
    let env = refusal.envelope();
    assert_eq!(
        (env["code"].as_i64(), env["msg"].as_str()),
        (Some(CODE_FAIL), Some(TOO_FAST))
    );
    assert!(refusal.header("Retry-After").is_some(), "{refusal:?}");

    let owner = node.new_account();
    let others: Vec<Account> = (0..5).map(|_| node.new_account()).collect();
    let group = group_of(&node, &owner, &others);
    let (group_sends, refusal) = send_until_refused(
        &node,
        &owner.token,
        SEND_GROUP,
        ("group_id", &group.to_string()),
        30,
    );
    assert_eq!(refusal.status, 429, "{}", refusal.text());
    // One unit a second comes back while the test runs.
    let refilled = start.elapsed().as_secs() as usize;
    assert!(friend_sends >= 6, "{friend_sends} friend messages");
    assert!(
        group_sends <= 2 + refilled / 5,
        "{group_sends} group messages of 5 recipients with a burst of 6 ({refilled} s of refill)"
    );
    assert!(group_sends < friend_sends);
    assert!(
        node.metrics()
            .value("weim_rate_limited_total{kind=\"rest\"}")
            >= 2.0
    );
}

/// The send limit is the user's, over all their devices: a group message
/// that costs more than the burst leaves the user in debt, so the next
/// send, from another device, waits (told once) until the rate has paid
/// the debt back, and is stored then.
#[test]
fn the_send_limit_spans_a_users_devices() {
    let node = Node::builder()
        .env("WEIM_LIMITS_SEND_RATE", "1")
        .env("WEIM_LIMITS_SEND_BURST", "3")
        .start();
    let owner = node.new_account();
    let others: Vec<Account> = (0..5).map(|_| node.new_account()).collect();
    let group = group_of(&node, &owner, &others);
    let to_group = |cid: &str| {
        let msg = json!({"Cmd": 20, "Ope": 1, "ToId": group, "Type": 0, "Body": "hi", "Cid": cid});
        client_frame(true, OP_TEXT, msg.to_string().as_bytes())
    };
    // Five recipients with a burst of three: admitted, then 2 in debt
    // (three seconds at one a second until the next send may go).
    let mut first = node.raw_ws();
    first.send_json(&json!({"Cmd": 3, "Body": owner.token}));
    assert_eq!(first.recv_json()["Cmd"], 4);
    first.send_bytes(&to_group("c0"));
    let mut heard = Heard::default();
    heard.read(&mut first, Instant::now() + Duration::from_secs(10), 1);
    assert_eq!((heard.acks, heard.too_fast), (1, 0), "{heard:?}");

    let mut second = node.raw_ws();
    second.send_json(&json!({"Cmd": 3, "Body": owner.token}));
    assert_eq!(second.recv_json()["Cmd"], 4);
    second.send_bytes(&to_group("c0"));
    let mut later = Heard::default();
    later.read(&mut second, Instant::now() + Duration::from_secs(10), 1);
    assert_eq!((later.acks, later.too_fast), (1, 1), "{later:?}");
    assert_eq!(
        node.metrics()
            .value("weim_rate_limited_total{kind=\"send\"}"),
        1.0
    );
}

/// Whether the node closed `stream` as soon as it took it: a request on
/// it is neither answered nor left waiting (`within` bounds the wait).
fn closed_at_once(stream: &mut TcpStream, within: Duration) -> bool {
    let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: weim.test\r\n\r\n");
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
            ) =>
        {
            true
        }
        Err(e) => panic!("neither answered nor closed within {within:?}: {e}"),
    }
}

/// A keep-alive HTTP connection from `from` that the node answered.
#[track_caller]
fn answered_from(node: &Node, from: &str) -> Http {
    let mut http = Http::over(tcp_connect_from(node.addr, from));
    let resp = http.request(&Request::get("/"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    http
}

/// `limits.conns_per_ip`: the (cap + 1)-th connection from one address is
/// closed at once while another address still connects, and a closed
/// connection makes room again.
#[test]
fn the_per_address_cap_refuses_the_next_connection_from_that_address_only() {
    let node = Node::builder().env("WEIM_LIMITS_CONNS_PER_IP", "3").start();
    let mut held: Vec<Http> = (0..3).map(|_| answered_from(&node, "127.0.0.7")).collect();
    let mut fourth = tcp_connect_from(node.addr, "127.0.0.7");
    assert!(
        closed_at_once(&mut fourth, IO_TIMEOUT),
        "a fourth connection from 127.0.0.7 was answered"
    );
    let _other = answered_from(&node, "127.0.0.8");
    let m = node.metrics();
    assert_eq!(m.value("weim_conns_refused_total{reason=\"per_ip\"}"), 1.0);

    held.pop();
    let mut again = None;
    assert!(
        wait_until(Duration::from_secs(5), || {
            let mut s = tcp_connect_from(node.addr, "127.0.0.7");
            if closed_at_once(&mut s, IO_TIMEOUT) {
                return false;
            }
            again = Some(s);
            true
        }),
        "no room for 127.0.0.7 after one of its connections closed"
    );
}

/// `limits.max_unauthenticated` counts every connection not signed in
/// (node-wide, whatever its address); signing in makes room.
#[test]
fn connections_not_signed_in_are_capped_node_wide() {
    let node = Node::builder()
        .env("WEIM_LIMITS_MAX_UNAUTHENTICATED", "4")
        .start();
    // Registered over a connection kept open: the first of four.
    let name = unique_name("u");
    let mut http = Http::connect(node.addr);
    let reply = http
        .request(
            &Request::post("/api/v1/register").form(&[("username", &name), ("password", PASSWORD)]),
        )
        .api();
    let a = Account::from_sign_in(&name, &reply);
    let mut pending: Vec<RawWs> = ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
        .iter()
        .map(|from| RawWs::over(tcp_connect_from(node.addr, from)))
        .collect();
    let mut fifth = tcp_connect_from(node.addr, "127.0.0.14");
    assert!(
        closed_at_once(&mut fifth, IO_TIMEOUT),
        "a fifth connection not signed in was answered"
    );

    pending[0].send_json(&json!({"Cmd": 3, "Body": a.token}));
    assert_eq!(pending[0].recv_json()["Cmd"], 4);
    // Three are not signed in now: one more fits.
    let mut fifth_again = answered_from(&node, "127.0.0.14");
    let m = Metrics(fifth_again.request(&Request::get("/metrics")).text());
    assert_eq!(
        m.value("weim_conns_refused_total{reason=\"unauthenticated\"}"),
        1.0
    );
    assert_eq!(m.value("weim_conns_refused_total{reason=\"per_ip\"}"), 0.0);
}

/// Out of file descriptors, a new connection is closed at once instead of
/// waiting; once descriptors free up, the connections waiting in the
/// backlog are accepted and answered (`/healthz` included) without any new
/// connection arriving.
#[test]
fn out_of_descriptors_the_listener_recovers_by_itself() {
    let node = Node::builder()
        .nofile(96)
        .env("WEIM_LIMITS_CONNS_PER_IP", "0")
        .env("WEIM_LIMITS_MAX_UNAUTHENTICATED", "0")
        .start();
    let mut held: Vec<Http> = Vec::new();
    let mut refused = false;
    for _ in 0..200 {
        let mut http = Http::over(tcp_connect(node.addr));
        http.send(&Request::get("/"));
        match http.try_read_response() {
            Ok(resp) => {
                assert_eq!(resp.status, 200);
                held.push(http);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
                ) =>
            {
                refused = true;
                break;
            }
            Err(e) => panic!(
                "connection {} neither answered nor closed: {e}",
                held.len() + 1
            ),
        }
    }
    assert!(
        refused,
        "200 connections held under a limit of 96 descriptors"
    );
    assert!(!held.is_empty());
    let metrics = held[0].request(&Request::get("/metrics"));
    assert!(metrics
        .text()
        .contains("weim_conns_refused_total{reason=\"emfile\"}"));
    let emfile = Metrics(metrics.text()).value("weim_conns_refused_total{reason=\"emfile\"}");
    assert!(emfile >= 1.0, "{emfile}");

    // These wait in the backlog (the node has no descriptor for them).
    let mut queued: Vec<TcpStream> = (0..10).map(|_| tcp_connect(node.addr)).collect();
    for s in &mut queued {
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: weim.test\r\n\r\n")
            .unwrap();
    }
    drop(held);
    let (mut answered, mut closed) = (0, 0);
    for s in &mut queued {
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut buf = [0u8; 256];
        match s.read(&mut buf) {
            Ok(0) => closed += 1,
            Ok(n) => {
                let head = String::from_utf8_lossy(&buf[..n]);
                assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                answered += 1;
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionReset) => closed += 1,
            Err(e) => panic!("a waiting connection was neither answered nor closed: {e} ({answered} answered, {closed} closed)"),
        }
    }
    assert!(
        answered >= 1,
        "none of the waiting connections answered ({closed} closed)"
    );
    assert_eq!(node.get("/healthz").status, 200);
}

/// A second node on an address another process listens on exits with 2
/// and one line naming the address, whether that listener shares the port
/// (`SO_REUSEPORT`, as another weim) or not; the first node goes on.
#[test]
fn a_second_node_on_a_port_in_use_exits_2_naming_the_address() {
    let first = Node::start();
    let addr = first.addr.to_string();
    let (status, stderr) = Node::builder()
        .env("WEIM_HTTP_LISTEN", &addr)
        .expect_exit(START_TIMEOUT);
    assert_eq!(status.code(), Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with("weim: ") && lines[0].contains(&addr),
        "{stderr}"
    );
    assert_eq!(first.get("/").status, 200);

    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = plain.local_addr().unwrap().to_string();
    let (status, stderr) = Node::builder()
        .env("WEIM_HTTP_LISTEN", &taken)
        .expect_exit(START_TIMEOUT);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&taken), "{stderr}");
}
