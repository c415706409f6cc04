//! The registry of signed-in connections on this node: user id → that
//! user's connections and the session each signed in with, in shards so no global lock sits on the hot path. In
//! cluster mode it reports a user's first sign-in and last close here to
//! the presence thread; on a single node, to the webhook (`user.online`,
//! `user.offline`).

use std::collections::HashMap;

use std::sync::Arc;

use parking_lot::Mutex;

use crate::cluster::presence::{Event, Notifier};
use crate::reactor::ConnRef;
use crate::webhook::Webhook;

const SHARDS: usize = 64;

/// One signed-in connection and its session id.
type Entry = (ConnRef, u64);

/// One shard: user id → that user's connections, oldest first.
type Shard = Mutex<HashMap<u64, Vec<Entry>>>;

/// Signed-in connections by user, oldest first.
pub struct Registry {
    shards: Box<[Shard]>,
    conns_per_user: usize,
    presence: Option<Notifier>,
    webhook: Option<Arc<Webhook>>,
}

impl Registry {
    /// An empty registry keeping at most `conns_per_user` connections a
    /// user (0 = no limit).
    pub fn new(conns_per_user: usize) -> Registry {
        let conns_per_user = match conns_per_user {
            0 => usize::MAX,
            n => n,
        };
        Registry {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            conns_per_user,
            presence: None,
            webhook: None,
        }
    }

    /// Reports each user's first sign-in and last close here to `presence`
    /// (cluster mode). Sent under the shard lock, so a user's events keep
    /// their order; sending never blocks.
    pub fn with_presence(mut self, presence: Notifier) -> Registry {
        self.presence = Some(presence);
        self
    }

    /// Reports each user's first sign-in and last close to the webhook (a
    /// single node; in a cluster the presence thread does, cluster-wide).
    pub fn with_webhook(mut self, webhook: Arc<Webhook>) -> Registry {
        self.webhook = Some(webhook);
        self
    }

    pub(super) fn shard(&self, uid: u64) -> &Shard {
        &self.shards[(uid as usize) % SHARDS]
    }

    /// Adds a connection signed in with session `sid`; returns the user's
    /// oldest connection when this one takes them over the limit (the
    /// caller closes it).
    pub fn add(&self, uid: u64, sid: u64, conn: ConnRef) -> Option<ConnRef> {
        let mut shard = self.shard(uid).lock();
        let conns = shard.entry(uid).or_default();
        if conns.is_empty() {
            if let Some(p) = &self.presence {
                p.send(Event::Online(uid));
            }
            if let Some(w) = &self.webhook {
                w.presence(uid, true);
            }
        }
        conns.push((conn, sid));
        (conns.len() > self.conns_per_user).then(|| conns.remove(0).0)
    }

    /// Removes exactly this connection (never another device of the user).
    pub fn remove(&self, uid: u64, conn: ConnRef) {
        let mut shard = self.shard(uid).lock();
        if let Some(conns) = shard.get_mut(&uid) {
            conns.retain(|(c, _)| *c != conn);
            if conns.is_empty() {
                shard.remove(&uid);
                if let Some(p) = &self.presence {
                    p.send(Event::Offline(uid));
                }
                if let Some(w) = &self.webhook {
                    w.presence(uid, false);
                }
            }
        }
    }

    /// The user's connections here: all, or those of session `sid`.
    pub fn conns_of(&self, uid: u64, sid: Option<u64>) -> Vec<ConnRef> {
        self.shard(uid)
            .lock()
            .get(&uid)
            .map_or_else(Vec::new, |conns| {
                conns
                    .iter()
                    .filter(|(_, s)| sid.is_none_or(|sid| *s == sid))
                    .map(|(c, _)| *c)
                    .collect()
            })
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
        assert_eq!(r.add(7, 1, conn(1)), None);
        assert_eq!(r.add(7, 1, conn(2)), None);
        assert_eq!(r.add(7, 1, conn(3)), Some(conn(1)));
        assert!(r.is_online(7));
        r.remove(7, conn(1));
        r.remove(7, conn(2));
        assert!(r.is_online(7));
        r.remove(7, conn(3));
        assert!(!r.is_online(7));
        assert_eq!(r.users(), 0);
    }

    #[test]
    fn connections_are_found_by_session() {
        let r = Registry::new(0);
        r.add(7, 1, conn(1));
        r.add(7, 2, conn(2));
        r.add(7, 1, conn(3));
        r.add(8, 1, conn(4));
        assert_eq!(r.conns_of(7, Some(1)), vec![conn(1), conn(3)]);
        assert_eq!(r.conns_of(7, Some(2)), vec![conn(2)]);
        assert_eq!(r.conns_of(7, None), vec![conn(1), conn(2), conn(3)]);
        assert_eq!(r.conns_of(9, None), vec![]);
    }

    #[test]
    fn zero_keeps_every_connection() {
        let r = Registry::new(0);
        for token in 1..=2_000 {
            assert_eq!(r.add(7, 1, conn(token)), None);
        }
        for token in 1..=2_000 {
            r.remove(7, conn(token));
        }
        assert!(!r.is_online(7));
    }

    #[test]
    fn presence_events_mark_first_sign_in_and_last_close() {
        let (tx, rx) = crossbeam_channel::bounded(2);
        let stats = Arc::new(crate::cluster::Stats::default());
        let r = Registry::new(8).with_presence(Notifier::new(tx, stats.clone()));
        r.add(7, 1, conn(1));
        r.add(7, 1, conn(2));
        r.remove(7, conn(1));
        assert_eq!(r.user_ids(), vec![7]);
        r.remove(7, conn(2));
        assert_eq!(
            rx.try_iter().collect::<Vec<_>>(),
            vec![Event::Online(7), Event::Offline(7)]
        );
        // A full channel drops and counts, never blocks.
        for uid in 1..=3 {
            r.add(uid, 1, conn(uid as u32));
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
