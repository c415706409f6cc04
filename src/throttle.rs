//! Throttles against guessing and flooding, keyed by the client address
//! (`Shared::client_addr`; an IPv6 address counts as its /64, what one
//! host usually holds) and, for logins, by the account name folded as
//! usernames are made unique (`store::username_key`, so `VICTIM01` and
//! `victim01` are one account).
//!
//! - **Logins.** Failures (unknown name, wrong password) are counted per
//!   address, per account, and per account *and* address; each count is
//!   forgotten once `auth.login_fail_window` has passed without a failure.
//!   An address past `auth.login_fail_limit_ip` failures waits before each
//!   further attempt: `auth.fail_delay`, doubled at every further failure,
//!   at most `auth.fail_delay_max`. An account past
//!   `auth.login_fail_limit_user` failures (from any addresses) is guarded:
//!   every address that has failed on it waits the same way, the delay
//!   growing with the account's failures. An address that has not failed on
//!   it is never kept out, so the right password from a clean address
//!   always gets in, while a guesser spread over many addresses gets one
//!   guess per address before waits that soon reach the maximum. A login
//!   refused for waiting is not a guess: its password is not checked and it
//!   is not counted. A login let through is counted as a failure at once,
//!   in the same step as the check, so parallel guesses cannot all pass one
//!   check; a success takes its own count back and clears its address's
//!   failures on the account (not the address's, nor the account's).
//! - **Registrations**: at most `auth.register_limit_ip` attempts per
//!   address per `auth.register_window` (0 = no limit).
//! - **`Admin-Token`**: wrong tokens are failures per address, with waits
//!   past `http.admin_fail_limit` as for logins.
//!
//! Memory is bounded: each map holds at most `auth.throttle_entries` keys
//! (the oldest goes first when full), and every new failure looks at the
//! oldest few entries and drops those forgotten, so expired entries do not
//! pile up. Refusals are counted in `weim_throttled_total{kind}`.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::config::Config;
use crate::store::username_key;

/// Why a request was refused; the label of its `weim_throttled_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Too many failed logins from the address.
    LoginIp,
    /// The account is guarded and this address failed on it.
    LoginAccount,
    /// Too many registrations from the address.
    Register,
    /// Too many wrong `Admin-Token`s from the address.
    Admin,
}

impl Kind {
    const ALL: [Kind; 4] = [
        Kind::LoginIp,
        Kind::LoginAccount,
        Kind::Register,
        Kind::Admin,
    ];

    fn label(self) -> &'static str {
        match self {
            Kind::LoginIp => "login_ip",
            Kind::LoginAccount => "login_account",
            Kind::Register => "register",
            Kind::Admin => "admin",
        }
    }
}

/// A refusal: which throttle, and when trying again may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// The throttle that refused.
    pub kind: Kind,
    /// Time until the wait ends.
    pub retry_after: Duration,
}

impl Refused {
    /// `retry_after` in whole seconds, rounded up (a `Retry-After` value).
    pub fn retry_after_secs(&self) -> u64 {
        let d = self.retry_after;
        d.as_secs() + u64::from(d.subsec_nanos() > 0)
    }
}

/// One key's count.
#[derive(Debug, Clone, Copy)]
struct Entry {
    count: u32,
    /// The last counted event.
    last: Instant,
    /// When the entry is forgotten.
    until: Instant,
}

/// Counts per key with bounded memory. Every key has exactly one place in
/// `order`, roughly oldest first; an entry whose `until` moved since it was
/// queued goes to the back when it reaches the front.
struct Tracker<K> {
    map: HashMap<K, Entry>,
    order: VecDeque<(K, Instant)>,
    cap: usize,
}

/// Entries looked at per new event to drop forgotten ones.
const PRUNE_STEPS: usize = 4;

