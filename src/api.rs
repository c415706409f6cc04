//! REST handlers, run on workers: routing of `/api/v1/*` (accounts and
//! sign-in for now) and of the operations routes (`/healthz`, `/metrics`,
//! `/ws/status`, `/ws/sendToAll`), the `Login-Token` and `Admin-Token`
//! checks, CORS, and the `{code,msg,data}` answers of PROTOCOL §1.

use std::time::Duration;

use serde_json::{json, Value};

use crate::auth::{self, TokenError};
use crate::http::{Params, Request, Response};
use crate::message::Push;
use crate::node::Shared;
use crate::store::{StoreError, User};

/// Success.
const OK: i32 = 0;
/// Validation or business-rule failure.
const FAIL: i32 = 1000;
/// Authentication failure.
const AUTH_FAIL: i32 = 1001;

/// The signed-in caller of an authenticated endpoint.
struct Caller {
    uid: u64,
    token: String,
    exp: i64,
}

type Public = fn(&Shared, &Request, &Params) -> Response;
type Authed = fn(&Shared, &Caller, &Params) -> Response;

enum Route {
    Public(Public),
    /// An authenticated handler; `true` adds a refreshed token as `data.t`.
    Authed(Authed, bool),
}

/// `/api/v1/<path>` handlers; every one is `POST`.
const ROUTES: &[(&str, Route)] = &[
    ("register", Route::Public(register)),
    ("login", Route::Public(login)),
    ("logout", Route::Authed(logout, false)),
    ("user/me", Route::Authed(me, true)),
];

/// Answers one request.
pub fn handle(node: &Shared, req: &Request) -> Response {
    let mut resp = route(node, req);
    let origins = &node.config.http.cors_origins;
    let allowed = if origins.iter().any(|o| o == "*") {
        Some("*".to_string())
    } else {
        req.header("origin")
            .filter(|o| origins.iter().any(|a| a == o))
            .map(str::to_string)
    };
    if let Some(origin) = allowed {
        resp.headers.push(("Access-Control-Allow-Origin", origin));
        resp.headers.push(("Vary", "Origin".to_string()));
    }
    resp
}

fn route(node: &Shared, req: &Request) -> Response {
    if req.method == "OPTIONS" {
        let mut resp = Response::text(204, "");
        resp.headers
            .push(("Access-Control-Allow-Methods", "GET, POST, OPTIONS".into()));
        resp.headers.push((
            "Access-Control-Allow-Headers",
            "Content-Type, Login-Token, Admin-Token".into(),
        ));
        resp.headers
            .push(("Access-Control-Max-Age", "86400".into()));
        return resp;
    }
    let get = req.method == "GET";
    match req.path.as_str() {
        "/healthz" if get => healthz(node),
        "/metrics" if get => Response {
            content_type: "text/plain; version=0.0.4",
            ..Response::text(
                200,
                node.metrics.render(
                    node.jobs.len(),
                    node.draining.load(std::sync::atomic::Ordering::Relaxed),
                ),
            )
        },
        "/ws/status" if get => admin(node, req, ws_status),
        "/ws/sendToAll" if get || req.method == "POST" => admin(node, req, send_to_all),
        "/healthz" | "/metrics" | "/ws/status" | "/ws/sendToAll" | "/ws" => Response::error(405),
        path => match path
            .strip_prefix("/api/v1/")
            .and_then(|p| ROUTES.iter().find(|(n, _)| *n == p))
        {
            None => Response::error(404),
            Some(_) if req.method != "POST" => Response::error(405),
            Some((_, handler)) => api(node, req, handler),
        },
    }
}

fn api(node: &Shared, req: &Request, handler: &Route) -> Response {
    let Some(params) = req.params() else {
        return Response::envelope(400, FAIL, "非法参数", Value::Null);
    };
    match handler {
        Route::Public(f) => f(node, req, &params),
        Route::Authed(f, refresh) => {
            let token = req.header("login-token").unwrap_or("").trim();
            let claims = match node.tokens.verify(token) {
                Ok(c) => c,
                Err(TokenError::Expired) => {
                    return fail_with(AUTH_FAIL, "登录状态已过期，请重新登录")
                }
                Err(TokenError::Invalid) => return fail_with(AUTH_FAIL, "鉴权失败"),
            };
            let caller = Caller {
                uid: claims.id,
                token: token.to_string(),
                exp: claims.exp,
            };
            let resp = f(node, &caller, &params);
            if *refresh {
                with_token(resp, &node.tokens.issue(caller.uid))
            } else {
                resp
            }
        }
    }
}

/// Adds `data.t` to a successful answer.
fn with_token(mut resp: Response, token: &str) -> Response {
    if let Ok(mut v) = serde_json::from_slice::<Value>(&resp.body) {
        if v["code"] == OK {
            if let Some(data) = v["data"].as_object_mut() {
                data.insert("t".into(), Value::String(token.to_string()));
                resp.body = v.to_string().into_bytes();
            }
        }
    }
    resp
}

fn ok(msg: &str, data: Value) -> Response {
    Response::envelope(200, OK, msg, data)
}

fn fail(msg: &str) -> Response {
    fail_with(FAIL, msg)
}

fn fail_with(code: i32, msg: &str) -> Response {
    Response::envelope(200, code, msg, Value::Null)
}

/// A store failure: 503 when the database is unreachable, else 500.
fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::Unavailable(m) => {
            log::warn!("store unavailable: {m}");
            Response::envelope(503, FAIL, "服务暂不可用，请稍后重试", Value::Null)
        }
        other => {
            log::error!("store: {other}");
            Response::envelope(500, FAIL, "服务器内部错误", Value::Null)
        }
    }
}

