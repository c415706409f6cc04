//! The blocking worker pool: REST handlers, a signed-in connection's
//! catching up on pending messages and the delivery cursors' updates run
//! here, fed by a bounded crossbeam queue; chat messages are stored by the
//! committer (`commit`). A worker answers through the connection's reactor
//! inbox and never touches a client socket.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Receiver;

use crate::chat;
use crate::http::{Request, Response};
use crate::node::Shared;
use crate::reactor::{ConnRef, Inbox};
use crate::supervise::{self, Role};

/// Work for a worker.
#[derive(Debug)]
pub enum Task {
    /// An HTTP request; the answer goes back as `Inbox::Reply`.
    Http {
        /// The request.
        req: Request,
        /// Whether the connection stays open after the answer.
        keep_alive: bool,
    },
    /// Push a user's pending messages to one connection, after this id
    /// (the user's delivery cursor when `None`).
    Pending {
        /// The user.
        uid: u64,
        /// Where to start.
        after: Option<u64>,
    },
    /// Move delivery cursors forward (`(user, id)` pairs).
    Delivered(Vec<(u64, u64)>),
}

/// One queued task and the connection it came from.
#[derive(Debug)]
pub struct Job {
    /// Where answers go.
    pub conn: ConnRef,
    /// What to do.
    pub task: Task,
    /// When the reactor queued it.
    pub enqueued: Instant,
}

/// Starts `n` workers; they run until the queue's senders are gone (a
/// worker's loop that panics outside a job runs again).
pub fn spawn(
    n: usize,
    jobs: Receiver<Job>,
    shared: Arc<Shared>,
    cpus: Option<Vec<usize>>,
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    (0..n)
        .map(|i| {
            let (jobs, s, cpus) = (jobs.clone(), shared.clone(), cpus.clone());
            supervise::restarting(
                &shared,
                Role::Worker,
                format!("weim-worker-{i}"),
                move || {
                    if let Some(cpus) = &cpus {
                        crate::node::pin_to(cpus);
                    }
                    run(&jobs, &s)
                },
            )
        })
        .collect()
}

fn run(jobs: &Receiver<Job>, shared: &Shared) {
    while let Ok(job) = jobs.recv() {
        shared.active_jobs.fetch_add(1, Relaxed);
        work(shared, job.conn, job.task);
        shared.metrics.job_done(job.enqueued.elapsed());
        shared.active_jobs.fetch_sub(1, Relaxed);
    }
}

/// Runs one task; a panic is logged and (for a request) answered 500, and
/// the worker carries on.
fn work(shared: &Shared, conn: ConnRef, task: Task) {
    let outcome = match task {
        Task::Http { req, keep_alive } => {
            let resp = catch_unwind(AssertUnwindSafe(|| crate::api::handle(shared, &req)))
                .unwrap_or_else(|_| {
                    log::error!("handler panicked on {} {}", req.method, req.path);
                    Response::error(500)
                });
            shared.delivery.send_to(
                conn,
                Inbox::Reply {
                    conn,
                    bytes: resp.encode(keep_alive),
                    keep_alive,
                },
            );
            Ok(())
        }
        other => catch_unwind(AssertUnwindSafe(|| socket_task(shared, conn, other))),
    };
    if outcome.is_err() {
        log::error!("a socket task panicked");
    }
}

fn socket_task(shared: &Shared, conn: ConnRef, task: Task) {
    match task {
        Task::Http { .. } => {}
        Task::Pending { uid, after } => {
            if after.is_none() {
                // First catch-up of this connection: presence before the read.
                shared.delivery.announce(uid);
            }
            chat::push_pending(shared, conn, uid, after)
        }
        Task::Delivered(updates) => {
            if let Err(e) = shared.store.advance_delivered(&updates) {
                log::warn!(
                    "delivery cursors not advanced ({} users): {e}",
                    updates.len()
                );
            }
        }
    }
}
