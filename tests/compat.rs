//! Old clients unchanged: the node driven exactly as the clients of the old
//! server drive it — form bodies, the old parameter names, `list[].Id` of
//! `add/reqs` fed back to `add/handle`, no `type` on sends, the old
//! `RequestAt` and `result` values, absolute URLs and default avatars,
//! `GET /`, the CORS headers of browsers, heartbeats and repeated sign-ins
//! answered by silence, one token on many connections, and the
//! `Sec-WebSocket-Protocol` negotiation.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const PNG: &[u8] =
    b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";

/// What the old server answered on `GET /`.
const WELCOME: &str = "欢迎使用";

/// The old clients' WebSocket message: the six keys of the old server's
/// `Message`, as gorilla's `WriteJSON` wrote them.
fn old_frame(cmd: i64, body: &str) -> Value {
    json!({"Cmd": cmd, "FromId": 0, "ToId": 0, "Ope": 0, "Type": 0, "Body": body})
}

/// The next frame with this `Cmd`, skipping (at most 10) others.
#[track_caller]
fn recv_cmd(ws: &mut Ws, cmd: i64) -> Value {
    for _ in 0..10 {
        let frame = ws.recv_json();
        if frame["Cmd"] == cmd {
            return frame;
        }
    }
    panic!("no Cmd {cmd} within 10 frames")
}

/// Signs a socket in as the old test client did (the whole old `Message`).
#[track_caller]
fn old_sign_in(ws: &mut Ws, token: &str) {
    ws.send_json(&old_frame(3, token));
    let reply = ws.recv_json();
    assert_system_frame(&reply, 4);
    assert_eq!(reply["Body"], WS_AUTH_OK, "{reply}");
}

// ---------------------------------------------------------------------------
// Friends and messages
// ---------------------------------------------------------------------------

fn friend_request_id_is_the_requester(store: Store) {
    let node = Node::start_on(store);
    let (a, b) = (node.new_account(), node.new_account());
    let mut ws_a = node.ws();
    old_sign_in(&mut ws_a, &a.token);
    let mut ws_b = node.ws();
    old_sign_in(&mut ws_b, &b.token);

    let before = now_secs();
    let reply = node.api_as(
        &a.token,
        "/api/v1/im/friend/add/request",
        &[
            ("username", &b.username),
            ("channel", "search"),
            ("reason", "hi"),
        ],
    );
    expect_ok(&reply, "成功发送添加请求");
    recv_cmd(&mut ws_b, 8);

    // The old client lists the requests and answers one with its `Id`.
    let reply = node.api_as(&b.token, "/api/v1/im/friend/add/reqs", &[]);
    let list = expect_ok(&reply, "请求成功")["list"].clone();
    let item = &list[0];
    assert_eq!(item["Id"], a.id, "Id is the requester: {item}");
    assert_eq!(item["Uid"], a.id, "{item}");
    assert!(item["ReqId"].as_i64().is_some_and(|id| id > 0), "{item}");
    assert_eq!(item["Username"], a.username.as_str(), "{item}");
    // RequestAt: unix seconds in a string, as the old server scanned its
    // integer column into a string.
    let at = item["RequestAt"]
        .as_str()
        .unwrap_or_else(|| panic!("{item}"));
    assert!(at.bytes().all(|b| b.is_ascii_digit()), "{item}");
    let at: i64 = at.parse().unwrap();
    assert!(at >= before - 1 && at <= now_secs() + 1, "{item}");

    let f_uid = item["Id"].as_i64().unwrap().to_string();
    let reply = node.api_as(
        &b.token,
        "/api/v1/im/friend/add/handle",
        &[("f_uid", &f_uid), ("status", "1")],
    );
    expect_ok(&reply, "处理成功");
    assert_notice(
        &recv_cmd(&mut ws_a, 9),
        9,
        b.id,
        a.id,
        0,
        "对方通过了你的好友请求",
    );
    let reply = node.api_as(&a.token, "/api/v1/im/friend/list", &[]);
    let lists = expect_ok(&reply, "请求成功")["lists"].clone();
    assert_eq!(ids(&lists), vec![b.id], "{lists}");

    // A send without `type` is a text message (type 0), as before.
    let reply = node.api_as(
        &a.token,
        "/api/v1/im/chat/send/user",
        &[("to_uid", &b.id.to_string()), ("body", "hello")],
    );
    let id = expect_ok(&reply, "发送成功")["id"].as_i64().unwrap();
    let push = recv_cmd(&mut ws_b, 6);
    assert_server_frame(&push, 6);
    assert_eq!(
        (&push["Type"], &push["Body"], &push["Id"]),
        (&json!(0), &json!("hello"), &json!(id))
    );
    // A blank type too; a type that is not a number stays refused.
    let reply = node.api_as(
        &a.token,
        "/api/v1/im/chat/send/user",
        &[
            ("to_uid", &b.id.to_string()),
            ("type", ""),
            ("body", "again"),
        ],
    );
    expect_ok(&reply, "发送成功");
    assert_eq!(recv_cmd(&mut ws_b, 6)["Type"], 0);
    let reply = node.api_as(
        &a.token,
        "/api/v1/im/chat/send/user",
        &[
            ("to_uid", &b.id.to_string()),
            ("type", "text"),
            ("body", "x"),
        ],
    );
    expect_fail(&reply, "非法参数");

    // Groups alike.
    let reply = node.api_as(
        &a.token,
        "/api/v1/im/group/create",
        &[("name", &unique_name("g"))],
    );
    let group = expect_ok(&reply, "创建成功")["id"]
        .as_i64()
        .unwrap()
        .to_string();
    let reply = node.api_as(
        &a.token,
        "/api/v1/im/chat/send/group",
        &[("group_id", &group), ("body", "to the group")],
    );
    let data = expect_ok(&reply, "发送成功");
    assert!(data["messageId"].as_i64().is_some(), "{data}");
    let push = recv_cmd(&mut ws_a, 10);
    assert_server_frame(&push, 10);
    assert_eq!(push["Type"], 0, "{push}");
}

