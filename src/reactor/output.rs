//! Writing: a connection's output queue and the reactor's ways of filling
//! it. Bytes are written at once where the socket takes them; only what it
//! refuses is queued, as a reference to the shared frame plus an offset.
//! Frames pushed while the reactor works through a batch of inbox messages
//! are corked: each connection gets one `writev` per batch.
//!
//! Queued bytes are of two kinds. *Live* bytes (pushes, answers to the
//! client's commands) are bounded by `limits.max_pending_bytes`: a client
//! that does not read them is dropped as a slow consumer. Bytes the node
//! produces itself under flow control (catch-up batches, HTTP replies and
//! streamed bodies) never count against that bound: the next piece is
//! produced only once the queue is below [`LOW_WATER`].
//!
//! Every byte has a position in the connection's stream, so the bytes the
//! peer's TCP stack acknowledged (`SIOCOUTQ`) tell which messages reached a
//! client that does not acknowledge by itself.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::Relaxed;

use mio::net::TcpStream;

use super::conn::{Conn, HttpPhase, State};
use super::Reactor;
use crate::message::Push;
use crate::metrics::CloseReason;
use crate::ws::{self, SharedFrame};

/// Output below this much queued lets the next produced piece (a catch-up
/// batch, a body chunk, the next pipelined request) go ahead.
pub(super) const LOW_WATER: usize = 64 * 1024;
/// Bytes a connection may have corked before it is written at once.
const CORK_BYTES: usize = 64 * 1024;
const MAX_IOVECS: usize = 64;

/// Bytes waiting to be written.
pub(super) enum Chunk {
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

struct Queued {
    chunk: Chunk,
    off: usize,
    live: bool,
}

/// A connection's output queue.
#[derive(Default)]
pub(super) struct Output {
    queue: VecDeque<Queued>,
    /// Bytes queued, not yet written (32 bits keep a connection small: a
    /// connection never has 4 GiB queued, its live bytes being bounded by
    /// `limits.max_pending_bytes` and produced ones by [`LOW_WATER`] and
    /// a piece's size).
    pending: u32,
    /// Of which live bytes.
    live: u32,
    /// Stream position after the last byte queued or written.
    pos: u64,
    /// Stream position the peer had acknowledged at the last
    /// [`Output::receiving`].
    seen_acked: u64,
}

/// How a write went.
pub(super) enum Sent {
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

/// Bytes written to the socket that the peer has not acknowledged yet
/// (`SIOCOUTQ`), or `None` when the kernel will not say.
fn unacknowledged(stream: &TcpStream) -> Option<u64> {
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int through the pointer,
    // which points at a live c_int; the descriptor belongs to `stream`.
    let rc = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    (rc == 0 && n >= 0).then_some(n as u64)
}

impl Output {
    /// Nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Bytes queued.
    pub fn pending(&self) -> usize {
        self.pending as usize
    }

    /// Live bytes queued.
    pub fn live(&self) -> usize {
        self.live as usize
    }

    /// Stream position the peer's TCP stack has acknowledged up to.
    pub fn acknowledged(&self, stream: &TcpStream) -> Option<u64> {
        let written = self.pos - self.pending as u64;
        unacknowledged(stream).map(|q| written.saturating_sub(q))
    }

    /// Whether the peer is still receiving: bytes written to it wait (queued
    /// here or unacknowledged in the kernel) and its TCP stack has
    /// acknowledged more of the stream since the last call. A reader on a
    /// slow link may take longer than a deadline to drain one piece of a
    /// body (or the kernel's send buffer): this tells it from one that
    /// stopped reading.
    pub fn receiving(&mut self, stream: &TcpStream) -> bool {
        let Some(unacked) = unacknowledged(stream) else {
            return false;
        };
        if self.pending == 0 && unacked == 0 {
            return false;
        }
        let acked = (self.pos - self.pending as u64).saturating_sub(unacked);
        let more = acked > self.seen_acked;
        self.seen_acked = acked;
        more
    }

    /// Queues a chunk without writing; returns the stream position after it.
    pub fn push(&mut self, chunk: Chunk, live: bool) -> u64 {
        let len = chunk.bytes().len();
        self.pending = self.pending.saturating_add(len as u32);
        if live {
            self.live = self.live.saturating_add(len as u32);
        }
        self.pos += len as u64;
        self.queue.push_back(Queued {
            chunk,
            off: 0,
            live,
        });
        self.pos
    }

