//! Webhooks: events the node posts to the operator's backend
//! (`webhook.url`), each a JSON object with a unique `event_id` and its
//! `type`, signed with `Weim-Signature: sha256=<hex HMAC-SHA256 of the body
//! with webhook.secret>`.
//!
//! Producers (the committer, the registry or the presence thread, API
//! handlers) only queue: a bounded queue under a mutex, where a full queue
//! drops its oldest entry (counted), so a slow or dead backend never slows
//! message delivery. One thread (`weim-webhook`) drains it over a small
//! keep-alive connection pool: a 2xx answer is done; a 4xx other than 429
//! is dropped and counted; a 5xx, a 429, a timeout or no connection is
//! retried with exponential backoff and jitter, at most
//! `webhook.max_retries` times, with the same `event_id`. Retries waiting
//! for their time count against the queue's bound too.
//!
//! `message.offline` is found on this thread, not in the committer: the
//! committer queues each committed batch's messages with their recipients,
//! and the thread looks the recipients' presence up once per batch (in a
//! cluster one Redis round) and posts one event per message that has
//! offline recipients.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use serde_json::{json, Map, Value};

use crate::config::{self, WEBHOOK_EVENTS};
use crate::idcard::{hex, hmac_sha256};
use crate::message::now_millis;
use crate::node::Shared;
use crate::store::Message;

/// Idle keep-alive connections to the backend kept at most.
const POOL: usize = 2;
/// Delay before the first retry; doubled for each further one.
const RETRY_BASE: Duration = Duration::from_millis(500);
/// Longest delay between two attempts.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// An event type (`webhook.events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A stored message with recipients connected nowhere.
    MessageOffline,
    /// A user's first connection in the cluster signed in.
    UserOnline,
    /// A user's last connection in the cluster closed.
    UserOffline,
    /// A friend request was accepted.
    FriendAdded,
    /// A user joined a group.
    MemberJoined,
    /// A user left a group (left, kicked).
    MemberLeft,
}

impl Kind {
    /// The event's `type`, as in [`WEBHOOK_EVENTS`].
    pub fn name(self) -> &'static str {
        WEBHOOK_EVENTS[self as usize]
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// An event ready to post.
struct Event {
    body: Vec<u8>,
    /// Failed attempts so far.
    failures: u32,
}

/// A retry waiting for its time, earliest first in the heap.
struct Retry {
    due: Instant,
    seq: u64,
    event: Event,
}

impl PartialEq for Retry {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Retry {}
impl PartialOrd for Retry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Retry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

/// What the queue holds.
enum Item {
    Event(Event),
    /// A committed batch's messages and their recipients; the offline
    /// recipients are looked up when the thread takes it.
    Stored(Vec<(Message, Arc<[u64]>)>),
}

impl Item {
    /// Events this entry stands for (what dropping it loses, at most).
    fn weight(&self) -> u64 {
        match self {
            Item::Event(_) => 1,
            Item::Stored(m) => m.len() as u64,
        }
    }
}

#[derive(Default)]
struct Queue {
    fresh: VecDeque<Item>,
    retries: BinaryHeap<Reverse<Retry>>,
}

impl Queue {
    fn len(&self) -> usize {
        self.fresh.len() + self.retries.len()
    }
}

/// Webhook counters, rendered into `/metrics`.
#[derive(Default)]
pub struct Stats {
    /// Events the backend accepted (2xx).
    pub sent: AtomicU64,
    /// Attempts that failed and were scheduled again.
    pub retried: AtomicU64,
    /// Events the backend refused (4xx other than 429).
    pub rejected: AtomicU64,
    /// Events dropped after `webhook.max_retries` retries.
    pub exhausted: AtomicU64,
    /// Events dropped, oldest first, because the queue was full.
    pub overflowed: AtomicU64,
}

/// The webhook queue and its sender (one per node when `webhook.url` is set).
pub struct Webhook {
    url: String,
    secret: Vec<u8>,
    /// Bits of the wanted [`Kind`]s.
    wanted: u8,
    capacity: usize,
    max_retries: u32,
    timeout: Duration,
    /// Unique per process start: the first part of every `event_id`.
    id_prefix: String,
    seq: AtomicU64,
    queue: Mutex<Queue>,
    ready: Condvar,
    /// Counters.
    pub stats: Stats,
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // Without randomness the ids stay unique per start by their counter;
    // only the jitter and the prefix lose their spread.
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

impl Webhook {
    /// The webhook of this configuration; `None` when `webhook.url` is empty.
    pub fn new(c: &config::Webhook) -> Option<Arc<Webhook>> {
        if c.url.is_empty() {
            return None;
        }
        let wanted = WEBHOOK_EVENTS
            .iter()
            .enumerate()
            .filter(|(_, name)| c.events.is_empty() || c.events.iter().any(|e| e == *name))
            .fold(0u8, |bits, (i, _)| bits | 1 << i);
        Some(Arc::new(Webhook {
            url: c.url.clone(),
            secret: c.secret.as_bytes().to_vec(),
            wanted,
            capacity: c.queue,
            max_retries: c.max_retries,
            timeout: c.timeout,
            id_prefix: format!("{:016x}", random_u64()),
            seq: AtomicU64::new(0),
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            stats: Stats::default(),
        }))
    }

