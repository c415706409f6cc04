//! Delivery: the registry of signed-in connections on this node (user id →
//! that user's connections, sharded so no global lock sits on the hot path)
//! and the one API handlers use to push a frame to a user, to many users or
//! to everyone. A delivery sends at most one inbox message per reactor, never
//! one per connection. In cluster mode the registry also reports a user's
//! first sign-in and last close here to the presence thread, and deliveries
//! reach users on other nodes through [`Cluster`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::cluster::presence::{Event, Notifier};
use crate::cluster::{Cluster, Outbound};
use crate::reactor::{ConnRef, Inbox, ReactorHandle, SyncOutcome, Targets};
use crate::ws::SharedFrame;

const SHARDS: usize = 64;

/// One shard: user id → that user's connections, oldest first.
type Shard = Mutex<HashMap<u64, Vec<ConnRef>>>;

/// Signed-in connections by user, oldest first.
pub struct Registry {
    shards: Box<[Shard]>,
    conns_per_user: usize,
    presence: Option<Notifier>,
}

impl Registry {
    /// An empty registry keeping at most `conns_per_user` connections a user.
    pub fn new(conns_per_user: usize) -> Registry {
        Registry {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            conns_per_user: conns_per_user.max(1),
            presence: None,
        }
    }

    /// Reports each user's first sign-in and last close here to `presence`
    /// (cluster mode). Sent under the shard lock, so a user's events keep
    /// their order; sending never blocks.
    pub fn with_presence(mut self, presence: Notifier) -> Registry {
        self.presence = Some(presence);
        self
    }

    fn shard(&self, uid: u64) -> &Shard {
        &self.shards[(uid as usize) % SHARDS]
    }

    /// Adds a signed-in connection; returns the user's oldest connection
    /// when this one takes them over the limit (the caller closes it).
    pub fn add(&self, uid: u64, conn: ConnRef) -> Option<ConnRef> {
        let mut shard = self.shard(uid).lock();
        let conns = shard.entry(uid).or_default();
        if conns.is_empty() {
            if let Some(p) = &self.presence {
                p.send(Event::Online(uid));
            }
        }
        conns.push(conn);
        (conns.len() > self.conns_per_user).then(|| conns.remove(0))
    }

    /// Removes exactly this connection (never another device of the user).
    pub fn remove(&self, uid: u64, conn: ConnRef) {
        let mut shard = self.shard(uid).lock();
        if let Some(conns) = shard.get_mut(&uid) {
            conns.retain(|c| *c != conn);
            if conns.is_empty() {
                shard.remove(&uid);
                if let Some(p) = &self.presence {
                    p.send(Event::Offline(uid));
                }
            }
        }
    }

    /// Users with at least one connection here.
    pub fn users(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    /// Whether the user has a connection on this node.
    pub fn is_online(&self, uid: u64) -> bool {
        self.shard(uid).lock().contains_key(&uid)
    }

    /// Every user with a connection here (one shard locked at a time).
    pub fn user_ids(&self) -> Vec<u64> {
        let mut ids = Vec::new();
        for shard in self.shards.iter() {
            ids.extend(shard.lock().keys().copied());
        }
        ids
    }
}

/// Pushes frames to signed-in connections through their reactors.
pub struct Delivery {
    /// Who is connected where.
    pub registry: Registry,
    reactors: Vec<ReactorHandle>,
    cluster: Option<Arc<Cluster>>,
}

impl Delivery {
    /// Delivery over these reactors.
    pub fn new(registry: Registry, reactors: Vec<ReactorHandle>) -> Delivery {
        Delivery {
            registry,
            reactors,
            cluster: None,
        }
    }

    /// Also routes to users on other nodes (cluster mode).
    pub fn with_cluster(mut self, cluster: Option<Arc<Cluster>>) -> Delivery {
        self.cluster = cluster;
        self
    }

    /// The cluster, in cluster mode.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// The reactors' handles, by reactor index.
    pub fn reactors(&self) -> &[ReactorHandle] {
        &self.reactors
    }

    /// Whether the user has a signed-in connection (the `Online` flag):
    /// here, or (cluster mode, one Redis lookup) on another live node.
    pub fn is_online(&self, uid: u64) -> bool {
        self.online(&[uid]).first().copied().unwrap_or(false)
    }

