//! Live counters of a node and their Prometheus text rendering. Each
//! reactor updates its own cache-line-aligned block (no shared hot counter);
//! `/metrics` sums the blocks when asked.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use crate::supervise::Role;

/// Why a connection was closed; one counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed (close frame, EOF or reset).
    Client,
    /// RFC 6455 violation (1002).
    Protocol,
    /// Message over `limits.max_message` (1009).
    TooBig,
    /// Text that is not UTF-8 (1007).
    InvalidData,
    /// No sign-in before `auth.auth_timeout` (1008).
    AuthTimeout,
    /// Silent past `limits.idle_timeout`.
    Idle,
    /// Queued bytes over `limits.max_pending_bytes`.
    SlowConsumer,
    /// Closed for a newer device over `limits.conns_per_user` (4000).
    Replaced,
    /// Its session ended by logout (4001).
    LoggedOut,
    /// Its session passed its absolute end, `auth.session_ttl` (4001).
    SessionEnded,
    /// Closed by the server with another code of its own.
    Kicked,
    /// Node draining (1001).
    Drain,
    /// HTTP request stalled past `limits.http_timeout`.
    HttpTimeout,
    /// Malformed or oversized HTTP request.
    HttpError,
    /// HTTP connection ended by `Connection: close`.
    HttpDone,
    /// Over its rate limits for `limits.flood_close` (1008).
    Flood,
}

impl CloseReason {
    const ALL: [CloseReason; 16] = [
        CloseReason::Client,
        CloseReason::Protocol,
        CloseReason::TooBig,
        CloseReason::InvalidData,
        CloseReason::AuthTimeout,
        CloseReason::Idle,
        CloseReason::SlowConsumer,
        CloseReason::Replaced,
        CloseReason::LoggedOut,
        CloseReason::SessionEnded,
        CloseReason::Kicked,
        CloseReason::Drain,
        CloseReason::HttpTimeout,
        CloseReason::HttpError,
        CloseReason::HttpDone,
        CloseReason::Flood,
    ];

    fn label(self) -> &'static str {
        match self {
            CloseReason::Client => "client",
            CloseReason::Protocol => "protocol",
            CloseReason::TooBig => "too_big",
            CloseReason::InvalidData => "invalid_data",
            CloseReason::AuthTimeout => "auth_timeout",
            CloseReason::Idle => "idle",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::Replaced => "replaced",
            CloseReason::LoggedOut => "logged_out",
            CloseReason::SessionEnded => "session_ended",
            CloseReason::Kicked => "kicked",
            CloseReason::Drain => "drain",
            CloseReason::HttpTimeout => "http_timeout",
            CloseReason::HttpError => "http_error",
            CloseReason::HttpDone => "http_done",
            CloseReason::Flood => "flood",
        }
    }
}

/// What a rate limit held back; one counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// A WebSocket frame over `limits.cmd_rate` (its connection waited).
    Command,
    /// A socket send over `limits.send_rate` (its connection waited).
    Send,
    /// A REST send over `limits.send_rate` (answered 429).
    Rest,
}

impl Limited {
    const ALL: [Limited; 3] = [Limited::Command, Limited::Send, Limited::Rest];

    fn label(self) -> &'static str {
        match self {
            Limited::Command => "command",
            Limited::Send => "send",
            Limited::Rest => "rest",
        }
    }
}

/// Why a new connection was closed as soon as it was accepted; one counter
/// each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its address holds `limits.conns_per_ip` connections.
    PerIp,
    /// The node holds `limits.max_unauthenticated` connections not signed in.
    Unauthenticated,
    /// The node holds `limits.max_connections` connections.
    MaxConnections,
    /// The process is out of file descriptors (`EMFILE`/`ENFILE`): taken
    /// with the reserve descriptor and closed.
    Emfile,
}

impl Refused {
    const ALL: [Refused; 4] = [
        Refused::PerIp,
        Refused::Unauthenticated,
        Refused::MaxConnections,
        Refused::Emfile,
    ];

    fn label(self) -> &'static str {
        match self {
            Refused::PerIp => "per_ip",
            Refused::Unauthenticated => "unauthenticated",
            Refused::MaxConnections => "max_connections",
            Refused::Emfile => "emfile",
        }
    }
}

/// Why a request was refused before its body was handled; one counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// A body for an authenticated route without a valid `Login-Token`,
    /// answered from its head.
    UnauthenticatedBody,
    /// A body that did not fit `limits.max_inflight_body` (503).
    InflightCap,
    /// A body slower than `limits.min_body_rate`, or silent for
    /// `limits.http_timeout` (408).
    TooSlow,
}

