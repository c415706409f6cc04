//! The bus thread: a Redis subscription to this node's channel and the
//! broadcast channel, handing each frame to local delivery. It reconnects
//! with backoff and subscribes again after Redis restarts; a silent
//! connection is probed with PING.
//!
//! Wire format (little-endian), one PUBLISH each:
//! - node channel: `b'P'`, message id `u64` (0 for a notice), recipient
//!   count `u32`, the recipients' ids `u64` each, then the WebSocket frame;
//! - broadcast channel: `b'B'`, origin node id length `u8`, the id, then
//!   the frame (the origin already wrote it to its own connections);
//! - broadcast channel: `b'K'`, origin, user id `u64`, close code `u16`,
//!   session id `u64` (0: every session): close that user's WebSockets;
//! - broadcast channel: `b'R'`, origin, session id `u64`, its end `i64`:
//!   the session was revoked (logout).
//!
//! On every (re)subscription the bus reloads the revoked sessions from the
//! store, so a revocation published while it was not listening still
//! counts here.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::{node_channel, Cluster, Link, RedisLink, BROADCAST_CHANNEL};
use crate::node::Shared;
use crate::ws::SharedFrame;

/// How long one read waits before the loop checks for drain.
const READ_TIMEOUT: Duration = Duration::from_millis(500);
/// A connection silent for this long is probed with PING.
const PROBE_AFTER: Duration = Duration::from_secs(5);
/// Reconnection backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

const PUSH: u8 = b'P';
const BROADCAST: u8 = b'B';
const KICK: u8 = b'K';
const REVOKE: u8 = b'R';

/// The payload of a push to one node.
pub fn encode_push(id: u64, uids: &[u64], frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(13 + 8 * uids.len() + frame.len());
    out.push(PUSH);
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&(uids.len() as u32).to_le_bytes());
    for uid in uids {
        out.extend_from_slice(&uid.to_le_bytes());
    }
    out.extend_from_slice(frame);
    out
}

/// The payload of a broadcast from `origin`.
pub fn encode_broadcast(origin: &str, frame: &[u8]) -> Vec<u8> {
    let mut out = with_origin(BROADCAST, origin, frame.len());
    out.extend_from_slice(frame);
    out
}

/// The origin header of a broadcast-channel payload.
fn with_origin(kind: u8, origin: &str, capacity: usize) -> Vec<u8> {
    let origin = &origin.as_bytes()[..origin.len().min(255)];
    let mut out = Vec::with_capacity(2 + origin.len() + capacity);
    out.push(kind);
    out.push(origin.len() as u8);
    out.extend_from_slice(origin);
    out
}

/// The payload of "close these WebSockets of `uid`" from `origin`.
pub fn encode_kick(origin: &str, uid: u64, sid: Option<u64>, code: u16) -> Vec<u8> {
    let mut out = with_origin(KICK, origin, 18);
    out.extend_from_slice(&uid.to_le_bytes());
    out.extend_from_slice(&code.to_le_bytes());
    out.extend_from_slice(&sid.unwrap_or(0).to_le_bytes());
    out
}

/// The payload of "session `sid` (ending at `end`) is revoked" from `origin`.
pub fn encode_revoke(origin: &str, sid: u64, end: i64) -> Vec<u8> {
    let mut out = with_origin(REVOKE, origin, 16);
    out.extend_from_slice(&sid.to_le_bytes());
    out.extend_from_slice(&end.to_le_bytes());
    out
}

