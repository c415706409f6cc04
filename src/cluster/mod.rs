//! Cluster mode: several weim nodes behind one load balancer, sharing one
//! MySQL store. etcd says which nodes are alive (membership), Redis says
//! on which nodes each signed-in user is connected (presence) and carries
//! pushes between nodes (the bus).
//!
//! Threads, cluster mode only (none of them is a reactor, and no reactor
//! ever calls Redis or etcd):
//! - `weim-membership` ([`membership`]): an etcd client on a single-thread
//!   tokio runtime; the node's lease and registration, the watch of
//!   `weim/nodes/` and the peer table.
//! - `weim-presence` ([`presence`]): turns the reactors' sign-in / last-close
//!   events (a bounded channel) into Redis pipelines, re-asserts this node's
//!   online set every few seconds, clears the records of departed nodes.
//! - `weim-bus` ([`bus`]): the subscription to this node's channel and the
//!   broadcast channel; hands frames to local delivery.
//!
//! While this node's bus or presence has lost Redis, deliveries from other
//! nodes may be missed, so reactors stop moving delivery cursors (a later
//! local message would otherwise move a user's cursor past a missed one);
//! once both are back every signed-in connection catches up again from
//! its stored cursor (messages written meanwhile may arrive twice; each
//! carries its `Id`).
//!
//! Workers route deliveries ([`Cluster::route`]): one pipelined presence
//! lookup for all recipients, then one PUBLISH per target node that is in
//! the live peer table, over a small pool of Redis connections (the
//! committer routes each committed batch in one such round). After a Redis
//! failure the pool is not used until the presence thread, which probes
//! Redis every second, reaches it again: an outage costs the delivering
//! threads one failed call, not one per message.
//!
//! Redis layout (every key and channel starts with `weim:`):
//! - `weim:presence:<uid>`: set of node ids where the user is signed in;
//! - `weim:node:<node_id>:users`: set of user ids signed in on that node
//!   (to clear a node's records in one step);
//! - `weim:nodes`: set of node ids that have presence records;
//! - channel `weim:bus:node:<node_id>`: pushes for users on that node;
//! - channel `weim:bus:broadcast`: `sendToAll`, closing a user's
//!   WebSockets (logout, `Delivery::kick`) and revoked sessions.
//!
//! etcd: `weim/nodes/<node_id>` = `{"id", "addr", "started"}` under the
//! node's lease.

pub mod bus;
pub mod membership;
pub mod presence;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::delivery::Delivery;
use crate::node::Shared;
use crate::supervise::{self, Role};

/// etcd prefix of node registrations.
pub const NODES_PREFIX: &str = "weim/nodes/";
/// Prefix of the Redis set of a user's nodes.
const PRESENCE_PREFIX: &str = "weim:presence:";
/// Redis set of node ids that have presence records.
const NODES_KEY: &str = "weim:nodes";
/// Redis channel of `sendToAll`.
const BROADCAST_CHANNEL: &str = "weim:bus:broadcast";
/// How long a Redis command may take before the caller gives up.
const REDIS_IO_TIMEOUT: Duration = Duration::from_secs(1);
/// How long opening a Redis connection may take.
const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// After a Redis failure, workers and the committer leave Redis alone until
/// the presence thread (which probes it every second) reaches it again, or
/// at the latest for this long.
const REDIS_RETRY: Duration = Duration::from_secs(5);
/// Recipients looked up (or published) per Redis pipeline.
const PIPELINE_CHUNK: usize = 1000;

/// The Redis set of nodes where `uid` is signed in.
fn presence_key(uid: u64) -> String {
    format!("{PRESENCE_PREFIX}{uid}")
}

/// The Redis set of users signed in on `node`.
fn node_users_key(node: &str) -> String {
    format!("weim:node:{node}:users")
}

/// The Redis channel of `node`.
fn node_channel(node: &str) -> String {
    format!("weim:bus:node:{node}")
}

/// A node as registered in etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// `cluster.node_id`.
    pub id: String,
    /// `cluster.advertise`: where operators and load balancers reach it.
    pub addr: String,
    /// Start time, unix seconds.
    pub started: i64,
}

/// The live nodes as etcd last told them (this node included), kept when
/// etcd is unreachable.
#[derive(Default)]
pub struct Peers {
    map: RwLock<BTreeMap<String, Peer>>,
    /// The table reflects a successful list and a running watch.
    synced: AtomicBool,
}

