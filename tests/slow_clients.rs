//! Slow clients against the delivery contract (`src/delivery/mod.rs`), over
//! real sockets:
//! - a large backlog reaches a slow client that acknowledges and keeps
//!   dropping its connection, with nothing lost;
//! - it reaches a slow client that never acknowledges on one connection,
//!   which the node never drops (catching up is flow-controlled);
//! - a client that stops reading live pushes is dropped as a slow consumer,
//!   and what was merely written to it (not received) comes again;
//! - a 20 MiB file is downloaded by a slow reader (and through a shaped
//!   link between two network namespaces, when `ip netns` is available)
//!   whole, resumable with `Range`, with `HEAD`, and without the node's
//!   memory growing with the file;
//! - a download on a link so slow that one piece of the body takes longer
//!   than `limits.http_timeout` to go out is not cut.
//!
//! Keepalive of idle clients is in `tests/keepalive.rs`.

mod common;

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const CMD_SIGNED_IN: i64 = 4;
const CMD_FRIEND_MESSAGE: i64 = 6;
const CMD_SEND_ACK: i64 = 21;
const CMD_PONG: i64 = 31;

/// Messages in the backlog of the catching-up tests.
const BACKLOG: usize = 5_000;
/// Body of a backlog message, bytes (about 2 KB a frame).
const BACKLOG_BODY: usize = 2_000;
/// `SO_RCVBUF` of a slow client (the kernel doubles it).
const SLOW_RCVBUF: usize = 4 * 1024;
/// How fast a slow client reads, bytes a second.
const SLOW_RATE: u64 = 2_000_000;
/// Bytes a slow client reads at a time.
const SLOW_CHUNK: usize = 8 * 1024;
/// Cmd 20 sent before their Cmd 21 answers are read.
const SEND_WINDOW: usize = 250;
const SLOW_CONSUMER_DROPS: &str = "weim_slow_consumer_drops_total";

/// A node for these tests' senders, which store thousands of messages over
/// one socket as fast as their answers come: far over the default
/// `limits.cmd_rate` and `limits.send_rate` (clients over those are
/// `tests/limits.rs`'s business).
fn bulk_node() -> Node {
    Node::builder()
        .env("WEIM_LIMITS_CMD_RATE", "0")
        .env("WEIM_LIMITS_SEND_RATE", "0")
        .start()
}

/// Two friends: (sender, recipient).
fn friends(node: &Node) -> (Account, Account) {
    let (a, b) = (node.new_account(), node.new_account());
    befriend(node, &a, &b);
    (a, b)
}

/// Sends `n` messages with bodies of `size` bytes to `to` over `ws` (Cmd
/// 20, `SEND_WINDOW` at a time before reading their answers); returns the
/// stored ids in sending order.
#[track_caller]
fn send_many(ws: &mut Ws, to: &Account, n: usize, size: usize, tag: &str) -> Vec<i64> {
    let pad = "x".repeat(size);
    let mut ids = Vec::with_capacity(n);
    let mut sent = 0;
    while sent < n {
        let window = SEND_WINDOW.min(n - sent);
        for i in sent..sent + window {
            let body = format!("{tag}{i:05} {}", &pad[..size - tag.len() - 6]);
            ws.send_json(&json!({"Cmd": 20, "Ope": 0, "ToId": to.id, "Type": 0, "Body": body, "Cid": format!("{tag}{i}")}));
        }
        for i in sent..sent + window {
            let ack = ws.recv_json();
            assert_system_frame(&ack, CMD_SEND_ACK);
            assert_eq!(ack["Body"], format!("{tag}{i}"), "{ack}");
            ids.push(ack["Id"].as_i64().unwrap());
        }
        sent += window;
    }
    ids
}

/// `n` messages of `size` bytes from `from` to `to`, stored while `to` is
/// offline; their ids.
#[track_caller]
fn backlog(node: &Node, from: &Account, to: &Account, n: usize, size: usize) -> Vec<i64> {
    let start = Instant::now();
    let mut ws = node.ws_signed_in(&from.token);
    let ids = send_many(&mut ws, to, n, size, "b");
    ws.close(CLOSE_NORMAL);
    eprintln!("backlog of {n} × {size} B stored in {:?}", start.elapsed());
    ids
}

