//! REST handlers, run on workers: routing of `/api/v1/*`, of the server
//! API `/server/v1/*` (`server`) and of the operations routes, the `Login-Token` check, CORS, and the
//! `{code,msg,data}` answers of PROTOCOL §1. Each concern's handlers live in
//! a submodule that exports its route table.
//!
//! Every successful API answer is finished here: avatars a user has not set
//! become `user.default_avatar`, and the gateway's own paths in `avatar` and
//! `url` values (`/files/…`, kept relative in the store) become absolute
//! URLs, from `http.public_url` or else the request's `Host`.

/// The value of a parameter check, or an early return of its error answer.
macro_rules! try_param {
    ($check:expr) => {
        match $check {
            Ok(value) => value,
            Err(resp) => return resp,
        }
    };
}

mod account;
mod chat;
mod friends;
mod geo;
mod groups;
mod ops;
mod profile;
mod server;
mod upload;
mod web;

pub use self::upload::body_limit;

use std::collections::HashMap;

use serde_json::Value;

use crate::access::refusal_text;
use crate::auth::{Identity, TokenError};
use crate::http::{Params, Request, Response};
use crate::metrics::Refusal;
use crate::node::Shared;
use crate::search::SearchError;
use crate::store::StoreError;
use crate::throttle::Refused;
use crate::webhook::Kind;

/// Success.
pub(crate) const OK: i32 = 0;
/// Validation or business-rule failure.
pub(crate) const FAIL: i32 = 1000;
/// Authentication failure.
pub(crate) const AUTH_FAIL: i32 = 1001;
/// Not found.
pub(crate) const NOT_FOUND: i32 = 1002;

/// The signed-in caller of an authenticated endpoint.
pub(crate) struct Caller {
    /// User id.
    pub uid: u64,
    /// The checked token: its user and session.
    pub who: Identity,
}

type Public = fn(&Shared, &Request, &Params) -> Response;
type Authed = fn(&Shared, &Caller, &Params) -> Response;
type Upload = fn(&Shared, &Caller, &Request, &Params) -> Response;

/// How a `/api/v1/*` path is served.
pub(crate) enum Route {
    Public(Public),
    /// An authenticated handler; `true` adds a refreshed token as `data.t`.
    Authed(Authed, bool),
    /// An authenticated handler that reads files of the request.
    Upload(Upload, bool),
}

/// A route table: `/api/v1/<path>` → handler; every route is `POST`.
pub(crate) type Routes = &'static [(&'static str, Route)];

/// Every module's routes.
const TABLES: &[Routes] = &[
    account::ROUTES,
    friends::ROUTES,
    groups::ROUTES,
    chat::ROUTES,
    profile::ROUTES,
    geo::ROUTES,
    upload::ROUTES,
];

fn find(path: &str) -> Option<&'static Route> {
    TABLES
        .iter()
        .flat_map(|t| t.iter())
        .find(|(p, _)| *p == path)
        .map(|(_, r)| r)
}

/// Where the server API (for the operator's backend) lives.
const SERVER_PREFIX: &str = "/server/v1/";

/// Request headers a browser may send across origins: the old server's
/// list (`AccessToken`, `X-CSRF-Token` and `Authorization` included, which
/// its web clients send) and `Admin-Token`.
const CORS_ALLOW_HEADERS: &str =
    "Content-Type, AccessToken, X-CSRF-Token, Authorization, Login-Token, Admin-Token";

/// Response headers a script may read across origins: the old server's
/// list, and those of resumable downloads.
const CORS_EXPOSE_HEADERS: &str = "Content-Length, Access-Control-Allow-Origin, \
     Access-Control-Allow-Headers, Content-Type, Content-Range, Accept-Ranges, \
     Content-Disposition";

/// What `GET /` answers: the old server's welcome (code 0), without its
/// advertisement.
const WELCOME: &str = "欢迎使用";

/// The picture answered for users without an avatar (served at
/// [`crate::config::DEFAULT_AVATAR_PATH`]).
const DEFAULT_AVATAR_PNG: &[u8] = include_bytes!("../../assets/default_avatar.png");

/// Answers one request.
pub fn handle(node: &Shared, req: &Request) -> Response {
    let mut resp = route(node, req);
    // A HEAD answer has the head of the GET answer and no body.
    resp.head_only = req.method == "HEAD";
    cors(node, req, resp)
}

