//! Delivery: getting every stored message to its recipients, and knowing
//! when it got there. Handlers push through [`Delivery`] (to a user, to
//! many, to everyone; one inbox message per reactor, never one per
//! connection); in cluster mode deliveries reach users on other nodes
//! through [`Cluster`].
//!
//! # The contract
//! 1. **Delivered means confirmed.** Each user has one stored cursor: every
//!    message to them with an id at or below it is delivered; everything
//!    above it is pending and is pushed again, oldest first, whenever one of
//!    their connections signs in. A client that declares acknowledgements at
//!    sign-in (`{"Cmd":3,"Body":token,"Ack":true}`, or from its first Cmd
//!    22 on) confirms with Cmd 22 `<id>`: every message written to it up to
//!    that one. For a client that never acknowledges (the old protocol) a
//!    message is confirmed once the peer's TCP stack has acknowledged its
//!    last byte (`SIOCOUTQ`). Writing bytes, or bytes waiting in a socket
//!    that the node then drops or closes, confirm nothing.
//! 2. **The cursor never passes a hole.** Confirmed ids are checked against
//!    the store ([`pending::check`]): the cursor moves up to the newest id below
//!    which every pending message was confirmed. A pending message that
//!    the connection never got (a PUBLISH that failed, a node missing from
//!    the sender's peer table, a lost presence record, a re-registered
//!    lease) stops the cursor; once it is older than [`HOLE_GRACE`] (it was
//!    not merely a bus hop behind a newer one) the connection catches up
//!    again from the cursor, so it gets the message now. Delivery is
//!    at-least-once with the same `Id`: clients drop duplicates by `Id`.
//! 3. **What the node produces itself is flow-controlled, never dropped.**
//!    Catching up pushes one batch at a time and reads the next only once
//!    the connection's output is below the low-water mark; so are HTTP
//!    bodies streamed from files. `limits.max_pending_bytes` bounds only
//!    live pushes a client does not read: past it the connection is dropped
//!    (`weim_slow_consumer_drops_total`), and what it had not confirmed
//!    stays pending.
//! 4. **Keepalive.** A signed-in connection silent for `limits.ping_interval`
//!    gets a WebSocket ping; any frame counts as activity; it is closed only
//!    after `limits.idle_timeout` more of silence.
//!
//! Where it lives: [`ledger`] (a connection's written, confirmed and held
//! messages and its catching up, kept by its reactor), [`pending`] (the
//! worker side: reading pending batches, checking confirmations and moving
//! cursors), [`registry`] (who is connected where).

pub mod ledger;
pub mod pending;
pub mod registry;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cluster::{Cluster, Outbound};
use crate::reactor::{ConnRef, Inbox, ReactorHandle, Targets};
use crate::ws::SharedFrame;

pub use pending::{Batch, More, HOLE_GRACE};
pub use registry::Registry;

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

    /// Pushes a notice to every connection of these users, here and (in
    /// cluster mode, one presence lookup and one PUBLISH per target node)
    /// on the other nodes they are signed in on. Returns how many of the
    /// users it reached somewhere.
    pub fn notify(&self, uids: &[u64], frame: SharedFrame) -> usize {
        let mut uids = uids.to_vec();
        uids.sort_unstable();
        uids.dedup();
        let here: Vec<bool> = uids.iter().map(|&u| self.registry.is_online(u)).collect();
        self.deliver_local(&uids, frame.clone(), 0, None);
        let elsewhere: std::collections::HashSet<u64> = match &self.cluster {
            Some(c) => c
                .route(&[Outbound {
                    uids: &uids,
                    frame: &frame,
                    id: 0,
                }])
                .into_iter()
                .collect(),
            None => Default::default(),
        };
        uids.iter()
            .zip(here)
            .filter(|(u, here)| *here || elsewhere.contains(u))
            .count()
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
                for (c, _) in conns.iter().filter(|(c, _)| Some(*c) != except) {
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
            },
        );
    }

    /// A batch of pending messages read for a connection catching up (or
    /// none), how the reading ended and the newest id it reached.
    pub fn caught_up(&self, conn: ConnRef, batch: Option<Batch>, upto: u64, more: More) {
        self.send_to(
            conn,
            Inbox::CatchUp {
                conn,
                batch,
                upto,
                more,
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

    /// Closes the WebSockets of `uid` with close `code` on every node: all
    /// of them, or only those signed in with session `sid`. Here at once;
    /// in cluster mode the other nodes are told through Redis (one PUBLISH;
    /// a node that misses it keeps those sockets open). Returns the
    /// connections closed here.
    pub fn kick(&self, uid: u64, sid: Option<u64>, code: u16) -> usize {
        if let Some(c) = &self.cluster {
            c.kick(uid, sid, code);
        }
        self.kick_local(uid, sid, code)
    }

    /// [`Delivery::kick`] on this node only.
    pub fn kick_local(&self, uid: u64, sid: Option<u64>, code: u16) -> usize {
        let conns = self.registry.conns_of(uid, sid);
        for &conn in &conns {
            self.close(conn, code);
        }
        conns.len()
    }
}
