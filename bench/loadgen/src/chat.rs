//! The chat scenarios of a `--child` process: what its signed-in
//! connections send over the socket (Cmd 20) and how the answers are
//! counted.
//!
//! - `chat`: connection `2k` and `2k + 1` (global indices) are friends; each
//!   sends `messages` messages to its partner (`Ope` 0), at most `window`
//!   of them waiting for their Cmd 21, and records the partner's Cmd 6.
//! - `group`: connection 0 posts `messages` messages to one group (`Ope` 1),
//!   one every `interval_ms` whatever the answers; every other connection is
//!   a member and records the Cmd 10.
//!
//! Bodies carry the send time: `"<send unix ns>:<seq>:<padding>"`, so a
//! receiver measures its latency on its own (the clock is the same host's
//! `CLOCK_REALTIME`). `Cid` is `"<run nonce>-<seq>"`, unique per sender and
//! run, so that the node's idempotent retry never answers a fresh message
//! with an earlier run's row. Pure bookkeeping: the child owns the sockets
//! and sends what [`Chat::outbox`] holds.

use std::collections::{BTreeMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::hist::Hist;
use crate::proto::bump;

/// What a child is told about the chat part of the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatPlan {
    /// `group` rather than pairs of friends.
    pub group: bool,
    /// Messages per sender (per connection in pairs; in all for the group).
    pub messages: u32,
    /// Unacknowledged messages a sender keeps in flight (pairs).
    pub window: usize,
    /// Pause between two group messages.
    pub interval_ms: u64,
    /// Body length in bytes (the time stamp and padding).
    pub body_bytes: usize,
    /// The group's id (group).
    pub group_id: u64,
    /// Part of every `Cid`, unique per run.
    pub nonce: String,
    /// A child with nothing to count for this long after `go` stops waiting.
    pub stall_ms: u64,
}

/// Per-message numbers of the group scenario (merged over children).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MsgStat {
    /// Members that received it (first copy each).
    pub received: u64,
    /// Slowest of them: send → receive, µs (the message's completion time).
    pub max_us: u64,
}

/// A child's chat numbers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChatStat {
    /// Cmd 20 frames written.
    pub sent: u64,
    /// Cmd 21 answers matched to a message in flight.
    pub acked: u64,
    /// Cmd 2 answers to a connection with messages in flight: each is the
    /// refusal of one of them. Cmd 2 names no message, so which one shows
    /// only when the others are acknowledged; meanwhile each refusal frees
    /// a place in the window.
    pub refused: u64,
    /// Cmd 21 for no message in flight (unknown or repeated `Cid`).
    pub stray_acks: u64,
    /// Send → Cmd 21, µs.
    pub ack_us: Hist,
    /// Messages received from the partner or the group, first copy each.
    pub delivered: u64,
    /// Send → receive, µs.
    pub delivery_us: Hist,
    /// The same message (same `Id`, or in the group the same sequence
    /// number) received again by the same connection.
    pub duplicates: u64,
    /// Cmd 6/10 from someone else, or with a body not sent by this run.
    pub unexpected: u64,
    /// Cmd 2 bodies, by text.
    pub failures: BTreeMap<String, u64>,
    /// Unix ns of the first send and of the last receive (0 = none).
    pub first_send_ns: u64,
    pub last_recv_ns: u64,
    /// Group sender: most a message was sent after its planned time, µs
    /// (the load generator falling behind its own schedule).
    pub send_lag_max_us: u64,
    /// Group: per message, by sequence number − 1.
    pub per_msg: Vec<MsgStat>,
    /// The child stopped waiting: nothing arrived for `stall_ms`.
    pub stalled: bool,
}