impl Peers {
    /// Every live node, by id.
    pub fn list(&self) -> Vec<Peer> {
        self.map.read().values().cloned().collect()
    }

    /// Whether `id` is a live node.
    pub fn contains(&self, id: &str) -> bool {
        self.map.read().contains_key(id)
    }

    /// Number of live nodes.
    pub fn len(&self) -> usize {
        self.map.read().len()
    }

    /// Whether the table is empty (etcd never answered).
    pub fn is_empty(&self) -> bool {
        self.map.read().is_empty()
    }

    /// Whether any node other than `me` is live.
    fn has_others(&self, me: &str) -> bool {
        self.map.read().keys().any(|k| k != me)
    }

    /// Replaces the table; returns the ids that are gone.
    fn replace(&self, table: BTreeMap<String, Peer>) -> Vec<String> {
        let mut map = self.map.write();
        let gone = map
            .keys()
            .filter(|k| !table.contains_key(*k))
            .cloned()
            .collect();
        *map = table;
        gone
    }

    fn insert(&self, peer: Peer) {
        self.map.write().insert(peer.id.clone(), peer);
    }

    fn remove(&self, id: &str) -> bool {
        self.map.write().remove(id).is_some()
    }
}

/// Cluster counters and states, rendered into `/metrics`.
#[derive(Default)]
pub struct Stats {
    /// Live nodes in the peer table.
    pub peers: AtomicI64,
    /// 1 while the etcd session (lease, list, watch) runs.
    pub etcd_up: AtomicI64,
    /// 1 while the presence thread reaches Redis.
    pub redis_up: AtomicI64,
    /// 1 while the bus is subscribed.
    pub bus_up: AtomicI64,
    /// 1 while deliveries from other nodes may be missed (cursors held).
    pub degraded: AtomicI64,
    /// Times every connection was caught up again after that.
    pub resyncs: AtomicU64,
    /// Registrations in etcd (1 + re-registrations).
    pub registrations: AtomicU64,
    /// PUBLISHes on node channels.
    pub publishes: AtomicU64,
    /// PUBLISHes no subscriber heard (the target's bus was down).
    pub unheard: AtomicU64,
    /// PUBLISHes on the broadcast channel.
    pub broadcasts: AtomicU64,
    /// Deliveries not routed because Redis failed (left pending).
    pub route_failures: AtomicU64,
    /// Recipients on a node absent from the peer table (left pending).
    pub dead_node_recipients: AtomicU64,
    /// Messages received on the bus.
    pub bus_messages: AtomicU64,
    /// Bus messages that could not be decoded.
    pub bus_malformed: AtomicU64,
    /// Bus (re)subscriptions.
    pub bus_subscriptions: AtomicU64,
    /// Presence events dropped because the channel was full (the periodic
    /// refresh repairs them).
    pub presence_dropped: AtomicU64,
    /// Presence pipelines written.
    pub presence_writes: AtomicU64,
    /// Presence records the periodic refresh had to add or remove.
    pub presence_repairs: AtomicU64,
    /// Presence record sets of departed nodes cleared.
    pub peer_cleanups: AtomicU64,
}

