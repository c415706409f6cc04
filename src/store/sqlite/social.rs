//! SQLite side of [`Social`]. Write transactions start `IMMEDIATE`, so they
//! run one at a time and read what they are about to change.

use rusqlite::functions::FunctionFlags;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row, TransactionBehavior};

use super::SqliteStore;
use crate::store::social::{
    check_friend_request, check_group_name, group_name_key, judge_join, judge_leave, like_pattern,
    sql, StoredJoin, ACCEPTED, REJECTED,
};
use crate::store::{
    FoundGroup, FriendRequest, Group, JoinHandled, JoinRequest, Left, Member, Membership, Profile,
    Social, StoreError,
};

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

CREATE TABLE IF NOT EXISTS friend_requests (
    id         INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    from_id    INTEGER NOT NULL,
    to_id      INTEGER NOT NULL,
    channel    TEXT    NOT NULL DEFAULT '',
    reason     TEXT    NOT NULL DEFAULT '',
    status     INTEGER NOT NULL DEFAULT 0,
    pending    INTEGER GENERATED ALWAYS AS (CASE WHEN status = 0 THEN 1 END) STORED,
    created_at INTEGER NOT NULL,
    handled_at INTEGER,
    CONSTRAINT ck_friend_requests_status CHECK (status IN (-1, 0, 1))
) STRICT;
CREATE UNIQUE INDEX IF NOT EXISTS uk_friend_requests_pending
    ON friend_requests (from_id, to_id, pending);
CREATE INDEX IF NOT EXISTS idx_friend_requests_to ON friend_requests (to_id, id);

CREATE TABLE IF NOT EXISTS group_join_requests (
    id         INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    group_id   INTEGER NOT NULL,
    user_id    INTEGER NOT NULL,
    status     INTEGER NOT NULL DEFAULT 0,
    pending    INTEGER GENERATED ALWAYS AS (CASE WHEN status = 0 THEN 1 END) STORED,
    created_at INTEGER NOT NULL,
    handled_at INTEGER,
    CONSTRAINT ck_group_join_requests_status CHECK (status IN (-1, 0, 1))
) STRICT;
CREATE UNIQUE INDEX IF NOT EXISTS uk_group_join_requests_pending
    ON group_join_requests (group_id, user_id, pending);
CREATE INDEX IF NOT EXISTS idx_group_join_requests_user ON group_join_requests (user_id);
";

/// The nickname's lowercase in searches: Unicode, as MySQL's `LOWER` (the
/// built-in `lower` of SQLite folds ASCII only).
const LOWER_NICKNAME: &str = "weim_lower(u.nickname)";

/// Registers the SQL functions the social queries use; called on every
/// new connection.
pub(super) fn register_functions(conn: &Connection) -> rusqlite::Result<()> {
    conn.create_scalar_function(
        "weim_lower",
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| Ok(ctx.get::<Option<String>>(0)?.map(|s| s.to_lowercase())),
    )
}

fn id(v: u64) -> i64 {
    // Ids above i64::MAX cannot exist in SQLite; -1 matches nothing.
    i64::try_from(v).unwrap_or(-1)
}

/// A LIMIT/OFFSET pair as SQLite parameters.
fn page(limit: u32, offset: u64) -> (i64, i64) {
    (i64::from(limit), i64::try_from(offset).unwrap_or(i64::MAX))
}

/// A profile in columns `at..at + 5` of a row.
fn profile(row: &Row<'_>, at: usize) -> rusqlite::Result<Profile> {
    Ok(Profile {
        id: row.get(at)?,
        username: row.get(at + 1)?,
        nickname: row.get(at + 2)?,
        avatar: row.get(at + 3)?,
        sex: row.get(at + 4)?,
    })
}

fn group(row: &Row<'_>) -> rusqlite::Result<Group> {
    Ok(Group {
        id: row.get(0)?,
        owner_id: row.get(1)?,
        name: row.get(2)?,
        created_at: row.get(3)?,
    })
}

/// A found-group row (see [`sql::search_groups`]).
fn found_group(row: &Row<'_>) -> rusqlite::Result<FoundGroup> {
    Ok(FoundGroup {
        group: group(row)?,
        members: row.get(4)?,
    })
}

/// Runs a query with `args` and maps every row.
fn list<T>(
    c: &Connection,
    query: &str,
    args: impl rusqlite::Params,
    map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    let mut stmt = c.prepare_cached(query)?;
    let rows = stmt.query_map(args, map)?;
    rows.collect()
}

fn exists(c: &Connection, query: &str, args: impl rusqlite::Params) -> rusqlite::Result<bool> {
    c.prepare_cached(query)?
        .query_row(args, |_| Ok(()))
        .optional()
        .map(|r| r.is_some())
}

fn group_owner(c: &Connection, group: u64) -> rusqlite::Result<Option<u64>> {
    c.prepare_cached(sql::GROUP_OWNER)?
        .query_row(params![id(group)], |r| r.get(0))
        .optional()
}

