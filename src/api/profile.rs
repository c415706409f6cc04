//! Profile: nickname, avatar, real-name verification, location, and the
//! public profile of another user (PROTOCOL §1.2 `user/update/*`, §1.3
//! `user/info`).

use serde_json::{json, Value};

use super::upload::{store_upload, unavailable};
use super::{fail, fail_with, id_param, ok, store_error, Caller, Route, Routes, NOT_FOUND};
use crate::attach::Category;
use crate::auth;
use crate::geo::Point;
use crate::http::{Params, Request, Response};
use crate::idcard::{mask_name, today_cst, valid_name, IdNumber};
use crate::node::Shared;
use crate::search::UserDoc;
use crate::store::{Changed, RealName, StoreError, User};

/// Profile routes.
pub(super) const ROUTES: Routes = &[
    ("user/update/nickname", Route::Authed(nickname, true)),
    ("user/update/avatar", Route::Upload(avatar, true)),
    ("user/update/realname", Route::Authed(realname, true)),
    ("user/update/location", Route::Authed(location, true)),
    ("user/info", Route::Authed(info, true)),
];

/// Largest avatar, bytes.
pub(super) const MAX_AVATAR: usize = 2 << 20;

/// `设置成功` and friends: `{result}` plus `extra`; `result` is the number
/// of rows the update changed (1, or 0 when nothing changed), as the old
/// server answered.
fn done(msg: &str, changed: u64, extra: Value) -> Response {
    let mut data = json!({ "result": changed });
    if let (Some(d), Value::Object(extra)) = (data.as_object_mut(), extra) {
        d.extend(extra);
    }
    ok(msg, data)
}

/// After a profile change: tells the search engine (the store has
/// committed). `None` when all went well, else the answer to give.
fn reindex(node: &Shared, uid: u64, location: Option<(Point, i64)>) -> Option<Response> {
    let user = match node.store.user_by_id(uid) {
        Ok(Some(u)) => u,
        Ok(None) => return Some(fail_with(super::AUTH_FAIL, "鉴权失败")),
        Err(e) => return Some(store_error(e)),
    };
    node.search
        .user_changed(&UserDoc {
            user: &user,
            location,
        })
        .err()
        .map(unavailable)
}

/// Answers an update whose store call returned `changed`.
fn updated(
    node: &Shared,
    caller: &Caller,
    changed: Result<Changed, StoreError>,
    msg: &str,
    extra: Value,
) -> Response {
    match changed {
        Ok(Some(n)) => reindex(node, caller.uid, None).unwrap_or_else(|| done(msg, n, extra)),
        Ok(None) => fail_with(super::AUTH_FAIL, "鉴权失败"),
        Err(e) => store_error(e),
    }
}

fn nickname(node: &Shared, caller: &Caller, params: &Params) -> Response {
    let nickname = params.str("nickname");
    if !(4..=20).contains(&nickname.len()) || nickname.chars().any(char::is_control) {
        return fail("昵称长度不合法");
    }
    let changed = node.store.set_nickname(caller.uid, nickname);
    updated(node, caller, changed, "设置成功", json!({}))
}

fn avatar(node: &Shared, caller: &Caller, req: &Request, _: &Params) -> Response {
    let Some(file) = req.file("avatar").filter(|f| !f.data.is_empty()) else {
        return fail("请选择图片");
    };
    if file.data.len() > MAX_AVATAR {
        return fail("文件太大");
    }
    let url = match store_upload(node, Category::Picture, &file) {
        Ok(url) => url,
        Err(resp) => return resp,
    };
    let changed = node.store.set_avatar(caller.uid, &url);
    updated(node, caller, changed, "设置成功", json!({ "avatar": url }))
}

fn realname(node: &Shared, caller: &Caller, params: &Params) -> Response {
    let name = params.str("real_name");
    if !valid_name(name) {
        return fail("姓名长度不合法");
    }
    let today = today_cst(auth::now_secs());
    let Some(id) = IdNumber::parse(params.str("id_card"), today) else {
        return fail("身份证不合法");
    };
    let record = RealName {
        name_mask: mask_name(name),
        id_mask: id.mask(),
        id_hash: id.keyed_hash(&node.id_hash_key),
    };
    match node.store.set_realname(caller.uid, &record) {
        // Another account holds this number: the same answer as an invalid
        // number, so the endpoint does not tell whether a number is in use.
        Err(StoreError::Conflict) => fail("身份证不合法"),
        changed => updated(node, caller, changed, "实名认证成功", json!({})),
    }
}

fn location(node: &Shared, caller: &Caller, params: &Params) -> Response {
    let Some(point) = Point::parse(params.str("longitude"), params.str("latitude")) else {
        return fail("数据非法");
    };
    let now = auth::now_secs();
    match node.store.set_location(caller.uid, point, now) {
        Ok(Some(n)) => reindex(node, caller.uid, Some((point, now)))
            .unwrap_or_else(|| done("更新位置成功", n, json!({}))),
        Ok(None) => fail_with(super::AUTH_FAIL, "鉴权失败"),
        Err(e) => store_error(e),
    }
}

/// The fields anyone may see of a user.
pub(super) fn public(u: &User) -> Value {
    json!({
        "id": u.id,
        "username": u.username,
        "nickname": u.nickname,
        "avatar": u.avatar,
        "sex": u.sex,
        "realname_verified": u.realname_verified,
    })
}

fn info(node: &Shared, _: &Caller, params: &Params) -> Response {
    let id = match id_param(params, "id", "非法参数") {
        Ok(id) => id,
        Err(resp) => return resp,
    };
    match node.store.user_by_id(id) {
        Ok(Some(u)) => ok("请求成功", json!({ "user": public(&u) })),
        Ok(None) => fail_with(NOT_FOUND, "用户不存在"),
        Err(e) => store_error(e),
    }
}