impl ChatStat {
    /// Adds another child's numbers.
    pub fn merge(&mut self, o: &ChatStat) {
        self.sent += o.sent;
        self.acked += o.acked;
        self.refused += o.refused;
        self.stray_acks += o.stray_acks;
        self.ack_us.merge(&o.ack_us);
        self.delivered += o.delivered;
        self.delivery_us.merge(&o.delivery_us);
        self.duplicates += o.duplicates;
        self.unexpected += o.unexpected;
        for (k, v) in &o.failures {
            bump(&mut self.failures, k, *v);
        }
        if o.first_send_ns > 0 {
            self.first_send_ns = match self.first_send_ns {
                0 => o.first_send_ns,
                x => x.min(o.first_send_ns),
            };
        }
        self.last_recv_ns = self.last_recv_ns.max(o.last_recv_ns);
        self.send_lag_max_us = self.send_lag_max_us.max(o.send_lag_max_us);
        if self.per_msg.len() < o.per_msg.len() {
            self.per_msg.resize(o.per_msg.len(), MsgStat::default());
        }
        for (a, b) in self.per_msg.iter_mut().zip(&o.per_msg) {
            a.received += b.received;
            a.max_us = a.max_us.max(b.max_us);
        }
        self.stalled |= o.stalled;
    }
}

/// The body of message `seq` sent at `ns`, padded with `x` to `len` bytes
/// (never shorter than the stamp itself).
pub fn body(ns: u64, seq: u32, len: usize) -> String {
    let mut b = format!("{ns}:{seq}:");
    while b.len() < len {
        b.push('x');
    }
    b
}

/// Send time and sequence number from a body made by [`body`].
pub fn parse_body(body: &str) -> Option<(u64, u32)> {
    let mut parts = body.splitn(3, ':');
    let ns = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    parts.next()?;
    Some((ns, seq))
}

/// The `Cid` of message `seq`.
pub fn cid(nonce: &str, seq: u32) -> String {
    format!("{nonce}-{seq}")
}

/// The sequence number of a `Cid` made by [`cid`] with this `nonce`.
pub fn parse_cid(nonce: &str, cid: &str) -> Option<u32> {
    cid.strip_prefix(nonce)?.strip_prefix('-')?.parse().ok()
}