    /// Writes a chunk now if nothing is queued before it, queueing the rest;
    /// returns the bytes written.
    pub fn send(&mut self, stream: &mut TcpStream, chunk: Chunk, live: bool) -> io::Result<usize> {
        if !self.queue.is_empty() {
            self.push(chunk, live);
            return Ok(0);
        }
        let len = chunk.bytes().len();
        let n = write_now(stream, chunk.bytes())?;
        self.pos += len as u64;
        if n < len {
            let rest = (len - n) as u32;
            self.pending = self.pending.saturating_add(rest);
            if live {
                self.live = self.live.saturating_add(rest);
            }
            self.queue.push_back(Queued {
                chunk,
                off: n,
                live,
            });
        }
        Ok(n)
    }

    /// Marks `n` queued bytes written.
    fn consume(&mut self, mut n: usize) {
        self.pending = self.pending.saturating_sub(n as u32);
        while n > 0 {
            let Some(q) = self.queue.front_mut() else {
                break;
            };
            let rest = q.chunk.bytes().len() - q.off;
            let used = rest.min(n);
            if q.live {
                self.live = self.live.saturating_sub(used as u32);
            }
            n -= used;
            if used == rest {
                self.queue.pop_front();
            } else {
                q.off += used;
            }
        }
    }

    /// Writes queued chunks, several per system call (one chunk: a plain
    /// `send`, which the kernel handles faster than a one-slice `writev`).
    pub fn flush(&mut self, stream: &mut TcpStream) -> io::Result<usize> {
        let mut total = 0;
        while !self.queue.is_empty() {
            let written = if self.queue.len() == 1 {
                let q = &self.queue[0];
                stream.write(&q.chunk.bytes()[q.off..])
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let mut n = 0;
                for (q, slice) in self.queue.iter().zip(slices.iter_mut()) {
                    *slice = IoSlice::new(&q.chunk.bytes()[q.off..]);
                    n += 1;
                }
                stream.write_vectored(&slices[..n])
            };
            let n = match written {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            total += n;
            self.consume(n);
        }
        if self.queue.is_empty() {
            self.queue = VecDeque::new();
        }
        Ok(total)
    }
}

/// Queues a frame for a signed-in connection (corked: written with the
/// rest of its frames when the inbox batch ends, see [`Reactor::uncork`])
/// and records the stored message id it carries in the connection's
/// ledger. Only a connection with more than [`CORK_BYTES`] queued is
/// written at once; `Slow` when more than `max_live` live bytes still wait.
pub(super) fn write_message(
    conn: &mut Conn,
    key: usize,
    chunk: Chunk,
    ids: &[(u64, usize)],
    live: bool,
    max_live: usize,
    corked: &mut Vec<usize>,
) -> Sent {
    let State::WsReady(session) = &mut conn.state else {
        return Sent::Ok(0);
    };
    let len = chunk.bytes().len() as u64;
    let start = conn.out.push(chunk, live) - len;
    for &(id, end) in ids {
        session.ledger.written(id, start + end as u64);
    }
    if !conn.corked {
        conn.corked = true;
        corked.push(key);
    }
    if conn.out.pending() <= CORK_BYTES {
        return Sent::Ok(0);
    }
    match conn.out.flush(&mut conn.stream) {
        Ok(_) if conn.out.live() > max_live => Sent::Slow,
        Ok(n) => Sent::Ok(n),
        Err(_) => Sent::Failed,
    }
}

impl Reactor {
    /// Sends one message to one connection (live: an answer to its own
    /// command).
    pub(super) fn reply(&mut self, key: usize, push: &Push) {
        self.stats().frames_out.fetch_add(1, Relaxed);
        self.send(key, Chunk::Owned(ws::text_frame(&push.to_json())), true);
    }

    /// Sends a keepalive ping to a silent signed-in (or echoing) connection.
    pub(super) fn ping(&mut self, key: usize) {
        if let Some(pinged) = self.conns.get_mut(key).and_then(|c| c.pinged()) {
            *pinged = true;
        }
        self.stats().pings.fetch_add(1, Relaxed);
        self.send(key, Chunk::Owned(ws::ping_frame()), true);
    }