/// A friend message's id, checking that it is one of `want` (or `also`).
#[track_caller]
fn message_id(frame: &Value, want: &HashSet<i64>, also: Option<i64>) -> i64 {
    assert_server_frame(frame, CMD_FRIEND_MESSAGE);
    let id = frame["Id"].as_i64().unwrap();
    assert!(
        want.contains(&id) || also == Some(id),
        "a message that was not sent: {id}"
    );
    id
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// A slow client (small receive buffer, paced reads) on `/ws`, sign-in sent.
fn slow_client(node: &Node, token: &str, acks: bool) -> RawWs {
    let mut ws = RawWs::over(tcp_connect_rcvbuf(node.addr, SLOW_RCVBUF));
    if acks {
        ws.send_json(&json!({"Cmd": 3, "Body": token, "Ack": true}));
    } else {
        ws.send_json(&json!({"Cmd": 3, "Body": token}));
    }
    ws.pace(SLOW_RATE, SLOW_CHUNK);
    ws
}

/// The ids in `want` that are not in `got`, a few of them.
fn missing(want: &HashSet<i64>, got: &HashSet<i64>) -> Vec<i64> {
    let mut m: Vec<i64> = want.difference(got).copied().collect();
    m.sort_unstable();
    m.truncate(10);
    m
}

/// Friend messages received so far, against those sent.
struct Inbox<'a> {
    want: &'a HashSet<i64>,
    /// Another id that may come (a message sent before `want`).
    also: Option<i64>,
    got: HashSet<i64>,
    frames: usize,
}