impl Rejection {
    const ALL: [Rejection; 3] = [
        Rejection::UnauthenticatedBody,
        Rejection::InflightCap,
        Rejection::TooSlow,
    ];

    fn label(self) -> &'static str {
        match self {
            Rejection::UnauthenticatedBody => "unauthenticated_body",
            Rejection::InflightCap => "inflight_cap",
            Rejection::TooSlow => "too_slow",
        }
    }
}

/// Why a token or its user was refused (REST and WebSocket sign-in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Malformed, forged, without a session, or a user id out of range.
    Invalid,
    /// Past its `exp`.
    Expired,
    /// Its session was ended by logout.
    Revoked,
    /// Past its session's absolute end (`auth.session_ttl`).
    SessionEnded,
    /// Its user does not exist.
    NoUser,
    /// Its user is banned (server API `users/ban`).
    Banned,
}

impl Refusal {
    const ALL: [Refusal; 6] = [
        Refusal::Invalid,
        Refusal::Expired,
        Refusal::Revoked,
        Refusal::SessionEnded,
        Refusal::NoUser,
        Refusal::Banned,
    ];

    fn label(self) -> &'static str {
        match self {
            Refusal::Invalid => "invalid",
            Refusal::Expired => "expired",
            Refusal::Revoked => "revoked",
            Refusal::SessionEnded => "session_ended",
            Refusal::NoUser => "no_user",
            Refusal::Banned => "banned",
        }
    }
}

/// How a server API call ended; one counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiOutcome {
    /// Done.
    Ok,
    /// Refused for its input (malformed JSON, a bad field, an unknown id).
    Invalid,
    /// Refused for a missing or wrong `Api-Key`.
    BadKey,
    /// Refused because its address sent too many wrong keys.
    Throttled,
}

impl ApiOutcome {
    const ALL: [ApiOutcome; 4] = [
        ApiOutcome::Ok,
        ApiOutcome::Invalid,
        ApiOutcome::BadKey,
        ApiOutcome::Throttled,
    ];

    fn label(self) -> &'static str {
        match self {
            ApiOutcome::Ok => "ok",
            ApiOutcome::Invalid => "invalid",
            ApiOutcome::BadKey => "bad_key",
            ApiOutcome::Throttled => "throttled",
        }
    }
}

/// One reactor's counters.
#[repr(align(128))]
#[derive(Default)]
pub struct ReactorStats {
    /// Connections open now.
    pub open: AtomicI64,
    /// Signed-in WebSocket connections now.
    pub authenticated: AtomicI64,
    /// WebSocket frames received.
    pub frames_in: AtomicU64,
    /// WebSocket frames sent (one per recipient).
    pub frames_out: AtomicU64,
    /// Bytes read from sockets.
    pub bytes_in: AtomicU64,
    /// Bytes written to sockets.
    pub bytes_out: AtomicU64,
    /// HTTP requests parsed.
    pub http_requests: AtomicU64,
    /// Requests answered 503 because the job queue was full.
    pub jobs_rejected: AtomicU64,
    /// Chat messages (Cmd 20) that found the committer queue full and held
    /// their connection's reading until there was room.
    pub sends_deferred: AtomicU64,
    /// Keepalive pings sent to silent connections.
    pub pings: AtomicU64,
    /// WebSockets opened on the echo path (`ws.echo_path`).
    pub echo_sessions: AtomicU64,
    /// Pending messages a connection never got (caught up again for them).
    pub holes: AtomicU64,
    /// Messages waiting in the inbox, at the last sweep.
    pub inbox_depth: AtomicI64,
    /// The longest turn of the event loop since the sweep before the last
    /// one, in microseconds.
    pub loop_lag_us: AtomicU64,
    closes: [AtomicU64; CloseReason::ALL.len()],
    rejections: [AtomicU64; Rejection::ALL.len()],
}

impl ReactorStats {
    /// Counts a close.
    pub fn closed(&self, reason: CloseReason) {
        self.closes[reason as usize].fetch_add(1, Relaxed);
    }

    /// Counts a refused request body.
    pub fn rejected(&self, why: Rejection) {
        self.rejections[why as usize].fetch_add(1, Relaxed);
    }
}

/// All counters of a node.
#[derive(Default)]
pub struct Metrics {
    /// Per reactor.
    pub reactors: Box<[ReactorStats]>,
    /// Sum of job latencies (queue wait + run), microseconds.
    pub job_latency_us: AtomicU64,
    /// Jobs finished.
    pub jobs_done: AtomicU64,
    /// Batches the committer stored (group commits).
    pub commit_batches: AtomicU64,
    /// Messages in those batches.
    pub commit_messages: AtomicU64,
    server_api: [AtomicU64; ApiOutcome::ALL.len()],
    thread_panics: [AtomicU64; Role::ALL.len()],
    limited: [AtomicU64; Limited::ALL.len()],
    refused: [AtomicU64; Refused::ALL.len()],
    refusals: [AtomicU64; Refusal::ALL.len()],
}

