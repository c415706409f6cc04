//! The soak scenario of a `--child` process: steady chat traffic between
//! pairs of friends while connections are closed and reconnected, and the
//! accounting of every stored message per recipient.
//!
//! - Connection `2k` and `2k + 1` (global indices, users `first_user + 2k`
//!   and `first_user + 2k + 1`) are friends; both are always in one child.
//! - After `go` the child sends its share of `--rate` (Cmd 20, one unique
//!   `Cid` each) from random signed-in connections to their partners, and
//!   closes its share of `--churn` connections per second (half with a close
//!   frame, a quarter with RST, a quarter with FIN and no close frame), which
//!   reconnect at once and sign in again.
//! - The sender records the stored `Id` of each message (Cmd 21) with its
//!   recipient. A message whose Cmd 21 never came because its connection was
//!   closed is sent again, same `Cid` and body, when that user is signed in
//!   again: the node answers a known `Cid` with the stored message and pushes
//!   nothing, so every message ends up with its `Id` known.
//! - A recipient counts an `Id` as received when any of its connections got
//!   a Cmd 6 with it (again: a duplicate). A first receipt is *live* when the
//!   message was sent after the receiving connection began to connect, else
//!   it came by catch-up (pending messages pushed after sign-in).
//! - Every connection acknowledges what it received (`{"Cmd":22,"Body":"<newest Id>"}`)
//!   at most `ack_ms` after a receipt or once `ack_every` are unacknowledged;
//!   a connection closed with a close frame acknowledges first, one closed
//!   abruptly does not.
//!
//! Pure bookkeeping: the child owns the sockets, writes what
//! [`Soak::outbox`] holds and closes what [`Soak::churn`] names.

use std::collections::{BTreeMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::chat::{body, parse_body, send_json};
use crate::hist::Hist;
use crate::proto::bump;

/// Most messages (or closes) one tick may catch up on, so a child that fell
/// behind does not send a burst.
const MAX_BURST: u64 = 1000;
/// Lost messages listed by (user, id) in the report.
const MAX_LOST_SAMPLES: usize = 20;
/// Random picks of a signed-in connection before a slot is skipped.
const PICK_TRIES: usize = 32;

/// What a child is told about the soak part of the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SoakPlan {
    /// Messages per second this child sends (its share of `--rate`).
    pub rate: f64,
    /// Connections this child closes per second (its share of `--churn`).
    pub churn_per_s: f64,
    /// Body length in bytes (the time stamp and padding).
    pub body_bytes: usize,
    /// Part of every `Cid`, unique per run.
    pub nonce: String,
    /// A receipt is acknowledged at most this long after it arrived ...
    pub ack_ms: u64,
    /// ... or as soon as this many are unacknowledged on the connection.
    pub ack_every: u32,
    /// After `stop`: how long to wait for the Cmd 21 of messages in flight.
    pub settle_ms: u64,
    /// Bound of the final reconnect of every user and its catch-up.
    pub drain_ms: u64,
    /// The final catch-up is over once nothing arrived for this long.
    pub quiet_ms: u64,
    /// Attempts of one reconnect before its user is given up.
    pub reconnect_tries: u32,
    /// How long a connection closed by the churn stays away before it
    /// reconnects (0: at once).
    #[serde(default)]
    pub away_ms: u64,
}

/// How a connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseKind {
    /// A close frame (1000), then reading until the node closes.
    Frame,
    /// `close()` without a close frame: FIN (RST when unread data remains).
    Fin,
    /// `SO_LINGER` 0 and `close()`: RST, unread data discarded.
    Rst,
}

impl CloseKind {
    pub fn name(self) -> &'static str {
        match self {
            CloseKind::Frame => "close frame",
            CloseKind::Fin => "FIN, no close frame",
            CloseKind::Rst => "RST",
        }
    }

    /// The kind of the `n`-th close: half with a close frame, the other half
    /// abrupt (RST and FIN alternating).
    pub fn nth(n: u64) -> CloseKind {
        match n % 4 {
            1 => CloseKind::Rst,
            3 => CloseKind::Fin,
            _ => CloseKind::Frame,
        }
    }
}

