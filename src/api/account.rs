//! Accounts: register, login (upgrading an imported weIm-go password hash
//! to argon2id), logout and the caller's own profile.

use serde_json::json;

use super::{fail, fail_with, ok, store_error, throttled, Caller, Route, Routes, AUTH_FAIL};
use crate::access::BANNED;
use crate::auth;
use crate::http::{Params, Request, Response};
use crate::metrics::Refusal;
use crate::node::Shared;
use crate::search::UserDoc;
use crate::store::{StoreError, User};
use crate::ws::close;

/// Account routes.
pub(super) const ROUTES: Routes = &[
    ("register", Route::Public(register)),
    ("login", Route::Public(login)),
    ("logout", Route::Authed(logout, false)),
    ("user/me", Route::Authed(me, true)),
];

fn is_han(c: char) -> bool {
    matches!(c,
        '\u{2E80}'..='\u{2FDF}' | '\u{3005}' | '\u{3007}' | '\u{3021}'..='\u{3029}'
        | '\u{3038}'..='\u{303B}' | '\u{3400}'..='\u{4DBF}' | '\u{4E00}'..='\u{9FFF}'
        | '\u{F900}'..='\u{FAFF}' | '\u{20000}'..='\u{3134F}')
}

/// Why a new username was refused besides its length: it may hold ASCII
/// letters, digits, `_`, `-` and `.` only.
const MSG_USERNAME_CHARS: &str = "用户名只能包含英文字母、数字、下划线(_)、连字符(-)和点(.)";

/// Whether `c` may be part of a new username: no look-alike letters
/// (full-width, dotless i), no control, format or space characters.
fn username_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
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

/// The signed-in answer of register and login: the first token of a new
/// session.
fn signed_in(node: &Shared, user: &User) -> Response {
    let token = match node.tokens.start(user.id) {
        Ok(t) => t,
        Err(e) => {
            log::error!("{e}");
            return Response::error(500);
        }
    };
    ok(
        "登录成功",
        json!({
            "t": token,
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

fn register(node: &Shared, req: &Request, params: &Params) -> Response {
    let (username, password) = match check_credentials(params) {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    if !username.chars().all(username_char) {
        return fail(MSG_USERNAME_CHARS);
    }
    if let Err(refused) = node.throttle.register_allowed(node.client_addr(req)) {
        return throttled(refused, 200, "注册过于频繁，请稍后再试");
    }
    let hash = match auth::hash_password(password) {
        Ok(h) => h,
        Err(e) => {
            log::error!("password hash: {e}");
            return Response::error(500);
        }
    };
    match node.store.create_user(username, &hash, auth::now_secs()) {
        Ok(user) => {
            let doc = UserDoc {
                user: &user,
                location: None,
            };
            if let Err(e) = node.search.user_changed(&doc) {
                log::warn!("new user {} not indexed: {e}", user.id);
            }
            signed_in(node, &user)
        }
        Err(StoreError::Conflict) => fail("用户已存在，请更换用户名后重试"),
        Err(e) => store_error(e),
    }
}

fn login(node: &Shared, req: &Request, params: &Params) -> Response {
    let (username, password) = match check_credentials(params) {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    // Counted as a failure from here on, unless taken back.
    let ip = node.client_addr(req);
    if let Err(refused) = node.throttle.login_attempt(username, ip) {
        return throttled(refused, 200, "登录失败次数过多，请稍后再试");
    }
    let user = match node.store.user_by_name(username) {
        Ok(Some(u)) => u,
        Ok(None) => return fail("用户不存在，请更换用户名后重试"),
        Err(e) => {
            node.throttle.login_ok(username, ip);
            return store_error(e);
        }
    };
    if !auth::verify_password(password, &user.password_hash) {
        return fail("密码错误");
    }
    node.throttle.login_ok(username, ip);
    match node.store.user_status(user.id) {
        Ok(status) if status.active_at(auth::now_secs()) => {}
        Ok(_) => {
            node.metrics.refused(Refusal::Banned);
            return fail_with(AUTH_FAIL, BANNED);
        }
        Err(e) => return store_error(e),
    }
    if auth::needs_rehash(&user.password_hash) {
        upgrade_hash(node, &user, password);
    }
    signed_in(node, &user)
}

/// Replaces an imported weIm-go hash by argon2id once its password is
/// known to be right. A failure only leaves the old hash for the next login.
fn upgrade_hash(node: &Shared, user: &User, password: &str) {
    let result = auth::hash_password(password).and_then(|new| {
        node.store
            .replace_password_hash(user.id, &user.password_hash, &new)
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(true) => log::info!(
            "user {}: imported password hash replaced by argon2id",
            user.id
        ),
        Ok(false) => {}
        Err(e) => log::warn!("user {}: imported password hash kept: {e}", user.id),
    }
}

/// Ends the caller's session on every node: its tokens, issued before or
/// after this call, are refused, and its WebSockets are closed with 4001.
/// Persisted first, so a node that starts later or missed the news from
/// Redis still refuses them.
fn logout(node: &Shared, caller: &Caller, _: &Params) -> Response {
    let who = &caller.who;
    if let Err(e) = node
        .store
        .revoke_session(&auth::format_sid(who.sid), who.end)
    {
        return store_error(e);
    }
    node.tokens.revoke(who.sid, who.end);
    if let Some(c) = node.delivery.cluster() {
        c.revoke(who.sid, who.end);
    }
    node.delivery
        .kick(who.uid, Some(who.sid), close::LOGGED_OUT);
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