    /// [`Delivery::is_online`] for several users, with one Redis lookup for
    /// those not connected here.
    pub fn online(&self, uids: &[u64]) -> Vec<bool> {
        let mut online: Vec<bool> = uids.iter().map(|&u| self.registry.is_online(u)).collect();
        if let Some(c) = &self.cluster {
            let (idx, away): (Vec<usize>, Vec<u64>) = uids
                .iter()
                .enumerate()
                .filter(|(i, _)| !online[*i])
                .map(|(i, &u)| (i, u))
                .unzip();
            for (i, elsewhere) in idx.into_iter().zip(c.online_elsewhere(&away)) {
                online[i] = elsewhere;
            }
        }
        online
    }

    /// A connection of `uid` is about to read its pending messages: in
    /// cluster mode, record its presence first (see [`Cluster::announce`]).
    pub fn announce(&self, uid: u64) {
        if let Some(c) = &self.cluster {
            if self.registry.is_online(uid) {
                c.announce(uid);
            }
        }
    }

    /// Pushes `frame` to every connection of one user; returns how many
    /// connections it was handed to.
    pub fn to_user(&self, uid: u64, frame: SharedFrame) -> usize {
        self.to_users(&[uid], frame)
    }

    /// Pushes `frame` (a notice, not a stored message) to every connection
    /// of these users, one inbox message per reactor.
    pub fn to_users(&self, uids: &[u64], frame: SharedFrame) -> usize {
        self.deliver_message(uids, frame, 0, None)
    }

    /// Pushes the frame of stored message `id` (0 for a notice) to every
    /// connection of these users except `except` (the sending connection):
    /// here, one inbox message per reactor, and in cluster mode on the other
    /// nodes they are signed in on. Returns the connections reached here.
    pub fn deliver_message(
        &self,
        uids: &[u64],
        frame: SharedFrame,
        id: u64,
        except: Option<ConnRef>,
    ) -> usize {
        let n = self.deliver_local(uids, frame.clone(), id, except);
        if let Some(c) = &self.cluster {
            c.route(&[Outbound {
                uids,
                frame: &frame,
                id,
            }]);
        }
        n
    }

    /// [`Delivery::deliver_message`] for a batch of messages: each is
    /// pushed here at once, then (cluster mode) all are routed to other
    /// nodes together, with one presence lookup and one pipeline of
    /// PUBLISHes.
    pub fn deliver_messages(&self, batch: &[(&[u64], SharedFrame, u64, Option<ConnRef>)]) {
        for (uids, frame, id, except) in batch {
            self.deliver_local(uids, frame.clone(), *id, *except);
        }
        if let Some(c) = &self.cluster {
            let out: Vec<Outbound<'_>> = batch
                .iter()
                .map(|(uids, frame, id, _)| Outbound {
                    uids,
                    frame,
                    id: *id,
                })
                .collect();
            c.route(&out);
        }
    }

    /// [`Delivery::deliver_message`] on this node only. A connection still
    /// receiving its pending messages holds a live message back until it
    /// catches up.
    pub fn deliver_local(
        &self,
        uids: &[u64],
        frame: SharedFrame,
        id: u64,
        except: Option<ConnRef>,
    ) -> usize {
        let mut per_reactor: Vec<Vec<(u32, u32)>> = vec![Vec::new(); self.reactors.len()];
        for &uid in uids {
            if let Some(conns) = self.registry.shard(uid).lock().get(&uid) {
                for c in conns.iter().filter(|c| Some(**c) != except) {
                    if let Some(list) = per_reactor.get_mut(c.reactor as usize) {
                        list.push((c.token, c.generation));
                    }
                }
            }
        }
        let mut n = 0;
        for (handle, list) in self.reactors.iter().zip(per_reactor) {
            if !list.is_empty() {
                n += list.len();
                handle.send(Inbox::Push {
                    frame: frame.clone(),
                    to: Targets::Conns(list),
                    ack: None,
                    id,
                    sync: false,
                });
            }
        }
        n
    }

    /// Sends a frame to one connection (an answer to its own command).
    pub fn reply(&self, conn: ConnRef, frame: SharedFrame) {
        self.send_to(
            conn,
            Inbox::Push {
                frame,
                to: Targets::Conns(vec![(conn.token, conn.generation)]),
                ack: None,
                id: 0,
                sync: false,
            },
        );
    }