impl Stats {
    /// Appends the Prometheus text of these counters.
    pub fn render(&self, out: &mut String) {
        let g = |v: &AtomicI64| i128::from(v.load(Relaxed));
        let c = |v: &AtomicU64| i128::from(v.load(Relaxed));
        let rows: [(&str, &str, &str, i128); 19] = [
            (
                "weim_cluster_peers",
                "gauge",
                "Live nodes in the peer table (this one included).",
                g(&self.peers),
            ),
            (
                "weim_etcd_up",
                "gauge",
                "1 while the etcd session (lease, list, watch) runs.",
                g(&self.etcd_up),
            ),
            (
                "weim_redis_up",
                "gauge",
                "1 while Redis answers.",
                g(&self.redis_up),
            ),
            (
                "weim_bus_up",
                "gauge",
                "1 while the bus subscription is active.",
                g(&self.bus_up),
            ),
            (
                "weim_cluster_degraded",
                "gauge",
                "1 while deliveries from other nodes may be missed (delivery cursors held).",
                g(&self.degraded),
            ),
            (
                "weim_cluster_resyncs_total",
                "counter",
                "Times every signed-in connection caught up again after a Redis outage.",
                c(&self.resyncs),
            ),
            (
                "weim_cluster_registrations_total",
                "counter",
                "Registrations of this node in etcd (first and after a lost lease).",
                c(&self.registrations),
            ),
            (
                "weim_cluster_publishes_total",
                "counter",
                "PUBLISHes on node channels (one per target node and delivery).",
                c(&self.publishes),
            ),
            (
                "weim_cluster_publishes_unheard_total",
                "counter",
                "PUBLISHes that reached no subscriber.",
                c(&self.unheard),
            ),
            (
                "weim_cluster_broadcasts_total",
                "counter",
                "PUBLISHes on the broadcast channel.",
                c(&self.broadcasts),
            ),
            (
                "weim_cluster_route_failures_total",
                "counter",
                "Deliveries not routed to other nodes because Redis failed (left pending).",
                c(&self.route_failures),
            ),
            (
                "weim_cluster_dead_node_recipients_total",
                "counter",
                "Recipients whose node is not in the peer table (left pending).",
                c(&self.dead_node_recipients),
            ),
            (
                "weim_cluster_bus_messages_total",
                "counter",
                "Messages received on the bus.",
                c(&self.bus_messages),
            ),
            (
                "weim_cluster_bus_malformed_total",
                "counter",
                "Bus messages that could not be decoded.",
                c(&self.bus_malformed),
            ),
            (
                "weim_cluster_bus_subscriptions_total",
                "counter",
                "Bus subscriptions (first and after reconnecting).",
                c(&self.bus_subscriptions),
            ),
            (
                "weim_presence_events_dropped_total",
                "counter",
                "Presence events dropped on a full channel (repaired by the refresh).",
                c(&self.presence_dropped),
            ),
            (
                "weim_presence_writes_total",
                "counter",
                "Presence pipelines written to Redis.",
                c(&self.presence_writes),
            ),
            (
                "weim_presence_repairs_total",
                "counter",
                "Presence records the periodic refresh added or removed.",
                c(&self.presence_repairs),
            ),
            (
                "weim_cluster_peer_cleanups_total",
                "counter",
                "Presence records of departed nodes cleared.",
                c(&self.peer_cleanups),
            ),
        ];
        for (name, kind, help, value) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
    }
}

/// Redis connections for workers: a small pool, and a pause after a
/// failure so that an outage costs one failed attempt per second.
struct RedisLink {
    client: redis::Client,
    idle: Mutex<Vec<redis::Connection>>,
    max_idle: usize,
    /// No attempt before this instant (after a failure).
    paused_until: Mutex<Option<Instant>>,
}

impl RedisLink {
    fn connect(client: &redis::Client) -> redis::RedisResult<redis::Connection> {
        let con = client.get_connection_with_timeout(REDIS_CONNECT_TIMEOUT)?;
        con.set_read_timeout(Some(REDIS_IO_TIMEOUT))?;
        con.set_write_timeout(Some(REDIS_IO_TIMEOUT))?;
        Ok(con)
    }

    /// Runs `f` on a pooled connection; `None` when Redis failed or is
    /// paused after a recent failure.
    fn with<T>(
        &self,
        stats: &Stats,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Option<T> {
        if self.paused_until.lock().is_some_and(|t| Instant::now() < t) {
            return None;
        }
        let pooled = self.idle.lock().pop();
        let mut con = match pooled.map_or_else(|| Self::connect(&self.client), Ok) {
            Ok(c) => c,
            Err(e) => {
                self.failed(stats, &e);
                return None;
            }
        };
        match f(&mut con) {
            Ok(v) => {
                let mut idle = self.idle.lock();
                if idle.len() < self.max_idle {
                    idle.push(con);
                }
                Some(v)
            }
            Err(e) => {
                self.failed(stats, &e);
                None
            }
        }
    }

    fn failed(&self, stats: &Stats, e: &redis::RedisError) {
        let mut paused = self.paused_until.lock();
        if paused.is_none() {
            log::warn!("redis: {e}; cross-node deliveries stay pending until it answers");
        }
        *paused = Some(Instant::now() + REDIS_RETRY);
        self.idle.lock().clear();
        stats.redis_up.store(0, Relaxed);
    }

    /// The presence thread reached Redis again: workers may try at once.
    fn resume(&self) {
        let mut paused = self.paused_until.lock();
        if paused.take().is_some() {
            log::info!("redis: reachable again");
        }
    }
}

/// A message (or notice) for users who may be connected to other nodes.
#[derive(Debug, Clone, Copy)]
pub struct Outbound<'a> {
    /// Recipients.
    pub uids: &'a [u64],
    /// The encoded WebSocket frame.
    pub frame: &'a [u8],
    /// The stored message id; 0 for a notice.
    pub id: u64,
}

