//! A reactor: one thread, one `mio::Poll`, its own SO_REUSEPORT listener and
//! a `slab` of connections. It reads and parses HTTP requests and WebSocket
//! frames in the loop, hands REST requests and store reads to the workers,
//! and writes replies and pushes that arrive in its inbox (woken by a
//! `mio::Waker`).
//!
//! # A connection's life (see [`conn::State`])
//! ```text
//! accept ─▶ Http::Idle ──head──▶ Http::Receiving ──body──▶ Http::Working (a worker) ──reply──▶ Http::Idle
//!            │        └─ refused from its head ─▶ Closing                 └─ large answer ─▶ Http::Streaming ─▶ Http::Idle
//!            ├─ GET /ws + Upgrade ─▶ WsPending ──Cmd 3 + valid token──▶ WsChecking ──user ok──▶ WsReady(Session)
//!            │                        ▲                                   │ (a worker)
//!            │                        └──────── user refused ─────────────┘
//!            └─ GET <ws.echo_path> + Upgrade ─▶ WsEcho (test aid: echoes)
//!
//!   any state ── error / close frame / deadline / drain ──▶ Closing ──▶ dropped
//! ```
//! Where things are:
//! - this file: the loop, the inbox and the sweep (deadlines, keepalive
//!   pings, confirmations, retries);
//! - [`accept`]: accepting, the caps on new connections, running out of
//!   descriptors;
//! - [`conn`]: a connection and its states;
//! - [`limit`]: rate limits (holding a connection back);
//! - [`input`]: reading bytes into requests and frames;
//! - [`output`]: the output queue (shared frames, corking, positions in the
//!   stream for TCP acknowledgements);
//! - [`request`]: HTTP requests, replies and streamed bodies;
//! - [`session`]: WebSocket frames and commands, sign-in, sends;
//! - [`catchup`]: pushing stored messages, catching up and confirmations
//!   (the rules are in [`crate::delivery`]).
//!
//! Invariants: nothing here blocks, and nothing here panics on network
//! input. `since` is a connection's one deadline anchor (the last answer
//! of an HTTP connection, the last bytes of a request body received, the
//! last progress of a streamed answer, the upgrade, the last frame
//! received, or the start of closing). A request body is also held to
//! `limits.min_body_rate` from its head, after a grace of
//! `limits.http_timeout`: its deadline is its progress, not its length. An HTTP or
//! closing connection whose peer is still acknowledging bytes of what was
//! written to it is making progress: it is not past its deadline.

mod accept;
mod catchup;
mod conn;
mod input;
mod limit;
mod output;
mod request;
mod session;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering::AcqRel, Ordering::Relaxed, Ordering::Release};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::auth::Identity;
use crate::delivery::pending::{Checked, Confirmed};
use crate::delivery::{Batch, More};
use crate::http::{BodyStream, Response};
use crate::metrics::{CloseReason, ReactorStats, Rejection};
use crate::node::Shared;
use crate::worker::{Job, Task};
use crate::ws::{close, SharedFrame};

use conn::{Conn, HttpPhase, Session, State};
use limit::Episode;