/// Checks a request with a body from its head alone, before the reactor
/// reads the body: `Ok(true)` when it carries a valid `Login-Token` for
/// an authenticated route, `Ok(false)` for any other route (its body is
/// anonymous, see `budget`), and for an authenticated route whose token is
/// refused the answer to give instead (the reactor closes after it) — the
/// answer [`handle`] gives a well-formed request without a valid token.
/// No store call: the user's status is judged from the node's cache only.
pub fn check_before_body(node: &Shared, req: &Request) -> Result<bool, Response> {
    let route = (req.method == "POST")
        .then(|| req.path.strip_prefix("/api/v1/").and_then(find))
        .flatten();
    match route {
        Some(Route::Authed(..) | Route::Upload(..)) => match caller_on_reactor(node, req) {
            Ok(()) => Ok(true),
            Err(refused) => Err(cors(node, req, refused)),
        },
        _ => Ok(false),
    }
}

/// Adds the CORS headers of an allowed origin to an answer.
fn cors(node: &Shared, req: &Request, mut resp: Response) -> Response {
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
        resp.headers
            .push(("Access-Control-Expose-Headers", CORS_EXPOSE_HEADERS.into()));
        resp.headers.push(("Vary", "Origin".to_string()));
    }
    resp
}

fn route(node: &Shared, req: &Request) -> Response {
    if req.method == "OPTIONS" {
        let mut resp = Response::text(204, "");
        resp.headers
            .push(("Access-Control-Allow-Methods", "GET, POST, OPTIONS".into()));
        resp.headers
            .push(("Access-Control-Allow-Headers", CORS_ALLOW_HEADERS.into()));
        resp.headers
            .push(("Access-Control-Max-Age", "86400".into()));
        return resp;
    }
    let get = req.method == "GET";
    let read = get || req.method == "HEAD";
    match req.path.as_str() {
        "/" if read => web::wants_html(req)
            .then(|| web::serve(node, req, "/"))
            .flatten()
            .unwrap_or_else(|| ok(WELCOME, Value::Null)),
        crate::config::DEFAULT_AVATAR_PATH if read => default_avatar(),
        "/healthz" if get => ops::healthz(node),
        "/metrics" if get => ops::metrics(node),
        "/ws/status" if get => ops::admin(node, req, ops::ws_status),
        "/ws/sendToAll" if get || req.method == "POST" => ops::admin(node, req, ops::send_to_all),
        "/cluster" if get => ops::admin(node, req, ops::cluster),
        "/healthz" | "/metrics" | "/ws/status" | "/ws/sendToAll" | "/cluster" | "/ws" => {
            Response::error(405)
        }
        path if path.starts_with(SERVER_PREFIX) => {
            server::handle(node, req, &path[SERVER_PREFIX.len()..])
        }
        path if (get || req.method == "HEAD")
            && path.starts_with(node.config.attach.url_prefix.as_str()) =>
        {
            upload::serve(node, req, &path[node.config.attach.url_prefix.len()..])
        }
        path => match path.strip_prefix("/api/v1/").and_then(find) {
            None if read => web::serve(node, req, path).unwrap_or_else(|| Response::error(404)),
            None => Response::error(404),
            Some(_) if req.method != "POST" => Response::error(405),
            Some(handler) => api(node, req, handler),
        },
    }
}

fn api(node: &Shared, req: &Request, handler: &Route) -> Response {
    let Some(params) = req.params() else {
        return Response::envelope(400, FAIL, "非法参数", Value::Null);
    };
    let (resp, refresh) = match handler {
        Route::Public(f) => (f(node, req, &params), None),
        Route::Authed(f, refresh) => match caller(node, req) {
            Ok(c) => (f(node, &c, &params), refresh.then_some(c.who)),
            Err(resp) => return resp,
        },
        Route::Upload(f, refresh) => match caller(node, req) {
            Ok(c) => (f(node, &c, req, &params), refresh.then_some(c.who)),
            Err(resp) => return resp,
        },
    };
    let links = Links {
        base: base_url(node, req),
        default_avatar: &node.config.user.default_avatar,
    };
    finish(resp, &links, || {
        refresh.map(|who| node.tokens.refresh(&who))
    })
}

