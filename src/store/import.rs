//! Bringing another server's data in with its ids kept (`weim migrate`).
//!
//! Each call stores one batch in one transaction and skips what is already
//! there (a row with the same id; for friendships and memberships, the same
//! pair), so an interrupted import can simply be run again and a finished
//! one adds nothing. Ids are inserted as given: both databases move their
//! auto-increment counters past the largest id inserted (SQLite's
//! `sqlite_sequence`, InnoDB's counter), so rows created later get higher
//! ids. Values are checked against the column sizes here, as for every
//! other write, so both backends refuse the same rows.

use super::profile::check_len;
use super::social::{check_friend_request, check_group_name};
use super::{
    check_new_user, Group, Message, RealName, StoreError, User, ACCEPTED, MAX_AVATAR_CHARS,
    MAX_NICKNAME_CHARS, PENDING, REJECTED,
};
use crate::geo::Point;
use crate::store::messages::{OPE_FRIEND, OPE_GROUP, STATUS_WITHDRAWN};

/// An account to import.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedUser {
    /// The account; `realname_verified` must say whether `realname` is set.
    pub user: User,
    /// Its real-name verification, if any.
    pub realname: Option<RealName>,
    /// Its last location and when it was set (unix seconds), if any.
    pub location: Option<(Point, i64)>,
}

/// What [`Import::import_users`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsersImported {
    /// Accounts added.
    pub added: u64,
    /// Of those, accounts stored without their real-name verification
    /// because another account holds the same ID number.
    pub realnames_dropped: u64,
}

/// One direction of a friendship (`user_id` lists `friend_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportedFriend {
    /// Whose list.
    pub user_id: u64,
    /// Who is on it.
    pub friend_id: u64,
    /// Since when, unix seconds.
    pub created_at: i64,
}

/// A friend request to import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedFriendRequest {
    /// Request id.
    pub id: u64,
    /// Requester.
    pub from_id: u64,
    /// Requested.
    pub to_id: u64,
    /// How the requester found the other.
    pub channel: String,
    /// The requester's words.
    pub reason: String,
    /// [`PENDING`], [`ACCEPTED`] or [`REJECTED`].
    pub status: i32,
    /// Sent, unix seconds.
    pub created_at: i64,
    /// Accepted or rejected, unix seconds; `None` while pending.
    pub handled_at: Option<i64>,
}

/// A group membership to import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportedMember {
    /// The group.
    pub group_id: u64,
    /// The member.
    pub user_id: u64,
    /// Joined, unix seconds.
    pub joined_at: i64,
}

/// A request to join a group, to import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportedJoinRequest {
    /// Request id.
    pub id: u64,
    /// The group.
    pub group_id: u64,
    /// The applicant.
    pub user_id: u64,
    /// [`PENDING`], [`ACCEPTED`] or [`REJECTED`].
    pub status: i32,
    /// Sent, unix seconds.
    pub created_at: i64,
    /// Accepted or rejected, unix seconds; `None` while pending.
    pub handled_at: Option<i64>,
}

/// An import recorded in the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportRecord {
    /// When the first run began, unix seconds.
    pub started_at: i64,
    /// When a run last completed, unix seconds.
    pub finished_at: Option<i64>,
}

/// Longest import source name, in bytes (`imports.source`).
pub const MAX_IMPORT_SOURCE_LEN: usize = 255;

/// Imports with ids kept. Every `import_*` call is one transaction and
/// answers how many rows it added.
pub trait Import {
    /// Whether any account, group, friendship, membership, request or
    /// message is stored.
    fn holds_data(&self) -> Result<bool, StoreError>;

    /// The record of imports from `source`, if one was begun.
    fn import_record(&self, source: &str) -> Result<Option<ImportRecord>, StoreError>;

    /// Records that an import from `source` begins at `now` (an earlier
    /// beginning is kept).
    fn begin_import(&self, source: &str, now: i64) -> Result<(), StoreError>;

    /// Records that an import from `source` completed at `now`.
    fn finish_import(&self, source: &str, now: i64) -> Result<(), StoreError>;

    /// Adds the accounts whose id is not taken, each with its delivery
    /// cursor at `delivered_upto` when that is above 0 (messages up to it
    /// count as delivered). An account whose ID number another account
    /// holds is stored without its verification. `Err(Conflict)` when a
    /// username is taken by another account.
    fn import_users(
        &self,
        users: &[ImportedUser],
        delivered_upto: u64,
    ) -> Result<UsersImported, StoreError>;

    /// Adds the friendship directions not stored yet.
    fn import_friends(&self, rows: &[ImportedFriend]) -> Result<u64, StoreError>;

