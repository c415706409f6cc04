//! What the parent and its `--child` processes say to each other: one JSON
//! line each. The parent writes the [`Plan`] as the child's first stdin line,
//! then commands (`round N`, `go`, `stop`, `finish`); the child answers on stdout
//! with [`ChildMsg`] lines.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::chat::{ChatPlan, ChatStat};
use crate::hist::Hist;
use crate::soak::{SoakPlan, SoakStat};

/// Everything a child needs; the secret travels here rather than in argv.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub child: usize,
    pub target: SocketAddr,
    pub path: String,
    /// Global connection indices `[from, to)`; connection `i` is user
    /// `first_user + i`.
    pub from: u64,
    pub to: u64,
    pub first_user: u64,
    pub per_src: u64,
    pub src_first: u32,
    pub slow_pct: f64,
    pub slow_rcvbuf: usize,
    /// Connects in flight allowed in this child.
    pub window: usize,
    /// Connects per second in this child, 0 = no limit.
    pub rate: f64,
    pub connect_timeout_ms: u64,
    pub rounds: u32,
    pub round_wait_ms: u64,
    pub heartbeat_ms: u64,
    pub max_frame: usize,
    /// The child gives up on its own this long after start (the parent
    /// normally ends it sooner with `finish`).
    pub deadline_ms: u64,
    pub secret: Vec<u8>,
    /// The chat scenarios: what the connections send after `go`.
    #[serde(default)]
    pub chat: Option<ChatPlan>,
    /// The soak scenario: traffic and churn after `go`, until `stop`.
    #[serde(default)]
    pub soak: Option<SoakPlan>,
}

/// Whether global connection `i` is a slow reader: spread evenly so that
/// `pct` % of any range are slow.
pub fn is_slow(pct: f64, i: u64) -> bool {
    if pct <= 0.0 {
        return false;
    }
    let a = (i as f64 * pct / 100.0).floor();
    let b = ((i + 1) as f64 * pct / 100.0).floor();
    b > a
}

/// A child's line on stdout.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "lowercase")]
pub enum ChildMsg {
    /// Every connection of the child is signed in or has failed.
    Ready {
        signed_in: u64,
        readers: u64,
        slow: u64,
        failed: u64,
    },
    /// Every live reader of the child has received round `round`.
    Round { round: u32 },
    /// Chat: the child has sent and received everything (or stopped waiting);
    /// soak: the final reconnect and catch-up are over.
    Done,
    /// The final report, after `finish`.
    Report(Box<ChildReport>),
}

/// Per-round counts of one child (merged by the parent).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RoundStat {
    /// Frames received within the round wait.
    pub received: u64,
    /// Frames received after the round wait.
    pub late: u64,
    /// Unix nanoseconds of the first and the last receive (0 = none).
    pub first_ns: u64,
    pub last_ns: u64,
    /// Per-receiver latency (µs), on-time and late frames.
    pub lat_us: Hist,
}

/// A child's final numbers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChildReport {
    pub child: usize,
    pub planned: u64,
    pub attempted: u64,
    pub connected: u64,
    pub upgraded: u64,
    pub signed_in: u64,
    pub readers: u64,
    pub slow: u64,
    /// Connections that could not be opened or signed in, by reason.
    pub failures: BTreeMap<String, u64>,
    /// Unix nanoseconds of the first connect and of the last sign-in.
    pub first_connect_ns: u64,
    pub last_signin_ns: u64,
    /// Connect start to `Cmd 4`, per connection (µs).
    pub signin_us: Hist,
    pub rounds: Vec<RoundStat>,
    /// Signed-in connections that the server closed, and how.
    pub readers_closed: u64,
    pub slow_closed: u64,
    /// Broadcast frames the slow readers found when drained at the end.
    pub slow_frames: u64,
    pub close_reasons: BTreeMap<String, u64>,
    /// Odd server input and other errors, by kind (never fatal).
    pub errors: BTreeMap<String, u64>,
    /// Frames with other Cmds than expected, by Cmd.
    pub other_cmds: BTreeMap<String, u64>,
    /// The child's own CPU seconds from its first connect to ready, and in all.
    pub cpu_signin_s: f64,
    pub cpu_total_s: f64,
    /// The child stopped on its own deadline instead of `finish`.
    pub timed_out: bool,
    /// The chat scenarios' numbers.
    #[serde(default)]
    pub chat: Option<ChatStat>,
    /// The soak scenario's numbers.
    #[serde(default)]
    pub soak: Option<SoakStat>,
}

/// Adds `n` to `map[key]`.
pub fn bump(map: &mut BTreeMap<String, u64>, key: &str, n: u64) {
    if let Some(v) = map.get_mut(key) {
        *v += n;
    } else {
        map.insert(key.to_string(), n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_share_is_spread() {
        let n = (0..10_000).filter(|&i| is_slow(1.0, i)).count();
        assert_eq!(n, 100);
        let first: Vec<u64> = (0..300).filter(|&i| is_slow(1.0, i)).collect();
        assert_eq!(first, vec![99, 199, 299]);
        assert_eq!((0..1000).filter(|&i| is_slow(0.0, i)).count(), 0);
        assert_eq!((0..1000).filter(|&i| is_slow(100.0, i)).count(), 1000);
    }

    #[test]
    fn messages_round_trip() {
        let m = ChildMsg::Round { round: 3 };
        let s = serde_json::to_string(&m).unwrap();
        assert_eq!(s, r#"{"ev":"round","round":3}"#);
        let r = ChildMsg::Report(Box::default());
        let s = serde_json::to_string(&r).unwrap();
        assert!(matches!(
            serde_json::from_str(&s).unwrap(),
            ChildMsg::Report(_)
        ));
    }
}
