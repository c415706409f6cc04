//! A signed-in connection's delivery bookkeeping, kept by its reactor: which
//! stored messages were written to it, which of those its client has
//! confirmed (by Cmd 22, or for a client that does not acknowledge, by its
//! TCP stack acknowledging the bytes), where its catching up stands, and the
//! live messages held back while it catches up. Pure bookkeeping: no I/O.

use std::collections::VecDeque;

use crate::ws::SharedFrame;

/// Written messages a connection remembers while waiting for their
/// confirmation; past this the oldest are forgotten (they stay pending and
/// come again on the next catching up).
const MAX_UNCONFIRMED: usize = 65_536;

/// Where a connection's catching up stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    /// Not catching up: live messages are written as they come.
    Off,
    /// A worker is reading the next batch of pending messages.
    Reading,
    /// A batch was queued; the next is read once the connection's output
    /// has drained below the low-water mark. Holds the newest id pushed.
    Draining(u64),
    /// A read failed or could not be queued; retried by the sweep from
    /// this id (the stored cursor when `None`).
    Retry(Option<u64>),
}

/// Delivery bookkeeping of one signed-in connection.
#[derive(Debug)]
pub struct Ledger {
    /// The client confirms with Cmd 22 (declared at sign-in with `"Ack":
    /// true`, or by sending Cmd 22): written bytes never count.
    pub acks: bool,
    /// The catching up.
    pub catch_up: CatchUp,
    /// The newest id written by the catching up: it read every message
    /// stored up to there, so a live push at or below it is skipped. (Live
    /// pushes above it may arrive out of id order: in a cluster a message
    /// from another node comes a hop after a newer local one.)
    pub synced: u64,
    /// Live messages that came while catching up, written when it ends.
    held: Vec<(SharedFrame, u64)>,
    held_bytes: usize,
    /// More live messages came than may be held: they were let go, and the
    /// catching up reads on from the store instead.
    overflowed: bool,
    /// Written, not yet confirmed: (stream position after its last byte, id).
    unconfirmed: VecDeque<(u64, u64)>,
    /// Confirmed ids the stored cursor does not cover yet, ascending.
    confirmed: Vec<u64>,
    /// `confirmed` has ids no check has seen yet (or a check asked to try again).
    fresh: bool,
}

impl Ledger {
    /// A connection that just signed in and starts catching up.
    pub fn new(acks: bool) -> Ledger {
        Ledger {
            acks,
            catch_up: CatchUp::Reading,
            synced: 0,
            held: Vec::new(),
            held_bytes: 0,
            overflowed: false,
            unconfirmed: VecDeque::new(),
            confirmed: Vec::new(),
            fresh: false,
        }
    }

    /// Whether the connection is catching up (live messages wait).
    pub fn catching_up(&self) -> bool {
        self.catch_up != CatchUp::Off
    }

    /// Message `id` was queued for the client, its last byte at stream
    /// position `end`.
    pub fn written(&mut self, id: u64, end: u64) {
        if self.unconfirmed.len() >= MAX_UNCONFIRMED {
            self.unconfirmed.pop_front();
        }
        self.unconfirmed.push_back((end, id));
    }

    /// Holds a live message while catching up; `false` when it was let go
    /// because more than `max` bytes are held (the catching up will read it
    /// from the store).
    pub fn hold(&mut self, frame: &SharedFrame, id: u64, max: usize) -> bool {
        if self.overflowed || self.held_bytes + frame.len() > max {
            self.overflowed = true;
            self.held = Vec::new();
            self.held_bytes = 0;
            return false;
        }
        self.held_bytes += frame.len();
        self.held.push((frame.clone(), id));
        true
    }

    /// The catching up read everything: the held live messages it did not
    /// write, or `None` when some were let go and it must read on.
    pub fn finish_catch_up(&mut self) -> Option<Vec<(SharedFrame, u64)>> {
        self.held_bytes = 0;
        if std::mem::take(&mut self.overflowed) {
            self.held = Vec::new();
            return None;
        }
        self.catch_up = CatchUp::Off;
        let synced = self.synced;
        let mut held = std::mem::take(&mut self.held);
        held.retain(|(_, id)| *id > synced);
        Some(held)
    }

    /// Catching up starts again (from the stored cursor or a given id):
    /// what is held is dropped, it will be read from the store.
    pub fn restart_catch_up(&mut self) {
        self.catch_up = CatchUp::Reading;
        self.held = Vec::new();
        self.held_bytes = 0;
        self.overflowed = false;
    }

    /// Cmd 22 `upto`: the client has every message written to it up to the
    /// one with id `upto`, in write order (a message written later, even
    /// with a lower id — a bus hop behind — is not confirmed by it). An id
    /// that waits for no confirmation confirms nothing more.
    pub fn ack(&mut self, upto: u64) {
        let Some(last) = self.unconfirmed.iter().rposition(|&(_, id)| id == upto) else {
            return;
        };
        let done: Vec<(u64, u64)> = self.unconfirmed.drain(..=last).collect();
        for (_, id) in done {
            self.confirm(id);
        }
    }

