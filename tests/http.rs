//! HTTP/1.1 on weim's port: keep-alive, pipelining, limits and errors
//! (issue 2 point 4, PROTOCOL §1.1 and §1.4).

mod common;

use std::time::Duration;

use common::*;

#[test]
fn healthz_answers_200_ok() {
    let node = Node::start();
    let resp = node.get("/healthz");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text().trim(), "ok");
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let node = Node::start();
    let mut http = node.http();

    let resp = http.request(&Request::get("/healthz"));
    assert_eq!(resp.status, 200);

    let reply = http
        .request(&Request::post("/api/v1/login").form(&[]))
        .api();
    assert_eq!(reply["code"], CODE_FAIL);
    assert_eq!(reply["msg"], MSG_ENTER_USERNAME);

    // Errors answered with an envelope keep the connection too.
    let resp = http.request(&Request::get("/no/such/route"));
    assert_eq!(resp.status, 404);
    let resp = http.request(&Request::get("/api/v1/login"));
    assert_eq!(resp.status, 405);

    let resp = http.request(&Request::get("/healthz"));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text().trim(), "ok");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let node = Node::start();
    let mut http = node.http();

    // Three requests in one write: a worker job, an inline answer and
    // another worker job. The answers come back in request order.
    let mut bytes = Request::post("/api/v1/login").form(&[]).to_bytes();
    bytes.extend(Request::get("/healthz").to_bytes());
    bytes.extend(
        Request::post("/api/v1/register")
            .json(&serde_json::json!({"username": "abc", "password": PASSWORD}))
            .to_bytes(),
    );
    bytes.extend(Request::get("/no/such/route").to_bytes());
    http.send_raw(&bytes);

    let first = http.read_response().api();
    assert_eq!(first["msg"], MSG_ENTER_USERNAME, "{first}");
    let second = http.read_response();
    assert_eq!(second.status, 200);
    assert_eq!(second.text().trim(), "ok");
    let third = http.read_response().api();
    assert_eq!(third["msg"], MSG_USERNAME_LENGTH, "{third}");
    let fourth = http.read_response();
    assert_eq!(fourth.status, 404);
}

#[test]
fn connection_close_request_ends_the_connection_after_the_answer() {
    let node = Node::start();
    let mut http = node.http();
    let resp = http.request(&Request::get("/healthz").header("Connection", "close"));
    assert_eq!(resp.status, 200);
    assert!(
        http.wait_closed(Duration::from_secs(5)).is_some(),
        "connection still open after `Connection: close`"
    );
}

#[test]
fn unknown_path_is_404_with_envelope_code_1002() {
    let node = Node::start();
    for req in [
        Request::get("/no/such/route"),
        Request::post("/api/v1/no/such/route").form(&[]),
    ] {
        let resp = node.request(&req);
        let reply = resp.assert_error(404);
        assert_eq!(reply["code"], CODE_NOT_FOUND, "{reply}");
    }
}

#[test]
fn get_on_a_post_route_is_405() {
    let node = Node::start();
    node.get("/api/v1/login").assert_error(405);
    node.get("/api/v1/register").assert_error(405);
}

#[test]
fn options_is_204_for_cors_preflight() {
    let node = Node::start();
    let resp = node.request(
        &Request::new("OPTIONS", "/api/v1/login")
            .header("Origin", "http://app.example")
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "Login-Token"),
    );
    assert_eq!(resp.status, 204, "{resp:?}");
    assert!(resp.body.is_empty());
    assert!(
        resp.header("Access-Control-Allow-Origin").is_some(),
        "no Access-Control-Allow-Origin: {resp:?}"
    );
}

#[test]
fn chunked_request_body_is_refused_with_411() {
    let node = Node::start();
    let mut http = node.http();
    http.send_raw(
        b"POST /api/v1/login HTTP/1.1\r\n\
          Host: weim.test\r\n\
          Content-Type: application/x-www-form-urlencoded\r\n\
          Transfer-Encoding: chunked\r\n\
          \r\n\
          9\r\nusername=\r\n0\r\n\r\n",
    );
    let resp = http.read_response();
    assert_eq!(resp.status, 411, "{:?}", resp.text());
}

#[test]
fn headers_over_8_kib_are_refused_with_431() {
    let node = Node::start();
    let resp = node.request(&Request::get("/healthz").header("X-Fill", &"a".repeat(9 * 1024)));
    resp.assert_error(431);

    // Several headers count together (12 of 800 bytes, each one small).
    let mut req = Request::get("/healthz");
    for i in 0..12 {
        req = req.header(&format!("X-Fill-{i}"), &"b".repeat(800));
    }
    node.request(&req).assert_error(431);
}

#[test]
fn headers_well_under_8_kib_are_accepted() {
    let node = Node::start();
    let resp = node.request(&Request::get("/healthz").header("X-Fill", &"a".repeat(6 * 1024)));
    assert_eq!(resp.status, 200);
}

