//! MySQL/MariaDB side of [`Social`]. A transaction reads what it is about to
//! change with locking reads (`FOR UPDATE`), always in the order request →
//! group → members, so concurrent handlers queue instead of deciding on
//! stale rows. A deadlock victim is run again whole by
//! [`MysqlStore::run`](super::MysqlStore).

use ::mysql::prelude::{FromRow, Queryable};
use ::mysql::{Params, Row, TxOpts};

use std::collections::{BTreeSet, HashSet};

use super::{placeholders, MysqlStore, IN_CHUNK};
use crate::store::social::{
    check_friend_request, check_group_name, group_name_key, judge_join, judge_leave, like_pattern,
    sql, StoredJoin, ACCEPTED, REJECTED,
};
use crate::store::{
    FoundGroup, FriendRequest, Group, JoinHandled, JoinRequest, Left, Member, Membership, Profile,
    Social, StoreError,
};

/// The nickname's lowercase in searches, compared byte by byte (no accent
/// folding), as on SQLite.
const LOWER_NICKNAME: &str = "LOWER(u.nickname) COLLATE utf8mb4_bin";

/// Profile columns as read: id, username, nickname, avatar, sex.
type ProfileRow = (u64, String, String, String, i32);

fn profile((id, username, nickname, avatar, sex): ProfileRow) -> Profile {
    Profile {
        id,
        username,
        nickname,
        avatar,
        sex,
    }
}

/// Group columns as read: id, owner, name, created_at.
type GroupRow = (u64, u64, String, i64);

fn group((id, owner_id, name, created_at): GroupRow) -> Group {
    Group {
        id,
        owner_id,
        name,
        created_at,
    }
}

/// Found-group columns as read: a group's, then its member count.
type FoundGroupRow = (u64, u64, String, i64, u64);

fn found_group((id, owner_id, name, created_at, members): FoundGroupRow) -> FoundGroup {
    FoundGroup {
        group: group((id, owner_id, name, created_at)),
        members,
    }
}

/// `query` with `FOR UPDATE` appended.
fn locking(query: &str) -> String {
    format!("{query} FOR UPDATE")
}

impl MysqlStore {
    /// Runs a query and reads every row as `T`; a row that does not fit is
    /// `Err(Other)`, never a panic.
    fn select<T: FromRow>(
        &self,
        query: &str,
        params: impl Into<Params>,
    ) -> Result<Vec<T>, StoreError> {
        let params = params.into();
        let rows: Vec<Row> = self.run(|c| c.exec(query, params.clone()))?;
        rows.into_iter()
            .map(|row| {
                ::mysql::from_row_opt::<T>(row)
                    .map_err(|e| StoreError::Other(format!("unexpected row for {query}: {e}")))
            })
            .collect()
    }

    /// Runs one statement and answers how many rows it changed.
    fn change(&self, query: &str, params: impl Into<Params>) -> Result<u64, StoreError> {
        let params = params.into();
        self.run(|c| {
            c.exec_drop(query, params.clone())?;
            Ok(c.affected_rows())
        })
    }

    /// Runs one insert and answers the new row's id.
    fn insert(&self, query: &str, params: impl Into<Params>) -> Result<u64, StoreError> {
        let params = params.into();
        self.run(|c| {
            c.exec_drop(query, params.clone())?;
            Ok(c.last_insert_id())
        })
    }
}

impl Social for MysqlStore {
    fn friendships(&self, pairs: &[(u64, u64)]) -> Result<Vec<bool>, StoreError> {
        // One query per chunk: every friendship among the senders and the
        // recipients, then the asked pairs picked out of it.
        let mut found = HashSet::new();
        for chunk in pairs.chunks(IN_CHUNK) {
            let users: BTreeSet<u64> = chunk.iter().map(|p| p.0).collect();
            let friends: BTreeSet<u64> = chunk.iter().map(|p| p.1).collect();
            let query = format!(
                "SELECT user_id, friend_id FROM friends WHERE user_id IN ({}) AND friend_id IN ({})",
                placeholders(users.len()),
                placeholders(friends.len())
            );
            let args: Vec<mysql::Value> = users.iter().chain(&friends).map(|&v| v.into()).collect();
            let rows: Vec<(u64, u64)> = self.select(&query, args)?;
            found.extend(rows);
        }
        Ok(pairs.iter().map(|p| found.contains(p)).collect())
    }

