//! HTTP/1.1 on the gateway's port: check-then-parse of requests with
//! `httparse` (keep-alive, pipelining, `Content-Length` bodies), the limits a
//! public port needs, request parameters (query, form, JSON) and response
//! encoding with the `{code,msg,data}` envelope.
//!
//! Request bodies must carry `Content-Length` (digits only, RFC 9110); a
//! request with `Transfer-Encoding` is refused with 411 Length Required.
//! [`parse`] answers a request's head alone, so that its caller can refuse
//! the request before any of its body is buffered: the largest body
//! accepted depends on the method and path (the caller says which), and
//! an oversized body is refused from its `Content-Length`. The body is
//! then received into a buffer allocated once at its declared size
//! ([`Request::fill_body`]).
//!
//! `multipart/form-data` bodies (RFC 7578) are read in place: text fields
//! join the other parameters, files are borrowed slices of the body.

use std::collections::HashMap;
use std::net::IpAddr;

use serde_json::Value;

/// Largest request head (request line and headers) accepted.
pub const MAX_HEAD: usize = 8 * 1024;
const MAX_HEADERS: usize = 64;

/// A complete request, owned so it can travel to a worker.
#[derive(Debug, Clone)]
pub struct Request {
    /// Upper-case method, e.g. `GET`.
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// Raw query string (without `?`), possibly empty.
    pub query: String,
    /// Headers with lower-cased names, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The body, `content_length` bytes once complete.
    pub body: Vec<u8>,
    /// The declared body length.
    pub content_length: usize,
    /// Whether the connection stays open after the answer.
    pub keep_alive: bool,
    /// The TCP peer's address (the client's: see `Shared::client_addr`).
    pub peer: IpAddr,
}

/// Outcome of looking at the start of a connection's input.
#[derive(Debug)]
pub enum Parsed {
    /// More bytes are needed.
    Partial,
    /// A request's head (its body still empty) and the bytes the head used.
    Head(Request, usize),
    /// The input can never become a valid request: answer this status and close.
    Reject(u16),
}

/// Parses one request head from the start of `buf`. `body_limit` gives the
/// largest body accepted for a method and path (without its query string).
pub fn parse(buf: &[u8], body_limit: impl Fn(&str, &str) -> usize, peer: IpAddr) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => return Parsed::Reject(431),
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Parsed::Reject(431),
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Reject(431),
        Err(_) => return Parsed::Reject(400),
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Parsed::Reject(400);
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (target, ""),
    };
    if !path.starts_with('/') {
        return Parsed::Reject(400);
    }
    let mut keep_alive = version == 1;
    let mut content_length: Option<usize> = None;
    let mut owned = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let Ok(value) = std::str::from_utf8(h.value) else {
            return Parsed::Reject(400);
        };
        let name = h.name.to_ascii_lowercase();
        match name.as_str() {
            "transfer-encoding" => return Parsed::Reject(411),
            "content-length" => {
                let Some(n) = content_length_value(value) else {
                    return Parsed::Reject(400);
                };
                if content_length.is_some_and(|m| m != n) {
                    return Parsed::Reject(400);
                }
                content_length = Some(n);
            }
            "connection" => {
                for token in value.split(',').map(str::trim) {
                    if token.eq_ignore_ascii_case("close") {
                        keep_alive = false;
                    } else if token.eq_ignore_ascii_case("keep-alive") {
                        keep_alive = true;
                    }
                }
            }
            _ => {}
        }
        owned.push((name, value.to_string()));
    }
    let method = method.to_ascii_uppercase();
    let content_length = content_length.unwrap_or(0);
    if content_length > body_limit(&method, path) {
        return Parsed::Reject(413);
    }
    Parsed::Head(
        Request {
            method,
            path: path.to_string(),
            query: query.to_string(),
            headers: owned,
            body: Vec::new(),
            content_length,
            keep_alive,
            peer,
        },
        head_len,
    )
}

