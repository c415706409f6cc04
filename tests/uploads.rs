//! Uploads end to end: `chat/upload` and `user/update/avatar` (PROTOCOL
//! §1.2), the 413 from `Content-Length`, type checks by content and name,
//! files served back with safe headers, and the S3 round trip.

mod common;

use std::io::Read;
use std::time::Duration;

use common::*;
use serde_json::Value;

const PNG: &[u8] =
    b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";
const SVG: &[u8] = b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>";
const HTML: &[u8] = b"<!DOCTYPE html><html><script>alert(1)</script></html>";

fn upload(node: &Node, token: &str, kind: &str, name: &str, data: &[u8]) -> Value {
    node.request(
        &Request::post("/api/v1/im/chat/upload")
            .login_token(token)
            .multipart(&[("type", kind)], &[("file", name, data)]),
    )
    .api()
}

#[track_caller]
fn expect(reply: &Value, code: i64, msg: &str) {
    assert_eq!(reply["code"], code, "{reply}");
    assert_eq!(reply["msg"], msg, "{reply}");
}

/// GET of a URL the gateway returned (`http://<Host>/…`, or a path).
fn fetch(node: &Node, url: &str) -> Response {
    node.get(url.strip_prefix(TEST_BASE_URL).unwrap_or(url))
}

#[test]
fn chat_upload_types_and_serving() {
    let node = Node::start();
    let a = node.new_account();
    let reply = upload(&node, &a.token, "1", "../../me.png", PNG);
    expect(&reply, CODE_OK, "上传成功");
    let url = reply["data"]["url"].as_str().unwrap().to_string();
    // Absolute, from the request's Host (no http.public_url).
    let path = url.strip_prefix(TEST_BASE_URL).unwrap_or_default();
    assert!(
        path.starts_with("/files/img/") && path.ends_with(".png") && !path.contains("me"),
        "{url}"
    );
    let resp = fetch(&node, &url);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, PNG);
    assert_eq!(resp.header("Content-Type"), Some("image/png"));
    assert_eq!(resp.header("X-Content-Type-Options"), Some("nosniff"));
    assert_eq!(resp.header("Content-Disposition"), None);

    for (kind, name, data, msg) in [
        ("1", "a.svg", SVG, "图片格式不受支持"),
        ("1", "a.png", SVG, "图片格式不受支持"),
        ("1", "a.html", HTML, "图片格式不受支持"),
        ("1", "a.png", HTML, "图片格式不受支持"),
        ("1", "a.jpg", PNG, "图片格式不受支持"),
        ("2", "a.mp3", PNG, "语音格式不受支持"),
        ("2", "a.png", PNG, "语音格式不受支持"),
        ("3", "a.mp4", b"ID3\x04\0", "视频格式不受支持"),
    ] {
        expect(&upload(&node, &a.token, kind, name, data), CODE_FAIL, msg);
    }
    expect(
        &upload(&node, &a.token, "2", "v.amr", b"#!AMR\n\x3c"),
        CODE_OK,
        "上传成功",
    );
    expect(
        &upload(&node, &a.token, "3", "v.mp4", b"\0\0\0\x18ftypmp42\0\0\0\0"),
        CODE_OK,
        "上传成功",
    );
    expect(
        &upload(&node, &a.token, "9", "a.png", PNG),
        CODE_FAIL,
        "非法参数",
    );
    expect(
        &upload(&node, &a.token, "1", "a.png", b""),
        CODE_FAIL,
        "请选择文件",
    );
    let none = node.request(
        &Request::post("/api/v1/im/chat/upload")
            .login_token(&a.token)
            .multipart(&[("type", "1")], &[]),
    );
    expect(&none.api(), CODE_FAIL, "请选择文件");
    let form = node.api_as(&a.token, "/api/v1/im/chat/upload", &[("type", "1")]);
    expect(&form, CODE_FAIL, "请选择文件");

    // Any file is accepted as type 6 and served as a download.
    let reply = upload(&node, &a.token, "6", "page.html", HTML);
    expect(&reply, CODE_OK, "上传成功");
    let url = reply["data"]["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{TEST_BASE_URL}/files/file/")),
        "{url}"
    );
    let resp = fetch(&node, url);
    assert_eq!(resp.body, HTML);
    assert_eq!(
        resp.header("Content-Type"),
        Some("application/octet-stream")
    );
    assert_eq!(resp.header("Content-Disposition"), Some("attachment"));
    assert_eq!(resp.header("X-Content-Type-Options"), Some("nosniff"));

    // Nothing else under the prefix is served.
    for path in [
        "/files/../weim.db",
        "/files/img/../../weim.db",
        "/files/jwt_secret",
        "/files/img/00000000000000000000000000000000.png",
        "/files/",
        "/files/file/%2e%2e%2fweim.db",
    ] {
        assert_eq!(fetch(&node, path).status, 404, "{path}");
    }
    expect(
        &upload(&node, "forged", "1", "a.png", PNG),
        CODE_AUTH,
        "鉴权失败",
    );
}

