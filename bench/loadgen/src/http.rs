//! The one REST call of the load generator: `POST /ws/sendToAll` with the
//! admin token and a form body that carries the round and its send time.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::host::{err_name, unix_ns};

/// What one broadcast request did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PostResult {
    /// Unix nanoseconds just before the request was written (also in the body).
    pub send_ns: u64,
    /// Request written to response read, milliseconds.
    pub ms: f64,
    pub status: Option<u16>,
    /// `code` of the JSON envelope.
    pub code: Option<i64>,
    /// `data.local`: connections written on this node.
    pub local: Option<u64>,
    pub error: Option<String>,
}

impl PostResult {
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.status == Some(200) && self.code == Some(0)
    }
}

/// The broadcast body: `<round>:<send unix nanos>:` padded with `x` to
/// `bytes` bytes (longer when the numbers alone need more).
pub fn body_text(round: u32, send_ns: u64, bytes: usize) -> String {
    let mut s = format!("{round}:{send_ns}:");
    while s.len() < bytes {
        s.push('x');
    }
    s
}

/// Form encoding of the body text (digits and `x` stay, `:` becomes `%3A`).
fn form_body(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    out.push_str("body=");
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'*') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Sends round `round` to every connection of the node at `target`.
pub fn send_to_all(
    target: SocketAddr,
    admin_token: &str,
    round: u32,
    body_bytes: usize,
    timeout: Duration,
) -> PostResult {
    let mut r = PostResult::default();
    let mut stream = match TcpStream::connect_timeout(&target, Duration::from_secs(5)) {
        Ok(s) => s,
        Err(e) => {
            r.error = Some(format!("connect: {}", err_name(&e)));
            r.send_ns = unix_ns();
            return r;
        }
    };
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    r.send_ns = unix_ns();
    let started = Instant::now();
    let form = form_body(&body_text(round, r.send_ns, body_bytes));
    let req = format!(
        "POST /ws/sendToAll HTTP/1.1\r\nHost: {target}\r\nAdmin-Token: {admin_token}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{form}",
        form.len()
    );
    if let Err(e) = stream.write_all(req.as_bytes()) {
        r.error = Some(format!("write: {}", err_name(&e)));
        return r;
    }
    let raw = match read_response(&mut stream) {
        Ok(v) => v,
        Err(e) => {
            r.ms = started.elapsed().as_secs_f64() * 1e3;
            r.error = Some(e);
            return r;
        }
    };
    r.ms = started.elapsed().as_secs_f64() * 1e3;
    let (status, body) = parse_response(&raw);
    r.status = status;
    if let Some(v) = body.and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok()) {
        r.code = v.get("code").and_then(|c| c.as_i64());
        r.local = v
            .get("data")
            .and_then(|d| d.get("local"))
            .and_then(|l| l.as_u64());
    }
    if let Some(code) = status.filter(|c| *c != 200) {
        r.error = Some(format!("HTTP {code}"));
    } else if status.is_none() {
        r.error = Some("no HTTP response".into());
    } else if r.code != Some(0) {
        r.error = Some(format!("code {:?}", r.code));
    }
    r
}

const MAX_RESPONSE: usize = 1 << 20;

/// Reads until the response is complete (by length, chunked end, or EOF).
fn read_response(stream: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(buf),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read: {}", err_name(&e))),
        }
        if buf.len() > MAX_RESPONSE {
            return Err("read: response too large".into());
        }
        if complete(&buf) {
            return Ok(buf);
        }
    }
}

fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn complete(buf: &[u8]) -> bool {
    let Some(end) = head_end(buf) else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    if let Some(len) = header(&head, "content-length").and_then(|v| v.parse::<usize>().ok()) {
        return buf.len() >= end + len;
    }
    if header(&head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        return buf.ends_with(b"0\r\n\r\n");
    }
    false
}

/// Status code and body (de-chunked when needed).
fn parse_response(buf: &[u8]) -> (Option<u16>, Option<Vec<u8>>) {
    let Some(end) = head_end(buf) else {
        return (None, None);
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok());
    let rest = &buf[end..];
    let chunked =
        header(&head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if !chunked {
        return (status, Some(rest.to_vec()));
    }
    let mut body = Vec::new();
    let mut pos = 0;
    while let Some(nl) = rest[pos..].windows(2).position(|w| w == b"\r\n") {
        let size_line = String::from_utf8_lossy(&rest[pos..pos + nl]);
        let size_hex = size_line.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_hex, 16) else {
            break;
        };
        pos += nl + 2;
        if size == 0 || pos + size > rest.len() {
            break;
        }
        body.extend_from_slice(&rest[pos..pos + size]);
        pos += size + 2;
        if pos > rest.len() {
            break;
        }
    }
    (status, Some(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies() {
        let t = body_text(7, 1234, 20);
        assert_eq!(t, "7:1234:xxxxxxxxxxxxx");
        assert_eq!(t.len(), 20);
        assert_eq!(body_text(7, 1234, 0), "7:1234:");
        assert_eq!(form_body("7:12:xx"), "body=7%3A12%3Axx");
    }

    #[test]
    fn responses() {
        let plain =
            b"HTTP/1.1 200 OK\r\nContent-Length: 29\r\n\r\n{\"code\":0,\"data\":{\"local\":5}}";
        assert!(complete(plain));
        assert!(!complete(&plain[..plain.len() - 1]));
        let (s, b) = parse_response(plain);
        assert_eq!(s, Some(200));
        assert!(b.unwrap().starts_with(b"{\"code\""));
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n";
        assert!(complete(chunked));
        let (s, b) = parse_response(chunked);
        assert_eq!(s, Some(200));
        assert_eq!(b.unwrap(), b"{\"a\":1}");
        assert_eq!(parse_response(b"junk"), (None, None));
    }
}
