//! SQLite side of [`Messages`]. SQLite has one writer at a time, so message
//! ids become visible in id order by construction.

use rusqlite::{params, OptionalExtension, Row, TransactionBehavior};

use super::SqliteStore;
use crate::store::messages::{check_new_message, stored};
use crate::store::{Feed, Message, Messages, NewMessage, StoreError};

/// Messages and delivery cursors; mirrors the messages section of
/// `database.sql`.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    id         INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    from_id    INTEGER NOT NULL,
    to_id      INTEGER NOT NULL,
    ope        INTEGER NOT NULL,
    kind       INTEGER NOT NULL,
    body       TEXT    NOT NULL,
    status     INTEGER NOT NULL DEFAULT 0,
    cid        TEXT,
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS idx_messages_to ON messages (ope, to_id, id);
CREATE INDEX IF NOT EXISTS idx_messages_from ON messages (ope, from_id, to_id, id);
CREATE UNIQUE INDEX IF NOT EXISTS uk_messages_cid ON messages (from_id, cid);

CREATE TABLE IF NOT EXISTS delivery_cursors (
    user_id INTEGER NOT NULL PRIMARY KEY,
    upto    INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
";

/// The columns a [`Message`] is read from (`m.`-qualified with `m`), as a
/// literal for `concat!`.
macro_rules! columns {
    () => {
        "id, from_id, to_id, ope, kind, body, status, created_at"
    };
    (m) => {
        "m.id, m.from_id, m.to_id, m.ope, m.kind, m.body, m.status, m.created_at"
    };
}
const COLUMNS: &str = columns!();

fn message_from_row(row: &Row<'_>) -> rusqlite::Result<Message> {
    Ok(Message {
        id: row.get::<_, i64>(0)? as u64,
        from_id: row.get::<_, i64>(1)? as u64,
        to_id: row.get::<_, i64>(2)? as u64,
        ope: row.get(3)?,
        kind: row.get(4)?,
        body: row.get(5)?,
        status: row.get(6)?,
        created_at: row.get(7)?,
    })
}

/// SQLite integers are i64: a larger id cannot exist, and i64::MAX is
/// above every id (used for "no upper bound").
fn id(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn collect(
    stmt: &mut rusqlite::CachedStatement<'_>,
    params: impl rusqlite::Params,
) -> rusqlite::Result<Vec<Message>> {
    stmt.query_map(params, message_from_row)?.collect()
}

/// The queries of [`Messages::feed`], each ordered by id and limited (?3):
/// the feed is their merge. Separate queries, not one `UNION ALL … ORDER
/// BY`, so that SQLite needs no temporary table for a feed (measured: a
/// temporary b-tree and its page cache per query on every sign-in).
fn feed_parts(feed: Feed) -> &'static [&'static str] {
    /// Friend messages (`to_id` or `from_id` the user), with `$and`.
    macro_rules! friend {
        ($who:literal, $and:literal) => {
            concat!(
                "SELECT ",
                columns!(),
                " FROM messages WHERE ope = 0 AND ",
                $who,
                " = ?1 AND id > ?2",
                $and,
                " ORDER BY id LIMIT ?3"
            )
        };
    }
    /// Messages of the user's groups since they joined, with `$and`.
    macro_rules! group {
        ($and:literal) => {
            concat!(
                "SELECT ",
                columns!(m),
                " FROM group_members g JOIN messages m ON m.ope = 1 \
                 AND m.to_id = g.group_id AND m.id > ?2 WHERE g.user_id = ?1 \
                 AND m.created_at >= g.joined_at * 1000",
                $and,
                " ORDER BY m.id LIMIT ?3"
            )
        };
    }
    const PENDING_FRIEND: &str = friend!("to_id", " AND status = 0");
    const PENDING_GROUP: &str = group!(" AND m.from_id <> ?1 AND m.status = 0");
    const FRIEND_TO: &str = friend!("to_id", "");
    const FRIEND_FROM: &str = friend!("from_id", "");
    const GROUP: &str = group!("");
    match feed {
        Feed::Pending => &[PENDING_FRIEND, PENDING_GROUP],
        Feed::Sync => &[FRIEND_TO, FRIEND_FROM, GROUP],
    }
}

impl Messages for SqliteStore {
    fn insert_messages(
        &self,
        batch: &[NewMessage<'_>],
    ) -> Result<Vec<(Message, bool)>, StoreError> {
        batch.iter().try_for_each(check_new_message)?;
        self.with_committer_conn(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut out = Vec::with_capacity(batch.len());
            {
                let mut earlier = tx.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM messages WHERE from_id = ?1 AND cid = ?2"
                ))?;
                // A known cid inserts nothing (its unique index) and is
                // then read back: one statement per new message.
                let mut insert = tx.prepare_cached(
                    "INSERT INTO messages (from_id, to_id, ope, kind, body, cid, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (from_id, cid) DO NOTHING",
                )?;
                for m in batch {
                    let inserted = insert.execute(params![
                        id(m.from_id),
                        id(m.to_id),
                        m.ope,
                        m.kind,
                        m.body,
                        m.cid,
                        m.now_ms
                    ])?;
                    if inserted == 1 {
                        out.push((stored(m, tx.last_insert_rowid() as u64), true));
                    } else {
                        let found =
                            earlier.query_row(params![id(m.from_id), m.cid], message_from_row)?;
                        out.push((found, false));
                    }
                }
            }
            tx.commit()?;
            Ok(out)
        })
    }

    fn message_by_id(&self, msg: u64) -> Result<Option<Message>, StoreError> {
        self.with_conn(|c| {
            c.prepare_cached(&format!("SELECT {COLUMNS} FROM messages WHERE id = ?1"))?
                .query_row(params![id(msg)], message_from_row)
                .optional()
        })
    }

    fn withdraw_message(&self, msg: u64) -> Result<bool, StoreError> {
        self.with_conn(|c| {
            let n = c
                .prepare_cached(
                    "UPDATE messages SET status = -1, body = '' WHERE id = ?1 AND status <> -1",
                )?
                .execute(params![id(msg)])?;
            Ok(n > 0)
        })
    }

    fn friend_history(
        &self,
        a: u64,
        b: u64,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<Message>, StoreError> {
        let before = before.map_or(i64::MAX, id);
        self.with_conn(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT * FROM (SELECT {COLUMNS} FROM messages WHERE ope = 0 AND from_id = ?1 \
                 AND to_id = ?2 AND id < ?3 ORDER BY id DESC LIMIT ?4) \
                 UNION ALL SELECT * FROM (SELECT {COLUMNS} FROM messages WHERE ope = 0 \
                 AND from_id = ?2 AND to_id = ?1 AND id < ?3 ORDER BY id DESC LIMIT ?4) \
                 ORDER BY id DESC LIMIT ?4"
            ))?;
            collect(&mut stmt, params![id(a), id(b), before, limit])
        })
    }

    fn group_history(
        &self,
        group: u64,
        member: u64,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<Message>, StoreError> {
        let before = before.map_or(i64::MAX, id);
        self.with_conn(|c| {
            let mut stmt = c.prepare_cached(concat!(
                "SELECT ",
                columns!(m),
                " FROM group_members g JOIN messages m ON m.ope = 1 \
                 AND m.to_id = g.group_id AND m.id < ?3 \
                 WHERE g.group_id = ?1 AND g.user_id = ?2 \
                 AND m.created_at >= g.joined_at * 1000 ORDER BY m.id DESC LIMIT ?4"
            ))?;
            collect(&mut stmt, params![id(group), id(member), before, limit])
        })
    }

    fn feed(
        &self,
        user: u64,
        after: u64,
        limit: u32,
        feed: Feed,
    ) -> Result<Vec<Message>, StoreError> {
        self.with_conn(|c| {
            let mut all = Vec::new();
            for sql in feed_parts(feed) {
                let mut stmt = c.prepare_cached(sql)?;
                all.extend(collect(&mut stmt, params![id(user), id(after), limit])?);
            }
            all.sort_unstable_by_key(|m| m.id);
            all.truncate(limit as usize);
            Ok(all)
        })
    }

    fn delivered_upto(&self, user: u64) -> Result<u64, StoreError> {
        self.with_conn(|c| {
            c.prepare_cached("SELECT upto FROM delivery_cursors WHERE user_id = ?1")?
                .query_row(params![id(user)], |r| r.get::<_, i64>(0))
                .optional()
                .map(|v| v.unwrap_or(0) as u64)
        })
    }

    fn advance_delivered(&self, updates: &[(u64, u64)]) -> Result<(), StoreError> {
        if updates.is_empty() {
            return Ok(());
        }
        self.with_conn(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO delivery_cursors (user_id, upto) VALUES (?1, ?2) \
                     ON CONFLICT (user_id) DO UPDATE SET upto = max(upto, excluded.upto)",
                )?;
                for &(user, upto) in updates {
                    stmt.execute(params![id(user), id(upto)])?;
                }
            }
            tx.commit()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pending-messages queries run on every sign-in: binding other
    /// values must not make SQLite prepare them again (see
    /// `open_connection`).
    #[test]
    fn the_pending_queries_are_prepared_once() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = crate::store::open_sqlite(&dir.path().join("weim.db"), 1).expect("open");
        let news: Vec<NewMessage<'_>> = (0..100u64)
            .map(|i| NewMessage {
                from_id: i % 5 + 1,
                to_id: i % 4 + 1,
                ope: (i % 2) as i64,
                kind: 0,
                body: "x",
                cid: None,
                now_ms: 0,
            })
            .collect();
        store.insert_messages(&news).expect("insert");
        for user in 1..=4 {
            for after in [0, 10, 50] {
                store.feed(user, after, 7, Feed::Pending).expect("feed");
            }
        }
        let reprepared = store
            .with_conn(|c| {
                let mut reprepared = 0;
                for sql in feed_parts(Feed::Pending) {
                    let stmt = c.prepare_cached(sql)?;
                    reprepared += stmt.get_status(rusqlite::StatementStatus::RePrepare);
                }
                Ok(reprepared)
            })
            .expect("status");
        assert_eq!(reprepared, 0);
    }
}
