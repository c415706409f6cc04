//! The presence thread: keeps Redis's record of who is signed in on this
//! node.
//!
//! Reactors report a user's first sign-in and last close on this node as
//! [`Event`]s over a bounded channel and never wait: when it is full the
//! event is dropped and counted. This thread batches events into one
//! MULTI/EXEC pipeline per batch, and every [`REFRESH`] (and at once after
//! Redis comes back, and at start-up, which clears the records of this
//! node's previous life) re-asserts this node's online set from the
//! registry: missing records are added, stale ones removed. It also clears
//! the records of nodes that left the peer table (a command from the
//! membership thread, and a sweep of `weim:nodes` for nodes absent from two
//! sweeps in a row while the peer table is in sync with etcd).

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};

use super::{
    node_users_key, parse_uids, presence_key, Cluster, Link, RedisLink, Stats, NODES_KEY,
    PRESENCE_PREFIX,
};
use crate::node::Shared;

/// Capacity of the event channel from the reactors.
pub const QUEUE: usize = 65_536;
/// Capacity of the command channel.
pub const COMMANDS: usize = 64;
/// Events written per pipeline at most.
const BATCH: usize = 4096;
/// Redis is probed (and reconnected) this often.
const TICK: Duration = Duration::from_secs(1);
/// The online set is re-asserted this often.
const REFRESH: Duration = Duration::from_secs(5);
/// `weim:nodes` is swept for departed nodes this often.
const SWEEP: Duration = Duration::from_secs(10);

/// Clears one node's presence records atomically: KEYS[1] its user set,
/// KEYS[2] `weim:nodes`, ARGV[1] its id, ARGV[2] the presence key prefix.
const CLEAR_NODE: &str = r"
local users = redis.call('SMEMBERS', KEYS[1])
for _, u in ipairs(users) do redis.call('SREM', ARGV[2] .. u, ARGV[1]) end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return #users
";

/// A change of a user's presence on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The user's first connection here signed in.
    Online(u64),
    /// The user's last connection here closed.
    Offline(u64),
}

/// The reactors' side of the event channel: never blocks.
#[derive(Clone)]
pub struct Notifier {
    tx: Sender<Event>,
    stats: Arc<Stats>,
}

impl Notifier {
    /// Events go to `tx`; drops are counted in `stats`.
    pub fn new(tx: Sender<Event>, stats: Arc<Stats>) -> Notifier {
        Notifier { tx, stats }
    }

    /// Queues an event; a full (or closed) channel drops it and counts it.
    pub fn send(&self, event: Event) {
        if self.tx.try_send(event).is_err() {
            self.stats.presence_dropped.fetch_add(1, Relaxed);
        }
    }
}

/// Requests to the presence thread.
pub enum Command {
    /// This node departed: clear its records.
    PeerGone(String),
    /// Drain: clear this node's records, answer, stop.
    Leave(Sender<()>),
}

struct Presence<'a> {
    cluster: &'a Cluster,
    shared: &'a Shared,
    con: Option<redis::Connection>,
    /// The online set must be re-asserted (start, lost events, reconnect).
    dirty: bool,
    last_refresh: Instant,
    last_sweep: Instant,
    /// Nodes absent from the peer table at the last sweep.
    suspects: HashSet<String>,
    /// Departed nodes whose records could not be cleared yet.
    gone: Vec<String>,
}

