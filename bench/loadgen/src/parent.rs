//! The parent process: splits the connections over `--child` processes
//! (re-executions of this binary), paces the broadcast rounds or starts the
//! chat or the soak, samples the node's memory and CPU, and merges the
//! children's reports into one [`Summary`].

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::chat::{ChatPlan, ChatStat};
use crate::hist::Hist;
use crate::host::{host_facts, proc_cpus, proc_sample, unix_ns, ProcSample};
use crate::http::{send_to_all, PostResult};
use crate::opts::Scenario;
use crate::opts::{source_addr, Opts};
use crate::proto::{bump, ChildMsg, ChildReport, Plan};
use crate::report::{
    ChatSummary, Conns, Loadgen, Node, Quantiles, Round, Rounds, SignIn, Slow, SoakRss,
    SoakSummary, Summary,
};
use crate::soak::{SoakPlan, SoakStat};

/// Time the children get to report after `finish` (the slow drain is ≤ 2 s).
const REPORT_GRACE: Duration = Duration::from_secs(15);
/// Consecutive failed broadcast requests that end the rounds.
const MAX_POST_FAILURES: u32 = 3;
/// Soak, after `stop`: the wait for answers to the messages in flight, the
/// quiet time that ends the final catch-up, and the attempts of one
/// reconnect.
const SOAK_SETTLE_MS: u64 = 10_000;
const SOAK_QUIET_MS: u64 = 3_000;
const SOAK_RECONNECT_TRIES: u32 = 5;
/// RSS within this share of the post-warm-up value.
const SOAK_RSS_BAND: f64 = 0.10;

enum Msg {
    Line(usize, String),
    Eof(usize),
}

struct Kid {
    plan_from: u64,
    plan_to: u64,
    proc: Option<Child>,
    stdin: Option<ChildStdin>,
    alive: bool,
    ready: Option<(u64, u64, u64)>,
    rounds_done: Vec<bool>,
    /// Chat: the child has sent and received everything.
    done: bool,
    report: Option<ChildReport>,
}

impl Kid {
    fn send(&mut self, line: &str) {
        if let Some(s) = self.stdin.as_mut() {
            if writeln!(s, "{line}").and_then(|_| s.flush()).is_err() {
                self.stdin = None;
            }
        }
    }
}

