//! The operator's backend as the tests play it: calls to the server API
//! (`/server/v1/*` with `Api-Key`) and a webhook receiver, a small HTTP
//! server on a std `TcpListener` that records every request and answers as
//! the test scripts it (statuses in turn, hanging, or down).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::{Node, Request, Response};

/// `http.server_api_keys` of the tests' nodes (one entry).
pub const API_KEY: &str = "test-server-api-key-0123456789";
/// `webhook.secret` of the tests' nodes.
pub const HOOK_SECRET: &str = "test-webhook-secret";

/// `POST /server/v1/<path>` with `body` and `key` (none: no header).
pub fn server_call(node: &Node, path: &str, key: Option<&str>, body: &Value) -> Response {
    let mut req = Request::post(&format!("/server/v1/{path}")).json(body);
    if let Some(key) = key {
        req = req.header("Api-Key", key);
    }
    node.request(&req)
}

/// A server API call with [`API_KEY`] that must succeed: its `data`.
#[track_caller]
pub fn server_ok(node: &Node, path: &str, body: &Value) -> Value {
    let resp = server_call(node, path, Some(API_KEY), body);
    assert_eq!(resp.status, 200, "{path}: {}", resp.text());
    let v = resp.envelope();
    assert_eq!(v["code"], 0, "{path}: {v}");
    v["data"].clone()
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// `Weim-Signature`.
    pub signature: String,
    /// The raw body.
    pub body: Vec<u8>,
    /// The body as JSON.
    pub event: Value,
    /// When it arrived.
    pub at: Instant,
}

impl Delivered {
    /// Whether `Weim-Signature` is `sha256=<hex HMAC-SHA256 of the body>`
    /// with `secret`.
    pub fn signed_with(&self, secret: &str) -> bool {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(&self.body);
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.signature == format!("sha256={hex}")
    }
}

#[derive(Default)]
struct State {
    got: Vec<Delivered>,
    /// Statuses to answer next, in turn; then 200.
    script: VecDeque<u16>,
    /// Requests are held unanswered while set.
    hang: bool,
}

struct Inner {
    state: Mutex<State>,
    changed: Condvar,
    /// The listener is closed (connections refused) while set.
    down: AtomicBool,
}

/// A webhook receiver on a loopback port.
pub struct Receiver {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

impl Receiver {
    /// Starts answering 200 to every request.
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("receiver listener");
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            down: AtomicBool::new(false),
        });
        let shared = inner.clone();
        // Runs until the test process ends.
        thread::spawn(move || accept_loop(Some(listener), addr, &shared));
        Receiver { addr, inner }
    }

    /// The URL to configure as `webhook.url`.
    pub fn url(&self) -> String {
        format!("http://{}/weim/events", self.addr)
    }

    /// Answers these statuses to the next requests, in turn.
    pub fn script(&self, statuses: &[u16]) {
        self.inner
            .state
            .lock()
            .unwrap()
            .script
            .extend(statuses.iter().copied());
    }

    /// Holds every request unanswered (`true`) or answers them (`false`).
    pub fn hang(&self, on: bool) {
        self.inner.state.lock().unwrap().hang = on;
        self.inner.changed.notify_all();
    }

    /// Closes the port (connections refused) or opens it again.
    pub fn set_down(&self, down: bool) {
        self.inner.down.store(down, Ordering::SeqCst);
        // Let the accept loop see it.
        thread::sleep(Duration::from_millis(100));
    }

    /// Everything received so far.
    pub fn got(&self) -> Vec<Delivered> {
        self.inner.state.lock().unwrap().got.clone()
    }

    /// Waits (at most `within`) until `cond` holds for what was received;
    /// returns it. `cond` runs under the receiver's lock: it must not call
    /// the receiver.
    #[track_caller]
    pub fn wait_for(
        &self,
        within: Duration,
        what: &str,
        cond: impl Fn(&[Delivered]) -> bool,
    ) -> Vec<Delivered> {
        let deadline = Instant::now() + within;
        let mut state = self.inner.state.lock().unwrap();
        loop {
            if cond(&state.got) {
                return state.got.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let types: Vec<String> = state.got.iter().map(|d| d.event.to_string()).collect();
                panic!("receiver: no {what} within {within:?}; got {types:#?}");
            }
            state = self.inner.changed.wait_timeout(state, left).unwrap().0;
        }
    }
}

fn accept_loop(mut listener: Option<TcpListener>, addr: SocketAddr, inner: &Arc<Inner>) {
    loop {
        let down = inner.down.load(Ordering::SeqCst);
        match (&listener, down) {
            (Some(_), true) => listener = None,
            (None, false) => {
                listener = TcpListener::bind(addr).ok();
                if let Some(l) = &listener {
                    l.set_nonblocking(true).unwrap();
                }
            }
            _ => {}
        }
        let Some(l) = &listener else {
            thread::sleep(Duration::from_millis(20));
            continue;
        };
        l.set_nonblocking(true).unwrap();
        match l.accept() {
            Ok((stream, _)) => {
                let inner = inner.clone();
                thread::spawn(move || serve(stream, &inner));
            }
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Serves one keep-alive connection: reads requests, records them and
/// answers as scripted.
fn serve(stream: TcpStream, inner: &Inner) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut head = Vec::new();
        let mut line = String::new();
        loop {
            if inner.down.load(Ordering::SeqCst) {
                return;
            }
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) => return,
                Ok(_) => {
                    if line == "\r\n" {
                        break;
                    }
                    head.push(line.trim_end().to_string());
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
        }
        let header = |name: &str| {
            head.iter().skip(1).find_map(|h| {
                let (n, v) = h.split_once(':')?;
                n.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        let mut read = 0;
        let deadline = Instant::now() + Duration::from_secs(10);
        while read < len && Instant::now() < deadline {
            match reader.read(&mut body[read..]) {
                Ok(0) => return,
                Ok(n) => read += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
        }
        let event = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let status = {
            let mut state = inner.state.lock().unwrap();
            state.got.push(Delivered {
                signature: header("weim-signature").unwrap_or_default(),
                body,
                event,
                at: Instant::now(),
            });
            inner.changed.notify_all();
            let give_up = Instant::now() + Duration::from_secs(60);
            while state.hang && Instant::now() < give_up {
                state = inner
                    .changed
                    .wait_timeout(state, Duration::from_millis(100))
                    .unwrap()
                    .0;
            }
            state.script.pop_front().unwrap_or(200)
        };
        let answer = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}
