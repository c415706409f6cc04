//! Group commit of chat messages. One thread takes every message waiting
//! to be stored, checks the senders' relations to their recipients for the
//! whole batch (one friendship query, one member list per group), writes
//! the accepted ones in one transaction (one disk sync for the batch), then
//! pushes each to its recipients and answers its sender.
//!
//! Why: a disk sync costs 0.2–3 ms on the machines weim is measured on, so
//! one transaction per message caps a node at a few hundred to a few
//! thousand messages per second; a batch shares that cost, and so do the
//! relation checks and the round trips to a MySQL server. Durability is
//! unchanged: nothing is answered or pushed before its batch has committed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::chat::{message_push, ChatError};
use crate::fault::Fault;
use crate::message::{cmd, now_millis, Push};
use crate::node::Shared;
use crate::reactor::ConnRef;
use crate::store::messages::OPE_GROUP;
use crate::store::{Message, NewMessage, StoreError};

/// Most messages stored in one transaction.
const MAX_BATCH: usize = 512;
/// How long a worker waits for room in a full committer queue.
const SUBMIT_WAIT: Duration = Duration::from_secs(5);

/// A validated message waiting to be stored.
#[derive(Debug)]
pub struct Submission {
    /// Sender.
    pub from_id: u64,
    /// Recipient user or group.
    pub to_id: u64,
    /// 0 friend, 1 group.
    pub ope: i64,
    /// Content type.
    pub kind: i64,
    /// Content.
    pub body: String,
    /// Client message id.
    pub cid: Option<String>,
    /// The sending connection, which gets the answer instead of the push.
    pub origin: Option<ConnRef>,
    /// Where the outcome goes.
    pub answer: Answer,
}

/// How a sender learns the outcome.
#[derive(Debug)]
pub enum Answer {
    /// Over the socket: Cmd 21 with the stored id, or Cmd 2.
    Socket(ConnRef),
    /// To a waiting worker (REST).
    Caller(Sender<Result<Message, ChatError>>),
}

/// The queue into the committer thread.
pub struct Committer {
    tx: Sender<Submission>,
    busy: AtomicBool,
}

impl Committer {
    /// A committer queue holding at most `capacity` messages.
    pub fn new(capacity: usize) -> (Committer, Receiver<Submission>) {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        (
            Committer {
                tx,
                busy: AtomicBool::new(false),
            },
            rx,
        )
    }

    /// Queues a message, waiting up to [`SUBMIT_WAIT`] for room: a full
    /// queue holds the worker, so the job queue fills and the reactors stop
    /// reading senders (backpressure) instead of refusing; `false` when the
    /// wait ran out.
    pub fn submit(&self, s: Submission) -> bool {
        self.tx.send_timeout(s, SUBMIT_WAIT).is_ok()
    }

    /// Queues a message if there is room now (a reactor never waits); a
    /// full queue hands it back.
    #[allow(clippy::result_large_err)]
    pub fn try_submit(&self, s: Submission) -> Result<(), Submission> {
        self.tx.try_send(s).map_err(|e| match e {
            TrySendError::Full(s) | TrySendError::Disconnected(s) => s,
        })
    }

    /// No room in the queue now.
    pub fn is_full(&self) -> bool {
        self.tx.is_full()
    }

    /// Nothing queued and no batch being stored.
    pub fn is_idle(&self) -> bool {
        self.tx.is_empty() && !self.busy.load(Relaxed)
    }
}

/// Starts the committer thread; it runs until the queue's senders are gone.
pub fn spawn(rx: Receiver<Submission>, shared: Arc<Shared>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("weim-commit".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                shared.committer.busy.store(true, Relaxed);
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(s) => batch.push(s),
                        Err(_) => break,
                    }
                }
                shared.metrics.commit_batches.fetch_add(1, Relaxed);
                let n = batch.len() as u64;
                shared.metrics.commit_messages.fetch_add(n, Relaxed);
                commit(&shared, batch);
                shared.committer.busy.store(false, Relaxed);
            }
        })
        .map(drop)
}

