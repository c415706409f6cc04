//! A connection and its states. What only one state needs lives in that
//! state: a signed-in connection's user, delivery ledger and deferred send
//! are in [`Session`], a request body being received in
//! [`HttpPhase::Receiving`], a streamed HTTP answer in
//! [`HttpPhase::Streaming`].

use std::net::IpAddr;
use std::time::Instant;

use mio::net::TcpStream;

use super::output::{Output, LOW_WATER};
use super::ConnRef;
use crate::budget::Reservation;
use crate::commit::Submission;
use crate::delivery::ledger::Ledger;
use crate::http::{BodyStream, Request};
use crate::rate::Bucket;
use crate::ws::{Opcode, Utf8};

/// Where a connection is in its life.
pub(super) enum State {
    /// Speaking HTTP/1.1.
    Http(HttpPhase),
    /// Upgraded, waiting for Cmd 3.
    WsPending,
    /// A valid token was given: a worker checks its user; input waits.
    WsChecking,
    /// Signed in.
    WsReady(Session),
    /// On `ws.echo_path`: messages are echoed, not read as commands.
    WsEcho {
        /// A keepalive ping was sent since the last frame from the peer.
        pinged: bool,
    },
    /// Flushing, then waiting for the peer's EOF (input discarded).
    Closing,
}

/// An HTTP connection's phase. Input is read only while `Idle` or
/// `Receiving`: pipelined requests wait in the connection's buffer.
pub(super) enum HttpPhase {
    /// Waiting for (the rest of) a request head.
    Idle,
    /// A request's body is arriving.
    Receiving(Box<Receiving>),
    /// A worker handles a request.
    Working,
    /// A reply's body is being written piece by piece; `stream` is `None`
    /// while a worker reads the next piece.
    Streaming {
        /// The rest of the body.
        stream: Option<BodyStream>,
        /// Whether the connection stays open once the body is out.
        keep_alive: bool,
    },
}

/// A request whose head was accepted, while its body arrives.
pub(super) struct Receiving {
    /// The request; its body's buffer has the declared length.
    pub req: Request,
    /// The body's share of `limits.max_inflight_body`.
    pub budget: Reservation,
    /// When the head was accepted (the body's rate is measured from it).
    pub started: Instant,
}

/// A signed-in WebSocket connection.
pub(super) struct Session {
    /// Its user.
    pub uid: u64,
    /// The absolute end of the session it signed in with, unix seconds
    /// (32 bits keep `Conn` small; they last until 2106): the connection
    /// is closed (4001) once it has passed.
    pub ends: u32,
    /// What was written to it, confirmed by it, and its catching up.
    pub ledger: Ledger,
    /// A Cmd 20 waiting for room in the committer queue, or (while the
    /// connection is held) for its user's send limit; the connection is
    /// not read meanwhile.
    pub deferred: Option<Box<Submission>>,
    /// A keepalive ping was sent since the last frame from the peer.
    pub pinged: bool,
}

/// A data message being received: made by its first frame that is whole
/// but not final, or earlier, by the first bytes of a text frame, so that
/// its UTF-8 is checked as the bytes arrive.
pub(super) struct Fragment {
    /// Text or binary.
    pub opcode: Opcode,
    /// The payload of its whole frames.
    pub data: Vec<u8>,
    /// The UTF-8 check of a text message: its whole frames, and the first
    /// `ahead` bytes of the frame being received.
    pub utf8: Utf8,
    /// Payload bytes of the frame being received (not yet whole) checked
    /// already.
    pub ahead: usize,
    /// Whether one of its frames is whole: until then, a text frame is its
    /// first frame, not a new message inside it.
    pub started: bool,
}

/// One connection of a reactor's slab.
pub(super) struct Conn {
    pub stream: TcpStream,
    pub peer: IpAddr,
    pub generation: u32,
    pub state: State,
    /// The deadline anchor (see the module doc of `reactor`).
    pub since: Instant,
    /// An incomplete request or frame, kept between reads.
    pub inbuf: Vec<u8>,
    /// Bytes waiting to be written.
    pub out: Output,
    /// A WebSocket message being received over several frames or reads.
    pub frag: Option<Box<Fragment>>,
    /// Listed in the reactor's `corked`: frames queued in `out` during this
    /// inbox batch are written when it ends.
    pub corked: bool,
    /// Held back by a rate limit: not read until its release time (see
    /// `reactor::limit`).
    pub held: bool,
    /// The connection's frames against `limits.cmd_rate`.
    pub bucket: Bucket,
}

impl Conn {
    pub fn new(
        stream: TcpStream,
        peer: IpAddr,
        generation: u32,
        now: Instant,
        bucket: Bucket,
    ) -> Conn {
        Conn {
            stream,
            peer,
            generation,
            state: State::Http(HttpPhase::Idle),
            since: now,
            inbuf: Vec::new(),
            out: Output::default(),
            frag: None,
            corked: false,
            held: false,
            bucket,
        }
    }

    pub fn conn_ref(&self, reactor: u16, key: usize) -> ConnRef {
        ConnRef {
            reactor,
            token: key as u32,
            generation: self.generation,
        }
    }

    /// The signed-in session, if any.
    pub fn session(&mut self) -> Option<&mut Session> {
        match &mut self.state {
            State::WsReady(s) => Some(s),
            _ => None,
        }
    }

    /// The keepalive flag of a connection under the ping and idle rules
    /// (signed in, or echoing).
    pub fn pinged(&mut self) -> Option<&mut bool> {
        match &mut self.state {
            State::WsReady(Session { pinged, .. }) | State::WsEcho { pinged } => Some(pinged),
            _ => None,
        }
    }

    /// Whether input must wait (a worker or the committer queue is busy
    /// with this connection, a body is being streamed to it, its echoes
    /// are above the low-water mark, or a rate limit holds it back).
    pub fn input_paused(&self) -> bool {
        if self.held {
            return true;
        }
        match &self.state {
            // While an answer is still queued, the next pipelined request waits.
            State::Http(HttpPhase::Idle) => !self.out.is_empty(),
            State::Http(HttpPhase::Receiving(_)) => false,
            State::Http(_) | State::WsChecking => true,
            State::WsReady(s) => s.deferred.is_some(),
            State::WsEcho { .. } => self.out.pending() >= LOW_WATER,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connection, idle or not, costs its slab entry: keep it small.
    #[test]
    fn a_connection_stays_small() {
        assert!(
            std::mem::size_of::<Conn>() <= 288,
            "{}",
            std::mem::size_of::<Conn>()
        );
    }
}
