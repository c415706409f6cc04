//! The membership thread: one thread running a single-thread tokio runtime
//! with the etcd client.
//!
//! A session grants a lease (TTL `cluster.lease_ttl`), puts
//! `weim/nodes/<node_id>` under it, keeps it alive (every third of the
//! TTL), lists the prefix into the peer table and watches it from the
//! listed revision. A watch error re-lists and re-watches; a lost lease
//! (keep-alive answered with TTL 0, no answer within the TTL, etcd
//! restarted) or a broken connection ends the session and a new one
//! registers again, after a backoff, without restarting the process. While
//! etcd is unreachable the last peer table is kept. Nodes that leave the
//! table are reported to the presence thread, which clears their records.
//! On drain the lease is revoked.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, ConnectOptions, EventType, GetOptions, KeyValue, PutOptions, WatchOptions,
};
use tokio::sync::mpsc::Receiver;
use tokio::time::{sleep, timeout, Instant};

use super::{presence, Cluster, Peer, NODES_PREFIX};

/// Requests to the membership thread.
pub enum Command {
    /// Drain: revoke the lease, answer, stop.
    Leave(crossbeam_channel::Sender<()>),
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(4);
/// Pause before re-listing after a watch error.
const REWATCH_PAUSE: Duration = Duration::from_millis(200);

/// Why a session ended.
enum End {
    /// Asked to leave (lease revoked if etcd answered).
    Left(crossbeam_channel::Sender<()>),
    /// The command channel closed: the node is gone.
    Closed,
    /// etcd failed; register again.
    Failed(String),
}

impl From<etcd_client::Error> for End {
    fn from(e: etcd_client::Error) -> Self {
        End::Failed(e.to_string())
    }
}

struct Membership<'a> {
    cluster: Arc<Cluster>,
    commands: &'a mut Receiver<Command>,
    presence: crossbeam_channel::Sender<presence::Command>,
    /// The lease of the previous session, revoked once a new one holds the key.
    old_lease: Option<i64>,
    /// The last session got as far as watching (the next retry is quick).
    reached: bool,
}

/// Runs the membership thread until `Leave`. The command channel outlives
/// a panic (`supervise` runs this again): the session is lost and its lease
/// expires, a new one registers under a new lease.
pub fn run(
    cluster: Arc<Cluster>,
    commands: &mut Receiver<Command>,
    presence: crossbeam_channel::Sender<presence::Command>,
) {
    // A (re)start: nothing is known of etcd yet.
    cluster.stats.etcd_up.store(0, Relaxed);
    cluster.peers.synced.store(false, Relaxed);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log::error!("cluster: membership runtime: {e}; this node stays out of the peer table");
            return;
        }
    };
    rt.block_on(
        Membership {
            cluster,
            commands,
            presence,
            old_lease: None,
            reached: false,
        }
        .run(),
    );
}

fn key_of(id: &str) -> String {
    format!("{NODES_PREFIX}{id}")
}

/// The peer registered under `kv`, if it is one.
fn peer_of(kv: &KeyValue) -> Option<Peer> {
    let id = std::str::from_utf8(kv.key())
        .ok()?
        .strip_prefix(NODES_PREFIX)?;
    match serde_json::from_slice::<Peer>(kv.value()) {
        Ok(p) if p.id == id => Some(p),
        _ => {
            log::warn!("cluster: ignoring malformed registration {NODES_PREFIX}{id}");
            None
        }
    }
}