impl Social for SqliteStore {
    fn friendships(&self, pairs: &[(u64, u64)]) -> Result<Vec<bool>, StoreError> {
        self.with_conn(|c| {
            pairs
                .iter()
                .map(|&(a, b)| {
                    exists(
                        c,
                        "SELECT 1 FROM friends WHERE user_id = ?1 AND friend_id = ?2",
                        params![id(a), id(b)],
                    )
                })
                .collect()
        })
    }

    fn is_group_member(&self, group: u64, user: u64) -> Result<bool, StoreError> {
        self.with_conn(|c| exists(c, sql::IS_MEMBER, params![id(group), id(user)]))
    }

    fn group_member_ids(&self, group: u64) -> Result<Vec<u64>, StoreError> {
        self.with_conn(|c| {
            list(
                c,
                "SELECT user_id FROM group_members WHERE group_id = ?1 ORDER BY user_id",
                params![id(group)],
                |r| r.get(0),
            )
        })
    }

    fn search_users(
        &self,
        word: &str,
        except: u64,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<Profile>, StoreError> {
        let pattern = like_pattern(word);
        let (limit, offset) = page(limit, offset);
        self.with_conn(|c| {
            list(
                c,
                &sql::search_users(LOWER_NICKNAME),
                params![id(except), pattern, pattern, limit, offset],
                |r| profile(r, 0),
            )
        })
    }

    fn friends(&self, user: u64, limit: u32, offset: u64) -> Result<Vec<Profile>, StoreError> {
        let (limit, offset) = page(limit, offset);
        self.with_conn(|c| {
            list(c, sql::FRIENDS, params![id(user), limit, offset], |r| {
                profile(r, 0)
            })
        })
    }

    fn request_friend(
        &self,
        from: u64,
        to: u64,
        channel: &str,
        reason: &str,
        now: i64,
    ) -> Result<u64, StoreError> {
        check_friend_request(channel, reason)?;
        self.with_conn(|c| {
            c.prepare_cached(sql::REQUEST_FRIEND)?.execute(params![
                id(from),
                id(to),
                channel,
                reason,
                now
            ])?;
            Ok(c.last_insert_rowid() as u64)
        })
    }

    fn friend_requests_to(
        &self,
        user: u64,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<FriendRequest>, StoreError> {
        let (limit, offset) = page(limit, offset);
        self.with_conn(|c| {
            list(
                c,
                sql::FRIEND_REQUESTS_TO,
                params![id(user), limit, offset],
                |r| {
                    Ok(FriendRequest {
                        id: r.get(0)?,
                        from: profile(r, 1)?,
                        channel: r.get(6)?,
                        reason: r.get(7)?,
                        status: r.get(8)?,
                        created_at: r.get(9)?,
                    })
                },
            )
        })
    }

    fn accept_friend_request(&self, from: u64, to: u64, now: i64) -> Result<bool, StoreError> {
        self.with_conn(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let (from, to) = (id(from), id(to));
            let mut handle = tx.prepare_cached(sql::HANDLE_FRIEND_REQUEST)?;
            if handle.execute(params![ACCEPTED, now, from, to])? == 0 {
                return Ok(false);
            }
            // A request the other way is settled by this one.
            handle.execute(params![ACCEPTED, now, to, from])?;
            drop(handle);
            tx.prepare_cached(
                "INSERT OR IGNORE INTO friends (user_id, friend_id, created_at) \
                 VALUES (?1, ?2, ?3), (?2, ?1, ?3)",
            )?
            .execute(params![from, to, now])?;
            tx.commit()?;
            Ok(true)
        })
    }

    fn reject_friend_request(&self, from: u64, to: u64, now: i64) -> Result<bool, StoreError> {
        self.with_conn(|c| {
            let n = c
                .prepare_cached(sql::HANDLE_FRIEND_REQUEST)?
                .execute(params![REJECTED, now, id(from), id(to)])?;
            Ok(n > 0)
        })
    }

    fn delete_friend(&self, a: u64, b: u64) -> Result<bool, StoreError> {
        self.with_conn(|c| {
            let n = c.prepare_cached(sql::DELETE_FRIEND)?.execute(params![
                id(a),
                id(b),
                id(b),
                id(a)
            ])?;
            Ok(n > 0)
        })
    }

    fn create_group(&self, owner: u64, name: &str, now: i64) -> Result<Group, StoreError> {
        check_group_name(name)?;
        let key = group_name_key(name);
        let group_id = self.with_conn(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.prepare_cached(sql::CREATE_GROUP)?
                .execute(params![id(owner), name, key, now])?;
            let group_id = tx.last_insert_rowid();
            tx.prepare_cached(sql::ADD_MEMBER)?
                .execute(params![group_id, id(owner), now])?;
            tx.commit()?;
            Ok(group_id as u64)
        })?;
        Ok(Group {
            id: group_id,
            owner_id: owner,
            name: name.to_owned(),
            created_at: now,
        })
    }

