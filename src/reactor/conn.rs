//! A connection and its states. What only one state needs lives in that
//! state: a signed-in connection's user, delivery ledger and deferred send
//! are in [`Session`], a streamed HTTP body in [`HttpPhase::Streaming`].

use std::net::IpAddr;
use std::time::Instant;

use mio::net::TcpStream;

use super::output::Output;
use super::ConnRef;
use crate::commit::Submission;
use crate::delivery::ledger::Ledger;
use crate::http::BodyStream;
use crate::ws::Opcode;

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
    /// Flushing, then waiting for the peer's EOF (input discarded).
    Closing,
}

/// An HTTP connection's phase. Input is read only while `Idle`: pipelined
/// requests wait in the connection's buffer.
pub(super) enum HttpPhase {
    /// Waiting for (the rest of) a request.
    Idle,
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
    /// A Cmd 20 waiting for room in the committer queue; the connection is
    /// not read meanwhile.
    pub deferred: Option<Box<Submission>>,
    /// A keepalive ping was sent since the last frame from the peer.
    pub pinged: bool,
}

/// A fragmented message being reassembled.
pub(super) struct Fragment {
    pub opcode: Opcode,
    pub data: Vec<u8>,
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
    /// A fragmented WebSocket message being reassembled.
    pub frag: Option<Box<Fragment>>,
    /// Listed in the reactor's `corked`: frames queued in `out` during this
    /// inbox batch are written when it ends.
    pub corked: bool,
}

impl Conn {
    pub fn new(stream: TcpStream, peer: IpAddr, generation: u32, now: Instant) -> Conn {
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

    /// Whether input must wait (a worker or the committer queue is busy
    /// with this connection, or a body is being streamed to it).
    pub fn input_paused(&self) -> bool {
        match &self.state {
            // While an answer is still queued, the next pipelined request waits.
            State::Http(HttpPhase::Idle) => !self.out.is_empty(),
            State::Http(_) | State::WsChecking => true,
            State::WsReady(s) => s.deferred.is_some(),
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