/// A child's soak numbers (merged over children by the parent).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SoakStat {
    /// Cmd 20 frames written, resends included.
    pub send_frames: u64,
    /// Resends after a reconnect (same `Cid`).
    pub resent: u64,
    /// Messages whose stored `Id` came back (Cmd 21): each is owed to its
    /// recipient.
    pub sent: u64,
    /// Cmd 21 without an `Id`.
    pub no_id: u64,
    /// Cmd 2 answers taken as refusals of a message in flight.
    pub refused: u64,
    /// Cmd 21 for no message waiting for one.
    pub stray_acks: u64,
    /// Cmd 2 bodies, by text.
    pub failures: BTreeMap<String, u64>,
    /// Send slots skipped: no signed-in connection found.
    pub skipped: u64,
    /// At the end: messages still without their Cmd 21.
    pub unconfirmed: u64,
    /// Of `sent`: received by their recipient (any connection).
    pub received: u64,
    /// Of `sent`: never received by their recipient.
    pub lost: u64,
    /// ... of which to users not signed in at the end.
    pub lost_offline: u64,
    /// Some lost messages: (user, id).
    pub lost_samples: Vec<(u64, u64)>,
    /// The same `Id` again for the same user (any of its connections).
    pub duplicates: u64,
    /// Ids received that no Cmd 21 named (their sender never learned them).
    pub received_unconfirmed: u64,
    /// First receipts of messages sent after the receiving connection began
    /// to connect, and their latency (send → receipt, µs).
    pub live: u64,
    pub live_us: Hist,
    /// First receipts of messages sent before that (pushed by catch-up),
    /// and their delay (send → receipt, µs).
    pub catchup: u64,
    pub catchup_us: Hist,
    /// First receipts on a connection being closed (after its close frame).
    pub on_closing: u64,
    /// The user's own messages pushed to its other connection.
    pub echoes: u64,
    /// Cmd 6 from someone other than the partner, or a foreign body.
    pub unexpected: u64,
    /// Cmd 22 frames written.
    pub acks_sent: u64,
    /// Send → Cmd 21, µs (the first answer of each message).
    pub ack_us: Hist,
    /// Connections closed by the load generator, by kind.
    pub churned: BTreeMap<String, u64>,
    /// Signed-in connections closed by the node (they reconnect too).
    pub node_closed: u64,
    /// Reconnects started and signed in.
    pub reconnects: u64,
    pub reconnected: u64,
    /// Failed reconnect attempts, by reason (each is tried again after 1 s).
    pub reconnect_failures: BTreeMap<String, u64>,
    /// Reconnects given up after their last attempt.
    pub gave_up: u64,
    /// Connect → Cmd 4 of the reconnects during the traffic, µs.
    pub reconnect_us: Hist,
    /// How connections closed with a close frame ended, by reason.
    pub closing_ends: BTreeMap<String, u64>,
    /// The final round: users reconnected once more after the traffic stopped.
    pub final_reconnected: u64,
    /// Users not signed in at the end.
    pub offline_at_end: u64,
    /// Stop → end of the final catch-up, seconds (slowest child).
    pub drain_s: f64,
    /// The final catch-up ended by its bound, not by quiet.
    pub drain_timed_out: bool,
}