/// The built-in default avatar.
fn default_avatar() -> Response {
    let mut resp = Response {
        content_type: "image/png",
        ..Response::text(200, DEFAULT_AVATAR_PNG)
    };
    resp.headers
        .push(("X-Content-Type-Options", "nosniff".into()));
    resp.headers
        .push(("Cache-Control", "public, max-age=86400".into()));
    resp
}

/// How URLs are completed in answers.
struct Links<'a> {
    /// Scheme and host put before the gateway's own paths; `None` leaves
    /// them relative (no `http.public_url` and no usable `Host`).
    base: Option<String>,
    /// Avatar of users without one.
    default_avatar: &'a str,
}

impl Links<'_> {
    /// `url` made absolute when it is a path on this gateway.
    fn absolute(&self, url: &str) -> Option<String> {
        let base = self.base.as_deref()?;
        (url.starts_with('/') && !url.starts_with("//")).then(|| format!("{base}{url}"))
    }

    /// Completes every `avatar`/`Avatar` and `url` string under `value`.
    fn apply(&self, value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (key, v) in map.iter_mut() {
                    match (key.as_str(), v) {
                        ("avatar" | "Avatar", Value::String(s)) => {
                            if s.is_empty() {
                                self.default_avatar.clone_into(s);
                            }
                            if let Some(url) = self.absolute(s) {
                                *s = url;
                            }
                        }
                        ("url", Value::String(s)) => {
                            if let Some(url) = self.absolute(s) {
                                *s = url;
                            }
                        }
                        (_, v) => self.apply(v),
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.apply(v)),
            _ => {}
        }
    }
}

/// `http.public_url`, or `http://<Host>` when the request names a plain
/// host (and port): this listener speaks plain HTTP.
fn base_url(node: &Shared, req: &Request) -> Option<String> {
    let configured = &node.config.http.public_url;
    if !configured.is_empty() {
        return Some(configured.clone());
    }
    let host = req.header("host")?.trim();
    let plain = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b));
    plain.then(|| format!("http://{host}"))
}

/// Completes a successful answer's `data`: its links, and `t`, a refreshed
/// token, when `token` gives one.
fn finish(
    mut resp: Response,
    links: &Links<'_>,
    token: impl FnOnce() -> Option<String>,
) -> Response {
    let Ok(mut v) = serde_json::from_slice::<Value>(&resp.body) else {
        return resp;
    };
    if v["code"] != OK {
        return resp;
    }
    if let Some(data) = v.get_mut("data") {
        links.apply(data);
        if let (Some(data), Some(t)) = (data.as_object_mut(), token()) {
            data.insert("t".into(), Value::String(t));
        }
    }
    resp.body = v.to_string().into_bytes();
    resp
}

/// The caller of an authenticated route, from `Login-Token`: a valid token
/// of a session not ended, whose user exists and is not banned.
fn caller(node: &Shared, req: &Request) -> Result<Caller, Response> {
    let who = token_identity(node, req)?;
    match node.access.check(node.store.as_ref(), who.uid) {
        Ok(verdict) => verdict
            .map(|()| Caller { uid: who.uid, who })
            .map_err(|refusal| user_refused(node, refusal)),
        Err(e) => Err(store_error(e)),
    }
}

/// [`caller`] without a store call, for a reactor: the token, and the
/// user's cached status if there is one (a worker checks it again).
fn caller_on_reactor(node: &Shared, req: &Request) -> Result<(), Response> {
    let who = token_identity(node, req)?;
    match node.access.cached(who.uid) {
        Some(Err(refusal)) => Err(user_refused(node, refusal)),
        _ => Ok(()),
    }
}

/// Whom the request's `Login-Token` names (signature, expiry, session).
fn token_identity(node: &Shared, req: &Request) -> Result<Identity, Response> {
    let token = req.header("login-token").unwrap_or("");
    node.tokens.verify(token).map_err(|e| {
        node.metrics.refused(e.refusal());
        match e {
            TokenError::Expired | TokenError::Ended => {
                fail_with(AUTH_FAIL, "登录状态已过期，请重新登录")
            }
            TokenError::Invalid | TokenError::Revoked => fail_with(AUTH_FAIL, "鉴权失败"),
        }
    })
}

