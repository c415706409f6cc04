//! Request bodies under attack, end to end: a body for an authenticated
//! route is refused from its head without a valid `Login-Token`, before
//! any of it is buffered; the bodies in flight on a node are capped
//! (`limits.max_inflight_body`, 503); a body's deadline is its progress
//! (`limits.min_body_rate` after a grace of `limits.http_timeout`), so a
//! slow honest upload completes and a trickle is answered 408.

mod common;

use std::time::{Duration, Instant};

use common::*;

const UPLOAD: &str = "/api/v1/im/chat/upload";
const INFLIGHT: &str = "weim_http_body_bytes_inflight";

/// The head of an upload declaring `len` body bytes.
fn upload_head(extra_headers: &str, len: usize) -> String {
    format!(
        "POST {UPLOAD} HTTP/1.1\r\nHost: {TEST_HOST}\r\n{extra_headers}\
         Content-Type: multipart/form-data; boundary=x\r\nContent-Length: {len}\r\n\r\n"
    )
}

/// A whole upload request of a `size`-byte file; its head ends at the
/// returned offset.
fn upload_request(token: &str, size: usize) -> (Vec<u8>, usize) {
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let bytes = Request::post(UPLOAD)
        .login_token(token)
        .multipart(&[("type", "6")], &[("file", "blob.bin", &data)])
        .to_bytes();
    let head = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a request head")
        + 4;
    (bytes, head)
}

/// Sends `bytes` on a new connection and reads the answer.
#[track_caller]
fn send_whole(node: &Node, bytes: &[u8]) -> Response {
    let mut http = node.http();
    http.send_raw(bytes);
    http.read_response()
}

#[track_caller]
fn expect_uploaded(resp: &Response) {
    let reply = resp.api();
    assert_eq!(reply["code"], CODE_OK, "{reply}");
    assert_eq!(reply["msg"], "上传成功", "{reply}");
}

/// The node's request body bytes in flight.
fn inflight(node: &Node) -> f64 {
    node.metrics().value(INFLIGHT)
}

#[track_caller]
fn wait_inflight(node: &Node, bytes: usize) {
    assert!(
        wait_until(Duration::from_secs(10), || inflight(node) == bytes as f64),
        "{INFLIGHT} stays {} instead of {bytes}",
        inflight(node)
    );
}

/// 40 connections declare 20 MiB uploads without a valid token and send
/// 1 MiB of them: each is answered (the worker's answer to a missing or
/// bad token, code 1001) and closed from its head, and the node's memory
/// does not grow with what they send.
#[test]
fn unauthenticated_bodies_are_refused_from_their_head() {
    let node = Node::start();
    let account = node.new_account();
    // The node's steady state: an upload through, metrics answered.
    let (whole, _) = upload_request(&account.token, 64 * 1024);
    expect_uploaded(&send_whole(&node, &whole));
    let _ = node.metrics();
    let before = node.rss_bytes();

    let chunk = vec![b'a'; 64 * 1024];
    let mut conns: Vec<Http> = (0..40)
        .map(|i| {
            let token = match i % 4 {
                0 => String::new(),
                1 => "Login-Token: forged.token.value\r\n".to_string(),
                2 => "Login-Token: \r\n".to_string(),
                _ => "Origin: https://app.example\r\n".to_string(),
            };
            let mut http = node.http();
            http.send_raw(upload_head(&token, 20 << 20).as_bytes());
            // The node may close before all of it is written.
            for _ in 0..16 {
                if http.try_send_raw(&chunk).is_err() {
                    break;
                }
            }
            http
        })
        .collect();
    let after = node.rss_bytes();
    assert!(
        after < before + (8 << 20),
        "RSS grew from {} to {} MiB",
        before >> 20,
        after >> 20
    );

    for (i, http) in conns.iter_mut().enumerate() {
        let resp = http.read_response();
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.header("Connection"), Some("close"));
        let reply = resp.api();
        assert_eq!(reply["code"], CODE_AUTH, "{reply}");
        assert_eq!(reply["msg"], "鉴权失败", "{reply}");
        if i % 4 == 3 {
            assert_eq!(
                resp.header("Access-Control-Allow-Origin"),
                Some("*"),
                "CORS headers on the refusal"
            );
        }
        assert!(
            http.wait_closed(Duration::from_secs(10)).is_some(),
            "connection {i} still open"
        );
    }
    assert!(
        node.metrics()
            .value("weim_http_rejected_total{reason=\"unauthenticated_body\"}")
            >= 40.0
    );
    assert_eq!(inflight(&node), 0.0);

    // An expired token gets the worker's expired text, from its head too.
    let expired = sign_jwt(
        &serde_json::json!({
            "id": account.id,
            "at": now_secs() - 100,
            "exp": now_secs() - 10,
            "sid": "00000000000000a1",
            "end": now_secs() + 3600,
        }),
        JWT_SECRET,
    );
    let mut http = node.http();
    http.send_raw(upload_head(&format!("Login-Token: {expired}\r\n"), 1 << 20).as_bytes());
    let reply = http.read_response().api();
    assert_eq!(reply["code"], CODE_AUTH, "{reply}");
    assert_eq!(reply["msg"], "登录状态已过期，请重新登录", "{reply}");
    // A valid token's body is received and handled.
    expect_uploaded(&send_whole(&node, &whole));
}

