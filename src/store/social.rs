//! Friends and groups: who may message whom, and who receives a group's
//! messages.

use super::StoreError;

/// Friendships (stored in both directions) and group membership.
pub trait Social {
    /// Whether `a` has `b` as a friend.
    fn are_friends(&self, a: u64, b: u64) -> Result<bool, StoreError>;

    /// Whether `user` is a member of `group` (the owner is a member).
    fn is_group_member(&self, group: u64, user: u64) -> Result<bool, StoreError>;

    /// Every member of `group`, owner included, ascending by id; empty when
    /// the group does not exist.
    fn group_member_ids(&self, group: u64) -> Result<Vec<u64>, StoreError>;
}
