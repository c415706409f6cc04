//! The server API for the operator's backend: `POST /server/v1/<name>`
//! with a JSON body, authenticated by `Api-Key: <key>` (one of
//! `http.server_api_keys`, compared in constant time; an address that sends
//! wrong keys is throttled like failed logins). It is separate from
//! `Admin-Token` and from users' tokens, and off (404) without keys.
//!
//! Answers use the `{code,msg,data}` envelope: 200 / 0 done; 400 / 1000
//! bad input (malformed JSON, a missing or invalid field, a body over
//! `limits.max_message`); 401 / 1001 a missing or wrong key; 429 / 1001 an
//! address throttled; 404 / 1002 an unknown user or group. Pushes reach
//! users on every node: in cluster mode one Redis publish per target node.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::ops::constant_time_eq;
use super::{store_error, AUTH_FAIL, FAIL, NOT_FOUND, OK};
use crate::auth::now_secs;
use crate::chat::{self, ChatError, Outgoing};
use crate::http::{Request, Response};
use crate::message::{cmd, Push};
use crate::metrics::ApiOutcome;
use crate::node::Shared;
use crate::store::messages::{OPE_FRIEND, OPE_GROUP};
use crate::store::MAX_BAN_REASON_CHARS;
use crate::ws::close;

/// A handler: the request body in, `data` or the refusal out.
type Handler = fn(&Shared, &[u8]) -> Result<Value, Refusal>;

/// Why a call was refused: its answer, and whether it was the caller's
/// input (counted as invalid) or the node's failure.
struct Refusal {
    resp: Response,
    invalid: bool,
}

fn invalid(msg: &str) -> Refusal {
    Refusal {
        resp: Response::envelope(400, FAIL, msg, Value::Null),
        invalid: true,
    }
}

fn not_found(msg: &str) -> Refusal {
    Refusal {
        resp: Response::envelope(404, NOT_FOUND, msg, Value::Null),
        invalid: true,
    }
}

/// `/server/v1/<name>` → handler.
const ROUTES: &[(&str, Handler)] = &[
    ("push/users", push_users),
    ("push/group", push_group),
    ("push/all", push_all),
    ("users/online", users_online),
    ("messages/send", send_message),
    ("users/disconnect", disconnect),
    ("users/ban", ban),
    ("users/unban", unban),
];

/// Answers `/server/v1/<name>`.
pub(super) fn handle(node: &Shared, req: &Request, name: &str) -> Response {
    let keys = &node.config.http.server_api_keys;
    if keys.is_empty() {
        return Response::error(404);
    }
    let Some((_, handler)) = ROUTES.iter().find(|(n, _)| *n == name) else {
        return Response::error(404);
    };
    if req.method != "POST" {
        return Response::error(405);
    }
    let ip = node.client_addr(req);
    if let Err(refused) = node.throttle.admin_allowed(ip) {
        node.metrics.server_api(ApiOutcome::Throttled);
        let mut resp = Response::envelope(
            429,
            AUTH_FAIL,
            "too many wrong API keys from this address; try again later",
            Value::Null,
        );
        resp.headers
            .push(("Retry-After", refused.retry_after_secs().to_string()));
        return resp;
    }
    let given = req.header("api-key").unwrap_or("").trim().as_bytes();
    // Every key is compared, whatever matched, so the time says nothing.
    let known = keys.iter().fold(false, |found, k| {
        constant_time_eq(given, k.as_bytes()) | found
    });
    if !known {
        if !given.is_empty() {
            node.throttle.admin_failed(ip);
        }
        node.metrics.server_api(ApiOutcome::BadKey);
        let msg = if given.is_empty() {
            "missing Api-Key header"
        } else {
            "invalid API key"
        };
        return Response::envelope(401, AUTH_FAIL, msg, Value::Null);
    }
    match handler(node, &req.body) {
        Ok(data) => {
            node.metrics.server_api(ApiOutcome::Ok);
            Response::envelope(200, OK, "ok", data)
        }
        Err(r) => {
            if r.invalid {
                node.metrics.server_api(ApiOutcome::Invalid);
            }
            r.resp
        }
    }
}

