//! A reactor: one thread, one `mio::Poll`, its own SO_REUSEPORT listener and
//! a `slab` of connections. It reads and parses HTTP requests and WebSocket
//! frames in the loop, hands REST requests to the workers, and writes
//! replies and pushes that arrive in its inbox (woken by a `mio::Waker`).
//!
//! # A connection's life
//! ```text
//! accept ─▶ Http ──request──▶ job to a worker ──Reply──▶ Http (keep-alive)
//!            │
//!            └─ GET /ws + Upgrade ─▶ WsPending ──Cmd 3 + valid token──▶ WsReady
//!                                                                         │
//!   any state ── error / close frame / deadline / drain ──▶ Closing ──▶ dropped
//! ```
//! - `since` is the one deadline anchor: the start of the current HTTP
//!   request (slow clients, idle keep-alive), the upgrade (auth deadline),
//!   the last frame received (idle timeout) or the start of closing (linger).
//!   A sweep every 250 ms closes what is past its deadline.
//! - An idle connection holds no heap buffer: reads land in the reactor's
//!   scratch buffer; only an incomplete request or frame is kept per
//!   connection and freed once consumed.
//! - Outgoing bytes are written at once; only what the socket refuses is
//!   queued, as a reference to the shared frame plus an offset. Past
//!   `limits.max_pending_bytes` queued the connection is dropped.
//! - Nothing here blocks and nothing here panics on network input.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, IoSlice, Read, Write};
use std::net::{IpAddr, Shutdown};
use std::sync::atomic::{AtomicBool, Ordering::AcqRel, Ordering::Relaxed, Ordering::Release};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::api;
use crate::chat;
use crate::commit::Submission;
use crate::http::{self, Parsed, Request, Response};
use crate::message::{cmd, parse_client, ClientMsg, Push};
use crate::metrics::{CloseReason, ReactorStats};
use crate::node::Shared;
use crate::worker::{Job, Task};
use crate::ws::{self, close, Opcode, SharedFrame};

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
const SCRATCH: usize = 64 * 1024;
const SWEEP: Duration = Duration::from_millis(250);
const LINGER: Duration = Duration::from_secs(2);
const MAX_IOVECS: usize = 64;
/// Bytes a connection may have corked before it is written at once.
const CORK_BYTES: usize = 64 * 1024;
/// Inbox messages handled before the corked connections are written.
const INBOX_BATCH: usize = 1024;
/// Poll timeout while connections wait for room in the job queue.
const PAUSED_RETRY: Duration = Duration::from_millis(1);

/// A connection as seen from outside its reactor. The generation makes a
/// stale reference to a reused slab slot harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnRef {
    /// Reactor index.
    pub reactor: u16,
    /// Slab key in that reactor.
    pub token: u32,
    /// Generation of the slot when the reference was taken.
    pub generation: u32,
}

/// Which connections a push is for.
#[derive(Debug)]
pub enum Targets {
    /// Every signed-in connection of the reactor.
    All,
    /// These `(token, generation)` pairs.
    Conns(Vec<(u32, u32)>),
}

/// Messages into a reactor.
#[derive(Debug)]
pub enum Inbox {
    /// A worker's answer to an HTTP request.
    Reply {
        /// The requesting connection.
        conn: ConnRef,
        /// The encoded response.
        bytes: Vec<u8>,
        /// Whether the connection stays open afterwards.
        keep_alive: bool,
    },
    /// A frame for signed-in connections; `ack` receives how many it was written to.
    Push {
        /// The shared encoded frame.
        frame: SharedFrame,
        /// Recipients.
        to: Targets,
        /// Where to report the count, if anyone waits.
        ack: Option<Sender<usize>>,
        /// The newest stored message id in the frame; 0 for notices.
        id: u64,
        /// Part of a connection's catching up (written even while it syncs).
        sync: bool,
    },
    /// A connection's pending messages were pushed up to `upto`.
    SyncDone {
        /// The connection.
        conn: ConnRef,
        /// The newest id pushed (or the cursor it started from).
        upto: u64,
        /// Whether it finished.
        outcome: SyncOutcome,
    },
    /// Close one WebSocket with this code (a user over `conns_per_user`).
    Close {
        /// The connection.
        conn: ConnRef,
        /// WebSocket close code.
        code: u16,
    },
    /// Push every signed-in connection's pending messages again, from its
    /// stored cursor (cluster mode, after deliveries from other nodes may
    /// have been missed).
    Resync,
    /// Stop accepting and close WebSockets with 1001.
    Drain,
    /// Leave the loop.
    Stop,
}

/// How a job pushing pending messages ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncOutcome {
    /// Nothing more is pending.
    Done,
    /// The job yielded; more may be pending after `upto`.
    More,
    /// The store failed; try again later from `upto`.
    Failed,
}

/// The sending side of a reactor's inbox.
#[derive(Clone)]
pub struct ReactorHandle {
    tx: Sender<Inbox>,
    waker: Arc<Waker>,
    notified: Arc<AtomicBool>,
}

impl ReactorHandle {
    /// Queues a message and wakes the reactor (once per batch of messages).
    pub fn send(&self, msg: Inbox) {
        if self.tx.send(msg).is_ok() && !self.notified.swap(true, AcqRel) {
            let _ = self.waker.wake();
        }
    }
}

