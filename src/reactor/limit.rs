//! Rate limits on a connection (the buckets are in [`crate::rate`]).
//!
//! A WebSocket frame needs a token of its connection's bucket
//! (`limits.cmd_rate`) before it is handled; a Cmd 20 also needs one unit
//! of its user's send limit (`limits.send_rate`). Without one the
//! connection is *held*: it is not read until the bucket has a token again
//! (a frame stays unread in the connection's buffer, a send waits as its
//! `deferred` submission), then handled as if it had just arrived. This is
//! the backpressure of a full committer queue, with a release time instead
//! of a retry every millisecond: the reactor's poll wakes for the earliest
//! release.
//!
//! A connection is *over the limit* while held. Its episode begins at a
//! hold, when the client is told once (Cmd 2 `发送过快`), and ends when a
//! whole second ([`EPISODE_GAP`]) passes from its last hold or release
//! without a new hold. A connection whose episode has lasted
//! `limits.flood_close` is closed with 1008 at its next hold: a client
//! sending flat out is held at every token, so its episode never ends.

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use super::conn::State;
use super::{ConnRef, Reactor};
use crate::commit::Submission;
use crate::message::{cmd, Push};
use crate::metrics::{CloseReason, Limited};
use crate::rate::Bucket;
use crate::ws::close;

/// A pause this long without a hold ends a connection's episode.
const EPISODE_GAP: Duration = Duration::from_secs(1);
/// What a held client is told, once per episode.
const TOO_FAST: &str = "发送过快";

/// A connection's time over its rate limits.
#[derive(Debug, Clone, Copy)]
pub(super) struct Episode {
    /// When its first hold came.
    start: Instant,
    /// Its last hold or release.
    last: Instant,
}

impl Reactor {
    /// Milliseconds of this reactor's clock, for the connections' buckets
    /// (wraps after 49 days).
    fn now_ms(&self) -> u32 {
        self.now.saturating_duration_since(self.epoch).as_millis() as u32
    }

    /// The bucket a new connection starts with.
    pub(super) fn full_bucket(&self) -> Bucket {
        Bucket::full(self.shared.config.limits.cmd_burst, self.now_ms())
    }

    /// Takes a token for one frame of connection `key`; `false` when there
    /// is none: the connection is held (or closed, when flooding) and the
    /// frame must stay unread.
    pub(super) fn take_token(&mut self, key: usize) -> bool {
        let limits = &self.shared.config.limits;
        if limits.cmd_rate == 0 {
            return true;
        }
        let (rate, burst, now_ms) = (limits.cmd_rate, limits.cmd_burst, self.now_ms());
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        match conn.bucket.take(rate, burst, now_ms) {
            Ok(()) => true,
            Err(wait) => {
                self.hold(key, wait, Limited::Command);
                false
            }
        }
    }

    /// Queues a Cmd 20 of user `uid` unless the user is over the send
    /// limit, in which case the connection is held with the submission.
    pub(super) fn send_limited(&mut self, key: usize, uid: u64, sub: Submission) {
        match self.shared.send_rate.admit(uid, self.now) {
            Ok(()) => self.submit(key, sub),
            Err(wait) => {
                if let Some(session) = self.conns.get_mut(key).and_then(|c| c.session()) {
                    session.deferred = Some(Box::new(sub));
                    self.hold(key, wait, Limited::Send);
                }
            }
        }
    }

    /// Holds connection `key` for `wait`: counted, the client told once
    /// per episode, closed with 1008 when its episode has lasted
    /// `limits.flood_close`.
    fn hold(&mut self, key: usize, wait: Duration, kind: Limited) {
        self.shared.metrics.limited(kind);
        let flood_close = self.shared.config.limits.flood_close;
        let now = self.now;
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        let me = conn.conn_ref(self.id, key);
        let ongoing = self
            .episodes
            .get(&me)
            .is_some_and(|e| now.saturating_duration_since(e.last) <= EPISODE_GAP);
        let episode = self.episodes.entry(me).or_insert(Episode {
            start: now,
            last: now,
        });
        if !ongoing {
            episode.start = now;
        }
        episode.last = now;
        if !flood_close.is_zero() && now.saturating_duration_since(episode.start) >= flood_close {
            self.episodes.remove(&me);
            self.close_ws(key, close::POLICY, CloseReason::Flood);
            return;
        }
        self.conns[key].held = true;
        self.held.push(Reverse((now + wait, key, me.generation)));
        if !ongoing {
            self.reply(key, &Push::system(cmd::FAIL, TOO_FAST));
        }
    }

    /// When the earliest held connection is due, if any is held.
    pub(super) fn next_release(&self) -> Option<Instant> {
        self.held.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Releases the held connections that are due: a deferred send tries
    /// the send limit again, then the connection's buffered input and
    /// socket are read.
    pub(super) fn release_due(&mut self) {
        while let Some(&Reverse((at, key, generation))) = self.held.peek() {
            if at > self.now {
                return;
            }
            self.held.pop();
            let me = ConnRef {
                reactor: self.id,
                token: key as u32,
                generation,
            };
            if self.live(me).is_none() {
                continue;
            }
            let now = self.now;
            let conn = &mut self.conns[key];
            if !conn.held {
                continue;
            }
            conn.held = false;
            if let Some(e) = self.episodes.get_mut(&me) {
                e.last = now;
            }
            let State::WsReady(session) = &mut conn.state else {
                self.resume_input(key);
                continue;
            };
            let uid = session.uid;
            match session.deferred.take() {
                Some(sub) => {
                    self.send_limited(key, uid, *sub);
                    self.resume_input(key);
                }
                None => self.resume_input(key),
            }
        }
    }

    /// Forgets the episodes that ended (their connection not held and
    /// quiet for [`EPISODE_GAP`]).
    pub(super) fn end_episodes(&mut self) {
        let now = self.now;
        let conns = &self.conns;
        self.episodes.retain(|me, e| {
            let held = conns
                .get(me.token as usize)
                .is_some_and(|c| c.generation == me.generation && c.held);
            held || now.saturating_duration_since(e.last) <= EPISODE_GAP
        });
    }
}
