//! Command-line options of `weim-load` and their validation (loopback only,
//! bounded counts and times).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::Serialize;

pub const USAGE: &str = "\
usage: weim-load <idle|broadcast|slow|chat|group|soak> [options]

  --target ADDR          gateway address, loopback only (default 127.0.0.1:8080)
  --path PATH            WebSocket path (default /ws)
  --conns N              connections, one user each (default 1000)
  --first-user ID        user id of the first connection (default 1)
  --secret S             the node's JWT secret
  --secret-file PATH     ... or read it from a file (e.g. <data_dir>/jwt_secret)
  --pid PID              the node's pid, for RSS and CPU from /proc (also --node-pid)
  --admin-token T        Admin-Token for POST /ws/sendToAll (broadcast, slow)
  --rounds R             broadcast rounds (default 20)
  --body-bytes B         broadcast body size in bytes (default 100)
  --slow-pct P           percentage of clients that never read (slow; default 1)
  --slow-rcvbuf BYTES    SO_RCVBUF of the slow clients (default 4096)
  --round-wait SECS      wait per round for every frame (default 10)
  --gap-ms MS            pause between rounds (default 200)
  --settle SECS          pause after sign-in before the RSS sample (default 2)
  --window N             connects in flight over all processes (default 2000);
                         in chat: unacknowledged messages per connection (default 16)
  --connect-window N     connects in flight over all processes, in any scenario
  --rate N               connects per second over all processes, 0 = no limit (default 0;
                         in soak: messages per second, see below)
  --connect-rate N       connects per second over all processes, in any scenario
  --connect-timeout SECS connect + upgrade + sign-in, per connection (default 15)
  --per-proc N           connections per process, at most 19000 (default 19000)
  --procs P              processes (default: as few as --per-proc allows)
  --per-src N            connections per source address, at most 25000 (default 5000:
                         the kernel's port search gets slow as a source fills up)
  --src-first N          first source address 127.0.0.N (default 2)
  --heartbeat SECS       WebSocket ping per connection every SECS, 0 = off
                         (default 50, below the gateway's 120 s idle timeout)
  --timeout SECS         bound of the whole run (default 120)
  --json PATH            write the full result as JSON

chat (P pairs of friends, users first_user.. in pairs (2k, 2k+1), over the socket):
  --pairs P              pairs, 2P connections (default 1000)
  --messages M           messages each connection sends its partner (default 50)
  --window W             unacknowledged (Cmd 21) messages in flight per connection (default 16)
group (G members of one group; connection 0, user first_user, is the sender):
  --members G            members online, sender included (default 5000)
  --rounds R             messages the sender posts (default 200)
  --interval-ms MS       one message every MS (default 10)
  --group-id ID          the group (default 1)
both: --body-bytes B (default 100), --round-wait SECS (a child that counts nothing
for this long after the start stops waiting; default 10). The friendships and the
group must exist in the node's store (bench/run.sh inserts them).
soak (pairs of friends (2k, 2k+1) chatting while connections are closed and reconnected;
every stored message is accounted for per recipient):
  --conns N              connections, an even number (default 19000; 5000 per process)
  --rate N               messages per second over all connections (default 500)
  --churn PCT            percent of the connections closed and reconnected each second,
                         half with a close frame, half abruptly (RST or FIN) (default 1)
  --duration SECS        traffic and churn, warm-up included (default 600)
  --warmup SECS          left out of the RSS comparison (default 60)
  --away-ms MS           a closed connection reconnects after MS (default 0: at once)
  --drain-wait SECS      bound of the final reconnect of every user and its catch-up (default 60)
  --ack-ms MS            acknowledge (Cmd 22) receipts at most MS later (default 50)
  --ack-every N          ... or once N are unacknowledged (default 100)
  --rss-every SECS       sample the node's VmRSS every SECS (default 5)
  --timeout defaults to duration + drain-wait + 120 s. Sign-in declares
  acknowledgements (Cmd 3 with Ack true). The friendships must exist.
";

/// The scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    Idle,
    Broadcast,
    Slow,
    /// Pairs of friends sending over the socket.
    Chat,
    /// One sender, one group.
    Group,
    /// Pairs chatting at a steady rate under connection churn.
    Soak,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Idle => "idle",
            Scenario::Broadcast => "broadcast",
            Scenario::Slow => "slow",
            Scenario::Chat => "chat",
            Scenario::Group => "group",
            Scenario::Soak => "soak",
        }
    }

    /// Broadcast rounds through `POST /ws/sendToAll`.
    pub fn has_rounds(self) -> bool {
        matches!(self, Scenario::Broadcast | Scenario::Slow)
    }

    /// Messages sent over the socket (Cmd 20).
    pub fn is_chat(self) -> bool {
        matches!(self, Scenario::Chat | Scenario::Group)
    }
}

