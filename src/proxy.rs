//! Who a request comes from behind reverse proxies: `http.trusted_proxies`
//! (address blocks) and the client address every per-address limit uses.
//!
//! A request's client address is its TCP peer, unless that peer is a
//! trusted proxy: then it is the right-most address of `X-Forwarded-For`
//! (all such headers, in order) that is not itself a trusted proxy. Entries
//! left of it were written by the client and are ignored, so a client
//! cannot pick the address it is counted under. `X-Real-IP` is not read: it
//! holds one address that a proxy may pass on unchanged from the client,
//! while every common proxy appends to `X-Forwarded-For`.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// A block of addresses, `10.0.0.0/8` or `fd00::/8`; a bare address is a
/// block of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in this block (an IPv4-mapped IPv6 address counts
    /// as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask(u32::from(ip).into(), 32, self.prefix) == u128::from(u32::from(net))
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask(u128::from(ip), 128, self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

/// `v` (an address `width` bits wide) with the bits after `prefix` cleared.
fn mask(v: u128, width: u8, prefix: u8) -> u128 {
    let host = u32::from(width - prefix);
    match host {
        128 => 0,
        _ => v & !((1u128 << host) - 1),
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// Parses `addr` or `addr/prefix`; host bits under the prefix are
    /// cleared.
    fn from_str(s: &str) -> Result<Cidr, String> {
        let bad =
            || format!("expected an address or a block like 10.0.0.0/8 or fd00::/8, got {s:?}");
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let addr = addr.to_canonical();
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(bad)?,
        };
        let addr = match addr {
            IpAddr::V4(a) => IpAddr::V4((mask(u32::from(a).into(), 32, prefix) as u32).into()),
            IpAddr::V6(a) => IpAddr::V6(mask(u128::from(a), 128, prefix).into()),
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Whether `ip` is in one of the `trusted` blocks.
pub fn is_trusted(trusted: &[Cidr], ip: IpAddr) -> bool {
    trusted.iter().any(|c| c.contains(ip))
}

/// The client address of a request from TCP peer `peer` carrying these
/// `X-Forwarded-For` values (in header order), as the module comment says.
/// An entry that is not an address (`unknown`, garbage) ends the walk at
/// the last trusted hop before it.
pub fn client_addr<'a>(
    trusted: &[Cidr],
    peer: IpAddr,
    forwarded_for: impl DoubleEndedIterator<Item = &'a str>,
) -> IpAddr {
    let mut client = peer.to_canonical();
    if !is_trusted(trusted, client) {
        return client;
    }
    for value in forwarded_for.rev() {
        for entry in value.rsplit(',') {
            let Some(hop) = parse_hop(entry) else {
                return client;
            };
            client = hop;
            if !is_trusted(trusted, hop) {
                return client;
            }
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, possibly with a port
/// (`1.2.3.4:5678`, `[::1]:80`) or in brackets.
fn parse_hop(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    let ip = entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            let inner = entry.strip_prefix('[')?.strip_suffix(']')?;
            inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
        })?;
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn blocks_parse_and_match() {
        let c: Cidr = "10.1.2.3/8".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/8");
        assert!(c.contains(ip("10.255.0.1")));
        assert!(c.contains(ip("::ffff:10.0.0.1")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(!c.contains(ip("::1")));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains(ip("127.0.0.1")));
        assert!(!one.contains(ip("127.0.0.2")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")));
        assert!(!v6.contains(ip("fe80::1")));
        assert!("::/0".parse::<Cidr>().unwrap().contains(ip("2001:db8::1")));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "x",
            "10.0.0.0/",
            "10.0.0.0/-1",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_peer() {
        let trusted = cidrs(&["127.0.0.1", "10.0.0.0/8"]);
        let from = |peer: &str, xff: &[&str]| client_addr(&trusted, ip(peer), xff.iter().copied());
        // An untrusted peer is the client, whatever it claims.
        assert_eq!(from("192.0.2.1", &["203.0.113.9"]), ip("192.0.2.1"));
        // Behind a trusted peer: the right-most untrusted entry.
        assert_eq!(from("127.0.0.1", &["203.0.113.9"]), ip("203.0.113.9"));
        assert_eq!(
            from("127.0.0.1", &["6.6.6.6, 203.0.113.9, 10.0.0.5"]),
            ip("203.0.113.9")
        );
        // Several headers are one list, in order.
        assert_eq!(
            from("127.0.0.1", &["6.6.6.6", "203.0.113.9", "10.0.0.5"]),
            ip("203.0.113.9")
        );
        // Ports and brackets are tolerated.
        assert_eq!(from("127.0.0.1", &["203.0.113.9:4000"]), ip("203.0.113.9"));
        assert_eq!(from("127.0.0.1", &["[2001:db8::1]:80"]), ip("2001:db8::1"));
        assert_eq!(from("127.0.0.1", &["[2001:db8::1]"]), ip("2001:db8::1"));
        // Garbage stops at the last trusted hop.
        assert_eq!(
            from("127.0.0.1", &["203.0.113.9, unknown"]),
            ip("127.0.0.1")
        );
        assert_eq!(from("127.0.0.1", &["unknown, 10.0.0.5"]), ip("10.0.0.5"));
        // No header, or only proxies: the left-most known hop.
        assert_eq!(from("127.0.0.1", &[]), ip("127.0.0.1"));
        assert_eq!(from("127.0.0.1", &["10.0.0.7, 10.0.0.5"]), ip("10.0.0.7"));
        // An IPv4-mapped peer is its IPv4 address.
        assert_eq!(
            from("::ffff:127.0.0.1", &["203.0.113.9"]),
            ip("203.0.113.9")
        );
        // Nothing trusted: the header is ignored.
        assert_eq!(
            client_addr(&[], ip("127.0.0.1"), ["203.0.113.9"].into_iter()),
            ip("127.0.0.1")
        );
    }
}
