//! The node's listeners: one per reactor on one address, joined in a
//! `SO_REUSEPORT` group so that the kernel spreads accepted connections
//! over the reactors, and never shared with another process.
//!
//! Why a check of `/proc/net/tcp{,6}`: `SO_REUSEPORT` lets any socket of
//! the same user join the group, so a second weim started on a port in use
//! would bind without an error and take a share of the connections (with
//! its own store). The alternatives do not hold: a probe socket bound
//! without `SO_REUSEPORT` conflicts with our own group as much as with
//! another process's, so it can only run before we bind and leaves a
//! window; one listener with a duplicated descriptor per reactor would give
//! up the kernel's spreading of connections (every reactor's poll would
//! wake for each one). So the sockets are bound first, and before they
//! listen the kernel's table of TCP sockets of this network namespace is
//! read: any socket in `LISTEN` on the same port whose address overlaps
//! ours (the same, or either one the wildcard) belongs to another process,
//! since ours are not listening yet. Read once more after `listen`, leaving
//! out our own sockets by inode, it also catches another node started at
//! the same moment (then both refuse, rather than share). A node whose
//! `/proc` cannot be read binds without the check, with a warning.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;

use mio::net::TcpListener;
use socket2::{Domain, Socket, Type};

/// Connections the kernel queues per listener before they are accepted.
const BACKLOG: i32 = 4096;
/// `st` of a socket in `LISTEN` in `/proc/net/tcp`.
const TCP_LISTEN: &str = "0A";

/// A socket in `LISTEN` found in the kernel's table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listening {
    addr: SocketAddr,
    inode: u64,
}

/// Binds `n` listeners on `addr` (port 0: one port the kernel picks, the
/// same for all); the error names the address and why it cannot be used.
pub fn bind(addr: SocketAddr, n: usize) -> Result<Vec<TcpListener>, String> {
    let fail = |a: SocketAddr, e: io::Error| format!("http.listen {a}: {e}");
    let first = socket(addr).map_err(|e| fail(addr, e))?;
    let bound = first
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .ok_or_else(|| format!("http.listen {addr}: no local address after bind"))?;
    let mut sockets = vec![first];
    for _ in 1..n.max(1) {
        sockets.push(socket(bound).map_err(|e| fail(bound, e))?);
    }
    let taken = |others: Vec<Listening>| {
        others.first().map(|o| {
            format!(
                "http.listen {bound}: another process already listens on {} (socket inode {})",
                o.addr, o.inode
            )
        })
    };
    match listening_on(bound) {
        Ok(others) => {
            if let Some(e) = taken(others) {
                return Err(e);
            }
        }
        Err(e) => log::warn!("http.listen {bound}: cannot check for other listeners: {e}"),
    }
    let mut inodes = Vec::with_capacity(sockets.len());
    for s in &sockets {
        s.listen(BACKLOG).map_err(|e| fail(bound, e))?;
        inodes.push(socket_inode(s.as_raw_fd()));
    }
    if let Ok(all) = listening_on(bound) {
        let others: Vec<Listening> = all
            .into_iter()
            .filter(|l| !inodes.contains(&Some(l.inode)))
            .collect();
        if let Some(e) = taken(others) {
            return Err(e);
        }
    }
    Ok(sockets
        .into_iter()
        .map(|s| TcpListener::from_std(s.into()))
        .collect())
}

/// A bound, not yet listening, non-blocking socket in the node's
/// `SO_REUSEPORT` group.
fn socket(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// The inode of the socket behind `fd` (`/proc/self/fd/<fd>` →
/// `socket:[<inode>]`).
fn socket_inode(fd: i32) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    let link = link.to_str()?;
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Whether a socket listening on `a` takes connections meant for `b` (the
/// same port is checked by the caller).
fn overlaps(a: IpAddr, b: IpAddr) -> bool {
    let (a, b) = (a.to_canonical(), b.to_canonical());
    a.is_unspecified() || b.is_unspecified() || a == b
}

/// Every socket in `LISTEN` in this network namespace whose address takes
/// connections meant for `addr`. A missing `/proc/net/tcp6` (no IPv6) is
/// no error.
fn listening_on(addr: SocketAddr) -> io::Result<Vec<Listening>> {
    let mut found = Vec::new();
    for (path, required) in [("/proc/net/tcp", true), ("/proc/net/tcp6", false)] {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io::Error::new(e.kind(), format!("{path}: {e}"))),
        };
        found.extend(
            parse_table(&text)
                .into_iter()
                .filter(|l| l.addr.port() == addr.port() && overlaps(l.addr.ip(), addr.ip())),
        );
    }
    Ok(found)
}

/// The `LISTEN` sockets of a `/proc/net/tcp` or `/proc/net/tcp6` table.
/// Lines that do not parse are skipped.
fn parse_table(text: &str) -> Vec<Listening> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(3) != Some(&TCP_LISTEN) {
                return None;
            }
            let addr = parse_addr(fields.get(1)?)?;
            let inode = fields.get(9)?.parse().ok()?;
            Some(Listening { addr, inode })
        })
        .collect()
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6): the kernel
/// prints each 32-bit word of the address in host byte order.
fn parse_addr(field: &str) -> Option<SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = ip.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut octets = [0u8; 16];
            for i in 0..4 {
                octets[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_table_is_read_in_host_byte_order() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4243 1 0000000000000000 20 4 30 10 -1\n\
   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 99 1 0000000000000000 100 0 0 10 0\n";
        if cfg!(target_endian = "little") {
            assert_eq!(
                parse_table(v4),
                vec![
                    Listening {
                        addr: "127.0.0.1:8080".parse().unwrap(),
                        inode: 4242
                    },
                    Listening {
                        addr: "0.0.0.0:22".parse().unwrap(),
                        inode: 99
                    },
                ]
            );
            let v6 = "header\n   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1\n";
            assert_eq!(
                parse_table(v6),
                vec![Listening {
                    addr: "[::1]:8080".parse().unwrap(),
                    inode: 77
                }]
            );
        }
    }

    #[test]
    fn wildcards_overlap_everything_and_mapped_addresses_their_ipv4() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(overlaps(ip("0.0.0.0"), ip("127.0.0.1")));
        assert!(overlaps(ip("127.0.0.1"), ip("::")));
        assert!(overlaps(ip("::ffff:127.0.0.1"), ip("127.0.0.1")));
        assert!(!overlaps(ip("127.0.0.1"), ip("127.0.0.2")));
        assert!(!overlaps(ip("::1"), ip("127.0.0.1")));
    }

    #[test]
    fn a_port_another_process_listens_on_is_refused_even_with_reuseport() {
        // Another process's listener, as another weim binds it.
        let other = socket("127.0.0.1:0".parse().unwrap()).unwrap();
        other.listen(16).unwrap();
        let addr = other.local_addr().unwrap().as_socket().unwrap();
        let err = bind(addr, 2).map(|_| ()).unwrap_err();
        assert!(
            err.starts_with(&format!("http.listen {addr}: another process")),
            "{err}"
        );
        drop(other);
        // Free again: two listeners in one group on one port.
        let ours = bind(addr, 2).unwrap();
        assert_eq!(ours.len(), 2);
        assert_eq!(ours[1].local_addr().unwrap(), addr);
    }
}
