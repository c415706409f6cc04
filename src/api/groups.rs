//! Groups (PROTOCOL §1.2 `im/group/*`, §1.3 `im/group/members`): create,
//! search, my groups, members, join requests and their handling, leave and
//! kick, and the pushes 12, 13, 14 and 17, sent once the store has
//! committed.
//!
//! Choices where PROTOCOL is silent: names are trimmed and unique
//! case-insensitively; the owner leaving a group they are the last member
//! of deletes it; only members may list members (others get `您不是群成员`,
//! or `群组不存在`); a join request may be handled only by the group's
//! owner — its applicant hears `您不是群主，无法处理申请` (or `群组不存在`
//! once the group is gone), anyone else `加群申请不存在`, as for an id that
//! does not exist; a malformed or over-long parameter without its own text
//! answers `非法参数`.

use serde_json::{json, Value};

use super::{
    fail, id_param, in_order, ok, page_params, search_error, search_word, store_error, text_param,
    webhook, Caller, Route, Routes,
};
use crate::auth::now_secs;
use crate::http::{Params, Response};
use crate::message::{cmd, ope, Push};
use crate::node::Shared;
use crate::search::GroupDoc;
use crate::store::{JoinHandled, Left, StoreError, MAX_GROUP_NAME_CHARS};
use crate::webhook::Kind;

/// Group routes.
pub(super) const ROUTES: Routes = &[
    ("im/group/create", Route::Authed(create, true)),
    ("im/group/search", Route::Authed(search, true)),
    ("im/group/my", Route::Authed(my, true)),
    ("im/group/members", Route::Authed(members, true)),
    ("im/group/join/request", Route::Authed(join_request, true)),
    ("im/group/join/list", Route::Authed(join_list, true)),
    ("im/group/join/handle", Route::Authed(join_handle, true)),
    ("im/group/leave", Route::Authed(leave, true)),
    ("im/group/shot", Route::Authed(kick, true)),
];

fn group_id(params: &Params) -> Result<u64, Response> {
    id_param(params, "group_id", "非法参数")
}

fn create(node: &Shared, caller: &Caller, params: &Params) -> Response {
    let name = try_param!(text_param(
        params,
        "name",
        MAX_GROUP_NAME_CHARS,
        "请输入群名称"
    ));
    match node.store.create_group(caller.uid, name, now_secs()) {
        Ok(group) => {
            if let Err(e) = node.search.group_changed(&GroupDoc::from(&group)) {
                log::warn!("new group {} not indexed: {e}", group.id);
            }
            ok("创建成功", json!({ "id": group.id }))
        }
        Err(StoreError::Conflict) => fail("群组已存在"),
        Err(e) => store_error(e),
    }
}

fn search(node: &Shared, _: &Caller, params: &Params) -> Response {
    let word = try_param!(search_word(params, MAX_GROUP_NAME_CHARS, "请输入群组名称"));
    let (limit, offset) = try_param!(page_params(params));
    let ids = match node.search.groups(word, limit, offset) {
        Ok(ids) => ids,
        Err(e) => return search_error(e),
    };
    match node.store.groups_by_ids(&ids) {
        Ok(found) => {
            let list: Vec<Value> = in_order(&ids, found, |f| f.group.id)
                .iter()
                .map(|f| {
                    json!({
                        "Id": f.group.id,
                        "OUid": f.group.owner_id,
                        "Name": f.group.name,
                        "CreatedAt": f.group.created_at,
                        "Members": f.members,
                    })
                })
                .collect();
            ok("查询成功", json!({ "list": list }))
        }
        Err(e) => store_error(e),
    }
}

fn my(node: &Shared, caller: &Caller, params: &Params) -> Response {
    let (limit, offset) = try_param!(page_params(params));
    match node.store.groups_of(caller.uid, limit, offset) {
        Ok(groups) => {
            let list: Vec<Value> = groups
                .iter()
                .map(|m| {
                    json!({
                        "Id": m.group.id,
                        "OUid": m.group.owner_id,
                        "Name": m.group.name,
                        "CreatedAt": m.group.created_at,
                        "JoinAt": m.joined_at,
                    })
                })
                .collect();
            ok("获取成功", json!({ "list": list }))
        }
        Err(e) => store_error(e),
    }
}

fn members(node: &Shared, caller: &Caller, params: &Params) -> Response {
    let group = try_param!(group_id(params));
    let (limit, offset) = try_param!(page_params(params));
    match node.store.is_group_member(group, caller.uid) {
        Ok(true) => {}
        Ok(false) => {
            return match node.store.group(group) {
                Ok(Some(_)) => fail("您不是群成员"),
                Ok(None) => fail("群组不存在"),
                Err(e) => store_error(e),
            }
        }
        Err(e) => return store_error(e),
    }
    match node.store.group_members(group, limit, offset) {
        Ok(members) => {
            let list: Vec<Value> = members
                .iter()
                .map(|m| {
                    json!({
                        "Id": m.user.id,
                        "Username": m.user.username,
                        "Nickname": m.user.nickname,
                        "Avatar": m.user.avatar,
                        "Sex": m.user.sex,
                        "JoinAt": m.joined_at,
                    })
                })
                .collect();
            ok("获取成功", json!({ "list": list }))
        }
        Err(e) => store_error(e),
    }
}