impl<K: Hash + Eq + Clone> Tracker<K> {
    fn new(cap: usize) -> Tracker<K> {
        Tracker {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// The live entry of `key`.
    fn get(&self, key: &K, now: Instant) -> Option<Entry> {
        self.map.get(key).filter(|e| e.until > now).copied()
    }

    /// Counts one event for `key`: the entry is forgotten `window` after
    /// its first event (`sliding` false) or its last (`sliding` true).
    fn bump(&mut self, key: K, now: Instant, window: Duration, sliding: bool) {
        self.prune(now);
        let fresh = Entry {
            count: 1,
            last: now,
            until: now + window,
        };
        match self.map.get_mut(&key) {
            Some(e) if e.until > now => {
                e.count = e.count.saturating_add(1);
                e.last = now;
                if sliding {
                    e.until = now + window;
                }
            }
            // Forgotten but not yet dropped: its place in `order` stays.
            Some(e) => *e = fresh,
            None => {
                if self.map.len() >= self.cap {
                    if let Some((old, _)) = self.order.pop_front() {
                        self.map.remove(&old);
                    }
                }
                self.order.push_back((key.clone(), fresh.until));
                self.map.insert(key, fresh);
            }
        }
    }

    /// Takes one event of `key` back.
    fn unbump(&mut self, key: &K) {
        if let Some(e) = self.map.get_mut(key) {
            e.count = e.count.saturating_sub(1);
        }
    }

    /// Sets the count of `key` to zero (the entry is forgotten as before).
    fn reset(&mut self, key: &K) {
        if let Some(e) = self.map.get_mut(key) {
            e.count = 0;
        }
    }

    /// Drops forgotten entries at the front of `order`, a few at a time.
    fn prune(&mut self, now: Instant) {
        for _ in 0..PRUNE_STEPS {
            let Some((key, queued)) = self.order.front() else {
                return;
            };
            let until = self.map.get(key).map(|e| e.until);
            match until {
                Some(until) if until > now && until == *queued => return,
                Some(until) if until > now => {
                    if let Some((key, _)) = self.order.pop_front() {
                        self.order.push_back((key, until));
                    }
                }
                _ => {
                    if let Some((key, _)) = self.order.pop_front() {
                        self.map.remove(&key);
                    }
                }
            }
        }
    }
}

/// The key of an address: itself for IPv4, its /64 for IPv6.
fn addr_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        v4 => v4,
    }
}

/// Failed logins per address, per account, and per account and address:
/// one lock, so that a check and its count are one step.
struct Logins {
    ips: Tracker<IpAddr>,
    accounts: Tracker<String>,
    pairs: Tracker<(String, IpAddr)>,
}

/// The throttles of a node.
pub struct Throttle {
    login_limit_ip: u32,
    login_limit_user: u32,
    login_window: Duration,
    delay: Duration,
    delay_max: Duration,
    register_limit: u32,
    register_window: Duration,
    admin_limit: u32,
    logins: Mutex<Logins>,
    registers: Mutex<Tracker<IpAddr>>,
    admins: Mutex<Tracker<IpAddr>>,
    refused: [AtomicU64; Kind::ALL.len()],
}

impl Throttle {
    /// The throttles `config` describes (sections `auth` and `http`).
    pub fn new(config: &Config) -> Throttle {
        let auth = &config.auth;
        let cap = auth.throttle_entries;
        Throttle {
            login_limit_ip: auth.login_fail_limit_ip,
            login_limit_user: auth.login_fail_limit_user,
            login_window: auth.login_fail_window,
            delay: auth.fail_delay,
            delay_max: auth.fail_delay_max,
            register_limit: auth.register_limit_ip,
            register_window: auth.register_window,
            admin_limit: config.http.admin_fail_limit,
            logins: Mutex::new(Logins {
                ips: Tracker::new(cap),
                accounts: Tracker::new(cap),
                pairs: Tracker::new(cap),
            }),
            registers: Mutex::new(Tracker::new(cap)),
            admins: Mutex::new(Tracker::new(cap)),
            refused: Default::default(),
        }
    }

    /// The wait after `excess` failures past a limit.
    fn delay(&self, excess: u32) -> Duration {
        self.delay
            .saturating_mul(1u32 << excess.min(31))
            .min(self.delay_max)
    }

    /// The refusal of `kind` if `now` is before `until`, counted.
    fn refuse_until(&self, kind: Kind, until: Instant, now: Instant) -> Result<(), Refused> {
        if now >= until {
            return Ok(());
        }
        self.refused[kind as usize].fetch_add(1, Relaxed);
        Err(Refused {
            kind,
            retry_after: until - now,
        })
    }