/// A `Content-Length` value: ASCII digits only (RFC 9110 §8.6; no sign, no
/// list), around which `httparse` already removed the whitespace.
fn content_length_value(value: &str) -> Option<usize> {
    let digits = value.trim_matches([' ', '\t']);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl Request {
    /// Takes the next bytes of the body from the start of `data`; returns
    /// how many it took. The body's buffer is allocated once, at its
    /// declared length, when its first bytes come: it never grows.
    pub fn fill_body(&mut self, data: &[u8]) -> usize {
        let take = (self.content_length - self.body.len()).min(data.len());
        if take > 0 && self.body.capacity() == 0 {
            self.body.reserve_exact(self.content_length);
        }
        self.body.extend_from_slice(&data[..take]);
        take
    }

    /// Whether the whole body is there.
    pub fn body_complete(&self) -> bool {
        self.body.len() == self.content_length
    }

    /// The first header with this (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether a comma-separated header contains `token` (case-insensitive).
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// Parameters from the query string and the body (form-urlencoded or
    /// JSON object; body wins). `None` when the body cannot be read as the
    /// declared content type.
    pub fn params(&self) -> Option<Params> {
        let mut map: HashMap<String, String> = form_urlencoded::parse(self.query.as_bytes())
            .into_owned()
            .collect();
        if self.body.is_empty() {
            return Some(Params(map));
        }
        let ctype = self
            .header("content-type")
            .unwrap_or("")
            .to_ascii_lowercase();
        if ctype.starts_with("multipart/form-data") {
            for part in multipart(self)? {
                if part.filename.is_none() {
                    let text = std::str::from_utf8(part.data).ok()?;
                    map.insert(part.name, text.to_string());
                }
            }
        } else if ctype.starts_with("application/json") {
            let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(&self.body) else {
                return None;
            };
            for (k, v) in obj {
                let s = match v {
                    Value::String(s) => s,
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    Value::Null => continue,
                    other => other.to_string(),
                };
                map.insert(k, s);
            }
        } else {
            map.extend(form_urlencoded::parse(&self.body).into_owned());
        }
        Some(Params(map))
    }

    /// The file sent as form field `name` in a `multipart/form-data` body;
    /// `None` when there is none (or the body is not a valid multipart body,
    /// which [`Request::params`] reports).
    pub fn file(&self, name: &str) -> Option<Upload<'_>> {
        multipart(self)?
            .into_iter()
            .find(|p| p.name == name && p.filename.is_some())
            .map(|p| Upload {
                filename: p.filename.unwrap_or_default(),
                content_type: p.content_type,
                data: p.data,
            })
    }
}

/// A file of a `multipart/form-data` body.
#[derive(Debug, Clone)]
pub struct Upload<'a> {
    /// The file name the client gave (possibly empty; never used as a path).
    pub filename: String,
    /// The declared content type, empty when none was given.
    pub content_type: String,
    /// The file's bytes.
    pub data: &'a [u8],
}

/// Most parts read from one multipart body.
const MAX_PARTS: usize = 64;
/// Largest header block of one part.
const MAX_PART_HEAD: usize = 4096;

/// One part of a multipart body.
struct Part<'a> {
    name: String,
    filename: Option<String>,
    content_type: String,
    data: &'a [u8],
}

/// `name=value` parameters of a header value such as
/// `form-data; name="a"; filename="b.png"` (names lower-cased, quotes and
/// backslash escapes removed), after its first item.
fn header_params(value: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = value.chars().peekable();
    // Skip the first item (`form-data`, `multipart/form-data`).
    for c in chars.by_ref() {
        if c == ';' {
            break;
        }
    }
    loop {
        let mut name = String::new();
        for c in chars.by_ref() {
            if c == '=' || c == ';' {
                break;
            }
            name.push(c);
        }
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => val.extend(chars.next()),
                    c => val.push(c),
                }
            }
            for c in chars.by_ref() {
                if c == ';' {
                    break;
                }
            }
        } else {
            for c in chars.by_ref() {
                if c == ';' {
                    break;
                }
                val.push(c);
            }
        }
        let name = name.trim().to_ascii_lowercase();
        if name.is_empty() && chars.peek().is_none() {
            return out;
        }
        out.push((name, val.trim_end().to_string()));
    }
}

/// Whether `b` may appear in a multipart boundary (RFC 2046 `bchars`).
fn is_bchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&b)
}