    /// Whether events of this type are posted.
    pub fn wants(&self, kind: Kind) -> bool {
        self.wanted & kind.bit() != 0
    }

    /// Queues an event of `kind` whose other fields are `data` (an object).
    pub fn emit(&self, kind: Kind, data: Value) {
        if self.wants(kind) {
            let event = self.event(kind, data);
            self.push(Item::Event(event));
        }
    }

    /// Queues a committed batch's messages (with all their recipients, the
    /// sender included) for `message.offline`.
    pub fn stored(&self, messages: Vec<(Message, Arc<[u64]>)>) {
        if !messages.is_empty() && self.wants(Kind::MessageOffline) {
            self.push(Item::Stored(messages));
        }
    }

    /// `user.online` / `user.offline` of one user.
    pub fn presence(&self, uid: u64, online: bool) {
        let kind = if online {
            Kind::UserOnline
        } else {
            Kind::UserOffline
        };
        self.emit(kind, json!({ "uid": uid }));
    }

    /// Whether `user.online` or `user.offline` is posted.
    pub fn wants_presence(&self) -> bool {
        self.wants(Kind::UserOnline) || self.wants(Kind::UserOffline)
    }

    fn event(&self, kind: Kind, data: Value) -> Event {
        let seq = self.seq.fetch_add(1, Relaxed);
        let mut obj = Map::new();
        obj.insert(
            "event_id".into(),
            Value::String(format!("{}-{seq}", self.id_prefix)),
        );
        obj.insert("type".into(), Value::String(kind.name().into()));
        obj.insert("time".into(), Value::from(now_millis()));
        if let Value::Object(fields) = data {
            obj.extend(fields);
        }
        Event {
            body: Value::Object(obj).to_string().into_bytes(),
            failures: 0,
        }
    }

    /// Queues an entry; a full queue drops its oldest (a fresh entry first,
    /// else the retry due first).
    fn push(&self, item: Item) {
        let mut q = self.queue.lock();
        while q.len() >= self.capacity {
            let lost = match q.fresh.pop_front() {
                Some(old) => old.weight(),
                None => q.retries.pop().map_or(0, |_| 1),
            };
            self.stats.overflowed.fetch_add(lost, Relaxed);
        }
        q.fresh.push_back(item);
        drop(q);
        self.ready.notify_one();
    }

    /// Entries waiting (retries included).
    pub fn depth(&self) -> usize {
        self.queue.lock().len()
    }

