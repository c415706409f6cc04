//! Accepting: the caps a new connection must fit under (per address, not
//! signed in, per node), and running out of file descriptors.
//!
//! A connection over a cap is accepted and closed at once, counted in
//! `weim_conns_refused_total{reason}`. When `accept` fails with `EMFILE` or
//! `ENFILE` the reactor closes its reserve descriptor (`/dev/null`, opened
//! at start), accepts one waiting connection with the freed descriptor and
//! closes it (its client learns at once instead of waiting in the
//! backlog), opens the reserve again, and stops polling its listener for
//! [`ACCEPT_BACKOFF`]; then it accepts again until the backlog is empty,
//! without waiting for a new connection to arrive (the listener is
//! edge-triggered: connections already queued raise no new event).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use mio::{Interest, Token};
use parking_lot::Mutex;

use super::conn::Conn;
use super::Reactor;
use crate::metrics::Refused;
use crate::proxy::{self, Cidr};

/// How long the listener rests after the process ran out of descriptors.
pub(super) const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Shards of the per-address map (a power of two).
const SHARDS: usize = 16;

/// The descriptor kept in reserve to accept-and-close while the process
/// has no other.
pub(super) fn reserve() -> Option<File> {
    File::open("/dev/null").ok()
}

/// The key a client address is counted under: an IPv4 address (also when
/// mapped into IPv6), or the /64 prefix of an IPv6 address (one client
/// typically holds a whole /64).
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::from(octets)
        }
        v4 => v4,
    }
}

/// Connections open per client address on this node (shared by its
/// reactors), for `limits.conns_per_ip`. Only addresses with a connection
/// open have an entry. The trusted proxies (`http.trusted_proxies`) are not
/// counted: each of their connections carries other clients.
pub struct PerAddress {
    cap: usize,
    exempt: Vec<Cidr>,
    shards: Box<[Mutex<HashMap<IpAddr, u32>>]>,
}

impl PerAddress {
    /// At most `cap` connections per address but those in `exempt`; 0 =
    /// unlimited (nothing is counted).
    pub fn new(cap: usize, exempt: &[Cidr]) -> PerAddress {
        PerAddress {
            cap,
            exempt: exempt.to_vec(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, key: &IpAddr) -> &Mutex<HashMap<IpAddr, u32>> {
        let h = match key {
            IpAddr::V4(a) => u64::from(u32::from(*a)),
            IpAddr::V6(a) => (u128::from(*a) >> 64) as u64,
        };
        &self.shards[(h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60) as usize % SHARDS]
    }

    /// Counts one more connection from `ip`; `false` (nothing counted) when
    /// the address is at its cap.
    pub fn try_add(&self, ip: IpAddr) -> bool {
        if self.cap == 0 || proxy::is_trusted(&self.exempt, ip) {
            return true;
        }
        let key = address_key(ip);
        let mut shard = self.shard(&key).lock();
        let n = shard.entry(key).or_insert(0);
        if *n as usize >= self.cap {
            return false;
        }
        *n += 1;
        true
    }

    /// A connection from `ip` counted by [`PerAddress::try_add`] closed.
    pub fn remove(&self, ip: IpAddr) {
        if self.cap == 0 || proxy::is_trusted(&self.exempt, ip) {
            return;
        }
        let key = address_key(ip);
        let mut shard = self.shard(&key).lock();
        if let Some(n) = shard.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                shard.remove(&key);
            }
        }
    }
}

/// Out of descriptors: `accept` cannot take a connection until some close.
fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