/// The first position of `needle` in `hay` at or after `from`. Linear for
/// the needles used here (`\r\n--boundary`: a boundary holds no CR).
fn find_from(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let first = *needle.first()?;
    let mut i = from;
    while i + needle.len() <= hay.len() {
        let at = i + hay[i..].iter().position(|&b| b == first)?;
        if hay.get(at..at + needle.len())? == needle {
            return Some(at);
        }
        i = at + 1;
    }
    None
}

/// The parts of a `multipart/form-data` request; `None` when it is not one
/// or is malformed.
fn multipart(req: &Request) -> Option<Vec<Part<'_>>> {
    let ctype = req.header("content-type")?;
    if !ctype
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        return None;
    }
    let boundary = header_params(ctype)
        .into_iter()
        .find(|(k, _)| k == "boundary")
        .map(|(_, v)| v)?;
    if boundary.is_empty()
        || boundary.len() > 70
        || !boundary.bytes().all(is_bchar)
        || boundary.ends_with(' ')
    {
        return None;
    }
    let body = req.body.as_slice();
    let delim = format!("\r\n--{boundary}").into_bytes();
    // The first delimiter may open the body (no preamble).
    let mut pos = if body.starts_with(&delim[2..]) {
        delim.len() - 2
    } else {
        find_from(body, &delim, 0)? + delim.len()
    };
    let mut parts = Vec::new();
    loop {
        let rest = body.get(pos..)?;
        if rest.starts_with(b"--") {
            return Some(parts);
        }
        let pad = rest
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
        if !rest[pad..].starts_with(b"\r\n") || parts.len() == MAX_PARTS {
            return None;
        }
        let head_start = pos + pad + 2;
        let (head, data_start) = if body[head_start..].starts_with(b"\r\n") {
            ("", head_start + 2)
        } else {
            let limit = body.len().min(head_start + MAX_PART_HEAD);
            let end = find_from(&body[..limit], b"\r\n\r\n", head_start)?;
            (std::str::from_utf8(&body[head_start..end]).ok()?, end + 4)
        };
        let data_end = find_from(body, &delim, data_start)?;
        let mut part = Part {
            name: String::new(),
            filename: None,
            content_type: String::new(),
            data: &body[data_start..data_end],
        };
        let mut disposition = false;
        for line in head.split("\r\n") {
            let (name, value) = line.split_once(':')?;
            let name = name.trim();
            if name.eq_ignore_ascii_case("content-disposition") {
                if !value
                    .trim_start()
                    .to_ascii_lowercase()
                    .starts_with("form-data")
                {
                    return None;
                }
                disposition = true;
                for (k, v) in header_params(value) {
                    match k.as_str() {
                        "name" => part.name = v,
                        "filename" => part.filename = Some(v),
                        _ => {}
                    }
                }
            } else if name.eq_ignore_ascii_case("content-type") {
                part.content_type = value.trim().to_string();
            }
        }
        if !disposition {
            return None;
        }
        parts.push(part);
        pos = data_end + delim.len();
    }
}

/// Request parameters by name.
#[derive(Debug, Default, Clone)]
pub struct Params(pub HashMap<String, String>);

impl Params {
    /// The parameter's text, `None` when absent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// The parameter's text, empty when absent.
    pub fn str(&self, name: &str) -> &str {
        self.get(name).unwrap_or("")
    }
}

/// A response before encoding.
#[derive(Debug)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type` value.
    pub content_type: &'static str,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// The body (or its first part, when `stream` holds the rest).
    pub body: Vec<u8>,
    /// The rest of a body too large to hold in memory.
    pub stream: Option<BodyStream>,
    /// An answer to `HEAD`: the head of this response, without its body.
    pub head_only: bool,
}

/// The rest of a response body, read in pieces by workers: the reactor asks
/// for the next piece only once the connection has room for it.
pub struct BodyStream {
    /// Where the bytes come from (a file, an object store's answer).
    pub reader: Box<dyn std::io::Read + Send>,
    /// Bytes still to come.
    pub remaining: u64,
}

impl std::fmt::Debug for BodyStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BodyStream({} bytes)", self.remaining)
    }
}

impl Response {
    /// The `{code,msg,data}` envelope with an HTTP status.
    pub fn envelope(status: u16, code: i32, msg: &str, data: Value) -> Response {
        let body = serde_json::json!({ "code": code, "msg": msg, "data": data });
        Response {
            status,
            content_type: "application/json; charset=utf-8",
            headers: Vec::new(),
            body: body.to_string().into_bytes(),
            stream: None,
            head_only: false,
        }
    }