/// Samples the node's RSS every 50 ms and keeps the peak.
struct Sampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Sampler {
    fn start(pid: Option<u32>) -> Sampler {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let handle = pid.map(|pid| {
            let (peak, stop) = (peak.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(s) = proc_sample(pid) {
                        peak.fetch_max(s.rss_kib, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        });
        Sampler { peak, stop, handle }
    }

    fn finish(mut self) -> Option<u64> {
        self.stop.store(true, Ordering::Relaxed);
        let h = self.handle.take()?;
        let _ = h.join();
        Some(self.peak.load(Ordering::Relaxed)).filter(|p| *p > 0)
    }
}

struct Parent {
    kids: Vec<Kid>,
    rx: Receiver<Msg>,
    errors: BTreeMap<String, u64>,
}

impl Parent {
    /// Handles children's lines until `done` holds or `until` passes;
    /// returns whether `done` held.
    fn wait(&mut self, until: Instant, done: impl Fn(&[Kid]) -> bool) -> bool {
        loop {
            if done(&self.kids) {
                return true;
            }
            let now = Instant::now();
            if now >= until {
                return false;
            }
            match self.rx.recv_timeout(until - now) {
                Ok(m) => self.handle(m),
                Err(RecvTimeoutError::Timeout) => return done(&self.kids),
                Err(RecvTimeoutError::Disconnected) => return done(&self.kids),
            }
        }
    }

    fn handle(&mut self, m: Msg) {
        match m {
            Msg::Eof(k) => {
                self.kids[k].alive = false;
                self.kids[k].stdin = None;
            }
            Msg::Line(k, line) => match serde_json::from_str::<ChildMsg>(&line) {
                Ok(ChildMsg::Ready {
                    signed_in,
                    readers,
                    slow,
                    ..
                }) => self.kids[k].ready = Some((signed_in, readers, slow)),
                Ok(ChildMsg::Round { round }) => {
                    if let Some(d) = self.kids[k].rounds_done.get_mut(round as usize) {
                        *d = true;
                    }
                }
                Ok(ChildMsg::Done) => self.kids[k].done = true,
                Ok(ChildMsg::Report(r)) => self.kids[k].report = Some(*r),
                Err(_) => bump(&mut self.errors, "loadgen: unreadable child line", 1),
            },
        }
    }

    fn sleep(&mut self, d: Duration, deadline: Instant) {
        let until = (Instant::now() + d).min(deadline);
        self.wait(until, |_| false);
    }
}

fn spawn_kid(k: usize, plan: &Plan, tx: mpsc::Sender<Msg>) -> Result<Kid, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut proc = Command::new(exe)
        .arg("--child")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let mut stdin = proc.stdin.take().ok_or("no child stdin")?;
    let stdout = proc.stdout.take().ok_or("no child stdout")?;
    let line = serde_json::to_string(plan).map_err(|e| e.to_string())?;
    if let Err(e) = writeln!(stdin, "{line}").and_then(|_| stdin.flush()) {
        let _ = proc.kill();
        let _ = proc.wait();
        return Err(format!("plan: {e}"));
    }
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            match line {
                Ok(l) => {
                    if tx.send(Msg::Line(k, l)).is_err() {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = tx.send(Msg::Eof(k));
    });
    Ok(Kid {
        plan_from: plan.from,
        plan_to: plan.to,
        proc: Some(proc),
        stdin: Some(stdin),
        alive: true,
        ready: None,
        rounds_done: vec![false; plan.rounds as usize + 1],
        done: false,
        report: None,
    })
}

fn plans(o: &Opts, deadline_ms: u64, nonce: &str) -> Vec<Plan> {
    let procs = o.procs as u64;
    let mut chunk = o.conns.div_ceil(procs);
    if matches!(o.scenario, Scenario::Chat | Scenario::Soak) {
        // Both sides of a pair in one process (per_proc is even).
        chunk += chunk % 2;
    }
    let chat = o.scenario.is_chat().then(|| ChatPlan {
        group: o.scenario == Scenario::Group,
        messages: o.messages,
        window: o.msg_window,
        interval_ms: o.interval_ms,
        body_bytes: o.body_bytes,
        group_id: o.group_id,
        nonce: nonce.to_string(),
        stall_ms: (o.round_wait_s * 1000.0) as u64,
    });
    let window = o.window.div_ceil(o.procs).max(1);
    let rate = o.rate / o.procs as f64;
    (0..procs)
        .map(|k| Plan {
            child: k as usize,
            target: o.target,
            path: o.path.clone(),
            from: (k * chunk).min(o.conns),
            to: ((k + 1) * chunk).min(o.conns),
            first_user: o.first_user,
            per_src: o.per_src,
            src_first: o.src_first,
            slow_pct: o.slow_pct,
            slow_rcvbuf: o.slow_rcvbuf,
            window,
            rate,
            connect_timeout_ms: (o.connect_timeout_s * 1000.0) as u64,
            rounds: o.rounds,
            round_wait_ms: (o.round_wait_s * 1000.0) as u64,
            heartbeat_ms: (o.heartbeat_s * 1000.0) as u64,
            max_frame: (o.body_bytes * 2 + 64 * 1024).max(1 << 20),
            deadline_ms,
            secret: o.secret.clone(),
            chat: chat.clone(),
            soak: None,
        })
        .filter(|p| p.to > p.from)
        .map(|mut p| {
            if o.scenario == Scenario::Soak {
                // Each child's share of the rate and the churn.
                let share = (p.to - p.from) as f64 / o.conns as f64;
                p.soak = Some(SoakPlan {
                    rate: o.msg_rate * share,
                    churn_per_s: o.churn_pct / 100.0 * (p.to - p.from) as f64,
                    body_bytes: o.body_bytes,
                    nonce: nonce.to_string(),
                    ack_ms: o.ack_ms,
                    ack_every: o.ack_every,
                    settle_ms: SOAK_SETTLE_MS,
                    drain_ms: (o.drain_s * 1000.0) as u64,
                    quiet_ms: SOAK_QUIET_MS,
                    reconnect_tries: SOAK_RECONNECT_TRIES,
                    away_ms: o.away_ms,
                });
            }
            p
        })
        .collect()
}

fn rss(s: Option<ProcSample>) -> Option<u64> {
    s.map(|s| s.rss_kib)
}

/// Runs the scenario of `opts` and returns the summary.
pub fn run(opts: Opts) -> Summary {
    let host = host_facts();
    let started_unix_ms = unix_ns() / 1_000_000;
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(opts.timeout_s);
    let pid = opts.pid;
    let sample = || pid.and_then(proc_sample);
    let before = sample();
    let sampler = Sampler::start(pid);

    // Children get the run's bound plus the report grace as their own limit.
    let child_deadline_ms = ((opts.timeout_s * 1000.0) as u64) + 10_000;
    let (tx, rx) = mpsc::channel();
    let mut p = Parent {
        kids: Vec::new(),
        rx,
        errors: BTreeMap::new(),
    };
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    // Part of every Cid: a second run against the same store sends fresh ids.
    let nonce = format!("{:x}", unix_ns() / 1000);
    for plan in plans(&opts, child_deadline_ms, &nonce) {
        match spawn_kid(plan.child, &plan, tx.clone()) {
            Ok(kid) => p.kids.push(kid),
            Err(e) => bump(
                &mut failures,
                &format!("loadgen process: {e}"),
                plan.to - plan.from,
            ),
        }
    }
    drop(tx);

    // Sign-in: every child reports ready (or dies), bounded by the deadline.
    let all_ready = p.wait(deadline, |kids| {
        kids.iter().all(|k| !k.alive || k.ready.is_some())
    });
    let signed_in_sample = sample();
    p.sleep(Duration::from_secs_f64(opts.settle_s), deadline);
    let settled_sample = sample();

    // Broadcast rounds.
    let mut round_posts: Vec<(u32, PostResult, bool)> = Vec::new();
    let mut timed_out = !all_ready;
    let rounds_start_cpu = sample().map(|s| s.cpu_s);
    let readers: u64 = p
        .kids
        .iter()
        .filter_map(|k| k.ready.map(|(_, readers, _)| readers))
        .sum();
    if opts.scenario.has_rounds() && all_ready && readers == 0 {
        bump(&mut p.errors, "rounds skipped: no reader signed in", 1);
    }
    if opts.scenario.has_rounds() && all_ready && readers > 0 {
        let wait = Duration::from_secs_f64(opts.round_wait_s);
        let token = opts.admin_token.clone().unwrap_or_default();
        let mut post_failures = 0;
        for r in 1..=opts.rounds {
            if Instant::now() >= deadline {
                timed_out = true;
                break;
            }
            for kid in p.kids.iter_mut().filter(|k| k.alive) {
                kid.send(&format!("round {r}"));
            }
            let sent_at = Instant::now();
            let post = send_to_all(opts.target, &token, r, opts.body_bytes, wait);
            // Without an answer from the node nothing may arrive; a refused
            // request (HTTP error) certainly sends nothing.
            let until = if post.status.is_some() && !post.ok() {
                Instant::now()
            } else {
                (sent_at + wait).min(deadline)
            };
            let complete = p.wait(until, |kids| {
                kids.iter()
                    .filter(|k| k.alive)
                    .all(|k| k.rounds_done[r as usize])
            });
            if post.ok() {
                post_failures = 0;
            } else {
                post_failures += 1;
            }
            round_posts.push((r, post, complete));
            if post_failures >= MAX_POST_FAILURES {
                bump(
                    &mut p.errors,
                    "rounds stopped: broadcast requests failing",
                    1,
                );
                break;
            }
            if r < opts.rounds {
                p.sleep(Duration::from_millis(opts.gap_ms), deadline);
            }
        }
    }
    let rounds_end_cpu = sample().map(|s| s.cpu_s);

    // Chat: every child starts sending at once and says when it is done.
    let mut chat_cpu = None;
    if opts.scenario.is_chat() && all_ready && readers == 0 {
        bump(&mut p.errors, "chat skipped: no connection signed in", 1);
    }
    if opts.scenario.is_chat() && all_ready && readers > 0 {
        let start = sample().map(|s| s.cpu_s);
        for kid in p.kids.iter_mut().filter(|k| k.alive) {
            kid.send("go");
        }
        let done = p.wait(deadline, |kids| {
            kids.iter().filter(|k| k.alive).all(|k| k.done)
        });
        timed_out |= !done;
        chat_cpu = match (start, sample().map(|s| s.cpu_s)) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
    }

    // Soak: traffic and churn for the duration while the node's RSS is
    // sampled; then stop, and every child reconnects its users once more
    // and waits for the catch-up.
    let mut soak_rss = None;
    let mut soak_cpu = None;
    let mut soak_phase_s = None;
    if opts.scenario == Scenario::Soak && all_ready && readers == 0 {
        bump(&mut p.errors, "soak skipped: no connection signed in", 1);
    }
    if opts.scenario == Scenario::Soak && all_ready && readers > 0 {
        let start = sample().map(|s| s.cpu_s);
        for kid in p.kids.iter_mut().filter(|k| k.alive) {
            kid.send("go");
        }
        let go = Instant::now();
        let end = (go + Duration::from_secs_f64(opts.duration_s)).min(deadline);
        let every = Duration::from_secs_f64(opts.rss_every_s);
        let mut samples: Vec<(f64, u64)> = Vec::new();
        let mut next = go;
        // Bounded: one sample per interval until the end of the duration.
        while Instant::now() < end && p.kids.iter().any(|k| k.alive) {
            if let Some(r) = rss(sample()) {
                samples.push((go.elapsed().as_secs_f64(), r));
            }
            next += every;
            let until = next.min(end);
            p.wait(until, |_| false);
        }
        if let Some(r) = rss(sample()) {
            samples.push((go.elapsed().as_secs_f64(), r));
        }
        soak_phase_s = Some(go.elapsed().as_secs_f64());
        soak_cpu = match (start, sample().map(|s| s.cpu_s)) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        soak_rss = Some(SoakRss::new(pid, opts.warmup_s, SOAK_RSS_BAND, samples));
        for kid in p.kids.iter_mut().filter(|k| k.alive) {
            kid.send("stop");
        }
        let done = p.wait(deadline, |kids| {
            kids.iter().filter(|k| k.alive).all(|k| k.done)
        });
        timed_out |= !done;
    }

    // Finish: every child drains, reports and exits.
    for kid in p.kids.iter_mut() {
        kid.send("finish");
    }
    p.wait(Instant::now() + REPORT_GRACE, |kids| {
        kids.iter().all(|k| !k.alive || k.report.is_some())
    });
    for kid in p.kids.iter_mut() {
        kid.stdin = None;
        if let Some(mut proc) = kid.proc.take() {
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                match proc.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => {
                        // Our own child, by its handle (pid).
                        let _ = proc.kill();
                        let _ = proc.wait();
                        break;
                    }
                }
            }
        }
    }
    let peak = sampler.finish();
    let end = sample();

    // Merge.
    let o = &opts;
    let mut conns = Conns {
        requested: o.conns,
        procs: p.kids.len(),
        source_addrs: {
            let first = source_addr(o.src_first, o.per_src, 0);
            let last = source_addr(o.src_first, o.per_src, o.conns - 1);
            (u32::from(first)..=u32::from(last))
                .map(|a| std::net::Ipv4Addr::from(a).to_string())
                .collect()
        },
        ..Conns::default()
    };
    let mut signin_us = Hist::default();
    let mut first_connect = u64::MAX;
    let mut last_signin = 0;
    let mut close_reasons = BTreeMap::new();
    let mut other_cmds = BTreeMap::new();
    let mut errors = std::mem::take(&mut p.errors);
    let mut readers_closed = 0;
    let mut slow_closed = 0;
    let mut slow_frames = 0;
    let mut chat = ChatStat::default();
    let mut soak = SoakStat::default();
    let mut loadgen = Loadgen {
        cpus: host.loadgen_cpus,
        ..Loadgen::default()
    };
    let nrounds = round_posts.len();
    let mut per_round: Vec<(u64, u64, u64, u64, Hist)> =
        vec![(0, 0, u64::MAX, 0, Hist::default()); nrounds];
    for kid in &p.kids {
        let Some(r) = &kid.report else {
            bump(
                &mut failures,
                "loadgen process ended without a report",
                kid.plan_to - kid.plan_from,
            );
            continue;
        };
        if r.timed_out {
            timed_out = true;
        }
        conns.attempted += r.attempted;
        conns.connected += r.connected;
        conns.upgraded += r.upgraded;
        conns.signed_in += r.signed_in;
        conns.readers += r.readers;
        conns.slow += r.slow;
        for (k, v) in &r.failures {
            bump(&mut failures, k, *v);
        }
        if r.first_connect_ns > 0 {
            first_connect = first_connect.min(r.first_connect_ns);
        }
        last_signin = last_signin.max(r.last_signin_ns);
        signin_us.merge(&r.signin_us);
        for (k, v) in &r.close_reasons {
            bump(&mut close_reasons, k, *v);
        }
        for (k, v) in &r.other_cmds {
            bump(&mut other_cmds, k, *v);
        }
        for (k, v) in &r.errors {
            bump(&mut errors, k, *v);
        }
        readers_closed += r.readers_closed;
        slow_closed += r.slow_closed;
        slow_frames += r.slow_frames;
        if let Some(c) = &r.chat {
            chat.merge(c);
        }
        if let Some(s) = &r.soak {
            soak.merge(s);
        }
        loadgen.cpu_signin_s += r.cpu_signin_s;
        loadgen.cpu_total_s += r.cpu_total_s;
        for (i, acc) in per_round.iter_mut().enumerate() {
            if let Some(s) = r.rounds.get(i) {
                acc.0 += s.received;
                acc.1 += s.late;
                if s.first_ns > 0 {
                    acc.2 = acc.2.min(s.first_ns);
                }
                acc.3 = acc.3.max(s.last_ns);
                acc.4.merge(&s.lat_us);
            }
        }
    }
    conns.failed = failures.values().sum();
    conns.failures = failures;

    let signin_secs = (last_signin > first_connect && first_connect != u64::MAX)
        .then(|| (last_signin - first_connect) as f64 / 1e9);
    let signin = SignIn {
        seconds: signin_secs,
        per_second: signin_secs
            .filter(|s| *s > 0.0)
            .map(|s| conns.signed_in as f64 / s),
        latency_ms: Quantiles::from_us(&signin_us),
    };

    let per_conn = |after: Option<u64>| match (before.map(|s| s.rss_kib), after) {
        (Some(b), Some(a)) if conns.signed_in > 0 => {
            Some((a as f64 - b as f64) * 1024.0 / conns.signed_in as f64)
        }
        _ => None,
    };
    let node = Node {
        pid,
        cpus: pid.and_then(proc_cpus),
        rss_before_kib: rss(before),
        rss_signed_in_kib: rss(signed_in_sample),
        rss_settled_kib: rss(settled_sample),
        rss_end_kib: rss(end),
        rss_peak_kib: peak,
        rss_hwm_kib: end.map(|s| s.hwm_kib),
        rss_per_conn_bytes: per_conn(rss(settled_sample)),
        rss_per_conn_bytes_unsettled: per_conn(rss(signed_in_sample)),
        cpu_signin_s: match (before, signed_in_sample) {
            (Some(a), Some(b)) => Some(b.cpu_s - a.cpu_s),
            _ => None,
        },
        cpu_rounds_s: match (rounds_start_cpu, rounds_end_cpu) {
            (Some(a), Some(b)) if o.scenario.has_rounds() => Some(b - a),
            _ => None,
        },
        cpu_chat_s: chat_cpu,
    };
    let chat = o
        .scenario
        .is_chat()
        .then(|| ChatSummary::new(o, &conns, chat));
    let soak = (o.scenario == Scenario::Soak).then(|| {
        SoakSummary::new(
            o,
            soak,
            soak_rss.unwrap_or_default(),
            soak_cpu,
            soak_phase_s,
        )
    });

    let expected = readers;
    let rounds = o.scenario.has_rounds().then(|| {
        let mut all = Hist::default();
        let mut fanouts = Vec::new();
        let mut lost_total = 0;
        let mut late_total = 0;
        let per: Vec<Round> = round_posts
            .iter()
            .zip(per_round.iter())
            .map(|((r, post, complete), acc)| {
                all.merge(&acc.4);
                let got = acc.0 + acc.1;
                let lost = expected.saturating_sub(got);
                lost_total += lost;
                late_total += acc.1;
                let since = |t: u64| {
                    (got > 0 && t != u64::MAX && t > 0)
                        .then(|| t.saturating_sub(post.send_ns) as f64 / 1e6)
                };
                let fanout = since(acc.3);
                if let Some(f) = fanout {
                    fanouts.push(f);
                }
                Round {
                    round: *r,
                    send_unix_ns: post.send_ns,
                    post_ms: post.ms,
                    post_error: post.error.clone(),
                    node_local: post.local,
                    expected,
                    received: acc.0,
                    late: acc.1,
                    lost,
                    complete: *complete,
                    fanout_ms: fanout,
                    first_ms: since(acc.2),
                    latency_ms: Quantiles::from_us(&acc.4),
                }
            })
            .collect();
        fanouts.sort_by(|a, b| a.total_cmp(b));
        Rounds {
            planned: o.rounds,
            done: per.len() as u32,
            body_bytes: o.body_bytes,
            expected_per_round: expected,
            latency_ms: Quantiles::from_us(&all),
            fanout_p50_ms: (!fanouts.is_empty()).then(|| fanouts[(fanouts.len() - 1) / 2]),
            fanout_max_ms: fanouts.last().copied(),
            lost: lost_total,
            late: late_total,
            readers_closed,
            per_round: per,
        }
    });
    let slow = (o.scenario == crate::opts::Scenario::Slow).then_some(Slow {
        slow_conns: conns.slow,
        slow_pct: o.slow_pct,
        rcvbuf: o.slow_rcvbuf,
        closed: slow_closed,
        frames_at_end: slow_frames,
    });

    Summary {
        tool: "weim-load",
        scenario: o.scenario.name(),
        params: opts.clone(),
        host,
        started_unix_ms,
        duration_s: t0.elapsed().as_secs_f64(),
        timed_out,
        conns,
        signin,
        node,
        loadgen,
        rounds,
        slow,
        chat,
        soak,
        close_reasons,
        errors,
        other_cmds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(s: &str) -> Opts {
        let args: Vec<String> = s.split_whitespace().map(String::from).collect();
        crate::opts::parse(&args).unwrap()
    }

    #[test]
    fn pairs_stay_in_one_process() {
        let o = opts("chat --secret s --pairs 3 --procs 2");
        let p = plans(&o, 1000, "n");
        let ranges: Vec<(u64, u64)> = p.iter().map(|p| (p.from, p.to)).collect();
        assert_eq!(ranges, vec![(0, 4), (4, 6)]);
        let c = p[0].chat.as_ref().unwrap();
        assert!(!c.group);
        assert_eq!((c.messages, c.window, c.nonce.as_str()), (50, 16, "n"));
        let o = opts("group --secret s --members 5 --rounds 7 --procs 2");
        let p = plans(&o, 1000, "n");
        assert_eq!((p[0].from, p[0].to, p[1].to), (0, 3, 5));
        let c = p[1].chat.as_ref().unwrap();
        assert!(c.group);
        assert_eq!((c.messages, c.interval_ms, c.group_id), (7, 10, 1));
        assert_eq!(p[1].rounds, 0);
        assert!(plans(&opts("idle --secret s"), 1000, "n")[0].chat.is_none());
        let o = opts("soak --secret s --conns 10 --procs 3 --rate 100 --churn 10");
        let p = plans(&o, 1000, "n");
        let ranges: Vec<(u64, u64)> = p.iter().map(|p| (p.from, p.to)).collect();
        assert_eq!(ranges, vec![(0, 4), (4, 8), (8, 10)]);
        let s = p[2].soak.as_ref().unwrap();
        assert_eq!((s.rate, s.churn_per_s), (20.0, 0.2));
        assert!(p[0].chat.is_none());
    }
}
