//! The `--child` process: one mio event loop that opens its share of the
//! connections (bound to their source addresses, a bounded number of
//! connects in flight), upgrades them, signs them in, then records every
//! broadcast frame; slow readers stop reading after sign-in and are drained
//! at the end to see whether the gateway closed them. In the chat scenarios
//! the connections send messages over the socket after `go` (see
//! [`crate::chat`]); in the soak scenario they also are closed and
//! reconnected until `stop`, then reconnected once more (see
//! [`crate::soak`]).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{self, BufRead, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use serde::Deserialize;
use socket2::{Domain, Protocol, Socket, Type};

use crate::chat::Chat;
use crate::host::{err_name, own_cpu_s, raise_nofile, unix_ns};
use crate::opts::source_addr;
use crate::proto::{bump, is_slow, ChildMsg, ChildReport, Plan, RoundStat};
use crate::soak::{CloseKind, Soak};
use crate::token::Minter;
use crate::ws;

const WAKER: Token = Token(usize::MAX);
const SCRATCH: usize = 64 * 1024;
/// How long slow readers are drained at the end, and the quiet time that
/// ends the drain early.
const DRAIN_MAX: Duration = Duration::from_secs(2);
const DRAIN_QUIET: Duration = Duration::from_millis(300);
/// Soak: how long a connection closed with a close frame is read for the
/// node's close before it is dropped, and the pause before a failed
/// reconnect is tried again.
const CLOSING_MAX_US: u64 = 2_000_000;
const RETRY_US: u64 = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    NotStarted,
    Connecting,
    Upgrading,
    SigningIn,
    /// Signed in, reading.
    Reader,
    /// Signed in, never reading.
    Slow,
    /// A slow reader read at the end of the run.
    Draining,
    /// Soak: a close frame was sent; read until the node closes.
    Closing,
    Failed,
    Closed,
}

impl State {
    fn in_flight(self) -> bool {
        matches!(
            self,
            State::Connecting | State::Upgrading | State::SigningIn
        )
    }

    fn reads(self) -> bool {
        matches!(
            self,
            State::Upgrading | State::SigningIn | State::Reader | State::Draining | State::Closing
        )
    }

    /// Whether unparsed bytes are kept: a slow reader keeps what followed
    /// its sign-in answer, so that the stream stays in sync for the drain.
    fn keeps_bytes(self) -> bool {
        self.reads() || self == State::Slow
    }

    fn stage(self) -> &'static str {
        match self {
            State::Connecting => "connect",
            State::Upgrading => "upgrade",
            _ => "sign-in",
        }
    }
}

struct Conn {
    sock: Option<TcpStream>,
    state: State,
    /// Soak: the connection (user) this socket belongs to: itself, or for a
    /// socket being closed in a spare slot, the connection it was.
    owner: usize,
    /// Soak: a reconnect, not counted in the sign-in numbers.
    again: bool,
    /// Soak: failed attempts of this reconnect.
    tries: u32,
    /// Unix ns when the connect began.
    epoch_ns: u64,
    slow: bool,
    last_round: u32,
    /// Monotonic µs since the child started, when the connect began.
    start_us: u64,
    /// Bytes not yet written.
    out: Vec<u8>,
    /// Bytes of an incomplete frame (or response head).
    inbuf: Vec<u8>,
    /// A fragmented text message being assembled.
    frag: Option<Vec<u8>>,
}

/// Frames at least this long are read with [`quick_frame`].
const QUICK_MIN: usize = 4096;

/// `Cmd` and the first bytes (at most 64, up to the first quote or
/// backslash) of `Body` of a long server frame, found in its first 512 bytes
/// without parsing the whole object: weim and the peer servers write `Cmd`
/// and `Body` before any long value. Parsing a 64 KiB body as JSON costs the
/// client more than reading it, which would make the client, not the server,
/// the limit of the large-frame scenarios. `None` when the head does not
/// look like that; the frame is then parsed in full.
fn quick_frame(payload: &[u8]) -> Option<(i64, &str)> {
    let head = &payload[..payload.len().min(512)];
    let at = find(head, b"\"Cmd\":")? + 6;
    let rest = &head[at..];
    let end = rest
        .iter()
        .position(|b| !(b.is_ascii_digit() || *b == b'-' || *b == b' '))?;
    let cmd = std::str::from_utf8(&rest[..end])
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let at = find(head, b"\"Body\":\"")? + 8;
    let body = &payload[at..payload.len().min(at + 64)];
    let end = body
        .iter()
        .position(|b| *b == b'"' || *b == b'\\')
        .unwrap_or(body.len());
    Some((cmd, std::str::from_utf8(&body[..end]).ok()?))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A server frame; only `Cmd`, `Body` and, for chat, `FromId` and `Id`
/// matter here, other keys are ignored.
#[derive(Deserialize)]
struct ServerFrame {
    #[serde(rename = "Cmd", alias = "cmd")]
    cmd: i64,
    #[serde(rename = "Body", alias = "body", default)]
    body: String,
    #[serde(rename = "FromId", alias = "fromId", default)]
    from_id: u64,
    #[serde(rename = "Id", alias = "id", default)]
    id: u64,
}

enum Command {
    Round(u32),
    Go,
    Stop,
    Finish,
}

/// Where the soak scenario is in a child.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Before `go`, and while sending and closing.
    Run,
    /// After `stop`: waiting for the answers to messages in flight.
    Settle { since: u64 },
    /// Every user reconnects once more and catches up (`stop`: when the
    /// settling began).
    Final { since: u64, stop: u64 },
    /// Told the parent.
    Done,
}

