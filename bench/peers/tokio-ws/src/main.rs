//! `peer-tokio-ws`: a broadcast server for the weim benchmarks on
//! tokio-tungstenite, written the way its `examples/server.rs` broadcasts:
//! a shared map of per-connection unbounded channels, the read half and the
//! channel forwarded into the write half, selected against each other.
//!
//! It speaks the minimal part of weim's protocol that `weim-load` uses:
//! `GET /ws`, sign-in with `Cmd 3` → `Cmd 4` (HS256 token checked with
//! `JWT_SECRET` when set), and `POST /ws/sendToAll` → `Cmd -1` to every
//! signed-in connection. The HTTP request is told apart from the upgrade by
//! peeking at its first bytes; `sendToAll` is parsed by hand (`httparse`)
//! and answered with `Connection: close`.
//!
//! usage: `peer-tokio-ws [ADDR] [--read-buffer BYTES]` (ADDR defaults to
//! `$LISTEN`, else 127.0.0.1:8080). `--read-buffer` sets tungstenite's
//! `read_buffer_size` and `write_buffer_size`; without it the default
//! `WebSocketConfig` is used. `ADMIN_TOKEN` defaults to `bench`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use futures_channel::mpsc::{unbounded, UnboundedSender};
use futures_util::{future, pin_mut, SinkExt, StreamExt, TryStreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::{Message, WebSocketConfig};

type Tx = UnboundedSender<Message>;
type PeerMap = Arc<Mutex<HashMap<SocketAddr, Tx>>>;

struct Settings {
    config: Option<WebSocketConfig>,
    secret: Option<jsonwebtoken::DecodingKey>,
    admin_token: String,
}

#[derive(serde::Deserialize)]
struct ClientMsg {
    #[serde(rename = "Cmd", alias = "cmd")]
    cmd: serde_json::Value,
    #[serde(rename = "Body", alias = "body", default)]
    body: String,
}

#[derive(serde::Deserialize)]
struct Claims {
    id: i64,
}

#[derive(serde::Serialize)]
#[allow(non_snake_case)]
struct Frame<'a> {
    Cmd: i64,
    FromId: i64,
    ToId: i64,
    Ope: i64,
    Type: i64,
    Body: &'a str,
    Id: i64,
    Time: u128,
}

fn frame(cmd: i64, ope: i64, typ: i64, body: &str) -> String {
    let time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let f = Frame {
        Cmd: cmd,
        FromId: 0,
        ToId: 0,
        Ope: ope,
        Type: typ,
        Body: body,
        Id: 0,
        Time: time,
    };
    serde_json::to_string(&f).unwrap_or_default()
}

/// The answer to a sign-in attempt: `Ok` with `Cmd 4`, else a `Cmd 2`.
fn sign_in(settings: &Settings, text: &str) -> Result<String, String> {
    let Ok(m) = serde_json::from_str::<ClientMsg>(text) else {
        return Err(frame(2, 2, 10, "消息格式错误"));
    };
    let cmd = match &m.cmd {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    };
    if cmd != Some(3) {
        return Err(frame(2, 2, 10, "你还未认证"));
    }
    if let Some(key) = &settings.secret {
        let validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        match jsonwebtoken::decode::<Claims>(&m.body, key, &validation) {
            Ok(t) if t.claims.id > 0 => {}
            _ => return Err(frame(2, 2, 10, "认证失败")),
        }
    }
    Ok(frame(4, 2, 10, "认证成功"))
}

async fn handle_connection(
    settings: Arc<Settings>,
    peer_map: PeerMap,
    raw_stream: TcpStream,
    addr: SocketAddr,
) {
    let Ok(mut ws_stream) =
        tokio_tungstenite::accept_async_with_config(raw_stream, settings.config).await
    else {
        return;
    };

    // Sign-in first; only a signed-in connection joins the peer map.
    loop {
        match ws_stream.next().await {
            Some(Ok(Message::Text(text))) => match sign_in(&settings, text.as_str()) {
                Ok(ok) => {
                    if ws_stream.send(Message::text(ok)).await.is_err() {
                        return;
                    }
                    break;
                }
                Err(no) => {
                    if ws_stream.send(Message::text(no)).await.is_err() {
                        return;
                    }
                }
            },
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
            Some(Ok(_)) => {}
        }
    }

    // Insert the write part of this peer to the peer map.
    let (tx, rx) = unbounded();
    peer_map.lock().unwrap().insert(addr, tx);

    let (outgoing, incoming) = ws_stream.split();

    // Nothing the client sends after sign-in is broadcast here; reading
    // keeps pings answered and notices the close.
    let read_incoming = incoming.try_for_each(|_msg| future::ok(()));
    let receive_from_others = rx.map(Ok).forward(outgoing);

    pin_mut!(read_incoming, receive_from_others);
    future::select(read_incoming, receive_from_others).await;

    peer_map.lock().unwrap().remove(&addr);
}