/// The body as `T`; malformed JSON or a wrong field is refused with
/// serde's description.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|e| invalid(&format!("malformed JSON body: {e}")))
}

/// A user or group id: 1 to 2^63 - 1.
fn check_id(id: u64, field: &str) -> Result<u64, Refusal> {
    if id == 0 || id > i64::MAX as u64 {
        return Err(invalid(&format!("{field}: expected a positive id")));
    }
    Ok(id)
}

fn check_uids(uids: &[u64]) -> Result<(), Refusal> {
    if uids.is_empty() {
        return Err(invalid("uids: expected at least one user id"));
    }
    uids.iter().try_for_each(|&u| check_id(u, "uids").map(drop))
}

/// A push's body: not empty, at most `limits.max_message` bytes.
fn check_body(node: &Shared, body: &str) -> Result<(), Refusal> {
    let max = node.config.limits.max_message;
    if body.is_empty() {
        return Err(invalid("body: must not be empty"));
    }
    if body.len() > max {
        return Err(invalid(&format!(
            "body: {} bytes, longer than limits.max_message ({max} bytes)",
            body.len()
        )));
    }
    Ok(())
}

/// The server notice frame: Cmd 40, `Ope` 2, `Type` 10.
fn notice(body: &str) -> Push {
    Push::system(cmd::SERVER_NOTICE, body)
}

#[derive(Deserialize)]
struct PushUsers {
    uids: Vec<u64>,
    body: String,
}

fn push_users(node: &Shared, body: &[u8]) -> Result<Value, Refusal> {
    let p: PushUsers = parse(body)?;
    check_uids(&p.uids)?;
    check_body(node, &p.body)?;
    let reached = node.delivery.notify(&p.uids, notice(&p.body).frame());
    Ok(json!({ "online": reached }))
}

#[derive(Deserialize)]
struct PushGroup {
    group_id: u64,
    body: String,
}

fn push_group(node: &Shared, body: &[u8]) -> Result<Value, Refusal> {
    let p: PushGroup = parse(body)?;
    let group = check_id(p.group_id, "group_id")?;
    check_body(node, &p.body)?;
    let members = node.store.group_member_ids(group).map_err(failed)?;
    if members.is_empty() {
        return Err(not_found("group_id: no such group"));
    }
    let reached = node.delivery.notify(&members, notice(&p.body).frame());
    Ok(json!({ "online": reached }))
}

#[derive(Deserialize)]
struct PushAll {
    body: String,
}

fn push_all(node: &Shared, body: &[u8]) -> Result<Value, Refusal> {
    let p: PushAll = parse(body)?;
    check_body(node, &p.body)?;
    let local = node
        .delivery
        .to_all(notice(&p.body).frame(), std::time::Duration::from_secs(5));
    Ok(json!({ "local": local }))
}

#[derive(Deserialize)]
struct Uids {
    uids: Vec<u64>,
}

fn users_online(node: &Shared, body: &[u8]) -> Result<Value, Refusal> {
    let p: Uids = parse(body)?;
    check_uids(&p.uids)?;
    Ok(json!({ "online": node.delivery.online(&p.uids) }))
}

#[derive(Deserialize)]
struct SendMessage {
    from_uid: u64,
    to_uid: Option<u64>,
    group_id: Option<u64>,
    #[serde(rename = "type", default)]
    kind: i64,
    body: String,
    cid: Option<String>,
}