struct Child {
    plan: Plan,
    poll: Poll,
    conns: Vec<Conn>,
    /// The masked sign-in frame of each connection, minted before the
    /// first connect so that token signing stays out of the sign-in time.
    signin: Vec<Vec<u8>>,
    token_error: Option<String>,
    request: Vec<u8>,
    scratch: Vec<u8>,
    t0: Instant,
    next: usize,
    in_flight: usize,
    /// Connects in flight by start (index, start µs), for their timeout.
    queue: VecDeque<(usize, u64)>,
    /// Main connections; slots from here on hold soak sockets being closed.
    n_main: usize,
    rng: u64,
    report: ChildReport,
    pending_rounds: Vec<u32>,
    live_readers: u64,
    ready_sent: bool,
    stdout_ok: bool,
    last_drain_read: Instant,
    cpu_start_s: f64,
    /// The chat scenarios' sending and counting.
    chat: Option<Chat>,
    done_sent: bool,
    /// The soak scenario's traffic and accounting.
    soak: Option<Soak>,
    phase: Phase,
    /// Soak: free slots for sockets being closed, and those in use by
    /// (slot, start µs), oldest first.
    free_slots: Vec<usize>,
    closing: VecDeque<(usize, u64)>,
    /// Soak: reconnects by due time (µs since start).
    reconnects: BinaryHeap<Reverse<(u64, usize)>>,
    /// Soak, final round: connections still to close and reconnect, and
    /// which users have signed in again since it began.
    final_queue: VecDeque<usize>,
    final_ok: Vec<bool>,
    /// Soak: unix ns when something is due next.
    soak_due: Option<u64>,
}

/// Entry point of `weim-load --child`; returns the exit code.
pub fn main() -> i32 {
    let mut first = String::new();
    if io::stdin().read_line(&mut first).is_err() {
        eprintln!("weim-load --child: no plan on stdin");
        return 2;
    }
    let plan: Plan = match serde_json::from_str(&first) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("weim-load --child: bad plan: {e}");
            return 2;
        }
    };
    raise_nofile();
    let mut child = match Child::new(plan) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("weim-load --child: {e}");
            return 2;
        }
    };
    let waker = match Waker::new(child.poll.registry(), WAKER) {
        Ok(w) => Arc::new(w),
        Err(e) => {
            eprintln!("weim-load --child: waker: {e}");
            return 2;
        }
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            let cmd = match line.trim().split_once(' ') {
                Some(("round", n)) => n.parse().ok().map(Command::Round),
                _ if line.trim() == "finish" => Some(Command::Finish),
                _ if line.trim() == "go" => Some(Command::Go),
                _ if line.trim() == "stop" => Some(Command::Stop),
                _ => None,
            };
            if let Some(cmd) = cmd {
                if tx.send(cmd).is_err() {
                    return;
                }
                let _ = waker.wake();
            }
        }
        // The parent is gone or done: finish.
        let _ = tx.send(Command::Finish);
        let _ = waker.wake();
    });
    child.run(rx);
    0
}

/// A non-blocking socket bound to `src` and connecting to `target`.
fn open_socket(
    src: Ipv4Addr,
    target: SocketAddr,
    rcvbuf: Option<usize>,
) -> Result<Socket, (&'static str, io::Error)> {
    let s = Socket::new(
        Domain::IPV4,
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )
    .map_err(|e| ("socket", e))?;
    let _ = s.set_tcp_nodelay(true);
    if let Some(n) = rcvbuf {
        s.set_recv_buffer_size(n).map_err(|e| ("rcvbuf", e))?;
    }
    // Pick the port at connect time, per destination: the port range then
    // holds per (source, destination) rather than per source address.
    let one: libc::c_int = 1;
    // SAFETY: valid fd and a pointer to a local c_int of the given size.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    s.bind(&SocketAddr::new(src.into(), 0).into())
        .map_err(|e| ("bind", e))?;
    match s.connect(&target.into()) {
        Ok(()) => Ok(s),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(s),
        Err(e) => Err(("connect", e)),
    }
}

fn short(s: &str) -> String {
    s.chars().take(40).collect()
}

impl Child {
    fn new(plan: Plan) -> io::Result<Child> {
        let n = plan.to.saturating_sub(plan.from) as usize;
        let mut conns = Vec::with_capacity(n);
        conns.resize_with(n, || Conn {
            sock: None,
            state: State::NotStarted,
            owner: 0,
            again: false,
            tries: 0,
            epoch_ns: 0,
            slow: false,
            last_round: 0,
            start_us: 0,
            out: Vec::new(),
            inbuf: Vec::new(),
            frag: None,
        });
        for (i, c) in conns.iter_mut().enumerate() {
            c.owner = i;
        }
        let host = plan.target.to_string();
        let report = ChildReport {
            child: plan.child,
            planned: n as u64,
            rounds: vec![RoundStat::default(); plan.rounds as usize],
            ..ChildReport::default()
        };
        Ok(Child {
            request: ws::upgrade_request(&host, &plan.path),
            signin: Vec::new(),
            token_error: None,
            poll: Poll::new()?,
            conns,
            scratch: vec![0; SCRATCH],
            t0: Instant::now(),
            next: 0,
            in_flight: 0,
            queue: VecDeque::new(),
            n_main: n,
            rng: 0x9E37_79B9_7F4A_7C15 ^ (plan.from + 1).wrapping_mul(0x2545_F491_4F6C_DD1D),
            report,
            pending_rounds: Vec::new(),
            live_readers: 0,
            ready_sent: false,
            stdout_ok: true,
            last_drain_read: Instant::now(),
            cpu_start_s: 0.0,
            chat: plan
                .chat
                .clone()
                .map(|cp| Chat::new(cp, plan.from, plan.to, plan.first_user)),
            done_sent: false,
            soak: plan
                .soak
                .clone()
                .map(|sp| Soak::new(sp, plan.from, plan.to, plan.first_user)),
            phase: Phase::Run,
            free_slots: Vec::new(),
            closing: VecDeque::new(),
            reconnects: BinaryHeap::new(),
            final_queue: VecDeque::new(),
            final_ok: Vec::new(),
            soak_due: None,
            plan,
        })
    }

    fn mono_us(&self) -> u64 {
        self.t0.elapsed().as_micros() as u64
    }

    fn mask(&mut self) -> [u8; 4] {
        // xorshift64*: masks need not be secret for a load generator.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) as u32).to_le_bytes()
    }