    /// Writes or queues bytes for one connection, dropping it when it is
    /// broken, or too slow for `live` bytes.
    pub(super) fn send(&mut self, key: usize, chunk: Chunk, live: bool) {
        let max_live = self.shared.config.limits.max_pending_bytes;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let sent = match conn.out.send(&mut conn.stream, chunk, live) {
            Ok(_) if conn.out.live() > max_live => Sent::Slow,
            Ok(n) => Sent::Ok(n),
            Err(_) => Sent::Failed,
        };
        self.after_send(key, sent);
    }

    pub(super) fn after_send(&mut self, key: usize, sent: Sent) {
        match sent {
            Sent::Ok(n) => {
                self.stats().bytes_out.fetch_add(n as u64, Relaxed);
                if let Some(conn) = self.conns.get_mut(key) {
                    if matches!(conn.state, State::Closing) && conn.out.is_empty() {
                        let _ = conn.stream.shutdown(Shutdown::Write);
                    }
                }
            }
            Sent::Slow => self.drop_conn(key, Some(CloseReason::SlowConsumer)),
            Sent::Failed => self.drop_conn(key, Some(CloseReason::Client)),
        }
    }

    pub(super) fn write_ready(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.out.is_empty() {
            return;
        }
        match conn.out.flush(&mut conn.stream) {
            Ok(n) => self.flushed(key, n),
            Err(_) => self.drop_conn(key, Some(CloseReason::Client)),
        }
    }

    /// Writes every corked connection's queued frames.
    pub(super) fn uncork(&mut self) {
        let max_live = self.shared.config.limits.max_pending_bytes;
        for key in std::mem::take(&mut self.corked) {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            conn.corked = false;
            match conn.out.flush(&mut conn.stream) {
                Ok(_) if conn.out.live() > max_live => {
                    self.drop_conn(key, Some(CloseReason::SlowConsumer))
                }
                Ok(n) => self.flushed(key, n),
                Err(_) => self.drop_conn(key, Some(CloseReason::Client)),
            }
        }
    }

    /// `n` queued bytes went out: a closing connection with nothing left
    /// shuts its write side; below the low-water mark, what waits for room
    /// goes on.
    pub(super) fn flushed(&mut self, key: usize, n: usize) {
        self.after_send(key, Sent::Ok(n));
        self.drained(key);
    }

    /// Lets the next produced piece go ahead once the connection's output
    /// is below [`LOW_WATER`]: the next catch-up batch, the next piece of a
    /// streamed body, the next pipelined request, or the next message to
    /// echo.
    pub(super) fn drained(&mut self, key: usize) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        if conn.out.pending() >= LOW_WATER {
            return;
        }
        match &conn.state {
            State::WsReady(_) => self.continue_catch_up(key),
            State::Http(HttpPhase::Streaming {
                stream: Some(_), ..
            }) => self.read_body(key),
            State::Http(HttpPhase::Idle) if conn.out.is_empty() => self.resume_input(key),
            State::WsEcho { .. } => self.resume_input(key),
            _ => {}
        }
    }

    /// Writes a shared frame to signed-in connections; returns how many.
    /// `id` is the stored message in the frame (0 for notices): a
    /// connection catching up holds live messages back (or lets them go to
    /// its catching up), and skips what its catching up already wrote.
    pub(super) fn push(&mut self, frame: &SharedFrame, to: super::Targets, id: u64) -> usize {
        let max_live = self.shared.config.limits.max_pending_bytes;
        let mut count = 0;
        let mut bytes = 0;
        let mut doomed = std::mem::take(&mut self.doomed);
        let corked = &mut self.corked;
        let ids = [(id, frame.len())];
        let ids: &[(u64, usize)] = if id > 0 { &ids } else { &[] };
        let mut one = |key: usize, conn: &mut Conn| {
            let State::WsReady(session) = &mut conn.state else {
                return;
            };
            if id > 0 {
                if session.ledger.catching_up() {
                    session.ledger.hold(frame, id, max_live);
                    return;
                }
                if id <= session.ledger.synced {
                    return;
                }
            }
            let chunk = Chunk::Shared(frame.clone());
            match write_message(conn, key, chunk, ids, true, max_live, corked) {
                Sent::Ok(n) => {
                    count += 1;
                    bytes += n;
                }
                Sent::Slow => doomed.push((key, CloseReason::SlowConsumer)),
                Sent::Failed => doomed.push((key, CloseReason::Client)),
            }
        };
        match to {
            super::Targets::All => {
                for (key, conn) in self.conns.iter_mut() {
                    one(key, conn);
                }
            }
            super::Targets::Conns(list) => {
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
}