    /// One batch of pending messages (several frames in one buffer, the
    /// newest id `newest`) for a connection catching up.
    pub fn sync_batch(&self, conn: ConnRef, frames: SharedFrame, newest: u64) {
        self.send_to(
            conn,
            Inbox::Push {
                frame: frames,
                to: Targets::Conns(vec![(conn.token, conn.generation)]),
                ack: None,
                id: newest,
                sync: true,
            },
        );
    }

    /// Tells a connection's reactor how its catching up ended.
    pub fn sync_done(&self, conn: ConnRef, upto: u64, outcome: SyncOutcome) {
        self.send_to(
            conn,
            Inbox::SyncDone {
                conn,
                upto,
                outcome,
            },
        );
    }

    /// Sends an inbox message to the reactor of `conn`.
    pub fn send_to(&self, conn: ConnRef, msg: Inbox) {
        if let Some(handle) = self.reactors.get(conn.reactor as usize) {
            handle.send(msg);
        }
    }

    /// Pushes `frame` to every signed-in connection on this node and waits
    /// (at most `wait`) for the reactors to say how many they wrote it to;
    /// in cluster mode, also publishes it once for every other node.
    pub fn to_all(&self, frame: SharedFrame, wait: Duration) -> usize {
        if let Some(c) = &self.cluster {
            c.broadcast(&frame);
        }
        let (tx, rx) = crossbeam_channel::bounded(self.reactors.len());
        for handle in &self.reactors {
            handle.send(Inbox::Push {
                frame: frame.clone(),
                to: Targets::All,
                ack: Some(tx.clone()),
                id: 0,
                sync: false,
            });
        }
        drop(tx);
        let deadline = Instant::now() + wait;
        let mut total = 0;
        for _ in 0..self.reactors.len() {
            match rx.recv_deadline(deadline) {
                Ok(n) => total += n,
                Err(_) => break,
            }
        }
        total
    }

    /// Pushes `frame` to every signed-in connection on this node without
    /// waiting (a broadcast from another node).
    pub fn push_all(&self, frame: SharedFrame) {
        for handle in &self.reactors {
            handle.send(Inbox::Push {
                frame: frame.clone(),
                to: Targets::All,
                ack: None,
                id: 0,
                sync: false,
            });
        }
    }

    /// Whether reactors must not move delivery cursors now (cluster mode,
    /// while deliveries from other nodes may be missed).
    pub fn cursors_held(&self) -> bool {
        self.cluster.as_ref().is_some_and(|c| c.cursors_held())
    }

    /// Asks every reactor to catch its connections up again.
    pub fn resync_all(&self) {
        for handle in &self.reactors {
            handle.send(Inbox::Resync);
        }
    }

    /// A reactor has queued its catching up after [`Delivery::resync_all`].
    pub fn resynced(&self) {
        if let Some(c) = &self.cluster {
            c.resynced();
        }
    }

    /// Asks a connection's reactor to close it with a WebSocket close code.
    pub fn close(&self, conn: ConnRef, code: u16) {
        self.send_to(conn, Inbox::Close { conn, code });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(token: u32) -> ConnRef {
        ConnRef {
            reactor: 0,
            token,
            generation: 1,
        }
    }

    #[test]
    fn oldest_connection_is_evicted_over_the_limit() {
        let r = Registry::new(2);
        assert_eq!(r.add(7, conn(1)), None);
        assert_eq!(r.add(7, conn(2)), None);
        assert_eq!(r.add(7, conn(3)), Some(conn(1)));
        assert!(r.is_online(7));
        r.remove(7, conn(1));
        r.remove(7, conn(2));
        assert!(r.is_online(7));
        r.remove(7, conn(3));
        assert!(!r.is_online(7));
        assert_eq!(r.users(), 0);
    }

    #[test]
    fn presence_events_mark_first_sign_in_and_last_close() {
        let (tx, rx) = crossbeam_channel::bounded(2);
        let stats = Arc::new(crate::cluster::Stats::default());
        let r = Registry::new(8).with_presence(Notifier::new(tx, stats.clone()));
        r.add(7, conn(1));
        r.add(7, conn(2));
        r.remove(7, conn(1));
        assert_eq!(r.user_ids(), vec![7]);
        r.remove(7, conn(2));
        assert_eq!(
            rx.try_iter().collect::<Vec<_>>(),
            vec![Event::Online(7), Event::Offline(7)]
        );
        // A full channel drops and counts, never blocks.
        for uid in 1..=3 {
            r.add(uid, conn(uid as u32));
        }
        assert_eq!(rx.len(), 2);
        assert_eq!(
            stats
                .presence_dropped
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }
}
