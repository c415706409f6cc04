//! MySQL/MariaDB side of [`Import`]. Each batch is one transaction; a
//! failed statement (a duplicate key) rolls back only itself in InnoDB, so
//! an account can be stored again without its verification. Message
//! batches take the `message_seq` row lock as every message insert does.

use std::collections::HashSet;

use ::mysql::prelude::Queryable;
use ::mysql::{Transaction, TxOpts, Value};

use super::{placeholders, MysqlStore, ER_DUP_ENTRY, IN_CHUNK};
use crate::store::import::{
    check_imported_friend_request, check_imported_group, check_imported_join_request,
    check_imported_message, check_source, check_user, HOLDS_DATA_SQL,
};
use crate::store::{
    group_name_key, username_key, Group, Import, ImportRecord, ImportedFriend,
    ImportedFriendRequest, ImportedJoinRequest, ImportedMember, ImportedUser, Message, RealName,
    StoreError, UsersImported,
};

/// The ids among `ids` that `table` holds already.
fn present(
    tx: &mut Transaction<'_>,
    table: &str,
    ids: impl Iterator<Item = u64>,
) -> ::mysql::Result<HashSet<u64>> {
    let ids: Vec<u64> = ids.collect();
    let mut found = HashSet::new();
    for chunk in ids.chunks(IN_CHUNK) {
        let query = format!(
            "SELECT id FROM {table} WHERE id IN ({})",
            placeholders(chunk.len())
        );
        found.extend(tx.exec::<u64, _, _>(query, chunk.to_vec())?);
    }
    Ok(found)
}

fn is_duplicate(e: &::mysql::Error) -> bool {
    matches!(e, ::mysql::Error::MySqlError(me) if me.code == ER_DUP_ENTRY)
}

fn insert_user(
    tx: &mut Transaction<'_>,
    u: &ImportedUser,
    realname: Option<&RealName>,
) -> ::mysql::Result<()> {
    let user = &u.user;
    let params: Vec<Value> = vec![
        user.id.into(),
        user.username.as_str().into(),
        username_key(&user.username).into_bytes().into(),
        user.password_hash.as_str().into(),
        user.nickname.as_str().into(),
        user.avatar.as_str().into(),
        user.sex.into(),
        user.status.into(),
        realname.is_some().into(),
        realname.map(|r| r.name_mask.as_str()).into(),
        realname.map(|r| r.id_mask.as_str()).into(),
        realname.map(|r| r.id_hash.as_str()).into(),
        u.location.map(|(p, _)| p.lon).into(),
        u.location.map(|(p, _)| p.lat).into(),
        u.location.map(|(_, at)| at).into(),
        user.created_at.into(),
    ];
    tx.exec_drop(
        "INSERT INTO users (id, username, username_key, password_hash, nickname, avatar, sex, \
         status, realname_verified, realname, id_card_mask, id_card_hash, longitude, latitude, \
         location_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        params,
    )
}

impl MysqlStore {
    /// Runs `f` in one transaction and commits (again whole after a
    /// deadlock).
    fn in_batch<T>(
        &self,
        mut f: impl FnMut(&mut Transaction<'_>) -> ::mysql::Result<T>,
    ) -> Result<T, StoreError> {
        self.run(|c| {
            let mut tx = c.start_transaction(TxOpts::default())?;
            let out = f(&mut tx)?;
            tx.commit()?;
            Ok(out)
        })
    }

    /// Inserts the rows whose id `table` lacks, each with `insert` and the
    /// parameters `params` makes of it; the count.
    fn insert_new<T>(
        &self,
        table: &str,
        rows: &[T],
        id_of: impl Fn(&T) -> u64,
        insert: &str,
        params: impl Fn(&T) -> Vec<Value>,
    ) -> Result<u64, StoreError> {
        self.in_batch(|tx| {
            let have = present(tx, table, rows.iter().map(&id_of))?;
            let mut added = 0;
            for row in rows.iter().filter(|r| !have.contains(&id_of(r))) {
                tx.exec_drop(insert, params(row))?;
                added += tx.affected_rows();
            }
            Ok(added)
        })
    }

    /// Inserts each row with `INSERT IGNORE` (tables whose only key is the
    /// row's pair); the count of rows added.
    fn insert_pairs<T>(
        &self,
        insert: &str,
        rows: &[T],
        params: impl Fn(&T) -> Vec<Value>,
    ) -> Result<u64, StoreError> {
        self.in_batch(|tx| {
            let mut added = 0;
            for row in rows {
                tx.exec_drop(insert, params(row))?;
                added += tx.affected_rows();
            }
            Ok(added)
        })
    }
}

impl Import for MysqlStore {
    fn holds_data(&self) -> Result<bool, StoreError> {
        let found: Option<i64> = self.run(|c| c.query_first(HOLDS_DATA_SQL))?;
        Ok(found == Some(1))
    }

    fn import_record(&self, source: &str) -> Result<Option<ImportRecord>, StoreError> {
        let row: Option<(i64, Option<i64>)> = self.run(|c| {
            c.exec_first(
                "SELECT started_at, finished_at FROM imports WHERE source = ?",
                (source.as_bytes(),),
            )
        })?;
        Ok(row.map(|(started_at, finished_at)| ImportRecord {
            started_at,
            finished_at,
        }))
    }