fn send_message(node: &Shared, body: &[u8]) -> Result<Value, Refusal> {
    let p: SendMessage = parse(body)?;
    let from = check_id(p.from_uid, "from_uid")?;
    let (ope, to) = match (p.to_uid, p.group_id) {
        (Some(to), None) => (OPE_FRIEND, check_id(to, "to_uid")?),
        (None, Some(group)) => (OPE_GROUP, check_id(group, "group_id")?),
        _ => return Err(invalid("expected exactly one of to_uid and group_id")),
    };
    if node.store.user_by_id(from).map_err(failed)?.is_none() {
        return Err(not_found("from_uid: no such user"));
    }
    let exists = if ope == OPE_GROUP {
        node.store.group(to).map_err(failed)?.is_some()
    } else {
        node.store.user_by_id(to).map_err(failed)?.is_some()
    };
    if !exists {
        return Err(not_found(if ope == OPE_GROUP {
            "group_id: no such group"
        } else {
            "to_uid: no such user"
        }));
    }
    let out = Outgoing {
        from,
        ope,
        to,
        kind: p.kind,
        body: &p.body,
        cid: p.cid.as_deref(),
    };
    match chat::send_from_backend(node, &out) {
        Ok(m) => Ok(json!({ "id": m.id })),
        Err(ChatError::Rule(text)) => Err(invalid(text)),
        // Backend sends are not rate limited; kept for completeness.
        Err(ChatError::TooFast(_)) => Err(invalid("发送过快")),
        Err(ChatError::Store(e)) => Err(failed(e)),
    }
}

/// `uid` must name an existing user.
fn existing_user(node: &Shared, uid: u64) -> Result<u64, Refusal> {
    let uid = check_id(uid, "uid")?;
    match node.store.user_by_id(uid).map_err(failed)? {
        Some(_) => Ok(uid),
        None => Err(not_found("uid: no such user")),
    }
}

#[derive(Deserialize)]
struct Disconnect {
    uid: u64,
    code: Option<u16>,
}

fn disconnect(node: &Shared, body: &[u8]) -> Result<Value, Refusal> {
    let p: Disconnect = parse(body)?;
    let uid = check_id(p.uid, "uid")?;
    let code = p.code.unwrap_or(close::DISCONNECTED);
    if code != close::NORMAL && !(3000..=4999).contains(&code) {
        return Err(invalid("code: expected 1000 or 3000-4999"));
    }
    node.delivery.kick(uid, None, code);
    Ok(json!({}))
}

#[derive(Deserialize)]
struct Ban {
    uid: u64,
    #[serde(default)]
    until: i64,
    #[serde(default)]
    reason: String,
}

fn ban(node: &Shared, body: &[u8]) -> Result<Value, Refusal> {
    let p: Ban = parse(body)?;
    let uid = existing_user(node, p.uid)?;
    if p.until < 0 || (p.until != 0 && p.until <= now_secs()) {
        return Err(invalid(
            "until: expected 0 (for ever) or a unix time in the future",
        ));
    }
    if p.reason.chars().count() > MAX_BAN_REASON_CHARS {
        return Err(invalid(&format!(
            "reason: longer than {MAX_BAN_REASON_CHARS} characters"
        )));
    }
    node.store
        .ban_user(uid, p.until, &p.reason, now_secs())
        .map_err(failed)?;
    // Stored first: every node that reads the user from now on refuses
    // them; the kick also drops the other nodes' cached answers.
    node.access.forget(uid);
    node.delivery.kick(uid, None, close::BANNED);
    Ok(json!({}))
}

#[derive(Deserialize)]
struct Unban {
    uid: u64,
}

fn unban(node: &Shared, body: &[u8]) -> Result<Value, Refusal> {
    let p: Unban = parse(body)?;
    let uid = existing_user(node, p.uid)?;
    node.store.unban_user(uid).map_err(failed)?;
    node.access.forget(uid);
    Ok(json!({}))
}

/// The node failed (the store): not the caller's input.
fn failed(e: crate::store::StoreError) -> Refusal {
    Refusal {
        resp: store_error(e),
        invalid: false,
    }
}
