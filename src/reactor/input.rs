//! Reading: bytes from a socket into HTTP requests and WebSocket frames,
//! check-then-parse. Reads land in the reactor's scratch buffer; only an
//! incomplete request head or frame is kept on the connection, and freed
//! once consumed; a request body goes straight into its own buffer. The
//! text in an incomplete frame is checked as UTF-8 as it arrives.

use std::io::{self, Read};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::conn::{HttpPhase, State};
use super::{reason_for, Reactor};
use crate::api;
use crate::http::{self, Parsed};
use crate::metrics::CloseReason;
use crate::ws::{self, Frame};

impl Reactor {
    /// Reads until the socket is empty or the connection's input must wait.
    pub(super) fn read_ready(&mut self, key: usize) {
        let mut scratch = std::mem::take(&mut self.scratch);
        while let Some(conn) = self.conns.get_mut(key) {
            if conn.input_paused() {
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

    /// Input may go on again: what is buffered first, then the socket.
    pub(super) fn resume_input(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.input_paused() {
            return;
        }
        let buf = std::mem::take(&mut conn.inbuf);
        if !buf.is_empty() {
            self.consume_inbuf(key, buf);
        }
        self.read_ready(key);
    }

    /// Processes bytes kept from earlier reads and keeps what is left.
    fn consume_inbuf(&mut self, key: usize, mut buf: Vec<u8>) {
        let used = self.on_input(key, &mut buf);
        if let Some(conn) = self.conns.get_mut(key) {
            if used < buf.len() && !matches!(conn.state, State::Closing) {
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
            if off == data.len() || conn.input_paused() {
                return off;
            }
            match conn.state {
                State::Closing => return data.len(),
                State::Http(HttpPhase::Idle) => {
                    match http::parse(
                        &data[off..],
                        |method, path| api::body_limit(limits, method, path),
                        conn.peer,
                    ) {
                        Parsed::Partial => return off,
                        Parsed::Reject(status) => {
                            self.http_reject(key, status);
                            return data.len();
                        }
                        Parsed::Head(req, used) => {
                            off += used;
                            if !self.on_head(key, req) {
                                return data.len();
                            }
                        }
                    }
                }
                State::Http(HttpPhase::Receiving(_)) => {
                    off += self.on_body_bytes(key, &data[off..]);
                }
                State::Http(_) | State::WsChecking => return off,
                State::WsPending | State::WsReady(_) | State::WsEcho { .. } => {
                    match ws::check_frame(&data[off..], limits.max_message) {
                        Ok(Frame::Header) => return off,
                        Ok(Frame::Partial(info)) => {
                            let payload = &data[off + info.payload_start..];
                            self.on_partial_frame(key, &info, payload);
                            return off;
                        }
                        Err(code) => {
                            self.close_ws(key, code, reason_for(code));
                            return data.len();
                        }
                        Ok(Frame::Whole(info)) => {
                            // A token per message (its final frame) and per
                            // control frame: the fragments before a final
                            // one are bounded by limits.max_message.
                            if info.fin && !self.take_token(key) {
                                // Held (or closed): the frame stays unread.
                                continue;
                            }
                            let start = off + info.payload_start;
                            off += info.total_len();
                            let payload = &mut data[start..off];
                            ws::unmask(payload, info.mask);
                            self.on_frame(key, info.fin, info.opcode, payload);
                        }
                    }
                }
            }
        }
    }
}
