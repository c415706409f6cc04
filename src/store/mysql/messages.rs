//! MySQL/MariaDB side of [`Messages`]. InnoDB may commit two inserts in the
//! opposite order of their auto-increment ids; every message insert
//! therefore takes the `message_seq` row lock first, so ids become visible
//! in id order (the delivery cursor relies on it).

use ::mysql::prelude::Queryable;
use ::mysql::{Row, TxOpts};

use super::MysqlStore;
use crate::store::messages::{check_new_message, stored};
use crate::store::{Feed, Message, Messages, NewMessage, StoreError};

const COLUMNS: &str = "id, from_id, to_id, ope, kind, body, status, created_at";
const M_COLUMNS: &str = "m.id, m.from_id, m.to_id, m.ope, m.kind, m.body, m.status, m.created_at";

type MessageRow = (u64, u64, u64, i64, i64, String, i64, i64);

fn message_from_row(row: Row) -> Result<Message, StoreError> {
    let (id, from_id, to_id, ope, kind, body, status, created_at) =
        ::mysql::from_row_opt::<MessageRow>(row)
            .map_err(|e| StoreError::Other(format!("unexpected messages row: {e}")))?;
    Ok(Message {
        id,
        from_id,
        to_id,
        ope,
        kind,
        body,
        status,
        created_at,
    })
}

fn messages(rows: Vec<Row>) -> Result<Vec<Message>, StoreError> {
    rows.into_iter().map(message_from_row).collect()
}

impl Messages for MysqlStore {
    fn insert_messages(
        &self,
        batch: &[NewMessage<'_>],
    ) -> Result<Vec<(Message, bool)>, StoreError> {
        batch.iter().try_for_each(check_new_message)?;
        let select_cid = format!("SELECT {COLUMNS} FROM messages WHERE from_id = ? AND cid = ?");
        // Per message: the earlier row for a known cid, or the new id.
        let results: Vec<Result<Row, u64>> = self.run(|c| {
            let mut tx = c.start_transaction(TxOpts::default())?;
            tx.query_drop("SELECT n FROM message_seq WHERE id = 1 FOR UPDATE")?;
            let mut out = Vec::with_capacity(batch.len());
            for m in batch {
                if let Some(cid) = m.cid {
                    if let Some(row) = tx.exec_first::<Row, _, _>(&select_cid, (m.from_id, cid))? {
                        out.push(Ok(row));
                        continue;
                    }
                }
                tx.exec_drop(
                    "INSERT INTO messages (from_id, to_id, ope, kind, body, cid, created_at) \
                     VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (m.from_id, m.to_id, m.ope, m.kind, m.body, m.cid, m.now_ms),
                )?;
                out.push(Err(tx.last_insert_id().unwrap_or(0)));
            }
            tx.commit()?;
            Ok(out)
        })?;
        batch
            .iter()
            .zip(results)
            .map(|(m, r)| match r {
                Ok(row) => Ok((message_from_row(row)?, false)),
                Err(id) => Ok((stored(m, id), true)),
            })
            .collect()
    }

    fn message_by_id(&self, id: u64) -> Result<Option<Message>, StoreError> {
        let query = format!("SELECT {COLUMNS} FROM messages WHERE id = ?");
        let row: Option<Row> = self.run(|c| c.exec_first(&query, (id,)))?;
        row.map(message_from_row).transpose()
    }

    fn withdraw_message(&self, id: u64) -> Result<bool, StoreError> {
        self.run(|c| {
            c.exec_drop(
                "UPDATE messages SET status = -1, body = '' WHERE id = ? AND status <> -1",
                (id,),
            )?;
            Ok(c.affected_rows() > 0)
        })
    }

    fn friend_history(
        &self,
        a: u64,
        b: u64,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<Message>, StoreError> {
        let before = before.unwrap_or(u64::MAX);
        let query = format!(
            "(SELECT {COLUMNS} FROM messages WHERE ope = 0 AND from_id = ? AND to_id = ? \
             AND id < ? ORDER BY id DESC LIMIT ?) UNION ALL \
             (SELECT {COLUMNS} FROM messages WHERE ope = 0 AND from_id = ? AND to_id = ? \
             AND id < ? ORDER BY id DESC LIMIT ?) ORDER BY id DESC LIMIT ?"
        );
        let rows: Vec<Row> =
            self.run(|c| c.exec(&query, (a, b, before, limit, b, a, before, limit, limit)))?;
        messages(rows)
    }

    fn group_history(
        &self,
        group: u64,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<Message>, StoreError> {
        let before = before.unwrap_or(u64::MAX);
        let query = format!(
            "SELECT {COLUMNS} FROM messages WHERE ope = 1 AND to_id = ? AND id < ? \
             ORDER BY id DESC LIMIT ?"
        );
        let rows: Vec<Row> = self.run(|c| c.exec(&query, (group, before, limit)))?;
        messages(rows)
    }

    fn feed(
        &self,
        user: u64,
        after: u64,
        limit: u32,
        feed: Feed,
    ) -> Result<Vec<Message>, StoreError> {
        let rows: Vec<Row> = match feed {
            Feed::Pending => {
                let query = format!(
                    "(SELECT {COLUMNS} FROM messages WHERE ope = 0 AND to_id = ? AND id > ? \
                     AND status = 0 ORDER BY id LIMIT ?) UNION ALL \
                     (SELECT {M_COLUMNS} FROM group_members g JOIN messages m \
                     ON m.ope = 1 AND m.to_id = g.group_id AND m.id > ? \
                     WHERE g.user_id = ? AND m.created_at >= g.joined_at * 1000 \
                     AND m.from_id <> ? AND m.status = 0 ORDER BY m.id LIMIT ?) \
                     ORDER BY id LIMIT ?"
                );
                self.run(|c| {
                    c.exec(
                        &query,
                        (user, after, limit, after, user, user, limit, limit),
                    )
                })?
            }
            Feed::Sync => {
                let query = format!(
                    "(SELECT {COLUMNS} FROM messages WHERE ope = 0 AND to_id = ? AND id > ? \
                     ORDER BY id LIMIT ?) UNION ALL \
                     (SELECT {COLUMNS} FROM messages WHERE ope = 0 AND from_id = ? AND id > ? \
                     ORDER BY id LIMIT ?) UNION ALL \
                     (SELECT {M_COLUMNS} FROM group_members g JOIN messages m \
                     ON m.ope = 1 AND m.to_id = g.group_id AND m.id > ? \
                     WHERE g.user_id = ? AND m.created_at >= g.joined_at * 1000 \
                     ORDER BY m.id LIMIT ?) ORDER BY id LIMIT ?"
                );
                self.run(|c| {
                    c.exec(
                        &query,
                        (
                            user, after, limit, user, after, limit, after, user, limit, limit,
                        ),
                    )
                })?
            }
        };
        messages(rows)
    }

    fn delivered_upto(&self, user: u64) -> Result<u64, StoreError> {
        let upto: Option<u64> = self.run(|c| {
            c.exec_first(
                "SELECT upto FROM delivery_cursors WHERE user_id = ?",
                (user,),
            )
        })?;
        Ok(upto.unwrap_or(0))
    }

    fn advance_delivered(&self, updates: &[(u64, u64)]) -> Result<(), StoreError> {
        if updates.is_empty() {
            return Ok(());
        }
        self.run(|c| {
            c.exec_batch(
                "INSERT INTO delivery_cursors (user_id, upto) VALUES (?, ?) \
                 ON DUPLICATE KEY UPDATE upto = GREATEST(upto, VALUES(upto))",
                updates.iter().copied(),
            )
        })
    }
}