    /// An address's wait after the failures of `entry`, past `limit`.
    fn address_wait(
        &self,
        kind: Kind,
        entry: Option<Entry>,
        limit: u32,
        now: Instant,
    ) -> Result<(), Refused> {
        match entry {
            Some(e) if e.count > 0 && e.count >= limit => {
                self.refuse_until(kind, e.last + self.delay(e.count - limit), now)
            }
            _ => Ok(()),
        }
    }

    /// Whether a login for `username` from `ip` may be tried now; if so it
    /// is counted as a failure until [`Throttle::login_ok`] takes it back.
    pub fn login_attempt(&self, username: &str, ip: IpAddr) -> Result<(), Refused> {
        self.login_attempt_at(username, ip, Instant::now())
    }

    fn login_attempt_at(&self, username: &str, ip: IpAddr, now: Instant) -> Result<(), Refused> {
        let ip = addr_key(ip);
        let account = username_key(username);
        let mut logins = self.logins.lock();
        let by_ip = logins.ips.get(&ip, now);
        self.address_wait(Kind::LoginIp, by_ip, self.login_limit_ip, now)?;
        let fails = logins.accounts.get(&account, now).map_or(0, |e| e.count);
        if fails >= self.login_limit_user {
            if let Some(p) = logins.pairs.get(&(account.clone(), ip), now) {
                if p.count > 0 {
                    let until = p.last + self.delay(fails - self.login_limit_user);
                    self.refuse_until(Kind::LoginAccount, until, now)?;
                }
            }
        }
        let window = self.login_window;
        logins.ips.bump(ip, now, window, true);
        logins.accounts.bump(account.clone(), now, window, true);
        logins.pairs.bump((account, ip), now, window, true);
        Ok(())
    }

    /// Takes back the count of an attempt that was no wrong guess (the
    /// right password, or a store that could not tell), and clears the
    /// failures of `ip` on `username`.
    pub fn login_ok(&self, username: &str, ip: IpAddr) {
        let ip = addr_key(ip);
        let account = username_key(username);
        let mut logins = self.logins.lock();
        logins.ips.unbump(&ip);
        logins.accounts.unbump(&account);
        logins.pairs.reset(&(account, ip));
    }

    /// Counts a registration attempt from `ip`, or refuses it.
    pub fn register_allowed(&self, ip: IpAddr) -> Result<(), Refused> {
        self.register_allowed_at(ip, Instant::now())
    }

    fn register_allowed_at(&self, ip: IpAddr, now: Instant) -> Result<(), Refused> {
        if self.register_limit == 0 {
            return Ok(());
        }
        let ip = addr_key(ip);
        let mut registers = self.registers.lock();
        match registers.get(&ip, now) {
            Some(e) if e.count >= self.register_limit => {
                self.refuse_until(Kind::Register, e.until, now)
            }
            _ => {
                registers.bump(ip, now, self.register_window, false);
                Ok(())
            }
        }
    }

    /// Whether an `Admin-Token` from `ip` may be checked now.
    pub fn admin_allowed(&self, ip: IpAddr) -> Result<(), Refused> {
        self.admin_allowed_at(ip, Instant::now())
    }

    fn admin_allowed_at(&self, ip: IpAddr, now: Instant) -> Result<(), Refused> {
        let entry = self.admins.lock().get(&addr_key(ip), now);
        self.address_wait(Kind::Admin, entry, self.admin_limit, now)
    }

    /// Records a wrong `Admin-Token` from `ip`.
    pub fn admin_failed(&self, ip: IpAddr) {
        self.admin_failed_at(ip, Instant::now())
    }

    fn admin_failed_at(&self, ip: IpAddr, now: Instant) {
        self.admins
            .lock()
            .bump(addr_key(ip), now, self.login_window, true);
    }