impl Metrics {
    /// Counters for `n` reactors.
    pub fn new(n: usize) -> Metrics {
        Metrics {
            reactors: (0..n).map(|_| ReactorStats::default()).collect(),
            ..Metrics::default()
        }
    }

    /// Counts a panic of a long-lived thread.
    pub fn thread_panicked(&self, role: Role) {
        self.thread_panics[role as usize].fetch_add(1, Relaxed);
    }

    /// Counts a frame or send held back (or refused) by a rate limit.
    pub fn limited(&self, kind: Limited) {
        self.limited[kind as usize].fetch_add(1, Relaxed);
    }

    /// Counts a connection closed as soon as it was accepted.
    pub fn conn_refused(&self, reason: Refused) {
        self.refused[reason as usize].fetch_add(1, Relaxed);
    }

    /// Counts a refused token.
    pub fn refused(&self, why: Refusal) {
        self.refusals[why as usize].fetch_add(1, Relaxed);
    }

    /// Counts a server API call by its outcome.
    pub fn server_api(&self, outcome: ApiOutcome) {
        self.server_api[outcome as usize].fetch_add(1, Relaxed);
    }

    /// Records one finished job.
    pub fn job_done(&self, latency: std::time::Duration) {
        self.job_latency_us
            .fetch_add(latency.as_micros() as u64, Relaxed);
        self.jobs_done.fetch_add(1, Relaxed);
    }

    fn sum<T: Into<i128>>(&self, f: impl Fn(&ReactorStats) -> T) -> i128 {
        self.reactors.iter().map(|r| f(r).into()).sum()
    }

    /// Signed-in connections on this node.
    pub fn authenticated(&self) -> i64 {
        self.sum(|r| r.authenticated.load(Relaxed)) as i64
    }

    /// Open connections on this node.
    pub fn open(&self) -> i64 {
        self.sum(|r| r.open.load(Relaxed)) as i64
    }

