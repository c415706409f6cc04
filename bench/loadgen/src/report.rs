//! The result of one run: the structure written with `--json` and the
//! human-readable table printed on stdout.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::chat::ChatStat;
use crate::hist::Hist;
use crate::host::HostFacts;
use crate::opts::{Opts, Scenario};
use crate::soak::SoakStat;

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

/// The node's RSS during the soak, sampled every `--rss-every` seconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SoakRss {
    pub warmup_s: f64,
    /// The first sample at or after the warm-up.
    pub after_warmup_kib: Option<u64>,
    /// The last sample, when the traffic stopped.
    pub end_kib: Option<u64>,
    /// Highest and lowest sample from the warm-up on.
    pub max_kib: Option<u64>,
    pub min_kib: Option<u64>,
    /// (end − after warm-up) / after warm-up, percent.
    pub growth_pct: Option<f64>,
    /// The band allowed around the post-warm-up value, percent.
    pub band_pct: f64,
    /// Every sample from the warm-up on within the band.
    pub within_band: Option<bool>,
    /// (seconds since `go`, VmRSS KiB), every sample.
    pub samples: Vec<(f64, u64)>,
}

impl SoakRss {
    pub fn new(pid: Option<u32>, warmup_s: f64, band: f64, samples: Vec<(f64, u64)>) -> SoakRss {
        let after: Vec<u64> = samples
            .iter()
            .filter(|(t, _)| *t >= warmup_s)
            .map(|(_, r)| *r)
            .collect();
        let warm = after.first().copied();
        let end = after.last().copied();
        let max = after.iter().copied().max();
        let min = after.iter().copied().min();
        let within = warm.filter(|_| pid.is_some()).map(|w| {
            let (lo, hi) = (w as f64 * (1.0 - band), w as f64 * (1.0 + band));
            after.iter().all(|r| (lo..=hi).contains(&(*r as f64)))
        });
        SoakRss {
            warmup_s,
            after_warmup_kib: warm,
            end_kib: end,
            max_kib: max,
            min_kib: min,
            growth_pct: match (warm, end) {
                (Some(w), Some(e)) if w > 0 => Some((e as f64 - w as f64) * 100.0 / w as f64),
                _ => None,
            },
            band_pct: band * 100.0,
            within_band: within,
            samples,
        }
    }
}

/// The soak scenario's result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SoakSummary {
    pub conns: u64,
    /// Messages per second asked for, and sent (new messages over the
    /// traffic phase; resends not counted).
    pub rate: f64,
    pub rate_sent: Option<f64>,
    /// Percent of the connections closed per second, and how long each
    /// stays away before it reconnects.
    pub churn_pct: f64,
    pub away_ms: u64,
    pub duration_s: f64,
    /// How long the traffic and churn actually ran.
    pub traffic_s: Option<f64>,
    pub warmup_s: f64,
    pub body_bytes: usize,
    /// Messages stored (their Cmd 21 named an `Id`): each owed to its recipient.
    pub sent: u64,
    /// Of those, received by the recipient on any of its connections.
    pub received: u64,
    /// Of those, never received: must be 0.
    pub lost: u64,
    /// ... of which to users not signed in at the end.
    pub lost_offline: u64,
    /// Some lost messages: (user, id).
    pub lost_samples: Vec<(u64, u64)>,
    /// The same `Id` again for the same user.
    pub duplicates: u64,
    /// First receipts live (sent while the receiving connection was open)
    /// and by catch-up (sent before it began to connect).
    pub live: u64,
    pub by_catchup: u64,
    /// First receipts on a connection being closed (after its close frame).
    pub on_closing: u64,
    /// Send → receipt of live first receipts.
    pub latency_ms: Quantiles,
    /// Send → receipt of the messages that arrived by catch-up.
    pub catchup_delay_ms: Quantiles,
    /// Send → Cmd 21.
    pub ack_ms: Quantiles,
    /// Cmd 20 frames written, and of them resends after a reconnect.
    pub send_frames: u64,
    pub resent: u64,
    /// At the end, messages still without their Cmd 21 (not in `sent`).
    pub unconfirmed: u64,
    /// Ids received that no Cmd 21 named.
    pub received_unconfirmed: u64,
    pub refused: u64,
    pub stray_acks: u64,
    pub no_id: u64,
    pub skipped: u64,
    pub echoes: u64,
    pub unexpected: u64,
    /// Cmd 2 answers by text.
    pub failures: BTreeMap<String, u64>,
    /// Cmd 22 frames written.
    pub acks_sent: u64,
    /// Connections closed by the load generator, by kind; by the node.
    pub churned: BTreeMap<String, u64>,
    pub node_closed: u64,
    pub reconnects: u64,
    pub reconnected: u64,
    pub reconnect_failures: BTreeMap<String, u64>,
    pub gave_up: u64,
    /// Connect → Cmd 4 of the reconnects during the traffic (not the final round).
    pub reconnect_ms: Quantiles,
    /// How connections closed with a close frame ended.
    pub closing_ends: BTreeMap<String, u64>,
    /// Users reconnected once more after the traffic stopped; users not
    /// signed in at the end.
    pub final_reconnected: u64,
    pub offline_at_end: u64,
    /// Stop → end of the final catch-up (slowest process), and whether it
    /// ended by `--drain-wait` rather than by quiet.
    pub drain_s: f64,
    pub drain_timed_out: bool,
    /// The node's CPU seconds during the traffic phase.
    pub node_cpu_s: Option<f64>,
    pub rss: SoakRss,
}

