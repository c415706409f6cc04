//! The result of one run: the structure written with `--json` and the
//! human-readable table printed on stdout.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::chat::ChatStat;
use crate::hist::Hist;
use crate::host::HostFacts;
use crate::opts::{Opts, Scenario};

/// Quantiles of a latency distribution, milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Quantiles {
    pub count: u64,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
    pub max: Option<f64>,
}

impl Quantiles {
    /// From a histogram of microseconds.
    pub fn from_us(h: &Hist) -> Quantiles {
        let ms = |v: Option<u64>| v.map(|x| x as f64 / 1000.0);
        Quantiles {
            count: h.count(),
            p50: ms(h.quantile(0.5)),
            p90: ms(h.quantile(0.9)),
            p99: ms(h.quantile(0.99)),
            p999: ms(h.quantile(0.999)),
            max: ms((h.count() > 0).then(|| h.max())),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Conns {
    pub requested: u64,
    pub procs: usize,
    pub source_addrs: Vec<String>,
    pub attempted: u64,
    pub connected: u64,
    pub upgraded: u64,
    pub signed_in: u64,
    pub readers: u64,
    pub slow: u64,
    /// Connections not opened or not signed in.
    pub failed: u64,
    /// ... by reason.
    pub failures: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SignIn {
    /// First connect to last `Cmd 4`, over all processes.
    pub seconds: Option<f64>,
    pub per_second: Option<f64>,
    /// Per connection, connect start to `Cmd 4`.
    pub latency_ms: Quantiles,
}

/// The load generator's own CPU use (all its processes), to tell when the
/// client rather than the node was the limit.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Loadgen {
    /// CPU seconds from the first connect until every process was ready.
    pub cpu_signin_s: f64,
    pub cpu_total_s: f64,
    /// CPUs the load generator may use (its affinity).
    pub cpus: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Node {
    pub pid: Option<u32>,
    /// The node's `Cpus_allowed_list` (pinning).
    pub cpus: Option<String>,
    pub rss_before_kib: Option<u64>,
    pub rss_signed_in_kib: Option<u64>,
    pub rss_settled_kib: Option<u64>,
    pub rss_end_kib: Option<u64>,
    /// Highest VmRSS sampled (every 50 ms) during the run.
    pub rss_peak_kib: Option<u64>,
    /// VmHWM at the end (peak since the node started).
    pub rss_hwm_kib: Option<u64>,
    /// (settled − before) / signed-in connections.
    pub rss_per_conn_bytes: Option<f64>,
    /// (signed in − before) / signed-in connections.
    pub rss_per_conn_bytes_unsettled: Option<f64>,
    /// Node CPU seconds (user + system) during sign-in and during the rounds.
    pub cpu_signin_s: Option<f64>,
    pub cpu_rounds_s: Option<f64>,
    /// Node CPU seconds from `go` until every child was done (chat, group).
    pub cpu_chat_s: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Round {
    pub round: u32,
    pub send_unix_ns: u64,
    pub post_ms: f64,
    pub post_error: Option<String>,
    /// `data.local` of the answer.
    pub node_local: Option<u64>,
    pub expected: u64,
    pub received: u64,
    pub late: u64,
    pub lost: u64,
    /// Every live reader got it before the wait ended.
    pub complete: bool,
    /// Send to last receive (fan-out completion) and to first receive.
    pub fanout_ms: Option<f64>,
    pub first_ms: Option<f64>,
    pub latency_ms: Quantiles,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Rounds {
    pub planned: u32,
    pub done: u32,
    pub body_bytes: usize,
    pub expected_per_round: u64,
    pub per_round: Vec<Round>,
    /// Per receiver, over all rounds.
    pub latency_ms: Quantiles,
    /// Over rounds.
    pub fanout_p50_ms: Option<f64>,
    pub fanout_max_ms: Option<f64>,
    pub lost: u64,
    pub late: u64,
    pub readers_closed: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Slow {
    pub slow_conns: u64,
    pub slow_pct: f64,
    pub rcvbuf: usize,
    /// Slow readers the node closed (during the run or found at the end).
    pub closed: u64,
    /// Broadcast frames the slow readers still got when drained at the end.
    pub frames_at_end: u64,
}

/// The chat scenarios' result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChatSummary {
    /// `pairs` or `group`.
    pub kind: &'static str,
    /// Messages each sender was to send.
    pub messages_per_sender: u32,
    /// Pairs: unacknowledged messages per connection.
    pub window: Option<usize>,
    /// Group: planned pause between messages.
    pub interval_ms: Option<u64>,
    pub body_bytes: usize,
    /// Deliveries expected: 2·P·M, or (G − 1)·R.
    pub expected: u64,
    pub sent: u64,
    pub acked: u64,
    pub refused: u64,
    pub stray_acks: u64,
    /// Deliveries received (first copy each).
    pub delivered: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub unexpected: u64,
    /// Cmd 2 answers by text.
    pub failures: BTreeMap<String, u64>,
    /// First send to last receive.
    pub seconds: Option<f64>,
    /// Deliveries per second over `seconds` (end to end: stored and
    /// delivered; for pairs each message has one recipient).
    pub per_second: Option<f64>,
    /// Send → Cmd 21.
    pub ack_ms: Quantiles,
    /// Send → Cmd 6/10 at the recipient.
    pub delivery_ms: Quantiles,
    /// Group: per message, send → the last member received it, over the
    /// messages at least one member received.
    pub completion_p50_ms: Option<f64>,
    pub completion_max_ms: Option<f64>,
    /// Group: messages every member received.
    pub messages_complete: Option<u64>,
    /// Group: most the sender fell behind its schedule.
    pub send_lag_max_ms: Option<f64>,
    /// Group: per message (received, completion ms).
    pub per_message: Vec<(u64, f64)>,
    /// Some child stopped waiting for lack of progress.
    pub stalled: bool,
}

impl ChatSummary {
    pub fn new(o: &Opts, conns: &Conns, s: ChatStat) -> ChatSummary {
        let group = o.scenario == Scenario::Group;
        let m = u64::from(o.messages);
        let expected = if group {
            (conns.requested - 1) * m
        } else {
            conns.requested * m
        };
        let seconds = (s.first_send_ns > 0 && s.last_recv_ns > s.first_send_ns)
            .then(|| (s.last_recv_ns - s.first_send_ns) as f64 / 1e9);
        let mut done: Vec<f64> = s
            .per_msg
            .iter()
            .filter(|x| x.received > 0)
            .map(|x| x.max_us as f64 / 1000.0)
            .collect();
        done.sort_by(|a, b| a.total_cmp(b));
        ChatSummary {
            kind: if group { "group" } else { "pairs" },
            messages_per_sender: o.messages,
            window: (!group).then_some(o.msg_window),
            interval_ms: group.then_some(o.interval_ms),
            body_bytes: o.body_bytes,
            expected,
            sent: s.sent,
            acked: s.acked,
            refused: s.refused,
            stray_acks: s.stray_acks,
            delivered: s.delivered,
            lost: expected.saturating_sub(s.delivered),
            duplicates: s.duplicates,
            unexpected: s.unexpected,
            per_second: seconds.filter(|x| *x > 0.0).map(|x| s.delivered as f64 / x),
            seconds,
            ack_ms: Quantiles::from_us(&s.ack_us),
            delivery_ms: Quantiles::from_us(&s.delivery_us),
            completion_p50_ms: (!done.is_empty()).then(|| done[(done.len() - 1) / 2]),
            completion_max_ms: done.last().copied(),
            messages_complete: group.then(|| {
                let all = conns.requested - 1;
                s.per_msg.iter().filter(|x| x.received >= all).count() as u64
            }),
            send_lag_max_ms: group.then_some(s.send_lag_max_us as f64 / 1000.0),
            per_message: s
                .per_msg
                .iter()
                .map(|x| (x.received, x.max_us as f64 / 1000.0))
                .collect(),
            stalled: s.stalled,
            failures: s.failures,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub tool: &'static str,
    pub scenario: &'static str,
    pub params: Opts,
    pub host: HostFacts,
    pub started_unix_ms: u64,
    pub duration_s: f64,
    pub timed_out: bool,
    pub conns: Conns,
    pub signin: SignIn,
    pub node: Node,
    pub loadgen: Loadgen,
    pub rounds: Option<Rounds>,
    pub slow: Option<Slow>,
    pub chat: Option<ChatSummary>,
    pub close_reasons: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    pub other_cmds: BTreeMap<String, u64>,
}

fn ms(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.1}")).unwrap_or_else(|| "-".into())
}

fn kib(v: Option<u64>) -> String {
    v.map(|x| format!("{:.1} MiB", x as f64 / 1024.0))
        .unwrap_or_else(|| "-".into())
}

fn map_line(m: &BTreeMap<String, u64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} ×{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Summary {
    /// The table printed on stdout.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let c = &self.conns;
        let _ = writeln!(
            t,
            "weim-load {} — {} connections to {} ({} process(es), sources {})",
            self.scenario,
            c.requested,
            self.params.target,
            c.procs,
            c.source_addrs.join(" ")
        );
        let _ = writeln!(
            t,
            "host: {} CPUs, {} MiB, kernel {}; node pid {} on CPUs {}; {:.1} s{}",
            self.host.nproc,
            self.host.mem_total_kib.unwrap_or(0) / 1024,
            self.host.kernel,
            self.node
                .pid
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into()),
            self.node.cpus.as_deref().unwrap_or("-"),
            self.duration_s,
            if self.timed_out { " (TIMED OUT)" } else { "" }
        );
        let _ = writeln!(t);
        let _ = writeln!(t, "{:<28} value", "metric");
        let _ = writeln!(t, "{:<28} {}", "connections signed in", c.signed_in);
        if c.slow > 0 {
            let _ = writeln!(
                t,
                "{:<28} {} readers, {} slow",
                "  of which", c.readers, c.slow
            );
        }
        let _ = writeln!(t, "{:<28} {}", "connections failed", c.failed);
        for (reason, n) in &c.failures {
            let _ = writeln!(t, "{:<28} {n}", format!("  {reason}"));
        }
        let s = &self.signin;
        let _ = writeln!(t, "{:<28} {}", "sign-in time (s)", ms3(s.seconds));
        let _ = writeln!(
            t,
            "{:<28} {}",
            "sign-ins per second",
            s.per_second
                .map(|x| format!("{x:.0}"))
                .unwrap_or_else(|| "-".into())
        );
        let _ = writeln!(
            t,
            "{:<28} p50 {} / p99 {} / max {}",
            "sign-in latency (ms)",
            ms(s.latency_ms.p50),
            ms(s.latency_ms.p99),
            ms(s.latency_ms.max)
        );
        let n = &self.node;
        if n.pid.is_some() {
            let _ = writeln!(
                t,
                "{:<28} before {} / signed in {} / settled {}",
                "node RSS",
                kib(n.rss_before_kib),
                kib(n.rss_signed_in_kib),
                kib(n.rss_settled_kib)
            );
            let _ = writeln!(
                t,
                "{:<28} peak {} / end {} / HWM {}",
                "",
                kib(n.rss_peak_kib),
                kib(n.rss_end_kib),
                kib(n.rss_hwm_kib)
            );
            let _ = writeln!(
                t,
                "{:<28} {} (before settling {})",
                "node RSS per connection (B)",
                n.rss_per_conn_bytes
                    .map(|x| format!("{x:.0}"))
                    .unwrap_or_else(|| "-".into()),
                n.rss_per_conn_bytes_unsettled
                    .map(|x| format!("{x:.0}"))
                    .unwrap_or_else(|| "-".into())
            );
            let _ = writeln!(
                t,
                "{:<28} sign-in {} / {} {}",
                "node CPU (s)",
                ms3(n.cpu_signin_s),
                if self.chat.is_some() {
                    "chat"
                } else {
                    "rounds"
                },
                ms3(if self.chat.is_some() {
                    n.cpu_chat_s
                } else {
                    n.cpu_rounds_s
                })
            );
        }
        let _ = writeln!(
            t,
            "{:<28} sign-in {:.3} / total {:.3} (on {} CPU(s))",
            "load generator CPU (s)",
            self.loadgen.cpu_signin_s,
            self.loadgen.cpu_total_s,
            self.loadgen.cpus
        );
        if let Some(r) = &self.rounds {
            let _ = writeln!(t);
            let _ = writeln!(
                t,
                "{:>5} {:>8} {:>8} {:>6} {:>6} {:>10} {:>9} {:>8} {:>8} {:>8}",
                "round",
                "expected",
                "received",
                "late",
                "lost",
                "fan-out ms",
                "first ms",
                "p50 ms",
                "p99 ms",
                "POST ms"
            );
            for x in &r.per_round {
                let _ = writeln!(
                    t,
                    "{:>5} {:>8} {:>8} {:>6} {:>6} {:>10} {:>9} {:>8} {:>8} {:>8}{}",
                    x.round,
                    x.expected,
                    x.received,
                    x.late,
                    x.lost,
                    ms(x.fanout_ms),
                    ms(x.first_ms),
                    ms(x.latency_ms.p50),
                    ms(x.latency_ms.p99),
                    format!("{:.1}", x.post_ms),
                    x.post_error
                        .as_ref()
                        .map(|e| format!("  POST failed: {e}"))
                        .unwrap_or_default()
                );
            }
            let _ = writeln!(t);
            let _ = writeln!(
                t,
                "{:<28} {} of {} ({} B body)",
                "rounds done", r.done, r.planned, r.body_bytes
            );
            let _ = writeln!(
                t,
                "{:<28} p50 {} / max {}",
                "fan-out completion (ms)",
                ms(r.fanout_p50_ms),
                ms(r.fanout_max_ms)
            );
            let _ = writeln!(
                t,
                "{:<28} p50 {} / p99 {} / p99.9 {} / max {}",
                "receiver latency (ms)",
                ms(r.latency_ms.p50),
                ms(r.latency_ms.p99),
                ms(r.latency_ms.p999),
                ms(r.latency_ms.max)
            );
            let _ = writeln!(
                t,
                "{:<28} {} lost, {} late (of {} per round)",
                "messages", r.lost, r.late, r.expected_per_round
            );
            let _ = writeln!(t, "{:<28} {}", "readers closed by node", r.readers_closed);
        }
        if let Some(c) = &self.chat {
            c.table(&mut t);
        }
        if let Some(s) = &self.slow {
            let _ = writeln!(
                t,
                "{:<28} {} of {} closed; {} frames left to read at the end",
                "slow readers", s.closed, s.slow_conns, s.frames_at_end
            );
        }
        if !self.close_reasons.is_empty() {
            let _ = writeln!(t, "{:<28} {}", "closes", map_line(&self.close_reasons));
        }
        if !self.other_cmds.is_empty() {
            let _ = writeln!(
                t,
                "{:<28} {}",
                "other Cmds received",
                map_line(&self.other_cmds)
            );
        }
        if !self.errors.is_empty() {
            let _ = writeln!(t, "{:<28} {}", "errors", map_line(&self.errors));
        }
        t
    }
}

impl ChatSummary {
    fn table(&self, t: &mut String) {
        let group = self.kind == "group";
        let _ = writeln!(t);
        let what = if group {
            format!(
                "1 sender, {} messages, one every {} ms, {} B",
                self.messages_per_sender,
                self.interval_ms.unwrap_or(0),
                self.body_bytes
            )
        } else {
            format!(
                "{} messages per connection, window {}, {} B",
                self.messages_per_sender,
                self.window.unwrap_or(0),
                self.body_bytes
            )
        };
        let _ = writeln!(t, "{:<28} {what}", self.kind);
        let _ = writeln!(
            t,
            "{:<28} {} sent, {} acknowledged, {} refused{}",
            "messages",
            self.sent,
            self.acked,
            self.refused,
            if self.stray_acks > 0 {
                format!(", {} stray acks", self.stray_acks)
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            t,
            "{:<28} {} of {} expected; {} lost, {} duplicates, {} unexpected",
            "deliveries",
            self.delivered,
            self.expected,
            self.lost,
            self.duplicates,
            self.unexpected
        );
        let _ = writeln!(
            t,
            "{:<28} {} in {} s",
            if group {
                "deliveries per second"
            } else {
                "messages per second"
            },
            self.per_second
                .map(|x| format!("{x:.0}"))
                .unwrap_or_else(|| "-".into()),
            ms3(self.seconds)
        );
        let _ = writeln!(
            t,
            "{:<28} p50 {} / p99 {} / max {}",
            "ack latency (ms)",
            ms(self.ack_ms.p50),
            ms(self.ack_ms.p99),
            ms(self.ack_ms.max)
        );
        let _ = writeln!(
            t,
            "{:<28} p50 {} / p99 {} / p99.9 {} / max {}",
            "delivery latency (ms)",
            ms(self.delivery_ms.p50),
            ms(self.delivery_ms.p99),
            ms(self.delivery_ms.p999),
            ms(self.delivery_ms.max)
        );
        if group {
            let _ = writeln!(
                t,
                "{:<28} p50 {} / max {} ({} of {} messages reached every member)",
                "message completion (ms)",
                ms(self.completion_p50_ms),
                ms(self.completion_max_ms),
                self.messages_complete.unwrap_or(0),
                self.messages_per_sender
            );
            let _ = writeln!(
                t,
                "{:<28} {}",
                "sender behind schedule (ms)",
                ms(self.send_lag_max_ms)
            );
        }
        if !self.failures.is_empty() {
            let _ = writeln!(t, "{:<28} {}", "Cmd 2 answers", map_line(&self.failures));
        }
        if self.stalled {
            let _ = writeln!(
                t,
                "{:<28} stopped waiting: nothing arrived for --round-wait",
                ""
            );
        }
    }
}

fn ms3(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.3}")).unwrap_or_else(|| "-".into())
}