pub use accept::PerAddress;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
const SCRATCH: usize = 64 * 1024;
const SWEEP: Duration = Duration::from_millis(250);
/// Confirmations are checked against the store this often.
const CONFIRM_EVERY: Duration = Duration::from_secs(1);
const LINGER: Duration = Duration::from_secs(2);
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
pub enum Inbox {
    /// A worker's answer to an HTTP request.
    Reply {
        /// The requesting connection.
        conn: ConnRef,
        /// The encoded response (head and what it holds of the body).
        bytes: Vec<u8>,
        /// The rest of the body, read in pieces as the connection drains.
        stream: Option<BodyStream>,
        /// Whether the connection stays open afterwards.
        keep_alive: bool,
    },
    /// The next piece of a streamed body.
    Body {
        /// The connection.
        conn: ConnRef,
        /// The bytes read.
        bytes: Vec<u8>,
        /// The rest; `None` when the body is complete (or failed).
        stream: Option<BodyStream>,
        /// Reading failed: the body cannot be completed.
        failed: bool,
    },
    /// A frame for signed-in connections; `ack` receives how many it was written to.
    Push {
        /// The shared encoded frame.
        frame: SharedFrame,
        /// Recipients.
        to: Targets,
        /// Where to report the count, if anyone waits.
        ack: Option<Sender<usize>>,
        /// The stored message id in the frame; 0 for notices.
        id: u64,
    },
    /// A batch of pending messages read for a connection catching up.
    CatchUp {
        /// The connection.
        conn: ConnRef,
        /// The messages, if any.
        batch: Option<Batch>,
        /// The newest id read (or where the reading started).
        upto: u64,
        /// Whether more may follow.
        more: More,
    },
    /// A connection's confirmations were checked against the store.
    Checked {
        /// The connection.
        conn: ConnRef,
        /// The outcome.
        checked: Checked,
    },
    /// A worker checked the user of a connection's Cmd 3 token.
    UserChecked {
        /// The connection.
        conn: ConnRef,
        /// The token's user and session.
        who: Identity,
        /// Whether the client acknowledges with Cmd 22.
        acks: bool,
        /// The Cmd 2 text when the sign-in is refused.
        refused: Option<&'static str>,
    },
    /// Close one WebSocket with this code (a user over `conns_per_user`,
    /// a session ended by logout, [`crate::delivery::Delivery::kick`]).
    Close {
        /// The connection.
        conn: ConnRef,
        /// WebSocket close code.
        code: u16,
    },
    /// Catch every signed-in connection up again from its stored cursor
    /// (cluster mode, after deliveries from other nodes may have been
    /// missed).
    Resync,
    /// Stop accepting and close WebSockets with 1001.
    Drain,
    /// Leave the loop.
    Stop,
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