impl SoakSummary {
    pub fn new(
        o: &Opts,
        s: SoakStat,
        rss: SoakRss,
        node_cpu_s: Option<f64>,
        traffic_s: Option<f64>,
    ) -> SoakSummary {
        let fresh = s.send_frames.saturating_sub(s.resent);
        SoakSummary {
            conns: o.conns,
            rate: o.msg_rate,
            rate_sent: traffic_s.filter(|t| *t > 0.0).map(|t| fresh as f64 / t),
            churn_pct: o.churn_pct,
            away_ms: o.away_ms,
            duration_s: o.duration_s,
            traffic_s,
            warmup_s: o.warmup_s,
            body_bytes: o.body_bytes,
            sent: s.sent,
            received: s.received,
            lost: s.lost,
            lost_offline: s.lost_offline,
            lost_samples: s.lost_samples,
            duplicates: s.duplicates,
            live: s.live,
            by_catchup: s.catchup,
            on_closing: s.on_closing,
            latency_ms: Quantiles::from_us(&s.live_us),
            catchup_delay_ms: Quantiles::from_us(&s.catchup_us),
            ack_ms: Quantiles::from_us(&s.ack_us),
            send_frames: s.send_frames,
            resent: s.resent,
            unconfirmed: s.unconfirmed,
            received_unconfirmed: s.received_unconfirmed,
            refused: s.refused,
            stray_acks: s.stray_acks,
            no_id: s.no_id,
            skipped: s.skipped,
            echoes: s.echoes,
            unexpected: s.unexpected,
            failures: s.failures,
            acks_sent: s.acks_sent,
            churned: s.churned,
            node_closed: s.node_closed,
            reconnects: s.reconnects,
            reconnected: s.reconnected,
            reconnect_failures: s.reconnect_failures,
            gave_up: s.gave_up,
            reconnect_ms: Quantiles::from_us(&s.reconnect_us),
            closing_ends: s.closing_ends,
            final_reconnected: s.final_reconnected,
            offline_at_end: s.offline_at_end,
            drain_s: s.drain_s,
            drain_timed_out: s.drain_timed_out,
            node_cpu_s,
            rss,
        }
    }

