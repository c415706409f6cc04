//! Operations routes: `/healthz`, `/metrics` and the `Admin-Token` routes
//! `/ws/status`, `/ws/sendToAll` and `/cluster`.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Value};

use super::{ok, throttled, AUTH_FAIL, FAIL};
use crate::http::{Params, Request, Response};
use crate::message::Push;
use crate::node::Shared;

pub(super) fn healthz(node: &Shared) -> Response {
    if let Some(why) = node.failure() {
        return Response::text(503, format!("failed: {why}"));
    }
    if node.draining.load(std::sync::atomic::Ordering::Relaxed) {
        return Response::text(503, "draining");
    }
    let cluster = node
        .delivery
        .cluster()
        .map(|c| format!("\n{}", c.health()))
        .unwrap_or_default();
    match node.store.ping() {
        Ok(()) => Response::text(200, format!("ok{cluster}")),
        Err(e) => Response::text(503, format!("store unavailable: {e}{cluster}")),
    }
}

pub(super) fn metrics(node: &Shared) -> Response {
    let mut text = node.metrics.render(
        node.jobs.len(),
        node.draining.load(std::sync::atomic::Ordering::Relaxed),
        node.bodies.in_use(),
    );
    node.throttle.render(&mut text);
    let _ = writeln!(
        text,
        "# HELP weim_revoked_sessions Sessions ended by logout this node remembers (until their end).\n# TYPE weim_revoked_sessions gauge\nweim_revoked_sessions {}",
        node.tokens.revoked_len()
    );
    if let Some(c) = node.delivery.cluster() {
        c.stats.render(&mut text);
    }
    if let Some(w) = &node.webhook {
        w.render(&mut text);
    }
    Response {
        content_type: "text/plain; version=0.0.4",
        ..Response::text(200, text)
    }
}

/// Runs `f` when the request carries the configured `Admin-Token`; the
/// routes do not exist when none is configured. A wrong token (a missing
/// or empty one is no guess) counts against the client address, which past
/// `http.admin_fail_limit` waits before its next token is even compared
/// (429).
pub(super) fn admin(node: &Shared, req: &Request, f: fn(&Shared, &Params) -> Response) -> Response {
    let Some(expected) = node.config.http.admin_token.as_deref() else {
        return Response::error(404);
    };
    let ip = node.client_addr(req);
    if let Err(refused) = node.throttle.admin_allowed(ip) {
        return throttled(refused, 429, "鉴权失败次数过多，请稍后再试");
    }
    let given = req.header("admin-token").unwrap_or("").trim();
    if !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        if !given.is_empty() {
            node.throttle.admin_failed(ip);
        }
        return Response::envelope(401, AUTH_FAIL, "鉴权失败", Value::Null);
    }
    match req.params() {
        Some(params) => f(node, &params),
        None => Response::envelope(400, FAIL, "非法参数", Value::Null),
    }
}

pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(super) fn ws_status(node: &Shared, _: &Params) -> Response {
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

pub(super) fn send_to_all(node: &Shared, params: &Params) -> Response {
    let body = params
        .get("body")
        .filter(|b| !b.is_empty())
        .unwrap_or("测试消息收发");
    let n = node
        .delivery
        .to_all(Push::broadcast(body).frame(), Duration::from_secs(5));
    ok("ok", json!({ "local": n }))
}

/// The live peer table: `{servers: [{id, addr, started}, …]}`; without
/// cluster mode, an empty list.
pub(super) fn cluster(node: &Shared, _: &Params) -> Response {
    let servers = node
        .delivery
        .cluster()
        .map(|c| c.peers.list())
        .unwrap_or_default();
    ok("ok", json!({ "servers": servers }))
}