impl<'a> Inbox<'a> {
    fn new(want: &'a HashSet<i64>, also: Option<i64>) -> Inbox<'a> {
        Inbox {
            want,
            also,
            got: HashSet::new(),
            frames: 0,
        }
    }

    fn complete(&self) -> bool {
        self.want.is_subset(&self.got)
    }

    fn missing(&self) -> usize {
        self.want.difference(&self.got).count()
    }
}

/// How reading a connection ended.
#[derive(Debug, PartialEq)]
enum Ended {
    /// Every message has arrived.
    Complete,
    /// The client's time on this connection is up.
    Deadline,
    /// Nothing arrived for the given quiet time.
    Quiet,
    /// The node closed or dropped the connection.
    ByNode(String),
}

/// Reads friend messages from `ws` into `inbox` until every one has
/// arrived, `until`, `quiet` without a frame, or the connection ends;
/// acknowledges (Cmd 22) every `ack_every` messages. Returns how it ended
/// and the messages read.
fn read_messages(
    ws: &mut RawWs,
    inbox: &mut Inbox<'_>,
    until: Instant,
    quiet: Duration,
    ack_every: Option<usize>,
) -> (Ended, usize) {
    ws.set_read_timeout(Duration::from_millis(100));
    let (mut here, mut unacked) = (0usize, 0usize);
    let mut last_frame = Instant::now();
    loop {
        if inbox.complete() {
            return (Ended::Complete, here);
        }
        let now = Instant::now();
        if now >= until {
            return (Ended::Deadline, here);
        }
        if now.duration_since(last_frame) >= quiet {
            return (Ended::Quiet, here);
        }
        let frame = match ws.read_frame() {
            Ok(Some(frame)) => frame,
            Ok(None) => return (Ended::ByNode("end of stream".into()), here),
            Err(e) if is_timeout(&e) => continue,
            Err(e) => return (Ended::ByNode(e.to_string()), here),
        };
        last_frame = Instant::now();
        match frame.opcode {
            OP_TEXT => {}
            OP_PING | OP_PONG => continue,
            OP_CLOSE => {
                return (
                    Ended::ByNode(format!("close {:?}", frame.close_code())),
                    here,
                )
            }
            _ => panic!("unexpected frame {frame:?}"),
        }
        let v = frame.json();
        if v["Cmd"] == CMD_SIGNED_IN {
            continue;
        }
        let id = message_id(&v, inbox.want, inbox.also);
        inbox.got.insert(id);
        inbox.frames += 1;
        here += 1;
        unacked += 1;
        if ack_every.is_some_and(|n| unacked >= n) {
            ws.send_json(&json!({"Cmd": 22, "Body": id.to_string()}));
            unacked = 0;
        }
    }
}

/// A slow client that acknowledges every 100 messages and drops its TCP
/// connection (no close frame, unread bytes left behind) every 1–2 s gets
/// every message of a 10 MB backlog. A node that counted written bytes as
/// delivered, or dropped a slow reader while catching it up, loses the
/// messages that were in the socket when it went.
#[test]
fn slow_acknowledging_reader_that_keeps_reconnecting_loses_nothing() {
    let node = bulk_node();
    let (alice, bob) = friends(&node);
    let sent = backlog(&node, &alice, &bob, BACKLOG, BACKLOG_BODY);
    let want: HashSet<i64> = sent.iter().copied().collect();
    assert_eq!(want.len(), BACKLOG);

    let start = Instant::now();
    let mut inbox = Inbox::new(&want, None);
    let (mut conns, mut idle_conns, mut closed_by_node) = (0usize, 0usize, Vec::new());
    while !inbox.complete() {
        assert!(
            conns < 60 && start.elapsed() < Duration::from_secs(60),
            "{} of {BACKLOG} after {conns} connections in {:?}; missing e.g. {:?}",
            inbox.got.len(),
            start.elapsed(),
            missing(&want, &inbox.got)
        );
        // Nothing came for two whole connections while messages are
        // missing: they are no longer pending, they were lost.
        assert!(
            idle_conns < 2,
            "nothing pending any more: {} of {BACKLOG} lost, e.g. {:?}",
            inbox.missing(),
            missing(&want, &inbox.got)
        );
        conns += 1;
        let life = Duration::from_millis(1000 + 500 * (conns as u64 % 3));
        let until = Instant::now() + life;
        let mut ws = slow_client(&node, &bob.token, true);
        let (ended, here) = read_messages(&mut ws, &mut inbox, until, life, Some(100));
        if let Ended::ByNode(how) = ended {
            closed_by_node.push(how);
        }
        idle_conns = if here == 0 { idle_conns + 1 } else { 0 };
        // Abruptly: no close frame; unread bytes make the kernel reset it.
        drop(ws);
    }
    eprintln!(
        "all {BACKLOG} received in {:?} over {conns} connections ({} frames, {} again)",
        start.elapsed(),
        inbox.frames,
        inbox.frames - BACKLOG
    );
    // Catching up never drops a slow reader.
    assert_eq!(
        closed_by_node,
        Vec::<String>::new(),
        "connections the node ended"
    );
    assert_eq!(node.metrics().value(SLOW_CONSUMER_DROPS), 0.0);

    // Acknowledged messages stop coming: once a client acknowledged the
    // last one it got and closed, a later connection finds nothing pending.
    let mut settled = false;
    for round in 0..4 {
        let mut ws = node.raw_ws();
        ws.send_json(&json!({"Cmd": 3, "Body": bob.token, "Ack": true}));
        ws.set_read_timeout(Duration::from_millis(1000));
        let (mut again, mut last) = (0usize, 0i64);
        for _ in 0..=BACKLOG + 1 {
            match ws.read_frame() {
                Ok(Some(f)) if f.opcode == OP_TEXT => {
                    let v = f.json();
                    if v["Cmd"] != CMD_SIGNED_IN {
                        last = message_id(&v, &want, None);
                        again += 1;
                    }
                }
                Ok(Some(_)) => {}
                Err(e) if is_timeout(&e) => break,
                other => panic!("settling: {other:?}"),
            }
        }
        if again == 0 {
            settled = true;
            break;
        }
        eprintln!("settling round {round}: {again} again");
        ws.send_json(&json!({"Cmd": 22, "Body": last.to_string()}));
        ws.send_bytes(&client_frame(true, OP_CLOSE, &close_payload(1000, "")));
        let _ = ws.wait_closed(Duration::from_secs(2));
        // Confirmations are checked against the store every second.
        thread::sleep(Duration::from_millis(1500));
    }
    assert!(settled, "acknowledged messages keep coming back");
}

/// A slow client that never acknowledges, and never disconnects, gets the
/// whole 10 MB backlog on its one connection: catching up waits for its
/// output to drain instead of dropping it as a slow consumer.
#[test]
fn slow_reader_without_acknowledgements_gets_the_whole_backlog_on_one_connection() {
    let node = bulk_node();
    let (alice, bob) = friends(&node);
    let sent = backlog(&node, &alice, &bob, BACKLOG, BACKLOG_BODY);
    let want: HashSet<i64> = sent.iter().copied().collect();

    let start = Instant::now();
    let mut ws = slow_client(&node, &bob.token, false);
    let mut inbox = Inbox::new(&want, None);
    let until = start + Duration::from_secs(60);
    let (ended, _) = read_messages(&mut ws, &mut inbox, until, IO_TIMEOUT, None);
    assert_eq!(
        ended,
        Ended::Complete,
        "after {} of {BACKLOG} in {:?} ({} slow-consumer drops)",
        inbox.got.len(),
        start.elapsed(),
        node.metrics().value(SLOW_CONSUMER_DROPS)
    );
    let took = start.elapsed();
    eprintln!(
        "all {BACKLOG} received in {took:?} ({:.1} MB/s, {} frames)",
        (BACKLOG * BACKLOG_BODY) as f64 / took.as_secs_f64() / 1e6,
        inbox.frames
    );
    assert_eq!(node.metrics().value(SLOW_CONSUMER_DROPS), 0.0);
    // Still open and served.
    ws.set_read_timeout(Duration::from_secs(5));
    ws.send_json(&json!({"Cmd": 30}));
    for _ in 0..=BACKLOG {
        let v = ws.recv_json();
        if v["Cmd"] == CMD_PONG {
            return;
        }
        message_id(&v, &want, None);
    }
    panic!("no pong");
}

/// A client that stops reading while messages are pushed live to it is
/// dropped as a slow consumer (allowed for live pushes). The messages its
/// TCP stack received are still in its socket; everything else, written to
/// the node's side of the socket or still queued, was not delivered: after
/// it reconnects, every message reaches it.
#[test]
fn a_client_dropped_as_slow_consumer_gets_every_message_after_reconnecting() {
    const LIVE: usize = 3_000;
    const LIVE_BODY: usize = 4_000;
    let node = bulk_node();
    let (alice, bob) = friends(&node);
    let mut sender = node.ws_signed_in(&alice.token);

    let mut ws = RawWs::over(tcp_connect_rcvbuf(node.addr, SLOW_RCVBUF));
    ws.send_json(&json!({"Cmd": 3, "Body": bob.token}));
    assert_system_frame(&ws.recv_json(), CMD_SIGNED_IN);
    // A first live message, read: the (empty) catching up is over and what
    // follows is pushed live.
    let warmup = send_many(&mut sender, &bob, 1, 100, "w")[0];
    let first = ws.recv_json();
    assert_server_frame(&first, CMD_FRIEND_MESSAGE);
    assert_eq!(first["Id"], warmup, "{first}");

    // The client reads nothing more while 12 MB are pushed to it.
    let start = Instant::now();
    let sent = send_many(&mut sender, &bob, LIVE, LIVE_BODY, "l");
    let want: HashSet<i64> = sent.iter().copied().collect();
    eprintln!("{LIVE} × {LIVE_BODY} B sent in {:?}", start.elapsed());
    node.wait_metric(SLOW_CONSUMER_DROPS, 1.0);

    // What its kernel had received (and acknowledged) before the node went
    // is the client's; the rest, in the node's socket, goes with it.
    let bytes = ws.read_available();
    let mut got = HashSet::new();
    while let Some(frame) = ws.buffered_frame() {
        if frame.opcode == OP_TEXT {
            got.insert(message_id(&frame.json(), &want, Some(warmup)));
        }
    }
    got.remove(&warmup);
    eprintln!(
        "dropped; {} messages ({bytes} bytes) were in the client's socket",
        got.len()
    );
    assert!(got.len() < LIVE / 2, "the client was not slow");
    drop(ws);

    // It comes back and reads everything (reconnecting if it has to).
    let start = Instant::now();
    let mut inbox = Inbox {
        got,
        ..Inbox::new(&want, Some(warmup))
    };
    let mut closed_by_node = Vec::new();
    for conn in 1.. {
        assert!(
            conn <= 10,
            "{} of {LIVE} after 10 connections",
            inbox.got.len()
        );
        let mut ws = node.raw_ws();
        ws.send_json(&json!({"Cmd": 3, "Body": bob.token}));
        let until = start + Duration::from_secs(30);
        match read_messages(&mut ws, &mut inbox, until, Duration::from_secs(2), None).0 {
            Ended::Complete => break,
            Ended::ByNode(how) => closed_by_node.push(how),
            Ended::Quiet => panic!(
                "nothing more pending: {} of {LIVE} lost, e.g. {:?}",
                inbox.missing(),
                missing(&want, &inbox.got)
            ),
            Ended::Deadline => panic!("{} of {LIVE} in 30 s", inbox.got.len()),
        }
    }
    eprintln!(
        "all {LIVE} received after reconnecting in {:?} ({} frames)",
        start.elapsed(),
        inbox.frames
    );
    // Catching up (unlike live pushes) never drops a reader.
    assert_eq!(
        closed_by_node,
        Vec::<String>::new(),
        "connections the node ended"
    );
}

// ---------------------------------------------------------------------------
// Downloads
// ---------------------------------------------------------------------------

/// The size of the downloaded file.
const FILE_SIZE: usize = 20 << 20;
/// The node's RSS may not grow by this much while serving the file.
const MAX_RSS_GROWTH: u64 = 8 << 20;

/// Uploads the file (type 6) through a node on `data_dir`, then stops it:
/// the file's URL and bytes. The node that serves it starts afresh, so the
/// upload's buffers are not in its memory.
fn stored_file(data_dir: &std::path::Path, size: usize) -> (String, Vec<u8>) {
    let data = file_bytes(size);
    let node = Node::builder()
        .data_dir(data_dir)
        .env("WEIM_LIMITS_MAX_UPLOAD", "21MiB")
        .start();
    let a = node.new_account();
    let reply = node
        .request(
            &Request::post("/api/v1/im/chat/upload")
                .login_token(&a.token)
                .multipart(&[("type", "6")], &[("file", "big.bin", &data)]),
        )
        .api();
    assert_eq!(reply["code"], CODE_OK, "{reply}");
    // Answered absolute (`http://<Host>/files/…`): the path is what is fetched.
    let url = reply["data"]["url"].as_str().unwrap();
    let path = url.find("/files/").map(|i| url[i..].to_string());
    let path = path.unwrap_or_else(|| panic!("{url}"));
    assert!(path.starts_with("/files/file/"), "{url}");
    (path, data)
}

/// A response head as read off a socket.
#[derive(Debug)]
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[track_caller]
    fn content_length(&self) -> u64 {
        match self.header("Content-Length").map(str::parse::<u64>) {
            Some(Ok(n)) => n,
            _ => panic!("no Content-Length: {self:?}"),
        }
    }
}