    fn emit(&mut self, msg: &ChildMsg) {
        if !self.stdout_ok {
            return;
        }
        let line = match serde_json::to_string(msg) {
            Ok(s) => s,
            Err(_) => return,
        };
        let mut out = io::stdout().lock();
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            self.stdout_ok = false;
        }
    }

    fn run(&mut self, rx: Receiver<Command>) {
        self.prepare();
        self.t0 = Instant::now();
        self.cpu_start_s = own_cpu_s();
        let mut events = Events::with_capacity(1024);
        let deadline = Duration::from_millis(self.plan.deadline_ms);
        let hb = Duration::from_millis(self.plan.heartbeat_ms);
        let mut next_hb = hb;
        loop {
            self.start_more(deadline);
            self.soak_step();
            let mut timeout = if self.next < self.n_main {
                Duration::from_millis(if self.plan.rate > 0.0 { 1 } else { 5 })
            } else {
                Duration::from_millis(50)
            };
            if let Some(due) = self.chat_tick().or(self.soak_due) {
                timeout = timeout.min(Duration::from_nanos(due.saturating_sub(unix_ns())));
            }
            if self.phase != Phase::Run || !self.reconnects.is_empty() || !self.closing.is_empty() {
                timeout = timeout.min(Duration::from_millis(10));
            }
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    bump(&mut self.report.errors, "poll", 1);
                }
            }
            for ev in events.iter() {
                if ev.token() != WAKER {
                    self.on_event(ev.token().0, ev);
                    self.chat_flush();
                    self.soak_flush();
                }
            }
            let mut finish = !self.stdout_ok;
            loop {
                match rx.try_recv() {
                    Ok(Command::Round(r)) => {
                        if r >= 1 && r <= self.plan.rounds && !self.pending_rounds.contains(&r) {
                            self.pending_rounds.push(r);
                        }
                    }
                    Ok(Command::Go) => {
                        if let Some(chat) = self.chat.as_mut() {
                            chat.go(unix_ns());
                        }
                        self.chat_flush();
                        if let Some(soak) = self.soak.as_mut() {
                            soak.go(unix_ns());
                        }
                    }
                    Ok(Command::Stop) => {
                        if let Some(soak) = self.soak.as_mut() {
                            let now = unix_ns();
                            soak.stop(now);
                            if self.phase == Phase::Run {
                                self.phase = Phase::Settle { since: now };
                            }
                        }
                    }
                    Ok(Command::Finish) | Err(TryRecvError::Disconnected) => finish = true,
                    Err(TryRecvError::Empty) => break,
                }
                if finish {
                    break;
                }
            }
            self.expire();
            self.expire_closing();
            self.check_ready();
            self.check_rounds();
            self.check_chat();
            if !hb.is_zero() && self.t0.elapsed() >= next_hb {
                self.heartbeat();
                next_hb += hb;
            }
            if finish {
                break;
            }
            if self.t0.elapsed() >= deadline {
                self.report.timed_out = true;
                break;
            }
        }
        self.finish(&mut events);
    }

    fn start_more(&mut self, deadline: Duration) {
        let elapsed = self.t0.elapsed();
        if elapsed >= deadline {
            return;
        }
        let allowed = if self.plan.rate > 0.0 {
            (elapsed.as_secs_f64() * self.plan.rate) as usize + 1
        } else {
            usize::MAX
        };
        while self.next < self.n_main && self.in_flight < self.plan.window && self.next < allowed {
            let i = self.next;
            self.next += 1;
            self.start(i);
        }
        if self.soak.is_none() {
            return;
        }
        // Soak: the final round's closes, then the reconnects that are due.
        while self.in_flight < self.plan.window {
            let Some(i) = self.final_queue.pop_front() else {
                break;
            };
            if self.conns[i].state == State::Reader && !self.final_ok[i] {
                if let Some(soak) = self.soak.as_mut() {
                    soak.closed(i, true);
                }
                self.soak_flush();
                self.close_now(i, CloseKind::Frame);
                self.start(i);
            }
        }
        let now_us = self.mono_us();
        while self.in_flight < self.plan.window {
            match self.reconnects.peek() {
                Some(Reverse((due, _))) if *due <= now_us => {}
                _ => break,
            }
            let Some(Reverse((_, i))) = self.reconnects.pop() else {
                break;
            };
            if self.conns[i].again && self.conns[i].state == State::NotStarted {
                self.start(i);
            }
        }
    }

    fn start(&mut self, i: usize) {
        let g = self.plan.from + i as u64;
        let slow = is_slow(self.plan.slow_pct, g);
        let src = source_addr(self.plan.src_first, self.plan.per_src, g);
        if self.conns[i].again {
            if let Some(soak) = self.soak.as_mut() {
                soak.stat.reconnects += 1;
            }
        } else {
            self.report.attempted += 1;
            if self.report.first_connect_ns == 0 {
                self.report.first_connect_ns = unix_ns();
            }
        }
        let now_us = self.mono_us();
        let rcvbuf = slow.then_some(self.plan.slow_rcvbuf);
        let c = &mut self.conns[i];
        c.slow = slow;
        c.start_us = now_us;
        c.epoch_ns = unix_ns();
        let sock = match open_socket(src, self.plan.target, rcvbuf) {
            Ok(s) => s,
            Err((stage, e)) => return self.fail(i, format!("{stage}: {}", err_name(&e))),
        };
        let mut stream = TcpStream::from_std(sock.into());
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            return self.fail(i, format!("register: {}", err_name(&e)));
        }
        c.sock = Some(stream);
        c.state = State::Connecting;
        self.in_flight += 1;
        self.queue.push_back((i, now_us));
    }

    fn on_event(&mut self, i: usize, ev: &mio::event::Event) {
        let Some(state) = self.conns.get(i).map(|c| c.state) else {
            return;
        };
        match state {
            State::Connecting => {
                let hard = ev.is_error() || ev.is_write_closed() || ev.is_read_closed();
                if ev.is_writable() || hard {
                    self.check_connected(i, hard);
                }
            }
            State::Upgrading
            | State::SigningIn
            | State::Reader
            | State::Draining
            | State::Closing => {
                if ev.is_writable() {
                    self.flush(i);
                }
                let hang_up = ev.is_read_closed() || ev.is_error();
                if ev.is_readable() || hang_up {
                    self.read(i, hang_up);
                }
            }
            State::Slow => {
                if ev.is_writable() {
                    self.flush(i);
                }
                if ev.is_error() || ev.is_read_closed() {
                    let reason = self.conns[i]
                        .sock
                        .as_ref()
                        .and_then(|s| s.take_error().ok().flatten())
                        .map(|e| err_name(&e))
                        .unwrap_or_else(|| "hang-up while not reading".into());
                    self.lost(i, reason);
                }
            }
            _ => {}
        }
    }

    fn check_connected(&mut self, i: usize, hard: bool) {
        let Some(s) = self.conns[i].sock.as_ref() else {
            return;
        };
        match s.take_error() {
            Ok(Some(e)) | Err(e) => return self.lost(i, err_name(&e)),
            Ok(None) => {}
        }
        match s.peer_addr() {
            Ok(_) => {
                if !self.conns[i].again {
                    self.report.connected += 1;
                }
                self.conns[i].state = State::Upgrading;
                let req = std::mem::take(&mut self.request);
                self.send(i, &req);
                self.request = req;
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                if hard {
                    self.lost(i, "not connected".into());
                }
            }
            Err(e) => self.lost(i, err_name(&e)),
        }
    }

    /// Writes `bytes` now, or queues what the socket does not take.
    fn send(&mut self, i: usize, bytes: &[u8]) {
        let c = &mut self.conns[i];
        let Some(sock) = c.sock.as_mut() else { return };
        if !c.out.is_empty() {
            c.out.extend_from_slice(bytes);
            return;
        }
        let mut off = 0;
        let mut err = None;
        while off < bytes.len() {
            match sock.write(&bytes[off..]) {
                Ok(0) => {
                    err = Some("write returned 0".to_string());
                    break;
                }
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    err = Some(err_name(&e));
                    break;
                }
            }
        }
        if let Some(e) = err {
            return self.lost(i, e);
        }
        if off < bytes.len() {
            c.out.extend_from_slice(&bytes[off..]);
        }
    }

    fn flush(&mut self, i: usize) {
        let c = &mut self.conns[i];
        let Some(sock) = c.sock.as_mut() else { return };
        let mut off = 0;
        let mut err = None;
        while off < c.out.len() {
            match sock.write(&c.out[off..]) {
                Ok(0) => {
                    err = Some("write returned 0".to_string());
                    break;
                }
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    err = Some(err_name(&e));
                    break;
                }
            }
        }
        c.out.drain(..off);
        if c.out.is_empty() {
            c.out = Vec::new();
        }
        if let Some(e) = err {
            self.lost(i, e);
        }
    }

    /// Reads what the socket holds. Unless `to_end`, a short read ends the
    /// loop: on a stream socket it means the receive queue was empty, and
    /// edge-triggered epoll reports data that arrives later, so the usual
    /// extra `read` that returns `EAGAIN` is saved on the broadcast path.
    /// With `to_end` (hang-up seen, or draining) it reads until `EAGAIN`/EOF.
    fn read(&mut self, i: usize, to_end: bool) {
        loop {
            let res = match self.conns[i].sock.as_mut() {
                Some(sock) => sock.read(&mut self.scratch),
                None => return,
            };
            match res {
                Ok(0) => return self.lost(i, "eof".into()),
                Ok(n) => {
                    let now = unix_ns();
                    if self.conns[i].state == State::Draining {
                        self.last_drain_read = Instant::now();
                    }
                    let data = std::mem::take(&mut self.scratch);
                    self.on_bytes(i, &data[..n], now);
                    self.scratch = data;
                    if !self.conns[i].state.reads() || (n < self.scratch.len() && !to_end) {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.lost(i, err_name(&e)),
            }
        }
    }

    fn on_bytes(&mut self, i: usize, data: &[u8], now: u64) {
        match self.conns[i].state {
            State::Upgrading => {
                let mut buf = std::mem::take(&mut self.conns[i].inbuf);
                buf.extend_from_slice(data);
                match ws::check_upgrade(&buf) {
                    ws::Upgrade::Partial => self.conns[i].inbuf = buf,
                    ws::Upgrade::Failed(reason) => self.fail(i, reason),
                    ws::Upgrade::Done(n) => {
                        if !self.conns[i].again {
                            self.report.upgraded += 1;
                        }
                        self.conns[i].state = State::SigningIn;
                        self.sign_in(i);
                        if self.conns[i].state.reads() && buf.len() > n {
                            self.frames_from(i, &buf[n..], now);
                        }
                    }
                }
            }
            State::SigningIn | State::Reader | State::Draining | State::Closing => {
                self.frames_from(i, data, now)
            }
            _ => {}
        }
    }

    /// Mints every connection's token (user `first_user + index`) and
    /// encodes its sign-in frame.
    fn prepare(&mut self) {
        let minter = Minter::new(&self.plan.secret);
        let now = unix_ns() / 1_000_000_000;
        let n = self.conns.len();
        self.signin = Vec::with_capacity(n);
        for i in 0..n {
            let user = self.plan.first_user + self.plan.from + i as u64;
            let frame = match minter.mint(user, now) {
                Ok(token) => {
                    let payload = if self.soak.is_some() {
                        // Acknowledgements (Cmd 22) from the start; a node
                        // that does not know `Ack` ignores it.
                        format!(r#"{{"Cmd":3,"Body":"{token}","Ack":true}}"#)
                    } else {
                        format!(r#"{{"Cmd":3,"Body":"{token}"}}"#)
                    };
                    let mut frame = Vec::with_capacity(payload.len() + 8);
                    let mask = self.mask();
                    ws::encode_client_frame(&mut frame, ws::OP_TEXT, payload.as_bytes(), mask);
                    frame
                }
                Err(e) => {
                    self.token_error.get_or_insert(e);
                    Vec::new()
                }
            };
            self.signin.push(frame);
        }
    }

    fn sign_in(&mut self, i: usize) {
        // Soak connections sign in again after every reconnect.
        let frame = if self.soak.is_some() {
            self.signin[i].clone()
        } else {
            std::mem::take(&mut self.signin[i])
        };
        if frame.is_empty() {
            let e = self.token_error.clone().unwrap_or_default();
            return self.fail(i, format!("token: {e}"));
        }
        self.send(i, &frame);
    }

    /// Parses frames from the connection's partial bytes followed by `data`.
    fn frames_from(&mut self, i: usize, data: &[u8], now: u64) {
        let mut buf = std::mem::take(&mut self.conns[i].inbuf);
        if buf.is_empty() {
            let used = self.parse_frames(i, data, now);
            if self.conns[i].state.keeps_bytes() && used < data.len() {
                buf.extend_from_slice(&data[used..]);
            }
        } else {
            buf.extend_from_slice(data);
            let used = self.parse_frames(i, &buf, now);
            buf.drain(..used);
        }
        if self.conns[i].state.keeps_bytes() && !buf.is_empty() {
            self.conns[i].inbuf = buf;
        }
    }

    /// Handles every complete frame in `buf`; returns the bytes used.
    fn parse_frames(&mut self, i: usize, buf: &[u8], now: u64) -> usize {
        let mut pos = 0;
        while pos < buf.len() {
            let f = match ws::parse_frame(&buf[pos..], self.plan.max_frame) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    let kind = match e {
                        ws::FrameError::TooLarge(_) => "frame: too large",
                        ws::FrameError::BadControl => "frame: bad control frame",
                    };
                    bump(&mut self.report.errors, kind, 1);
                    self.lost(i, "protocol error".into());
                    return pos;
                }
            };
            let range = pos + f.header_len..pos + f.total_len();
            pos += f.total_len();
            if f.rsv != 0 {
                bump(&mut self.report.errors, "frame: reserved bits set", 1);
                self.lost(i, "protocol error".into());
                return pos;
            }
            if let Some(m) = f.mask {
                bump(&mut self.report.errors, "frame: masked by the server", 1);
                let mut owned = buf[range].to_vec();
                ws::unmask(&mut owned, m);
                self.on_frame(i, f, &owned, now);
            } else {
                self.on_frame(i, f, &buf[range], now);
            }
            if !self.conns[i].state.reads() {
                break;
            }
        }
        pos
    }

    fn on_frame(&mut self, i: usize, f: ws::Frame, payload: &[u8], now: u64) {
        match f.opcode {
            ws::OP_TEXT if f.fin => self.on_message(i, payload, now),
            ws::OP_TEXT => self.conns[i].frag = Some(payload.to_vec()),
            ws::OP_CONT => match self.conns[i].frag.take() {
                Some(mut m) => {
                    m.extend_from_slice(payload);
                    if m.len() > self.plan.max_frame {
                        bump(&mut self.report.errors, "frame: message too large", 1);
                        self.lost(i, "protocol error".into());
                    } else if f.fin {
                        self.on_message(i, &m, now);
                    } else {
                        self.conns[i].frag = Some(m);
                    }
                }
                None => bump(&mut self.report.errors, "frame: stray continuation", 1),
            },
            ws::OP_BINARY => bump(&mut self.report.errors, "frame: binary", 1),
            ws::OP_CLOSE => {
                let reason = if payload.len() >= 2 {
                    format!("close {}", u16::from_be_bytes([payload[0], payload[1]]))
                } else {
                    "close".to_string()
                };
                self.lost(i, reason);
            }
            ws::OP_PING => {
                if !matches!(self.conns[i].state, State::Draining | State::Closing) {
                    let mut frame = Vec::with_capacity(payload.len() + 6);
                    let mask = self.mask();
                    ws::encode_client_frame(&mut frame, ws::OP_PONG, payload, mask);
                    self.send(i, &frame);
                }
            }
            ws::OP_PONG => {}
            _ => {
                bump(&mut self.report.errors, "frame: unknown opcode", 1);
                self.lost(i, "protocol error".into());
            }
        }
    }

    fn on_message(&mut self, i: usize, payload: &[u8], now: u64) {
        if self.chat.is_some() && self.conns[i].state == State::Reader {
            return self.on_chat_frame(i, payload, now);
        }
        if self.soak.is_some() && matches!(self.conns[i].state, State::Reader | State::Closing) {
            return self.on_soak_frame(i, payload, now);
        }
        if payload.len() >= QUICK_MIN {
            if let Some((cmd, body)) = quick_frame(payload) {
                return self.dispatch(i, cmd, body, now);
            }
        }
        let m: ServerFrame = match serde_json::from_slice(payload) {
            Ok(m) => m,
            Err(_) => {
                return bump(
                    &mut self.report.errors,
                    "frame: not a server JSON object",
                    1,
                )
            }
        };
        self.dispatch(i, m.cmd, &m.body, now)
    }

    fn dispatch(&mut self, i: usize, cmd: i64, body: &str, now: u64) {
        match (self.conns[i].state, cmd) {
            (State::SigningIn, 4) => self.signed_in(i, now),
            (State::SigningIn, 2) => self.fail(i, format!("sign-in: refused ({})", short(body))),
            (State::SigningIn, c) => bump(
                &mut self.report.other_cmds,
                &format!("{c} before sign-in"),
                1,
            ),
            (State::Reader, -1) => self.on_broadcast(i, body, now),
            (State::Draining, -1) => self.report.slow_frames += 1,
            (_, c) => bump(&mut self.report.other_cmds, &c.to_string(), 1),
        }
    }

    /// A frame on a signed-in connection of a chat scenario (always parsed
    /// in full: `Id` and `FromId` follow the body).
    fn on_chat_frame(&mut self, i: usize, payload: &[u8], now: u64) {
        let m: ServerFrame = match serde_json::from_slice(payload) {
            Ok(m) => m,
            Err(_) => {
                return bump(
                    &mut self.report.errors,
                    "frame: not a server JSON object",
                    1,
                )
            }
        };
        let Some(chat) = self.chat.as_mut() else {
            return;
        };
        match m.cmd {
            21 => chat.on_ack(i, &m.body, now),
            2 => chat.on_fail(i, &m.body, now),
            6 | 10 => chat.on_message(i, m.cmd, m.from_id, m.id, &m.body, now),
            c => bump(&mut self.report.other_cmds, &c.to_string(), 1),
        }
    }

    /// Group: sends the messages that are due; returns when the next is.
    fn chat_tick(&mut self) -> Option<u64> {
        let due = self.chat.as_mut()?.tick(unix_ns());
        self.chat_flush();
        due
    }

    /// Writes the Cmd 20 frames the chat engine queued.
    fn chat_flush(&mut self) {
        let Some(chat) = self.chat.as_mut() else {
            return;
        };
        if chat.outbox.is_empty() {
            return;
        }
        let out = std::mem::take(&mut chat.outbox);
        let mut frame = Vec::new();
        for (i, text) in &out {
            frame.clear();
            let mask = self.mask();
            ws::encode_client_frame(&mut frame, ws::OP_TEXT, text.as_bytes(), mask);
            self.send(*i, &frame);
        }
        if let Some(chat) = self.chat.as_mut() {
            if chat.outbox.is_empty() {
                // Keep the allocation for the next round of sends.
                chat.outbox = out;
                chat.outbox.clear();
            }
        }
    }

    /// A frame on a soak connection, signed in or being closed (its owner
    /// is the user it belongs to).
    fn on_soak_frame(&mut self, i: usize, payload: &[u8], now: u64) {
        let m: ServerFrame = match serde_json::from_slice(payload) {
            Ok(m) => m,
            Err(_) => {
                return bump(
                    &mut self.report.errors,
                    "frame: not a server JSON object",
                    1,
                )
            }
        };
        let c = &self.conns[i];
        let (owner, live, epoch) = (c.owner, c.state == State::Reader, c.epoch_ns);
        let Some(soak) = self.soak.as_mut() else {
            return;
        };
        match m.cmd {
            21 => soak.on_ack(owner, &m.body, m.id, now),
            2 => soak.on_fail(owner, &m.body, live, now),
            6 => soak.on_message(owner, live, epoch, m.from_id, m.id, &m.body, now),
            c => bump(&mut self.report.other_cmds, &c.to_string(), 1),
        }
    }

    /// Writes the frames the soak engine queued (messages, resends,
    /// acknowledgements), each on its user's current connection.
    fn soak_flush(&mut self) {
        let Some(soak) = self.soak.as_mut() else {
            return;
        };
        if soak.outbox.is_empty() {
            return;
        }
        let out = std::mem::take(&mut soak.outbox);
        let mut frame = Vec::new();
        for (i, text) in &out {
            frame.clear();
            let mask = self.mask();
            ws::encode_client_frame(&mut frame, ws::OP_TEXT, text.as_bytes(), mask);
            self.send(*i, &frame);
        }
    }

    /// Soak: sends, acknowledges and closes what is due, and moves through
    /// the phases after `stop`.
    fn soak_step(&mut self) {
        let Some(soak) = self.soak.as_mut() else {
            return;
        };
        let now = unix_ns();
        self.soak_due = soak.tick(now);
        let churn = std::mem::take(&mut soak.churn);
        let away_us = soak.plan().away_ms * 1000;
        // Acknowledgements before the close frames they precede.
        self.soak_flush();
        let due_us = self.mono_us() + away_us;
        for (i, kind) in churn {
            self.close_now(i, kind);
            self.reconnects.push(Reverse((due_us, i)));
        }
        let Some(soak) = self.soak.as_ref() else {
            return;
        };
        let plan = soak.plan().clone();
        match self.phase {
            Phase::Settle { since } => {
                let waited = now.saturating_sub(since) >= plan.settle_ms * 1_000_000;
                if soak.waiting() == 0 || waited {
                    // Every user once more: close (after acknowledging) and
                    // reconnect the signed-in ones, at most the connect
                    // window at a time; the others are reconnecting already.
                    self.final_ok = vec![false; self.n_main];
                    self.final_queue = (0..self.n_main)
                        .filter(|&i| self.conns[i].state == State::Reader)
                        .collect();
                    self.phase = Phase::Final {
                        since: now,
                        stop: since,
                    };
                }
            }
            Phase::Final { since, stop } => {
                let all_back = self.final_queue.is_empty()
                    && (0..self.n_main).all(|i| {
                        self.final_ok[i]
                            || matches!(self.conns[i].state, State::Failed | State::Closed)
                    });
                let quiet = now.saturating_sub(soak.last_event_ns) >= plan.quiet_ms * 1_000_000;
                let bound = now.saturating_sub(since) >= plan.drain_ms * 1_000_000;
                let over = all_back && (soak.complete() || quiet);
                if over || bound {
                    let final_users = self.final_ok.iter().filter(|x| **x).count() as u64;
                    if let Some(soak) = self.soak.as_mut() {
                        soak.stat.drain_s = now.saturating_sub(stop) as f64 / 1e9;
                        soak.stat.drain_timed_out = !over;
                        soak.stat.final_reconnected = final_users;
                    }
                    self.phase = Phase::Done;
                    self.done_sent = true;
                    self.emit(&ChildMsg::Done);
                }
            }
            Phase::Run | Phase::Done => {}
        }
    }

    /// Soak: closes connection `i` now (its bookkeeping is done) and leaves
    /// it ready to reconnect. With a close frame the socket moves to a spare
    /// slot and is read until the node closes it (at most 2 s).
    fn close_now(&mut self, i: usize, kind: CloseKind) {
        let now_us = self.mono_us();
        let c = &mut self.conns[i];
        if c.state != State::Reader {
            return;
        }
        let Some(mut sock) = c.sock.take() else {
            return;
        };
        let out = std::mem::take(&mut c.out);
        let inbuf = std::mem::take(&mut c.inbuf);
        let frag = c.frag.take();
        let epoch_ns = c.epoch_ns;
        c.state = State::NotStarted;
        c.again = true;
        c.tries = 0;
        match kind {
            CloseKind::Rst => {
                let zero = libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                };
                // SAFETY: valid fd and a pointer to a local linger struct.
                unsafe {
                    libc::setsockopt(
                        sock.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_LINGER,
                        &zero as *const libc::linger as *const libc::c_void,
                        std::mem::size_of::<libc::linger>() as libc::socklen_t,
                    );
                }
                drop(sock);
            }
            CloseKind::Fin => drop(sock),
            CloseKind::Frame => {
                let slot = match self.free_slots.pop() {
                    Some(s) => s,
                    None => {
                        self.conns.push(Conn {
                            sock: None,
                            state: State::Closed,
                            owner: i,
                            again: false,
                            tries: 0,
                            epoch_ns: 0,
                            slow: false,
                            last_round: 0,
                            start_us: 0,
                            out: Vec::new(),
                            inbuf: Vec::new(),
                            frag: None,
                        });
                        self.conns.len() - 1
                    }
                };
                if let Err(e) = self.poll.registry().reregister(
                    &mut sock,
                    Token(slot),
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    if let Some(soak) = self.soak.as_mut() {
                        bump(
                            &mut soak.stat.closing_ends,
                            &format!("register: {}", err_name(&e)),
                            1,
                        );
                    }
                    self.free_slots.push(slot);
                    return;
                }
                let s = &mut self.conns[slot];
                s.sock = Some(sock);
                s.state = State::Closing;
                s.owner = i;
                s.epoch_ns = epoch_ns;
                s.start_us = now_us;
                s.out = out;
                s.inbuf = inbuf;
                s.frag = frag;
                self.closing.push_back((slot, now_us));
                let mut frame = Vec::with_capacity(8);
                let mask = self.mask();
                ws::encode_client_frame(&mut frame, ws::OP_CLOSE, &1000u16.to_be_bytes(), mask);
                self.send(slot, &frame);
            }
        }
    }

    /// Soak: sockets being closed that the node has not closed within 2 s.
    fn expire_closing(&mut self) {
        let now_us = self.mono_us();
        while let Some(&(slot, start)) = self.closing.front() {
            let c = &self.conns[slot];
            if c.state != State::Closing || c.start_us != start {
                self.closing.pop_front();
            } else if now_us.saturating_sub(start) >= CLOSING_MAX_US {
                self.closing.pop_front();
                self.lost(slot, "no close from the node within 2 s".into());
            } else {
                break;
            }
        }
    }

    /// Chat: tells the parent once everything is sent and received.
    fn check_chat(&mut self) {
        if self.done_sent {
            return;
        }
        if let Some(chat) = self.chat.as_mut() {
            if chat.finished(unix_ns()) {
                self.done_sent = true;
                self.emit(&ChildMsg::Done);
            }
        }
    }

    fn signed_in(&mut self, i: usize, now: u64) {
        let latency = self.mono_us().saturating_sub(self.conns[i].start_us);
        if self.conns[i].again {
            // Soak: a reconnect.
            self.in_flight -= 1;
            let c = &mut self.conns[i];
            c.state = State::Reader;
            c.tries = 0;
            let epoch = c.epoch_ns;
            if let Some(ok) = self.final_ok.get_mut(i) {
                *ok = true;
            }
            let churn = self.phase == Phase::Run;
            if let Some(soak) = self.soak.as_mut() {
                soak.stat.reconnected += 1;
                if churn {
                    soak.stat.reconnect_us.record(latency);
                }
                soak.signed_in(i, epoch, now);
            }
            self.soak_flush();
            return;
        }
        self.report.signin_us.record(latency);
        self.report.signed_in += 1;
        self.report.last_signin_ns = self.report.last_signin_ns.max(now);
        self.in_flight -= 1;
        let c = &mut self.conns[i];
        if c.slow {
            c.state = State::Slow;
            self.report.slow += 1;
        } else {
            c.state = State::Reader;
            self.report.readers += 1;
            self.live_readers += 1;
            if let Some(chat) = self.chat.as_mut() {
                chat.signed_in(i);
            }
            let epoch = c.epoch_ns;
            if let Some(soak) = self.soak.as_mut() {
                soak.signed_in(i, epoch, now);
            }
        }
    }

    fn on_broadcast(&mut self, i: usize, body: &str, now: u64) {
        let mut parts = body.splitn(3, ':');
        let round = parts.next().and_then(|s| s.parse::<u32>().ok());
        let sent = parts.next().and_then(|s| s.parse::<u64>().ok());
        let (Some(round), Some(sent)) = (round, sent) else {
            return bump(&mut self.report.errors, "broadcast: unexpected body", 1);
        };
        if round == 0 || round > self.plan.rounds {
            return bump(&mut self.report.errors, "broadcast: round out of range", 1);
        }
        let c = &mut self.conns[i];
        if round <= c.last_round {
            return bump(
                &mut self.report.errors,
                "broadcast: duplicate or reordered",
                1,
            );
        }
        c.last_round = round;
        let latency_ns = now.saturating_sub(sent);
        let rs = &mut self.report.rounds[round as usize - 1];
        if latency_ns > self.plan.round_wait_ms * 1_000_000 {
            rs.late += 1;
        } else {
            rs.received += 1;
        }
        rs.first_ns = if rs.first_ns == 0 {
            now
        } else {
            rs.first_ns.min(now)
        };
        rs.last_ns = rs.last_ns.max(now);
        rs.lat_us.record(latency_ns / 1000);
    }

    /// A connection that never got signed in.
    fn fail(&mut self, i: usize, reason: String) {
        let c = &mut self.conns[i];
        if c.state.in_flight() {
            self.in_flight -= 1;
        }
        if c.again {
            // Soak: a reconnect failed; tried again after a pause, a few
            // times, and only while the final catch-up is not over.
            c.state = State::NotStarted;
            c.sock = None;
            c.out = Vec::new();
            c.inbuf = Vec::new();
            c.frag = None;
            c.tries += 1;
            let give_up = c.tries >= self.plan.soak.as_ref().map_or(1, |p| p.reconnect_tries)
                || self.phase == Phase::Done;
            if let Some(soak) = self.soak.as_mut() {
                bump(&mut soak.stat.reconnect_failures, &reason, 1);
                if give_up {
                    soak.stat.gave_up += 1;
                }
            }
            if give_up {
                self.conns[i].state = State::Failed;
            } else {
                let due = self.mono_us() + RETRY_US;
                self.reconnects.push(Reverse((due, i)));
            }
            return;
        }
        c.state = State::Failed;
        c.sock = None;
        c.out = Vec::new();
        c.inbuf = Vec::new();
        c.frag = None;
        bump(&mut self.report.failures, &reason, 1);
    }

    /// The connection ended (or must end) for `reason`, whatever its state.
    fn lost(&mut self, i: usize, reason: String) {
        let state = self.conns[i].state;
        match state {
            s if s.in_flight() => self.fail(i, format!("{}: {reason}", s.stage())),
            State::Closing => {
                // Soak: a socket closed with a close frame has ended.
                let c = &mut self.conns[i];
                c.state = State::Closed;
                c.sock = None;
                c.out = Vec::new();
                c.inbuf = Vec::new();
                c.frag = None;
                self.free_slots.push(i);
                if let Some(soak) = self.soak.as_mut() {
                    bump(&mut soak.stat.closing_ends, &reason, 1);
                }
            }
            State::Reader if self.soak.is_some() && self.phase != Phase::Done => {
                // Soak: the node closed a signed-in connection; it
                // reconnects like the churned ones.
                let c = &mut self.conns[i];
                c.state = State::NotStarted;
                c.sock = None;
                c.out = Vec::new();
                c.inbuf = Vec::new();
                c.frag = None;
                c.again = true;
                c.tries = 0;
                if let Some(soak) = self.soak.as_mut() {
                    soak.closed(i, false);
                    soak.stat.node_closed += 1;
                }
                bump(
                    &mut self.report.close_reasons,
                    &format!("reader: {reason}"),
                    1,
                );
                let now_us = self.mono_us();
                self.reconnects.push(Reverse((now_us, i)));
            }
            State::Reader | State::Slow | State::Draining => {
                let c = &mut self.conns[i];
                c.state = State::Closed;
                c.sock = None;
                c.out = Vec::new();
                c.inbuf = Vec::new();
                c.frag = None;
                let who = if state == State::Reader {
                    self.report.readers_closed += 1;
                    self.live_readers -= 1;
                    if let Some(chat) = self.chat.as_mut() {
                        chat.closed(i);
                    }
                    if let Some(soak) = self.soak.as_mut() {
                        soak.closed(i, false);
                    }
                    "reader"
                } else {
                    self.report.slow_closed += 1;
                    if state == State::Draining {
                        "slow, found at the end"
                    } else {
                        "slow"
                    }
                };
                bump(
                    &mut self.report.close_reasons,
                    &format!("{who}: {reason}"),
                    1,
                );
            }
            _ => {}
        }
    }

    fn expire(&mut self) {
        let now_us = self.mono_us();
        let limit = self.plan.connect_timeout_ms * 1000;
        while let Some(&(i, start)) = self.queue.front() {
            let c = &self.conns[i];
            if !c.state.in_flight() || c.start_us != start {
                self.queue.pop_front();
            } else if now_us.saturating_sub(c.start_us) >= limit {
                self.queue.pop_front();
                self.lost(i, "timeout".into());
            } else {
                break;
            }
        }
    }

    fn check_ready(&mut self) {
        if !self.ready_sent && self.next == self.n_main && self.in_flight == 0 {
            self.ready_sent = true;
            self.report.cpu_signin_s = own_cpu_s() - self.cpu_start_s;
            let failed = self.report.failures.values().sum();
            let msg = ChildMsg::Ready {
                signed_in: self.report.signed_in,
                readers: self.report.readers,
                slow: self.report.slow,
                failed,
            };
            self.emit(&msg);
        }
    }

    fn check_rounds(&mut self) {
        let mut k = 0;
        while k < self.pending_rounds.len() {
            let r = self.pending_rounds[k];
            let rs = &self.report.rounds[r as usize - 1];
            if rs.received + rs.late >= self.live_readers {
                self.pending_rounds.swap_remove(k);
                self.emit(&ChildMsg::Round { round: r });
            } else {
                k += 1;
            }
        }
    }

    fn heartbeat(&mut self) {
        for i in 0..self.conns.len() {
            if matches!(self.conns[i].state, State::Reader | State::Slow) {
                let mut frame = Vec::with_capacity(6);
                let mask = self.mask();
                ws::encode_client_frame(&mut frame, ws::OP_PING, &[], mask);
                self.send(i, &frame);
            }
        }
    }

    /// Ends the run: gives up on connections still in flight, drains the
    /// slow readers to see which ones the gateway closed, and reports.
    fn finish(&mut self, events: &mut Events) {
        let not_started = (self.n_main - self.next) as u64;
        if not_started > 0 {
            bump(
                &mut self.report.failures,
                "not attempted: run ended",
                not_started,
            );
        }
        for i in 0..self.conns.len() {
            if self.conns[i].state.in_flight() {
                self.lost(i, "run ended".into());
            }
        }
        let mut draining = false;
        for i in 0..self.conns.len() {
            if self.conns[i].state == State::Slow {
                self.conns[i].state = State::Draining;
                draining = true;
                self.read(i, true);
            }
        }
        if draining {
            let start = Instant::now();
            self.last_drain_read = start;
            while start.elapsed() < DRAIN_MAX && self.last_drain_read.elapsed() < DRAIN_QUIET {
                if self
                    .poll
                    .poll(events, Some(Duration::from_millis(20)))
                    .is_err()
                {
                    continue;
                }
                for ev in events.iter() {
                    if ev.token() != WAKER {
                        self.on_event(ev.token().0, ev);
                    }
                }
            }
        }
        self.report.cpu_total_s = own_cpu_s();
        self.report.chat = self.chat.take().map(|c| c.stat);
        let online: Vec<bool> = self.conns[..self.n_main]
            .iter()
            .map(|c| c.state == State::Reader)
            .collect();
        self.report.soak = self.soak.take().map(|s| s.finish(|i| online[i]));
        let report = std::mem::take(&mut self.report);
        self.emit(&ChildMsg::Report(Box::new(report)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_frames() {
        let mut f = br#"{"Cmd":-1,"FromId":0,"ToId":0,"Ope":0,"Type":0,"Body":"7:1234:"#.to_vec();
        f.extend(std::iter::repeat_n(b'x', 10_000));
        f.extend_from_slice(br#"","Id":0,"Time":1}"#);
        assert_eq!(
            quick_frame(&f),
            Some((
                -1,
                "7:1234:xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
            ))
        );
        assert_eq!(quick_frame(br#"{"Cmd": 4,"Body":"ok"}"#), Some((4, "ok")));
        assert_eq!(quick_frame(br#"{"Cmd":2,"Body":"a\"b"}"#), Some((2, "a")));
        assert_eq!(quick_frame(br#"{"cmd":-1,"body":"1:2:"}"#), None);
        assert_eq!(quick_frame(br#"{"Cmd":"x","Body":"1"}"#), None);
    }
}