#[test]
fn avatar() {
    let node = Node::start_on(Store::Mysql);
    let a = node.new_account();
    let send = |files: &[(&str, &str, &[u8])]| {
        node.request(
            &Request::post("/api/v1/user/update/avatar")
                .login_token(&a.token)
                .multipart(&[], files),
        )
        .api()
    };
    let reply = send(&[("avatar", "me.png", PNG)]);
    expect(&reply, CODE_OK, "设置成功");
    assert_eq!(reply["data"]["result"], 1);
    let url = reply["data"]["avatar"].as_str().unwrap().to_string();
    assert!(
        url.starts_with(&format!("{TEST_BASE_URL}/files/img/")),
        "{url}"
    );
    assert_eq!(node.me(&a.token)["data"]["user"]["avatar"], url.as_str());
    assert_eq!(fetch(&node, &url).body, PNG);
    expect(&send(&[]), CODE_FAIL, "请选择图片");
    expect(&send(&[("file", "me.png", PNG)]), CODE_FAIL, "请选择图片");
    expect(
        &send(&[("avatar", "me.svg", SVG)]),
        CODE_FAIL,
        "图片格式不受支持",
    );
    expect(
        &send(&[("avatar", "me.png", HTML)]),
        CODE_FAIL,
        "图片格式不受支持",
    );
    let mut big = PNG.to_vec();
    big.resize((2 << 20) + 1, 0);
    expect(&send(&[("avatar", "big.png", &big)]), CODE_FAIL, "文件太大");
    assert_eq!(node.me(&a.token)["data"]["user"]["avatar"], url.as_str());
}

/// `HEAD` on an uploaded file answers the head of its `GET`: 200 with the
/// file's `Content-Length` and type, and no body (the answer to a request
/// pipelined after it follows its head directly).
#[test]
fn head_of_an_uploaded_file() {
    let node = Node::start();
    let a = node.new_account();
    let reply = upload(&node, &a.token, "1", "a.png", PNG);
    expect(&reply, CODE_OK, "上传成功");
    let url = reply["data"]["url"].as_str().unwrap();
    let path = url.strip_prefix(TEST_BASE_URL).unwrap_or(url);
    let mut http = node.http();
    http.send_raw(
        format!(
            "HEAD {path} HTTP/1.1\r\nHost: {TEST_HOST}\r\n\r\n\
             GET /healthz HTTP/1.1\r\nHost: {TEST_HOST}\r\n\r\n"
        )
        .as_bytes(),
    );
    // Read as a 204 would be (no body): the bytes after the head belong
    // to the next answer.
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    let mut stream = http.stream();
    while !raw.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).expect("the HEAD answer"), 1);
        raw.push(byte[0]);
    }
    let head = String::from_utf8(raw).unwrap();
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(
        head.contains(&format!("Content-Length: {}\r\n", PNG.len())),
        "{head}"
    );
    assert!(head.contains("Content-Type: image/png\r\n"), "{head}");
    let next = http.read_response();
    assert_eq!(
        next.status,
        200,
        "not the answer after HEAD: {}",
        next.text()
    );
    assert!(next.text().starts_with("ok"), "{}", next.text());
}

