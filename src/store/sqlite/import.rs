//! SQLite side of [`Import`]. Each batch is one `IMMEDIATE` transaction.
//! Ids are bound as `u64` (rusqlite's `fallible_uint`: one above
//! `i64::MAX` is an error, never a wrapped value).

use std::collections::HashSet;

use rusqlite::{
    ffi, params, params_from_iter, OptionalExtension, Transaction, TransactionBehavior,
};

use super::SqliteStore;
use crate::store::import::{
    check_imported_friend_request, check_imported_group, check_imported_join_request,
    check_imported_message, check_source, check_user, HOLDS_DATA_SQL,
};
use crate::store::{
    group_name_key, username_key, Group, Import, ImportRecord, ImportedFriend,
    ImportedFriendRequest, ImportedJoinRequest, ImportedMember, ImportedUser, Message, RealName,
    StoreError, UsersImported,
};

/// The record of imports; mirrors the imports section of `database.sql`.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS imports (
    source      BLOB    NOT NULL PRIMARY KEY,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER
) STRICT, WITHOUT ROWID;
";

/// Most ids in one `IN (…)` list.
const IN_CHUNK: usize = 500;

/// The ids among `ids` that `table` holds already.
fn present(
    tx: &Transaction<'_>,
    table: &str,
    ids: impl Iterator<Item = u64>,
) -> rusqlite::Result<HashSet<u64>> {
    let ids: Vec<u64> = ids.collect();
    let mut found = HashSet::new();
    for chunk in ids.chunks(IN_CHUNK) {
        let marks = vec!["?"; chunk.len()].join(", ");
        let mut stmt = tx.prepare(&format!("SELECT id FROM {table} WHERE id IN ({marks})"))?;
        let rows = stmt.query_map(params_from_iter(chunk), |r| r.get::<_, u64>(0))?;
        for id in rows {
            found.insert(id?);
        }
    }
    Ok(found)
}

/// Whether an error is a unique-key violation.
fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(err, _)
        if err.extended_code == ffi::SQLITE_CONSTRAINT_UNIQUE)
}

fn insert_user(
    tx: &Transaction<'_>,
    u: &ImportedUser,
    realname: Option<&RealName>,
) -> rusqlite::Result<()> {
    let user = &u.user;
    tx.prepare_cached(
        "INSERT INTO users (id, username, username_key, password_hash, nickname, avatar, sex, \
         status, realname_verified, realname, id_card_mask, id_card_hash, longitude, latitude, \
         location_at, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )?
    .execute(params![
        user.id,
        user.username,
        username_key(&user.username),
        user.password_hash,
        user.nickname,
        user.avatar,
        user.sex,
        user.status,
        realname.is_some(),
        realname.map(|r| &r.name_mask),
        realname.map(|r| &r.id_mask),
        realname.map(|r| &r.id_hash),
        u.location.map(|(p, _)| p.lon),
        u.location.map(|(p, _)| p.lat),
        u.location.map(|(_, at)| at),
        user.created_at,
    ])?;
    Ok(())
}

impl SqliteStore {
    /// Runs `f` in one `IMMEDIATE` transaction and commits.
    fn in_batch<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        self.with_conn(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })
    }

    /// Inserts the rows whose id `table` lacks with `insert`; the count.
    fn insert_new<T>(
        &self,
        table: &str,
        rows: &[T],
        id_of: impl Fn(&T) -> u64,
        insert: impl Fn(&Transaction<'_>, &T) -> rusqlite::Result<usize>,
    ) -> Result<u64, StoreError> {
        self.in_batch(|tx| {
            let have = present(tx, table, rows.iter().map(&id_of))?;
            let mut added = 0;
            for row in rows.iter().filter(|r| !have.contains(&id_of(r))) {
                added += insert(tx, row)? as u64;
            }
            Ok(added)
        })
    }
}

impl Import for SqliteStore {
    fn holds_data(&self) -> Result<bool, StoreError> {
        self.with_conn(|c| c.query_row(HOLDS_DATA_SQL, [], |r| r.get(0)))
    }

    fn import_record(&self, source: &str) -> Result<Option<ImportRecord>, StoreError> {
        self.with_conn(|c| {
            c.query_row(
                "SELECT started_at, finished_at FROM imports WHERE source = ?1",
                params![source.as_bytes()],
                |r| {
                    Ok(ImportRecord {
                        started_at: r.get(0)?,
                        finished_at: r.get(1)?,
                    })
                },
            )
            .optional()
        })
    }

