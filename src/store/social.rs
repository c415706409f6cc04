//! Friends and groups: who may message whom, who receives a group's
//! messages, and the requests that change either.
//!
//! Rules both backends follow:
//! - Friendships are stored once per direction; making or ending one writes
//!   both rows in one transaction (or one statement).
//! - A request (friend or join) is *pending* until handled. The generated
//!   column `pending` is 1 while `status` is 0 and NULL afterwards, and a
//!   unique key over (from, to, pending) — (group, user, pending) for join
//!   requests — lets at most one request per pair be pending while keeping
//!   every handled one (NULLs never collide in a unique key). Two racing
//!   requests cannot both be pending: one gets `Err(Conflict)`.
//! - Handling a request marks it in the same transaction that writes its
//!   effect, and only a pending request can be handled: of two racing
//!   accepts exactly one succeeds, the other finds nothing pending.
//! - Search is a substring match on lower-cased text: `%`, `_` and every
//!   other character of the word match themselves (see [`like_pattern`]).
//!   Usernames are matched through their key (see
//!   [`username_key`](super::username_key)), nicknames through the Unicode
//!   lowercase of the nickname (MySQL's `LOWER`, a Rust function registered
//!   on SQLite connections), group names through their key
//!   ([`group_name_key`]), so both backends find the same rows.
//! - Lists are ordered by a unique column, so pages never overlap: users,
//!   friends, groups and members by id ascending, requests newest first.

use super::{username_key, StoreError};

/// Longest group name, in characters (`chat_groups.name`).
pub const MAX_GROUP_NAME_CHARS: usize = 64;
/// Longest `channel` of a friend request, in characters.
pub const MAX_CHANNEL_CHARS: usize = 32;
/// Longest `reason` of a friend request, in characters.
pub const MAX_REASON_CHARS: usize = 255;

/// `status` of a pending request.
pub const PENDING: i32 = 0;
/// `status` of an accepted request.
pub const ACCEPTED: i32 = 1;
/// `status` of a rejected request.
pub const REJECTED: i32 = -1;

/// A user as lists show them to other users.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// User id.
    pub id: u64,
    /// Username as registered.
    pub username: String,
    /// Display name.
    pub nickname: String,
    /// Avatar URL or file name; empty when none.
    pub avatar: String,
    /// 0 unknown; other values are defined by the protocol.
    pub sex: i32,
}

/// A friend request as its target sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct FriendRequest {
    /// Request id.
    pub id: u64,
    /// Who asked.
    pub from: Profile,
    /// Where the requester found the target (free text from the client).
    pub channel: String,
    /// The requester's message.
    pub reason: String,
    /// [`PENDING`], [`ACCEPTED`] or [`REJECTED`].
    pub status: i32,
    /// When it was sent, unix seconds.
    pub created_at: i64,
}

/// A group.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Group id, never reused.
    pub id: u64,
    /// The owner, who is also a member.
    pub owner_id: u64,
    /// Name as created (unique case-insensitively).
    pub name: String,
    /// Creation time, unix seconds.
    pub created_at: i64,
}

/// A group found by name, with its size.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundGroup {
    /// The group.
    pub group: Group,
    /// How many members it has, owner included.
    pub members: u64,
}

/// A group one belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct Membership {
    /// The group.
    pub group: Group,
    /// When the user joined (for the owner: when the group was created).
    pub joined_at: i64,
}

/// A member of a group.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// The member.
    pub user: Profile,
    /// When they joined.
    pub joined_at: i64,
}

/// A pending request to join a group, as its owner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinRequest {
    /// Request id.
    pub id: u64,
    /// Who asked.
    pub user: Profile,
    /// The group.
    pub group_id: u64,
    /// The group's name.
    pub group_name: String,
    /// When it was sent, unix seconds.
    pub created_at: i64,
}