    /// A protocol-level error (400, 404, 405, 411, 413, 431, 503…) in the envelope.
    pub fn error(status: u16) -> Response {
        let code = if status == 404 { 1002 } else { 1000 };
        Response::envelope(status, code, reason(status), Value::Null)
    }

    /// A plain-text answer.
    pub fn text(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: body.into(),
            stream: None,
            head_only: false,
        }
    }

    /// Encodes status line, headers and body (`Content-Length` counts the
    /// streamed rest too). `keep_alive: false` adds `Connection: close`.
    pub fn encode(&self, keep_alive: bool) -> Vec<u8> {
        use std::io::Write;
        let mut out = Vec::with_capacity(160 + self.body.len());
        let length = self.body.len() as u64 + self.stream.as_ref().map_or(0, |s| s.remaining);
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {length}\r\n",
            self.status,
            reason(self.status),
            self.content_type,
        );
        for (name, value) in &self.headers {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !self.head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }

    /// Splits the response into its encoded head (with what it holds of the
    /// body) and the stream of the rest, if any (none for `HEAD`).
    pub fn into_parts(mut self, keep_alive: bool) -> (Vec<u8>, Option<BodyStream>) {
        let bytes = self.encode(keep_alive);
        let stream = self.stream.take().filter(|_| !self.head_only);
        (bytes, stream)
    }
}