    /// The peer's TCP stack acknowledged the stream up to position `pos`
    /// (clients that do not acknowledge).
    pub fn tcp_acked(&mut self, pos: u64) {
        while let Some(&(end, id)) = self.unconfirmed.front() {
            if end > pos {
                break;
            }
            self.unconfirmed.pop_front();
            self.confirm(id);
        }
    }

    fn confirm(&mut self, id: u64) {
        if let Err(at) = self.confirmed.binary_search(&id) {
            self.confirmed.insert(at, id);
            self.fresh = true;
        }
    }

    /// Whether written messages wait for the peer's TCP acknowledgement.
    pub fn awaits_tcp(&self) -> bool {
        !self.acks && !self.unconfirmed.is_empty()
    }

    /// The confirmed ids to check against the store now, if any are new.
    pub fn to_check(&mut self) -> Option<Vec<u64>> {
        if !std::mem::take(&mut self.fresh) || self.confirmed.is_empty() {
            return None;
        }
        Some(self.confirmed.clone())
    }

    /// Every confirmed id not yet covered by the stored cursor (the
    /// connection is going away; they are checked without it).
    pub fn take_confirmed(&mut self) -> Vec<u64> {
        self.fresh = false;
        std::mem::take(&mut self.confirmed)
    }

    /// A check moved the stored cursor to `upto`; `again` when some
    /// confirmed ids could not be counted yet and must be checked later.
    pub fn checked(&mut self, upto: u64, again: bool) {
        self.confirmed.retain(|&id| id > upto);
        if again && !self.confirmed.is_empty() {
            self.fresh = true;
        }
    }

    /// Whether message `id` was written and waits for its confirmation.
    pub fn in_flight(&self, id: u64) -> bool {
        self.unconfirmed.iter().any(|&(_, i)| i == id)
    }

    /// Catching up restarts from the stored cursor `upto`: everything above
    /// it will be written again.
    pub fn rewind(&mut self, upto: u64) {
        self.confirmed.clear();
        self.unconfirmed.clear();
        self.fresh = false;
        self.synced = upto;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_acknowledgement_confirms_what_was_written_before_it() {
        let mut l = Ledger::new(true);
        l.written(5, 100);
        l.written(9, 200);
        l.written(7, 300); // a later hop, out of id order
        l.written(12, 400);
        l.written(6, 500); // behind 12, not yet received when 12 is acknowledged
        l.ack(7);
        assert_eq!(l.to_check(), Some(vec![5, 7, 9]));
        assert!(l.in_flight(12));
        assert_eq!(l.to_check(), None);
        l.checked(9, false);
        l.ack(12);
        assert_eq!(l.to_check(), Some(vec![12]));
        assert!(l.in_flight(6));
        l.ack(99);
        assert!(l.in_flight(6));
    }

    #[test]
    fn tcp_acknowledgement_counts_whole_frames_only() {
        let mut l = Ledger::new(false);
        l.written(1, 100);
        l.written(2, 250);
        assert!(l.awaits_tcp());
        l.tcp_acked(249);
        assert_eq!(l.take_confirmed(), vec![1]);
        l.tcp_acked(250);
        assert!(!l.awaits_tcp());
        assert_eq!(l.to_check(), Some(vec![2]));
    }

    #[test]
    fn held_messages_overflow_into_reading_on() {
        let f: SharedFrame = vec![0u8; 10].into();
        let mut l = Ledger::new(true);
        assert!(l.hold(&f, 3, 25));
        assert!(l.hold(&f, 4, 25));
        assert!(!l.hold(&f, 5, 25));
        assert_eq!(l.finish_catch_up(), None);
        assert!(l.catching_up());
        assert!(l.hold(&f, 6, 25));
        l.synced = 5;
        let held = l.finish_catch_up().unwrap();
        assert_eq!(held.iter().map(|(_, id)| *id).collect::<Vec<_>>(), vec![6]);
        assert!(!l.catching_up());
    }

    #[test]
    fn a_check_keeps_what_the_cursor_does_not_cover() {
        let mut l = Ledger::new(true);
        for (i, id) in [3, 4, 8].into_iter().enumerate() {
            l.written(id, i as u64);
        }
        l.ack(8);
        assert_eq!(l.to_check(), Some(vec![3, 4, 8]));
        l.checked(4, true);
        assert_eq!(l.to_check(), Some(vec![8]));
        l.rewind(4);
        assert_eq!(l.to_check(), None);
        assert_eq!(l.take_confirmed(), Vec::<u64>::new());
    }
}