/// Runs the presence thread until `Leave` (or until its channels close).
pub fn run(
    cluster: &Cluster,
    shared: &Shared,
    events: &Receiver<Event>,
    commands: &Receiver<Command>,
) {
    // A (re)start (`supervise` runs this again after a panic): nothing is
    // known of Redis yet; the first tick connects and re-asserts the
    // online set, and catches connections up if they had missed anything.
    cluster.stats.redis_up.store(0, Relaxed);
    cluster.set_link(Link::Presence, false, &shared.delivery);
    let mut p = Presence {
        cluster,
        shared,
        con: None,
        dirty: true,
        last_refresh: Instant::now(),
        last_sweep: Instant::now(),
        suspects: HashSet::new(),
        gone: Vec::new(),
    };
    let mut batch = Vec::with_capacity(BATCH);
    let mut next_tick = Instant::now();
    loop {
        let wait = next_tick.saturating_duration_since(Instant::now());
        select! {
            recv(events) -> ev => match ev {
                Ok(ev) => {
                    batch.push(ev);
                    while batch.len() < BATCH {
                        match events.try_recv() {
                            Ok(ev) => batch.push(ev),
                            Err(_) => break,
                        }
                    }
                }
                Err(_) => return,
            },
            recv(commands) -> cmd => match cmd {
                Ok(Command::PeerGone(id)) => p.gone.push(id),
                Ok(Command::Leave(ack)) => {
                    while let Ok(ev) = events.try_recv() {
                        batch.push(ev);
                    }
                    p.write(&mut batch);
                    let me = p.cluster.me.id.clone();
                    if p.clear_node(&me) {
                        log::info!("cluster: presence of this node cleared");
                    }
                    let _ = ack.send(());
                    return;
                }
                Err(_) => return,
            },
            default(wait) => {}
        }
        p.write(&mut batch);
        if Instant::now() >= next_tick {
            next_tick = Instant::now() + TICK;
            p.tick();
        }
        if p.con.is_some() && !p.gone.is_empty() {
            let gone = std::mem::take(&mut p.gone);
            for id in gone {
                // Cleared unless it came back meanwhile; kept when Redis failed.
                let departed = id != p.cluster.me.id && !p.cluster.peers.contains(&id);
                if departed && !p.clear_node(&id) {
                    p.gone.push(id);
                }
            }
        }
    }
}