/// The reason phrase of a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        206 => "Partial Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    /// A whole request from `buf`, its body included, and the bytes used.
    fn whole(buf: &[u8], limit: impl Fn(&str, &str) -> usize) -> Option<(Request, usize)> {
        let Parsed::Head(mut req, head) = parse(buf, limit, PEER) else {
            return None;
        };
        let body = req.fill_body(&buf[head..]);
        req.body_complete().then_some((req, head + body))
    }

    fn complete(buf: &[u8]) -> (Request, usize) {
        whole(buf, |_, _| 1024).expect("a whole request")
    }

    fn status(buf: &[u8]) -> u16 {
        match parse(buf, |_, _| 1024, PEER) {
            Parsed::Reject(s) => s,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn parses_pipelined_requests_one_at_a_time() {
        let two = b"POST /a?x=1 HTTP/1.1\r\nContent-Length: 3\r\n\r\nb=2GET /b HTTP/1.1\r\n\r\n";
        let (first, used) = complete(two);
        assert_eq!((first.method.as_str(), first.path.as_str()), ("POST", "/a"));
        assert_eq!(first.params().unwrap().str("x"), "1");
        assert_eq!(first.params().unwrap().str("b"), "2");
        let (second, rest) = complete(&two[used..]);
        assert_eq!(second.path, "/b");
        assert_eq!(used + rest, two.len());
    }

    #[test]
    fn the_head_comes_before_the_body() {
        let raw = b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nab";
        let Parsed::Head(mut req, head) = parse(raw, |_, _| 1024, PEER) else {
            panic!("expected a head");
        };
        assert_eq!((req.content_length, req.body.len()), (5, 0));
        assert_eq!(req.fill_body(&raw[head..]), 2);
        assert!(!req.body_complete());
        assert_eq!(req.fill_body(b"cdefg"), 3);
        assert!(req.body_complete());
        assert_eq!(req.body, b"abcde");
        assert_eq!(req.body.capacity(), 5, "allocated once, at its length");
        assert!(matches!(
            parse(b"GET / HT", |_, _| 1024, PEER),
            Parsed::Partial
        ));
    }

    #[test]
    fn content_length_is_digits_only() {
        for bad in [
            "+3",
            "-1",
            "3, 3",
            "0x3",
            "3 3",
            "",
            "99999999999999999999999",
        ] {
            let raw = format!("POST / HTTP/1.1\r\nContent-Length: {bad}\r\n\r\nabc");
            assert_eq!(status(raw.as_bytes()), 400, "{bad:?}");
        }
        let (req, _) = complete(b"POST / HTTP/1.1\r\nContent-Length:  3 \r\n\r\nabc");
        assert_eq!(req.body, b"abc");
    }

    #[test]
    fn limits_and_malformed_input() {
        assert_eq!(status(b"GARBAGE\r\n\r\n"), 400);
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            411
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n"),
            413
        );
        assert_eq!(status(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), 400);
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            400
        );
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD));
        assert_eq!(status(&big), 431);
    }

    #[test]
    fn keep_alive_rules() {
        assert!(complete(b"GET / HTTP/1.1\r\n\r\n").0.keep_alive);
        assert!(
            !complete(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
                .0
                .keep_alive
        );
        assert!(!complete(b"GET / HTTP/1.0\r\n\r\n").0.keep_alive);
        assert!(
            complete(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                .0
                .keep_alive
        );
    }

    #[test]
    fn json_and_form_params() {
        let req = b"POST / HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 25\r\n\r\n{\"a\":\"x\",\"n\":5,\"z\":null }";
        let p = complete(req).0.params().unwrap();
        assert_eq!((p.str("a"), p.str("n"), p.get("z")), ("x", "5", None));
        let bad =
            b"POST / HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]";
        assert!(complete(bad).0.params().is_none());
        let form = b"POST / HTTP/1.1\r\nContent-Length: 17\r\n\r\nusername=a%20b+c&";
        assert_eq!(complete(form).0.params().unwrap().str("username"), "a b c");
    }

    fn multipart_request(ctype: &str, body: &[u8]) -> Request {
        let mut raw = format!(
            "POST /u HTTP/1.1\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        raw.extend_from_slice(body);
        complete(&raw).0
    }

    #[test]
    fn multipart_fields_and_files() {
        let body = b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\n1\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a \\\"b\\\".png\"\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n--Xy\r\n--XyZ--\r\nepilogue";
        let req = multipart_request("multipart/form-data; boundary=\"XyZ\"", body);
        let params = req.params().unwrap();
        assert_eq!(params.str("type"), "1");
        assert_eq!(params.get("file"), None);
        let file = req.file("file").unwrap();
        assert_eq!(file.filename, "a \"b\".png");
        assert_eq!(file.content_type, "image/png");
        assert_eq!(file.data, b"\x89PNG\r\n--Xy");
        assert!(req.file("type").is_none());
        assert!(req.file("other").is_none());
    }

    #[test]
    fn malformed_multipart_is_refused() {
        let ctype = "multipart/form-data; boundary=b";
        for body in [
            &b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx"[..],
            b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\r\n--b",
            b"--b\r\nX-Other: 1\r\n\r\nx\r\n--b--",
            b"--b\r\nContent-Disposition: attachment; name=\"a\"\r\n\r\nx\r\n--b--",
            b"--b\r\nno colon\r\n\r\nx\r\n--b--",
            b"--bx\r\n",
        ] {
            let req = multipart_request(ctype, body);
            assert!(
                req.params().is_none(),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        let ok = b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\r\n--b--";
        assert_eq!(multipart_request(ctype, ok).params().unwrap().str("a"), "x");
        for bad in [
            "multipart/form-data",
            "multipart/form-data; boundary=",
            "multipart/form-data; boundary=a@b",
        ] {
            assert!(multipart_request(bad, ok).params().is_none(), "{bad}");
        }
    }

    #[test]
    fn body_limit_depends_on_the_method_and_path() {
        let limit = |method: &str, path: &str| {
            if method == "POST" && path == "/big" {
                10_000
            } else {
                10
            }
        };
        let big = b"post /big?x=1 HTTP/1.1\r\nContent-Length: 5000\r\n\r\n";
        assert!(matches!(parse(big, limit, PEER), Parsed::Head(_, _)));
        let small = b"POST /small?/big HTTP/1.1\r\nContent-Length: 11\r\n\r\n";
        assert!(matches!(parse(small, limit, PEER), Parsed::Reject(413)));
        let get = b"GET /big HTTP/1.1\r\nContent-Length: 11\r\n\r\n";
        assert!(matches!(parse(get, limit, PEER), Parsed::Reject(413)));
    }

    #[test]
    fn envelope_encoding() {
        let r = Response::error(404).encode(false);
        let text = String::from_utf8(r).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("{\"code\":1002,\"data\":null,\"msg\":\"Not Found\"}"));
    }
}