    /// The next entry: a retry whose time has come, else the oldest fresh
    /// entry; waits while there is none.
    fn next(&self) -> Item {
        let mut q = self.queue.lock();
        loop {
            let now = Instant::now();
            if q.retries.peek().is_some_and(|r| r.0.due <= now) {
                if let Some(Reverse(r)) = q.retries.pop() {
                    return Item::Event(r.event);
                }
            }
            if let Some(item) = q.fresh.pop_front() {
                return item;
            }
            let wait = q
                .retries
                .peek()
                .map_or(Duration::from_secs(60), |r| r.0.due - now);
            self.ready.wait_for(&mut q, wait);
        }
    }

    /// Runs the sender until the process ends.
    pub fn run(&self, shared: &Shared) {
        let client = match reqwest::blocking::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .pool_max_idle_per_host(POOL)
            .redirect(reqwest::redirect::Policy::none())
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                log::error!("webhook: no HTTP client: {e}; events are not posted");
                return;
            }
        };
        loop {
            match self.next() {
                Item::Event(event) => self.post(&client, event),
                Item::Stored(messages) => {
                    for event in self.offline_events(shared, messages) {
                        self.post(&client, event);
                    }
                }
            }
        }
    }

    /// One `message.offline` per message with recipients (other than its
    /// sender) connected nowhere: one presence lookup for the batch.
    fn offline_events(&self, shared: &Shared, messages: Vec<(Message, Arc<[u64]>)>) -> Vec<Event> {
        let mut uids: Vec<u64> = messages
            .iter()
            .flat_map(|(m, to)| to.iter().copied().filter(move |u| *u != m.from_id))
            .collect();
        uids.sort_unstable();
        uids.dedup();
        let online: HashSet<u64> = uids
            .iter()
            .zip(shared.delivery.online(&uids))
            .filter(|(_, on)| *on)
            .map(|(u, _)| *u)
            .collect();
        messages
            .into_iter()
            .filter_map(|(m, to)| {
                let offline: Vec<u64> = to
                    .iter()
                    .copied()
                    .filter(|u| *u != m.from_id && !online.contains(u))
                    .collect();
                (!offline.is_empty()).then(|| {
                    self.event(
                        Kind::MessageOffline,
                        json!({
                            "message": {
                                "Id": m.id,
                                "FromId": m.from_id,
                                "ToId": m.to_id,
                                "Ope": m.ope,
                                "Type": m.kind,
                                "Body": m.body,
                                "Time": m.created_at,
                            },
                            "uids": offline,
                        }),
                    )
                })
            })
            .collect()
    }

    /// Posts one event; schedules its retry or drops it.
    fn post(&self, client: &reqwest::blocking::Client, mut event: Event) {
        let signature = format!("sha256={}", hex(&hmac_sha256(&self.secret, &event.body)));
        let answer = client
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header("Weim-Signature", signature)
            .body(event.body.clone())
            .send();
        let retry = match answer {
            Ok(resp) => {
                let status = resp.status();
                // Read the answer so its connection can be used again.
                let _ = resp.bytes();
                if status.is_success() {
                    self.stats.sent.fetch_add(1, Relaxed);
                    return;
                }
                if status.as_u16() != 429 && !status.is_server_error() {
                    log::warn!("webhook: backend refused an event ({status}); dropped");
                    self.stats.rejected.fetch_add(1, Relaxed);
                    return;
                }
                format!("answered {status}")
            }
            Err(e) => e.to_string(),
        };
        event.failures += 1;
        if event.failures > self.max_retries {
            log::warn!(
                "webhook: event dropped after {} retries ({retry})",
                self.max_retries
            );
            self.stats.exhausted.fetch_add(1, Relaxed);
            return;
        }
        self.stats.retried.fetch_add(1, Relaxed);
        let due = Instant::now() + backoff(event.failures, random_u64());
        let seq = self.seq.fetch_add(1, Relaxed);
        let mut q = self.queue.lock();
        if q.len() >= self.capacity {
            // Fresh events are newer than this one: it is the oldest.
            self.stats.overflowed.fetch_add(1, Relaxed);
            return;
        }
        q.retries.push(Reverse(Retry { due, seq, event }));
    }

