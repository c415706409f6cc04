//! Rate limits on what clients send: a token bucket per connection on its
//! WebSocket frames (`limits.cmd_rate`, `limits.cmd_burst`, [`Bucket`],
//! kept in the connection) and one per user on chat sends weighted by
//! recipients (`limits.send_rate`, `limits.send_burst`, [`SendRate`],
//! shared by the node's reactors, workers and committer).
//!
//! Over a limit nothing is refused outright on a socket: the reactor stops
//! reading the connection until the bucket allows the next frame or send
//! (backpressure, as for a full committer queue); a REST send is answered
//! 429. The per-user count is per node: a user whose devices are spread
//! over several nodes may send up to the rate on each.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Shards of the per-user map (a power of two).
const SHARDS: usize = 64;
/// How often users whose bucket is full again are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// How long until a bucket holding `tokens` (below one) has one, at `rate`
/// per second; at least a millisecond.
fn wait_for_one(tokens: f64, rate: f64) -> Duration {
    Duration::from_secs_f64(((1.0 - tokens) / rate).max(0.001))
}

/// A connection's token bucket: 8 bytes, refilled from a millisecond stamp
/// of its reactor's clock. The stamp wraps after 49 days: a connection that
/// sent nothing for that long may find fewer tokens than it earned, which
/// delays it by one token's interval at most.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f32,
    stamp: u32,
}

impl Bucket {
    /// A full bucket.
    pub fn full(burst: u32, now_ms: u32) -> Bucket {
        Bucket {
            tokens: burst as f32,
            stamp: now_ms,
        }
    }

    /// Takes one token at `rate` per second (at most `burst` kept); `Err`
    /// with how long until there is one when the bucket is empty.
    pub fn take(&mut self, rate: u32, burst: u32, now_ms: u32) -> Result<(), Duration> {
        let elapsed = now_ms.wrapping_sub(self.stamp) as f32 / 1000.0;
        self.tokens = (self.tokens + elapsed * rate as f32).min(burst as f32);
        self.stamp = now_ms;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(wait_for_one(f64::from(self.tokens), f64::from(rate)))
        }
    }
}

/// One user's balance of recipient-units.
#[derive(Debug, Clone, Copy)]
struct Balance {
    units: f64,
    stamp: Instant,
}

impl Balance {
    /// Refilled up to `now` (at most `burst`).
    fn refill(&mut self, rate: f64, burst: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.stamp).as_secs_f64();
        self.units = (self.units + elapsed * rate).min(burst);
        self.stamp = now;
    }
}

/// The per-user send limit of this node, in recipient-units: a map from
/// user id to balance in [`SHARDS`] shards under `parking_lot` mutexes. A
/// user without an entry has a full bucket; an entry whose bucket is full
/// again is forgotten (at most once a second, by the committer), so the map
/// holds only recent senders.
pub struct SendRate {
    rate: f64,
    burst: f64,
    shards: Box<[Mutex<HashMap<u64, Balance>>]>,
    last_prune: Mutex<Instant>,
}

impl SendRate {
    /// `rate` recipient-units per second after a burst of `burst`; a rate
    /// of 0 admits everything.
    pub fn new(rate: u32, burst: u32) -> SendRate {
        SendRate {
            rate: f64::from(rate),
            burst: f64::from(burst),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            last_prune: Mutex::new(Instant::now()),
        }
    }

    /// Whether sends are limited at all (`limits.send_rate` > 0).
    pub fn enabled(&self) -> bool {
        self.rate > 0.0
    }

    fn shard(&self, uid: u64) -> &Mutex<HashMap<u64, Balance>> {
        // Fibonacci hashing spreads consecutive ids over the shards.
        let h = uid.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58;
        &self.shards[h as usize % SHARDS]
    }