impl Membership<'_> {
    async fn run(mut self) {
        let stats = self.cluster.stats.clone();
        let mut backoff = BACKOFF_MIN;
        loop {
            let end = self.session().await;
            stats.etcd_up.store(0, Relaxed);
            self.cluster.peers.synced.store(false, Relaxed);
            match end {
                End::Left(ack) => {
                    let _ = ack.send(());
                    return;
                }
                End::Closed => return,
                End::Failed(e) => {
                    if std::mem::take(&mut self.reached) {
                        backoff = BACKOFF_MIN;
                    }
                    log::warn!(
                        "cluster: etcd: {e}; keeping the last peer table ({} nodes), retrying in {backoff:?}",
                        self.cluster.peers.len()
                    );
                }
            }
            tokio::select! {
                () = sleep(backoff) => {}
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Leave(ack)) => {
                        let _ = ack.send(());
                        return;
                    }
                    None => return,
                },
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Registers under a new lease, then keeps it alive and follows the
    /// peer table until something fails or the node leaves.
    async fn session(&mut self) -> End {
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT);
        let mut client = match Client::connect(&self.cluster.etcd, Some(options)).await {
            Ok(c) => c,
            Err(e) => return e.into(),
        };
        let ttl = self.cluster.lease_ttl.as_secs().max(2) as i64;
        let lease = match client.lease_grant(ttl, None).await {
            Ok(l) => l.id(),
            Err(e) => return e.into(),
        };
        let me = &self.cluster.me;
        let value = match serde_json::to_vec(me) {
            Ok(v) => v,
            Err(e) => return End::Failed(e.to_string()),
        };
        if let Err(e) = client
            .put(
                key_of(&me.id),
                value,
                Some(PutOptions::new().with_lease(lease)),
            )
            .await
        {
            return e.into();
        }
        if let Some(old) = self.old_lease.replace(lease) {
            // Best effort: the key already moved to the new lease.
            let _ = timeout(REQUEST_TIMEOUT, client.lease_revoke(old)).await;
        }
        self.cluster.stats.registrations.fetch_add(1, Relaxed);
        log::info!(
            "cluster: registered {} in etcd (lease {lease:x}, TTL {ttl} s)",
            key_of(&me.id)
        );
        let (mut keeper, mut alive) = match client.lease_keep_alive(lease).await {
            Ok(k) => k,
            Err(e) => return e.into(),
        };
        let period = Duration::from_millis((ttl as u64 * 1000 / 3).max(500));
        let mut tick = tokio::time::interval(period);
        let mut answered = Instant::now();
        loop {
            // List, then watch from the listed revision.
            let listed = match client
                .get(NODES_PREFIX, Some(GetOptions::new().with_prefix()))
                .await
            {
                Ok(r) => r,
                Err(e) => return e.into(),
            };
            let revision = listed.header().map_or(0, |h| h.revision());
            let table: BTreeMap<String, Peer> = listed
                .kvs()
                .iter()
                .filter_map(peer_of)
                .map(|p| (p.id.clone(), p))
                .collect();
            if !table.contains_key(&self.cluster.me.id) {
                return End::Failed("own registration missing from the listing".to_string());
            }
            for id in self.cluster.peers.replace(table) {
                self.departed(id);
            }
            self.update_gauge();
            let mut watch = match client
                .watch(
                    NODES_PREFIX,
                    Some(
                        WatchOptions::new()
                            .with_prefix()
                            .with_start_revision(revision + 1),
                    ),
                )
                .await
            {
                Ok(w) => w,
                Err(e) => return e.into(),
            };
            self.cluster.peers.synced.store(true, Relaxed);
            self.cluster.stats.etcd_up.store(1, Relaxed);
            self.reached = true;
            loop {
                tokio::select! {
                    cmd = self.commands.recv() => {
                        return match cmd {
                            Some(Command::Leave(ack)) => {
                                match timeout(REQUEST_TIMEOUT, client.lease_revoke(lease)).await {
                                    Ok(Ok(_)) => log::info!("cluster: lease revoked, left the cluster"),
                                    _ => log::warn!("cluster: could not revoke the lease; it expires within {ttl} s"),
                                }
                                End::Left(ack)
                            }
                            None => End::Closed,
                        };
                    }
                    _ = tick.tick() => {
                        if answered.elapsed() > Duration::from_secs(ttl as u64) {
                            return End::Failed("no keep-alive answer within the lease TTL".to_string());
                        }
                        if let Err(e) = keeper.keep_alive().await {
                            return e.into();
                        }
                    }
                    msg = alive.message() => match msg {
                        Ok(Some(r)) if r.ttl() > 0 => answered = Instant::now(),
                        Ok(Some(_)) => return End::Failed("lease expired".to_string()),
                        Ok(None) => return End::Failed("keep-alive stream ended".to_string()),
                        Err(e) => return e.into(),
                    },
                    msg = watch.message() => match msg {
                        Ok(Some(r)) if r.canceled() => {
                            log::warn!("cluster: watch canceled ({}); re-listing", r.cancel_reason());
                            break;
                        }
                        Ok(Some(r)) => {
                            if let Err(end) = self.apply(r.events()) {
                                return end;
                            }
                        }
                        Ok(None) => {
                            log::warn!("cluster: watch ended; re-listing");
                            break;
                        }
                        Err(e) => {
                            log::warn!("cluster: watch: {e}; re-listing");
                            break;
                        }
                    },
                }
            }
            self.cluster.peers.synced.store(false, Relaxed);
            sleep(REWATCH_PAUSE).await;
        }
    }

    /// Applies watch events to the peer table.
    fn apply(&mut self, events: &[etcd_client::Event]) -> Result<(), End> {
        for ev in events {
            let Some(kv) = ev.kv() else { continue };
            match ev.event_type() {
                EventType::Put => {
                    if let Some(peer) = peer_of(kv) {
                        if !self.cluster.peers.contains(&peer.id) {
                            log::info!("cluster: node {} joined ({})", peer.id, peer.addr);
                        }
                        self.cluster.peers.insert(peer);
                    }
                }
                EventType::Delete => {
                    let Some(id) = std::str::from_utf8(kv.key())
                        .ok()
                        .and_then(|k| k.strip_prefix(NODES_PREFIX))
                    else {
                        continue;
                    };
                    if id == self.cluster.me.id {
                        self.cluster.peers.remove(id);
                        self.update_gauge();
                        return Err(End::Failed("own registration deleted".to_string()));
                    }
                    if self.cluster.peers.remove(id) {
                        self.departed(id.to_string());
                    }
                }
            }
        }
        self.update_gauge();
        Ok(())
    }

    /// A node left the peer table: its presence records go.
    fn departed(&self, id: String) {
        if id == self.cluster.me.id {
            return;
        }
        log::info!("cluster: node {id} left");
        // A full channel only delays the cleanup to the presence sweep.
        let _ = self.presence.try_send(presence::Command::PeerGone(id));
    }

    fn update_gauge(&self) {
        self.cluster
            .stats
            .peers
            .store(self.cluster.peers.len() as i64, Relaxed);
    }
}