fn http_reply(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Reads one HTTP request by hand and answers `POST /ws/sendToAll`.
async fn handle_http(settings: Arc<Settings>, peer_map: PeerMap, mut stream: TcpStream) {
    const MAX_REQUEST: usize = 4 << 20;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 64 * 1024];
    let (head_len, content_length, path, token) = loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let find = |name: &str| {
                    req.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
                };
                let length = find("content-length")
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                break (
                    len,
                    length,
                    req.path.unwrap_or("").to_string(),
                    find("admin-token"),
                );
            }
            Ok(httparse::Status::Partial) if buf.len() < 64 * 1024 => {}
            _ => {
                let _ = stream
                    .write_all(&http_reply(
                        "400 Bad Request",
                        r#"{"code":1000,"msg":"bad request","data":null}"#,
                    ))
                    .await;
                return;
            }
        }
    };
    if content_length > MAX_REQUEST {
        let _ = stream
            .write_all(&http_reply(
                "413 Payload Too Large",
                r#"{"code":1000,"msg":"too large","data":null}"#,
            ))
            .await;
        return;
    }
    while buf.len() < head_len + content_length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let reply = if path.split('?').next() != Some("/ws/sendToAll") {
        http_reply(
            "404 Not Found",
            r#"{"code":1002,"msg":"not found","data":null}"#,
        )
    } else if token.as_deref() != Some(settings.admin_token.as_str()) {
        http_reply("200 OK", r#"{"code":1001,"msg":"鉴权失败","data":null}"#)
    } else {
        let form = &buf[head_len..head_len + content_length];
        let body = form_urlencoded::parse(form)
            .find(|(k, _)| k == "body")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_else(|| "测试消息收发".to_string());
        let msg = Message::text(frame(-1, 0, 0, &body));
        let mut n = 0;
        for tx in peer_map.lock().unwrap().values() {
            if tx.unbounded_send(msg.clone()).is_ok() {
                n += 1;
            }
        }
        http_reply(
            "200 OK",
            &format!(r#"{{"code":0,"msg":"ok","data":{{"local":{n}}}}}"#),
        )
    };
    let _ = stream.write_all(&reply).await;
    let _ = stream.shutdown().await;
}

/// Tells a plain HTTP request (`POST …`) from the WebSocket upgrade
/// (`GET /ws`) by its first bytes, without consuming them.
async fn dispatch(settings: Arc<Settings>, peer_map: PeerMap, stream: TcpStream, addr: SocketAddr) {
    let mut first = [0u8; 5];
    let mut tries = 0;
    loop {
        match stream.peek(&mut first).await {
            Ok(0) | Err(_) => return,
            Ok(n) if n >= 5 => break,
            Ok(_) if tries < 1000 => {
                tries += 1;
                tokio::task::yield_now().await;
            }
            Ok(_) => return,
        }
    }
    if &first == b"POST " {
        handle_http(settings, peer_map, stream).await
    } else {
        handle_connection(settings, peer_map, stream, addr).await
    }
}

fn usage() -> ! {
    eprintln!("usage: peer-tokio-ws [ADDR] [--read-buffer BYTES]");
    std::process::exit(2)
}

fn main() {
    let mut addr = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let mut config = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--read-buffer" {
            let n: usize = args
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| usage());
            config = Some(
                WebSocketConfig::default()
                    .read_buffer_size(n)
                    .write_buffer_size(n),
            );
        } else if a.starts_with('-') {
            usage();
        } else {
            addr = a;
        }
    }
    let addr: SocketAddr = addr.parse().unwrap_or_else(|_| usage());
    let secret = std::env::var("JWT_SECRET").unwrap_or_default();
    let settings = Arc::new(Settings {
        config,
        secret: (!secret.is_empty())
            .then(|| jsonwebtoken::DecodingKey::from_secret(secret.as_bytes())),
        admin_token: std::env::var("ADMIN_TOKEN").unwrap_or_else(|_| "bench".into()),
    });

    // One worker per CPU this process may run on (one when pinned).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_io()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket.bind(addr).expect("bind");
        // The same backlog as weim's listener.
        let listener = socket.listen(4096).expect("listen");
        println!(
            "listening on {}",
            listener.local_addr().expect("local_addr")
        );
        let state = PeerMap::new(Mutex::new(HashMap::new()));
        // Let's spawn the handling of each connection in a separate task.
        while let Ok((stream, addr)) = listener.accept().await {
            tokio::spawn(dispatch(settings.clone(), state.clone(), stream, addr));
        }
    });
}