// ---------------------------------------------------------------------------
// Profile updates
// ---------------------------------------------------------------------------

fn profile_updates_answer_the_rows_changed(store: Store) {
    let node = Node::start_on(store);
    let a = node.new_account();
    let nickname = |name: &str| {
        let reply = node.api_as(
            &a.token,
            "/api/v1/user/update/nickname",
            &[("nickname", name)],
        );
        expect_ok(&reply, "设置成功")["result"].clone()
    };
    assert_eq!(nickname("newname1"), 1);
    assert_eq!(nickname("newname1"), 0, "the same nickname changes no row");
    assert_eq!(nickname("newname2"), 1);

    let reply = node.api_as(
        &a.token,
        "/api/v1/user/update/location",
        &[("longitude", "116.40"), ("latitude", "39.90")],
    );
    assert_eq!(expect_ok(&reply, "更新位置成功")["result"], 1, "{reply}");

    let reply = node
        .request(
            &Request::post("/api/v1/user/update/avatar")
                .login_token(&a.token)
                .multipart(&[], &[("avatar", "me.png", PNG)]),
        )
        .api();
    assert_eq!(expect_ok(&reply, "设置成功")["result"], 1, "{reply}");
}

// ---------------------------------------------------------------------------
// URLs and avatars
// ---------------------------------------------------------------------------

/// Uploads a picture as the old client did; its `url`.
fn upload(node: &Node, token: &str, host: Option<&str>) -> String {
    let mut req = Request::post("/api/v1/im/chat/upload")
        .login_token(token)
        .multipart(&[("type", "1")], &[("file", "cat.png", PNG)]);
    if let Some(host) = host {
        req = req.header("Host", host);
    }
    let reply = node.request(&req).api();
    expect_ok(&reply, "上传成功")["url"]
        .as_str()
        .unwrap_or_else(|| panic!("{reply}"))
        .to_string()
}