impl SoakStat {
    /// Adds another child's numbers.
    pub fn merge(&mut self, o: &SoakStat) {
        self.send_frames += o.send_frames;
        self.resent += o.resent;
        self.sent += o.sent;
        self.no_id += o.no_id;
        self.refused += o.refused;
        self.stray_acks += o.stray_acks;
        for (k, v) in &o.failures {
            bump(&mut self.failures, k, *v);
        }
        self.skipped += o.skipped;
        self.unconfirmed += o.unconfirmed;
        self.received += o.received;
        self.lost += o.lost;
        self.lost_offline += o.lost_offline;
        for s in &o.lost_samples {
            if self.lost_samples.len() < MAX_LOST_SAMPLES {
                self.lost_samples.push(*s);
            }
        }
        self.duplicates += o.duplicates;
        self.received_unconfirmed += o.received_unconfirmed;
        self.live += o.live;
        self.live_us.merge(&o.live_us);
        self.catchup += o.catchup;
        self.catchup_us.merge(&o.catchup_us);
        self.on_closing += o.on_closing;
        self.echoes += o.echoes;
        self.unexpected += o.unexpected;
        self.acks_sent += o.acks_sent;
        self.ack_us.merge(&o.ack_us);
        for (k, v) in &o.churned {
            bump(&mut self.churned, k, *v);
        }
        self.node_closed += o.node_closed;
        self.reconnects += o.reconnects;
        self.reconnected += o.reconnected;
        for (k, v) in &o.reconnect_failures {
            bump(&mut self.reconnect_failures, k, *v);
        }
        self.gave_up += o.gave_up;
        self.reconnect_us.merge(&o.reconnect_us);
        for (k, v) in &o.closing_ends {
            bump(&mut self.closing_ends, k, *v);
        }
        self.final_reconnected += o.final_reconnected;
        self.offline_at_end += o.offline_at_end;
        self.drain_s = self.drain_s.max(o.drain_s);
        self.drain_timed_out |= o.drain_timed_out;
    }
}

/// The `Cid` of message `seq` sent by global connection `g`.
pub fn cid(nonce: &str, g: u64, seq: u32) -> String {
    format!("{nonce}-{g}-{seq}")
}

/// (global connection, seq) of a `Cid` made by [`cid`] with this `nonce`.
pub fn parse_cid(nonce: &str, cid: &str) -> Option<(u64, u32)> {
    let (g, seq) = cid
        .strip_prefix(nonce)?
        .strip_prefix('-')?
        .split_once('-')?;
    Some((g.parse().ok()?, seq.parse().ok()?))
}

