//! HTTP on a connection: a request's head is checked before its body is
//! read (a body for an authenticated route needs a valid `Login-Token`,
//! and a share of `limits.max_inflight_body`); the body is received into a
//! buffer of its declared length; the whole request goes to a worker (or,
//! for `GET /ws` and `GET <ws.echo_path>`, becomes a WebSocket); the reply is written and, when its
//! body is streamed, each further piece is read by a worker only once the
//! connection's output is below the low-water mark. Input is not read
//! while a request is handled or its answer is being written, so pipelined
//! requests wait in the connection's buffer.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::conn::{HttpPhase, Receiving, State};
use super::output::Chunk;
use super::Reactor;
use crate::api;
use crate::budget::Reservation;
use crate::config::Limits;
use crate::http::{BodyStream, Request, Response};
use crate::metrics::{CloseReason, Rejection};
use crate::worker::Task;
use crate::ws;

/// The `Sec-WebSocket-Key` of a valid upgrade request.
fn upgrade_key(req: &Request) -> Option<&str> {
    let ok = req.header_has_token("upgrade", "websocket")
        && req.header_has_token("connection", "upgrade")
        && req.header("sec-websocket-version").map(str::trim) == Some("13");
    let key = req.header("sec-websocket-key")?.trim();
    (ok && key.len() == 24 && key.ends_with("==")).then_some(key)
}

/// Whether a body being received is past its deadline: nothing arrived
/// for `limits.http_timeout` (`idle`), or, after a grace of
/// `http_timeout` from its head, it averages less than
/// `limits.min_body_rate`.
pub(super) fn body_too_slow(r: &Receiving, idle: Duration, now: Instant, limits: &Limits) -> bool {
    if idle > limits.http_timeout {
        return true;
    }
    let judged = now
        .saturating_duration_since(r.started)
        .saturating_sub(limits.http_timeout);
    (r.req.body.len() as f64) < limits.min_body_rate as f64 * judged.as_secs_f64()
}

impl Reactor {
    /// A request head arrived: refuse it, hand it on when it has no body,
    /// or start receiving its body. `false` when the connection was
    /// refused (and is closing).
    pub(super) fn on_head(&mut self, key: usize, req: Request) -> bool {
        if req.content_length == 0 {
            self.on_request(key, req, None);
            return true;
        }
        let signed_in = match api::check_before_body(&self.shared, &req) {
            Ok(signed_in) => signed_in,
            Err(refused) => {
                self.stats().rejected(Rejection::UnauthenticatedBody);
                self.refuse(key, refused, CloseReason::HttpError);
                return false;
            }
        };
        let Some(budget) = self.shared.bodies.reserve(req.content_length, !signed_in) else {
            self.stats().rejected(Rejection::InflightCap);
            self.refuse(key, Response::error(503), CloseReason::HttpError);
            return false;
        };
        let now = self.now;
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        conn.state = State::Http(HttpPhase::Receiving(Box::new(Receiving {
            req,
            budget,
            started: now,
        })));
        conn.since = now;
        true
    }

    /// Takes the next bytes of the body being received from the start of
    /// `data`; returns how many it took. A complete body is handed on.
    pub(super) fn on_body_bytes(&mut self, key: usize, data: &[u8]) -> usize {
        let now = self.now;
        let Some(conn) = self.conns.get_mut(key) else {
            return data.len();
        };
        let State::Http(HttpPhase::Receiving(r)) = &mut conn.state else {
            return 0;
        };
        let used = r.req.fill_body(data);
        conn.since = now;
        if r.req.body_complete() {
            let State::Http(HttpPhase::Receiving(r)) =
                std::mem::replace(&mut conn.state, State::Http(HttpPhase::Working))
            else {
                return used;
            };
            let Receiving { req, budget, .. } = *r;
            self.on_request(key, req, Some(budget));
        }
        used
    }