    fn begin_import(&self, source: &str, now: i64) -> Result<(), StoreError> {
        check_source(source)?;
        self.with_conn(|c| {
            c.execute(
                "INSERT OR IGNORE INTO imports (source, started_at) VALUES (?1, ?2)",
                params![source.as_bytes(), now],
            )
            .map(drop)
        })
    }

    fn finish_import(&self, source: &str, now: i64) -> Result<(), StoreError> {
        self.with_conn(|c| {
            c.execute(
                "UPDATE imports SET finished_at = ?2 WHERE source = ?1",
                params![source.as_bytes(), now],
            )
            .map(drop)
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
                    Err(e) if is_unique_violation(&e) && u.realname.is_some() => {
                        insert_user(tx, u, None)?;
                        done.realnames_dropped += 1;
                    }
                    result => result?,
                }
                if delivered_upto > 0 {
                    tx.prepare_cached(
                        "INSERT INTO delivery_cursors (user_id, upto) VALUES (?1, ?2) \
                         ON CONFLICT (user_id) DO UPDATE SET upto = max(upto, excluded.upto)",
                    )?
                    .execute(params![u.user.id, delivered_upto])?;
                }
                done.added += 1;
            }
            Ok(done)
        })
    }

    fn import_friends(&self, rows: &[ImportedFriend]) -> Result<u64, StoreError> {
        self.in_batch(|tx| {
            let mut stmt = tx.prepare_cached(
                "INSERT OR IGNORE INTO friends (user_id, friend_id, created_at) \
                 VALUES (?1, ?2, ?3)",
            )?;
            let mut added = 0;
            for f in rows {
                added += stmt.execute(params![f.user_id, f.friend_id, f.created_at])? as u64;
            }
            Ok(added)
        })
    }

    fn import_friend_requests(&self, rows: &[ImportedFriendRequest]) -> Result<u64, StoreError> {
        rows.iter().try_for_each(check_imported_friend_request)?;
        self.insert_new(
            "friend_requests",
            rows,
            |r| r.id,
            |tx, r| {
                tx.prepare_cached(
                    "INSERT INTO friend_requests (id, from_id, to_id, channel, reason, status, \
                     created_at, handled_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![
                    r.id,
                    r.from_id,
                    r.to_id,
                    r.channel,
                    r.reason,
                    r.status,
                    r.created_at,
                    r.handled_at
                ])
            },
        )
    }

    fn import_groups(&self, rows: &[Group]) -> Result<u64, StoreError> {
        rows.iter().try_for_each(check_imported_group)?;
        self.insert_new(
            "chat_groups",
            rows,
            |g| g.id,
            |tx, g| {
                tx.prepare_cached(
                    "INSERT INTO chat_groups (id, owner_id, name, name_key, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![
                    g.id,
                    g.owner_id,
                    g.name,
                    group_name_key(&g.name),
                    g.created_at
                ])
            },
        )
    }

    fn import_members(&self, rows: &[ImportedMember]) -> Result<u64, StoreError> {
        self.in_batch(|tx| {
            let mut stmt = tx.prepare_cached(
                "INSERT OR IGNORE INTO group_members (group_id, user_id, joined_at) \
                 VALUES (?1, ?2, ?3)",
            )?;
            let mut added = 0;
            for m in rows {
                added += stmt.execute(params![m.group_id, m.user_id, m.joined_at])? as u64;
            }
            Ok(added)
        })
    }

    fn import_join_requests(&self, rows: &[ImportedJoinRequest]) -> Result<u64, StoreError> {
        rows.iter().try_for_each(check_imported_join_request)?;
        self.insert_new(
            "group_join_requests",
            rows,
            |r| r.id,
            |tx, r| {
                tx.prepare_cached(
                    "INSERT INTO group_join_requests (id, group_id, user_id, status, \
                     created_at, handled_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![
                    r.id,
                    r.group_id,
                    r.user_id,
                    r.status,
                    r.created_at,
                    r.handled_at
                ])
            },
        )
    }

    fn import_messages(&self, rows: &[Message]) -> Result<u64, StoreError> {
        rows.iter().try_for_each(check_imported_message)?;
        self.insert_new(
            "messages",
            rows,
            |m| m.id,
            |tx, m| {
                tx.prepare_cached(
                    "INSERT INTO messages (id, from_id, to_id, ope, kind, body, status, \
                     created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![
                    m.id,
                    m.from_id,
                    m.to_id,
                    m.ope,
                    m.kind,
                    m.body,
                    m.status,
                    m.created_at
                ])
            },
        )
    }
}