/// A Cmd 22 frame's JSON text.
pub fn ack_json(id: u64) -> String {
    format!(r#"{{"Cmd":22,"Body":"{id}"}}"#)
}

/// A message waiting for its Cmd 21.
#[derive(Debug)]
struct Pending {
    seq: u32,
    /// Unix ns of the first send (also in the body).
    ns: u64,
    /// The Cmd 20 frame's JSON text, to send again after a reconnect.
    text: String,
}

/// One user (one connection index) of the child.
#[derive(Debug, Default)]
struct User {
    /// Signed in on a connection that reads and acknowledges.
    live: bool,
    /// Unix ns when the current connection began to connect.
    epoch_ns: u64,
    /// Sent on the current connection, no Cmd 21 yet; oldest first.
    in_flight: VecDeque<Pending>,
    /// Sent on a connection that was closed before its Cmd 21: sent again
    /// after the next sign-in.
    resend: Vec<Pending>,
    /// Every id received (any connection).
    received: HashSet<u64>,
    /// Ids owed to this user (their Cmd 21 came) and not received yet.
    awaiting: HashSet<u64>,
    /// Ids owed to this user in all.
    owed: u64,
    /// Newest id received on the current connection and not acknowledged
    /// yet, how many such receipts, and since when (unix ns, 0 = none).
    ack_max: u64,
    ack_n: u32,
    ack_since: u64,
}

/// The soak engine of one child over its connections `[from, to)`.
pub struct Soak {
    plan: SoakPlan,
    from: u64,
    first_user: u64,
    users: Vec<User>,
    /// Frames to write: (local connection index, JSON text).
    pub outbox: Vec<(usize, String)>,
    /// Connections to close now (their bookkeeping is done).
    pub churn: Vec<(usize, CloseKind)>,
    pub stat: SoakStat,
    go_ns: u64,
    stop_ns: u64,
    sends_done: u64,
    closes_done: u64,
    seq: u32,
    rng: u64,
    /// Connections with receipts not acknowledged yet.
    ack_dirty: Vec<usize>,
    /// Ids owed and not received yet, over all users.
    outstanding: u64,
    /// Unix ns of the last receipt, answer or sign-in.
    pub last_event_ns: u64,
}

impl Soak {
    pub fn new(plan: SoakPlan, from: u64, to: u64, first_user: u64) -> Soak {
        let n = to.saturating_sub(from) as usize;
        let mut users = Vec::with_capacity(n);
        users.resize_with(n, User::default);
        Soak {
            plan,
            from,
            first_user,
            users,
            outbox: Vec::new(),
            churn: Vec::new(),
            stat: SoakStat::default(),
            go_ns: 0,
            stop_ns: 0,
            sends_done: 0,
            closes_done: 0,
            seq: 0,
            rng: 0x2545_F491_4F6C_DD1D ^ (from + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            ack_dirty: Vec::new(),
            outstanding: 0,
            last_event_ns: 0,
        }
    }

    pub fn plan(&self) -> &SoakPlan {
        &self.plan
    }

    fn global(&self, i: usize) -> u64 {
        self.from + i as u64
    }

    /// The local index of `i`'s partner, if in this child (always, when the
    /// parent split the pairs right).
    fn partner(&self, i: usize) -> Option<usize> {
        let p = self.global(i) ^ 1;
        p.checked_sub(self.from)
            .map(|x| x as usize)
            .filter(|x| *x < self.users.len())
    }

    fn random(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A random signed-in connection whose partner is in this child.
    fn pick_live(&mut self) -> Option<usize> {
        if self.users.len() < 2 {
            return None;
        }
        for _ in 0..PICK_TRIES {
            let i = (self.random() % self.users.len() as u64) as usize;
            if self.users[i].live && self.partner(i).is_some() {
                return Some(i);
            }
        }
        None
    }

    pub fn running(&self) -> bool {
        self.go_ns != 0 && self.stop_ns == 0
    }

    /// Start sending and closing.
    pub fn go(&mut self, now: u64) {
        if self.go_ns == 0 {
            self.go_ns = now;
            self.last_event_ns = now;
        }
    }

    /// Stop sending and closing (acknowledgements and resends go on).
    pub fn stop(&mut self, now: u64) {
        if self.go_ns != 0 && self.stop_ns == 0 {
            self.stop_ns = now;
        }
    }

    /// Connection `i` signed in on a connection that began to connect at
    /// `epoch_ns`: it takes part, and sends again what its closed
    /// connections left without a Cmd 21.
    pub fn signed_in(&mut self, i: usize, epoch_ns: u64, now: u64) {
        self.last_event_ns = now;
        let Some(u) = self.users.get_mut(i) else {
            return;
        };
        u.live = true;
        u.epoch_ns = epoch_ns;
        u.ack_max = 0;
        u.ack_n = 0;
        u.ack_since = 0;
        let mut resend = std::mem::take(&mut u.resend);
        resend.sort_by_key(|p| p.seq);
        for p in resend {
            self.outbox.push((i, p.text.clone()));
            u.in_flight.push_back(p);
            self.stat.resent += 1;
            self.stat.send_frames += 1;
        }
    }

    /// Connection `i` is closed (`graceful`: with a close frame, so it
    /// acknowledges what it received first). What waited for a Cmd 21 is
    /// sent again after the next sign-in.
    pub fn closed(&mut self, i: usize, graceful: bool) {
        let Some(u) = self.users.get_mut(i) else {
            return;
        };
        if !u.live {
            return;
        }
        u.live = false;
        u.resend.extend(u.in_flight.drain(..));
        if graceful && u.ack_n > 0 {
            self.outbox.push((i, ack_json(u.ack_max)));
            self.stat.acks_sent += 1;
        }
        u.ack_max = 0;
        u.ack_n = 0;
        u.ack_since = 0;
    }

    /// Sends and closes what is due at `now` and the acknowledgements that
    /// are due; returns the unix ns when something is due next.
    pub fn tick(&mut self, now: u64) -> Option<u64> {
        if self.go_ns == 0 {
            return None;
        }
        let mut next = u64::MAX;
        if self.running() {
            let since = now.saturating_sub(self.go_ns) as f64 / 1e9;
            if self.plan.rate > 0.0 {
                let due = (since * self.plan.rate) as u64;
                let mut k = 0;
                while self.sends_done < due && k < MAX_BURST {
                    self.sends_done += 1;
                    k += 1;
                    self.send_one(now);
                }
                next = next
                    .min(self.go_ns + ((self.sends_done + 1) as f64 * 1e9 / self.plan.rate) as u64);
            }
            if self.plan.churn_per_s > 0.0 {
                let due = (since * self.plan.churn_per_s) as u64;
                let mut k = 0;
                while self.closes_done < due && k < MAX_BURST {
                    let kind = CloseKind::nth(self.closes_done);
                    self.closes_done += 1;
                    k += 1;
                    if let Some(i) = self.pick_live() {
                        self.closed(i, kind == CloseKind::Frame);
                        self.churn.push((i, kind));
                        bump(&mut self.stat.churned, kind.name(), 1);
                    }
                }
                next = next.min(
                    self.go_ns
                        + ((self.closes_done + 1) as f64 * 1e9 / self.plan.churn_per_s) as u64,
                );
            }
        }
        let ack_ns = self.plan.ack_ms * 1_000_000;
        let mut dirty = std::mem::take(&mut self.ack_dirty);
        dirty.retain(|&i| {
            let u = &self.users[i];
            if u.ack_n == 0 || !u.live {
                return false;
            }
            if now.saturating_sub(u.ack_since) >= ack_ns {
                self.push_ack(i);
                return false;
            }
            next = next.min(u.ack_since + ack_ns);
            true
        });
        self.ack_dirty = dirty;
        (next != u64::MAX).then_some(next)
    }

    fn send_one(&mut self, now: u64) {
        let Some(i) = self.pick_live() else {
            self.stat.skipped += 1;
            return;
        };
        self.seq += 1;
        let (g, seq) = (self.global(i), self.seq);
        let text = send_json(
            0,
            self.first_user + (g ^ 1),
            &body(now, seq, self.plan.body_bytes),
            &cid(&self.plan.nonce, g, seq),
        );
        self.outbox.push((i, text.clone()));
        self.users[i]
            .in_flight
            .push_back(Pending { seq, ns: now, text });
        self.stat.send_frames += 1;
    }

    fn push_ack(&mut self, i: usize) {
        let u = &mut self.users[i];
        self.outbox.push((i, ack_json(u.ack_max)));
        self.stat.acks_sent += 1;
        u.ack_n = 0;
        u.ack_since = 0;
    }

    /// Cmd 21 for connection `i` (or a connection of its being closed):
    /// `cid` was stored as `id`.
    pub fn on_ack(&mut self, i: usize, cid: &str, id: u64, now: u64) {
        self.last_event_ns = now;
        let g = self.global(i);
        let seq = parse_cid(&self.plan.nonce, cid)
            .filter(|(from, _)| *from == g)
            .map(|(_, s)| s);
        let Some(u) = self.users.get_mut(i) else {
            return;
        };
        let p = seq.and_then(|s| {
            if let Some(at) = u.in_flight.iter().position(|p| p.seq == s) {
                u.in_flight.remove(at)
            } else {
                let at = u.resend.iter().position(|p| p.seq == s)?;
                Some(u.resend.swap_remove(at))
            }
        });
        let Some(p) = p else {
            self.stat.stray_acks += 1;
            return;
        };
        self.stat.ack_us.record(now.saturating_sub(p.ns) / 1000);
        if id == 0 {
            self.stat.no_id += 1;
            return;
        }
        self.stat.sent += 1;
        let Some(r) = self.partner(i) else {
            return;
        };
        let r = &mut self.users[r];
        r.owed += 1;
        if !r.received.contains(&id) && r.awaiting.insert(id) {
            self.outstanding += 1;
        }
    }

    /// Cmd 2 for connection `i`; `live`: on its current connection, where
    /// it refuses the oldest message in flight (Cmd 2 names none).
    pub fn on_fail(&mut self, i: usize, text: &str, live: bool, now: u64) {
        self.last_event_ns = now;
        let key: String = text.chars().take(40).collect();
        bump(&mut self.stat.failures, &key, 1);
        if let Some(u) = self.users.get_mut(i).filter(|_| live) {
            if u.in_flight.pop_front().is_some() {
                self.stat.refused += 1;
            }
        }
    }

    /// A Cmd 6 for user `i`, on its current connection (`live`) or on one
    /// being closed, which began to connect at `epoch_ns`.
    #[allow(clippy::too_many_arguments)]
    pub fn on_message(
        &mut self,
        i: usize,
        live: bool,
        epoch_ns: u64,
        from: u64,
        id: u64,
        body: &str,
        now: u64,
    ) {
        self.last_event_ns = now;
        let g = self.global(i);
        if from == self.first_user + g {
            self.stat.echoes += 1;
            return;
        }
        let parsed = parse_body(body);
        let Some((sent, _)) = parsed.filter(|_| from == self.first_user + (g ^ 1) && id > 0) else {
            self.stat.unexpected += 1;
            return;
        };
        let every = self.plan.ack_every;
        let Some(u) = self.users.get_mut(i) else {
            return;
        };
        let mut ack_now = false;
        if live && u.live {
            u.ack_max = u.ack_max.max(id);
            u.ack_n += 1;
            if u.ack_since == 0 {
                u.ack_since = now;
                self.ack_dirty.push(i);
            }
            ack_now = u.ack_n >= every;
        }
        if !u.received.insert(id) {
            self.stat.duplicates += 1;
        } else {
            if u.awaiting.remove(&id) {
                self.outstanding -= 1;
            }
            let us = now.saturating_sub(sent) / 1000;
            if sent < epoch_ns {
                self.stat.catchup += 1;
                self.stat.catchup_us.record(us);
            } else {
                self.stat.live += 1;
                self.stat.live_us.record(us);
            }
            if !live {
                self.stat.on_closing += 1;
            }
        }
        if ack_now {
            self.push_ack(i);
        }
    }

    /// Messages on signed-in connections still waiting for their Cmd 21.
    pub fn waiting(&self) -> usize {
        self.users
            .iter()
            .filter(|u| u.live)
            .map(|u| u.in_flight.len())
            .sum()
    }

    /// Every message has its Cmd 21 and every owed id was received.
    pub fn complete(&self) -> bool {
        self.outstanding == 0
            && self
                .users
                .iter()
                .all(|u| u.in_flight.is_empty() && u.resend.is_empty())
    }

    /// The final numbers; `online(i)` tells whether user `i` is signed in
    /// at the end.
    pub fn finish(mut self, online: impl Fn(usize) -> bool) -> SoakStat {
        let mut s = std::mem::take(&mut self.stat);
        s.offline_at_end = 0;
        let mut samples = Vec::new();
        for (i, u) in self.users.iter().enumerate() {
            s.unconfirmed += (u.in_flight.len() + u.resend.len()) as u64;
            let lost = u.awaiting.len() as u64;
            s.lost += lost;
            if !online(i) {
                s.offline_at_end += 1;
                s.lost_offline += lost;
            }
            let got = u.owed - lost;
            s.received += got;
            s.received_unconfirmed += (u.received.len() as u64).saturating_sub(got);
            if samples.len() < MAX_LOST_SAMPLES {
                let mut ids: Vec<u64> = u.awaiting.iter().copied().collect();
                ids.sort_unstable();
                let user = self.first_user + self.from + i as u64;
                samples.extend(
                    ids.into_iter()
                        .take(MAX_LOST_SAMPLES - samples.len())
                        .map(|id| (user, id)),
                );
            }
        }
        s.lost_samples = samples;
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> SoakPlan {
        SoakPlan {
            rate: 100.0,
            churn_per_s: 4.0,
            body_bytes: 40,
            nonce: "n1".into(),
            ack_ms: 50,
            ack_every: 3,
            settle_ms: 1000,
            drain_ms: 1000,
            quiet_ms: 100,
            reconnect_tries: 3,
            away_ms: 0,
        }
    }

    const S: u64 = 1_000_000_000;

    fn json(text: &str) -> serde_json::Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn cids_and_kinds() {
        assert_eq!(parse_cid("n1", &cid("n1", 7, 9)), Some((7, 9)));
        assert_eq!(parse_cid("n1", "n2-7-9"), None);
        assert_eq!(parse_cid("n1", "n1-7"), None);
        assert_eq!(json(&ack_json(42))["Body"], "42");
        let kinds: Vec<CloseKind> = (0..4).map(CloseKind::nth).collect();
        assert_eq!(
            kinds,
            [
                CloseKind::Frame,
                CloseKind::Rst,
                CloseKind::Frame,
                CloseKind::Fin
            ]
        );
    }

    /// Users 10 and 11 (connections 0 and 1 of child 0); only 10 is signed
    /// in while it sends, so every message waits for 11's catch-up.
    #[test]
    fn sends_resends_catch_up_and_acks() {
        let mut s = Soak::new(
            SoakPlan {
                churn_per_s: 0.0,
                ..plan()
            },
            0,
            2,
            10,
        );
        s.signed_in(0, S / 2, S / 2);
        assert_eq!(s.tick(S), None);
        s.go(S);
        // 100 msg/s: 5 due after 50 ms, the next one at 60 ms.
        assert_eq!(s.tick(S + 50_000_000), Some(S + 60_000_000));
        let sent: Vec<serde_json::Value> = std::mem::take(&mut s.outbox)
            .iter()
            .map(|(i, t)| {
                assert_eq!(*i, 0);
                json(t)
            })
            .collect();
        assert_eq!(sent.len(), 5);
        assert_eq!(
            (sent[0]["Cmd"].as_u64(), sent[0]["ToId"].as_u64()),
            (Some(20), Some(11))
        );
        let cids: Vec<&str> = sent.iter().map(|v| v["Cid"].as_str().unwrap()).collect();
        // Closed abruptly before any answer; the first answer still comes,
        // on the connection being closed.
        s.closed(0, false);
        assert!(s.outbox.is_empty());
        s.on_ack(0, cids[0], 101, S + 70_000_000);
        assert_eq!(s.stat.sent, 1);
        // Signed in again: the other four go out again, same Cid.
        s.signed_in(0, 2 * S, 2 * S);
        let again: Vec<String> = std::mem::take(&mut s.outbox)
            .into_iter()
            .map(|(_, t)| json(&t)["Cid"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(again, cids[1..]);
        assert_eq!((s.stat.resent, s.stat.send_frames), (4, 9));
        for (k, c) in cids[1..].iter().enumerate() {
            s.on_ack(0, c, 102 + k as u64, 2 * S + 1);
        }
        s.on_ack(0, cids[0], 101, 2 * S + 2);
        assert_eq!((s.stat.sent, s.stat.stray_acks), (5, 1));
        assert!(!s.complete());
        // The traffic stops (acknowledgements go on); 11 signs in at 3 s
        // and catch-up pushes all five.
        s.stop(3 * S);
        assert!(!s.running());
        s.signed_in(1, 3 * S, 3 * S);
        for (k, v) in sent.iter().enumerate() {
            let t = 3 * S + 10_000_000;
            s.on_message(
                1,
                true,
                3 * S,
                10,
                101 + k as u64,
                v["Body"].as_str().unwrap(),
                t,
            );
        }
        assert_eq!((s.stat.catchup, s.stat.live), (5, 0));
        assert_eq!(
            s.stat.catchup_us.max(),
            (2 * S + 10_000_000 - 50_000_000) / 1000
        );
        // ack_every 3: one Cmd 22 at once, the rest 50 ms later.
        let acks = |s: &mut Soak| -> Vec<(usize, String)> { std::mem::take(&mut s.outbox) };
        assert_eq!(acks(&mut s), vec![(1, ack_json(103))]);
        assert_eq!(s.tick(3 * S + 20_000_000), Some(3 * S + 60_000_000));
        assert!(s.outbox.is_empty());
        s.tick(3 * S + 60_000_000);
        assert_eq!(acks(&mut s), vec![(1, ack_json(105))]);
        assert_eq!(s.stat.acks_sent, 2);
        // A duplicate, an echo of 11's own message, a stranger.
        let b = sent[0]["Body"].as_str().unwrap();
        s.on_message(1, true, 3 * S, 10, 101, b, 3 * S + 70_000_000);
        s.on_message(1, true, 3 * S, 11, 106, b, 3 * S + 70_000_000);
        s.on_message(1, true, 3 * S, 99, 107, b, 3 * S + 70_000_000);
        assert_eq!(
            (s.stat.duplicates, s.stat.echoes, s.stat.unexpected),
            (1, 1, 1)
        );
        // Closed with a close frame: the pending acknowledgement goes first.
        s.closed(1, true);
        assert_eq!(acks(&mut s), vec![(1, ack_json(105))]);
        assert!(s.complete());
        assert_eq!(s.waiting(), 0);
        let st = s.finish(|_| true);
        assert_eq!(
            (st.sent, st.received, st.lost, st.unconfirmed),
            (5, 5, 0, 0)
        );
        assert_eq!(st.received_unconfirmed, 0);
    }

    #[test]
    fn churn_and_lost_messages() {
        let mut s = Soak::new(
            SoakPlan {
                rate: 0.0,
                ..plan()
            },
            4,
            8,
            10,
        );
        for i in 0..4 {
            s.signed_in(i, S / 2, S / 2);
        }
        s.go(S);
        // 4 closes per second: 2 due at 0.6 s, half with a close frame.
        s.tick(S + 600_000_000);
        assert_eq!(s.churn.len(), 2);
        assert_eq!(s.churn[0].1, CloseKind::Frame);
        assert_eq!(s.churn[1].1, CloseKind::Rst);
        assert_eq!(s.stat.churned.values().sum::<u64>(), 2);
        // Global 4 (local 0, user 14) sends to user 15 (local 1): stored as
        // id 7 while local 1 is away; it arrives by catch-up after local 1
        // signs in again. Id 8 never arrives.
        s.users[0].live = true;
        s.users[0].in_flight.push_back(Pending {
            seq: 1,
            ns: S,
            text: String::new(),
        });
        s.users[0].in_flight.push_back(Pending {
            seq: 2,
            ns: S,
            text: String::new(),
        });
        s.on_ack(0, &cid("n1", 4, 1), 7, S + 1);
        s.on_ack(0, &cid("n1", 4, 2), 8, S + 1);
        s.on_ack(0, &cid("n1", 5, 1), 9, S + 1);
        assert_eq!(s.stat.stray_acks, 1);
        s.on_message(1, true, 2 * S, 14, 7, &body(S, 1, 0), 2 * S + 5_000_000);
        assert_eq!(s.stat.catchup, 1);
        assert_eq!(s.stat.catchup_us.max(), 1_005_000);
        // Stored as 9 after local 1 began to connect: live.
        s.users[0].in_flight.push_back(Pending {
            seq: 3,
            ns: 2 * S + 1,
            text: String::new(),
        });
        s.on_ack(0, &cid("n1", 4, 3), 10, 2 * S + 2);
        s.on_message(1, true, 2 * S, 14, 10, &body(2 * S + 1, 3, 0), 2 * S + 3001);
        assert_eq!((s.stat.live, s.stat.live_us.max()), (1, 3));
        assert!(!s.complete());
        s.stop(3 * S);
        assert!(s.churn.len() == 2 && !s.running());
        let st = s.finish(|i| i != 1);
        assert_eq!((st.sent, st.received, st.lost), (3, 2, 1));
        assert_eq!(st.lost_offline, 1);
        assert_eq!(st.lost_samples, vec![(15, 8)]);
        assert_eq!(st.offline_at_end, 1);
    }
}
