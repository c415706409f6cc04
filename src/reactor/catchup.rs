//! The reactor's side of delivery (the rules are in [`crate::delivery`]):
//! catching a signed-in connection up one batch at a time as its output
//! drains, confirming what its client received (Cmd 22, or the peer's TCP
//! acknowledgements), and sending confirmations to be checked against the
//! store.

use std::sync::atomic::Ordering::Relaxed;

use super::conn::State;
use super::output::{write_message, Chunk, Sent};
use super::{ConnRef, Reactor};
use crate::delivery::ledger::CatchUp;
use crate::delivery::pending::{self, Checked, Confirmed};
use crate::delivery::{Batch, More};
use crate::worker::Task;

impl Reactor {
    /// Starts catching a signed-in connection up: from the stored cursor
    /// (`None`) or after a given id; live messages wait meanwhile.
    pub(super) fn start_catch_up(&mut self, key: usize, after: Option<u64>) {
        let Some(session) = self.conns.get_mut(key).and_then(|c| c.session()) else {
            return;
        };
        session.ledger.restart_catch_up();
        if let Some(a) = after {
            session.ledger.rewind(a);
        }
        session.ledger.catch_up = CatchUp::Retry(after);
        self.continue_catch_up(key);
    }

    /// Reads the next batch of pending messages if the connection waits for
    /// one (its output is below the low-water mark; see `drained`). When
    /// the job queue is full the sweep tries again.
    pub(super) fn continue_catch_up(&mut self, key: usize) {
        let id = self.id;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let me = conn.conn_ref(id, key);
        let Some(session) = conn.session() else {
            return;
        };
        let after = match session.ledger.catch_up {
            CatchUp::Draining(upto) => Some(upto),
            CatchUp::Retry(after) => after,
            CatchUp::Off | CatchUp::Reading => return,
        };
        let uid = session.uid;
        session.ledger.catch_up = CatchUp::Reading;
        if self.queue(me, Task::Pending { uid, after }).is_err() {
            if let Some(session) = self.conns[key].session() {
                session.ledger.catch_up = CatchUp::Retry(after);
            }
            self.retry.push(me);
        }
    }

    /// A batch of pending messages (or the end of them) for a connection.
    pub(super) fn on_catch_up(
        &mut self,
        conn: ConnRef,
        batch: Option<Batch>,
        upto: u64,
        more: More,
    ) {
        let Some(key) = self.live(conn) else {
            return;
        };
        let max_live = self.shared.config.limits.max_pending_bytes;
        let c = &mut self.conns[key];
        let State::WsReady(session) = &mut c.state else {
            return;
        };
        if let Some(batch) = batch {
            session.ledger.synced = session.ledger.synced.max(upto);
            let n = batch.ends.len() as u64;
            let chunk = Chunk::Shared(batch.frames);
            let sent = write_message(
                c,
                key,
                chunk,
                &batch.ends,
                false,
                max_live,
                &mut self.corked,
            );
            self.stats().frames_out.fetch_add(n, Relaxed);
            if !matches!(sent, Sent::Ok(_)) {
                self.after_send(key, sent);
                return;
            }
        }
        let State::WsReady(session) = &mut self.conns[key].state else {
            return;
        };
        match more {
            // The next batch is read once this one has drained (`drained`,
            // called when the corked output is written).
            More::Yes => session.ledger.catch_up = CatchUp::Draining(upto),
            More::Failed => {
                let synced = session.ledger.synced;
                session.ledger.catch_up = CatchUp::Retry((synced > 0).then_some(synced));
                self.retry.push(conn);
            }
            More::Done => match session.ledger.finish_catch_up() {
                // Live messages were let go meanwhile: read on from the store.
                None => session.ledger.catch_up = CatchUp::Draining(upto),
                Some(held) => {
                    for (frame, id) in held {
                        let c = &mut self.conns[key];
                        let ids = [(id, frame.len())];
                        let chunk = Chunk::Shared(frame);
                        match write_message(c, key, chunk, &ids, true, max_live, &mut self.corked) {
                            Sent::Ok(_) => {}
                            sent => {
                                self.after_send(key, sent);
                                return;
                            }
                        }
                    }
                    if self.rescan.remove(&conn) {
                        self.start_catch_up(key, None);
                    }
                }
            },
        }
    }

    /// Cmd 22: the client has received every message written to it up to
    /// the one with id `upto`.
    pub(super) fn acknowledged(&mut self, key: usize, upto: u64) {
        if let Some(session) = self.conns.get_mut(key).and_then(|c| c.session()) {
            session.ledger.acks = true;
            session.ledger.ack(upto);
        }
    }