/// The avatar of `user/update/avatar`'s answer.
fn set_avatar(node: &Node, token: &str) -> String {
    let reply = node
        .request(
            &Request::post("/api/v1/user/update/avatar")
                .login_token(token)
                .multipart(&[], &[("avatar", "me.png", PNG)]),
        )
        .api();
    expect_ok(&reply, "设置成功")["avatar"]
        .as_str()
        .unwrap_or_else(|| panic!("{reply}"))
        .to_string()
}

#[test]
fn urls_are_absolute_from_the_host_header() {
    let node = Node::start_on(Store::Mysql);
    let reply = node.register_raw(&unique_name("u"), PASSWORD);
    // A new user has the default avatar, absolute, and it is served.
    assert_eq!(
        reply["data"]["user"]["avatar"], DEFAULT_AVATAR_URL,
        "{reply}"
    );
    let a = Account::from_sign_in(reply["data"]["user"]["username"].as_str().unwrap(), &reply);
    let resp = node.get("/public/avatar/default.png");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("Content-Type"), Some("image/png"));
    assert!(resp.body.starts_with(b"\x89PNG\r\n\x1a\n"));

    let url = upload(&node, &a.token, None);
    let path = url
        .strip_prefix(TEST_BASE_URL)
        .unwrap_or_else(|| panic!("{url}"));
    assert!(path.starts_with("/files/img/"), "{url}");
    assert_eq!(node.get(path).body, PNG);
    // Another Host, another base.
    let url = upload(&node, &a.token, Some("im.local:8080"));
    assert!(url.starts_with("http://im.local:8080/files/img/"), "{url}");

    let avatar = set_avatar(&node, &a.token);
    assert!(
        avatar.starts_with(&format!("{TEST_BASE_URL}/files/img/")),
        "{avatar}"
    );
    assert_eq!(node.me(&a.token)["data"]["user"]["avatar"], avatar.as_str());
    // The store keeps the path relative.
    let stored: String = {
        use mysql::prelude::Queryable;
        let mut conn = mysql::Conn::new(mysql::Opts::from_url(&mysql_url()).unwrap()).unwrap();
        conn.exec_first("SELECT avatar FROM users WHERE id = ?", (a.id,))
            .unwrap()
            .unwrap()
    };
    assert_eq!(format!("{TEST_BASE_URL}{stored}"), avatar);

    // Without a Host (HTTP/1.0) there is nothing to complete from: relative.
    let mut http = node.http();
    http.send_raw(
        format!(
            "POST /api/v1/user/me HTTP/1.0\r\nLogin-Token: {}\r\nContent-Length: 0\r\n\r\n",
            a.token
        )
        .as_bytes(),
    );
    let reply = http.read_response().api();
    assert_eq!(reply["data"]["user"]["avatar"], stored.as_str(), "{reply}");
}

#[test]
fn urls_are_absolute_from_public_url() {
    let node = Node::builder()
        .env("WEIM_HTTP_PUBLIC_URL", "https://im.example.com/")
        .start();
    let (a, b) = (node.new_account(), node.new_account());
    let default = "https://im.example.com/public/avatar/default.png";
    assert_eq!(node.me(&a.token)["data"]["user"]["avatar"], default);
    let url = upload(&node, &a.token, Some("ignored.example"));
    assert!(
        url.starts_with("https://im.example.com/files/img/"),
        "{url}"
    );
    let avatar = set_avatar(&node, &a.token);
    assert!(
        avatar.starts_with("https://im.example.com/files/img/"),
        "{avatar}"
    );

    // Lists carry the absolute avatars and the default alike.
    let reply = node.api_as(
        &b.token,
        "/api/v1/im/friend/search",
        &[("word", &a.username)],
    );
    assert_eq!(
        expect_ok(&reply, "请求成功")["list"][0]["Avatar"],
        avatar.as_str()
    );
    let reply = node.api_as(
        &a.token,
        "/api/v1/im/friend/search",
        &[("word", &b.username)],
    );
    assert_eq!(expect_ok(&reply, "请求成功")["list"][0]["Avatar"], default);
    let reply = node.api_as(&b.token, "/api/v1/user/info", &[("id", &a.id.to_string())]);
    assert_eq!(
        expect_ok(&reply, "请求成功")["user"]["avatar"],
        avatar.as_str()
    );
}

