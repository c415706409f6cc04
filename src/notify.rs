//! The service manager's readiness protocol (`sd_notify`, without
//! libsystemd): with `Type=notify`, systemd names a Unix datagram socket in
//! `NOTIFY_SOCKET` (a path, or an abstract-namespace name written with a
//! leading `@`) and waits for `READY=1` before it counts the service as
//! started; `STOPPING=1` tells it a stop is under way. Without the variable
//! nothing is sent.

use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Where state changes go: the socket named by `NOTIFY_SOCKET`.
pub struct Notifier {
    socket: UnixDatagram,
    to: SocketAddr,
}

impl Notifier {
    /// The notifier `NOTIFY_SOCKET` names, if it is set and valid (a bad
    /// value is logged once and ignored).
    pub fn from_env() -> Option<Notifier> {
        let name = std::env::var_os("NOTIFY_SOCKET")?;
        match Notifier::new(&name.to_string_lossy()) {
            Ok(n) => Some(n),
            Err(e) => {
                log::warn!("NOTIFY_SOCKET {name:?}: {e}; readiness is not reported");
                None
            }
        }
    }

    /// A notifier for this socket name: an absolute path, or `@name` for
    /// an abstract-namespace address.
    pub fn new(name: &str) -> std::io::Result<Notifier> {
        let to = match name.strip_prefix('@') {
            Some(abstract_name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(abstract_name.as_bytes())?
            }
            None if name.starts_with('/') => SocketAddr::from_pathname(name)?,
            None => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "expected an absolute path or @name",
                ))
            }
        };
        Ok(Notifier {
            socket: UnixDatagram::unbound()?,
            to,
        })
    }

    /// Sends one state change, e.g. `READY=1` (newline-separated
    /// assignments). A failure is logged: the service manager then
    /// decides by its own timeout.
    pub fn send(&self, state: &str) {
        if let Err(e) = self.socket.send_to_addr(state.as_bytes(), &self.to) {
            log::warn!("NOTIFY_SOCKET: sending {state:?}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn path_and_abstract_addresses() {
        let path = std::env::temp_dir().join(format!("weim-notify-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).unwrap();
        Notifier::new(path.to_str().unwrap())
            .unwrap()
            .send("READY=1\nSTATUS=up");
        assert_eq!(receive(&socket), "READY=1\nSTATUS=up");
        let _ = std::fs::remove_file(&path);

        use std::os::linux::net::SocketAddrExt;
        let name = format!("weim-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).unwrap();
        Notifier::new(&format!("@{name}"))
            .unwrap()
            .send("STOPPING=1");
        assert_eq!(receive(&socket), "STOPPING=1");

        assert!(Notifier::new("relative/path").is_err());
    }
}
