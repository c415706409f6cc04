//! Group commit of chat messages. One thread takes every message waiting
//! to be stored, checks the senders' relations to their recipients for the
//! whole batch (one friendship query, one member list per group), writes
//! the accepted ones in one transaction (one disk sync for the batch), then
//! pushes each to its recipients and answers its sender (and queues the
//! batch for the `message.offline` webhook).
//!
//! Why: a disk sync costs 0.2–3 ms on the machines weim is measured on, so
//! one transaction per message caps a node at a few hundred to a few
//! thousand messages per second; a batch shares that cost, and so do the
//! relation checks and the round trips to a MySQL server. Durability is
//! unchanged: nothing is answered or pushed before its batch has committed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::chat::{message_push, ChatError};
use crate::fault::Fault;
use crate::message::{cmd, now_millis, Push};
use crate::node::Shared;
use crate::reactor::ConnRef;
use crate::store::messages::OPE_GROUP;
use crate::store::{Message, NewMessage, StoreError};
use crate::supervise::{self, Role};
use crate::webhook::Kind;

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
    /// Sent through the server API (a bot or a system account): no
    /// friendship or group membership check.
    pub backend: bool,
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
/// A panic while storing a batch answers that batch's senders not yet
/// answered with a failure, and the loop carries on with the next batch.
pub fn spawn(rx: Receiver<Submission>, shared: Arc<Shared>) -> std::io::Result<()> {
    let s = Arc::clone(&shared);
    // The batch in hand: still here after a panic, when the loop runs again.
    let mut current: Option<Batch> = None;
    supervise::restarting(&shared, Role::Committer, "weim-commit".into(), move || {
        if let Some(lost) = current.take() {
            lost.abandon(&s);
            s.committer.busy.store(false, Relaxed);
        }
        while let Ok(first) = rx.recv() {
            s.committer.busy.store(true, Relaxed);
            let mut items = vec![first];
            while items.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(m) => items.push(m),
                    Err(_) => break,
                }
            }
            s.metrics.commit_batches.fetch_add(1, Relaxed);
            let n = items.len() as u64;
            s.metrics.commit_messages.fetch_add(n, Relaxed);
            commit(&s, current.insert(Batch::new(items)));
            current = None;
            s.send_rate.prune(Instant::now());
            s.committer.busy.store(false, Relaxed);
        }
    })
    .map(drop)
}

/// A batch being stored, and which of its senders have had their answer.
struct Batch {
    items: Vec<Submission>,
    answered: Vec<bool>,
}

impl Batch {
    fn new(items: Vec<Submission>) -> Batch {
        let answered = vec![false; items.len()];
        Batch { items, answered }
    }

    /// Answers the sender of message `i`, unless it already was.
    fn answer(&mut self, shared: &Shared, i: usize, outcome: Result<Message, ChatError>) {
        if !std::mem::replace(&mut self.answered[i], true) {
            let s = &self.items[i];
            answer(shared, &s.answer, s.cid.as_deref(), outcome);
        }
    }

    /// After a panic: the senders not yet answered learn that their message
    /// failed (it may have been stored: a retry with its `cid` says).
    fn abandon(mut self, shared: &Shared) {
        for i in 0..self.items.len() {
            let failed = StoreError::Other("the committer failed on this batch".into());
            self.answer(shared, i, Err(ChatError::Store(failed)));
        }
    }
}

fn commit(shared: &Shared, batch: &mut Batch) {
    let mut accepted = Vec::with_capacity(batch.items.len());
    for (i, verdict) in relations(shared, &batch.items).into_iter().enumerate() {
        match verdict {
            Ok(uids) => accepted.push((i, uids)),
            Err(e) => batch.answer(shared, i, Err(e)),
        }
    }
    if accepted.is_empty() {
        return;
    }
    if let Some(fault) = shared.config.fault {
        for &(i, _) in &accepted {
            fault.trip(Fault::CommitPanic, &batch.items[i].body);
        }
    }
    let now = now_millis();
    let news: Vec<NewMessage<'_>> = accepted
        .iter()
        .map(|&(i, _)| {
            let s = &batch.items[i];
            NewMessage {
                from_id: s.from_id,
                to_id: s.to_id,
                ope: s.ope,
                kind: s.kind,
                body: &s.body,
                cid: s.cid.as_deref(),
                now_ms: now,
            }
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
                .map(|((i, uids), (msg, _))| {
                    let frame = message_push(msg).frame();
                    (&uids[..], frame, msg.id, batch.items[*i].origin)
                })
                .collect();
            shared.delivery.deliver_messages(&pushes);
            drop(pushes);
            // The send limit charged one recipient when it admitted each
            // message; a group message costs its other recipients too.
            if shared.send_rate.enabled() {
                let now = Instant::now();
                for ((i, uids), (_, new)) in accepted.iter().zip(&stored) {
                    if *new && !batch.items[*i].backend {
                        let from = batch.items[*i].from_id;
                        let others = uids.iter().filter(|&&u| u != from).count() as u64;
                        shared.send_rate.charge(from, others.saturating_sub(1), now);
                    }
                }
            }
            let webhook = shared.webhook.as_ref();
            if let Some(w) = webhook.filter(|w| w.wants(Kind::MessageOffline)) {
                w.stored(
                    accepted
                        .iter()
                        .zip(&stored)
                        .filter(|(_, (_, new))| *new)
                        .map(|((_, uids), (msg, _))| (msg.clone(), Arc::clone(uids)))
                        .collect(),
                );
            }
            for ((i, _), (msg, _)) in accepted.into_iter().zip(stored) {
                batch.answer(shared, i, Ok(msg));
            }
        }
        Err(e) => {
            log::warn!("{} messages not stored: {e}", accepted.len());
            for (i, _) in accepted {
                batch.answer(shared, i, Err(ChatError::Store(e.clone())));
            }
        }
    }
}

/// A message's recipients, or why it is refused.
type Verdict = Result<Arc<[u64]>, ChatError>;

/// Who receives each message of the batch, or why it is refused: a friend
/// message goes to both friends (every device of the sender too), a group
/// message to every member (a message from the server API skips both
/// checks, but its group must exist). One friendship query for the batch and one
/// member list per group, shared by that group's messages. A failed query
/// refuses only the messages that needed it: the friend messages when the
/// friendship query failed, one group's messages when its member list did.
fn relations(shared: &Shared, batch: &[Submission]) -> Vec<Verdict> {
    let pairs: Vec<(u64, u64)> = batch
        .iter()
        .filter(|s| s.ope != OPE_GROUP && !s.backend)
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
            if s.ope != OPE_GROUP && s.backend {
                return Ok(Arc::from([s.to_id, s.from_id]));
            }
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
                Ok(m) if !s.backend && m.binary_search(&s.from_id).is_err() => {
                    Err(ChatError::Rule("您不是群成员"))
                }
                Ok(m) => Ok(Arc::clone(m)),
            }
        })
        .collect()
}

fn answer(shared: &Shared, to: &Answer, cid: Option<&str>, outcome: Result<Message, ChatError>) {
    match *to {
        Answer::Caller(ref tx) => {
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