/// A link to Redis whose loss may make this node miss deliveries.
#[derive(Debug, Clone, Copy)]
pub enum Link {
    /// The bus subscription.
    Bus,
    /// The presence thread's connection (and the online set re-asserted).
    Presence,
}

/// Whether both links are up, and whether deliveries may have been missed.
struct Health {
    bus: bool,
    presence: bool,
    degraded: bool,
}

/// Channels into the cluster threads, taken by [`Cluster::start`].
struct Parts {
    events: crossbeam_channel::Receiver<presence::Event>,
}

/// Channels to stop the cluster threads on drain.
struct Control {
    presence: crossbeam_channel::Sender<presence::Command>,
    membership: tokio::sync::mpsc::Sender<membership::Command>,
}

/// This node's part of the cluster: identity, peer table, counters, the
/// workers' Redis link and the cluster threads.
pub struct Cluster {
    /// This node as registered.
    pub me: Peer,
    /// The live nodes.
    pub peers: Peers,
    /// Counters.
    pub stats: Arc<Stats>,
    etcd: Vec<String>,
    lease_ttl: Duration,
    redis: RedisLink,
    /// Set on drain: the bus leaves its loop.
    stopping: AtomicBool,
    health: Mutex<Health>,
    /// Reactors must not move delivery cursors.
    held: AtomicBool,
    /// Reactors that have not yet queued their catching up.
    resyncing: AtomicUsize,
    parts: Mutex<Option<Parts>>,
    control: Mutex<Option<Control>>,
    notifier: presence::Notifier,
}

/// `cluster.node_id`, or the id generated once and kept in
/// `<data_dir>/node_id`.
fn node_id(configured: &str, data_dir: &Path) -> Result<String, String> {
    if !configured.is_empty() {
        return Ok(configured.to_string());
    }
    let path = data_dir.join("node_id");
    if let Ok(s) = std::fs::read_to_string(&path) {
        let s = s.trim();
        if !s.is_empty() && crate::config::valid_node_id(s) {
            return Ok(s.to_string());
        }
    }
    let mut raw = [0u8; 6];
    getrandom::fill(&mut raw).map_err(|e| format!("random node id: {e}"))?;
    let id: String = std::iter::once("n-".to_string())
        .chain(raw.iter().map(|b| format!("{b:02x}")))
        .collect();
    std::fs::create_dir_all(data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    std::fs::write(&path, format!("{id}\n")).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(id)
}

/// `cluster.advertise`, or the listening address (the host name when it
/// listens on every interface).
fn advertise(configured: &str, addr: SocketAddr) -> String {
    if !configured.is_empty() {
        return configured.to_string();
    }
    if !addr.ip().is_unspecified() {
        return addr.to_string();
    }
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(host) if rc == 0 && !host.is_empty() => format!("{host}:{}", addr.port()),
        _ => addr.to_string(),
    }
}

impl Cluster {
    /// This node's cluster state, before the threads start. `addr` is the
    /// bound listening address.
    pub fn new(config: &Config, addr: SocketAddr, workers: usize) -> Result<Arc<Cluster>, String> {
        let c = &config.cluster;
        let id = node_id(&c.node_id, &config.node.data_dir)?;
        let client =
            redis::Client::open(c.redis.as_str()).map_err(|e| format!("cluster.redis: {e}"))?;
        let stats = Arc::new(Stats::default());
        let (tx, events) = crossbeam_channel::bounded(presence::QUEUE);
        Ok(Arc::new(Cluster {
            me: Peer {
                id,
                addr: advertise(&c.advertise, addr),
                started: crate::auth::now_secs(),
            },
            peers: Peers::default(),
            notifier: presence::Notifier::new(tx, stats.clone()),
            stats,
            etcd: c.etcd.clone(),
            lease_ttl: c.lease_ttl,
            redis: RedisLink {
                client,
                idle: Mutex::new(Vec::new()),
                max_idle: workers.max(1),
                paused_until: Mutex::new(None),
            },
            stopping: AtomicBool::new(false),
            health: Mutex::new(Health {
                bus: false,
                presence: false,
                degraded: true,
            }),
            held: AtomicBool::new(true),
            resyncing: AtomicUsize::new(0),
            parts: Mutex::new(Some(Parts { events })),
            control: Mutex::new(None),
        }))
    }