fn join_request(node: &Shared, caller: &Caller, params: &Params) -> Response {
    let group = match node.store.group(try_param!(group_id(params))) {
        Ok(Some(g)) => g,
        Ok(None) => return fail("群组不存在"),
        Err(e) => return store_error(e),
    };
    if group.owner_id == caller.uid {
        return fail("你已经是群主");
    }
    match node.store.is_group_member(group.id, caller.uid) {
        Ok(true) => return fail("你已经在群组里"),
        Ok(false) => {}
        Err(e) => return store_error(e),
    }
    match node.store.request_join(group.id, caller.uid, now_secs()) {
        Ok(_) => {
            let push = Push::notice(
                cmd::JOIN_REQUEST,
                caller.uid,
                group.id,
                ope::GROUP,
                "对方申请加入群组",
            );
            node.delivery.to_user(group.owner_id, push.frame());
            ok("申请成功", json!({}))
        }
        Err(StoreError::Conflict) => fail("你的申请加入群组请求已经在处理中"),
        Err(e) => store_error(e),
    }
}

fn join_list(node: &Shared, caller: &Caller, params: &Params) -> Response {
    let (limit, offset) = try_param!(page_params(params));
    match node.store.join_requests_for(caller.uid, limit, offset) {
        Ok(reqs) => {
            let list: Vec<Value> = reqs
                .iter()
                .map(|r| {
                    json!({
                        "JoinId": r.id,
                        "UserId": r.user.id,
                        "GroupId": r.group_id,
                        "Username": r.user.username,
                        "Nickname": r.user.nickname,
                        "Avatar": r.user.avatar,
                        "GroupName": r.group_name,
                        "JoinAt": r.created_at,
                    })
                })
                .collect();
            ok("获取成功", json!({ "list": list }))
        }
        Err(e) => store_error(e),
    }
}

fn join_handle(node: &Shared, caller: &Caller, params: &Params) -> Response {
    let join = try_param!(id_param(params, "join_id", "非法参数"));
    let accept = match params.str("status").trim() {
        "1" => true,
        "-1" | "0" => false,
        _ => return fail("非法参数"),
    };
    let (command, group, user, body) =
        match node
            .store
            .handle_join_request(join, caller.uid, accept, now_secs())
        {
            Ok(JoinHandled::Accepted { group, user }) => {
                (cmd::JOIN_ACCEPTED, group, user, "群主同意您加入群组")
            }
            Ok(JoinHandled::Rejected { group, user }) => {
                (cmd::JOIN_REJECTED, group, user, "群主拒绝了你的加群申请")
            }
            Ok(JoinHandled::NotFound) => return fail("加群申请不存在"),
            Ok(JoinHandled::NoGroup) => return fail("群组不存在"),
            Ok(JoinHandled::NotOwner) => return fail("您不是群主，无法处理申请"),
            Err(e) => return store_error(e),
        };
    let push = Push::notice(command, group, user, ope::GROUP, body);
    node.delivery.to_user(user, push.frame());
    if command == cmd::JOIN_ACCEPTED {
        let joined = json!({ "group_id": group, "uid": user });
        webhook(node, Kind::MemberJoined, joined);
    }
    ok("处理成功", json!({}))
}

fn leave(node: &Shared, caller: &Caller, params: &Params) -> Response {
    let group = try_param!(group_id(params));
    let left = json!({ "group_id": group, "uid": caller.uid, "reason": "left" });
    match node.store.leave_group(group, caller.uid) {
        Ok(Left::Left) => {
            webhook(node, Kind::MemberLeft, left);
            ok("退出群成功", json!({}))
        }
        Ok(Left::GroupDeleted) => {
            if let Err(e) = node.search.group_removed(group) {
                log::warn!("deleted group {group} not unindexed: {e}");
            }
            webhook(node, Kind::MemberLeft, left);
            ok("退出群成功", json!({}))
        }
        Ok(Left::NotMember) => fail("你不在群里"),
        Ok(Left::OwnerWithMembers) => fail("群主不能退出群组"),
        Err(e) => store_error(e),
    }
}

fn kick(node: &Shared, caller: &Caller, params: &Params) -> Response {
    let group = try_param!(group_id(params));
    let user = try_param!(id_param(params, "user_id", "非法参数"));
    match node.store.group(group) {
        Ok(Some(g)) if g.owner_id == caller.uid => {}
        Ok(Some(_)) => return fail("你不是群主"),
        Ok(None) => return fail("群组不存在"),
        Err(e) => return store_error(e),
    }
    if user == caller.uid {
        return fail("不能踢出自己");
    }
    match node.store.remove_member(group, user) {
        Ok(true) => {
            let push = Push::notice(cmd::KICKED, group, user, ope::GROUP, "你被踢出群组");
            node.delivery.to_user(user, push.frame());
            let kicked = json!({ "group_id": group, "uid": user, "reason": "kicked" });
            webhook(node, Kind::MemberLeft, kicked);
            ok("踢出群成功", json!({}))
        }
        Ok(false) => fail("用户不在群里"),
        Err(e) => store_error(e),
    }
}