    /// Appends `weim_throttled_total` (Prometheus text) to `out`.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP weim_throttled_total Requests refused by a throttle: login_ip and login_account (failed logins), register (registrations per address), admin (wrong Admin-Token answers).\n# TYPE weim_throttled_total counter"
        );
        for kind in Kind::ALL {
            let n = self.refused[kind as usize].load(Relaxed);
            let _ = writeln!(out, "weim_throttled_total{{kind=\"{}\"}} {n}", kind.label());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn throttle(edit: impl FnOnce(&mut Config)) -> Throttle {
        let mut config = Config::default();
        config.auth.login_fail_limit_user = 3;
        config.auth.login_fail_limit_ip = 10;
        config.auth.login_fail_window = Duration::from_secs(600);
        config.auth.fail_delay = Duration::from_secs(1);
        config.auth.fail_delay_max = Duration::from_secs(60);
        edit(&mut config);
        Throttle::new(&config)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_guessed_account_keeps_its_guessers_waiting_not_its_owner() {
        let t = throttle(|c| c.auth.login_fail_limit_ip = 100);
        let t0 = Instant::now();
        let attacker = ip("127.0.0.2");
        let owner = ip("127.0.0.3");
        for name in ["victim01", "VICTIM01", "Victim01"] {
            assert_eq!(t.login_attempt_at(name, attacker, t0), Ok(()));
        }
        // Case variants are one account: guarded after 3 failures.
        let refused = t.login_attempt_at("vIcTiM01", attacker, t0).unwrap_err();
        assert_eq!(refused.kind, Kind::LoginAccount);
        assert_eq!(refused.retry_after, secs(1));
        // The owner, from an address that never failed, is let in.
        assert_eq!(t.login_attempt_at("victim01", owner, t0), Ok(()));
        t.login_ok("victim01", owner);
        // Other accounts from the attacker's address are not guarded.
        assert_eq!(t.login_attempt_at("other001", attacker, t0), Ok(()));

        // Waits double with the account's failures.
        let mut at = t0;
        for expected in [1, 2, 4, 8, 16, 32, 60, 60] {
            let refused = t.login_attempt_at("victim01", attacker, at).unwrap_err();
            assert_eq!(refused.retry_after, secs(expected));
            at += secs(expected);
            assert_eq!(t.login_attempt_at("victim01", attacker, at), Ok(()));
        }

        // A guesser on a new address gets one guess, then waits as long.
        let other = ip("127.0.0.9");
        assert_eq!(t.login_attempt_at("victim01", other, at), Ok(()));
        let refused = t.login_attempt_at("victim01", other, at).unwrap_err();
        assert_eq!(refused.retry_after, secs(60));

        // The owner's own slip waits too, and a success clears it.
        assert_eq!(t.login_attempt_at("victim01", owner, at), Ok(()));
        assert!(t.login_attempt_at("victim01", owner, at).is_err());
        t.login_ok("victim01", owner);
        assert_eq!(t.login_attempt_at("victim01", owner, at), Ok(()));
        t.login_ok("victim01", owner);

        // Forgotten once the window passed without a failure.
        let later = at + secs(601);
        assert_eq!(t.login_attempt_at("victim01", attacker, later), Ok(()));
        assert_eq!(t.refused[Kind::LoginAccount as usize].load(Relaxed), 11);
    }

    #[test]
    fn an_address_failing_on_many_accounts_waits_longer_each_time() {
        let t = throttle(|c| c.auth.login_fail_limit_user = 100);
        let t0 = Instant::now();
        let attacker = ip("2001:db8::1");
        for i in 0..10 {
            assert_eq!(
                t.login_attempt_at(&format!("user{i:04}"), attacker, t0),
                Ok(())
            );
        }
        // Its whole /64 is one address; another /64 is not.
        let refused = t
            .login_attempt_at("fresh001", ip("2001:db8::ffff"), t0)
            .unwrap_err();
        assert_eq!(
            (refused.kind, refused.retry_after),
            (Kind::LoginIp, secs(1))
        );
        assert_eq!(
            t.login_attempt_at("fresh001", ip("2001:db8:0:1::1"), t0),
            Ok(())
        );
        assert_eq!(
            t.login_attempt_at("fresh001", attacker, t0 + secs(1)),
            Ok(())
        );
        let refused = t
            .login_attempt_at("fresh001", attacker, t0 + secs(2))
            .unwrap_err();
        assert_eq!(refused.retry_after, secs(1));
        // A success takes back its own count only.
        assert_eq!(
            t.login_attempt_at("fresh002", attacker, t0 + secs(3)),
            Ok(())
        );
        t.login_ok("fresh002", attacker);
        assert!(t
            .login_attempt_at("fresh003", attacker, t0 + secs(3))
            .is_err());
        assert_eq!(
            t.logins
                .lock()
                .ips
                .get(&addr_key(attacker), t0 + secs(3))
                .unwrap()
                .count,
            11
        );
    }

    #[test]
    fn registrations_are_limited_per_address_and_window() {
        let t = throttle(|c| {
            c.auth.register_limit_ip = 2;
            c.auth.register_window = secs(60);
        });
        let t0 = Instant::now();
        let a = ip("127.0.0.2");
        assert_eq!(t.register_allowed_at(a, t0), Ok(()));
        assert_eq!(t.register_allowed_at(a, t0 + secs(10)), Ok(()));
        let refused = t.register_allowed_at(a, t0 + secs(20)).unwrap_err();
        assert_eq!(
            (refused.kind, refused.retry_after),
            (Kind::Register, secs(40))
        );
        assert_eq!(refused.retry_after_secs(), 40);
        assert_eq!(t.register_allowed_at(ip("127.0.0.3"), t0), Ok(()));
        // Refusals do not extend the window.
        assert_eq!(t.register_allowed_at(a, t0 + secs(60)), Ok(()));

        let off = throttle(|c| c.auth.register_limit_ip = 0);
        for _ in 0..100 {
            assert_eq!(off.register_allowed_at(a, t0), Ok(()));
        }
    }

    #[test]
    fn wrong_admin_tokens_slow_their_address_down() {
        let t = throttle(|c| c.http.admin_fail_limit = 2);
        let t0 = Instant::now();
        let a = ip("127.0.0.2");
        t.admin_failed_at(a, t0);
        assert_eq!(t.admin_allowed_at(a, t0), Ok(()));
        t.admin_failed_at(a, t0);
        assert_eq!(t.admin_allowed_at(a, t0).unwrap_err().retry_after, secs(1));
        assert_eq!(t.admin_allowed_at(a, t0 + secs(1)), Ok(()));
        t.admin_failed_at(a, t0 + secs(1));
        assert_eq!(
            t.admin_allowed_at(a, t0 + secs(1)).unwrap_err().retry_after,
            secs(2)
        );
        assert_eq!(t.admin_allowed_at(ip("127.0.0.3"), t0), Ok(()));
        let mut text = String::new();
        t.render(&mut text);
        assert!(
            text.contains("weim_throttled_total{kind=\"admin\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("weim_throttled_total{kind=\"login_ip\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn trackers_stay_bounded_and_drop_forgotten_entries() {
        let t0 = Instant::now();
        let mut tr: Tracker<u32> = Tracker::new(100);
        for k in 0..1000 {
            tr.bump(k, t0, secs(10), true);
            assert!(tr.map.len() <= 100);
            assert_eq!(tr.order.len(), tr.map.len());
        }
        // The newest are kept.
        assert!(tr.get(&999, t0).is_some());
        assert!(tr.get(&0, t0).is_none());
        // After the window, new keys drop forgotten ones as they come.
        for k in 0..50 {
            tr.bump(10_000 + k, t0 + secs(11), secs(10), true);
        }
        assert_eq!(tr.map.len(), 50);
        assert_eq!(tr.order.len(), tr.map.len());

        // A refreshed entry outlives the ones queued after it.
        let mut tr: Tracker<u32> = Tracker::new(100);
        tr.bump(1, t0, secs(10), true);
        tr.bump(2, t0 + secs(1), secs(10), true);
        tr.bump(1, t0 + secs(9), secs(10), true);
        tr.bump(3, t0 + secs(12), secs(10), true);
        assert!(tr.get(&1, t0 + secs(12)).is_some());
        assert!(tr.get(&2, t0 + secs(12)).is_none());
        assert_eq!(tr.map.len(), 2, "the forgotten entry 2 is dropped");
        assert_eq!(tr.order.len(), 2);
    }
}