    /// Where the registry sends presence events.
    pub fn notifier(&self) -> presence::Notifier {
        self.notifier.clone()
    }

    /// Starts the membership, presence and bus threads.
    pub fn start(self: &Arc<Self>, shared: &Arc<Shared>) -> Result<(), String> {
        let Some(parts) = self.parts.lock().take() else {
            return Err("cluster already started".to_string());
        };
        let (presence_tx, presence_rx) = crossbeam_channel::bounded(presence::COMMANDS);
        let (membership_tx, mut membership_rx) = tokio::sync::mpsc::channel(4);
        // The threads end on drain; the process exits without joining them.
        // Each runs again after a panic (`supervise`): it starts by marking
        // its link down, so a restart recovers as from a lost connection.
        let spawn = |role: Role, name: &str, body: Box<dyn FnMut() + Send>| {
            supervise::restarting(shared, role, name.to_string(), body)
                .map(drop)
                .map_err(|e| format!("{name}: {e}"))
        };
        let (c, s) = (self.clone(), shared.clone());
        spawn(
            Role::Presence,
            "weim-presence",
            Box::new(move || presence::run(&c, &s, &parts.events, &presence_rx)),
        )?;
        let (c, gone) = (self.clone(), presence_tx.clone());
        spawn(
            Role::Membership,
            "weim-membership",
            Box::new(move || membership::run(c.clone(), &mut membership_rx, gone.clone())),
        )?;
        let (c, s) = (self.clone(), shared.clone());
        spawn(Role::Bus, "weim-bus", Box::new(move || bus::run(&c, &s)))?;
        *self.control.lock() = Some(Control {
            presence: presence_tx,
            membership: membership_tx,
        });
        log::info!(
            "cluster: node {} ({}), etcd {:?}, lease {:?}",
            self.me.id,
            self.me.addr,
            self.etcd,
            self.lease_ttl
        );
        Ok(())
    }