    /// Adds the friend requests whose id is not taken. `Err(Conflict)` when
    /// a pair would have two pending requests.
    fn import_friend_requests(&self, rows: &[ImportedFriendRequest]) -> Result<u64, StoreError>;

    /// Adds the groups whose id is not taken. `Err(Conflict)` when a name
    /// is taken by another group (names compare case-insensitively).
    fn import_groups(&self, rows: &[Group]) -> Result<u64, StoreError>;

    /// Adds the memberships not stored yet.
    fn import_members(&self, rows: &[ImportedMember]) -> Result<u64, StoreError>;

    /// Adds the join requests whose id is not taken. `Err(Conflict)` when a
    /// user would have two pending requests to one group.
    fn import_join_requests(&self, rows: &[ImportedJoinRequest]) -> Result<u64, StoreError>;

    /// Adds the messages whose id is not taken (no client message id).
    /// Withdrawn messages must have an empty body.
    fn import_messages(&self, rows: &[Message]) -> Result<u64, StoreError>;
}

/// Any row in a table of data (the query answers 0 or 1).
pub(crate) const HOLDS_DATA_SQL: &str = "SELECT CASE WHEN EXISTS (SELECT 1 FROM users) \
     OR EXISTS (SELECT 1 FROM chat_groups) OR EXISTS (SELECT 1 FROM friends) \
     OR EXISTS (SELECT 1 FROM group_members) OR EXISTS (SELECT 1 FROM friend_requests) \
     OR EXISTS (SELECT 1 FROM group_join_requests) OR EXISTS (SELECT 1 FROM messages) \
     THEN 1 ELSE 0 END";

fn other(msg: String) -> StoreError {
    StoreError::Other(msg)
}

/// Checks a source name.
pub(crate) fn check_source(source: &str) -> Result<(), StoreError> {
    if source.is_empty() || source.len() > MAX_IMPORT_SOURCE_LEN {
        return Err(other(format!(
            "import source must be 1 to {MAX_IMPORT_SOURCE_LEN} bytes"
        )));
    }
    Ok(())
}

/// Checks an account to import.
pub(crate) fn check_user(u: &ImportedUser) -> Result<(), StoreError> {
    let user = &u.user;
    let what = |e: StoreError| other(format!("user {}: {e}", user.id));
    check_new_user(&user.username, &user.password_hash).map_err(what)?;
    check_len("nickname", &user.nickname, MAX_NICKNAME_CHARS).map_err(what)?;
    check_len("avatar", &user.avatar, MAX_AVATAR_CHARS).map_err(what)?;
    if user.realname_verified != u.realname.is_some() {
        return Err(other(format!(
            "user {}: realname_verified disagrees with the verification",
            user.id
        )));
    }
    Ok(())
}

/// Checks a request's status and handling time.
fn check_status(
    what: &str,
    id: u64,
    status: i32,
    handled_at: Option<i64>,
) -> Result<(), StoreError> {
    let ok = match status {
        PENDING => handled_at.is_none(),
        ACCEPTED | REJECTED => handled_at.is_some(),
        _ => false,
    };
    if !ok {
        return Err(other(format!(
            "{what} {id}: status {status} with handled_at {handled_at:?}"
        )));
    }
    Ok(())
}

/// Checks a friend request to import.
pub(crate) fn check_imported_friend_request(r: &ImportedFriendRequest) -> Result<(), StoreError> {
    check_friend_request(&r.channel, &r.reason)
        .map_err(|e| other(format!("friend request {}: {e}", r.id)))?;
    check_status("friend request", r.id, r.status, r.handled_at)
}

/// Checks a group to import.
pub(crate) fn check_imported_group(g: &Group) -> Result<(), StoreError> {
    check_group_name(&g.name).map_err(|e| other(format!("group {}: {e}", g.id)))
}

/// Checks a join request to import.
pub(crate) fn check_imported_join_request(r: &ImportedJoinRequest) -> Result<(), StoreError> {
    check_status("join request", r.id, r.status, r.handled_at)
}

/// Checks a message to import.
pub(crate) fn check_imported_message(m: &Message) -> Result<(), StoreError> {
    if m.ope != OPE_FRIEND && m.ope != OPE_GROUP {
        return Err(other(format!("message {}: unknown ope {}", m.id, m.ope)));
    }
    if m.status != 0 && m.status != STATUS_WITHDRAWN {
        return Err(other(format!("message {}: status {}", m.id, m.status)));
    }
    if m.status == STATUS_WITHDRAWN && !m.body.is_empty() {
        return Err(other(format!("message {}: withdrawn with a body", m.id)));
    }
    Ok(())
}