/// Parsed and validated options. The secret itself is not kept here (it
/// would end up in the JSON report).
#[derive(Debug, Clone, Serialize)]
pub struct Opts {
    pub scenario: Scenario,
    pub target: SocketAddr,
    pub path: String,
    pub conns: u64,
    pub first_user: u64,
    #[serde(skip)]
    pub secret: Vec<u8>,
    pub secret_file: Option<PathBuf>,
    pub pid: Option<u32>,
    #[serde(skip)]
    pub admin_token: Option<String>,
    pub rounds: u32,
    pub body_bytes: usize,
    pub slow_pct: f64,
    pub slow_rcvbuf: usize,
    pub round_wait_s: f64,
    pub gap_ms: u64,
    pub settle_s: f64,
    pub window: usize,
    pub rate: f64,
    pub connect_timeout_s: f64,
    pub per_proc: u64,
    pub procs: usize,
    pub per_src: u64,
    pub src_first: u32,
    pub heartbeat_s: f64,
    pub timeout_s: f64,
    pub json: Option<PathBuf>,
    /// chat: pairs of friends (`conns` = 2 × pairs).
    pub pairs: u64,
    /// chat: messages per connection; group: `rounds`.
    pub messages: u32,
    /// chat: unacknowledged messages in flight per connection.
    pub msg_window: usize,
    /// group: pause between messages.
    pub interval_ms: u64,
    pub group_id: u64,
    /// soak: messages per second over all connections.
    pub msg_rate: f64,
    /// soak: percent of the connections closed per second.
    pub churn_pct: f64,
    /// soak: traffic and churn, warm-up included.
    pub duration_s: f64,
    /// soak: left out of the RSS comparison.
    pub warmup_s: f64,
    /// soak: bound of the final reconnect and catch-up.
    pub drain_s: f64,
    /// soak: how long a closed connection stays away.
    pub away_ms: u64,
    /// soak: acknowledgement batching.
    pub ack_ms: u64,
    pub ack_every: u32,
    /// soak: the node's RSS sampling interval.
    pub rss_every_s: f64,
}

pub const MAX_CONNS: u64 = 500_000;
pub const MAX_PER_PROC: u64 = 19_000;
pub const MAX_PER_SRC: u64 = 25_000;
/// With 19,000 connections from one source address, `connect()` cost about
/// 300 µs of kernel time each (the ephemeral port search); with 5,000 per
/// address, about 30 µs.
pub const DEFAULT_PER_SRC: u64 = 5_000;
pub const MAX_ROUNDS: u32 = 10_000;
pub const MAX_BODY: usize = 1 << 20;
/// Longest chat body: weim's default `chat.max_body_chars` is 4096.
pub const MAX_CHAT_BODY: usize = 64 * 1024;
pub const MAX_MESSAGES: u32 = 100_000;
pub const MAX_MSG_WINDOW: usize = 1024;
pub const MAX_TIMEOUT_S: f64 = 3600.0;
/// Longest soak: sign-in tokens live an hour, minted at the start.
pub const MAX_SOAK_S: f64 = 3000.0;
/// Connections per process in soak: room for the sockets being closed and
/// reconnected next to them below the 20,000 open files of a process.
pub const SOAK_PER_PROC: u64 = 5000;

fn num<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{name}: not a valid number: {v:?}"))
}

fn secs(name: &str, v: &str) -> Result<f64, String> {
    let x: f64 = num(name, v)?;
    if !(0.0..=MAX_TIMEOUT_S).contains(&x) {
        return Err(format!("{name}: must be within 0..={MAX_TIMEOUT_S} s"));
    }
    Ok(x)
}

/// Reads a secret file; surrounding whitespace (a trailing newline) is not
/// part of the secret.
pub fn read_secret_file(path: &PathBuf) -> Result<Vec<u8>, String> {
    let raw = std::fs::read(path).map_err(|e| format!("--secret-file {}: {e}", path.display()))?;
    let start = raw.iter().position(|b| !b.is_ascii_whitespace());
    let end = raw.iter().rposition(|b| !b.is_ascii_whitespace());
    match (start, end) {
        (Some(s), Some(e)) => Ok(raw[s..=e].to_vec()),
        _ => Err(format!("--secret-file {}: empty", path.display())),
    }
}