    /// Leaves the cluster on drain: clears this node's presence, revokes the
    /// lease and stops the threads, waiting at most `limit` for the first two.
    pub fn leave(&self, limit: Duration) {
        let Some(control) = self.control.lock().take() else {
            return;
        };
        let deadline = Instant::now() + limit;
        let (ack_tx, ack_rx) = crossbeam_channel::bounded(2);
        let mut waiting = 0;
        if control
            .presence
            .send_deadline(presence::Command::Leave(ack_tx.clone()), deadline)
            .is_ok()
        {
            waiting += 1;
        }
        if control
            .membership
            .try_send(membership::Command::Leave(ack_tx))
            .is_ok()
        {
            waiting += 1;
        }
        for _ in 0..waiting {
            if ack_rx.recv_deadline(deadline).is_err() {
                log::warn!("cluster: leaving took longer than {limit:?}");
                break;
            }
        }
        self.stopping.store(true, Relaxed);
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Relaxed)
    }

    /// Records the state of a Redis link. Losing one holds delivery
    /// cursors; getting both back catches every connection up again.
    pub fn set_link(&self, link: Link, up: bool, delivery: &Delivery) {
        let mut h = self.health.lock();
        match link {
            Link::Bus => h.bus = up,
            Link::Presence => h.presence = up,
        }
        let healthy = h.bus && h.presence;
        if !healthy && !h.degraded {
            h.degraded = true;
            self.held.store(true, Relaxed);
            self.stats.degraded.store(1, Relaxed);
            log::warn!(
                "cluster: {link:?} lost Redis; deliveries from other nodes may be missed, \
                 delivery cursors held until it is back"
            );
        } else if healthy && h.degraded {
            h.degraded = false;
            self.stats.degraded.store(0, Relaxed);
            self.stats.resyncs.fetch_add(1, Relaxed);
            self.resyncing.fetch_add(delivery.reactors().len(), Relaxed);
            log::info!("cluster: bus and presence up; catching signed-in connections up");
            delivery.resync_all();
        }
    }

    /// Whether reactors must not move delivery cursors now.
    pub fn cursors_held(&self) -> bool {
        self.held.load(Relaxed)
    }

    /// A reactor queued its catching up; the last one releases the cursors
    /// (unless a link was lost again meanwhile).
    pub fn resynced(&self) {
        let h = self.health.lock();
        let left = self
            .resyncing
            .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)))
            .unwrap_or(0);
        if left <= 1 {
            self.held.store(h.degraded, Relaxed);
        }
    }

    /// Pushes stored messages (`id`, 0 for a notice) to their recipients'
    /// connections on other nodes: one presence lookup for all recipients
    /// of the batch, then, per message, one PUBLISH per live target node
    /// carrying the frame and that node's recipients (all PUBLISHes in one
    /// pipeline). Recipients on no live node are left to their pending
    /// messages. Returns the recipients found on another live node, once
    /// Redis took the PUBLISHes.
    pub fn route(&self, batch: &[Outbound<'_>]) -> Vec<u64> {
        if batch.is_empty() || !self.peers.has_others(&self.me.id) {
            return Vec::new();
        }
        let mut uids: Vec<u64> = batch.iter().flat_map(|m| m.uids.iter().copied()).collect();
        uids.sort_unstable();
        uids.dedup();
        let Some(locations) = self.lookup(&uids) else {
            self.stats
                .route_failures
                .fetch_add(batch.len() as u64, Relaxed);
            return Vec::new();
        };
        // Each recipient's live nodes other than this one.
        let mut remote: HashMap<u64, Vec<String>> = HashMap::new();
        for (uid, nodes) in uids.iter().zip(locations) {
            for node in nodes.into_iter().filter(|n| *n != self.me.id) {
                if self.peers.contains(&node) {
                    remote.entry(*uid).or_default().push(node);
                } else {
                    self.stats.dead_node_recipients.fetch_add(1, Relaxed);
                }
            }
        }
        if remote.is_empty() {
            return Vec::new();
        }
        let mut publishes: Vec<(String, Vec<u8>)> = Vec::new();
        for m in batch {
            let mut by_node: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
            for uid in m.uids {
                for node in remote.get(uid).into_iter().flatten() {
                    let users = by_node.entry(node.as_str()).or_default();
                    if !users.contains(uid) {
                        users.push(*uid);
                    }
                }
            }
            for (node, users) in by_node {
                publishes.push((node_channel(node), bus::encode_push(m.id, &users, m.frame)));
            }
        }
        let sent = self.redis.with(&self.stats, |con| {
            let mut heard = Vec::with_capacity(publishes.len());
            for chunk in publishes.chunks(PIPELINE_CHUNK) {
                let mut pipe = redis::pipe();
                for (channel, payload) in chunk {
                    pipe.cmd("PUBLISH").arg(channel).arg(payload);
                }
                heard.extend(pipe.query::<Vec<i64>>(con)?);
            }
            Ok(heard)
        });
        match sent {
            Some(heard) => {
                self.stats
                    .publishes
                    .fetch_add(publishes.len() as u64, Relaxed);
                let unheard = heard.iter().filter(|&&n| n == 0).count();
                self.stats.unheard.fetch_add(unheard as u64, Relaxed);
                remote.into_keys().collect()
            }
            None => {
                self.stats
                    .route_failures
                    .fetch_add(batch.len() as u64, Relaxed);
                Vec::new()
            }
        }
    }

    /// The nodes each user is signed in on (pipelined, one round trip per
    /// [`PIPELINE_CHUNK`] users); `None` when Redis failed.
    fn lookup(&self, uids: &[u64]) -> Option<Vec<Vec<String>>> {
        self.redis.with(&self.stats, |con| {
            let mut all = Vec::with_capacity(uids.len());
            for chunk in uids.chunks(PIPELINE_CHUNK) {
                let mut pipe = redis::pipe();
                for uid in chunk {
                    pipe.cmd("SMEMBERS").arg(presence_key(*uid));
                }
                all.extend(pipe.query::<Vec<Vec<String>>>(con)?);
            }
            Ok(all)
        })
    }

    /// Publishes `sendToAll` on the broadcast channel; every other node
    /// pushes it to its signed-in connections. Returns whether Redis took it.
    pub fn broadcast(&self, frame: &[u8]) -> bool {
        if !self.peers.has_others(&self.me.id) {
            return true;
        }
        let sent = self.publish_all(&bus::encode_broadcast(&self.me.id, frame));
        if sent {
            self.stats.broadcasts.fetch_add(1, Relaxed);
        }
        sent
    }

    /// Tells every other node to close the WebSockets of `uid` with `code`
    /// (only those of session `sid` when given); see [`Delivery::kick`].
    pub fn kick(&self, uid: u64, sid: Option<u64>, code: u16) -> bool {
        self.publish_all(&bus::encode_kick(&self.me.id, uid, sid, code))
    }

    /// Tells every other node that session `sid` is revoked until `end`.
    pub fn revoke(&self, sid: u64, end: i64) -> bool {
        self.publish_all(&bus::encode_revoke(&self.me.id, sid, end))
    }

    /// One PUBLISH on the broadcast channel, whatever the peer table says
    /// (a node just starting may not be in it yet); counted as a route
    /// failure when Redis does not take it.
    fn publish_all(&self, payload: &[u8]) -> bool {
        let sent = self
            .redis
            .with(&self.stats, |con| {
                redis::cmd("PUBLISH")
                    .arg(BROADCAST_CHANNEL)
                    .arg(payload)
                    .query::<i64>(con)
            })
            .is_some();
        if !sent {
            self.stats.route_failures.fetch_add(1, Relaxed);
        }
        sent
    }

    /// Whether each user is signed in on another live node (one pipelined
    /// lookup for all; `false` for all when Redis fails).
    pub fn online_elsewhere(&self, uids: &[u64]) -> Vec<bool> {
        if uids.is_empty() || !self.peers.has_others(&self.me.id) {
            return vec![false; uids.len()];
        }
        match self.lookup(uids) {
            Some(locations) => locations
                .into_iter()
                .map(|nodes| {
                    nodes
                        .iter()
                        .any(|n| *n != self.me.id && self.peers.contains(n))
                })
                .collect(),
            None => vec![false; uids.len()],
        }
    }

    /// Records at once (from a worker) that `uid` is signed in here, before
    /// their pending messages are read: a message stored after that read
    /// finds the user in presence and is published to this node.
    pub fn announce(&self, uid: u64) {
        let me = &self.me.id;
        self.redis.with(&self.stats, |con| {
            redis::pipe()
                .atomic()
                .cmd("SADD")
                .arg(presence_key(uid))
                .arg(me)
                .ignore()
                .cmd("SADD")
                .arg(node_users_key(me))
                .arg(uid)
                .ignore()
                .cmd("SADD")
                .arg(NODES_KEY)
                .arg(me)
                .ignore()
                .query::<()>(con)
        });
    }

    /// A line for `/healthz`.
    pub fn health(&self) -> String {
        let up = |v: &AtomicI64| {
            if v.load(Relaxed) == 1 {
                "up"
            } else {
                "down"
            }
        };
        format!(
            "cluster: node={} peers={} etcd={} redis={} bus={}",
            self.me.id,
            self.peers.len(),
            up(&self.stats.etcd_up),
            up(&self.stats.redis_up),
            up(&self.stats.bus_up)
        )
    }
}

