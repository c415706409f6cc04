//! MySQL/MariaDB side of [`Messages`]. InnoDB may commit two inserts in the
//! opposite order of their auto-increment ids; every message insert
//! therefore takes the `message_seq` row lock first, so ids become visible
//! in id order (the delivery cursor relies on it).

use std::collections::{HashMap, HashSet};

use ::mysql::prelude::Queryable;
use ::mysql::{Row, Transaction, TxOpts};

use super::MysqlStore;
use crate::store::messages::{check_new_message, stored};
use crate::store::{Feed, Message, Messages, NewMessage, StoreError};

const COLUMNS: &str = "id, from_id, to_id, ope, kind, body, status, created_at";
const M_COLUMNS: &str = "m.id, m.from_id, m.to_id, m.ope, m.kind, m.body, m.status, m.created_at";

type MessageRow = (u64, u64, u64, i64, i64, String, i64, i64);

fn message((id, from_id, to_id, ope, kind, body, status, created_at): MessageRow) -> Message {
    Message {
        id,
        from_id,
        to_id,
        ope,
        kind,
        body,
        status,
        created_at,
    }
}

fn message_from_row(row: Row) -> Result<Message, StoreError> {
    ::mysql::from_row_opt::<MessageRow>(row)
        .map(message)
        .map_err(|e| StoreError::Other(format!("unexpected messages row: {e}")))
}

/// Indexes of the batch's messages to insert: not known by their `cid`
/// already, and not repeating a `cid` met earlier in the batch.
fn fresh_rows(batch: &[NewMessage<'_>], known: &HashSet<(u64, Vec<u8>)>) -> Vec<usize> {
    let mut seen: HashSet<(u64, &[u8])> = HashSet::new();
    batch
        .iter()
        .enumerate()
        .filter(|(_, m)| match m.cid {
            None => true,
            Some(c) => {
                !known.contains(&(m.from_id, c.as_bytes().to_vec()))
                    && seen.insert((m.from_id, c.as_bytes()))
            }
        })
        .map(|(i, _)| i)
        .collect()
}

/// Takes the message_seq row lock (every message insert runs under it, so
/// ids become visible in id order) and returns the id step.
fn lock_message_seq(tx: &mut Transaction<'_>) -> ::mysql::Result<u64> {
    let step: Option<u64> = tx.query_first(
        "SELECT @@auto_increment_increment FROM message_seq WHERE id = 1 FOR UPDATE",
    )?;
    Ok(step.unwrap_or(1).max(1))
}

/// Inserts the batch's rows `fresh` with one multi-row INSERT (`suffix`
/// appended). Under the message_seq lock no other message insert runs, so
/// the rows get ids first, first + step, … in row order.
fn insert_rows(
    tx: &mut Transaction<'_>,
    batch: &[NewMessage<'_>],
    fresh: &[usize],
    suffix: &str,
) -> ::mysql::Result<()> {
    let values = vec!["(?, ?, ?, ?, ?, ?, ?)"; fresh.len()].join(", ");
    let params: Vec<::mysql::Value> = fresh
        .iter()
        .flat_map(|&i| {
            let m = &batch[i];
            [
                m.from_id.into(),
                m.to_id.into(),
                m.ope.into(),
                m.kind.into(),
                m.body.into(),
                m.cid.map(str::as_bytes).into(),
                m.now_ms.into(),
            ]
        })
        .collect();
    tx.exec_drop(
        format!(
            "INSERT INTO messages (from_id, to_id, ope, kind, body, cid, created_at) \
             VALUES {values}{suffix}"
        ),
        params,
    )
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
        let keyed: Vec<(u64, &str)> = batch
            .iter()
            .filter_map(|m| m.cid.map(|c| (m.from_id, c)))
            .collect();
        let (earlier, first, step): (Vec<Row>, u64, u64) = self.run(|c| {
            // First try: no cid of the batch is known yet (a retry is rare),
            // so the batch goes in without looking its cids up. A known cid
            // leaves its row out (ON DUPLICATE KEY: affected rows fall
            // short); then the batch is stored again after the lookup.
            if !keyed.is_empty() {
                let mut tx = c.start_transaction(TxOpts::default())?;
                let step = lock_message_seq(&mut tx)?;
                let fresh = fresh_rows(batch, &HashSet::new());
                insert_rows(&mut tx, batch, &fresh, " ON DUPLICATE KEY UPDATE id = id")?;
                if tx.affected_rows() == fresh.len() as u64 {
                    let first = tx.last_insert_id().unwrap_or(0);
                    tx.commit()?;
                    return Ok((Vec::new(), first, step));
                }
                tx.rollback()?;
            }
            let mut tx = c.start_transaction(TxOpts::default())?;
            let step = lock_message_seq(&mut tx)?;
            let earlier: Vec<Row> = if keyed.is_empty() {
                Vec::new()
            } else {
                let cond = vec!["(from_id = ? AND cid = ?)"; keyed.len()].join(" OR ");
                let params: Vec<::mysql::Value> = keyed
                    .iter()
                    .flat_map(|(f, cid)| [(*f).into(), cid.as_bytes().into()])
                    .collect();
                tx.exec(
                    format!("SELECT {COLUMNS}, cid FROM messages WHERE {cond}"),
                    params,
                )?
            };
            let known: HashSet<(u64, Vec<u8>)> = earlier
                .iter()
                .filter_map(|r| Some((r.get::<u64, _>(1)?, r.get::<Vec<u8>, _>(8)?)))
                .collect();
            let fresh = fresh_rows(batch, &known);
            let mut first = 0;
            if !fresh.is_empty() {
                insert_rows(&mut tx, batch, &fresh, "")?;
                first = tx.last_insert_id().unwrap_or(0);
            }
            tx.commit()?;
            Ok((earlier, first, step))
        })?;
        let mut found: HashMap<(u64, Vec<u8>), Message> = HashMap::new();
        for row in earlier {
            let (id, from_id, to_id, ope, kind, body, status, created_at, cid) =
                ::mysql::from_row_opt::<(u64, u64, u64, i64, i64, String, i64, i64, Vec<u8>)>(row)
                    .map_err(|e| StoreError::Other(format!("unexpected messages row: {e}")))?;
            let m = message((id, from_id, to_id, ope, kind, body, status, created_at));
            found.insert((from_id, cid), m);
        }
        let mut out: Vec<(Message, bool)> = Vec::with_capacity(batch.len());
        let mut next = first;
        for m in batch {
            let key = m.cid.map(|c| (m.from_id, c.as_bytes().to_vec()));
            if let Some(earlier) = key.as_ref().and_then(|k| found.get(k)) {
                out.push((earlier.clone(), false));
                continue;
            }
            let stored_now = stored(m, next);
            next += step;
            if let Some(k) = key {
                found.insert(k, stored_now.clone());
            }
            out.push((stored_now, true));
        }
        Ok(out)
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
        member: u64,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<Message>, StoreError> {
        let before = before.unwrap_or(u64::MAX);
        let query = format!(
            "SELECT {M_COLUMNS} FROM group_members g JOIN messages m ON m.ope = 1 \
             AND m.to_id = g.group_id AND m.id < ? \
             WHERE g.group_id = ? AND g.user_id = ? \
             AND m.created_at >= g.joined_at * 1000 ORDER BY m.id DESC LIMIT ?"
        );
        let rows: Vec<Row> = self.run(|c| c.exec(&query, (before, group, member, limit)))?;
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
