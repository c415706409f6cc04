//! WebSocket on a connection: frames (control frames, fragments, UTF-8),
//! the client's commands (or, on the echo path, the echo of each message),
//! sign-in, sends into the committer queue, and closing.

use std::sync::atomic::Ordering::Relaxed;

use super::conn::{Fragment, Session, State};
use super::output::Chunk;
use super::{reason_for, Reactor};
use crate::chat;
use crate::commit::Submission;
use crate::delivery::ledger::Ledger;
use crate::message::{cmd, parse_client, ClientMsg, Push};
use crate::metrics::CloseReason;
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

    /// Cmd 3: a valid token signs the connection in; `acks` when the client
    /// declared that it acknowledges with Cmd 22. Its pending messages
    /// follow Cmd 4.
    fn sign_in(&mut self, key: usize, token: &str, acks: bool) {
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
        conn.state = State::WsReady(Session {
            uid: claims.id,
            ledger: Ledger::new(acks),
            deferred: None,
            pinged: false,
        });
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