    fn group(&self, group_id: u64) -> Result<Option<Group>, StoreError> {
        self.with_conn(|c| {
            c.prepare_cached(sql::GROUP)?
                .query_row(params![id(group_id)], group)
                .optional()
        })
    }

    fn search_groups(
        &self,
        word: &str,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<FoundGroup>, StoreError> {
        let pattern = like_pattern(word);
        let (limit, offset) = page(limit, offset);
        self.with_conn(|c| {
            list(
                c,
                &sql::search_groups(),
                params![pattern, limit, offset],
                found_group,
            )
        })
    }

    fn groups_by_ids(&self, ids: &[u64]) -> Result<Vec<FoundGroup>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let query = sql::groups_by_ids(chunk.len());
            let args = params_from_iter(chunk.iter().map(|&v| id(v)));
            out.extend(self.with_conn(|c| list(c, &query, args, found_group))?);
        }
        out.sort_by_key(|f| f.group.id);
        Ok(out)
    }

    fn groups_of(&self, user: u64, limit: u32, offset: u64) -> Result<Vec<Membership>, StoreError> {
        let (limit, offset) = page(limit, offset);
        self.with_conn(|c| {
            list(c, sql::GROUPS_OF, params![id(user), limit, offset], |r| {
                Ok(Membership {
                    group: group(r)?,
                    joined_at: r.get(4)?,
                })
            })
        })
    }

    fn group_members(
        &self,
        group: u64,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<Member>, StoreError> {
        let (limit, offset) = page(limit, offset);
        self.with_conn(|c| {
            list(
                c,
                sql::GROUP_MEMBERS,
                params![id(group), limit, offset],
                |r| {
                    Ok(Member {
                        user: profile(r, 0)?,
                        joined_at: r.get(5)?,
                    })
                },
            )
        })
    }

    fn request_join(&self, group: u64, user: u64, now: i64) -> Result<u64, StoreError> {
        self.with_conn(|c| {
            c.prepare_cached(sql::REQUEST_JOIN)?
                .execute(params![id(group), id(user), now])?;
            Ok(c.last_insert_rowid() as u64)
        })
    }

    fn join_requests_for(
        &self,
        owner: u64,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<JoinRequest>, StoreError> {
        let (limit, offset) = page(limit, offset);
        self.with_conn(|c| {
            list(
                c,
                sql::JOIN_REQUESTS_FOR,
                params![id(owner), limit, offset],
                |r| {
                    Ok(JoinRequest {
                        id: r.get(0)?,
                        user: profile(r, 1)?,
                        group_id: r.get(6)?,
                        group_name: r.get(7)?,
                        created_at: r.get(8)?,
                    })
                },
            )
        })
    }

    fn handle_join_request(
        &self,
        request: u64,
        caller: u64,
        accept: bool,
        now: i64,
    ) -> Result<JoinHandled, StoreError> {
        self.with_conn(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let stored: Option<StoredJoin> = tx
                .prepare_cached(sql::JOIN_REQUEST)?
                .query_row(params![id(request)], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()?;
            let owner = match stored {
                Some((group, _, _)) => group_owner(&tx, group)?,
                None => None,
            };
            let (group, user) = match judge_join(stored, owner, caller) {
                Ok(go) => go,
                Err(verdict) => return Ok(verdict),
            };
            let status = if accept { ACCEPTED } else { REJECTED };
            tx.prepare_cached(sql::HANDLE_JOIN_REQUEST)?
                .execute(params![status, now, id(request)])?;
            if accept {
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO group_members (group_id, user_id, joined_at) \
                     VALUES (?1, ?2, ?3)",
                )?
                .execute(params![id(group), id(user), now])?;
            }
            tx.commit()?;
            Ok(if accept {
                JoinHandled::Accepted { group, user }
            } else {
                JoinHandled::Rejected { group, user }
            })
        })
    }

    fn leave_group(&self, group: u64, user: u64) -> Result<Left, StoreError> {
        self.with_conn(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let owner = group_owner(&tx, group)?;
            let member = exists(&tx, sql::IS_MEMBER, params![id(group), id(user)])?;
            let members: u64 = tx
                .prepare_cached(sql::COUNT_MEMBERS)?
                .query_row(params![id(group)], |r| r.get(0))?;
            let verdict = judge_leave(owner, user, member, members);
            if matches!(verdict, Left::Left | Left::GroupDeleted) {
                tx.prepare_cached(sql::REMOVE_MEMBER)?
                    .execute(params![id(group), id(user)])?;
            }
            if verdict == Left::GroupDeleted {
                tx.prepare_cached(sql::DELETE_GROUP)?
                    .execute(params![id(group)])?;
            }
            tx.commit()?;
            Ok(verdict)
        })
    }

    fn remove_member(&self, group: u64, user: u64) -> Result<bool, StoreError> {
        self.with_conn(|c| {
            let n = c
                .prepare_cached(sql::REMOVE_MEMBER)?
                .execute(params![id(group), id(user)])?;
            Ok(n > 0)
        })
    }
}