/// An HTTP client that reads a body piece by piece (at a pace), never
/// holding all of it.
struct Getter {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Getter {
    fn new(stream: TcpStream) -> Getter {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Getter {
            stream,
            buf: Vec::new(),
        }
    }

    #[track_caller]
    fn send(&mut self, method: &str, path: &str, range: Option<u64>) {
        self.send_with(method, path, range, "");
    }

    /// A request with `extra` header lines (each ending in CRLF).
    #[track_caller]
    fn send_with(&mut self, method: &str, path: &str, range: Option<u64>, extra: &str) {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: weim.test\r\n{extra}");
        if let Some(from) = range {
            req.push_str(&format!("Range: bytes={from}-\r\n"));
        }
        req.push_str("\r\n");
        self.stream.write_all(req.as_bytes()).expect("request");
    }

    #[track_caller]
    fn head(&mut self) -> Head {
        for _ in 0..64 {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 4);
                let mut lines = text.split("\r\n");
                let status_line = lines.next().unwrap();
                let status = status_line
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("status line {status_line:?}"));
                let headers = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                    .collect();
                return Head { status, headers };
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("connection ended before a response head"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("reading a response head: {e}"),
            }
        }
        panic!("no response head within 256 KiB");
    }

    /// Reads `len` body bytes (fewer if `stop_at` is reached first) at
    /// `rate` bytes a second (unpaced when 0), `chunk` at a time, into
    /// `hash`; returns how many it read. Panics if the connection ends
    /// or stalls first.
    #[track_caller]
    fn body(&mut self, len: u64, stop_at: u64, rate: u64, chunk: usize, hash: &mut Sha256) -> u64 {
        let want = len.min(stop_at);
        let start = Instant::now();
        let mut got = 0u64;
        let take = self.buf.len().min(want as usize);
        hash.update(&self.buf[..take]);
        self.buf.drain(..take);
        got += take as u64;
        let mut piece = vec![0u8; chunk];
        while got < want {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{got} of {want} bytes in 60 s"
            );
            if rate > 0 {
                let due = Duration::from_secs_f64(got as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    thread::sleep(wait);
                }
            }
            let room = piece.len().min((want - got) as usize);
            match self.stream.read(&mut piece[..room]) {
                Ok(0) => panic!("the node ended the body after {got} of {len} bytes"),
                Ok(n) => {
                    hash.update(&piece[..n]);
                    got += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("after {got} of {len} body bytes: {e}"),
            }
        }
        got
    }
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    Sha256::digest(bytes).to_vec()
}