/// A decoded bus message.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// Push `frame` (stored message `id`, 0 for a notice) to these users.
    Push {
        /// Message id.
        id: u64,
        /// Recipients.
        uids: Vec<u64>,
        /// The WebSocket frame.
        frame: &'a [u8],
    },
    /// Push `frame` to every signed-in connection (unless we sent it).
    Broadcast {
        /// The node that published it.
        origin: &'a str,
        /// The WebSocket frame.
        frame: &'a [u8],
    },
    /// Close WebSockets of `uid` (unless we sent it).
    Kick {
        /// The node that published it.
        origin: &'a str,
        /// Their user.
        uid: u64,
        /// Only those of this session; `None`: all.
        sid: Option<u64>,
        /// The close code.
        code: u16,
    },
    /// Session `sid` is revoked until `end` (unless we sent it).
    Revoke {
        /// The node that published it.
        origin: &'a str,
        /// The session.
        sid: u64,
        /// Its absolute end.
        end: i64,
    },
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Decodes a payload; `None` when it is malformed.
pub fn decode(payload: &[u8]) -> Option<Decoded<'_>> {
    match *payload.first()? {
        PUSH => {
            let id = u64_at(payload, 1)?;
            let n = u32::from_le_bytes(payload.get(9..13)?.try_into().ok()?) as usize;
            let end = n.checked_mul(8)?.checked_add(13)?;
            let list = payload.get(13..end)?;
            let uids = list
                .chunks_exact(8)
                .filter_map(|c| c.try_into().ok().map(u64::from_le_bytes))
                .collect();
            let frame = &payload[end..];
            (!frame.is_empty()).then_some(Decoded::Push { id, uids, frame })
        }
        kind @ (BROADCAST | KICK | REVOKE) => {
            let len = *payload.get(1)? as usize;
            let origin = std::str::from_utf8(payload.get(2..2 + len)?).ok()?;
            let rest = &payload[2 + len..];
            match kind {
                BROADCAST => (!rest.is_empty()).then_some(Decoded::Broadcast {
                    origin,
                    frame: rest,
                }),
                KICK if rest.len() == 18 => Some(Decoded::Kick {
                    origin,
                    uid: u64_at(rest, 0)?,
                    code: u16::from_le_bytes(rest.get(8..10)?.try_into().ok()?),
                    sid: Some(u64_at(rest, 10)?).filter(|&s| s != 0),
                }),
                REVOKE if rest.len() == 16 => Some(Decoded::Revoke {
                    origin,
                    sid: u64_at(rest, 0)?,
                    end: u64_at(rest, 8)? as i64,
                }),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Runs the bus until the node drains.
pub fn run(cluster: &Cluster, shared: &Shared) {
    let stats = &cluster.stats;
    // A (re)start (`supervise` runs this again after a panic): messages may
    // have been missed, as after a lost connection.
    stats.bus_up.store(0, Relaxed);
    cluster.set_link(Link::Bus, false, &shared.delivery);
    let channel = node_channel(&cluster.me.id);
    let mut backoff = BACKOFF_MIN;
    let mut logged_down = false;
    while !cluster.stopping() {
        let mut con = match RedisLink::connect(&cluster.redis.client)
            .and_then(|c| c.set_read_timeout(Some(READ_TIMEOUT)).map(|()| c))
        {
            Ok(c) => c,
            Err(e) => {
                if !logged_down {
                    log::warn!("cluster: bus cannot reach Redis: {e}; retrying");
                    logged_down = true;
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let mut pubsub = con.as_pubsub();
        if let Err(e) = pubsub.subscribe(&[channel.as_str(), BROADCAST_CHANNEL]) {
            log::warn!("cluster: bus subscribe: {e}");
            drop(pubsub);
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(BACKOFF_MAX);
            continue;
        }
        // Subscribed: what is revoked from now on is heard; what was
        // revoked before is in the store.
        if let Err(e) = shared.tokens.load_revoked(shared.store.as_ref()) {
            log::warn!("cluster: revoked sessions not reloaded: {e}");
        }
        stats.bus_up.store(1, Relaxed);
        stats.bus_subscriptions.fetch_add(1, Relaxed);
        cluster.set_link(Link::Bus, true, &shared.delivery);
        log::info!("cluster: bus subscribed to {channel} and {BROADCAST_CHANNEL}");
        backoff = BACKOFF_MIN;
        logged_down = false;
        let mut heard = Instant::now();
        while !cluster.stopping() {
            match pubsub.get_message() {
                Ok(msg) => {
                    heard = Instant::now();
                    stats.bus_messages.fetch_add(1, Relaxed);
                    deliver(cluster, shared, msg.get_payload_bytes());
                }
                Err(e) if e.is_timeout() => {
                    if heard.elapsed() >= PROBE_AFTER {
                        if let Err(e) = pubsub.ping::<redis::Value>() {
                            log::warn!("cluster: bus lost Redis: {e}");
                            break;
                        }
                        heard = Instant::now();
                    }
                }
                Err(e) => {
                    log::warn!("cluster: bus lost Redis: {e}");
                    break;
                }
            }
        }
        stats.bus_up.store(0, Relaxed);
        if !cluster.stopping() {
            cluster.set_link(Link::Bus, false, &shared.delivery);
        }
    }
}

/// Hands one bus message to local delivery.
fn deliver(cluster: &Cluster, shared: &Shared, payload: &[u8]) {
    match decode(payload) {
        Some(Decoded::Push { id, uids, frame }) => {
            let frame: SharedFrame = frame.into();
            shared.delivery.deliver_local(&uids, frame, id, None);
        }
        Some(Decoded::Broadcast { origin, frame }) => {
            if origin != cluster.me.id {
                shared.delivery.push_all(frame.into());
            }
        }
        Some(Decoded::Kick {
            origin,
            uid,
            sid,
            code,
        }) => {
            if origin != cluster.me.id {
                if sid.is_none() {
                    // The user's standing may have changed (a ban).
                    shared.access.forget(uid);
                }
                shared.delivery.kick_local(uid, sid, code);
            }
        }
        Some(Decoded::Revoke { origin, sid, end }) => {
            if origin != cluster.me.id {
                shared.tokens.revoke(sid, end);
            }
        }
        None => {
            cluster.stats.bus_malformed.fetch_add(1, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        let p = encode_push(42, &[1, 2, u64::MAX], b"\x81\x02hi");
        assert_eq!(
            decode(&p),
            Some(Decoded::Push {
                id: 42,
                uids: vec![1, 2, u64::MAX],
                frame: b"\x81\x02hi"
            })
        );
        let b = encode_broadcast("n-1", b"\x81\x01x");
        assert_eq!(
            decode(&b),
            Some(Decoded::Broadcast {
                origin: "n-1",
                frame: b"\x81\x01x"
            })
        );
    }

    #[test]
    fn kicks_and_revocations_round_trip() {
        let k = encode_kick("n-1", u64::MAX, Some(7), 4001);
        assert_eq!(
            decode(&k),
            Some(Decoded::Kick {
                origin: "n-1",
                uid: u64::MAX,
                sid: Some(7),
                code: 4001
            })
        );
        let all = encode_kick("n-1", 5, None, 4002);
        assert!(matches!(
            decode(&all),
            Some(Decoded::Kick { sid: None, .. })
        ));
        let r = encode_revoke("n-2", 9, 1_900_000_000);
        assert_eq!(
            decode(&r),
            Some(Decoded::Revoke {
                origin: "n-2",
                sid: 9,
                end: 1_900_000_000
            })
        );
        for p in [k, r] {
            for cut in 0..p.len() {
                assert_eq!(decode(&p[..cut]), None, "cut at {cut}");
            }
            let mut long = p.clone();
            long.push(0);
            assert_eq!(decode(&long), None);
        }
    }

    #[test]
    fn malformed_payloads_are_refused() {
        let p = encode_push(1, &[7], b"f");
        for cut in 0..p.len() {
            assert_eq!(decode(&p[..cut]), None, "cut at {cut}");
        }
        let mut huge = p.clone();
        huge[9..13].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&huge), None);
        assert_eq!(decode(b"X123"), None);
        assert_eq!(decode(&[BROADCAST, 200, b'a']), None);
    }
}