#[test]
fn default_avatar_is_configurable() {
    let node = Node::builder()
        .env(
            "WEIM_USER_DEFAULT_AVATAR",
            "https://cdn.example.com/nobody.png",
        )
        .start();
    let a = node.new_account();
    assert_eq!(
        node.me(&a.token)["data"]["user"]["avatar"],
        "https://cdn.example.com/nobody.png"
    );
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

#[test]
fn get_root_answers_the_old_welcome() {
    let node = Node::start();
    let resp = node.get("/");
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.json(),
        json!({"code": 0, "msg": WELCOME, "data": null}),
        "{}",
        resp.text()
    );
    // Clients that do not ask for HTML keep it; a browser gets the web app
    // (tests/browser.rs), unless `http.web` is off.
    let resp = node.request(&Request::get("/").header("Accept", "application/json, */*"));
    assert_eq!(resp.json()["msg"], WELCOME);
    let node = Node::builder().env("WEIM_HTTP_WEB", "false").start();
    let resp = node.request(&Request::get("/").header("Accept", "text/html,*/*;q=0.8"));
    assert_eq!(resp.json()["msg"], WELCOME);
}

#[track_caller]
fn header_lists(resp: &Response, name: &str, wanted: &[&str]) {
    let value = resp
        .header(name)
        .unwrap_or_else(|| panic!("no {name}: {resp:?}"))
        .to_ascii_lowercase();
    let items: Vec<&str> = value.split(',').map(str::trim).collect();
    for w in wanted {
        assert!(
            items.contains(&w.to_ascii_lowercase().as_str()),
            "{name} lacks {w}: {value}"
        );
    }
}

#[test]
fn cors_preflight_allows_the_old_headers() {
    let node = Node::start();
    let resp = node.request(
        &Request::new("OPTIONS", "/api/v1/user/me")
            .header("Origin", "https://app.example.com")
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization, accesstoken, x-csrf-token, login-token, content-type",
            ),
    );
    assert_eq!(resp.status, 204, "{resp:?}");
    assert_eq!(resp.header("Access-Control-Allow-Origin"), Some("*"));
    header_lists(
        &resp,
        "Access-Control-Allow-Methods",
        &["POST", "GET", "OPTIONS"],
    );
    header_lists(
        &resp,
        "Access-Control-Allow-Headers",
        &[
            "Content-Type",
            "AccessToken",
            "X-CSRF-Token",
            "Authorization",
            "Login-Token",
        ],
    );

    // The answer itself exposes what the old server exposed.
    let resp = node.request(
        &Request::post("/api/v1/login")
            .header("Origin", "https://app.example.com")
            .form(&[("username", "nobody00"), ("password", PASSWORD)]),
    );
    assert_eq!(resp.header("Access-Control-Allow-Origin"), Some("*"));
    header_lists(
        &resp,
        "Access-Control-Expose-Headers",
        &[
            "Content-Length",
            "Access-Control-Allow-Origin",
            "Access-Control-Allow-Headers",
            "Content-Type",
        ],
    );
}

// ---------------------------------------------------------------------------
// WebSocket
// ---------------------------------------------------------------------------