    /// A whole request: a WebSocket upgrade, or a job for a worker.
    fn on_request(&mut self, key: usize, req: Request, body: Option<Reservation>) {
        self.stats().http_requests.fetch_add(1, Relaxed);
        let id = self.id;
        let draining = self.draining;
        let echo_path = &self.shared.config.ws.echo_path;
        let echo = !echo_path.is_empty() && req.path == *echo_path;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if req.method == "GET" && (req.path == "/ws" || echo) {
            if draining {
                self.http_reject(key, 503);
                return;
            }
            let offered = req
                .headers
                .iter()
                .filter(|(n, _)| n == "sec-websocket-protocol")
                .map(|(_, v)| v.as_str());
            let protocol = ws::offers_subprotocol(offered).then_some(ws::SUBPROTOCOL);
            let Some(accept) =
                upgrade_key(&req).map(|k| ws::upgrade_response(k.as_bytes(), protocol))
            else {
                self.http_reject(key, 400);
                return;
            };
            conn.state = if echo {
                State::WsEcho { pinged: false }
            } else {
                State::WsPending
            };
            conn.since = self.now;
            if echo {
                self.stats().echo_sessions.fetch_add(1, Relaxed);
            }
            self.send(key, Chunk::Owned(accept), true);
            return;
        }
        conn.state = State::Http(HttpPhase::Working);
        let me = conn.conn_ref(id, key);
        let keep_alive = req.keep_alive && !draining;
        let task = Task::Http {
            req,
            keep_alive,
            body,
        };
        if self.queue(me, task).is_err() {
            let bytes = Response::error(503).encode(keep_alive);
            self.on_reply(key, bytes, None, keep_alive);
        }
    }

    /// A worker's (or the overload) answer: write it, stream the rest of
    /// its body if it has one, then carry on with pipelined input.
    pub(super) fn on_reply(
        &mut self,
        key: usize,
        bytes: Vec<u8>,
        stream: Option<BodyStream>,
        keep_alive: bool,
    ) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if !matches!(conn.state, State::Http(HttpPhase::Working)) {
            return;
        }
        self.write_piece(key, bytes, stream, keep_alive);
    }

    /// Writes a head or a piece of a body; then the next piece is read once
    /// the connection has room, or, with nothing left, the answer is done.
    fn write_piece(
        &mut self,
        key: usize,
        bytes: Vec<u8>,
        rest: Option<BodyStream>,
        keep_alive: bool,
    ) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.since = self.now;
        let done = rest.is_none();
        conn.state = State::Http(match rest {
            Some(rest) => HttpPhase::Streaming {
                stream: Some(rest),
                keep_alive,
            },
            None => HttpPhase::Idle,
        });
        self.send(key, Chunk::Owned(bytes), false);
        if done {
            self.reply_done(key, keep_alive);
        } else {
            self.drained(key);
        }
    }

    /// Has a worker read the next piece of a streamed body.
    pub(super) fn read_body(&mut self, key: usize) {
        let id = self.id;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let me = conn.conn_ref(id, key);
        let State::Http(HttpPhase::Streaming { stream, .. }) = &mut conn.state else {
            return;
        };
        let Some(body) = stream.take() else {
            return;
        };
        if let Err(Task::ReadBody(body)) = self.queue(me, Task::ReadBody(body)) {
            if let State::Http(HttpPhase::Streaming { stream, .. }) = &mut self.conns[key].state {
                *stream = Some(body);
            }
            self.retry.push(me);
        }
    }

    /// The next piece of a streamed body.
    pub(super) fn on_body(
        &mut self,
        key: usize,
        bytes: Vec<u8>,
        rest: Option<BodyStream>,
        failed: bool,
    ) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let State::Http(HttpPhase::Streaming {
            stream: None,
            keep_alive,
        }) = conn.state
        else {
            return;
        };
        if failed {
            // The head promised more bytes than can be sent: close.
            self.drop_conn(key, Some(CloseReason::HttpError));
            return;
        }
        self.write_piece(key, bytes, rest, keep_alive);
    }

    /// A whole answer is queued: close, or go on with pipelined input.
    fn reply_done(&mut self, key: usize, keep_alive: bool) {
        if !self.conns.contains(key) {
            return;
        }
        if !keep_alive || self.draining {
            self.stats().closed(CloseReason::HttpDone);
            self.enter_closing(key);
            return;
        }
        self.drained(key);
    }

    pub(super) fn http_reject(&mut self, key: usize, status: u16) {
        self.refuse(key, Response::error(status), CloseReason::HttpError);
    }

    /// Answers `resp` and closes, without reading more of the request.
    pub(super) fn refuse(&mut self, key: usize, resp: Response, reason: CloseReason) {
        self.stats().closed(reason);
        self.send(key, Chunk::Owned(resp.encode(false)), false);
        self.enter_closing(key);
    }
}