/// A Cmd 20 frame's JSON text.
pub fn send_json(ope: u8, to: u64, body: &str, cid: &str) -> String {
    // Bodies and cids made here hold no character JSON must escape.
    format!(r#"{{"Cmd":20,"Ope":{ope},"ToId":{to},"Type":0,"Body":"{body}","Cid":"{cid}"}}"#)
}

/// One connection's chat state.
#[derive(Debug, Default)]
struct Peer {
    /// Signed in and taking part.
    live: bool,
    /// Next sequence number to send (1-based; `messages + 1` when done).
    next: u32,
    /// Sent, not yet acknowledged: (seq, send ns), oldest first. Holds the
    /// refused messages too (which ones is not known).
    in_flight: VecDeque<(u32, u64)>,
    /// Cmd 2 answers received: that many of `in_flight` will never be
    /// acknowledged.
    refused: u32,
    /// Ids received (pairs).
    ids: HashSet<u64>,
    /// Sequence numbers received (group), one bit each.
    seqs: Vec<u64>,
    received: u32,
}

impl Peer {
    /// Messages still waiting for an answer.
    fn waiting(&self) -> usize {
        self.in_flight.len().saturating_sub(self.refused as usize)
    }
}

/// The chat engine of one child over its connections `[from, to)`.
pub struct Chat {
    plan: ChatPlan,
    from: u64,
    first_user: u64,
    peers: Vec<Peer>,
    /// Frames to write: (local connection index, JSON text).
    pub outbox: Vec<(usize, String)>,
    pub stat: ChatStat,
    /// Unix ns of `go` (0 before).
    go_ns: u64,
    /// Group sender: messages sent so far.
    group_sent: u32,
    /// Unix ns of the last counted event.
    last_event_ns: u64,
}

impl Chat {
    pub fn new(plan: ChatPlan, from: u64, to: u64, first_user: u64) -> Chat {
        let n = to.saturating_sub(from) as usize;
        let mut peers = Vec::with_capacity(n);
        peers.resize_with(n, Peer::default);
        let per_msg = if plan.group {
            vec![MsgStat::default(); plan.messages as usize]
        } else {
            Vec::new()
        };
        Chat {
            stat: ChatStat {
                per_msg,
                ..ChatStat::default()
            },
            plan,
            from,
            first_user,
            peers,
            outbox: Vec::new(),
            go_ns: 0,
            group_sent: 0,
            last_event_ns: 0,
        }
    }

    fn global(&self, i: usize) -> u64 {
        self.from + i as u64
    }

    /// The local index of connection `i`'s partner (pairs), if in this child.
    fn partner(&self, i: usize) -> Option<usize> {
        let p = self.global(i) ^ 1;
        p.checked_sub(self.from)
            .map(|x| x as usize)
            .filter(|x| *x < self.peers.len())
    }

    fn is_sender(&self, i: usize) -> bool {
        !self.plan.group || self.global(i) == 0
    }

    /// Connection `i` signed in.
    pub fn signed_in(&mut self, i: usize) {
        if let Some(p) = self.peers.get_mut(i) {
            p.live = true;
            p.next = 1;
            if self.plan.group {
                p.seqs = vec![0; (self.plan.messages as usize).div_ceil(64)];
            }
        }
    }

    /// Connection `i` was closed: it sends and receives nothing more.
    pub fn closed(&mut self, i: usize) {
        if let Some(p) = self.peers.get_mut(i) {
            p.live = false;
        }
    }

    /// Start sending: every pair sender fills its window.
    pub fn go(&mut self, now: u64) {
        if self.go_ns != 0 {
            return;
        }
        self.go_ns = now;
        self.last_event_ns = now;
        if !self.plan.group {
            for i in 0..self.peers.len() {
                self.fill(i, now);
            }
        }
    }

    /// Queues connection `i`'s next messages while its window has room.
    fn fill(&mut self, i: usize, now: u64) {
        if self.plan.group || !self.peers[i].live {
            return;
        }
        let to = self.first_user + (self.global(i) ^ 1);
        while self.peers[i].next <= self.plan.messages && self.peers[i].waiting() < self.plan.window
        {
            let seq = self.peers[i].next;
            self.peers[i].next += 1;
            self.send(i, 0, to, seq, now);
        }
    }

    fn send(&mut self, i: usize, ope: u8, to: u64, seq: u32, now: u64) {
        let text = send_json(
            ope,
            to,
            &body(now, seq, self.plan.body_bytes),
            &cid(&self.plan.nonce, seq),
        );
        self.peers[i].in_flight.push_back((seq, now));
        self.outbox.push((i, text));
        self.stat.sent += 1;
        if self.stat.first_send_ns == 0 {
            self.stat.first_send_ns = now;
        }
    }

    /// Group: sends what is due at `now`; returns the unix ns when the next
    /// message is due, if any.
    pub fn tick(&mut self, now: u64) -> Option<u64> {
        if !self.plan.group || self.go_ns == 0 {
            return None;
        }
        // The sender is global connection 0, so local 0 of the first child.
        if !self.tick_pending() {
            return None;
        }
        let s = 0;
        let interval = self.plan.interval_ms * 1_000_000;
        while self.group_sent < self.plan.messages {
            let due = self.go_ns + self.group_sent as u64 * interval;
            if due > now {
                return Some(due);
            }
            self.group_sent += 1;
            self.peers[s].next = self.group_sent + 1;
            self.stat.send_lag_max_us = self.stat.send_lag_max_us.max((now - due) / 1000);
            let (to, seq) = (self.plan.group_id, self.group_sent);
            self.send(s, 1, to, seq, now);
        }
        None
    }

    /// Cmd 21 on connection `i` with `Body` `cid`.
    pub fn on_ack(&mut self, i: usize, cid: &str, now: u64) {
        self.last_event_ns = now;
        let seq = parse_cid(&self.plan.nonce, cid);
        let p = &mut self.peers[i];
        let at = seq.and_then(|s| p.in_flight.iter().position(|(q, _)| *q == s));
        let Some(at) = at else {
            self.stat.stray_acks += 1;
            return;
        };
        let (_, sent) = p.in_flight.remove(at).unwrap_or_default();
        self.stat.acked += 1;
        self.stat.ack_us.record(now.saturating_sub(sent) / 1000);
        self.fill(i, now);
    }

    /// Cmd 2 on connection `i`: one of its messages in flight was refused.
    pub fn on_fail(&mut self, i: usize, text: &str, now: u64) {
        self.last_event_ns = now;
        let key: String = text.chars().take(40).collect();
        bump(&mut self.stat.failures, &key, 1);
        if self.peers[i].waiting() > 0 {
            self.peers[i].refused += 1;
            self.stat.refused += 1;
            self.fill(i, now);
        }
    }

    /// Cmd 6 (pairs) or 10 (group) on connection `i`.
    pub fn on_message(&mut self, i: usize, cmd: i64, from: u64, id: u64, body: &str, now: u64) {
        self.last_event_ns = now;
        let want_cmd = if self.plan.group { 10 } else { 6 };
        let want_from = if self.plan.group {
            self.first_user
        } else {
            self.first_user + (self.global(i) ^ 1)
        };
        let parsed = parse_body(body).filter(|(_, seq)| *seq >= 1 && *seq <= self.plan.messages);
        let Some((sent, seq)) = parsed.filter(|_| cmd == want_cmd && from == want_from) else {
            self.stat.unexpected += 1;
            return;
        };
        let p = &mut self.peers[i];
        let fresh = if self.plan.group {
            let (w, b) = ((seq - 1) as usize / 64, (seq - 1) % 64);
            match p.seqs.get_mut(w) {
                Some(word) if *word & (1 << b) == 0 => {
                    *word |= 1 << b;
                    true
                }
                _ => false,
            }
        } else {
            p.ids.insert(id)
        };
        if !fresh {
            self.stat.duplicates += 1;
            return;
        }
        p.received += 1;
        let us = now.saturating_sub(sent) / 1000;
        self.stat.delivered += 1;
        self.stat.delivery_us.record(us);
        self.stat.last_recv_ns = self.stat.last_recv_ns.max(now);
        if let Some(m) = self.stat.per_msg.get_mut(seq as usize - 1) {
            m.received += 1;
            m.max_us = m.max_us.max(us);
        }
    }

    /// Whether every live connection has sent, been answered and received
    /// everything it can expect (what its partner or the sender had refused
    /// is not expected; a sender in another child is assumed to refuse
    /// nothing).
    pub fn complete(&self) -> bool {
        if self.go_ns == 0 {
            return false;
        }
        let m = self.plan.messages;
        let group_refused = if self.from == 0 && !self.peers.is_empty() {
            self.peers[0].refused
        } else {
            0
        };
        (0..self.peers.len()).all(|i| {
            let p = &self.peers[i];
            if !p.live {
                return true;
            }
            let sent_all = if self.plan.group {
                !self.is_sender(i) || self.group_sent >= m
            } else {
                p.next > m
            };
            if !sent_all || p.waiting() > 0 {
                return false;
            }
            let expect = if self.plan.group {
                if self.is_sender(i) {
                    0
                } else {
                    m - group_refused
                }
            } else {
                match self.partner(i).map(|q| &self.peers[q]) {
                    Some(q) if q.live => m - q.refused,
                    Some(_) => 0,
                    None => m,
                }
            };
            p.received >= expect
        })
    }

    /// Whether the child should stop waiting at `now`: complete, or nothing
    /// counted for `stall_ms` (then marked as stalled).
    pub fn finished(&mut self, now: u64) -> bool {
        if self.go_ns == 0 {
            return false;
        }
        if self.complete() {
            return true;
        }
        let sending = self.plan.group && self.tick_pending();
        if !sending && now.saturating_sub(self.last_event_ns) > self.plan.stall_ms * 1_000_000 {
            self.stat.stalled = true;
            return true;
        }
        false
    }

    /// The group sender still has messages to send.
    fn tick_pending(&self) -> bool {
        self.from == 0
            && self.peers.first().is_some_and(|p| p.live)
            && self.group_sent < self.plan.messages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(group: bool) -> ChatPlan {
        ChatPlan {
            group,
            messages: 3,
            window: 2,
            interval_ms: 10,
            body_bytes: 40,
            group_id: 7,
            nonce: "n1".into(),
            stall_ms: 1000,
        }
    }

    #[test]
    fn bodies_and_cids() {
        let b = body(1_700_000_000_123_456_789, 42, 60);
        assert_eq!(b.len(), 60);
        assert_eq!(parse_body(&b), Some((1_700_000_000_123_456_789, 42)));
        assert_eq!(parse_body(&body(5, 1, 0)), Some((5, 1)));
        assert_eq!(parse_body("5:1"), None);
        assert_eq!(parse_body("x:1:"), None);
        assert_eq!(parse_cid("n1", &cid("n1", 9)), Some(9));
        assert_eq!(parse_cid("n1", "n2-9"), None);
        assert_eq!(parse_cid("n1", "n1-"), None);
        let j: serde_json::Value = serde_json::from_str(&send_json(1, 7, "1:2:x", "n-1")).unwrap();
        assert_eq!(j["Cmd"], 20);
        assert_eq!(j["Ope"], 1);
        assert_eq!(j["ToId"], 7);
        assert_eq!(j["Cid"], "n-1");
    }

    /// Two friends (users 10 and 11), three messages each, window 2.
    #[test]
    fn pairs_window_acks_and_duplicates() {
        let mut c = Chat::new(plan(false), 0, 2, 10);
        c.signed_in(0);
        c.signed_in(1);
        c.go(1_000_000);
        // Each fills its window of two.
        assert_eq!(c.outbox.len(), 4);
        let (i, text) = &c.outbox[0];
        assert_eq!(*i, 0);
        assert!(text.contains(r#""ToId":11"#) && text.contains(r#""Cid":"n1-1""#));
        let sent: Vec<(usize, String)> = std::mem::take(&mut c.outbox);
        assert_eq!(c.stat.sent, 4);
        // Acks out of order free the window one at a time.
        c.on_ack(0, "n1-2", 3_000_000);
        assert_eq!(c.outbox.len(), 1);
        c.on_ack(0, "n1-2", 3_000_000);
        assert_eq!(c.stat.stray_acks, 1);
        c.on_ack(0, "n1-1", 4_000_000);
        c.on_ack(0, "n1-3", 4_000_000);
        assert_eq!(c.stat.acked, 3);
        assert_eq!(c.stat.ack_us.max(), 3000);
        // Connection 1 receives its partner's three, one of them twice.
        for (k, (_, text)) in sent.iter().filter(|(i, _)| *i == 0).enumerate() {
            let v: serde_json::Value = serde_json::from_str(text).unwrap();
            let b = v["Body"].as_str().unwrap();
            c.on_message(1, 6, 10, 100 + k as u64, b, 2_000_000);
        }
        c.on_message(1, 6, 10, 100, &body(1_000_000, 1, 0), 2_500_000);
        assert_eq!(c.stat.duplicates, 1);
        c.on_message(1, 6, 10, 102, &body(1_500_000, 3, 0), 2_500_000);
        assert_eq!(c.stat.delivered, 3);
        assert_eq!(c.stat.delivery_us.max(), 1000);
        // From a stranger, or a foreign body: unexpected.
        c.on_message(1, 6, 99, 103, &body(1, 1, 0), 2_500_000);
        c.on_message(1, 6, 10, 104, "hello", 2_500_000);
        c.on_message(1, 10, 10, 105, &body(1, 1, 0), 2_500_000);
        assert_eq!(c.stat.unexpected, 3);
        assert!(!c.complete());
        // Connection 1: its second message refused (Cmd 2), which frees a
        // place for the third; the first and third are acknowledged.
        c.on_fail(1, "服务繁忙，请稍后重试", 5_000_000);
        assert_eq!(c.stat.refused, 1);
        assert_eq!(c.stat.failures.get("服务繁忙，请稍后重试"), Some(&1));
        assert!(c.outbox.iter().any(|(i, t)| *i == 1 && t.contains("n1-3")));
        c.on_ack(1, "n1-1", 5_000_000);
        c.on_ack(1, "n1-3", 5_000_000);
        assert_eq!(c.stat.stray_acks, 1);
        // A Cmd 2 with nothing in flight refuses nothing.
        c.on_fail(1, "x", 5_000_000);
        assert_eq!(c.stat.refused, 1);
        // Connection 0 got two of its partner's three; one was refused.
        c.on_message(0, 6, 11, 200, &body(1, 1, 0), 6_000_000);
        assert!(!c.complete());
        c.on_message(0, 6, 11, 201, &body(1, 3, 0), 6_000_000);
        assert!(c.complete());
        assert_eq!(c.stat.first_send_ns, 1_000_000);
        assert_eq!(c.stat.last_recv_ns, 6_000_000);
    }

    #[test]
    fn group_schedule_and_completion() {
        // Child 0 holds the sender (user 10) and one member; another
        // child holds the rest.
        let mut c = Chat::new(plan(true), 0, 2, 10);
        c.signed_in(0);
        c.signed_in(1);
        c.go(1_000_000_000);
        assert_eq!(c.tick(1_000_000_000), Some(1_010_000_000));
        assert_eq!(c.outbox.len(), 1);
        assert!(c.outbox[0].1.contains(r#""Ope":1,"ToId":7"#));
        // Late: the second and third are both due; the lag is recorded.
        assert_eq!(c.tick(1_025_000_000), None);
        assert_eq!(c.stat.sent, 3);
        assert_eq!(c.stat.send_lag_max_us, 15_000);
        for seq in 1..=3 {
            c.on_ack(0, &cid("n1", seq), 1_030_000_000);
            c.on_message(
                1,
                10,
                10,
                seq as u64,
                &body(1_000_000_000, seq, 0),
                1_031_000_000,
            );
        }
        c.on_message(1, 10, 10, 1, &body(1_000_000_000, 1, 0), 1_032_000_000);
        assert_eq!(c.stat.duplicates, 1);
        assert!(c.complete());
        assert_eq!(c.stat.per_msg[0].received, 1);
        assert_eq!(c.stat.per_msg[0].max_us, 31_000);

        let mut other = Chat::new(plan(true), 2, 4, 10);
        other.signed_in(0);
        other.signed_in(1);
        other.go(1_000_000_000);
        assert_eq!(other.tick(2_000_000_000), None);
        assert!(other.outbox.is_empty());
        other.on_message(0, 10, 10, 1, &body(1_000_000_000, 1, 0), 1_040_000_000);
        assert!(!other.complete());
        // Nothing more for longer than stall_ms: stop waiting.
        assert!(!other.finished(1_500_000_000));
        assert!(other.finished(2_100_000_000));
        assert!(other.stat.stalled);

        let mut all = ChatStat::default();
        all.merge(&c.stat);
        all.merge(&other.stat);
        assert_eq!(all.delivered, 4);
        assert_eq!(all.per_msg[0].received, 2);
        assert_eq!(all.per_msg[0].max_us, 40_000);
        assert!(all.stalled);
        assert_eq!(all.first_send_ns, 1_000_000_000);
    }
}