    /// Admits one send of `uid` and charges its first unit (every message
    /// reaches at least one recipient); `Err` with how long until the
    /// user's balance is back to one unit.
    pub fn admit(&self, uid: u64, now: Instant) -> Result<(), Duration> {
        if !self.enabled() {
            return Ok(());
        }
        let mut shard = self.shard(uid).lock();
        let balance = shard.entry(uid).or_insert(Balance {
            units: self.burst,
            stamp: now,
        });
        balance.refill(self.rate, self.burst, now);
        if balance.units >= 1.0 {
            balance.units -= 1.0;
            Ok(())
        } else {
            Err(wait_for_one(balance.units, self.rate))
        }
    }

    /// Charges `units` more to `uid` once a message's recipients are known
    /// (a group message). The balance may go below zero: the user's next
    /// send waits until the rate has paid the debt back.
    pub fn charge(&self, uid: u64, units: u64, now: Instant) {
        if !self.enabled() || units == 0 {
            return;
        }
        let mut shard = self.shard(uid).lock();
        let balance = shard.entry(uid).or_insert(Balance {
            units: self.burst,
            stamp: now,
        });
        balance.refill(self.rate, self.burst, now);
        balance.units -= units as f64;
    }

    /// Forgets the users whose bucket is full again, at most once a second.
    pub fn prune(&self, now: Instant) {
        {
            let mut last = self.last_prune.lock();
            if now.saturating_duration_since(*last) < PRUNE_EVERY {
                return;
            }
            *last = now;
        }
        for shard in self.shards.iter() {
            shard.lock().retain(|_, b| {
                b.refill(self.rate, self.burst, now);
                b.units < self.burst
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let mut b = Bucket::full(3, 0);
        for _ in 0..3 {
            assert!(b.take(10, 3, 0).is_ok());
        }
        let wait = b.take(10, 3, 0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        // 100 ms later one token is back, and only one.
        assert!(b.take(10, 3, 100).is_ok());
        assert!(b.take(10, 3, 100).is_err());
        // A long pause refills to the burst, not beyond.
        for _ in 0..3 {
            assert!(b.take(10, 3, 60_000).is_ok());
        }
        assert!(b.take(10, 3, 60_000).is_err());
    }

    #[test]
    fn a_bucket_survives_its_clock_wrapping() {
        let mut b = Bucket::full(2, u32::MAX - 10);
        assert!(b.take(100, 2, u32::MAX - 10).is_ok());
        assert!(b.take(100, 2, u32::MAX - 10).is_ok());
        assert!(b.take(100, 2, u32::MAX - 10).is_err());
        // 21 ms later, across the wrap: two tokens earned, burst two.
        assert!(b.take(100, 2, 10).is_ok());
        assert!(b.take(100, 2, 10).is_ok());
    }

    #[test]
    fn group_costs_leave_a_debt_that_the_rate_repays() {
        let limit = SendRate::new(10, 20);
        let t0 = Instant::now();
        assert!(limit.admit(7, t0).is_ok());
        // A group of 50: 49 recipients, one already charged.
        limit.charge(7, 48, t0);
        // 20 - 49 = -29: 3 s until one unit is back.
        let wait = limit.admit(7, t0).unwrap_err();
        assert!(
            (wait.as_secs_f64() - 3.0).abs() < 1e-6,
            "{wait:?} instead of 3 s"
        );
        assert!(limit.admit(7, t0 + Duration::from_secs(3)).is_ok());
        // Another user is not affected.
        assert!(limit.admit(8, t0).is_ok());
    }

    #[test]
    fn full_buckets_are_forgotten_and_a_zero_rate_admits_everything() {
        let limit = SendRate::new(10, 20);
        let t0 = Instant::now();
        limit.admit(1, t0).unwrap();
        limit.admit(2, t0).unwrap();
        limit.charge(2, 100, t0);
        limit.prune(t0 + Duration::from_secs(2));
        let left: usize = limit.shards.iter().map(|s| s.lock().len()).sum();
        assert_eq!(left, 1, "user 2 is still in debt, user 1 is full again");

        let off = SendRate::new(0, 1);
        for _ in 0..1000 {
            off.admit(1, t0).unwrap();
        }
        off.charge(1, 1_000_000, t0);
        assert!(off.admit(1, t0).is_ok());
    }
}
