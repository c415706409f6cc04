//! Group commit of chat messages. One thread takes every message waiting
//! to be stored, writes them in one transaction (one disk sync for the
//! batch), then pushes each to its recipients and answers its sender.
//!
//! Why: a disk sync costs about 3 ms on the machines weim is measured on,
//! so one transaction per message caps a node at a few hundred messages per
//! second; a batch shares that cost. Durability is unchanged: nothing is
//! answered or pushed before its batch has committed.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use crate::chat::message_push;
use crate::message::{cmd, now_millis, Push};
use crate::node::Shared;
use crate::reactor::ConnRef;
use crate::store::{Message, NewMessage, StoreError};

/// Most messages stored in one transaction.
const MAX_BATCH: usize = 512;
/// How long a worker waits for room in a full committer queue.
const SUBMIT_WAIT: Duration = Duration::from_secs(5);

/// A checked message waiting to be stored.
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
    /// Users whose connections receive the push.
    pub recipients: Vec<u64>,
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
    Caller(Sender<Result<Message, StoreError>>),
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
                commit(&shared, batch);
                shared.committer.busy.store(false, Relaxed);
            }
        })
        .map(drop)
}

fn commit(shared: &Shared, batch: Vec<Submission>) {
    let now = now_millis();
    let news: Vec<NewMessage<'_>> = batch
        .iter()
        .map(|s| NewMessage {
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
            let pushes: Vec<_> = batch
                .iter()
                .zip(&stored)
                .filter(|(_, (_, new))| *new)
                .map(|(s, (msg, _))| {
                    let frame = message_push(msg).frame();
                    (s.recipients.as_slice(), frame, msg.id, s.origin)
                })
                .collect();
            shared.delivery.deliver_messages(&pushes);
            for (s, (msg, _)) in batch.into_iter().zip(stored) {
                answer(shared, s.answer, s.cid.as_deref(), Ok(msg));
            }
        }
        Err(e) => {
            log::warn!("{} messages not stored: {e}", batch.len());
            for s in batch {
                answer(shared, s.answer, s.cid.as_deref(), Err(e.clone()));
            }
        }
    }
}

fn answer(shared: &Shared, to: Answer, cid: Option<&str>, outcome: Result<Message, StoreError>) {
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
                Err(e) => Push::system(cmd::FAIL, crate::chat::ChatError::Store(e).text()),
            };
            shared.delivery.reply(conn, push.frame());
        }
    }
}
