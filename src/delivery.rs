//! Delivery: the registry of signed-in connections on this node (user id →
//! that user's connections, sharded so no global lock sits on the hot path)
//! and the one API handlers use to push a frame to a user, to many users or
//! to everyone. A delivery sends at most one inbox message per reactor, never
//! one per connection.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::reactor::{ConnRef, Inbox, ReactorHandle, SyncOutcome, Targets};
use crate::ws::SharedFrame;

const SHARDS: usize = 64;

/// One shard: user id → that user's connections, oldest first.
type Shard = Mutex<HashMap<u64, Vec<ConnRef>>>;

/// Signed-in connections by user, oldest first.
pub struct Registry {
    shards: Box<[Shard]>,
    conns_per_user: usize,
}

impl Registry {
    /// An empty registry keeping at most `conns_per_user` connections a user.
    pub fn new(conns_per_user: usize) -> Registry {
        Registry {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            conns_per_user: conns_per_user.max(1),
        }
    }

    fn shard(&self, uid: u64) -> &Shard {
        &self.shards[(uid as usize) % SHARDS]
    }

    /// Adds a signed-in connection; returns the user's oldest connection
    /// when this one takes them over the limit (the caller closes it).
    pub fn add(&self, uid: u64, conn: ConnRef) -> Option<ConnRef> {
        let mut shard = self.shard(uid).lock();
        let conns = shard.entry(uid).or_default();
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
}

/// Pushes frames to signed-in connections through their reactors.
pub struct Delivery {
    /// Who is connected where.
    pub registry: Registry,
    reactors: Vec<ReactorHandle>,
}

impl Delivery {
    /// Delivery over these reactors.
    pub fn new(registry: Registry, reactors: Vec<ReactorHandle>) -> Delivery {
        Delivery { registry, reactors }
    }

    /// The reactors' handles, by reactor index.
    pub fn reactors(&self) -> &[ReactorHandle] {
        &self.reactors
    }

    /// Whether the user has a signed-in connection (the `Online` flag).
    pub fn is_online(&self, uid: u64) -> bool {
        self.registry.is_online(uid)
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
    /// connection of these users except `except` (the sending connection),
    /// one inbox message per reactor. A connection still receiving its
    /// pending messages holds a live message back until it catches up.
    pub fn deliver_message(
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
    /// (at most `wait`) for the reactors to say how many they wrote it to.
    pub fn to_all(&self, frame: SharedFrame, wait: Duration) -> usize {
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
}