/// Bodies in flight past `limits.max_inflight_body` are answered 503 from
/// their head, for a valid token too; what a handled request or a closed
/// connection held is given back.
#[test]
fn bodies_in_flight_are_capped_node_wide() {
    let node = Node::builder()
        .env("WEIM_LIMITS_MAX_UPLOAD", "1MiB")
        .env("WEIM_LIMITS_MAX_INFLIGHT_BODY", "3MiB")
        .start();
    let account = node.new_account();
    let (whole, head) = upload_request(&account.token, 1_000_000);
    let body = whole.len() - head;
    // Three bodies of just under 1 MiB fill the budget while they arrive.
    let mut holders: Vec<Http> = (0..3)
        .map(|_| {
            let mut http = node.http();
            http.send_raw(&whole[..head + 1024]);
            http
        })
        .collect();
    wait_inflight(&node, 3 * body);

    let mut refused = node.http();
    refused.send_raw(&whole[..head]);
    let resp = refused.read_response();
    resp.assert_error(503);
    assert!(refused.wait_closed(Duration::from_secs(10)).is_some());
    assert!(
        node.metrics()
            .value("weim_http_rejected_total{reason=\"inflight_cap\"}")
            >= 1.0
    );

    // The first holder finishes: it is handled, and its share is free.
    holders[0].send_raw(&whole[head + 1024..]);
    expect_uploaded(&holders[0].read_response());
    wait_inflight(&node, 2 * body);
    expect_uploaded(&send_whole(&node, &whole));

    // Closed connections give their share back.
    holders.truncate(1);
    wait_inflight(&node, 0);
    let mut again: Vec<Http> = (0..3)
        .map(|_| {
            let mut http = node.http();
            http.send_raw(&whole);
            http
        })
        .collect();
    for http in &mut again {
        expect_uploaded(&http.read_response());
    }
}

/// Bodies that need no account (here logins) hold at most a quarter of
/// `limits.max_inflight_body` (at least `limits.max_body`): past it they
/// are answered 503, while a signed-in upload still finds room.
#[test]
fn anonymous_bodies_leave_room_for_signed_in_uploads() {
    let node = Node::builder()
        .env("WEIM_LIMITS_MAX_UPLOAD", "1MiB")
        .env("WEIM_LIMITS_MAX_BODY", "256KiB")
        .env("WEIM_LIMITS_MAX_INFLIGHT_BODY", "2MiB")
        .start();
    let account = node.new_account();
    let login_head = |len: usize| {
        format!(
            "POST /api/v1/login HTTP/1.1\r\nHost: {TEST_HOST}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len}\r\n\r\n"
        )
    };
    // Two slow logins declaring 256 KiB each: the anonymous quarter (512 KiB).
    let holders: Vec<Http> = (0..2)
        .map(|_| {
            let mut http = node.http();
            http.send_raw(format!("{}username=", login_head(256 << 10)).as_bytes());
            http
        })
        .collect();
    wait_inflight(&node, 2 * (256 << 10));
    let mut refused = node.http();
    refused.send_raw(login_head(16).as_bytes());
    refused.read_response().assert_error(503);
    // A signed-in upload of almost 1 MiB still fits the rest.
    let (whole, _) = upload_request(&account.token, 1_000_000);
    expect_uploaded(&send_whole(&node, &whole));
    drop(holders);
    wait_inflight(&node, 0);
    // Once the logins are gone, another one is taken again.
    let form = format!("username={}&password={PASSWORD}", account.username);
    let mut http = node.http();
    http.send_raw(format!("{}{form}", login_head(form.len())).as_bytes());
    assert_eq!(http.read_response().api()["code"], CODE_OK);
}