fn commit(shared: &Shared, batch: Vec<Submission>) {
    let verdicts = relations(shared, &batch);
    let mut accepted = Vec::with_capacity(batch.len());
    for (s, verdict) in batch.into_iter().zip(verdicts) {
        match verdict {
            Ok(uids) => accepted.push((s, uids)),
            Err(e) => answer(shared, s.answer, None, Err(e)),
        }
    }
    if accepted.is_empty() {
        return;
    }
    if let Some(fault) = shared.config.fault {
        for (s, _) in &accepted {
            fault.trip(Fault::CommitPanic, &s.body);
        }
    }
    let now = now_millis();
    let news: Vec<NewMessage<'_>> = accepted
        .iter()
        .map(|(s, _)| NewMessage {
            from_id: s.from_id,
            to_id: s.to_id,
            ope: s.ope,
            kind: s.kind,
            body: &s.body,
            cid: s.cid.as_deref(),
            now_ms: now,
        })
        .collect();
    let results = shared.store.insert_messages(&news);
    drop(news);
    match results {
        Ok(stored) => {
            // Pushed as one batch (in a cluster: one round of Redis calls
            // for the batch, not one per message), then answered.
            let pushes: Vec<_> = accepted
                .iter()
                .zip(&stored)
                .filter(|(_, (_, new))| *new)
                .map(|((s, uids), (msg, _))| {
                    let frame = message_push(msg).frame();
                    (&uids[..], frame, msg.id, s.origin)
                })
                .collect();
            shared.delivery.deliver_messages(&pushes);
            for ((s, _), (msg, _)) in accepted.into_iter().zip(stored) {
                answer(shared, s.answer, s.cid.as_deref(), Ok(msg));
            }
        }
        Err(e) => {
            log::warn!("{} messages not stored: {e}", accepted.len());
            for (s, _) in accepted {
                answer(shared, s.answer, None, Err(ChatError::Store(e.clone())));
            }
        }
    }
}

/// A message's recipients, or why it is refused.
type Verdict = Result<Arc<[u64]>, ChatError>;

/// Who receives each message of the batch, or why it is refused: a friend
/// message goes to both friends (every device of the sender too), a group
/// message to every member. One friendship query for the batch and one
/// member list per group, shared by that group's messages. A failed query
/// refuses only the messages that needed it: the friend messages when the
/// friendship query failed, one group's messages when its member list did.
fn relations(shared: &Shared, batch: &[Submission]) -> Vec<Verdict> {
    let pairs: Vec<(u64, u64)> = batch
        .iter()
        .filter(|s| s.ope != OPE_GROUP)
        .map(|s| (s.from_id, s.to_id))
        .collect();
    let friends = if pairs.is_empty() {
        Ok(Vec::new())
    } else {
        shared.store.friendships(&pairs)
    };
    if let Err(e) = &friends {
        log::warn!("{} friend messages not checked: {e}", pairs.len());
    }
    let mut friends = friends.map(Vec::into_iter);
    let mut groups: HashMap<u64, Result<Arc<[u64]>, StoreError>> = HashMap::new();
    batch
        .iter()
        .map(|s| {
            if s.ope != OPE_GROUP {
                return match &mut friends {
                    Ok(f) => match f.next() {
                        Some(true) => Ok(Arc::from([s.to_id, s.from_id])),
                        _ => Err(ChatError::Rule("对方不是你的好友")),
                    },
                    Err(e) => Err(ChatError::Store(e.clone())),
                };
            }
            let members = groups.entry(s.to_id).or_insert_with(|| {
                let members = shared.store.group_member_ids(s.to_id);
                if let Err(e) = &members {
                    log::warn!("messages to group {} not checked: {e}", s.to_id);
                }
                members.map(Arc::from)
            });
            match members {
                Err(e) => Err(ChatError::Store(e.clone())),
                Ok(m) if m.is_empty() => Err(ChatError::Rule("群组不存在")),
                Ok(m) if m.binary_search(&s.from_id).is_err() => {
                    Err(ChatError::Rule("您不是群成员"))
                }
                Ok(m) => Ok(Arc::clone(m)),
            }
        })
        .collect()
}

fn answer(shared: &Shared, to: Answer, cid: Option<&str>, outcome: Result<Message, ChatError>) {
    match to {
        Answer::Caller(tx) => {
            let _ = tx.send(outcome);
        }
        Answer::Socket(conn) => {
            let push = match outcome {
                Ok(m) => Push {
                    id: m.id,
                    ..Push::system(cmd::SEND_ACK, cid.unwrap_or(""))
                },
                Err(e) => Push::system(cmd::FAIL, e.text()),
            };
            shared.delivery.reply(conn, push.frame());
        }
    }
}
