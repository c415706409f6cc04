//! Friends (PROTOCOL §1.2 `im/friend/*`): search, list, requests and their
//! handling, mutual deletion, and the pushes 8, 9, 15 and 16, sent once the
//! store has committed.
//!
//! Choices where PROTOCOL is silent: search leaves the caller out; the
//! friend list is paginated like every list (`page`, `size`, default 20);
//! `add/reqs` lists every request to the caller, handled ones included,
//! newest first; a request crossing a pending one the other way is recorded
//! too, and accepting either settles both; `channel` (≤ 32 characters) and
//! `reason` (≤ 255) are optional; a malformed or over-long parameter
//! without its own text answers `非法参数`.
//!
//! As the old server: in `add/reqs` `Id` is the requester (old clients pass
//! it back as `f_uid` to `add/handle`; the request's own id is `ReqId`) and
//! `RequestAt` is unix seconds in a string.

use serde_json::{json, Value};

use super::{
    fail, id_param, in_order, ok, page_params, search_error, search_word, store_error, webhook,
    Caller, Route, Routes,
};
use crate::auth::now_secs;
use crate::http::{Params, Response};
use crate::message::{cmd, ope, Push};
use crate::node::Shared;
use crate::store::{StoreError, MAX_CHANNEL_CHARS, MAX_REASON_CHARS, MAX_USERNAME_CHARS};
use crate::webhook::Kind;

/// Friend routes.
pub(super) const ROUTES: Routes = &[
    ("im/friend/search", Route::Authed(search, true)),
    ("im/friend/list", Route::Authed(list, true)),
    ("im/friend/add/request", Route::Authed(request, true)),
    ("im/friend/add/reqs", Route::Authed(requests, true)),
    ("im/friend/add/handle", Route::Authed(handle, true)),
    ("im/friend/del", Route::Authed(delete, true)),
];

fn search(node: &Shared, caller: &Caller, params: &Params) -> Response {
    let word = try_param!(search_word(params, MAX_USERNAME_CHARS, "请输入好友昵称"));
    let (limit, offset) = try_param!(page_params(params));
    let ids = match node.search.users(word, caller.uid, limit, offset) {
        Ok(ids) => ids,
        Err(e) => return search_error(e),
    };
    match node.store.users_by_ids(&ids) {
        Ok(users) => {
            let list: Vec<Value> = in_order(&ids, users, |u| u.id)
                .iter()
                .map(|u| {
                    json!({
                        "Id": u.id,
                        "Username": u.username,
                        "Nickname": u.nickname,
                        "Avatar": u.avatar,
                        "Sex": u.sex,
                    })
                })
                .collect();
            ok("请求成功", json!({ "list": list }))
        }
        Err(e) => store_error(e),
    }
}

fn list(node: &Shared, caller: &Caller, params: &Params) -> Response {
    let (limit, offset) = try_param!(page_params(params));
    match node.store.friends(caller.uid, limit, offset) {
        Ok(friends) => {
            // One presence lookup for the page (in a cluster: one Redis call).
            let ids: Vec<u64> = friends.iter().map(|f| f.id).collect();
            let online = node.delivery.online(&ids);
            let lists: Vec<Value> = friends
                .iter()
                .zip(online)
                .map(|(f, online)| {
                    json!({
                        "Id": f.id,
                        "Nickname": f.nickname,
                        "Username": f.username,
                        "Avatar": f.avatar,
                        "Sex": f.sex,
                        "Online": online,
                    })
                })
                .collect();
            ok("请求成功", json!({ "lists": lists }))
        }
        Err(e) => store_error(e),
    }
}

fn request(node: &Shared, caller: &Caller, params: &Params) -> Response {
    let username = params.str("username").trim();
    let channel = params.str("channel").trim();
    let reason = params.str("reason").trim();
    if channel.chars().count() > MAX_CHANNEL_CHARS || reason.chars().count() > MAX_REASON_CHARS {
        return fail("非法参数");
    }
    if username.is_empty() {
        return fail("用户未找到");
    }
    let target = match node.store.user_by_name(username) {
        Ok(Some(u)) => u,
        Ok(None) => return fail("用户未找到"),
        Err(e) => return store_error(e),
    };
    if target.id == caller.uid {
        return fail("不能添加自己");
    }
    match node.store.are_friends(caller.uid, target.id) {
        Ok(true) => return fail("对方已经是好友"),
        Ok(false) => {}
        Err(e) => return store_error(e),
    }
    match node
        .store
        .request_friend(caller.uid, target.id, channel, reason, now_secs())
    {
        Ok(_) => {
            let push = Push::notice(
                cmd::FRIEND_REQUEST,
                caller.uid,
                target.id,
                ope::FRIEND,
                "您收到一条好友添加请求",
            );
            node.delivery.to_user(target.id, push.frame());
            ok("成功发送添加请求", json!({}))
        }
        Err(StoreError::Conflict) => fail("请等待好友同意"),
        Err(e) => store_error(e),
    }
}

fn requests(node: &Shared, caller: &Caller, params: &Params) -> Response {
    let (limit, offset) = try_param!(page_params(params));
    match node.store.friend_requests_to(caller.uid, limit, offset) {
        Ok(reqs) => {
            let list: Vec<Value> = reqs
                .iter()
                .map(|r| {
                    json!({
                        "Id": r.from.id,
                        "ReqId": r.id,
                        "Uid": r.from.id,
                        "Nickname": r.from.nickname,
                        "Username": r.from.username,
                        "Avatar": r.from.avatar,
                        "Channel": r.channel,
                        "Reason": r.reason,
                        "RequestAt": r.created_at.to_string(),
                        "Status": r.status,
                    })
                })
                .collect();
            ok("请求成功", json!({ "list": list }))
        }
        Err(e) => store_error(e),
    }
}

fn handle(node: &Shared, caller: &Caller, params: &Params) -> Response {
    let requester = try_param!(id_param(params, "f_uid", "非法参数"));
    let accept = match params.str("status").trim() {
        "1" => true,
        "-1" => false,
        _ => return fail("非法参数"),
    };
    let now = now_secs();
    let handled = if accept {
        node.store.accept_friend_request(requester, caller.uid, now)
    } else {
        node.store.reject_friend_request(requester, caller.uid, now)
    };
    match handled {
        Ok(true) => {
            let (command, body) = if accept {
                (cmd::FRIEND_ACCEPTED, "对方通过了你的好友请求")
            } else {
                (cmd::FRIEND_REJECTED, "对方拒绝了你的好友请求")
            };
            let push = Push::notice(command, caller.uid, requester, ope::FRIEND, body);
            node.delivery.to_user(requester, push.frame());
            if accept {
                webhook(
                    node,
                    Kind::FriendAdded,
                    json!({ "uids": [requester, caller.uid] }),
                );
            }
            ok("处理成功", json!({}))
        }
        Ok(false) => fail("添加好友请求不存在"),
        Err(e) => store_error(e),
    }
}

fn delete(node: &Shared, caller: &Caller, params: &Params) -> Response {
    let friend = try_param!(id_param(params, "f_uid", "非法参数"));
    match node.store.delete_friend(caller.uid, friend) {
        Ok(true) => {
            let push = Push::notice(
                cmd::FRIEND_REMOVED,
                caller.uid,
                friend,
                ope::FRIEND,
                "对方已将你删除",
            );
            node.delivery.to_user(friend, push.frame());
            ok("删除成功", json!({}))
        }
        Ok(false) => fail("对方不是你的好友"),
        Err(e) => store_error(e),
    }
}