#[test]
fn body_up_to_max_body_is_accepted_and_one_byte_more_is_413() {
    let node = Node::builder().env("WEIM_LIMITS_MAX_BODY", "4KiB").start();

    // Exactly 4096 bytes of form body: served (as a validation failure).
    let prefix = "username=&password=&pad=";
    let body = format!("{prefix}{}", "x".repeat(4096 - prefix.len()));
    assert_eq!(body.len(), 4096);
    let reply = node
        .request(
            &Request::post("/api/v1/login")
                .body("application/x-www-form-urlencoded", body.into_bytes()),
        )
        .api();
    assert_eq!(reply["msg"], MSG_ENTER_USERNAME, "{reply}");

    // 4097 announced: refused from the headers alone, then the connection
    // is closed.
    let mut http = node.http();
    http.send_raw(
        b"POST /api/v1/login HTTP/1.1\r\n\
          Host: weim.test\r\n\
          Content-Type: application/x-www-form-urlencoded\r\n\
          Content-Length: 4097\r\n\
          \r\n",
    );
    http.read_response().assert_error(413);
    assert!(
        http.wait_closed(Duration::from_secs(5)).is_some(),
        "connection still open after 413"
    );
}

#[test]
fn huge_content_length_is_413() {
    let node = Node::start();
    let mut http = node.http();
    http.send_raw(
        b"POST /api/v1/login HTTP/1.1\r\n\
          Host: weim.test\r\n\
          Content-Length: 18446744073709551615\r\n\
          \r\n",
    );
    let resp = http.read_response();
    assert!(
        resp.status == 413 || resp.status == 400,
        "status {} for a 2^64-1 Content-Length",
        resp.status
    );
}

#[test]
fn malformed_request_line_is_400() {
    let node = Node::start();
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /healthz\r\n\r\n",
        b"GET /healthz HTTX/1.1\r\nHost: weim.test\r\n\r\n",
        b"\x00\x01\x02\x03 / HTTP/1.1\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nNo colon in this header\r\n\r\n",
    ] {
        let mut http = node.http();
        http.send_raw(garbage);
        let resp = http
            .try_read_response()
            .unwrap_or_else(|e| panic!("no answer to {:?}: {e}", String::from_utf8_lossy(garbage)));
        assert_eq!(
            resp.status,
            400,
            "answer to {:?}: {:?}",
            String::from_utf8_lossy(garbage),
            resp.text()
        );
    }
    // The node still serves.
    assert_eq!(node.get("/healthz").status, 200);
}

#[test]
fn stalled_partial_request_is_closed_after_http_timeout() {
    let node = Node::builder()
        .env("WEIM_LIMITS_HTTP_TIMEOUT", "500ms")
        .start();

    // Headers that never end.
    let mut http = node.http();
    http.send_raw(b"GET /healthz HTTP/1.1\r\nHost: weim.test\r\n");
    let took = http
        .wait_closed(Duration::from_secs(5))
        .expect("partial headers: still open after 5 s");
    assert!(took >= Duration::from_millis(300), "closed after {took:?}");

    // A body that stops short of its Content-Length.
    let mut http = node.http();
    http.send_raw(
        b"POST /api/v1/login HTTP/1.1\r\nHost: weim.test\r\nContent-Length: 100\r\n\r\nusername=",
    );
    http.wait_closed(Duration::from_secs(5))
        .expect("partial body: still open after 5 s");

    // The node still serves.
    assert_eq!(node.get("/healthz").status, 200);
}

#[test]
fn trickled_request_is_closed_by_the_same_deadline() {
    let node = Node::builder()
        .env("WEIM_LIMITS_HTTP_TIMEOUT", "500ms")
        .start();
    let mut http = node.http();
    // One byte every 100 ms: the request never completes within the
    // deadline even though the client is never silent for 500 ms.
    let request = b"GET /healthz HTTP/1.1\r\nHost: weim.test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let start = std::time::Instant::now();
    let mut closed = false;
    for byte in request.iter().take(50) {
        if http.try_send_raw(&[*byte]).is_err() {
            closed = true;
            break;
        }
        if http.wait_closed(Duration::from_millis(100)).is_some() {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "trickling client still connected after {:?}",
        start.elapsed()
    );
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "closed after {:?}",
        start.elapsed()
    );
}

#[test]
fn api_answers_are_json_envelopes() {
    let node = Node::start();
    let resp = node.request(&Request::post("/api/v1/login").form(&[]));
    assert_eq!(resp.status, 200);
    assert!(
        resp.header("Content-Type")
            .is_some_and(|v| v.starts_with("application/json")),
        "Content-Type: {resp:?}"
    );
    let reply = resp.envelope();
    assert_eq!(reply["code"], CODE_FAIL);
}
