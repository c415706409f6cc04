//! The blocking worker pool: REST handlers, the pieces of streamed HTTP
//! bodies, a signed-in connection's batches of pending messages and the
//! checks of what connections confirmed run here, fed by a bounded
//! crossbeam queue; chat messages are stored by the committer (`commit`).
//! A worker answers through the connection's reactor inbox and never
//! touches a client socket.

use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Receiver;

use crate::access::refusal_text;
use crate::auth::Identity;
use crate::budget::Reservation;
use crate::delivery::pending::{self, Confirmed};
use crate::http::{BodyStream, Request, Response};
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
        /// Its body's share of `limits.max_inflight_body`, given back when
        /// the request was handled.
        body: Option<Reservation>,
    },
    /// Read the next piece of a streamed body; the piece (and the rest)
    /// go back as `Inbox::Body`.
    ReadBody(BodyStream),
    /// Read one batch of a user's pending messages for one connection,
    /// after this id (the user's delivery cursor when `None`).
    Pending {
        /// The user.
        uid: u64,
        /// Where to start.
        after: Option<u64>,
    },
    /// Check what connections confirmed and move delivery cursors.
    Confirmed(Vec<Confirmed>),
    /// Check that the user of a valid Cmd 3 token may sign in; the answer
    /// goes back as `Inbox::Checked`.
    SignIn {
        /// The token's user and session.
        who: Identity,
        /// Whether the client acknowledges with Cmd 22.
        acks: bool,
    },
}

/// Cmd 2 to a refused sign-in.
pub const AUTH_FAILED: &str = "认证失败";
/// Cmd 2 to a sign-in that could not be checked (store down, job queue
/// full).
pub const UNAVAILABLE: &str = "服务暂不可用，请稍后重试";

/// Largest piece of a streamed body read at once.
const BODY_PIECE: usize = 256 * 1024;

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
        Task::Http {
            req,
            keep_alive,
            body,
        } => {
            let resp = catch_unwind(AssertUnwindSafe(|| crate::api::handle(shared, &req)))
                .unwrap_or_else(|_| {
                    log::error!("handler panicked on {} {}", req.method, req.path);
                    Response::error(500)
                });
            drop((req, body));
            let (bytes, stream) = resp.into_parts(keep_alive);
            shared.delivery.send_to(
                conn,
                Inbox::Reply {
                    conn,
                    bytes,
                    stream,
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
        Task::ReadBody(body) => read_piece(shared, conn, body),
        Task::Pending { uid, after } => {
            if after.is_none() {
                // Catching up from the cursor: presence before the read.
                shared.delivery.announce(uid);
            }
            pending::read_batch(shared, conn, uid, after)
        }
        Task::Confirmed(list) => pending::check(shared, list),
        Task::SignIn { who, acks } => {
            let refused = match shared.access.check(shared.store.as_ref(), who.uid) {
                Ok(Ok(())) => None,
                Ok(Err(refusal)) => {
                    shared.metrics.refused(refusal);
                    Some(refusal_text(refusal, AUTH_FAILED))
                }
                Err(e) => {
                    log::warn!("sign-in of user {}: {e}", who.uid);
                    Some(UNAVAILABLE)
                }
            };
            shared.delivery.send_to(
                conn,
                Inbox::UserChecked {
                    conn,
                    who,
                    acks,
                    refused,
                },
            );
        }
    }
}

/// Reads the next piece of a streamed body and hands it to the reactor.
fn read_piece(shared: &Shared, conn: ConnRef, mut body: BodyStream) {
    let want = body.remaining.min(BODY_PIECE as u64) as usize;
    let mut bytes = vec![0; want];
    let mut got = 0;
    let mut failed = false;
    while got < want {
        match body.reader.read(&mut bytes[got..]) {
            Ok(0) => {
                failed = true;
                break;
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::warn!("streamed body: {e}");
                failed = true;
                break;
            }
        }
    }
    bytes.truncate(got);
    body.remaining -= got as u64;
    let rest = (!failed && body.remaining > 0).then_some(body);
    shared.delivery.send_to(
        conn,
        Inbox::Body {
            conn,
            bytes,
            stream: rest,
            failed,
        },
    );
}
