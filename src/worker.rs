//! The blocking worker pool: REST handlers and every store call run here,
//! fed by a bounded crossbeam queue. A worker answers through the
//! requesting connection's reactor inbox and never touches a client socket.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Receiver;

use crate::http::{Request, Response};
use crate::node::Shared;
use crate::reactor::{ConnRef, Inbox};

/// One HTTP request waiting for a worker.
#[derive(Debug)]
pub struct Job {
    /// Where the answer goes.
    pub conn: ConnRef,
    /// The request.
    pub req: Request,
    /// Whether the connection stays open after the answer.
    pub keep_alive: bool,
    /// When the reactor queued it.
    pub enqueued: Instant,
}

/// Starts `n` workers; they run until the queue's senders are gone.
pub fn spawn(
    n: usize,
    jobs: Receiver<Job>,
    shared: Arc<Shared>,
    cpus: Option<Vec<usize>>,
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    (0..n)
        .map(|i| {
            let jobs = jobs.clone();
            let shared = shared.clone();
            let cpus = cpus.clone();
            std::thread::Builder::new()
                .name(format!("weim-worker-{i}"))
                .spawn(move || {
                    if let Some(cpus) = cpus {
                        crate::node::pin_to(&cpus);
                    }
                    run(&jobs, &shared)
                })
        })
        .collect()
}

fn run(jobs: &Receiver<Job>, shared: &Shared) {
    while let Ok(job) = jobs.recv() {
        shared.active_jobs.fetch_add(1, Relaxed);
        let resp =
            std::panic::catch_unwind(AssertUnwindSafe(|| crate::api::handle(shared, &job.req)))
                .unwrap_or_else(|_| {
                    log::error!("handler panicked on {} {}", job.req.method, job.req.path);
                    Response::error(500)
                });
        let bytes = resp.encode(job.keep_alive);
        if let Some(handle) = shared.delivery.reactors().get(job.conn.reactor as usize) {
            handle.send(Inbox::Reply {
                conn: job.conn,
                bytes,
                keep_alive: job.keep_alive,
            });
        }
        shared.metrics.job_done(job.enqueued.elapsed());
        shared.active_jobs.fetch_sub(1, Relaxed);
    }
}