/// The parts a reactor thread is built from.
pub struct ReactorParts {
    poll: Poll,
    inbox: Receiver<Inbox>,
    notified: Arc<AtomicBool>,
}

/// A poll and its inbox, before the thread starts.
pub fn prepare() -> io::Result<(ReactorHandle, ReactorParts)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, inbox) = crossbeam_channel::unbounded();
    let notified = Arc::new(AtomicBool::new(false));
    Ok((
        ReactorHandle {
            tx,
            waker,
            notified: notified.clone(),
        },
        ReactorParts {
            poll,
            inbox,
            notified,
        },
    ))
}

/// Bytes waiting to be written.
enum Chunk {
    Owned(Vec<u8>),
    Shared(SharedFrame),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Owned(v) => v,
            Chunk::Shared(f) => f,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Speaking HTTP/1.1; `inflight` while a worker handles a request.
    Http { inflight: bool },
    /// Upgraded, waiting for Cmd 3.
    WsPending,
    /// Signed in as this user.
    WsReady { uid: u64, catchup: Catchup },
    /// Flushing, then waiting for the peer's EOF (input discarded).
    Closing,
}

/// Delivery bookkeeping of a signed-in connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Catchup {
    /// Pending messages are being pushed: live messages wait in `held`
    /// until the catching up is done, so ids reach the client in order.
    syncing: bool,
    /// The client acknowledges with Cmd 22; writes alone do not count as
    /// delivered.
    acks: bool,
    /// The newest message id written to this connection: an
    /// acknowledgement never moves the cursor past it.
    sent: u64,
    /// The newest message id written by the catching up. It read every
    /// message stored up to there, so a live push at or below it was
    /// already written and is skipped. (Live pushes above it may arrive out
    /// of id order: in a cluster, a message from another node comes a hop
    /// later than a newer local one.)
    synced: u64,
}

/// A fragmented message being reassembled.
struct Fragment {
    opcode: Opcode,
    data: Vec<u8>,
}

struct Conn {
    stream: TcpStream,
    peer: IpAddr,
    generation: u32,
    state: State,
    since: Instant,
    inbuf: Vec<u8>,
    out: VecDeque<(Chunk, usize)>,
    pending: usize,
    frag: Option<Box<Fragment>>,
    /// Live message frames (and their ids) waiting for the catching up;
    /// counted in `pending`.
    held: Vec<(SharedFrame, u64)>,
    /// A Cmd 20 waiting for room in the committer queue; the connection is
    /// not read meanwhile.
    deferred: Option<Box<Submission>>,
    /// Listed in the reactor's `corked`: frames queued in `out` during this
    /// inbox batch are written when it ends.
    corked: bool,
}

/// How a write went.
enum Sent {
    Ok(usize),
    Slow,
    Failed,
}

