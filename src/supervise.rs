//! Supervision of the node's long-lived threads: a panic never leaves a
//! thread silently gone.
//!
//! A thread runs under one of two policies. A loop that can start again
//! with nothing lost but the work in hand (the committer, the workers, the
//! cluster threads) is [`restarting`]: run again after a panic. A thread
//! whose state a restart would lose (a reactor: its connections) is
//! [`critical`]: its panic fails the node — `/healthz` answers 503 from then
//! on and the main thread exits the process with [`FAILED_EXIT`], so the
//! service manager starts it again. Every panic is counted in
//! `weim_thread_panics_total{thread}`.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::node::Shared;

/// Exit code of a failed node (`EX_SOFTWARE`).
pub const FAILED_EXIT: i32 = 70;
/// Pause before a panicked loop runs again: a loop that panics at once
/// restarts at most ten times a second.
const RESTART_PAUSE: Duration = Duration::from_millis(100);

/// The node's long-lived threads, as labelled in
/// `weim_thread_panics_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A reactor (critical).
    Reactor,
    /// A worker's loop (restarted; a handler's panic is caught per job).
    Worker,
    /// The committer (restarted; its batch's senders are answered).
    Committer,
    /// The cluster's etcd membership (restarted).
    Membership,
    /// The cluster's presence writer (restarted).
    Presence,
    /// The cluster's bus subscriber (restarted).
    Bus,
    /// The webhook sender (restarted; the event in hand is lost).
    Webhook,
}

impl Role {
    /// Every role, in the order of the metric's series.
    pub const ALL: [Role; 7] = [
        Role::Reactor,
        Role::Worker,
        Role::Committer,
        Role::Membership,
        Role::Presence,
        Role::Bus,
        Role::Webhook,
    ];

    /// The `thread` label.
    pub fn label(self) -> &'static str {
        match self {
            Role::Reactor => "reactor",
            Role::Worker => "worker",
            Role::Committer => "committer",
            Role::Membership => "membership",
            Role::Presence => "presence",
            Role::Bus => "bus",
            Role::Webhook => "webhook",
        }
    }
}

/// Starts `body` on a thread named `name` and runs it again, after a short
/// pause, each time it panics; the thread ends when `body` returns. `body`
/// keeps what must outlive a panic in its captured state (e.g. the
/// committer's batch in hand, whose senders it answers when it runs again).
pub fn restarting(
    shared: &Arc<Shared>,
    role: Role,
    name: String,
    mut body: impl FnMut() + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    let shared = Arc::clone(shared);
    std::thread::Builder::new().name(name).spawn(move || loop {
        match catch_unwind(AssertUnwindSafe(&mut body)) {
            Ok(()) => return,
            Err(payload) => {
                let why = panicked(&shared, role, payload.as_ref());
                log::error!("{why}; restarting it");
                std::thread::sleep(RESTART_PAUSE);
            }
        }
    })
}

/// Starts `body` on a thread named `name`; a panic there fails the node.
pub fn critical(
    shared: &Arc<Shared>,
    role: Role,
    name: String,
    body: impl FnOnce() + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    let shared = Arc::clone(shared);
    std::thread::Builder::new().name(name).spawn(move || {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(body)) {
            let why = panicked(&shared, role, payload.as_ref());
            log::error!("{why}; the node has failed and exits with {FAILED_EXIT}");
            shared.fail(why);
        }
    })
}

/// Counts a panic and says which thread it was and why.
fn panicked(shared: &Shared, role: Role, payload: &(dyn Any + Send)) -> String {
    shared.metrics.thread_panicked(role);
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message");
    let thread = std::thread::current();
    format!(
        "thread {} panicked: {message}",
        thread.name().unwrap_or(role.label())
    )
}