    fn begin_import(&self, source: &str, now: i64) -> Result<(), StoreError> {
        check_source(source)?;
        self.run(|c| {
            c.exec_drop(
                "INSERT INTO imports (source, started_at) VALUES (?, ?) \
                 ON DUPLICATE KEY UPDATE started_at = started_at",
                (source.as_bytes(), now),
            )
        })
    }

    fn finish_import(&self, source: &str, now: i64) -> Result<(), StoreError> {
        self.run(|c| {
            c.exec_drop(
                "UPDATE imports SET finished_at = ? WHERE source = ?",
                (now, source.as_bytes()),
            )
        })
    }

    fn import_users(
        &self,
        users: &[ImportedUser],
        delivered_upto: u64,
    ) -> Result<UsersImported, StoreError> {
        users.iter().try_for_each(check_user)?;
        self.in_batch(|tx| {
            let have = present(tx, "users", users.iter().map(|u| u.user.id))?;
            let mut done = UsersImported::default();
            for u in users.iter().filter(|u| !have.contains(&u.user.id)) {
                match insert_user(tx, u, u.realname.as_ref()) {
                    // Another account holds the ID number (or the username:
                    // then the second try fails too).
                    Err(e) if is_duplicate(&e) && u.realname.is_some() => {
                        insert_user(tx, u, None)?;
                        done.realnames_dropped += 1;
                    }
                    result => result?,
                }
                if delivered_upto > 0 {
                    tx.exec_drop(
                        "INSERT INTO delivery_cursors (user_id, upto) VALUES (?, ?) \
                         ON DUPLICATE KEY UPDATE upto = GREATEST(upto, VALUES(upto))",
                        (u.user.id, delivered_upto),
                    )?;
                }
                done.added += 1;
            }
            Ok(done)
        })
    }

    fn import_friends(&self, rows: &[ImportedFriend]) -> Result<u64, StoreError> {
        self.insert_pairs(
            "INSERT IGNORE INTO friends (user_id, friend_id, created_at) VALUES (?, ?, ?)",
            rows,
            |f| vec![f.user_id.into(), f.friend_id.into(), f.created_at.into()],
        )
    }

    fn import_friend_requests(&self, rows: &[ImportedFriendRequest]) -> Result<u64, StoreError> {
        rows.iter().try_for_each(check_imported_friend_request)?;
        self.insert_new(
            "friend_requests",
            rows,
            |r| r.id,
            "INSERT INTO friend_requests (id, from_id, to_id, channel, reason, status, \
             created_at, handled_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            |r| {
                vec![
                    r.id.into(),
                    r.from_id.into(),
                    r.to_id.into(),
                    r.channel.as_str().into(),
                    r.reason.as_str().into(),
                    r.status.into(),
                    r.created_at.into(),
                    r.handled_at.into(),
                ]
            },
        )
    }

    fn import_groups(&self, rows: &[Group]) -> Result<u64, StoreError> {
        rows.iter().try_for_each(check_imported_group)?;
        self.insert_new(
            "chat_groups",
            rows,
            |g| g.id,
            "INSERT INTO chat_groups (id, owner_id, name, name_key, created_at) \
             VALUES (?, ?, ?, ?, ?)",
            |g| {
                vec![
                    g.id.into(),
                    g.owner_id.into(),
                    g.name.as_str().into(),
                    group_name_key(&g.name).into_bytes().into(),
                    g.created_at.into(),
                ]
            },
        )
    }

    fn import_members(&self, rows: &[ImportedMember]) -> Result<u64, StoreError> {
        self.insert_pairs(
            "INSERT IGNORE INTO group_members (group_id, user_id, joined_at) VALUES (?, ?, ?)",
            rows,
            |m| vec![m.group_id.into(), m.user_id.into(), m.joined_at.into()],
        )
    }

    fn import_join_requests(&self, rows: &[ImportedJoinRequest]) -> Result<u64, StoreError> {
        rows.iter().try_for_each(check_imported_join_request)?;
        self.insert_new(
            "group_join_requests",
            rows,
            |r| r.id,
            "INSERT INTO group_join_requests (id, group_id, user_id, status, created_at, \
             handled_at) VALUES (?, ?, ?, ?, ?, ?)",
            |r| {
                vec![
                    r.id.into(),
                    r.group_id.into(),
                    r.user_id.into(),
                    r.status.into(),
                    r.created_at.into(),
                    r.handled_at.into(),
                ]
            },
        )
    }

    fn import_messages(&self, rows: &[Message]) -> Result<u64, StoreError> {
        rows.iter().try_for_each(check_imported_message)?;
        self.in_batch(|tx| {
            tx.query_drop("SELECT n FROM message_seq WHERE id = 1 FOR UPDATE")?;
            let have = present(tx, "messages", rows.iter().map(|m| m.id))?;
            let mut added = 0;
            for m in rows.iter().filter(|m| !have.contains(&m.id)) {
                tx.exec_drop(
                    "INSERT INTO messages (id, from_id, to_id, ope, kind, body, status, \
                     created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        m.id,
                        m.from_id,
                        m.to_id,
                        m.ope,
                        m.kind,
                        m.body.as_str(),
                        m.status,
                        m.created_at,
                    ),
                )?;
                added += tx.affected_rows();
            }
            Ok(added)
        })
    }
}