#[test]
fn oversized_bodies_are_refused_from_the_header() {
    let node = Node::builder()
        .env("WEIM_LIMITS_MAX_UPLOAD", "3MiB")
        .start();
    let a = node.new_account();
    for path in ["/api/v1/im/chat/upload", "/api/v1/user/update/avatar"] {
        // Only the head is sent: the answer must not wait for the body.
        let mut http = node.http();
        http.send_raw(
            format!(
                "POST {path} HTTP/1.1\r\nHost: t\r\nLogin-Token: {}\r\nContent-Type: multipart/form-data; boundary=x\r\nContent-Length: {}\r\n\r\n",
                a.token,
                (3 << 20) + 1
            )
            .as_bytes(),
        );
        http.read_response().assert_error(413);
        assert!(http.wait_closed(Duration::from_secs(5)).is_some());
    }
    // Other routes keep limits.max_body (1 MiB).
    let mut http = node.http();
    http.send_raw(
        b"POST /api/v1/user/update/nickname HTTP/1.1\r\nHost: t\r\nContent-Length: 1048577\r\n\r\n",
    );
    http.read_response().assert_error(413);
    // Within the upload limit, a 2.5 MiB file goes through to the handler.
    let mut data = PNG.to_vec();
    data.resize(5 << 19, 7);
    expect(
        &upload(&node, &a.token, "6", "blob.bin", &data),
        CODE_OK,
        "上传成功",
    );
    // A broken multipart body is a 400.
    let bad = node.request(
        &Request::post("/api/v1/im/chat/upload")
            .login_token(&a.token)
            .body("multipart/form-data; boundary=x", b"--x\r\nnope".to_vec()),
    );
    bad.assert_error(400);
}

#[test]
fn s3_round_trip() {
    let Ok(endpoint) = std::env::var("TEST_S3_ENDPOINT") else {
        eprintln!("skipped: TEST_S3_ENDPOINT is not set (scripts/test.sh starts moto and sets it)");
        return;
    };
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let node = Node::builder()
        .env("WEIM_ATTACH_KIND", "s3")
        .env("WEIM_ATTACH_S3_ENDPOINT", &endpoint)
        .env("WEIM_ATTACH_S3_BUCKET", &var("TEST_S3_BUCKET"))
        .env("WEIM_ATTACH_S3_ACCESS_KEY", &var("TEST_S3_ACCESS_KEY"))
        .env("WEIM_ATTACH_S3_SECRET_KEY", &var("TEST_S3_SECRET_KEY"))
        .start();
    let a = node.new_account();
    let reply = upload(&node, &a.token, "1", "cat.png", PNG);
    expect(&reply, CODE_OK, "上传成功");
    let url = reply["data"]["url"].as_str().unwrap();
    let prefix = format!(
        "{}/{}/img/",
        endpoint.trim_end_matches('/'),
        var("TEST_S3_BUCKET")
    );
    assert!(url.starts_with(&prefix) && url.ends_with(".png"), "{url}");
    let key = &url[prefix.len() - "img/".len()..];
    // The gateway fetches it back with a signed GET.
    let resp = fetch(&node, &format!("/files/{key}"));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, PNG);
    assert_eq!(resp.header("Content-Type"), Some("image/png"));
    let reply = upload(&node, &a.token, "6", "notes.txt", b"hello");
    let url = reply["data"]["url"].as_str().unwrap();
    let key = &url[prefix.len() - "img/".len()..];
    assert_eq!(fetch(&node, &format!("/files/{key}")).body, b"hello");

    // A wrong secret is refused by the server (the signature is checked).
    let bad = Node::builder()
        .env("WEIM_ATTACH_KIND", "s3")
        .env("WEIM_ATTACH_S3_ENDPOINT", &endpoint)
        .env("WEIM_ATTACH_S3_BUCKET", &var("TEST_S3_BUCKET"))
        .env("WEIM_ATTACH_S3_ACCESS_KEY", &var("TEST_S3_ACCESS_KEY"))
        .env("WEIM_ATTACH_S3_SECRET_KEY", "not-the-secret")
        .start();
    let b = bad.new_account();
    let resp = bad.request(
        &Request::post("/api/v1/im/chat/upload")
            .login_token(&b.token)
            .multipart(&[("type", "1")], &[("file", "cat.png", PNG)]),
    );
    resp.assert_error(503);
}