    /// Appends the Prometheus text of the counters.
    pub fn render(&self, out: &mut String) {
        let c = |v: &AtomicU64| v.load(Relaxed);
        let _ = writeln!(
            out,
            "# HELP weim_webhook_sent_total Webhook events the backend accepted (2xx).\n\
             # TYPE weim_webhook_sent_total counter\nweim_webhook_sent_total {}\n\
             # HELP weim_webhook_retries_total Webhook posts that failed (5xx, 429, timeout, no connection) and were scheduled again.\n\
             # TYPE weim_webhook_retries_total counter\nweim_webhook_retries_total {}\n\
             # HELP weim_webhook_dropped_total Webhook events dropped, by reason.\n\
             # TYPE weim_webhook_dropped_total counter\n\
             weim_webhook_dropped_total{{reason=\"rejected\"}} {}\n\
             weim_webhook_dropped_total{{reason=\"retries\"}} {}\n\
             weim_webhook_dropped_total{{reason=\"queue_full\"}} {}\n\
             # HELP weim_webhook_queue_depth Webhook events waiting to be posted (retries included).\n\
             # TYPE weim_webhook_queue_depth gauge\nweim_webhook_queue_depth {}",
            c(&self.stats.sent),
            c(&self.stats.retried),
            c(&self.stats.rejected),
            c(&self.stats.exhausted),
            c(&self.stats.overflowed),
            self.depth()
        );
    }
}

/// The delay before retry `n` (from 1): [`RETRY_BASE`] doubled for each
/// earlier retry, at most [`RETRY_MAX`], of which a random half is taken
/// off (`random` picks it).
fn backoff(n: u32, random: u64) -> Duration {
    let full = RETRY_BASE
        .saturating_mul(1 << n.saturating_sub(1).min(16))
        .min(RETRY_MAX);
    let half = full / 2;
    let millis = half.as_millis() as u64;
    half + Duration::from_millis(if millis == 0 { 0 } else { random % millis })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(queue: usize) -> Arc<Webhook> {
        Webhook::new(&config::Webhook {
            url: "http://127.0.0.1:9/".into(),
            secret: "s".into(),
            queue,
            ..config::Webhook::default()
        })
        .unwrap()
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        for n in 1..=20 {
            let full = (RETRY_BASE * (1 << (n - 1).min(16))).min(RETRY_MAX);
            for r in [0, 1, 12345, u64::MAX] {
                let d = backoff(n, r);
                assert!(d >= full / 2 && d <= full, "retry {n}: {d:?}");
            }
        }
        assert_eq!(backoff(1, 0), RETRY_BASE / 2);
    }

    #[test]
    fn a_full_queue_drops_the_oldest() {
        let w = hook(3);
        for uid in 1..=5 {
            w.presence(uid, true);
        }
        assert_eq!(w.depth(), 3);
        assert_eq!(w.stats.overflowed.load(Relaxed), 2);
        let Item::Event(e) = w.next() else {
            panic!("an event")
        };
        let v: Value = serde_json::from_slice(&e.body).unwrap();
        assert_eq!(
            (v["type"].as_str(), v["uid"].as_u64()),
            (Some("user.online"), Some(3))
        );
    }

    #[test]
    fn events_not_wanted_are_not_queued_and_ids_are_unique() {
        let w = Webhook::new(&config::Webhook {
            url: "http://127.0.0.1:9/".into(),
            secret: "s".into(),
            events: vec!["friend.added".into()],
            ..config::Webhook::default()
        })
        .unwrap();
        w.presence(1, true);
        assert_eq!(w.depth(), 0);
        assert!(!w.wants_presence());
        w.emit(Kind::FriendAdded, json!({"uids": [1, 2]}));
        w.emit(Kind::FriendAdded, json!({"uids": [1, 3]}));
        let ids: HashSet<String> = (0..2)
            .map(|_| match w.next() {
                Item::Event(e) => {
                    let v: Value = serde_json::from_slice(&e.body).unwrap();
                    v["event_id"].as_str().unwrap().to_string()
                }
                Item::Stored(_) => panic!("an event"),
            })
            .collect();
        assert_eq!(ids.len(), 2);
    }
}