/// Downloads the whole file through `stream` at `rate` (unpaced when 0)
/// and checks it; the node's peak RSS meanwhile (`VmHWM`, reset before, so
/// even a brief peak counts) may not exceed its RSS before by
/// `MAX_RSS_GROWTH`. Returns (elapsed, growth).
#[track_caller]
fn watched_download(
    node: &Node,
    stream: TcpStream,
    url: &str,
    data: &[u8],
    rate: u64,
) -> (Duration, u64) {
    node.reset_peak_rss();
    let before = node.rss_bytes();
    let start = Instant::now();
    let mut get = Getter::new(stream);
    get.send("GET", url, None);
    let head = get.head();
    assert_eq!(head.status, 200, "{head:?}");
    let size = data.len() as u64;
    assert_eq!(head.content_length(), size, "{head:?}");
    let mut hash = Sha256::new();
    let got = get.body(size, u64::MAX, rate, 16 * 1024, &mut hash);
    let took = start.elapsed();
    let peak = node.peak_rss_bytes();
    assert_eq!(got, size);
    assert!(
        hash.finalize().to_vec() == sha256(data),
        "the downloaded bytes differ from the uploaded ones"
    );
    let growth = peak.saturating_sub(before);
    eprintln!(
        "{size} bytes in {took:?} ({:.1} MB/s); RSS {} KiB before, +{} KiB at most",
        size as f64 / took.as_secs_f64() / 1e6,
        before >> 10,
        growth >> 10
    );
    assert!(
        growth < MAX_RSS_GROWTH,
        "the node's RSS grew by {growth} bytes while serving a {size}-byte file"
    );
    (took, growth)
}