/// What handling a join request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinHandled {
    /// The applicant is now a member.
    Accepted {
        /// The group.
        group: u64,
        /// The applicant.
        user: u64,
    },
    /// The request was rejected.
    Rejected {
        /// The group.
        group: u64,
        /// The applicant.
        user: u64,
    },
    /// No such request, already handled, or not one the caller may see
    /// (only the group's owner and the applicant may).
    NotFound,
    /// The caller made this request and its group no longer exists.
    NoGroup,
    /// The caller made this request but does not own the group.
    NotOwner,
}

/// What leaving a group did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Left {
    /// The user left.
    Left,
    /// The owner was the last member: the group is deleted.
    GroupDeleted,
    /// The user is not a member (or there is no such group).
    NotMember,
    /// The owner may not leave while other members remain.
    OwnerWithMembers,
}

/// Friendships (stored in both directions), groups, their members and the
/// requests that change them.
pub trait Social {
    /// For each `(a, b)`, whether `a` has `b` as a friend, in one query.
    fn friendships(&self, pairs: &[(u64, u64)]) -> Result<Vec<bool>, StoreError>;

    /// Whether `a` has `b` as a friend.
    fn are_friends(&self, a: u64, b: u64) -> Result<bool, StoreError> {
        Ok(self.friendships(&[(a, b)])?.first() == Some(&true))
    }

    /// Whether `user` is a member of `group` (the owner is a member).
    fn is_group_member(&self, group: u64, user: u64) -> Result<bool, StoreError>;

    /// Every member of `group`, owner included, ascending by id; empty when
    /// the group does not exist.
    fn group_member_ids(&self, group: u64) -> Result<Vec<u64>, StoreError>;