    /// Prometheus text format; `body_bytes` are the request body bytes in
    /// flight.
    pub fn render(&self, queue_depth: usize, draining: bool, body_bytes: usize) -> String {
        let mut out = String::with_capacity(4096);
        let mut metric = |name: &str, kind: &str, help: &str, value: i128| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "weim_connections_open",
            "gauge",
            "Open connections.",
            self.open().into(),
        );
        metric(
            "weim_connections_authenticated",
            "gauge",
            "Signed-in WebSocket connections.",
            self.authenticated().into(),
        );
        metric(
            "weim_frames_in_total",
            "counter",
            "WebSocket frames received.",
            self.sum(|r| r.frames_in.load(Relaxed)),
        );
        metric(
            "weim_frames_out_total",
            "counter",
            "WebSocket frames sent.",
            self.sum(|r| r.frames_out.load(Relaxed)),
        );
        metric(
            "weim_bytes_in_total",
            "counter",
            "Bytes read from sockets.",
            self.sum(|r| r.bytes_in.load(Relaxed)),
        );
        metric(
            "weim_bytes_out_total",
            "counter",
            "Bytes written to sockets.",
            self.sum(|r| r.bytes_out.load(Relaxed)),
        );
        metric(
            "weim_http_requests_total",
            "counter",
            "HTTP requests parsed.",
            self.sum(|r| r.http_requests.load(Relaxed)),
        );
        metric(
            "weim_http_body_bytes_inflight",
            "gauge",
            "Request body bytes reserved now (being received or handled), against limits.max_inflight_body.",
            body_bytes as i128,
        );
        metric(
            "weim_slow_consumer_drops_total",
            "counter",
            "Connections closed for queuing more than limits.max_pending_bytes.",
            self.sum(|r| r.closes[CloseReason::SlowConsumer as usize].load(Relaxed)),
        );
        metric(
            "weim_jobs_rejected_total",
            "counter",
            "Requests answered 503 because the job queue was full.",
            self.sum(|r| r.jobs_rejected.load(Relaxed)),
        );
        metric(
            "weim_sends_deferred_total",
            "counter",
            "Socket chat messages that waited for room in the committer queue (their connection not read meanwhile).",
            self.sum(|r| r.sends_deferred.load(Relaxed)),
        );
        metric(
            "weim_pings_total",
            "counter",
            "Keepalive pings sent to silent signed-in connections.",
            self.sum(|r| r.pings.load(Relaxed)),
        );
        metric(
            "weim_ws_echo_sessions_total",
            "counter",
            "WebSockets opened on the echo path (ws.echo_path, a test aid).",
            self.sum(|r| r.echo_sessions.load(Relaxed)),
        );
        metric(
            "weim_delivery_holes_total",
            "counter",
            "Pending messages a connection never got, found when checking confirmations (the connection caught up again).",
            self.sum(|r| r.holes.load(Relaxed)),
        );
        metric(
            "weim_reactor_inbox_depth",
            "gauge",
            "Messages waiting in the reactors' inboxes (sum, at their last sweep).",
            self.sum(|r| r.inbox_depth.load(Relaxed)),
        );
        metric(
            "weim_commit_batches_total",
            "counter",
            "Transactions the committer stored chat messages in (group commits).",
            self.commit_batches.load(Relaxed) as i128,
        );
        metric(
            "weim_commit_messages_total",
            "counter",
            "Chat messages taken by the committer (stored or refused), over weim_commit_batches_total: the mean batch size.",
            self.commit_messages.load(Relaxed) as i128,
        );
        metric(
            "weim_job_queue_depth",
            "gauge",
            "Jobs waiting for a worker.",
            queue_depth as i128,
        );
        metric(
            "weim_draining",
            "gauge",
            "1 while the node drains.",
            i128::from(draining),
        );
        let _ = writeln!(
            out,
            "# HELP weim_job_latency_seconds Job latency from enqueue to answer.\n# TYPE weim_job_latency_seconds summary\nweim_job_latency_seconds_sum {:.6}\nweim_job_latency_seconds_count {}",
            self.job_latency_us.load(Relaxed) as f64 / 1e6,
            self.jobs_done.load(Relaxed)
        );
        let lag = self
            .reactors
            .iter()
            .map(|r| r.loop_lag_us.load(Relaxed))
            .max()
            .unwrap_or(0);
        let _ = writeln!(
            out,
            "# HELP weim_reactor_loop_lag_seconds The longest turn of any reactor's event loop over its last sweep interval (250 ms).\n# TYPE weim_reactor_loop_lag_seconds gauge\nweim_reactor_loop_lag_seconds {:.6}",
            lag as f64 / 1e6
        );
        counter_family(
            &mut out,
            "weim_thread_panics_total",
            "Panics of the node's long-lived threads, by thread (restarted, or the node failed).",
            "thread",
            Role::ALL.map(|role| {
                (
                    role.label(),
                    self.thread_panics[role as usize].load(Relaxed),
                )
            }),
        );
        counter_family(
            &mut out,
            "weim_http_rejected_total",
            "Requests refused before their body was handled, by reason.",
            "reason",
            Rejection::ALL.map(|why| {
                (
                    why.label(),
                    self.sum(|r| r.rejections[why as usize].load(Relaxed)),
                )
            }),
        );
        counter_family(
            &mut out,
            "weim_auth_refusals_total",
            "Tokens refused (REST and WebSocket sign-in), by reason.",
            "reason",
            Refusal::ALL.map(|why| (why.label(), self.refusals[why as usize].load(Relaxed))),
        );
        counter_family(
            &mut out,
            "weim_rate_limited_total",
            "Frames and sends held back by a rate limit (socket: the connection waited), or refused (REST: 429), by kind.",
            "kind",
            Limited::ALL.map(|kind| (kind.label(), self.limited[kind as usize].load(Relaxed))),
        );
        counter_family(
            &mut out,
            "weim_conns_refused_total",
            "Connections closed as soon as they were accepted, by reason.",
            "reason",
            Refused::ALL
                .map(|reason| (reason.label(), self.refused[reason as usize].load(Relaxed))),
        );
        counter_family(
            &mut out,
            "weim_server_api_requests_total",
            "Server API calls (/server/v1/*), by outcome.",
            "outcome",
            ApiOutcome::ALL.map(|outcome| {
                (
                    outcome.label(),
                    self.server_api[outcome as usize].load(Relaxed),
                )
            }),
        );
        counter_family(
            &mut out,
            "weim_closes_total",
            "Connections closed, by reason.",
            "reason",
            CloseReason::ALL.map(|reason| {
                (
                    reason.label(),
                    self.sum(|r| r.closes[reason as usize].load(Relaxed)),
                )
            }),
        );
        out
    }
}

/// Appends a counter family with one label (Prometheus text): its `HELP`
/// and `TYPE` lines, then `name{label="value"} n` per row.
fn counter_family<T: std::fmt::Display>(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    rows: impl IntoIterator<Item = (&'static str, T)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (value, n) in rows {
        let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {n}");
    }
}
