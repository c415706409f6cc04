//! Chat endpoints: send and withdraw (friend and group), history and sync.
//! The rules live in [`crate::chat`], shared with sending over the socket.

use serde_json::{json, Value};

use super::{fail, id_param, ok, page_params, store_error, Caller, Route, Routes, FAIL};
use crate::chat::{self, ChatError, Outgoing};
use crate::http::{Params, Response};
use crate::node::Shared;
use crate::store::messages::{OPE_FRIEND, OPE_GROUP};
use crate::store::{Feed, Message};

/// Chat routes.
pub(super) const ROUTES: Routes = &[
    ("im/chat/send/user", Route::Authed(send_user, true)),
    ("im/chat/send/group", Route::Authed(send_group, true)),
    ("im/chat/withdraw/user", Route::Authed(withdraw_user, true)),
    (
        "im/chat/withdraw/group",
        Route::Authed(withdraw_group, true),
    ),
    ("im/chat/history", Route::Authed(history, true)),
    ("im/chat/sync", Route::Authed(sync, true)),
];

/// A message as listed by history and sync.
fn item(m: &Message) -> Value {
    json!({
        "Id": m.id,
        "FromId": m.from_id,
        "ToId": m.to_id,
        "Ope": m.ope,
        "Type": m.kind,
        "Body": m.body,
        "Status": m.status,
        "CreatedAt": m.created_at,
    })
}

fn chat_error(e: ChatError) -> Response {
    match e {
        ChatError::Rule(text) => fail(text),
        ChatError::Store(e) => store_error(e),
        // Over the send limit: 429 with the envelope, and when to retry.
        ChatError::TooFast(wait) => {
            let mut resp = Response::envelope(429, FAIL, e.text(), Value::Null);
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            resp.headers.push(("Retry-After", secs.to_string()));
            resp
        }
    }
}

/// `type`: an integer; missing or blank is 0 (text), as the old server
/// read it.
fn kind_param(params: &Params) -> Result<i64, Response> {
    match params.str("type").trim() {
        "" => Ok(0),
        kind => kind.parse::<i64>().map_err(|_| fail("非法参数")),
    }
}

fn send(
    node: &Shared,
    caller: &Caller,
    params: &Params,
    ope: i64,
    to: &str,
) -> Result<u64, Response> {
    let to = id_param(params, to, "非法参数")?;
    let kind = kind_param(params)?;
    let out = Outgoing {
        from: caller.uid,
        ope,
        to,
        kind,
        body: params.str("body"),
        cid: params.get("cid"),
    };
    chat::send(node, &out).map(|m| m.id).map_err(chat_error)
}

fn send_user(node: &Shared, caller: &Caller, params: &Params) -> Response {
    match send(node, caller, params, OPE_FRIEND, "to_uid") {
        Ok(id) => ok("发送成功", json!({ "id": id })),
        Err(resp) => resp,
    }
}

fn send_group(node: &Shared, caller: &Caller, params: &Params) -> Response {
    match send(node, caller, params, OPE_GROUP, "group_id") {
        Ok(id) => ok("发送成功", json!({ "messageId": id, "id": id })),
        Err(resp) => resp,
    }
}

fn withdraw(node: &Shared, caller: &Caller, params: &Params, ope: i64) -> Response {
    let id = match id_param(params, "message_id", "消息不存在") {
        Ok(id) => id,
        Err(resp) => return resp,
    };
    match chat::withdraw(node, caller.uid, id, ope) {
        Ok(()) => ok("撤回成功", json!({})),
        Err(e) => chat_error(e),
    }
}

fn withdraw_user(node: &Shared, caller: &Caller, params: &Params) -> Response {
    withdraw(node, caller, params, OPE_FRIEND)
}

fn withdraw_group(node: &Shared, caller: &Caller, params: &Params) -> Response {
    withdraw(node, caller, params, OPE_GROUP)
}

/// An optional message id: absent or empty is `None`.
fn opt_id(params: &Params, name: &str) -> Result<Option<u64>, Response> {
    match params.get(name).map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(_) => id_param(params, name, "非法参数").map(Some),
    }
}

fn history(node: &Shared, caller: &Caller, params: &Params) -> Response {
    let run = || -> Result<Response, Response> {
        let (size, _) = page_params(params)?;
        let before = opt_id(params, "before")?;
        let list = if let Some(group) = opt_id(params, "group_id")? {
            if !node
                .store
                .is_group_member(group, caller.uid)
                .map_err(store_error)?
            {
                return Err(fail("您不是群成员"));
            }
            node.store.group_history(group, caller.uid, before, size)
        } else {
            let peer = id_param(params, "peer", "非法参数")?;
            node.store.friend_history(caller.uid, peer, before, size)
        }
        .map_err(store_error)?;
        Ok(ok(
            "请求成功",
            json!({ "list": list.iter().map(item).collect::<Vec<_>>() }),
        ))
    };
    run().unwrap_or_else(|resp| resp)
}

fn sync(node: &Shared, caller: &Caller, params: &Params) -> Response {
    let run = || -> Result<Response, Response> {
        let (size, _) = page_params(params)?;
        let since = match params.get("since").map(str::trim).filter(|s| !s.is_empty()) {
            None => 0,
            Some(s) => s.parse::<u64>().map_err(|_| fail("非法参数"))?,
        };
        let mut list = node
            .store
            .feed(caller.uid, since, size + 1, Feed::Sync)
            .map_err(store_error)?;
        let more = list.len() > size as usize;
        list.truncate(size as usize);
        Ok(ok(
            "请求成功",
            json!({ "list": list.iter().map(item).collect::<Vec<_>>(), "more": more }),
        ))
    };
    run().unwrap_or_else(|resp| resp)
}