    /// Confirms, for clients that do not acknowledge, the messages whose
    /// bytes the peer's TCP stack has acknowledged.
    pub(super) fn confirm_tcp(&mut self) {
        for (_, conn) in self.conns.iter_mut() {
            let State::WsReady(session) = &mut conn.state else {
                continue;
            };
            if session.ledger.awaits_tcp() {
                if let Some(pos) = conn.out.acknowledged(&conn.stream) {
                    session.ledger.tcp_acked(pos);
                }
            }
        }
    }

    /// Sends every connection's new confirmations (and those of
    /// connections gone since) to a worker, which checks them against the
    /// store and moves the cursors. Not while cursors are held (cluster
    /// mode, deliveries from other nodes may be missing).
    pub(super) fn check_confirmed(&mut self) {
        if self.shared.delivery.cursors_held() {
            return;
        }
        let id = self.id;
        let mut list = std::mem::take(&mut self.orphans);
        for (key, conn) in self.conns.iter_mut() {
            let me = conn.conn_ref(id, key);
            let State::WsReady(session) = &mut conn.state else {
                continue;
            };
            if let Some(ids) = session.ledger.to_check() {
                list.push(Confirmed {
                    conn: me,
                    uid: session.uid,
                    ids,
                });
            }
        }
        if list.is_empty() {
            return;
        }
        let me = ConnRef {
            reactor: id,
            token: u32::MAX,
            generation: 0,
        };
        if let Err(Task::Confirmed(list)) = self.queue(me, Task::Confirmed(list)) {
            // The queue is full: check them next time.
            for c in list {
                match self.live(c.conn) {
                    Some(key) => {
                        if let Some(session) = self.conns[key].session() {
                            session.ledger.checked(0, true);
                        }
                    }
                    None => self.orphans.push(c),
                }
            }
        }
    }

    /// Where a connection's user's cursor now stands. A pending message the
    /// connection never got, older than a bus hop, is a hole: the
    /// connection catches up again from the cursor.
    pub(super) fn on_checked(&mut self, conn: ConnRef, checked: Checked) {
        let Some(key) = self.live(conn) else {
            return;
        };
        let Some(session) = self.conns[key].session() else {
            return;
        };
        session.ledger.checked(checked.upto, checked.again);
        let Some((gap, at)) = checked.gap else {
            return;
        };
        if session.ledger.in_flight(gap) || !pending::is_hole(at) {
            return;
        }
        let catching_up = session.ledger.catching_up();
        self.stats().holes.fetch_add(1, Relaxed);
        if catching_up {
            self.rescan.insert(conn);
        } else {
            self.start_catch_up(key, Some(checked.upto));
        }
    }

    /// Catches every signed-in connection up again: from its stored cursor,
    /// or, for one already catching up, once more after its current pass.
    pub(super) fn resync_all(&mut self) {
        let mut rescan = std::mem::take(&mut self.rescan);
        rescan.retain(|c| self.live(*c).is_some());
        let mut now = Vec::new();
        for (key, conn) in self.conns.iter() {
            if let State::WsReady(session) = &conn.state {
                if session.ledger.catching_up() {
                    rescan.insert(conn.conn_ref(self.id, key));
                } else {
                    now.push(key);
                }
            }
        }
        self.rescan = rescan;
        for key in now {
            self.start_catch_up(key, None);
        }
        self.shared.delivery.resynced();
    }

    /// A signed-in connection leaves its session (closing or dropped): it
    /// leaves the registry, and what its client confirmed is still checked.
    pub(super) fn leave_session(&mut self, key: usize) {
        let id = self.id;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let me = conn.conn_ref(id, key);
        if !matches!(conn.state, State::WsReady(_)) {
            return;
        }
        let State::WsReady(mut session) = std::mem::replace(&mut conn.state, State::Closing) else {
            return;
        };
        if session.ledger.awaits_tcp() {
            if let Some(pos) = conn.out.acknowledged(&conn.stream) {
                session.ledger.tcp_acked(pos);
            }
        }
        let ids = session.ledger.take_confirmed();
        if !ids.is_empty() {
            self.orphans.push(Confirmed {
                conn: me,
                uid: session.uid,
                ids,
            });
        }
        self.rescan.remove(&me);
        self.shared.delivery.registry.remove(session.uid, me);
        self.stats().authenticated.fetch_sub(1, Relaxed);
    }
}