#[test]
fn heartbeats_and_a_repeated_sign_in_are_silent() {
    let node = Node::start();
    let (a, b) = (node.new_account(), node.new_account());
    let mut ws = node.ws();
    // Before the sign-in the old answer stays.
    ws.send_json(&old_frame(0, ""));
    let reply = ws.recv_json();
    assert_system_frame(&reply, 2);
    assert_eq!(reply["Body"], WS_NOT_SIGNED_IN, "{reply}");

    old_sign_in(&mut ws, &a.token);
    for heartbeat in [
        old_frame(0, ""),
        old_frame(1, "ping"),
        json!({"Cmd": 1}),
        json!({}),
        json!({"type": "ping"}),
        old_frame(3, &a.token),
        old_frame(3, &b.token),
        old_frame(3, "garbage"),
    ] {
        ws.send_json(&heartbeat);
    }
    ws.expect_silence(QUIET);

    // Still signed in as a, and served.
    ws.send_json(&json!({"Cmd": 30}));
    assert_system_frame(&ws.recv_json(), 31);
    assert_eq!(node.send_to_all(Some("still here")), 1);
    let push = ws.recv_json();
    assert_server_frame(&push, -1);
    assert_eq!(push["Body"], "still here");
    let status = node.status();
    assert_eq!(status["authenticated"], 1, "{status}");
    assert_eq!(status["users"], 1, "{status}");
}

#[test]
fn one_token_on_many_connections_all_kept_by_default() {
    // The old load test signs one token in on every connection.
    const CONNS: usize = 50;
    let node = Node::start();
    let a = node.new_account();
    let mut conns: Vec<Ws> = (0..CONNS)
        .map(|_| {
            let mut ws = node.ws();
            old_sign_in(&mut ws, &a.token);
            ws
        })
        .collect();
    assert!(wait_until(Duration::from_secs(5), || {
        node.status()["authenticated"] == CONNS
    }));
    assert_eq!(node.send_to_all(Some("to all")), CONNS as i64);
    for ws in &mut conns {
        let push = ws.recv_json();
        assert_server_frame(&push, -1);
        assert_eq!(push["Body"], "to all", "{push}");
    }
    // None was closed for another.
    for ws in &mut conns {
        ws.send_json(&json!({"Cmd": 30}));
        assert_system_frame(&ws.recv_json(), 31);
    }
}

/// The 101 answer to a handshake offering `protocols` (one header each).
fn handshake(addr: SocketAddr, protocols: &[&str]) -> Response {
    let mut req = ws_handshake("dGhlIHNhbXBsZSBub25jZQ==");
    for p in protocols {
        req = req.header("Sec-WebSocket-Protocol", p);
    }
    let resp = Http::connect(addr).request(&req);
    assert_eq!(resp.status, 101, "{resp:?}");
    resp
}

#[test]
fn subprotocol_weim_v1_is_selected_only_when_offered() {
    let node = Node::start();
    let a = node.new_account();
    for offered in [&["weim.v1"][..], &["chat, weim.v1"], &["chat", "weim.v1"]] {
        let resp = handshake(node.addr, offered);
        assert_eq!(
            resp.header("Sec-WebSocket-Protocol"),
            Some("weim.v1"),
            "{offered:?}: {resp:?}"
        );
    }
    for offered in [&[][..], &["chat"], &["chat, mqtt"], &["WEIM.V1"]] {
        let resp = handshake(node.addr, offered);
        assert_eq!(
            resp.header("Sec-WebSocket-Protocol"),
            None,
            "{offered:?}: {resp:?}"
        );
    }

    // A client library offering it accepts the answer, and signs in.
    use tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{}/ws", node.addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "weim.v1".parse().unwrap());
    let (mut ws, resp) = tungstenite::client(request, tcp_connect(node.addr)).unwrap();
    assert_eq!(
        resp.headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.to_str().unwrap()),
        Some("weim.v1")
    );
    ws.send(tungstenite::Message::text(
        json!({"Cmd": 3, "Body": a.token}).to_string(),
    ))
    .unwrap();
    let reply: Value = match ws.read().unwrap() {
        tungstenite::Message::Text(t) => serde_json::from_str(t.as_str()).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_system_frame(&reply, 4);
    // And one offering nothing is unaffected (the harness's client).
    let mut plain = node.ws();
    old_sign_in(&mut plain, &a.token);
}

on_both_stores!(
    friend_request_id_is_the_requester,
    profile_updates_answer_the_rows_changed,
);
