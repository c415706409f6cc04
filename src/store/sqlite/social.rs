//! SQLite side of [`Social`].

use rusqlite::{params, OptionalExtension};

use super::SqliteStore;
use crate::store::{Social, StoreError};

/// Tables of friends and groups; mirrors the social section of `database.sql`.
/// `chat_groups` because `groups` is a reserved word in MySQL 8.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS friends (
    user_id    INTEGER NOT NULL,
    friend_id  INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, friend_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_friends_friend ON friends (friend_id);

CREATE TABLE IF NOT EXISTS chat_groups (
    id         INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    owner_id   INTEGER NOT NULL,
    name       TEXT    NOT NULL,
    name_key   TEXT    NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX IF NOT EXISTS uk_chat_groups_name_key ON chat_groups (name_key);
CREATE INDEX IF NOT EXISTS idx_chat_groups_owner ON chat_groups (owner_id);

CREATE TABLE IF NOT EXISTS group_members (
    group_id  INTEGER NOT NULL,
    user_id   INTEGER NOT NULL,
    joined_at INTEGER NOT NULL,
    PRIMARY KEY (group_id, user_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_group_members_user ON group_members (user_id, group_id);
";

fn id(v: u64) -> i64 {
    // Ids above i64::MAX cannot exist in SQLite; -1 matches nothing.
    i64::try_from(v).unwrap_or(-1)
}

impl Social for SqliteStore {
    fn are_friends(&self, a: u64, b: u64) -> Result<bool, StoreError> {
        self.with_conn(|c| {
            c.prepare_cached("SELECT 1 FROM friends WHERE user_id = ?1 AND friend_id = ?2")?
                .query_row(params![id(a), id(b)], |_| Ok(()))
                .optional()
                .map(|r| r.is_some())
        })
    }

    fn is_group_member(&self, group: u64, user: u64) -> Result<bool, StoreError> {
        self.with_conn(|c| {
            c.prepare_cached("SELECT 1 FROM group_members WHERE group_id = ?1 AND user_id = ?2")?
                .query_row(params![id(group), id(user)], |_| Ok(()))
                .optional()
                .map(|r| r.is_some())
        })
    }

    fn group_member_ids(&self, group: u64) -> Result<Vec<u64>, StoreError> {
        self.with_conn(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT user_id FROM group_members WHERE group_id = ?1 ORDER BY user_id",
            )?;
            let rows = stmt.query_map(params![id(group)], |r| r.get::<_, i64>(0))?;
            rows.map(|r| r.map(|v| v as u64)).collect()
        })
    }
}