/// Resumes an interrupted download: part of the body, the socket dropped,
/// the rest with `Range: bytes=N-`; the joined parts are the file.
#[track_caller]
fn resumed_download(connect: impl Fn() -> TcpStream, url: &str, data: &[u8], cut: u64) {
    let mut hash = Sha256::new();
    let mut get = Getter::new(connect());
    get.send("GET", url, None);
    let head = get.head();
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(head.header("Accept-Ranges"), Some("bytes"), "{head:?}");
    let got = get.body(head.content_length(), cut, 0, 64 * 1024, &mut hash);
    assert_eq!(got, cut);
    drop(get); // interrupted: unread bytes left behind

    let mut get = Getter::new(connect());
    get.send("GET", url, Some(cut));
    let head = get.head();
    let total = data.len() as u64;
    assert_eq!(head.status, 206, "{head:?}");
    assert_eq!(
        head.header("Content-Range"),
        Some(format!("bytes {cut}-{}/{total}", total - 1).as_str()),
        "{head:?}"
    );
    assert_eq!(head.content_length(), total - cut, "{head:?}");
    let got = get.body(total - cut, u64::MAX, 0, 64 * 1024, &mut hash);
    assert_eq!(got, total - cut);
    assert!(
        hash.finalize().to_vec() == sha256(data),
        "the resumed download differs from the uploaded file"
    );
}