/// The answer to a valid token of a user who may not sign in.
fn user_refused(node: &Shared, refusal: Refusal) -> Response {
    node.metrics.refused(refusal);
    fail_with(AUTH_FAIL, refusal_text(refusal, "鉴权失败"))
}

/// Queues a webhook event (after the change it reports was stored), when
/// webhooks are on.
pub(crate) fn webhook(node: &Shared, kind: Kind, data: Value) {
    if let Some(w) = &node.webhook {
        w.emit(kind, data);
    }
}

pub(crate) fn ok(msg: &str, data: Value) -> Response {
    Response::envelope(200, OK, msg, data)
}

pub(crate) fn fail(msg: &str) -> Response {
    fail_with(FAIL, msg)
}

pub(crate) fn fail_with(code: i32, msg: &str) -> Response {
    Response::envelope(200, code, msg, Value::Null)
}

/// A refusal by a throttle: `msg` as a failure with HTTP `status`, and
/// `Retry-After`.
pub(crate) fn throttled(refused: Refused, status: u16, msg: &str) -> Response {
    let mut resp = Response::envelope(status, FAIL, msg, Value::Null);
    resp.headers
        .push(("Retry-After", refused.retry_after_secs().to_string()));
    resp
}

/// A store failure: 503 when the database is unreachable, else 500.
pub(crate) fn store_error(e: StoreError) -> Response {
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

/// A search failure: the store's as [`store_error`], the engine's 503.
pub(crate) fn search_error(e: SearchError) -> Response {
    match e {
        SearchError::Store(e) => store_error(e),
        other => upload::unavailable(other),
    }
}

/// `items` in the order of `ids` (the rank a search engine gave), ids
/// without an item left out.
pub(crate) fn in_order<T>(ids: &[u64], items: Vec<T>, id: impl Fn(&T) -> u64) -> Vec<T> {
    let mut by_id: HashMap<u64, T> = items.into_iter().map(|t| (id(&t), t)).collect();
    ids.iter().filter_map(|i| by_id.remove(i)).collect()
}

/// A required id parameter (a positive integer); `err` is the answer when it
/// is missing, not a number or out of range.
pub(crate) fn id_param(params: &Params, name: &str, err: &str) -> Result<u64, Response> {
    match params.str(name).trim().parse::<u64>() {
        Ok(v) if v > 0 && v <= i64::MAX as u64 => Ok(v),
        _ => Err(fail(err)),
    }
}

/// A required text parameter, trimmed: `empty` is the answer when it is
/// missing or blank, `非法参数` when it is longer than `max_chars`.
pub(crate) fn text_param<'a>(
    params: &'a Params,
    name: &str,
    max_chars: usize,
    empty: &str,
) -> Result<&'a str, Response> {
    let text = params.str(name).trim();
    if text.is_empty() {
        return Err(fail(empty));
    }
    if text.chars().count() > max_chars {
        return Err(fail("非法参数"));
    }
    Ok(text)
}

/// Why a search word was refused: it holds a control character (NUL,
/// CR, LF…), which no name contains.
const MSG_SEARCH_CONTROL: &str = "搜索关键词不能包含控制字符";

/// A search word: [`text_param`] without control characters.
pub(crate) fn search_word<'a>(
    params: &'a Params,
    max_chars: usize,
    empty: &str,
) -> Result<&'a str, Response> {
    let word = text_param(params, "word", max_chars, empty)?;
    if word.chars().any(char::is_control) {
        return Err(fail(MSG_SEARCH_CONTROL));
    }
    Ok(word)
}

/// Pagination: `page` from 1 (default 1), `size` 1..=100 (default 20).
/// Returns `(limit, offset)`.
pub(crate) fn page_params(params: &Params) -> Result<(u32, u64), Response> {
    let parse = |name: &str, default: u64, max: u64| -> Result<u64, Response> {
        match params.get(name).map(str::trim).filter(|v| !v.is_empty()) {
            None => Ok(default),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(fail("非法参数")),
            },
        }
    };
    let page = parse("page", 1, 1_000_000)?;
    let size = parse("size", 20, 100)?;
    Ok((size as u32, (page - 1) * size))
}