fn healthz(node: &Shared) -> Response {
    if node.draining.load(std::sync::atomic::Ordering::Relaxed) {
        return Response::text(503, "draining");
    }
    match node.store.ping() {
        Ok(()) => Response::text(200, "ok"),
        Err(e) => Response::text(503, format!("store unavailable: {e}")),
    }
}

/// Runs `f` when the request carries the configured `Admin-Token`; the
/// routes do not exist when none is configured.
fn admin(node: &Shared, req: &Request, f: fn(&Shared, &Params) -> Response) -> Response {
    let Some(expected) = node.config.http.admin_token.as_deref() else {
        return Response::error(404);
    };
    let given = req.header("admin-token").unwrap_or("").trim();
    if !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        return Response::envelope(401, AUTH_FAIL, "鉴权失败", Value::Null);
    }
    match req.params() {
        Some(params) => f(node, &params),
        None => Response::envelope(400, FAIL, "非法参数", Value::Null),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn ws_status(node: &Shared, _: &Params) -> Response {
    ok(
        "ok",
        json!({
            "connections": node.metrics.open(),
            "authenticated": node.metrics.authenticated(),
            "users": node.delivery.registry.users(),
            "reactors": node.delivery.reactors().len(),
        }),
    )
}

fn send_to_all(node: &Shared, params: &Params) -> Response {
    let body = params
        .get("body")
        .filter(|b| !b.is_empty())
        .unwrap_or("测试消息收发");
    let n = node
        .delivery
        .to_all(Push::broadcast(body).frame(), Duration::from_secs(5));
    ok("ok", json!({ "local": n }))
}

fn is_han(c: char) -> bool {
    matches!(c,
        '\u{2E80}'..='\u{2FDF}' | '\u{3005}' | '\u{3007}' | '\u{3021}'..='\u{3029}'
        | '\u{3038}'..='\u{303B}' | '\u{3400}'..='\u{4DBF}' | '\u{4E00}'..='\u{9FFF}'
        | '\u{F900}'..='\u{FAFF}' | '\u{20000}'..='\u{3134F}')
}

/// Checks `username` and `password` as register and login do (PROTOCOL §1.2).
fn check_credentials(params: &Params) -> Result<(&str, &str), Response> {
    let username = params.str("username");
    let password = params.str("password");
    let len_ok = |s: &str| (6..=20).contains(&s.chars().count());
    if username.is_empty() {
        return Err(fail("请输入用户名"));
    }
    if !len_ok(username) {
        return Err(fail("用户名长度限制6-20位"));
    }
    if password.is_empty() {
        return Err(fail("请输入密码"));
    }
    if !len_ok(password) {
        return Err(fail("密码长度限制6-20位"));
    }
    if username.chars().chain(password.chars()).any(is_han) {
        return Err(fail("用户名和密码不能含有中文"));
    }
    Ok((username, password))
}

/// The signed-in answer of register and login.
fn signed_in(node: &Shared, user: &User) -> Response {
    ok(
        "登录成功",
        json!({
            "t": node.tokens.issue(user.id),
            "user": {
                "id": user.id,
                "username": user.username,
                "nickname": user.nickname,
                "avatar": user.avatar,
                "status": user.status,
            }
        }),
    )
}

fn register(node: &Shared, _: &Request, params: &Params) -> Response {
    let (username, password) = match check_credentials(params) {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let hash = match auth::hash_password(password) {
        Ok(h) => h,
        Err(e) => {
            log::error!("password hash: {e}");
            return Response::error(500);
        }
    };
    match node.store.create_user(username, &hash, auth::now_secs()) {
        Ok(user) => signed_in(node, &user),
        Err(StoreError::Conflict) => fail("用户已存在，请更换用户名后重试"),
        Err(e) => store_error(e),
    }
}

fn login(node: &Shared, req: &Request, params: &Params) -> Response {
    let (username, password) = match check_credentials(params) {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    if node.throttle.blocked(username, req.peer) {
        return fail("登录失败次数过多，请稍后再试");
    }
    let user = match node.store.user_by_name(username) {
        Ok(Some(u)) => u,
        Ok(None) => {
            node.throttle.failed(username, req.peer);
            return fail("用户不存在，请更换用户名后重试");
        }
        Err(e) => return store_error(e),
    };
    if !auth::verify_password(password, &user.password_hash) {
        node.throttle.failed(username, req.peer);
        return fail("密码错误");
    }
    node.throttle.succeeded(username);
    signed_in(node, &user)
}

fn logout(node: &Shared, caller: &Caller, _: &Params) -> Response {
    let sig = auth::signature(&caller.token);
    let exp = caller.exp;
    if let Err(e) = node.store.revoke_token(sig, exp) {
        return store_error(e);
    }
    node.tokens.revoke(sig, exp);
    ok("退出成功", json!({}))
}

fn me(node: &Shared, caller: &Caller, _: &Params) -> Response {
    match node.store.user_by_id(caller.uid) {
        Ok(Some(u)) => ok(
            "请求成功",
            json!({
                "user": {
                    "id": u.id,
                    "username": u.username,
                    "nickname": u.nickname,
                    "avatar": u.avatar,
                    "sex": u.sex,
                    "status": u.status,
                    "realname_verified": u.realname_verified,
                }
            }),
        ),
        Ok(None) => fail_with(AUTH_FAIL, "鉴权失败"),
        Err(e) => store_error(e),
    }
}