impl Presence<'_> {
    fn me(&self) -> &str {
        &self.cluster.me.id
    }

    /// Reconnects or pings, then refreshes and sweeps when due.
    fn tick(&mut self) {
        let stats = &self.cluster.stats;
        let alive = match self.con.as_mut() {
            Some(con) => redis::cmd("PING").query::<String>(con).is_ok(),
            None => false,
        };
        if !alive {
            let was_up = stats.redis_up.load(Relaxed) == 1;
            self.con = RedisLink::connect(&self.cluster.redis.client).ok();
            if self.con.is_none() {
                if was_up {
                    log::warn!("cluster: presence lost Redis; retrying every {TICK:?}");
                }
                stats.redis_up.store(0, Relaxed);
                self.cluster
                    .set_link(Link::Presence, false, &self.shared.delivery);
                return;
            }
            self.dirty = true;
        }
        stats.redis_up.store(1, Relaxed);
        self.cluster.redis.resume();
        if self.dirty || self.last_refresh.elapsed() >= REFRESH {
            self.refresh();
        }
        if self.last_sweep.elapsed() >= SWEEP {
            self.last_sweep = Instant::now();
            self.sweep();
        }
    }

    /// Runs a Redis call on the thread's connection; a failure drops the
    /// connection and marks the online set for re-assertion.
    fn redis<T>(
        &mut self,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Option<T> {
        let con = self.con.as_mut()?;
        match f(con) {
            Ok(v) => Some(v),
            Err(e) => {
                log::warn!("cluster: presence: redis: {e}");
                self.con = None;
                self.dirty = true;
                self.cluster.stats.redis_up.store(0, Relaxed);
                self.cluster
                    .set_link(Link::Presence, false, &self.shared.delivery);
                None
            }
        }
    }

    /// Writes a batch of events in one MULTI/EXEC pipeline; without Redis
    /// the batch is dropped and the next refresh repairs the records.
    fn write(&mut self, batch: &mut Vec<Event>) {
        if batch.is_empty() {
            return;
        }
        if self.con.is_none() {
            batch.clear();
            self.dirty = true;
            return;
        }
        let me = self.me().to_string();
        let users = node_users_key(&me);
        // With user webhooks, each change also reads how many nodes the
        // user is on after it (in the same transaction): 1 after an
        // online is their first connection in the cluster, 0 after an
        // offline their last.
        let webhook = self.shared.webhook.clone().filter(|w| w.wants_presence());
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("SADD").arg(NODES_KEY).arg(&me).ignore();
        for &ev in batch.iter() {
            let (op, uid) = match ev {
                Event::Online(uid) => ("SADD", uid),
                Event::Offline(uid) => ("SREM", uid),
            };
            pipe.cmd(op).arg(presence_key(uid)).arg(&me).ignore();
            pipe.cmd(op).arg(&users).arg(uid).ignore();
            if webhook.is_some() {
                pipe.cmd("SCARD").arg(presence_key(uid));
            }
        }
        if let Some(nodes) = self.redis(|con| pipe.query::<Vec<i64>>(con)) {
            self.cluster.stats.presence_writes.fetch_add(1, Relaxed);
            if let Some(w) = webhook {
                for (ev, n) in batch.iter().zip(nodes) {
                    match (*ev, n) {
                        (Event::Online(uid), 1) => w.presence(uid, true),
                        (Event::Offline(uid), 0) => w.presence(uid, false),
                        _ => {}
                    }
                }
            }
        }
        batch.clear();
    }

    /// Makes Redis's record of this node equal to the registry: adds every
    /// local user (idempotent) and removes users no longer here.
    fn refresh(&mut self) {
        let me = self.me().to_string();
        let users_key = node_users_key(&me);
        let Some(recorded) = self.redis(|con| {
            redis::cmd("SMEMBERS")
                .arg(&users_key)
                .query::<Vec<String>>(con)
        }) else {
            return;
        };
        let recorded = parse_uids(recorded);
        // Read after the records: a user recorded but not here has left (or
        // their close event follows); one who signs in from now on is not
        // in `recorded`, so nothing here removes them.
        let local: HashSet<u64> = self
            .shared
            .delivery
            .registry
            .user_ids()
            .into_iter()
            .collect();
        let repaired = (recorded.symmetric_difference(&local).count()) as u64;
        let ops: Vec<(&str, u64)> = recorded
            .difference(&local)
            .map(|&uid| ("SREM", uid))
            .chain(local.iter().map(|&uid| ("SADD", uid)))
            .collect();
        for chunk in ops.chunks(super::PIPELINE_CHUNK) {
            let mut pipe = redis::pipe();
            pipe.atomic().cmd("SADD").arg(NODES_KEY).arg(&me).ignore();
            for &(op, uid) in chunk {
                pipe.cmd(op).arg(presence_key(uid)).arg(&me).ignore();
                pipe.cmd(op).arg(&users_key).arg(uid).ignore();
            }
            if self.redis(|con| pipe.query::<()>(con)).is_none() {
                return;
            }
        }
        if repaired > 0 && !self.dirty {
            log::info!("cluster: presence refresh repaired {repaired} records");
        }
        self.cluster
            .stats
            .presence_repairs
            .fetch_add(repaired, Relaxed);
        self.dirty = false;
        self.last_refresh = Instant::now();
        self.cluster
            .set_link(Link::Presence, true, &self.shared.delivery);
    }

    /// Clears the records of nodes in `weim:nodes` that were absent from
    /// the peer table at this sweep and the previous one (only while the
    /// peer table is in sync with etcd).
    fn sweep(&mut self) {
        if !self.cluster.peers.synced.load(Relaxed) {
            self.suspects.clear();
            return;
        }
        let Some(nodes) = self.redis(|con| {
            redis::cmd("SMEMBERS")
                .arg(NODES_KEY)
                .query::<Vec<String>>(con)
        }) else {
            return;
        };
        let absent: HashSet<String> = nodes
            .into_iter()
            .filter(|n| n != self.me() && !self.cluster.peers.contains(n))
            .collect();
        let previous = std::mem::replace(&mut self.suspects, absent);
        let confirmed: Vec<String> = self.suspects.intersection(&previous).cloned().collect();
        for id in confirmed {
            self.clear_node(&id);
        }
    }

    /// Removes every presence record of `node`; `false` if Redis failed.
    fn clear_node(&mut self, node: &str) -> bool {
        let cleared = self.redis(|con| {
            redis::cmd("EVAL")
                .arg(CLEAR_NODE)
                .arg(2)
                .arg(node_users_key(node))
                .arg(NODES_KEY)
                .arg(node)
                .arg(PRESENCE_PREFIX)
                .query::<i64>(con)
        });
        match cleared {
            Some(n) => {
                if node != self.me() {
                    log::info!("cluster: cleared {n} presence records of departed node {node}");
                    self.cluster.stats.peer_cleanups.fetch_add(1, Relaxed);
                }
                true
            }
            None => false,
        }
    }
}
