//! WebSocket on a connection: frames (control frames, fragments, UTF-8),
//! the client's commands (or, on the echo path, the echo of each message),
//! sign-in, sends into the committer queue, and closing.

use std::sync::atomic::Ordering::Relaxed;

use super::conn::{Fragment, Session, State};
use super::output::Chunk;
use super::{reason_for, Reactor};
use crate::access::refusal_text;
use crate::auth::Identity;
use crate::chat;
use crate::commit::Submission;
use crate::delivery::ledger::Ledger;
use crate::message::{cmd, parse_client, ClientMsg, Push};
use crate::metrics::{CloseReason, Refusal};
use crate::worker::{Task, AUTH_FAILED, UNAVAILABLE};
use crate::ws::{self, close, FrameInfo, Opcode, Utf8};

impl Reactor {
    pub(super) fn on_frame(&mut self, key: usize, fin: bool, opcode: Opcode, payload: &[u8]) {
        self.stats().frames_in.fetch_add(1, Relaxed);
        let max_message = self.shared.config.limits.max_message;
        let now = self.now;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let Some(pinged) = conn.pinged() {
            *pinged = false;
            conn.since = now;
        }
        match opcode {
            Opcode::Ping => self.send(key, Chunk::Owned(ws::pong_frame(payload)), true),
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
                // A record not started yet is this frame's own, made while
                // its first bytes arrived (text checked up to `ahead`).
                let (mut utf8, ahead) = match conn.frag.as_deref() {
                    Some(frag) if frag.started => {
                        self.close_ws(key, close::PROTOCOL, CloseReason::Protocol);
                        return;
                    }
                    Some(frag) => (frag.utf8, frag.ahead),
                    None => (Utf8::default(), 0),
                };
                let fresh = payload.get(ahead..).unwrap_or_default();
                if opcode == Opcode::Text && !(utf8.feed(fresh) && (!fin || utf8.complete())) {
                    self.close_ws(key, close::INVALID_DATA, CloseReason::InvalidData);
                } else if fin {
                    conn.frag = None;
                    self.on_message(key, opcode, payload);
                } else {
                    conn.frag = Some(Box::new(Fragment {
                        opcode,
                        data: payload.to_vec(),
                        utf8,
                        ahead: 0,
                        started: true,
                    }));
                }
            }
            Opcode::Continue => {
                let Some(frag) = conn.frag.as_mut().filter(|f| f.started) else {
                    self.close_ws(key, close::PROTOCOL, CloseReason::Protocol);
                    return;
                };
                if frag.data.len() + payload.len() > max_message {
                    self.close_ws(key, close::TOO_BIG, CloseReason::TooBig);
                    return;
                }
                // Each fragment is checked as it comes (its first `ahead`
                // bytes already were): invalid text fails here, not when
                // the message is whole.
                let fresh = payload.get(frag.ahead..).unwrap_or_default();
                frag.ahead = 0;
                let text = frag.opcode == Opcode::Text;
                if text && !(frag.utf8.feed(fresh) && (!fin || frag.utf8.complete())) {
                    self.close_ws(key, close::INVALID_DATA, CloseReason::InvalidData);
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

    /// The first bytes of a frame not yet whole (still masked, from the
    /// start of its payload): those of a text message are checked as UTF-8
    /// now, so invalid text fails as soon as its bytes arrive (RFC 6455
    /// §8.1), however the peer spreads one frame over its writes.
    pub(super) fn on_partial_frame(&mut self, key: usize, info: &FrameInfo, masked: &[u8]) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if info.opcode == Opcode::Text && conn.frag.is_none() {
            conn.frag = Some(Box::new(Fragment {
                opcode: Opcode::Text,
                data: Vec::new(),
                utf8: Utf8::default(),
                ahead: 0,
                started: false,
            }));
        }
        let Some(frag) = conn.frag.as_deref_mut() else {
            return;
        };
        let text = match info.opcode {
            Opcode::Text => !frag.started,
            Opcode::Continue => frag.started && frag.opcode == Opcode::Text,
            // Binary and control frames.
            _ => false,
        };
        // A text frame inside a started message is refused once whole.
        if !text {
            return;
        }
        let Some(fresh) = masked.get(frag.ahead..).filter(|f| !f.is_empty()) else {
            return;
        };
        let valid = frag.utf8.feed_masked(fresh, info.mask, frag.ahead);
        frag.ahead = masked.len();
        if !valid {
            self.close_ws(key, close::INVALID_DATA, CloseReason::InvalidData);
        }
    }

    /// A whole message (text already checked as UTF-8): echoed on the
    /// echo path, read as a command elsewhere.
    fn on_message(&mut self, key: usize, opcode: Opcode, payload: &[u8]) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        if let State::WsEcho { .. } = conn.state {
            let frame = match opcode {
                Opcode::Text => ws::text_frame(payload),
                _ => ws::binary_frame(payload),
            };
            self.stats().frames_out.fetch_add(1, Relaxed);
            // Produced, not live: the connection is not read while its
            // echoes are above the low-water mark.
            self.send(key, Chunk::Owned(frame), false);
            return;
        }
        match parse_client(payload).filter(|_| opcode == Opcode::Text) {
            Some(msg) => self.on_command(key, msg),
            None => self.reply(key, &Push::system(cmd::FAIL, "消息格式错误")),
        }
    }

    fn on_command(&mut self, key: usize, msg: ClientMsg) {
        let id = self.id;
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        let me = conn.conn_ref(id, key);
        let uid = match &conn.state {
            State::WsPending if msg.cmd == cmd::SIGN_IN => {
                self.sign_in(key, &msg.body, msg.ack);
                return;
            }
            State::WsPending => {
                self.reply(key, &Push::system(cmd::FAIL, "你还未认证"));
                return;
            }
            State::WsReady(session) => session.uid,
            _ => return,
        };
        match msg.cmd {
            cmd::PING => self.reply(key, &Push::system(cmd::PONG, "")),
            cmd::SEND => match chat::from_socket(&self.shared, me, uid, msg) {
                Ok(sub) => self.send_limited(key, uid, sub),
                Err(refusal) => self.send(key, Chunk::Shared(refusal), true),
            },
            cmd::DELIVERED => match msg.body.trim().parse::<u64>() {
                Ok(upto) => self.acknowledged(key, upto),
                Err(_) => self.reply(key, &Push::system(cmd::FAIL, "消息格式错误")),
            },
            // As the old server: a signed-in connection ignores another
            // sign-in (whatever its token) and every command it does not
            // know, such as the heartbeats of old clients ({"Cmd":0},
            // {"Cmd":1}, {}), without an answer; the frame still counts as
            // activity.
            _ => {}
        }
    }

    /// Cmd 3: a valid token (signature, expiry, session neither revoked nor
    /// ended) is checked here; whether its user exists and is not banned
    /// comes from the node's cache, or else from a worker, whose answer
    /// ([`Reactor::user_checked`]) completes the sign-in. The connection is
    /// not read meanwhile.
    fn sign_in(&mut self, key: usize, token: &str, acks: bool) {
        let who = match self.shared.tokens.verify(token) {
            Ok(who) => who,
            Err(e) => {
                self.shared.metrics.refused(e.refusal());
                self.reply(key, &Push::system(cmd::FAIL, AUTH_FAILED));
                return;
            }
        };
        if let Some(verdict) = self.shared.access.cached(who.uid) {
            let refused = verdict.err().map(|refusal| {
                self.shared.metrics.refused(refusal);
                refusal_text(refusal, AUTH_FAILED)
            });
            self.complete_sign_in(key, who, acks, refused);
            return;
        }
        let id = self.id;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let me = conn.conn_ref(id, key);
        if self.queue(me, Task::SignIn { who, acks }).is_err() {
            self.reply(key, &Push::system(cmd::FAIL, UNAVAILABLE));
            return;
        }
        if let Some(conn) = self.conns.get_mut(key) {
            conn.state = State::WsChecking;
        }
    }

    /// A worker's answer to a sign-in: completes it, then reads on.
    pub(super) fn user_checked(
        &mut self,
        key: usize,
        who: Identity,
        acks: bool,
        refused: Option<&'static str>,
    ) {
        if !matches!(
            self.conns.get(key).map(|c| &c.state),
            Some(State::WsChecking)
        ) {
            return;
        }
        self.complete_sign_in(key, who, acks, refused);
        self.resume_input(key);
    }

    /// Refused (Cmd 2 with `refused`, the client may try again), or signed
    /// in (Cmd 4, then its pending messages) unless the session was revoked
    /// meanwhile.
    fn complete_sign_in(
        &mut self,
        key: usize,
        who: Identity,
        acks: bool,
        refused: Option<&'static str>,
    ) {
        let id = self.id;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let revoked = refused.is_none() && self.shared.tokens.is_revoked(who.sid);
        if revoked {
            self.shared.metrics.refused(Refusal::Revoked);
        }
        if let Some(text) = refused.or(revoked.then_some(AUTH_FAILED)) {
            conn.state = State::WsPending;
            self.reply(key, &Push::system(cmd::FAIL, text));
            return;
        }
        conn.state = State::WsReady(Session {
            uid: who.uid,
            ends: u32::try_from(who.end).unwrap_or(u32::MAX),
            ledger: Ledger::new(acks),
            deferred: None,
            pinged: false,
        });
        conn.since = self.now;
        let me = conn.conn_ref(id, key);
        self.stats().authenticated.fetch_add(1, Relaxed);
        // Registered before the client hears Cmd 4, so a failed write
        // (which drops the connection) also unregisters it.
        if let Some(old) = self.shared.delivery.registry.add(who.uid, who.sid, me) {
            self.shared.delivery.close(old, close::REPLACED);
        }
        // A logout revokes before it looks the session's connections up:
        // one revoked since the check above either finds this connection
        // registered or is seen here.
        if self.shared.tokens.is_revoked(who.sid) {
            self.close_ws(key, close::LOGGED_OUT, CloseReason::LoggedOut);
            return;
        }
        self.reply(key, &Push::system(cmd::SIGNED_IN, "认证成功"));
        if self.live(me).is_some() {
            self.start_catch_up(key, None);
        }
    }

    /// Hands a Cmd 20 to the committer. Backpressure: when its queue is
    /// full the connection stops being read until the message fits.
    pub(super) fn submit(&mut self, key: usize, sub: Submission) {
        if let Err(sub) = self.shared.committer.try_submit(sub) {
            self.stats().sends_deferred.fetch_add(1, Relaxed);
            let id = self.id;
            if let Some(conn) = self.conns.get_mut(key) {
                let me = conn.conn_ref(id, key);
                if let Some(session) = conn.session() {
                    session.deferred = Some(Box::new(sub));
                    self.paused.push(me);
                }
            }
        }
    }

    /// Retries the sends of connections paused on a full queue; a connection
    /// whose send is queued carries on with its buffered input.
    pub(super) fn resume_paused(&mut self) {
        for conn in std::mem::take(&mut self.paused) {
            if self.shared.committer.is_full() {
                // Still no room: keep the rest waiting, as they are.
                self.paused.push(conn);
                continue;
            }
            let Some(key) = self.live(conn) else {
                continue;
            };
            let Some(session) = self.conns[key].session() else {
                continue;
            };
            let Some(sub) = session.deferred.take() else {
                continue;
            };
            if let Err(sub) = self.shared.committer.try_submit(*sub) {
                if let Some(session) = self.conns[key].session() {
                    session.deferred = Some(Box::new(sub));
                }
                self.paused.push(conn);
                continue;
            }
            self.resume_input(key);
        }
    }

    /// Sends a close frame and starts closing.
    pub(super) fn close_ws(&mut self, key: usize, code: u16, reason: CloseReason) {
        self.stats().closed(reason);
        let text = match reason {
            CloseReason::AuthTimeout => "auth timeout",
            CloseReason::Idle => "idle timeout",
            CloseReason::Drain => "node draining",
            CloseReason::Replaced => "replaced by a newer connection",
            CloseReason::Flood => "sending too fast",
            CloseReason::LoggedOut => "logged out",
            CloseReason::SessionEnded => "session ended",
            _ => "",
        };
        self.send(key, Chunk::Owned(ws::close_frame(code, text)), true);
        self.enter_closing(key);
    }

    /// Leaves the session, stops reading input and shuts the write side
    /// once everything queued is out.
    pub(super) fn enter_closing(&mut self, key: usize) {
        self.leave_session(key);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.state = State::Closing;
        conn.since = self.now;
        // A closing connection reads (and discards) until the peer's EOF.
        conn.held = false;
        conn.inbuf = Vec::new();
        conn.frag = None;
        if conn.out.is_empty() {
            let _ = conn.stream.shutdown(std::net::Shutdown::Write);
        }
    }
}