    /// Users whose username or nickname contains `word` (case-insensitive,
    /// every character literal), `except` excluded (the caller: nobody
    /// searches for themselves), ascending by id.
    fn search_users(
        &self,
        word: &str,
        except: u64,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<Profile>, StoreError>;

    /// The friends of `user`, ascending by id.
    fn friends(&self, user: u64, limit: u32, offset: u64) -> Result<Vec<Profile>, StoreError>;

    /// Records a pending request from `from` to `to` and returns its id.
    /// `Err(Conflict)` when one from `from` to `to` is already pending.
    /// `Err(Other)` when `channel` or `reason` is longer than
    /// [`MAX_CHANNEL_CHARS`] or [`MAX_REASON_CHARS`].
    fn request_friend(
        &self,
        from: u64,
        to: u64,
        channel: &str,
        reason: &str,
        now: i64,
    ) -> Result<u64, StoreError>;

    /// Friend requests sent to `user`, pending and handled, newest first.
    fn friend_requests_to(
        &self,
        user: u64,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<FriendRequest>, StoreError>;

    /// Accepts the pending request from `from` to `to`: in one transaction
    /// marks it (and a pending request from `to` to `from`, if any)
    /// accepted and makes them friends. `Ok(false)` when nothing from
    /// `from` to `to` is pending.
    fn accept_friend_request(&self, from: u64, to: u64, now: i64) -> Result<bool, StoreError>;

    /// Rejects the pending request from `from` to `to`; `Ok(false)` when
    /// there is none.
    fn reject_friend_request(&self, from: u64, to: u64, now: i64) -> Result<bool, StoreError>;

    /// Ends the friendship of `a` and `b` in both directions at once;
    /// `Ok(false)` when they were not friends.
    fn delete_friend(&self, a: u64, b: u64) -> Result<bool, StoreError>;

    /// Creates a group owned by `owner`, who becomes its first member in the
    /// same transaction. `Err(Conflict)` when the name is taken (compared
    /// through [`group_name_key`]); `Err(Other)` when it is longer than
    /// [`MAX_GROUP_NAME_CHARS`].
    fn create_group(&self, owner: u64, name: &str, now: i64) -> Result<Group, StoreError>;

    /// The group with this id.
    fn group(&self, id: u64) -> Result<Option<Group>, StoreError>;

    /// Groups whose name contains `word` (case-insensitive, every character
    /// literal), with their member counts, ascending by id.
    fn search_groups(
        &self,
        word: &str,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<FoundGroup>, StoreError>;

    /// The groups with these ids, with their member counts, ascending by id;
    /// unknown ids are skipped.
    fn groups_by_ids(&self, ids: &[u64]) -> Result<Vec<FoundGroup>, StoreError>;

    /// The groups `user` belongs to, ascending by group id.
    fn groups_of(&self, user: u64, limit: u32, offset: u64) -> Result<Vec<Membership>, StoreError>;

    /// Members of `group` with their profiles, ascending by user id.
    fn group_members(&self, group: u64, limit: u32, offset: u64)
        -> Result<Vec<Member>, StoreError>;

    /// Records a pending request of `user` to join `group` and returns its
    /// id. `Err(Conflict)` when one is already pending. The caller checks
    /// first that the group exists and the user is not in it.
    fn request_join(&self, group: u64, user: u64, now: i64) -> Result<u64, StoreError>;

    /// Pending join requests to the groups `owner` owns, newest first.
    fn join_requests_for(
        &self,
        owner: u64,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<JoinRequest>, StoreError>;

    /// Handles join request `id` on behalf of `caller`: when the caller owns
    /// the group and the request is pending, marks it and (on accept) adds
    /// the member, in one transaction. See [`JoinHandled`] for the rest.
    fn handle_join_request(
        &self,
        id: u64,
        caller: u64,
        accept: bool,
        now: i64,
    ) -> Result<JoinHandled, StoreError>;

    /// `user` leaves `group`, in one transaction with the checks: the owner
    /// may leave only as the last member, which deletes the group.
    fn leave_group(&self, group: u64, user: u64) -> Result<Left, StoreError>;

    /// Removes `user` from `group`; `Ok(false)` when they were not a
    /// member. The caller checks that `user` is not the owner.
    fn remove_member(&self, group: u64, user: u64) -> Result<bool, StoreError>;
}

/// The key that makes group names unique case-insensitively: the same rule
/// as usernames (Unicode lowercase).
pub fn group_name_key(name: &str) -> String {
    username_key(name)
}

/// The escape character of every LIKE pattern (`ESCAPE '!'`): not special
/// in SQL string literals of either database, unlike `\`.
const LIKE_ESCAPE: char = '!';

/// A LIKE pattern matching text whose lowercase contains the lowercase of
/// `word`, every character of `word` taken literally.
pub(crate) fn like_pattern(word: &str) -> String {
    let mut pattern = String::with_capacity(word.len() + 2);
    pattern.push('%');
    for c in username_key(word).chars() {
        if matches!(c, '%' | '_' | LIKE_ESCAPE) {
            pattern.push(LIKE_ESCAPE);
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// Checks the arguments of [`Social::request_friend`].
pub(crate) fn check_friend_request(channel: &str, reason: &str) -> Result<(), StoreError> {
    if channel.chars().count() > MAX_CHANNEL_CHARS || reason.chars().count() > MAX_REASON_CHARS {
        return Err(StoreError::Other(format!(
            "friend request channel over {MAX_CHANNEL_CHARS} or reason over \
             {MAX_REASON_CHARS} characters"
        )));
    }
    Ok(())
}

/// Checks the name given to [`Social::create_group`].
pub(crate) fn check_group_name(name: &str) -> Result<(), StoreError> {
    if name.chars().count() > MAX_GROUP_NAME_CHARS {
        return Err(StoreError::Other(format!(
            "group name longer than {MAX_GROUP_NAME_CHARS} characters"
        )));
    }
    Ok(())
}

/// A join request as stored: group, applicant, status.
pub(crate) type StoredJoin = (u64, u64, i32);

/// The decision of [`Social::handle_join_request`] from what its
/// transaction read: the request and the owner of its group (`None`: no
/// such group). `Ok((group, applicant))`: handle it.
pub(crate) fn judge_join(
    request: Option<StoredJoin>,
    owner: Option<u64>,
    caller: u64,
) -> Result<(u64, u64), JoinHandled> {
    let Some((group, applicant, status)) = request else {
        return Err(JoinHandled::NotFound);
    };
    match owner {
        Some(owner) if owner == caller && status == PENDING => Ok((group, applicant)),
        Some(owner) if owner == caller => Err(JoinHandled::NotFound),
        // The applicant may know their own request; nobody else may.
        _ if caller != applicant => Err(JoinHandled::NotFound),
        None => Err(JoinHandled::NoGroup),
        Some(_) => Err(JoinHandled::NotOwner),
    }
}

/// What [`Social::leave_group`] does, from what its transaction read: the
/// group's owner (`None`: no such group), whether the user is a member,
/// and how many members the group has.
pub(crate) fn judge_leave(owner: Option<u64>, user: u64, member: bool, members: u64) -> Left {
    match owner {
        None => Left::NotMember,
        Some(_) if !member => Left::NotMember,
        Some(owner) if owner != user => Left::Left,
        Some(_) if members > 1 => Left::OwnerWithMembers,
        Some(_) => Left::GroupDeleted,
    }
}

/// Queries both backends run as they are (`?` placeholders).
pub(crate) mod sql {
    /// Users matching a pattern: (except, key pattern, nickname pattern,
    /// limit, offset); `lower_nickname` is the backend's lowercase of
    /// `u.nickname`. Profile rows are `id, username, nickname, avatar, sex`.
    pub fn search_users(lower_nickname: &str) -> String {
        format!(
            "SELECT u.id, u.username, u.nickname, u.avatar, u.sex FROM users u \
             WHERE u.id <> ? \
             AND (u.username_key LIKE ? ESCAPE '!' OR {lower_nickname} LIKE ? ESCAPE '!') \
             ORDER BY u.id LIMIT ? OFFSET ?"
        )
    }

    pub const FRIENDS: &str = "SELECT u.id, u.username, u.nickname, u.avatar, u.sex \
         FROM friends f JOIN users u ON u.id = f.friend_id \
         WHERE f.user_id = ? ORDER BY f.friend_id LIMIT ? OFFSET ?";

    pub const REQUEST_FRIEND: &str = "INSERT INTO friend_requests \
         (from_id, to_id, channel, reason, status, created_at) VALUES (?, ?, ?, ?, 0, ?)";

    pub const FRIEND_REQUESTS_TO: &str =
        "SELECT r.id, u.id, u.username, u.nickname, u.avatar, u.sex, \
         r.channel, r.reason, r.status, r.created_at \
         FROM friend_requests r JOIN users u ON u.id = r.from_id \
         WHERE r.to_id = ? ORDER BY r.id DESC LIMIT ? OFFSET ?";

    /// (status, handled_at, from, to).
    pub const HANDLE_FRIEND_REQUEST: &str = "UPDATE friend_requests \
         SET status = ?, handled_at = ? WHERE from_id = ? AND to_id = ? AND status = 0";

    pub const DELETE_FRIEND: &str = "DELETE FROM friends \
         WHERE (user_id = ? AND friend_id = ?) OR (user_id = ? AND friend_id = ?)";

    pub const CREATE_GROUP: &str =
        "INSERT INTO chat_groups (owner_id, name, name_key, created_at) VALUES (?, ?, ?, ?)";

    pub const ADD_MEMBER: &str =
        "INSERT INTO group_members (group_id, user_id, joined_at) VALUES (?, ?, ?)";

    pub const GROUP: &str = "SELECT id, owner_id, name, created_at FROM chat_groups WHERE id = ?";

    pub const GROUP_OWNER: &str = "SELECT owner_id FROM chat_groups WHERE id = ?";

    /// Found-group rows: `id, owner_id, name, created_at, members`.
    const FOUND_GROUPS: &str = "SELECT g.id, g.owner_id, g.name, g.created_at, \
         (SELECT COUNT(*) FROM group_members m WHERE m.group_id = g.id) \
         FROM chat_groups g";

    /// (name key pattern, limit, offset).
    pub fn search_groups() -> String {
        format!("{FOUND_GROUPS} WHERE g.name_key LIKE ? ESCAPE '!' ORDER BY g.id LIMIT ? OFFSET ?")
    }

    /// The groups with `n` ids (one `?` each), ascending by id.
    pub fn groups_by_ids(n: usize) -> String {
        let marks = vec!["?"; n].join(", ");
        format!("{FOUND_GROUPS} WHERE g.id IN ({marks}) ORDER BY g.id")
    }

    pub const GROUPS_OF: &str = "SELECT g.id, g.owner_id, g.name, g.created_at, m.joined_at \
         FROM group_members m JOIN chat_groups g ON g.id = m.group_id \
         WHERE m.user_id = ? ORDER BY m.group_id LIMIT ? OFFSET ?";

    pub const GROUP_MEMBERS: &str = "SELECT u.id, u.username, u.nickname, u.avatar, u.sex, \
         m.joined_at FROM group_members m JOIN users u ON u.id = m.user_id \
         WHERE m.group_id = ? ORDER BY m.user_id LIMIT ? OFFSET ?";

    pub const REQUEST_JOIN: &str = "INSERT INTO group_join_requests \
         (group_id, user_id, status, created_at) VALUES (?, ?, 0, ?)";

    pub const JOIN_REQUESTS_FOR: &str = "SELECT r.id, u.id, u.username, u.nickname, u.avatar, \
         u.sex, g.id, g.name, r.created_at \
         FROM chat_groups g JOIN group_join_requests r ON r.group_id = g.id \
         JOIN users u ON u.id = r.user_id \
         WHERE g.owner_id = ? AND r.status = 0 ORDER BY r.id DESC LIMIT ? OFFSET ?";

    pub const JOIN_REQUEST: &str =
        "SELECT group_id, user_id, status FROM group_join_requests WHERE id = ?";

    /// (status, handled_at, id).
    pub const HANDLE_JOIN_REQUEST: &str =
        "UPDATE group_join_requests SET status = ?, handled_at = ? WHERE id = ? AND status = 0";

    pub const COUNT_MEMBERS: &str = "SELECT COUNT(*) FROM group_members WHERE group_id = ?";

    pub const IS_MEMBER: &str = "SELECT 1 FROM group_members WHERE group_id = ? AND user_id = ?";

    pub const REMOVE_MEMBER: &str = "DELETE FROM group_members WHERE group_id = ? AND user_id = ?";

    pub const DELETE_GROUP: &str = "DELETE FROM chat_groups WHERE id = ?";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_take_every_character_literally() {
        assert_eq!(like_pattern("Ab"), "%ab%");
        assert_eq!(like_pattern("a%b_c!d\\e"), "%a!%b!_c!!d\\e%");
        assert_eq!(like_pattern(""), "%%");
    }

    #[test]
    fn join_requests_are_judged_by_who_asks() {
        let (owner, applicant, other) = (1, 2, 3);
        let pending = Some((9, applicant, PENDING));
        let handled = Some((9, applicant, ACCEPTED));
        assert_eq!(
            judge_join(None, Some(owner), owner),
            Err(JoinHandled::NotFound)
        );
        assert_eq!(judge_join(pending, Some(owner), owner), Ok((9, applicant)));
        assert_eq!(
            judge_join(handled, Some(owner), owner),
            Err(JoinHandled::NotFound)
        );
        assert_eq!(
            judge_join(pending, Some(owner), other),
            Err(JoinHandled::NotFound)
        );
        assert_eq!(judge_join(pending, None, other), Err(JoinHandled::NotFound));
        assert_eq!(
            judge_join(pending, Some(owner), applicant),
            Err(JoinHandled::NotOwner)
        );
        assert_eq!(
            judge_join(pending, None, applicant),
            Err(JoinHandled::NoGroup)
        );
    }

    #[test]
    fn only_the_last_member_may_be_the_owner_leaving() {
        assert_eq!(judge_leave(None, 1, false, 0), Left::NotMember);
        assert_eq!(judge_leave(Some(1), 2, false, 3), Left::NotMember);
        assert_eq!(judge_leave(Some(1), 2, true, 3), Left::Left);
        assert_eq!(judge_leave(Some(1), 1, true, 2), Left::OwnerWithMembers);
        assert_eq!(judge_leave(Some(1), 1, true, 1), Left::GroupDeleted);
    }
}