/// Ids of the users in a Redis set of `node_users_key`, ignoring junk.
fn parse_uids(members: Vec<String>) -> HashSet<u64> {
    members.iter().filter_map(|m| m.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: &str) -> Peer {
        Peer {
            id: id.to_string(),
            addr: format!("{id}:1"),
            started: 1,
        }
    }

    #[test]
    fn peer_table_reports_departures() {
        let p = Peers::default();
        p.insert(peer("a"));
        p.insert(peer("b"));
        assert!(p.has_others("a"));
        let gone = p.replace([("a".to_string(), peer("a"))].into_iter().collect());
        assert_eq!(gone, vec!["b".to_string()]);
        assert!(!p.has_others("a"));
        assert!(p.remove("a"));
        assert!(p.is_empty());
    }

    #[test]
    fn generated_node_id_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = node_id("", dir.path()).unwrap();
        assert!(
            a.starts_with("n-") && crate::config::valid_node_id(&a),
            "{a}"
        );
        assert_eq!(node_id("", dir.path()).unwrap(), a);
        assert_eq!(node_id("x1", dir.path()).unwrap(), "x1");
    }

    #[test]
    fn advertise_defaults_to_the_listening_address() {
        let a: SocketAddr = "10.1.2.3:8080".parse().unwrap();
        assert_eq!(advertise("", a), "10.1.2.3:8080");
        assert_eq!(advertise("lb:1", a), "lb:1");
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(advertise("", any).ends_with(":8080"));
    }
}