/// Writes as much of `buf` as the socket takes now.
fn write_now(stream: &mut TcpStream, buf: &[u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match stream.write(&buf[done..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

impl Conn {
    /// Writes `chunk` now or queues the rest; `Slow` once more than
    /// `max_pending` bytes wait.
    fn send(&mut self, chunk: Chunk, max_pending: usize) -> Sent {
        let mut written = 0;
        if self.out.is_empty() {
            match write_now(&mut self.stream, chunk.bytes()) {
                Ok(n) if n == chunk.bytes().len() => return Sent::Ok(n),
                Ok(n) => written = n,
                Err(_) => return Sent::Failed,
            }
        }
        self.pending += chunk.bytes().len() - written;
        self.out.push_back((chunk, written));
        if self.pending > max_pending {
            Sent::Slow
        } else {
            Sent::Ok(written)
        }
    }

    /// Writes queued chunks, several per system call (one chunk: a plain
    /// `send`, which the kernel handles faster than a one-slice `writev`).
    fn flush(&mut self) -> io::Result<usize> {
        let mut total = 0;
        while !self.out.is_empty() {
            let written = if self.out.len() == 1 {
                let (chunk, off) = &self.out[0];
                self.stream.write(&chunk.bytes()[*off..])
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let mut n = 0;
                for ((chunk, off), slice) in self.out.iter().zip(slices.iter_mut()) {
                    *slice = IoSlice::new(&chunk.bytes()[*off..]);
                    n += 1;
                }
                self.stream.write_vectored(&slices[..n])
            };
            let n = match written {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            total += n;
            self.pending -= n;
            let mut left = n;
            while left > 0 {
                let Some((chunk, off)) = self.out.front_mut() else {
                    break;
                };
                let rest = chunk.bytes().len() - *off;
                if left >= rest {
                    left -= rest;
                    self.out.pop_front();
                } else {
                    *off += left;
                    left = 0;
                }
            }
        }
        if self.out.is_empty() {
            self.out = VecDeque::new();
        }
        Ok(total)
    }

    fn conn_ref(&self, reactor: u16, key: usize) -> ConnRef {
        ConnRef {
            reactor,
            token: key as u32,
            generation: self.generation,
        }
    }
}

/// Queues a frame for a signed-in connection (corked: written with the
/// rest of its frames when the inbox batch ends, see
/// [`Reactor::uncork`]) and records the newest message id it carries.
/// Only a connection with more than [`CORK_BYTES`] queued is written at
/// once; `Slow` when more than `max_pending` bytes still wait after that.
fn write_message(
    conn: &mut Conn,
    key: usize,
    frame: &SharedFrame,
    id: u64,
    max_pending: usize,
    corked: &mut Vec<usize>,
) -> Sent {
    let State::WsReady {
        ref mut catchup, ..
    } = conn.state
    else {
        return Sent::Ok(0);
    };
    catchup.sent = catchup.sent.max(id);
    if !conn.corked {
        conn.corked = true;
        corked.push(key);
    }
    conn.pending += frame.len();
    conn.out.push_back((Chunk::Shared(frame.clone()), 0));
    if conn.pending <= CORK_BYTES {
        return Sent::Ok(0);
    }
    match conn.flush() {
        Ok(_) if conn.pending > max_pending => Sent::Slow,
        Ok(n) => Sent::Ok(n),
        Err(_) => Sent::Failed,
    }
}

/// The `Sec-WebSocket-Key` of a valid upgrade request.
fn upgrade_key(req: &Request) -> Option<&str> {
    let ok = req.header_has_token("upgrade", "websocket")
        && req.header_has_token("connection", "upgrade")
        && req.header("sec-websocket-version").map(str::trim) == Some("13");
    let key = req.header("sec-websocket-key")?.trim();
    (ok && key.len() == 24 && key.ends_with("==")).then_some(key)
}

fn reason_for(code: u16) -> CloseReason {
    match code {
        close::TOO_BIG => CloseReason::TooBig,
        close::INVALID_DATA => CloseReason::InvalidData,
        _ => CloseReason::Protocol,
    }
}

/// One event loop.
pub struct Reactor {
    id: u16,
    poll: Poll,
    listener: Option<TcpListener>,
    conns: Slab<Conn>,
    inbox: Receiver<Inbox>,
    notified: Arc<AtomicBool>,
    shared: Arc<Shared>,
    scratch: Vec<u8>,
    next_generation: u32,
    now: Instant,
    draining: bool,
    doomed: Vec<(usize, CloseReason)>,
    /// Delivery cursors to move forward at the next sweep: user → id.
    advances: HashMap<u64, u64>,
    /// Catching up to start again at the next sweep.
    resync: Vec<(ConnRef, Option<u64>)>,
    /// Connections to catch up once more, from their stored cursor, when
    /// their current catching up ends (see `resync_all`).
    rescan: HashSet<ConnRef>,
    /// Connections not read while their Cmd 20 waits for room in the queue.
    paused: Vec<ConnRef>,
    /// Connections with frames queued by this inbox batch (see `uncork`).
    corked: Vec<usize>,
}

impl Reactor {
    /// A reactor over a bound listener.
    pub fn new(
        id: u16,
        parts: ReactorParts,
        mut listener: TcpListener,
        shared: Arc<Shared>,
    ) -> io::Result<Reactor> {
        parts
            .poll
            .registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(Reactor {
            id,
            poll: parts.poll,
            listener: Some(listener),
            conns: Slab::new(),
            inbox: parts.inbox,
            notified: parts.notified,
            shared,
            scratch: vec![0; SCRATCH],
            next_generation: 0,
            now: Instant::now(),
            draining: false,
            doomed: Vec::new(),
            advances: HashMap::new(),
            resync: Vec::new(),
            rescan: HashSet::new(),
            paused: Vec::new(),
            corked: Vec::new(),
        })
    }

    fn stats(&self) -> &ReactorStats {
        &self.shared.metrics.reactors[self.id as usize]
    }

    /// Runs until `Inbox::Stop`.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut next_sweep = Instant::now() + SWEEP;
        loop {
            let timeout = if self.paused.is_empty() {
                next_sweep.saturating_duration_since(Instant::now())
            } else {
                PAUSED_RETRY
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("reactor {}: poll: {e}", self.id);
                    return;
                }
            }
            self.now = Instant::now();
            let mut woken = false;
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => woken = true,
                    Token(key) => {
                        if event.is_writable() {
                            self.write_ready(key);
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read_ready(key);
                        }
                    }
                }
            }
            if woken && !self.drain_inbox() {
                return;
            }
            if !self.paused.is_empty() {
                self.resume_paused();
            }
            if self.now >= next_sweep {
                self.sweep();
                next_sweep = self.now + SWEEP;
            }
        }
    }

    fn accept(&mut self) {
        let max = self.shared.config.limits.max_connections;
        loop {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            let (mut stream, addr) = match listener.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("reactor {}: accept: {e}", self.id);
                    return;
                }
            };
            if max > 0 && self.shared.metrics.open() >= max as i64 {
                continue;
            }
            let _ = stream.set_nodelay(true);
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            if self
                .poll
                .registry()
                .register(
                    &mut stream,
                    Token(key),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_err()
            {
                continue;
            }
            self.next_generation = self.next_generation.wrapping_add(1);
            entry.insert(Conn {
                stream,
                peer: addr.ip(),
                generation: self.next_generation,
                state: State::Http { inflight: false },
                since: self.now,
                inbuf: Vec::new(),
                out: VecDeque::new(),
                pending: 0,
                frag: None,
                held: Vec::new(),
                deferred: None,
                corked: false,
            });
            self.stats().open.fetch_add(1, Relaxed);
        }
    }

    /// Reads until the socket is empty or the connection waits for a worker.
    fn read_ready(&mut self, key: usize) {
        let mut scratch = std::mem::take(&mut self.scratch);
        while let Some(conn) = self.conns.get_mut(key) {
            if conn.state == (State::Http { inflight: true }) || conn.deferred.is_some() {
                break;
            }
            let n = match conn.stream.read(&mut scratch) {
                Ok(0) => {
                    let reason = match conn.state {
                        State::Closing => None,
                        _ => Some(CloseReason::Client),
                    };
                    self.drop_conn(key, reason);
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.drop_conn(key, Some(CloseReason::Client));
                    break;
                }
            };
            let kept = std::mem::take(&mut conn.inbuf);
            self.stats().bytes_in.fetch_add(n as u64, Relaxed);
            if kept.is_empty() {
                let used = self.on_input(key, &mut scratch[..n]);
                if used < n {
                    if let Some(conn) = self.conns.get_mut(key) {
                        conn.inbuf = scratch[used..n].to_vec();
                    }
                }
            } else {
                let mut buf = kept;
                buf.extend_from_slice(&scratch[..n]);
                self.consume_inbuf(key, buf);
            }
        }
        self.scratch = scratch;
    }

    /// Processes bytes kept from earlier reads and keeps what is left.
    fn consume_inbuf(&mut self, key: usize, mut buf: Vec<u8>) {
        let used = self.on_input(key, &mut buf);
        if let Some(conn) = self.conns.get_mut(key) {
            if used < buf.len() && conn.state != State::Closing {
                buf.drain(..used);
                conn.inbuf = buf;
            }
        }
    }

    /// Handles as many complete requests or frames as `data` holds; returns
    /// the bytes used.
    fn on_input(&mut self, key: usize, data: &mut [u8]) -> usize {
        let shared = Arc::clone(&self.shared);
        let limits = &shared.config.limits;
        let mut off = 0;
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return data.len();
            };
            if off == data.len() {
                return off;
            }
            match conn.state {
                State::Closing => return data.len(),
                State::Http { inflight: true } => return off,
                State::Http { inflight: false } => {
                    match http::parse(
                        &data[off..],
                        |path| api::body_limit(limits, path),
                        conn.peer,
                    ) {
                        Parsed::Partial => return off,
                        Parsed::Reject(status) => {
                            self.http_reject(key, status);
                            return data.len();
                        }
                        Parsed::Complete(req, used) => {
                            off += used;
                            self.on_request(key, req);
                        }
                    }
                }
                State::WsPending | State::WsReady { .. } => {
                    match ws::check_frame(&data[off..], limits.max_message) {
                        Ok(None) => return off,
                        Err(code) => {
                            self.close_ws(key, code, reason_for(code));
                            return data.len();
                        }
                        Ok(Some(info)) => {
                            let start = off + info.payload_start;
                            off += info.total_len();
                            let payload = &mut data[start..off];
                            ws::unmask(payload, info.mask);
                            self.on_frame(key, info.fin, info.opcode, payload);
                            if self.conns.get(key).is_some_and(|c| c.deferred.is_some()) {
                                return off;
                            }
                        }
                    }
                }
            }
        }
    }

    fn on_request(&mut self, key: usize, req: Request) {
        self.stats().http_requests.fetch_add(1, Relaxed);
        let id = self.id;
        let draining = self.draining;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if req.method == "GET" && req.path == "/ws" {
            if draining {
                self.http_reject(key, 503);
                return;
            }
            let Some(accept) = upgrade_key(&req).map(|k| ws::upgrade_response(k.as_bytes())) else {
                self.http_reject(key, 400);
                return;
            };
            conn.state = State::WsPending;
            conn.since = self.now;
            self.send(key, Chunk::Owned(accept));
            return;
        }
        conn.state = State::Http { inflight: true };
        let me = conn.conn_ref(id, key);
        let keep_alive = req.keep_alive && !draining;
        if self.queue(me, Task::Http { req, keep_alive }).is_err() {
            let bytes = Response::error(503).encode(keep_alive);
            self.on_reply(key, bytes, keep_alive);
        }
    }

    /// Hands a task to the workers; on a full queue (counted) the task comes
    /// back by value, so the sweep can keep unwritten cursors.
    #[allow(clippy::result_large_err)]
    fn queue(&self, conn: ConnRef, task: Task) -> Result<(), Task> {
        let job = Job {
            conn,
            task,
            enqueued: Instant::now(),
        };
        match self.shared.jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(job)) | Err(TrySendError::Disconnected(job)) => {
                self.stats().jobs_rejected.fetch_add(1, Relaxed);
                Err(job.task)
            }
        }
    }

    /// A worker's (or the overload) answer: write it, then carry on with
    /// pipelined input.
    fn on_reply(&mut self, key: usize, bytes: Vec<u8>, keep_alive: bool) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.state != (State::Http { inflight: true }) {
            return;
        }
        conn.state = State::Http { inflight: false };
        conn.since = self.now;
        self.send(key, Chunk::Owned(bytes));
        if !keep_alive || self.draining {
            self.stats().closed(CloseReason::HttpDone);
            self.enter_closing(key);
            return;
        }
        if let Some(conn) = self.conns.get_mut(key) {
            let buf = std::mem::take(&mut conn.inbuf);
            if !buf.is_empty() {
                self.consume_inbuf(key, buf);
            }
            self.read_ready(key);
        }
    }

    fn http_reject(&mut self, key: usize, status: u16) {
        self.stats().closed(CloseReason::HttpError);
        self.send(key, Chunk::Owned(Response::error(status).encode(false)));
        self.enter_closing(key);
    }

    fn on_frame(&mut self, key: usize, fin: bool, opcode: Opcode, payload: &[u8]) {
        self.stats().frames_in.fetch_add(1, Relaxed);
        let max_message = self.shared.config.limits.max_message;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let State::WsReady { .. } = conn.state {
            conn.since = self.now;
        }
        match opcode {
            Opcode::Ping => self.send(key, Chunk::Owned(ws::pong_frame(payload))),
            Opcode::Pong => {}
            Opcode::Close => {
                let code = ws::close_reply_code(payload);
                let reason = if code == close::PROTOCOL || code == close::INVALID_DATA {
                    reason_for(code)
                } else {
                    CloseReason::Client
                };
                self.close_ws(key, code, reason);
            }
            Opcode::Text | Opcode::Binary => {
                if conn.frag.is_some() {
                    self.close_ws(key, close::PROTOCOL, CloseReason::Protocol);
                } else if fin {
                    self.on_message(key, opcode, payload);
                } else {
                    conn.frag = Some(Box::new(Fragment {
                        opcode,
                        data: payload.to_vec(),
                    }));
                }
            }
            Opcode::Continue => {
                let Some(frag) = conn.frag.as_mut() else {
                    self.close_ws(key, close::PROTOCOL, CloseReason::Protocol);
                    return;
                };
                if frag.data.len() + payload.len() > max_message {
                    self.close_ws(key, close::TOO_BIG, CloseReason::TooBig);
                    return;
                }
                frag.data.extend_from_slice(payload);
                if fin {
                    if let Some(frag) = conn.frag.take() {
                        self.on_message(key, frag.opcode, &frag.data);
                    }
                }
            }
        }
    }

    fn on_message(&mut self, key: usize, opcode: Opcode, payload: &[u8]) {
        if opcode == Opcode::Text && std::str::from_utf8(payload).is_err() {
            self.close_ws(key, close::INVALID_DATA, CloseReason::InvalidData);
            return;
        }
        match parse_client(payload).filter(|_| opcode == Opcode::Text) {
            Some(msg) => self.on_command(key, msg),
            None => self.reply(key, &Push::system(cmd::FAIL, "消息格式错误")),
        }
    }

    fn on_command(&mut self, key: usize, msg: ClientMsg) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        match (conn.state, msg.cmd) {
            (State::WsPending, cmd::SIGN_IN) => self.sign_in(key, &msg.body),
            (State::WsPending, _) => self.reply(key, &Push::system(cmd::FAIL, "你还未认证")),
            (State::WsReady { .. }, cmd::PING) => self.reply(key, &Push::system(cmd::PONG, "")),
            (State::WsReady { uid, .. }, cmd::SEND) => {
                let me = conn.conn_ref(self.id, key);
                match chat::from_socket(&self.shared, me, uid, msg) {
                    Ok(sub) => self.submit(key, sub),
                    Err(refusal) => self.send(key, Chunk::Shared(refusal)),
                }
            }
            (State::WsReady { uid, .. }, cmd::DELIVERED) => match msg.body.trim().parse::<u64>() {
                Ok(upto) => {
                    if let Some(Conn {
                        state: State::WsReady { catchup, .. },
                        ..
                    }) = self.conns.get_mut(key)
                    {
                        catchup.acks = true;
                        let upto = upto.min(catchup.sent);
                        self.advance(uid, upto);
                    }
                }
                Err(_) => self.reply(key, &Push::system(cmd::FAIL, "消息格式错误")),
            },
            (State::WsReady { uid, .. }, cmd::SIGN_IN) => {
                let same = self.shared.tokens.verify(&msg.body).map(|c| c.id) == Ok(uid);
                let push = if same {
                    Push::system(cmd::SIGNED_IN, "认证成功")
                } else {
                    Push::system(cmd::FAIL, "认证失败")
                };
                self.reply(key, &push);
            }
            (State::WsReady { .. }, _) => self.reply(key, &Push::system(cmd::FAIL, "不支持的指令")),
            _ => {}
        }
    }

    fn sign_in(&mut self, key: usize, token: &str) {
        let claims = match self.shared.tokens.verify(token) {
            Ok(c) => c,
            Err(_) => {
                self.reply(key, &Push::system(cmd::FAIL, "认证失败"));
                return;
            }
        };
        let id = self.id;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.state = State::WsReady {
            uid: claims.id,
            catchup: Catchup {
                syncing: true,
                ..Catchup::default()
            },
        };
        conn.since = self.now;
        let me = conn.conn_ref(id, key);
        self.stats().authenticated.fetch_add(1, Relaxed);
        // Registered before the client hears Cmd 4, so a failed write
        // (which drops the connection) also unregisters it.
        if let Some(old) = self.shared.delivery.registry.add(claims.id, me) {
            self.shared.delivery.close(old, close::REPLACED);
        }
        self.reply(key, &Push::system(cmd::SIGNED_IN, "认证成功"));
        if self.live(me).is_some() {
            self.catch_up(me, claims.id, None);
        }
    }

    /// Hands a Cmd 20 to the committer. Backpressure: when its queue is
    /// full the connection stops being read until the message fits.
    fn submit(&mut self, key: usize, sub: Submission) {
        if let Err(sub) = self.shared.committer.try_submit(sub) {
            self.stats().sends_deferred.fetch_add(1, Relaxed);
            if let Some(conn) = self.conns.get_mut(key) {
                self.paused.push(conn.conn_ref(self.id, key));
                conn.deferred = Some(Box::new(sub));
            }
        }
    }

    /// Retries the sends of connections paused on a full queue; a connection
    /// whose send is queued carries on with its buffered input.
    fn resume_paused(&mut self) {
        for conn in std::mem::take(&mut self.paused) {
            if self.shared.committer.is_full() {
                // Still no room: keep the rest waiting, as they are.
                self.paused.push(conn);
                continue;
            }
            let Some(key) = self.live(conn) else {
                continue;
            };
            let Some(sub) = self.conns[key].deferred.take() else {
                continue;
            };
            if let Err(sub) = self.shared.committer.try_submit(*sub) {
                self.conns[key].deferred = Some(Box::new(sub));
                self.paused.push(conn);
                continue;
            }
            let buf = std::mem::take(&mut self.conns[key].inbuf);
            if !buf.is_empty() {
                self.consume_inbuf(key, buf);
            }
            self.read_ready(key);
        }
    }

    /// Starts (or continues) pushing a connection's pending messages; when
    /// the queue is full the sweep tries again.
    fn catch_up(&mut self, conn: ConnRef, uid: u64, after: Option<u64>) {
        if self.queue(conn, Task::Pending { uid, after }).is_err() {
            self.resync.push((conn, after));
        }
    }

    /// Records that `uid` has received messages up to `id`; the sweep writes
    /// the cursors in one job.
    fn advance(&mut self, uid: u64, id: u64) {
        let upto = self.advances.entry(uid).or_insert(0);
        *upto = (*upto).max(id);
    }

    /// A catching-up job ended.
    fn on_sync_done(&mut self, conn: ConnRef, upto: u64, outcome: SyncOutcome) {
        let Some(key) = self.live(conn) else {
            return;
        };
        let State::WsReady { uid, mut catchup } = self.conns[key].state else {
            return;
        };
        match outcome {
            SyncOutcome::Done => {
                let max_pending = self.shared.config.limits.max_pending_bytes;
                let c = &mut self.conns[key];
                catchup.syncing = false;
                c.state = State::WsReady { uid, catchup };
                let held = std::mem::take(&mut c.held);
                c.pending -= held.iter().map(|(f, _)| f.len()).sum::<usize>();
                let mut bytes = 0;
                // What the catching up already wrote is not written again.
                for (frame, id) in held.iter().filter(|(_, id)| *id > catchup.synced) {
                    match write_message(c, key, frame, *id, max_pending, &mut self.corked) {
                        Sent::Ok(n) => bytes += n,
                        Sent::Slow => {
                            self.drop_conn(key, Some(CloseReason::SlowConsumer));
                            return;
                        }
                        Sent::Failed => {
                            self.drop_conn(key, Some(CloseReason::Client));
                            return;
                        }
                    }
                }
                self.stats().bytes_out.fetch_add(bytes as u64, Relaxed);
                if self.rescan.remove(&conn) {
                    self.restart_catch_up(key);
                }
            }
            SyncOutcome::More => self.catch_up(conn, uid, Some(upto)),
            SyncOutcome::Failed => self.resync.push((conn, Some(upto))),
        }
    }

    /// Sends one message to one connection.
    fn reply(&mut self, key: usize, push: &Push) {
        self.stats().frames_out.fetch_add(1, Relaxed);
        self.send(key, Chunk::Owned(ws::text_frame(&push.to_json())));
    }

    /// Writes or queues bytes for one connection, dropping it when it is
    /// too slow or broken.
    fn send(&mut self, key: usize, chunk: Chunk) {
        let max_pending = self.shared.config.limits.max_pending_bytes;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let sent = conn.send(chunk, max_pending);
        self.after_send(key, sent);
    }

    fn after_send(&mut self, key: usize, sent: Sent) {
        match sent {
            Sent::Ok(n) => {
                self.stats().bytes_out.fetch_add(n as u64, Relaxed);
                if let Some(conn) = self.conns.get_mut(key) {
                    if conn.state == State::Closing && conn.out.is_empty() {
                        let _ = conn.stream.shutdown(Shutdown::Write);
                    }
                }
            }
            Sent::Slow => self.drop_conn(key, Some(CloseReason::SlowConsumer)),
            Sent::Failed => self.drop_conn(key, Some(CloseReason::Client)),
        }
    }

    fn write_ready(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.out.is_empty() {
            return;
        }
        match conn.flush() {
            Ok(n) => self.flushed(key, n),
            Err(_) => self.drop_conn(key, Some(CloseReason::Client)),
        }
    }

    /// Sends a close frame and starts closing.
    fn close_ws(&mut self, key: usize, code: u16, reason: CloseReason) {
        self.stats().closed(reason);
        let text = match reason {
            CloseReason::AuthTimeout => "auth timeout",
            CloseReason::Idle => "idle timeout",
            CloseReason::Drain => "node draining",
            CloseReason::Replaced => "replaced by a newer connection",
            _ => "",
        };
        self.send(key, Chunk::Owned(ws::close_frame(code, text)));
        self.enter_closing(key);
    }

    /// Leaves the registry, stops reading input and shuts the write side
    /// once everything queued is out.
    fn enter_closing(&mut self, key: usize) {
        let id = self.id;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let State::WsReady { uid, .. } = conn.state {
            let me = conn.conn_ref(id, key);
            self.shared.delivery.registry.remove(uid, me);
            self.stats().authenticated.fetch_sub(1, Relaxed);
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.state = State::Closing;
        conn.since = self.now;
        conn.inbuf = Vec::new();
        conn.frag = None;
        conn.held = Vec::new();
        conn.deferred = None;
        if conn.out.is_empty() {
            let _ = conn.stream.shutdown(Shutdown::Write);
        }
    }

    /// Removes a connection now; `reason` is counted unless it was counted
    /// when closing began.
    fn drop_conn(&mut self, key: usize, reason: Option<CloseReason>) {
        if !self.conns.contains(key) {
            return;
        }
        let mut conn = self.conns.remove(key);
        if let State::WsReady { uid, .. } = conn.state {
            self.shared
                .delivery
                .registry
                .remove(uid, conn.conn_ref(self.id, key));
            self.stats().authenticated.fetch_sub(1, Relaxed);
        }
        let stats = self.stats();
        if let Some(reason) = reason.filter(|_| conn.state != State::Closing) {
            stats.closed(reason);
        }
        stats.open.fetch_sub(1, Relaxed);
        let _ = self.poll.registry().deregister(&mut conn.stream);
    }

    /// Handles the inbox; `false` when the reactor must stop. Frames for
    /// signed-in connections are corked: each connection gets one write
    /// (`writev`) per batch of inbox messages, whatever number of frames
    /// the batch brought it.
    fn drain_inbox(&mut self) -> bool {
        self.notified.store(false, Release);
        loop {
            let mut handled = 0;
            while handled < INBOX_BATCH {
                let Ok(msg) = self.inbox.try_recv() else {
                    break;
                };
                handled += 1;
                if !self.on_inbox(msg) {
                    return false;
                }
            }
            self.uncork();
            if handled < INBOX_BATCH {
                return true;
            }
        }
    }

    /// Writes every corked connection's queued frames.
    fn uncork(&mut self) {
        let max_pending = self.shared.config.limits.max_pending_bytes;
        for key in std::mem::take(&mut self.corked) {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            conn.corked = false;
            match conn.flush() {
                Ok(_) if conn.pending > max_pending => {
                    self.drop_conn(key, Some(CloseReason::SlowConsumer))
                }
                Ok(n) => self.flushed(key, n),
                Err(_) => self.drop_conn(key, Some(CloseReason::Client)),
            }
        }
    }

    /// `n` queued bytes went out: a closing connection with nothing left
    /// shuts its write side, and a signed-in client that does not
    /// acknowledge has received what was written to it.
    fn flushed(&mut self, key: usize, n: usize) {
        self.after_send(key, Sent::Ok(n));
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        if let State::WsReady { uid, catchup } = conn.state {
            if conn.out.is_empty() && !catchup.acks && catchup.sent > 0 {
                self.advance(uid, catchup.sent);
            }
        }
    }

    /// Handles one inbox message; `false` when the reactor must stop.
    fn on_inbox(&mut self, msg: Inbox) -> bool {
        match msg {
            Inbox::Reply {
                conn,
                bytes,
                keep_alive,
            } => {
                if let Some(key) = self.live(conn) {
                    self.on_reply(key, bytes, keep_alive);
                }
            }
            Inbox::Push {
                frame,
                to,
                ack,
                id,
                sync,
            } => {
                let n = self.push(&frame, to, id, sync);
                if let Some(ack) = ack {
                    let _ = ack.send(n);
                }
            }
            Inbox::SyncDone {
                conn,
                upto,
                outcome,
            } => self.on_sync_done(conn, upto, outcome),
            Inbox::Close { conn, code } => {
                if let Some(key) = self.live(conn) {
                    if self.conns[key].state != State::Closing {
                        self.close_ws(key, code, CloseReason::Replaced);
                    }
                }
            }
            Inbox::Resync => self.resync_all(),
            Inbox::Drain => self.drain(),
            Inbox::Stop => {
                for (_, conn) in self.conns.iter_mut() {
                    let _ = conn.flush();
                }
                return false;
            }
        }
        true
    }

    /// The slab key of a reference that is still current.
    fn live(&self, conn: ConnRef) -> Option<usize> {
        let key = conn.token as usize;
        self.conns
            .get(key)
            .filter(|c| c.generation == conn.generation)
            .map(|_| key)
    }

    /// Writes a shared frame to signed-in connections; returns how many.
    /// `id` is the newest stored message in the frame (0 for notices): a
    /// connection catching up holds live messages back, and a message fully
    /// written to a client that does not acknowledge counts as delivered.
    fn push(&mut self, frame: &SharedFrame, to: Targets, id: u64, sync: bool) -> usize {
        let max_pending = self.shared.config.limits.max_pending_bytes;
        let mut count = 0;
        let mut bytes = 0;
        let mut doomed = std::mem::take(&mut self.doomed);
        let corked = &mut self.corked;
        let mut one = |key: usize, conn: &mut Conn| {
            let State::WsReady { catchup, .. } = conn.state else {
                return;
            };
            if id > 0 && !sync {
                if catchup.syncing {
                    conn.held.push((frame.clone(), id));
                    conn.pending += frame.len();
                    if conn.pending > max_pending {
                        doomed.push((key, CloseReason::SlowConsumer));
                    }
                    return;
                }
                if id <= catchup.synced {
                    return;
                }
            }
            match write_message(conn, key, frame, id, max_pending, corked) {
                Sent::Ok(n) => {
                    count += 1;
                    bytes += n;
                    if let State::WsReady {
                        ref mut catchup, ..
                    } = conn.state
                    {
                        if sync {
                            catchup.synced = catchup.synced.max(id);
                        }
                    }
                }
                Sent::Slow => doomed.push((key, CloseReason::SlowConsumer)),
                Sent::Failed => doomed.push((key, CloseReason::Client)),
            }
        };
        match to {
            Targets::All => {
                for (key, conn) in self.conns.iter_mut() {
                    one(key, conn);
                }
            }
            Targets::Conns(list) => {
                for (token, generation) in list {
                    let key = token as usize;
                    if let Some(conn) = self.conns.get_mut(key) {
                        if conn.generation == generation {
                            one(key, conn);
                        }
                    }
                }
            }
        }
        let stats = self.stats();
        stats.frames_out.fetch_add(count as u64, Relaxed);
        stats.bytes_out.fetch_add(bytes as u64, Relaxed);
        for (key, reason) in doomed.drain(..) {
            self.drop_conn(key, Some(reason));
        }
        self.doomed = doomed;
        count
    }

    /// Catches every signed-in connection up again: from its stored cursor
    /// (not moved while cursors were held), or, for one already catching
    /// up, once more after its current pass.
    fn resync_all(&mut self) {
        self.advances.clear();
        let mut rescan = std::mem::take(&mut self.rescan);
        rescan.retain(|c| self.live(*c).is_some());
        let mut now = Vec::new();
        for (key, conn) in self.conns.iter() {
            if let State::WsReady { catchup, .. } = conn.state {
                if catchup.syncing {
                    rescan.insert(conn.conn_ref(self.id, key));
                } else {
                    now.push(key);
                }
            }
        }
        self.rescan = rescan;
        for key in now {
            self.restart_catch_up(key);
        }
        self.shared.delivery.resynced();
    }

    /// Starts catching a signed-in connection up from its stored cursor.
    fn restart_catch_up(&mut self, key: usize) {
        let id = self.id;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let State::WsReady { uid, mut catchup } = conn.state {
            catchup.syncing = true;
            conn.state = State::WsReady { uid, catchup };
            let me = conn.conn_ref(id, key);
            self.catch_up(me, uid, None);
        }
    }

    /// Stops accepting and closes WebSockets with 1001.
    fn drain(&mut self) {
        self.draining = true;
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        let keys: Vec<(usize, State)> = self.conns.iter().map(|(k, c)| (k, c.state)).collect();
        for (key, state) in keys {
            match state {
                State::WsPending | State::WsReady { .. } => {
                    self.close_ws(key, close::GOING_AWAY, CloseReason::Drain)
                }
                State::Http { inflight: false } => {
                    self.stats().closed(CloseReason::Drain);
                    self.enter_closing(key);
                }
                State::Http { inflight: true } | State::Closing => {}
            }
        }
    }

    /// Closes what is past its deadline, writes delivery cursors and retries
    /// catching up that could not be queued.
    fn sweep(&mut self) {
        if self.shared.delivery.cursors_held() {
            // Deliveries from other nodes may be missing: a cursor moved now
            // could pass them (see `resync_all`).
            self.advances.clear();
        }
        if !self.advances.is_empty() {
            let updates: Vec<(u64, u64)> = self.advances.drain().collect();
            let me = ConnRef {
                reactor: self.id,
                token: u32::MAX,
                generation: 0,
            };
            if let Err(Task::Delivered(updates)) = self.queue(me, Task::Delivered(updates)) {
                self.advances.extend(updates);
            }
        }
        for (conn, after) in std::mem::take(&mut self.resync) {
            if let Some(key) = self.live(conn) {
                if let State::WsReady { uid, .. } = self.conns[key].state {
                    self.catch_up(conn, uid, after);
                }
            }
        }
        let limits = &self.shared.config.limits;
        let auth_timeout = self.shared.config.auth.auth_timeout;
        let now = self.now;
        let mut doomed = std::mem::take(&mut self.doomed);
        for (key, conn) in self.conns.iter() {
            let age = now.saturating_duration_since(conn.since);
            let reason = match conn.state {
                State::Http { inflight: false } if age > limits.http_timeout => {
                    CloseReason::HttpTimeout
                }
                State::WsPending if age > auth_timeout => CloseReason::AuthTimeout,
                State::WsReady { .. } if age > limits.idle_timeout => CloseReason::Idle,
                State::Closing if age > LINGER => CloseReason::Client,
                _ => continue,
            };
            doomed.push((key, reason));
        }
        for (key, reason) in doomed.drain(..) {
            match reason {
                CloseReason::AuthTimeout => self.close_ws(key, close::POLICY, reason),
                CloseReason::Idle => self.close_ws(key, close::NORMAL, reason),
                CloseReason::HttpTimeout => {
                    self.stats().closed(reason);
                    self.enter_closing(key);
                }
                _ => self.drop_conn(key, None),
            }
        }
        self.doomed = doomed;
    }
}