    fn is_group_member(&self, group: u64, user: u64) -> Result<bool, StoreError> {
        let row: Option<u8> = self.run(|c| c.exec_first(sql::IS_MEMBER, (group, user)))?;
        Ok(row.is_some())
    }

    fn group_member_ids(&self, group: u64) -> Result<Vec<u64>, StoreError> {
        self.select(
            "SELECT user_id FROM group_members WHERE group_id = ? ORDER BY user_id",
            (group,),
        )
    }

    fn search_users(
        &self,
        word: &str,
        except: u64,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<Profile>, StoreError> {
        let pattern = like_pattern(word);
        let rows: Vec<ProfileRow> = self.select(
            &sql::search_users(LOWER_NICKNAME),
            (except, pattern.as_bytes(), pattern.as_str(), limit, offset),
        )?;
        Ok(rows.into_iter().map(profile).collect())
    }

    fn friends(&self, user: u64, limit: u32, offset: u64) -> Result<Vec<Profile>, StoreError> {
        let rows: Vec<ProfileRow> = self.select(sql::FRIENDS, (user, limit, offset))?;
        Ok(rows.into_iter().map(profile).collect())
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
        self.insert(sql::REQUEST_FRIEND, (from, to, channel, reason, now))
    }

    fn friend_requests_to(
        &self,
        user: u64,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<FriendRequest>, StoreError> {
        type RequestRow = (
            u64,
            u64,
            String,
            String,
            String,
            i32,
            String,
            String,
            i32,
            i64,
        );
        let rows: Vec<RequestRow> = self.select(sql::FRIEND_REQUESTS_TO, (user, limit, offset))?;
        Ok(rows
            .into_iter()
            .map(
                |(id, uid, username, nickname, avatar, sex, channel, reason, status, at)| {
                    FriendRequest {
                        id,
                        from: profile((uid, username, nickname, avatar, sex)),
                        channel,
                        reason,
                        status,
                        created_at: at,
                    }
                },
            )
            .collect())
    }

    fn accept_friend_request(&self, from: u64, to: u64, now: i64) -> Result<bool, StoreError> {
        self.run(|c| {
            let mut tx = c.start_transaction(TxOpts::default())?;
            tx.exec_drop(sql::HANDLE_FRIEND_REQUEST, (ACCEPTED, now, from, to))?;
            if tx.affected_rows() == 0 {
                return Ok(false); // dropping tx rolls back
            }
            // A request the other way is settled by this one.
            tx.exec_drop(sql::HANDLE_FRIEND_REQUEST, (ACCEPTED, now, to, from))?;
            tx.exec_drop(
                "INSERT INTO friends (user_id, friend_id, created_at) VALUES (?, ?, ?), (?, ?, ?) \
                 ON DUPLICATE KEY UPDATE user_id = user_id",
                (from, to, now, to, from, now),
            )?;
            tx.commit()?;
            Ok(true)
        })
    }

    fn reject_friend_request(&self, from: u64, to: u64, now: i64) -> Result<bool, StoreError> {
        Ok(self.change(sql::HANDLE_FRIEND_REQUEST, (REJECTED, now, from, to))? > 0)
    }

    fn delete_friend(&self, a: u64, b: u64) -> Result<bool, StoreError> {
        Ok(self.change(sql::DELETE_FRIEND, (a, b, b, a))? > 0)
    }

    fn create_group(&self, owner: u64, name: &str, now: i64) -> Result<Group, StoreError> {
        check_group_name(name)?;
        let key = group_name_key(name);
        let id = self.run(|c| {
            let mut tx = c.start_transaction(TxOpts::default())?;
            tx.exec_drop(sql::CREATE_GROUP, (owner, name, key.as_bytes(), now))?;
            let id = tx.last_insert_id().unwrap_or(0);
            tx.exec_drop(sql::ADD_MEMBER, (id, owner, now))?;
            tx.commit()?;
            Ok(id)
        })?;
        Ok(Group {
            id,
            owner_id: owner,
            name: name.to_owned(),
            created_at: now,
        })
    }

    fn group(&self, id: u64) -> Result<Option<Group>, StoreError> {
        let rows: Vec<GroupRow> = self.select(sql::GROUP, (id,))?;
        Ok(rows.into_iter().next().map(group))
    }

    fn search_groups(
        &self,
        word: &str,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<FoundGroup>, StoreError> {
        let pattern = like_pattern(word);
        let rows: Vec<FoundGroupRow> =
            self.select(&sql::search_groups(), (pattern.as_bytes(), limit, offset))?;
        Ok(rows.into_iter().map(found_group).collect())
    }

    fn groups_by_ids(&self, ids: &[u64]) -> Result<Vec<FoundGroup>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let rows: Vec<FoundGroupRow> =
                self.select(&sql::groups_by_ids(chunk.len()), chunk.to_vec())?;
            out.extend(rows.into_iter().map(found_group));
        }
        out.sort_by_key(|f| f.group.id);
        Ok(out)
    }

    fn groups_of(&self, user: u64, limit: u32, offset: u64) -> Result<Vec<Membership>, StoreError> {
        let rows: Vec<(u64, u64, String, i64, i64)> =
            self.select(sql::GROUPS_OF, (user, limit, offset))?;
        Ok(rows
            .into_iter()
            .map(|(id, owner, name, at, joined_at)| Membership {
                group: group((id, owner, name, at)),
                joined_at,
            })
            .collect())
    }

    fn group_members(
        &self,
        group: u64,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<Member>, StoreError> {
        let rows: Vec<(u64, String, String, String, i32, i64)> =
            self.select(sql::GROUP_MEMBERS, (group, limit, offset))?;
        Ok(rows
            .into_iter()
            .map(|(id, username, nickname, avatar, sex, joined_at)| Member {
                user: profile((id, username, nickname, avatar, sex)),
                joined_at,
            })
            .collect())
    }

    fn request_join(&self, group: u64, user: u64, now: i64) -> Result<u64, StoreError> {
        self.insert(sql::REQUEST_JOIN, (group, user, now))
    }

    fn join_requests_for(
        &self,
        owner: u64,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<JoinRequest>, StoreError> {
        type JoinRow = (u64, u64, String, String, String, i32, u64, String, i64);
        let rows: Vec<JoinRow> = self.select(sql::JOIN_REQUESTS_FOR, (owner, limit, offset))?;
        Ok(rows
            .into_iter()
            .map(
                |(id, uid, username, nickname, avatar, sex, group_id, group_name, at)| {
                    JoinRequest {
                        id,
                        user: profile((uid, username, nickname, avatar, sex)),
                        group_id,
                        group_name,
                        created_at: at,
                    }
                },
            )
            .collect())
    }

    fn handle_join_request(
        &self,
        request: u64,
        caller: u64,
        accept: bool,
        now: i64,
    ) -> Result<JoinHandled, StoreError> {
        self.run(|c| {
            let mut tx = c.start_transaction(TxOpts::default())?;
            let stored: Option<StoredJoin> =
                tx.exec_first(locking(sql::JOIN_REQUEST), (request,))?;
            let owner: Option<u64> = match stored {
                Some((group, _, _)) => tx.exec_first(locking(sql::GROUP_OWNER), (group,))?,
                None => None,
            };
            let (group, user) = match judge_join(stored, owner, caller) {
                Ok(go) => go,
                Err(verdict) => return Ok(verdict),
            };
            let status = if accept { ACCEPTED } else { REJECTED };
            tx.exec_drop(sql::HANDLE_JOIN_REQUEST, (status, now, request))?;
            if accept {
                tx.exec_drop(
                    format!(
                        "{} ON DUPLICATE KEY UPDATE user_id = user_id",
                        sql::ADD_MEMBER
                    ),
                    (group, user, now),
                )?;
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
        self.run(|c| {
            let mut tx = c.start_transaction(TxOpts::default())?;
            let owner: Option<u64> = tx.exec_first(locking(sql::GROUP_OWNER), (group,))?;
            let member: Option<u8> = tx.exec_first(locking(sql::IS_MEMBER), (group, user))?;
            let members: Option<u64> = tx.exec_first(locking(sql::COUNT_MEMBERS), (group,))?;
            let verdict = judge_leave(owner, user, member.is_some(), members.unwrap_or(0));
            if matches!(verdict, Left::Left | Left::GroupDeleted) {
                tx.exec_drop(sql::REMOVE_MEMBER, (group, user))?;
            }
            if verdict == Left::GroupDeleted {
                tx.exec_drop(sql::DELETE_GROUP, (group,))?;
            }
            tx.commit()?;
            Ok(verdict)
        })
    }

    fn remove_member(&self, group: u64, user: u64) -> Result<bool, StoreError> {
        Ok(self.change(sql::REMOVE_MEMBER, (group, user))? > 0)
    }
}