impl Reactor {
    /// Accepts until the backlog is empty (or the listener must rest).
    pub(super) fn accept(&mut self) {
        if self.accept_resume.is_some() {
            return;
        }
        loop {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            let (mut stream, addr) = match listener.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if out_of_descriptors(&e) => {
                    self.out_of_descriptors(&e);
                    return;
                }
                // The peer gave up before we took it (ECONNABORTED and the
                // like): the next one may be fine.
                Err(_) => continue,
            };
            if std::mem::replace(&mut self.accept_failing, false) && self.reserve.is_none() {
                self.reserve = reserve();
            }
            if let Err(reason) = self.admit(addr.ip()) {
                self.shared.metrics.conn_refused(reason);
                continue;
            }
            let _ = stream.set_nodelay(true);
            let bucket = self.full_bucket();
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            if self
                .poll
                .registry()
                .register(
                    &mut stream,
                    Token(key),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_err()
            {
                self.shared.per_ip.remove(addr.ip());
                continue;
            }
            self.next_generation = self.next_generation.wrapping_add(1);
            entry.insert(Conn::new(
                stream,
                addr.ip(),
                self.next_generation,
                self.now,
                bucket,
            ));
            self.stats().open.fetch_add(1, Relaxed);
        }
    }

    /// Whether a new connection from `ip` fits under the node's caps; it is
    /// counted for its address when it does.
    fn admit(&self, ip: IpAddr) -> Result<(), Refused> {
        let limits = &self.shared.config.limits;
        let metrics = &self.shared.metrics;
        let open = metrics.open();
        if limits.max_connections > 0 && open >= limits.max_connections as i64 {
            return Err(Refused::MaxConnections);
        }
        if limits.max_unauthenticated > 0
            && open - metrics.authenticated() >= limits.max_unauthenticated as i64
        {
            return Err(Refused::Unauthenticated);
        }
        if !self.shared.per_ip.try_add(ip) {
            return Err(Refused::PerIp);
        }
        Ok(())
    }

    /// `accept` failed for want of descriptors: accept one connection with
    /// the reserve descriptor and close it, then rest the listener.
    fn out_of_descriptors(&mut self, e: &io::Error) {
        if !std::mem::replace(&mut self.accept_failing, true) {
            log::warn!(
                "reactor {}: accept: {e}; refusing connections until descriptors free up",
                self.id
            );
        }
        if let Some(spare) = self.reserve.take() {
            drop(spare);
            if let Some(listener) = self.listener.as_ref() {
                if let Ok(taken) = listener.accept() {
                    // Counted before its client can see it closed.
                    self.shared.metrics.conn_refused(Refused::Emfile);
                    drop(taken);
                }
            }
        }
        self.reserve = reserve();
        self.accept_resume = Some(self.now + ACCEPT_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_capped_one_by_one_and_ipv6_by_its_64() {
        let per = PerAddress::new(2, &[]);
        let a: IpAddr = "127.0.0.7".parse().unwrap();
        let b: IpAddr = "127.0.0.8".parse().unwrap();
        assert!(per.try_add(a) && per.try_add(a));
        assert!(!per.try_add(a));
        assert!(per.try_add(b));
        per.remove(a);
        assert!(per.try_add(a));

        let v6a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let v6c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(per.try_add(v6a) && per.try_add(v6b));
        assert!(!per.try_add(v6a), "the same /64");
        assert!(per.try_add(v6c), "another /64");

        // An IPv4 client seen through an IPv6 listener is the same address.
        let mapped: IpAddr = "::ffff:127.0.0.8".parse().unwrap();
        assert!(per.try_add(mapped));
        assert!(!per.try_add(b));

        let unlimited = PerAddress::new(0, &[]);
        for _ in 0..10 {
            assert!(unlimited.try_add(a));
        }
    }

    #[test]
    fn trusted_proxies_are_not_capped() {
        let proxy: Cidr = "10.0.0.0/8".parse().unwrap();
        let per = PerAddress::new(1, &[proxy]);
        let balancer: IpAddr = "10.1.2.3".parse().unwrap();
        for _ in 0..5 {
            assert!(per.try_add(balancer));
        }
        per.remove(balancer);
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(per.try_add(client) && !per.try_add(client));
    }
}