/// `Range: bytes=N-` answers 206 with the file from `N` on.
#[track_caller]
fn tail(stream: TcpStream, url: &str, data: &[u8], from: u64) {
    let mut get = Getter::new(stream);
    get.send("GET", url, Some(from));
    let head = get.head();
    let total = data.len() as u64;
    assert_eq!(head.status, 206, "{head:?}");
    assert_eq!(
        head.header("Content-Range"),
        Some(format!("bytes {from}-{}/{total}", total - 1).as_str()),
        "{head:?}"
    );
    let mut hash = Sha256::new();
    let got = get.body(head.content_length(), u64::MAX, 0, 64 * 1024, &mut hash);
    assert_eq!(got, total - from);
    assert!(hash.finalize().to_vec() == sha256(&data[from as usize..]));
}

/// `HEAD` answers the head of the `GET` (200, the file's length) and no
/// body: the answer to a request pipelined after it comes right after its
/// head.
#[track_caller]
fn head_has_no_body(stream: TcpStream, url: &str, data: &[u8]) {
    let mut get = Getter::new(stream);
    get.send("HEAD", url, None);
    get.stream
        .write_all(
            format!("GET {url} HTTP/1.1\r\nHost: weim.test\r\nRange: bytes=0-15\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
    let head = get.head();
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(head.content_length(), data.len() as u64, "{head:?}");
    assert_eq!(
        head.header("Content-Type"),
        Some("application/octet-stream")
    );
    let next = get.head();
    assert_eq!(
        next.status, 206,
        "not the answer that follows HEAD: {next:?}"
    );
    assert_eq!(
        next.header("Content-Range"),
        Some(format!("bytes 0-15/{}", data.len()).as_str())
    );
    let mut hash = Sha256::new();
    assert_eq!(get.body(next.content_length(), 16, 0, 16, &mut hash), 16);
    assert!(hash.finalize().to_vec() == sha256(&data[..16]));
}

/// A 20 MiB file downloaded by a slow reader (small receive buffer, paced
/// reads, longer than `limits.http_timeout`): every byte arrives, the
/// node's memory does not grow with the file (it is streamed, never read
/// whole), an interrupted download resumes with `Range`, `HEAD` has no
/// body.
#[test]
fn a_slow_reader_downloads_a_large_file_whole_and_resumes_it() {
    let dir = tempfile::tempdir().unwrap();
    let (url, data) = stored_file(dir.path(), FILE_SIZE);
    let node = Node::builder()
        .data_dir(dir.path())
        .env("WEIM_LIMITS_HTTP_TIMEOUT", "2s")
        .start();
    head_has_no_body(tcp_connect(node.addr), &url, &data);
    let slow = tcp_connect_rcvbuf(node.addr, 8 * 1024);
    let (took, _) = watched_download(&node, slow, &url, &data, 5_000_000);
    assert!(took > Duration::from_secs(2), "not slow: {took:?}");
    resumed_download(
        || tcp_connect(node.addr),
        &url,
        &data,
        7 * (1 << 20) + 12_345,
    );
}

/// Two network namespaces joined by a veth pair; deleted when dropped.
struct Netns {
    node_ns: String,
    client_ns: String,
}

/// Where the node listens inside its namespace.
const NODE_IP: &str = "10.231.0.1";
const CLIENT_IP: &str = "10.231.0.2";

impl Netns {
    /// Both namespaces (named after this process and `tag`) with the link
    /// between them, the node's side shaped to `rate` (`tc` syntax); `Err`
    /// with the reason when that is not possible here.
    fn create(tag: &str, rate: &str) -> Result<Netns, String> {
        let id = std::process::id();
        let net = Netns {
            node_ns: format!("weim-{tag}n{id}"),
            client_ns: format!("weim-{tag}c{id}"),
        };
        let (n, c) = (net.node_ns.as_str(), net.client_ns.as_str());
        let steps: &[&[&str]] = &[
            &["ip", "netns", "add", n],
            &["ip", "netns", "add", c],
            &[
                "ip", "link", "add", "wn0", "netns", n, "type", "veth", "peer", "name", "wc0",
                "netns", c,
            ],
            &[
                "ip",
                "-n",
                n,
                "addr",
                "add",
                &format!("{NODE_IP}/24"),
                "dev",
                "wn0",
            ],
            &[
                "ip",
                "-n",
                c,
                "addr",
                "add",
                &format!("{CLIENT_IP}/24"),
                "dev",
                "wc0",
            ],
            &["ip", "-n", n, "link", "set", "wn0", "up"],
            &["ip", "-n", c, "link", "set", "wc0", "up"],
            &["ip", "-n", n, "link", "set", "lo", "up"],
            &[
                "tc", "-n", n, "qdisc", "add", "dev", "wn0", "root", "tbf", "rate", rate, "burst",
                "32kbit", "latency", "400ms",
            ],
        ];
        for step in steps {
            let out = Command::new(step[0]).args(&step[1..]).output();
            match out {
                Ok(o) if o.status.success() => {}
                Ok(o) => {
                    return Err(format!(
                        "`{}` failed: {}",
                        step.join(" "),
                        String::from_utf8_lossy(&o.stderr).trim()
                    ))
                }
                Err(e) => return Err(format!("`{}`: {e}", step[0])),
            }
        }
        Ok(net)
    }

    /// Runs `f` on a thread inside the client's namespace (its sockets
    /// are that namespace's).
    fn in_client<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.client_ns);
        let t = thread::spawn(move || {
            use std::os::fd::AsRawFd;
            let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: setns(2) on an open namespace file; it changes this
            // thread's network namespace only.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
            f()
        });
        match t.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in [&self.node_ns, &self.client_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

impl Netns {
    /// A node serving the files of `data_dir` in the node's namespace.
    fn node(&self, data_dir: &std::path::Path, http_timeout: &str) -> Node {
        let node = Node::builder()
            .data_dir(data_dir)
            .netns(&self.node_ns)
            .env("WEIM_HTTP_LISTEN", &format!("{NODE_IP}:0"))
            .env("WEIM_LIMITS_HTTP_TIMEOUT", http_timeout)
            .start();
        assert_eq!(node.addr.ip().to_string(), NODE_IP);
        node
    }
}

/// The same file through a real link: the node in one network namespace,
/// the client in another, the node's side shaped to 16 Mbit/s with `tbf`
/// (about 10 s for 20 MiB, longer than `limits.http_timeout`). Skipped,
/// with the reason, where network namespaces cannot be made.
#[test]
fn a_large_file_download_through_a_shaped_link() {
    let net = match Netns::create("a", "16mbit") {
        Ok(net) => net,
        Err(why) => {
            eprintln!("skipped: no network namespaces here ({why})");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let (url, data) = stored_file(dir.path(), FILE_SIZE);
    let node = Arc::new(net.node(dir.path(), "2s"));
    let addr: SocketAddr = node.addr;
    let (n, d) = (node.clone(), Arc::new(data));
    let took = net.in_client(move || {
        head_has_no_body(tcp_connect(addr), &url, &d);
        let (took, _) = watched_download(&n, tcp_connect(addr), &url, &d, 0);
        tail(tcp_connect(addr), &url, &d, FILE_SIZE as u64 - (1 << 20));
        took
    });
    assert!(took > Duration::from_secs(5), "not shaped: {took:?}");
}

/// A link so slow (1 Mbit/s) that the kernel's send buffer and one
/// 256 KiB piece of a streamed body take seconds to go out, longer than
/// `limits.http_timeout` (300 ms here) and than the linger of a closing
/// connection (2 s): as long as the peer keeps receiving, the body is not
/// cut, with keep-alive or `Connection: close`.
#[test]
fn a_download_slower_than_the_http_timeout_per_piece_is_not_cut() {
    let net = match Netns::create("b", "1mbit") {
        Ok(net) => net,
        Err(why) => {
            eprintln!("skipped: no network namespaces here ({why})");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let (url, data) = stored_file(dir.path(), 768 << 10);
    let node = net.node(dir.path(), "300ms");
    let addr: SocketAddr = node.addr;
    let took = net.in_client(move || {
        let start = Instant::now();
        for close in ["", "Connection: close\r\n"] {
            let mut get = Getter::new(tcp_connect(addr));
            get.send_with("GET", &url, None, close);
            let head = get.head();
            assert_eq!(head.status, 200, "{head:?}");
            let mut hash = Sha256::new();
            let size = data.len() as u64;
            assert_eq!(get.body(size, u64::MAX, 0, 16 * 1024, &mut hash), size);
            assert!(hash.finalize().to_vec() == sha256(&data), "{close:?}");
        }
        start.elapsed()
    });
    eprintln!("2 × 768 KiB through 1 Mbit/s in {took:?}");
    assert!(took > Duration::from_secs(8), "not shaped: {took:?}");
}
