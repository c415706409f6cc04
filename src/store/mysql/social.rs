//! MySQL/MariaDB side of [`Social`].

use ::mysql::prelude::Queryable;

use super::MysqlStore;
use crate::store::{Social, StoreError};

impl Social for MysqlStore {
    fn are_friends(&self, a: u64, b: u64) -> Result<bool, StoreError> {
        let row: Option<u8> = self.run(|c| {
            c.exec_first(
                "SELECT 1 FROM friends WHERE user_id = ? AND friend_id = ?",
                (a, b),
            )
        })?;
        Ok(row.is_some())
    }

    fn is_group_member(&self, group: u64, user: u64) -> Result<bool, StoreError> {
        let row: Option<u8> = self.run(|c| {
            c.exec_first(
                "SELECT 1 FROM group_members WHERE group_id = ? AND user_id = ?",
                (group, user),
            )
        })?;
        Ok(row.is_some())
    }

    fn group_member_ids(&self, group: u64) -> Result<Vec<u64>, StoreError> {
        self.run(|c| {
            c.exec(
                "SELECT user_id FROM group_members WHERE group_id = ? ORDER BY user_id",
                (group,),
            )
        })
    }
}