    /// Messages waiting in the inbox.
    pub fn depth(&self) -> usize {
        self.tx.len()
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

fn reason_for(code: u16) -> CloseReason {
    match code {
        close::TOO_BIG => CloseReason::TooBig,
        close::INVALID_DATA => CloseReason::InvalidData,
        _ => CloseReason::Protocol,
    }
}

/// The reason counted when the server closes a WebSocket with `code` on
/// request (`Inbox::Close`).
fn kicked_for(code: u16) -> CloseReason {
    match code {
        close::REPLACED => CloseReason::Replaced,
        close::LOGGED_OUT => CloseReason::LoggedOut,
        _ => CloseReason::Kicked,
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
    /// Confirmations of connections that went away, checked at the next
    /// confirmation round.
    orphans: Vec<Confirmed>,
    /// Catching up to queue again at the next sweep (the job queue was full
    /// or the store failed).
    retry: Vec<ConnRef>,
    /// Connections to catch up once more, from their stored cursor, when
    /// their current catching up ends (see `resync_all`).
    rescan: HashSet<ConnRef>,
    /// Connections not read while their Cmd 20 waits for room in the queue.
    paused: Vec<ConnRef>,
    /// Connections with frames queued by this inbox batch (see `uncork`).
    corked: Vec<usize>,
    /// When confirmations were last checked.
    last_confirm: Instant,
    /// The longest time one turn of the loop took since the last sweep.
    lag: Duration,
    /// Start of the millisecond clock of the connections' rate buckets.
    epoch: Instant,
    /// Connections held back by a rate limit: (release time, slab key,
    /// generation), earliest first.
    held: BinaryHeap<Reverse<(Instant, usize, u32)>>,
    /// Connections over their rate limits now or within the last second.
    episodes: HashMap<ConnRef, Episode>,
    /// Spare descriptor, closed to accept-and-close when the process has
    /// no other (see `accept`).
    reserve: Option<File>,
    /// The listener rests until then after running out of descriptors.
    accept_resume: Option<Instant>,
    /// The last `accept` failed for want of descriptors (logged once).
    accept_failing: bool,
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
        let now = Instant::now();
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
            now,
            draining: false,
            doomed: Vec::new(),
            orphans: Vec::new(),
            retry: Vec::new(),
            rescan: HashSet::new(),
            paused: Vec::new(),
            corked: Vec::new(),
            last_confirm: now,
            lag: Duration::ZERO,
            epoch: now,
            held: BinaryHeap::new(),
            episodes: HashMap::new(),
            reserve: accept::reserve(),
            accept_resume: None,
            accept_failing: false,
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
            let wake = [self.next_release(), self.accept_resume]
                .into_iter()
                .flatten()
                .fold(next_sweep, Instant::min);
            let timeout = wake.saturating_duration_since(Instant::now());
            let timeout = if self.paused.is_empty() {
                timeout
            } else {
                timeout.min(PAUSED_RETRY)
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
            self.release_due();
            if self.accept_resume.is_some_and(|at| at <= self.now) {
                self.accept_resume = None;
                self.accept();
            }
            if self.now >= next_sweep {
                self.sweep();
                next_sweep = self.now + SWEEP;
            }
            self.lag = self.lag.max(self.now.elapsed());
        }
    }

    /// Hands a task to the workers; on a full queue (counted) the task comes
    /// back by value.
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

    /// The slab key of a reference that is still current.
    fn live(&self, conn: ConnRef) -> Option<usize> {
        let key = conn.token as usize;
        self.conns
            .get(key)
            .filter(|c| c.generation == conn.generation)
            .map(|_| key)
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

    /// Handles one inbox message; `false` when the reactor must stop.
    fn on_inbox(&mut self, msg: Inbox) -> bool {
        match msg {
            Inbox::Reply {
                conn,
                bytes,
                stream,
                keep_alive,
            } => {
                if let Some(key) = self.live(conn) {
                    self.on_reply(key, bytes, stream, keep_alive);
                }
            }
            Inbox::Body {
                conn,
                bytes,
                stream,
                failed,
            } => {
                if let Some(key) = self.live(conn) {
                    self.on_body(key, bytes, stream, failed);
                }
            }
            Inbox::Push { frame, to, ack, id } => {
                let n = self.push(&frame, to, id);
                if let Some(ack) = ack {
                    let _ = ack.send(n);
                }
            }
            Inbox::CatchUp {
                conn,
                batch,
                upto,
                more,
            } => self.on_catch_up(conn, batch, upto, more),
            Inbox::Checked { conn, checked } => self.on_checked(conn, checked),
            Inbox::UserChecked {
                conn,
                who,
                acks,
                refused,
            } => {
                if let Some(key) = self.live(conn) {
                    self.user_checked(key, who, acks, refused);
                }
            }
            Inbox::Close { conn, code } => {
                if let Some(key) = self.live(conn) {
                    if !matches!(self.conns[key].state, State::Closing) {
                        self.close_ws(key, code, kicked_for(code));
                    }
                }
            }
            Inbox::Resync => self.resync_all(),
            Inbox::Drain => self.drain(),
            Inbox::Stop => {
                for (_, conn) in self.conns.iter_mut() {
                    let _ = conn.out.flush(&mut conn.stream);
                }
                return false;
            }
        }
        true
    }

    /// Stops accepting and closes WebSockets with 1001.
    fn drain(&mut self) {
        self.draining = true;
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            match self.conns[key].state {
                State::WsPending | State::WsChecking | State::WsReady(_) | State::WsEcho { .. } => {
                    self.close_ws(key, close::GOING_AWAY, CloseReason::Drain)
                }
                State::Http(HttpPhase::Idle) => {
                    self.stats().closed(CloseReason::Drain);
                    self.enter_closing(key);
                }
                State::Http(_) | State::Closing => {}
            }
        }
    }

    /// Closes what is past its deadline (a signed-in connection also past
    /// its session's end), pings silent connections, checks
    /// confirmations, and retries catching up that could not be queued.
    fn sweep(&mut self) {
        let stats = self.stats();
        stats.inbox_depth.store(self.inbox.len() as i64, Relaxed);
        stats
            .loop_lag_us
            .store(self.lag.as_micros() as u64, Relaxed);
        self.lag = Duration::ZERO;
        self.confirm_tcp();
        if self.now.saturating_duration_since(self.last_confirm) >= CONFIRM_EVERY {
            self.last_confirm = self.now;
            self.check_confirmed();
        }
        for conn in std::mem::take(&mut self.retry) {
            if let Some(key) = self.live(conn) {
                self.continue_catch_up(key);
            }
        }
        let limits = &self.shared.config.limits;
        let auth_timeout = self.shared.config.auth.auth_timeout;
        let ping_interval = limits.ping_interval;
        let now = self.now;
        let unix = crate::auth::now_secs();
        let mut doomed = std::mem::take(&mut self.doomed);
        let mut ping = Vec::new();
        let mut too_slow = Vec::new();
        for (key, conn) in self.conns.iter_mut() {
            let age = now.saturating_duration_since(conn.since);
            let reason = match &conn.state {
                State::Http(HttpPhase::Idle) | State::Http(HttpPhase::Streaming { .. })
                    if age > limits.http_timeout =>
                {
                    // A peer still receiving its answer, however slowly,
                    // is making progress: its deadline starts again.
                    if conn.out.receiving(&conn.stream) {
                        conn.since = now;
                        continue;
                    }
                    CloseReason::HttpTimeout
                }
                State::Http(HttpPhase::Receiving(r)) => {
                    if request::body_too_slow(r, age, now, limits) {
                        too_slow.push(key);
                    }
                    continue;
                }
                State::WsPending | State::WsChecking if age > auth_timeout => {
                    CloseReason::AuthTimeout
                }
                State::WsReady(Session { ends, .. }) if i64::from(*ends) <= unix => {
                    doomed.push((key, CloseReason::SessionEnded));
                    continue;
                }
                State::WsReady(Session { pinged, .. }) | State::WsEcho { pinged } => {
                    if ping_interval.is_zero() {
                        if age > limits.idle_timeout {
                            doomed.push((key, CloseReason::Idle));
                        }
                    } else if age > ping_interval + limits.idle_timeout {
                        doomed.push((key, CloseReason::Idle));
                    } else if age > ping_interval && !pinged {
                        ping.push(key);
                    }
                    continue;
                }
                State::Closing if age > LINGER => {
                    if conn.out.receiving(&conn.stream) {
                        conn.since = now;
                        continue;
                    }
                    CloseReason::Client
                }
                _ => continue,
            };
            doomed.push((key, reason));
        }
        for key in ping {
            self.ping(key);
        }
        for key in too_slow {
            self.stats().rejected(Rejection::TooSlow);
            self.refuse(key, Response::error(408), CloseReason::HttpTimeout);
        }
        self.end_episodes();
        for (key, reason) in doomed.drain(..) {
            match reason {
                CloseReason::AuthTimeout => self.close_ws(key, close::POLICY, reason),
                CloseReason::Idle => self.close_ws(key, close::NORMAL, reason),
                CloseReason::SessionEnded => self.close_ws(key, close::LOGGED_OUT, reason),
                CloseReason::HttpTimeout => {
                    self.stats().closed(reason);
                    self.enter_closing(key);
                }
                _ => self.drop_conn(key, None),
            }
        }
        self.doomed = doomed;
    }

    /// Removes a connection now; `reason` is counted unless it was counted
    /// when closing began. What its client confirmed is still checked;
    /// what it did not confirm stays pending.
    fn drop_conn(&mut self, key: usize, reason: Option<CloseReason>) {
        if !self.conns.contains(key) {
            return;
        }
        let me = self.conns[key].conn_ref(self.id, key);
        let was_closing = matches!(self.conns[key].state, State::Closing);
        self.leave_session(key);
        let mut conn = self.conns.remove(key);
        let stats = self.stats();
        if let Some(reason) = reason.filter(|_| !was_closing) {
            stats.closed(reason);
        }
        stats.open.fetch_sub(1, Relaxed);
        self.shared.per_ip.remove(conn.peer);
        let _ = self.poll.registry().deregister(&mut conn.stream);
        self.paused.retain(|c| *c != me);
        self.episodes.remove(&me);
    }
}
