//! The worker side of delivery: reading a connection's pending messages one
//! batch at a time (its reactor asks for the next batch once the previous
//! one has drained), and checking what connections confirmed against the
//! store before moving delivery cursors (see the contract in
//! [`crate::delivery`]).

use std::time::Duration;

use crate::chat::message_push;
use crate::message::now_millis;
use crate::node::Shared;
use crate::reactor::{ConnRef, Inbox};
use crate::store::{Feed, StoreError};
use crate::ws::SharedFrame;

/// Pending messages read per batch.
const BATCH: u32 = 100;
/// Pending messages a check looks at beyond a user's cursor.
const CHECK_LIMIT: u32 = 1000;
/// A pending message a connection did not get is a hole (caught up again)
/// once it is this old; younger, it may still be on its way (a bus hop).
pub const HOLE_GRACE: Duration = Duration::from_secs(5);

/// Pending messages for one connection: their frames in one buffer, and
/// each message's id with the offset just past its frame.
#[derive(Debug)]
pub struct Batch {
    /// The frames, oldest first.
    pub frames: SharedFrame,
    /// `(id, end offset in frames)` of each message.
    pub ends: Vec<(u64, usize)>,
}

/// Whether more pending messages may follow a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum More {
    /// Nothing more is pending.
    Done,
    /// A full batch: read on after `upto`.
    Yes,
    /// The store failed; try again later from `upto`.
    Failed,
}

/// Reads one batch of a user's pending messages after `after` (the user's
/// delivery cursor when `None`) and hands it to the connection's reactor.
pub fn read_batch(node: &Shared, conn: ConnRef, uid: u64, after: Option<u64>) {
    let start = match after {
        Some(a) => a,
        None => match node.store.delivered_upto(uid) {
            Ok(a) => a,
            Err(e) => {
                log::warn!("pending for user {uid}: {e}");
                node.delivery.caught_up(conn, None, 0, More::Failed);
                return;
            }
        },
    };
    let msgs = match node.store.feed(uid, start, BATCH, Feed::Pending) {
        Ok(m) => m,
        Err(e) => {
            log::warn!("pending for user {uid}: {e}");
            node.delivery.caught_up(conn, None, start, More::Failed);
            return;
        }
    };
    let Some(newest) = msgs.last().map(|m| m.id) else {
        node.delivery.caught_up(conn, None, start, More::Done);
        return;
    };
    let mut frames = Vec::new();
    let mut ends = Vec::with_capacity(msgs.len());
    for m in &msgs {
        frames.extend_from_slice(&crate::ws::text_frame(&message_push(m).to_json()));
        ends.push((m.id, frames.len()));
    }
    let more = if msgs.len() < BATCH as usize {
        More::Done
    } else {
        More::Yes
    };
    let batch = Batch {
        frames: frames.into(),
        ends,
    };
    node.delivery.caught_up(conn, Some(batch), newest, more);
}

/// What one connection confirmed since its last check.
#[derive(Debug)]
pub struct Confirmed {
    /// The connection (its reactor hears the outcome).
    pub conn: ConnRef,
    /// Its user.
    pub uid: u64,
    /// Confirmed ids the stored cursor may not cover, ascending.
    pub ids: Vec<u64>,
}

/// How a check of confirmations went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// The user's cursor now.
    pub upto: u64,
    /// The oldest pending message above it that was not confirmed:
    /// `(id, created_at ms)`.
    pub gap: Option<(u64, i64)>,
    /// Some confirmed ids are above `upto`: check them again later.
    pub again: bool,
}

/// Checks confirmations against the store and moves the cursors (one
/// transaction for all of them); tells each connection's reactor where its
/// user's cursor stands and what is missing.
pub fn check(node: &Shared, list: Vec<Confirmed>) {
    let mut outcomes = Vec::with_capacity(list.len());
    let mut advances = Vec::new();
    for c in &list {
        match check_one(node, c) {
            Ok((checked, from)) => {
                if checked.upto > from {
                    advances.push((c.uid, checked.upto));
                }
                outcomes.push(Some(checked));
            }
            Err(e) => {
                log::warn!("delivery check for user {}: {e}", c.uid);
                outcomes.push(None);
            }
        }
    }
    let stored = match node.store.advance_delivered(&advances) {
        Ok(()) => true,
        Err(e) => {
            log::warn!(
                "delivery cursors not advanced ({} users): {e}",
                advances.len()
            );
            false
        }
    };
    for (c, outcome) in list.into_iter().zip(outcomes) {
        // Not checked, or not stored: the connection keeps its ids and
        // asks again.
        let checked = match outcome {
            Some(ch) if stored => ch,
            _ => Checked {
                upto: 0,
                gap: None,
                again: true,
            },
        };
        node.delivery.send_to(
            c.conn,
            Inbox::Checked {
                conn: c.conn,
                checked,
            },
        );
    }
}

/// One connection's check: `(outcome, cursor before)`.
fn check_one(node: &Shared, c: &Confirmed) -> Result<(Checked, u64), StoreError> {
    let cursor = node.store.delivered_upto(c.uid)?;
    let top = c.ids.last().copied().unwrap_or(0);
    let mut checked = Checked {
        upto: cursor,
        gap: None,
        again: false,
    };
    if top <= cursor {
        return Ok((checked, cursor));
    }
    // Every pending message up to `top` is either confirmed or the first
    // gap: no more than one row beyond the confirmed ids is needed.
    let limit = (c.ids.len() as u32).saturating_add(1).min(CHECK_LIMIT);
    let pending = node.store.feed(c.uid, cursor, limit, Feed::Pending)?;
    checked.upto = top;
    for m in pending.iter().take_while(|m| m.id <= top) {
        if c.ids.binary_search(&m.id).is_err() {
            checked.upto = m.id - 1;
            checked.gap = Some((m.id, m.created_at));
            checked.again = true;
            break;
        }
    }
    if checked.gap.is_none() && pending.len() == limit as usize {
        if let Some(last) = pending.last().filter(|m| m.id < top) {
            checked.upto = last.id;
            checked.again = true;
        }
    }
    Ok((checked, cursor))
}

/// Whether a gap is a hole: the message is older than [`HOLE_GRACE`].
pub fn is_hole(created_at_ms: i64) -> bool {
    now_millis() - created_at_ms > HOLE_GRACE.as_millis() as i64
}