/// An upload slower than one `limits.http_timeout` but faster than
/// `limits.min_body_rate` completes: the body's deadline is its progress.
#[test]
fn a_slow_honest_upload_completes() {
    let node = Node::builder()
        .env("WEIM_LIMITS_HTTP_TIMEOUT", "2s")
        .start();
    let account = node.new_account();
    let (whole, head) = upload_request(&account.token, 640 * 1024);
    let mut http = node.http();
    http.send_raw(&whole[..head]);
    let started = Instant::now();
    // 16 KiB every 100 ms: about 160 KiB/s, 4 s in all.
    for piece in whole[head..].chunks(16 * 1024) {
        std::thread::sleep(Duration::from_millis(100));
        http.send_raw(piece);
    }
    assert!(started.elapsed() > Duration::from_secs(3), "not slow");
    let reply = http.read_response().api();
    assert_eq!(reply["code"], CODE_OK, "{reply}");
    let url = reply["data"]["url"].as_str().unwrap();
    let file = node.get(url.strip_prefix(TEST_BASE_URL).unwrap_or(url));
    assert_eq!(file.status, 200);
    assert_eq!(file.body.len(), 640 * 1024);
}

/// A body trickling in below `limits.min_body_rate` (but never silent for
/// `limits.http_timeout`) is answered 408 and closed once the grace is over.
#[test]
fn a_trickle_below_the_minimum_rate_is_closed() {
    let node = Node::builder()
        .env("WEIM_LIMITS_HTTP_TIMEOUT", "1s")
        .env("WEIM_LIMITS_MIN_BODY_RATE", "32KiB")
        .start();
    let account = node.new_account();
    let mut http = node.http();
    http.send_raw(
        upload_head(&format!("Login-Token: {}\r\n", account.token), 256 * 1024).as_bytes(),
    );
    let started = Instant::now();
    // 1 KiB every 100 ms: 10 KiB/s, until the node answers.
    let mut answered = false;
    for _ in 0..100 {
        if http.try_send_raw(&[b'a'; 1024]).is_err() {
            break;
        }
        http.stream()
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut byte = [0u8; 1];
        if http.stream().peek(&mut byte).is_ok_and(|n| n > 0) {
            answered = true;
            break;
        }
    }
    http.stream().set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    assert!(answered, "no answer within {:?}", started.elapsed());
    http.read_response().assert_error(408);
    assert!(http.wait_closed(Duration::from_secs(10)).is_some());
    assert!(
        node.metrics()
            .value("weim_http_rejected_total{reason=\"too_slow\"}")
            >= 1.0
    );
    assert_eq!(inflight(&node), 0.0);
}

/// `Content-Length` is digits only (RFC 9110): a sign, a list or anything
/// else is a 400.
#[test]
fn content_length_with_a_sign_or_a_list_is_400() {
    let node = Node::start();
    for value in ["+3", "-1", "3, 3", "0x3"] {
        let mut http = node.http();
        http.send_raw(
            format!(
                "POST /api/v1/login HTTP/1.1\r\nHost: {TEST_HOST}\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\n\
                 Content-Length: {value}\r\n\r\na=b"
            )
            .as_bytes(),
        );
        let resp = http.read_response();
        assert_eq!(resp.status, 400, "Content-Length: {value}: {}", resp.text());
        assert!(http.wait_closed(Duration::from_secs(10)).is_some());
    }
    // Written the plain way, the same request is served.
    let mut http = node.http();
    http.send_raw(
        format!(
            "POST /api/v1/login HTTP/1.1\r\nHost: {TEST_HOST}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: 3\r\n\r\na=b"
        )
        .as_bytes(),
    );
    assert_eq!(http.read_response().api()["msg"], MSG_ENTER_USERNAME);
}