    fn table(&self, t: &mut String) {
        let _ = writeln!(t);
        let _ = writeln!(
            t,
            "{:<28} {} connections, {} msg/s, {} % closed per second{}, {} s ({} s warm-up), {} B",
            "soak",
            self.conns,
            self.rate,
            self.churn_pct,
            if self.away_ms > 0 {
                format!(" (away {} ms)", self.away_ms)
            } else {
                String::new()
            },
            self.duration_s,
            self.warmup_s,
            self.body_bytes
        );
        let _ = writeln!(
            t,
            "{:<28} {} stored (Cmd 21 with Id), {} received, {} LOST{}, {} duplicates",
            "messages",
            self.sent,
            self.received,
            self.lost,
            if self.lost_offline > 0 {
                format!(" ({} to users offline at the end)", self.lost_offline)
            } else {
                String::new()
            },
            self.duplicates
        );
        let _ = writeln!(
            t,
            "{:<28} {} live, {} by catch-up ({} on connections being closed)",
            "first receipts", self.live, self.by_catchup, self.on_closing
        );
        let _ = writeln!(
            t,
            "{:<28} p50 {} / p99 {} / max {}",
            "live latency (ms)",
            ms(self.latency_ms.p50),
            ms(self.latency_ms.p99),
            ms(self.latency_ms.max)
        );
        let _ = writeln!(
            t,
            "{:<28} p50 {} / p99 {} / max {}",
            "catch-up delay (ms)",
            ms(self.catchup_delay_ms.p50),
            ms(self.catchup_delay_ms.p99),
            ms(self.catchup_delay_ms.max)
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
            "{:<28} {} frames ({} resent; {:.0} new per second), {} refused, {} unconfirmed at the end, {} received unconfirmed",
            "sends",
            self.send_frames,
            self.resent,
            self.rate_sent.unwrap_or(0.0),
            self.refused,
            self.unconfirmed,
            self.received_unconfirmed
        );
        let _ = writeln!(
            t,
            "{:<28} {}; by the node {}",
            "closed",
            if self.churned.is_empty() {
                "none".to_string()
            } else {
                map_line(&self.churned)
            },
            self.node_closed
        );
        let _ = writeln!(
            t,
            "{:<28} {} started, {} signed in, {} failed attempts, {} given up; during the traffic p50 {} / p99 {} ms",
            "reconnects",
            self.reconnects,
            self.reconnected,
            self.reconnect_failures.values().sum::<u64>(),
            self.gave_up,
            ms(self.reconnect_ms.p50),
            ms(self.reconnect_ms.p99)
        );
        let _ = writeln!(
            t,
            "{:<28} {} users reconnected, {} offline at the end; over {:.2} s after stop{}",
            "final catch-up",
            self.final_reconnected,
            self.offline_at_end,
            self.drain_s,
            if self.drain_timed_out {
                " (ended by --drain-wait)"
            } else {
                ""
            }
        );
        let r = &self.rss;
        let _ = writeln!(
            t,
            "{:<28} after warm-up {} / end {} / max {} ({}; {} within ±{:.0} %)",
            "node RSS (soak)",
            kib(r.after_warmup_kib),
            kib(r.end_kib),
            kib(r.max_kib),
            r.growth_pct
                .map(|g| format!("{g:+.1} %"))
                .unwrap_or_else(|| "-".into()),
            match r.within_band {
                Some(true) => "stayed",
                Some(false) => "NOT",
                None => "-",
            },
            r.band_pct
        );
        let _ = writeln!(t, "{:<28} {}", "acknowledgements sent", self.acks_sent);
        if !self.failures.is_empty() {
            let _ = writeln!(t, "{:<28} {}", "Cmd 2 answers", map_line(&self.failures));
        }
        if !self.reconnect_failures.is_empty() {
            let _ = writeln!(
                t,
                "{:<28} {}",
                "reconnect failures",
                map_line(&self.reconnect_failures)
            );
        }
        if !self.closing_ends.is_empty() {
            let _ = writeln!(
                t,
                "{:<28} {}",
                "close-frame closes ended",
                map_line(&self.closing_ends)
            );
        }
        if !self.lost_samples.is_empty() {
            let list: Vec<String> = self
                .lost_samples
                .iter()
                .map(|(u, id)| format!("{id}→{u}"))
                .collect();
            let _ = writeln!(t, "{:<28} {}", "lost (id→user), first", list.join(" "));
        }
        let odd = self.stray_acks + self.no_id + self.skipped + self.unexpected;
        if odd > 0 || self.echoes > 0 {
            let _ = writeln!(
                t,
                "{:<28} {} stray Cmd 21, {} without Id, {} send slots skipped, {} unexpected Cmd 6, {} echoes",
                "other",
                self.stray_acks,
                self.no_id,
                self.skipped,
                self.unexpected,
                self.echoes
            );
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
    pub soak: Option<SoakSummary>,
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
            let (what, cpu) = if self.chat.is_some() {
                ("chat", n.cpu_chat_s)
            } else if let Some(soak) = &self.soak {
                ("soak", soak.node_cpu_s)
            } else {
                ("rounds", n.cpu_rounds_s)
            };
            let _ = writeln!(
                t,
                "{:<28} sign-in {} / {what} {}",
                "node CPU (s)",
                ms3(n.cpu_signin_s),
                ms3(cpu)
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
        if let Some(s) = &self.soak {
            s.table(&mut t);
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