/// The source address of connection `index` (0-based over the whole run).
pub fn source_addr(src_first: u32, per_src: u64, index: u64) -> Ipv4Addr {
    let base = u32::from(Ipv4Addr::new(127, 0, 0, 0));
    Ipv4Addr::from(base + src_first + (index / per_src) as u32)
}

pub fn parse(args: &[String]) -> Result<Opts, String> {
    let mut it = args.iter();
    let scenario = match it.next().map(String::as_str) {
        Some("idle") => Scenario::Idle,
        Some("broadcast") => Scenario::Broadcast,
        Some("slow") => Scenario::Slow,
        Some("chat") => Scenario::Chat,
        Some("group") => Scenario::Group,
        Some("soak") => Scenario::Soak,
        Some("-h") | Some("--help") | None => return Err(String::new()),
        Some(other) => return Err(format!("unknown scenario {other:?}")),
    };
    let mut o = Opts {
        scenario,
        target: "127.0.0.1:8080".parse().unwrap(),
        path: "/ws".into(),
        conns: 1000,
        first_user: 1,
        secret: Vec::new(),
        secret_file: None,
        pid: None,
        admin_token: None,
        rounds: if scenario == Scenario::Group { 200 } else { 20 },
        body_bytes: 100,
        slow_pct: if scenario == Scenario::Slow { 1.0 } else { 0.0 },
        slow_rcvbuf: 4096,
        round_wait_s: 10.0,
        gap_ms: 200,
        settle_s: 2.0,
        window: 2000,
        rate: 0.0,
        connect_timeout_s: 15.0,
        per_proc: MAX_PER_PROC,
        procs: 0,
        per_src: DEFAULT_PER_SRC,
        src_first: 2,
        heartbeat_s: 50.0,
        timeout_s: 120.0,
        json: None,
        pairs: 1000,
        messages: 50,
        msg_window: 16,
        interval_ms: 10,
        group_id: 1,
        msg_rate: 500.0,
        churn_pct: 1.0,
        duration_s: 600.0,
        warmup_s: 60.0,
        drain_s: 60.0,
        away_ms: 0,
        ack_ms: 50,
        ack_every: 100,
        rss_every_s: 5.0,
    };
    let soak = scenario == Scenario::Soak;
    let mut per_proc_given = false;
    let mut timeout_given = false;
    let mut slow_pct_given = false;
    let mut conns_given = false;
    let mut members = 5000;
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        let v = it
            .next()
            .ok_or_else(|| format!("{flag}: missing value"))?
            .as_str();
        match flag.as_str() {
            "--target" => o.target = num(flag, v)?,
            "--path" => o.path = v.to_string(),
            "--conns" => {
                o.conns = num(flag, v)?;
                conns_given = true;
            }
            "--first-user" => o.first_user = num(flag, v)?,
            "--secret" => o.secret = v.as_bytes().to_vec(),
            "--secret-file" => o.secret_file = Some(PathBuf::from(v)),
            "--pid" | "--node-pid" => o.pid = Some(num(flag, v)?),
            "--admin-token" => o.admin_token = Some(v.to_string()),
            "--rounds" => o.rounds = num(flag, v)?,
            "--body-bytes" => o.body_bytes = num(flag, v)?,
            "--slow-pct" => {
                o.slow_pct = num(flag, v)?;
                slow_pct_given = true;
            }
            "--slow-rcvbuf" => o.slow_rcvbuf = num(flag, v)?,
            "--round-wait" => o.round_wait_s = secs(flag, v)?,
            "--gap-ms" => o.gap_ms = num(flag, v)?,
            "--settle" => o.settle_s = secs(flag, v)?,
            "--window" if scenario == Scenario::Chat => o.msg_window = num(flag, v)?,
            "--window" | "--connect-window" => o.window = num(flag, v)?,
            "--pairs" if scenario == Scenario::Chat => o.pairs = num(flag, v)?,
            "--messages" if scenario == Scenario::Chat => o.messages = num(flag, v)?,
            "--members" if scenario == Scenario::Group => members = num(flag, v)?,
            "--interval-ms" if scenario == Scenario::Group => o.interval_ms = num(flag, v)?,
            "--group-id" if scenario == Scenario::Group => o.group_id = num(flag, v)?,
            "--rate" if soak => o.msg_rate = num(flag, v)?,
            "--rate" | "--connect-rate" => o.rate = num(flag, v)?,
            "--churn" if soak => o.churn_pct = num(flag, v)?,
            "--duration" if soak => o.duration_s = secs(flag, v)?,
            "--warmup" if soak => o.warmup_s = secs(flag, v)?,
            "--drain-wait" if soak => o.drain_s = secs(flag, v)?,
            "--away-ms" if soak => o.away_ms = num(flag, v)?,
            "--ack-ms" if soak => o.ack_ms = num(flag, v)?,
            "--ack-every" if soak => o.ack_every = num(flag, v)?,
            "--rss-every" if soak => o.rss_every_s = secs(flag, v)?,
            "--connect-timeout" => o.connect_timeout_s = secs(flag, v)?,
            "--per-proc" => {
                o.per_proc = num(flag, v)?;
                per_proc_given = true;
            }
            "--procs" => o.procs = num(flag, v)?,
            "--per-src" => o.per_src = num(flag, v)?,
            "--src-first" => o.src_first = num(flag, v)?,
            "--heartbeat" => o.heartbeat_s = secs(flag, v)?,
            "--timeout" => {
                o.timeout_s = secs(flag, v)?;
                timeout_given = true;
            }
            "--json" => o.json = Some(PathBuf::from(v)),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if let Some(p) = &o.secret_file {
        o.secret = read_secret_file(p)?;
    }
    match scenario {
        Scenario::Chat | Scenario::Group if conns_given => {
            return Err("--conns: chat takes --pairs, group --members".into())
        }
        Scenario::Chat => o.conns = o.pairs.saturating_mul(2),
        Scenario::Group => {
            o.conns = members;
            o.messages = o.rounds;
        }
        Scenario::Soak => {
            if !conns_given {
                o.conns = 19_000;
            }
            if !per_proc_given {
                o.per_proc = SOAK_PER_PROC;
            }
            if !timeout_given {
                o.timeout_s = (o.duration_s + o.drain_s + 120.0).min(MAX_TIMEOUT_S);
            }
        }
        _ => {}
    }
    validate(&mut o, slow_pct_given)?;
    Ok(o)
}

fn validate(o: &mut Opts, slow_pct_given: bool) -> Result<(), String> {
    match o.target.ip() {
        IpAddr::V4(ip) if ip.octets()[0] == 127 => {}
        ip => return Err(format!("--target {ip}: only 127.0.0.0/8 is allowed")),
    }
    if o.target.port() == 0 {
        return Err("--target: port 0".into());
    }
    if !o.path.starts_with('/') || o.path.bytes().any(|b| b <= b' ' || b == 0x7F) {
        return Err("--path: must start with / and hold no spaces".into());
    }
    if o.secret.is_empty() {
        return Err("the node's JWT secret is needed: --secret or --secret-file".into());
    }
    if o.conns == 0 || o.conns > MAX_CONNS {
        return Err(format!("--conns: 1..={MAX_CONNS}"));
    }
    if o.first_user == 0 || o.first_user.checked_add(o.conns).is_none() {
        return Err("--first-user: must be at least 1".into());
    }
    if o.scenario.has_rounds() {
        if o.admin_token.as_deref().unwrap_or("").is_empty() {
            return Err("--admin-token is needed for broadcast rounds".into());
        }
        let token = o.admin_token.as_deref().unwrap_or("");
        if token.bytes().any(|b| !(0x21..0x7F).contains(&b)) {
            return Err("--admin-token: printable ASCII without spaces".into());
        }
        if o.rounds == 0 || o.rounds > MAX_ROUNDS {
            return Err(format!("--rounds: 1..={MAX_ROUNDS}"));
        }
        if o.body_bytes > MAX_BODY {
            return Err(format!("--body-bytes: at most {MAX_BODY}"));
        }
    } else if o.scenario == Scenario::Group {
        if o.rounds == 0 || o.rounds > MAX_MESSAGES {
            return Err(format!("--rounds: 1..={MAX_MESSAGES}"));
        }
        if o.conns < 2 {
            return Err("--members: at least 2 (the sender and a reader)".into());
        }
        if o.interval_ms > 60_000 {
            return Err("--interval-ms: at most 60000".into());
        }
        if o.group_id == 0 {
            return Err("--group-id: at least 1".into());
        }
        o.rounds = 0;
    } else {
        o.rounds = 0;
    }
    if o.scenario == Scenario::Chat {
        if o.pairs == 0 || o.conns > MAX_CONNS {
            return Err(format!("--pairs: 1..={}", MAX_CONNS / 2));
        }
        if o.messages == 0 || o.messages > MAX_MESSAGES {
            return Err(format!("--messages: 1..={MAX_MESSAGES}"));
        }
        if o.msg_window == 0 || o.msg_window > MAX_MSG_WINDOW {
            return Err(format!("--window: 1..={MAX_MSG_WINDOW}"));
        }
    }
    if o.scenario == Scenario::Soak {
        if o.conns < 2 || o.conns % 2 == 1 {
            return Err("--conns: an even number, at least 2 (pairs of friends)".into());
        }
        if !(0.0..=100_000.0).contains(&o.msg_rate) {
            return Err("--rate: 0..=100000 messages per second".into());
        }
        if !(0.0..=100.0).contains(&o.churn_pct) {
            return Err("--churn: 0..=100 percent per second".into());
        }
        if o.duration_s < 1.0 || o.duration_s > MAX_SOAK_S {
            return Err(format!("--duration: 1..={MAX_SOAK_S} s"));
        }
        if o.warmup_s >= o.duration_s {
            return Err("--warmup: shorter than --duration".into());
        }
        if o.drain_s < 1.0 || o.drain_s > 600.0 {
            return Err("--drain-wait: 1..=600 s".into());
        }
        if o.away_ms > 600_000 {
            return Err("--away-ms: at most 600000".into());
        }
        if o.ack_ms == 0 || o.ack_ms > 10_000 {
            return Err("--ack-ms: 1..=10000".into());
        }
        if o.ack_every == 0 || o.ack_every > 100_000 {
            return Err("--ack-every: 1..=100000".into());
        }
        if o.rss_every_s < 1.0 {
            return Err("--rss-every: at least 1 s".into());
        }
        if o.timeout_s < o.duration_s + 30.0 {
            return Err(
                "--timeout: at least --duration + 30 s (sign-in and the final catch-up)".into(),
            );
        }
    }
    if (o.scenario.is_chat() || o.scenario == Scenario::Soak) && o.body_bytes > MAX_CHAT_BODY {
        return Err(format!(
            "--body-bytes: at most {MAX_CHAT_BODY} in chat and group"
        ));
    }
    if !o.scenario.is_chat() {
        o.messages = 0;
    }
    if o.scenario != Scenario::Slow && slow_pct_given {
        return Err("--slow-pct belongs to the slow scenario".into());
    }
    if !(0.0..=100.0).contains(&o.slow_pct) {
        return Err("--slow-pct: 0..=100".into());
    }
    if !(256..=1 << 24).contains(&o.slow_rcvbuf) {
        return Err("--slow-rcvbuf: 256..=16777216".into());
    }
    if o.window == 0 || o.window > 100_000 {
        return Err("--window: 1..=100000".into());
    }
    if !(0.0..=10_000_000.0).contains(&o.rate) {
        return Err("--rate: 0..=10000000".into());
    }
    if o.gap_ms > 60_000 {
        return Err("--gap-ms: at most 60000".into());
    }
    if o.per_proc == 0 || o.per_proc > MAX_PER_PROC {
        return Err(format!("--per-proc: 1..={MAX_PER_PROC}"));
    }
    if o.per_src == 0 || o.per_src > MAX_PER_SRC {
        return Err(format!("--per-src: 1..={MAX_PER_SRC}"));
    }
    if matches!(o.scenario, Scenario::Chat | Scenario::Soak) && o.per_proc % 2 == 1 {
        // Both sides of a pair live in one process.
        o.per_proc -= 1;
        if o.per_proc == 0 {
            return Err("--per-proc: at least 2 in chat and soak".into());
        }
    }
    let min_procs = o.conns.div_ceil(o.per_proc) as usize;
    if o.procs == 0 {
        o.procs = min_procs;
    } else if o.procs < min_procs || o.procs as u64 > o.conns || o.procs > 64 {
        return Err(format!(
            "--procs: {min_procs}..={} for {} connections",
            o.conns.min(64),
            o.conns
        ));
    }
    if o.procs > 64 {
        return Err("more than 64 processes needed; raise --per-proc".into());
    }
    if o.src_first == 0 {
        return Err("--src-first: at least 1".into());
    }
    let last = source_addr(o.src_first, o.per_src, o.conns - 1);
    if last.octets()[0] != 127 || last.octets()[3] == 255 {
        return Err(format!("source addresses would leave 127.0.0.0/8 ({last})"));
    }
    if o.timeout_s < 1.0 {
        return Err("--timeout: at least 1 s".into());
    }
    if o.connect_timeout_s <= 0.0 || o.round_wait_s <= 0.0 {
        return Err("--connect-timeout and --round-wait must be positive".into());
    }
    if o.heartbeat_s > 0.0 && o.heartbeat_s < 1.0 {
        return Err("--heartbeat: 0 (off) or at least 1 s".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn loopback_only() {
        assert!(parse(&args("idle --secret s --target 127.0.0.1:9")).is_ok());
        assert!(parse(&args("idle --secret s --target 127.9.9.9:9")).is_ok());
        assert!(parse(&args("idle --secret s --target 10.0.0.1:9")).is_err());
        assert!(parse(&args("idle --secret s --target [::1]:9")).is_err());
        assert!(parse(&args("idle --target 127.0.0.1:9")).is_err());
    }

    #[test]
    fn splits_and_bounds() {
        let o = parse(&args("idle --secret s --conns 40000")).unwrap();
        assert_eq!(o.procs, 3);
        assert_eq!(o.heartbeat_s, 50.0);
        assert!(parse(&args("broadcast --secret s")).is_err());
        assert!(parse(&args("broadcast --secret s --admin-token t --rounds 0")).is_err());
        assert!(parse(&args("idle --secret s --per-proc 20000")).is_err());
        assert!(parse(&args("idle --secret s --slow-pct 1")).is_err());
        let o = parse(&args("chat --secret s --pairs 10000 --window 4")).unwrap();
        assert_eq!((o.conns, o.msg_window, o.window), (20_000, 4, 2000));
        assert_eq!((o.messages, o.rounds, o.procs), (50, 0, 2));
        let o = parse(&args("chat --secret s --pairs 3 --per-proc 3")).unwrap();
        assert_eq!((o.per_proc, o.procs), (2, 3));
        assert!(parse(&args("chat --secret s --conns 10")).is_err());
        assert!(parse(&args("chat --secret s --window 0")).is_err());
        assert!(parse(&args("chat --secret s --members 10")).is_err());
        let o = parse(&args("group --secret s --members 5000 --connect-window 50")).unwrap();
        assert_eq!(
            (o.conns, o.messages, o.interval_ms, o.window),
            (5000, 200, 10, 50)
        );
        assert!(parse(&args("group --secret s --members 1")).is_err());
        assert!(parse(&args("group --secret s --rounds 0")).is_err());
        let o = parse(&args("slow --secret s --admin-token t --heartbeat 0")).unwrap();
        assert_eq!(o.slow_pct, 1.0);
        assert_eq!(o.heartbeat_s, 0.0);
        assert_eq!(o.per_src, DEFAULT_PER_SRC);
        let o = parse(&args("soak --secret s --node-pid 7")).unwrap();
        assert_eq!(
            (o.conns, o.per_proc, o.procs, o.pid),
            (19_000, 5000, 4, Some(7))
        );
        assert_eq!((o.msg_rate, o.churn_pct, o.rate), (500.0, 1.0, 0.0));
        assert_eq!(
            (o.duration_s, o.warmup_s, o.timeout_s),
            (600.0, 60.0, 780.0)
        );
        let o = parse(&args(
            "soak --secret s --conns 2000 --rate 200 --duration 60 --warmup 20 --connect-rate 500",
        ))
        .unwrap();
        assert_eq!(
            (o.conns, o.procs, o.msg_rate, o.rate),
            (2000, 1, 200.0, 500.0)
        );
        assert_eq!(o.timeout_s, 240.0);
        assert!(parse(&args("soak --secret s --conns 2001")).is_err());
        assert!(parse(&args("soak --secret s --duration 60 --warmup 60")).is_err());
        assert!(parse(&args("soak --secret s --duration 600 --timeout 300")).is_err());
        assert!(parse(&args("soak --secret s --churn 101")).is_err());
        assert!(parse(&args("chat --secret s --churn 1")).is_err());
        assert_eq!(source_addr(2, 25_000, 0), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(source_addr(2, 25_000, 25_000), Ipv4Addr::new(127, 0, 0, 3));
    }
}
