//! MySQL/MariaDB side of [`Profiles`].

use std::collections::HashMap;

use ::mysql::prelude::Queryable;
use ::mysql::{PooledConn, Row};

use super::{placeholders, user_from_row, MysqlStore, IN_CHUNK};
use crate::geo::Point;
use crate::store::profile::{check_len, lon_weight, DLON_SQL};
use crate::store::{
    Area, Changed, Located, Profiles, RealName, StoreError, User, MAX_AVATAR_CHARS,
    MAX_NICKNAME_CHARS, USER_COLUMNS,
};

/// Duplicate key name: another node created the index first.
const ER_DUP_KEYNAME: u16 = 1061;

/// Indexes of the profile queries on `users`. MySQL 8 has no
/// `CREATE INDEX IF NOT EXISTS`, so each is created when
/// `information_schema` does not list it.
const INDEXES: &[(&str, &str)] = &[
    (
        "idx_users_location",
        "CREATE INDEX idx_users_location ON users (latitude, longitude)",
    ),
    (
        "uk_users_id_card_hash",
        "CREATE UNIQUE INDEX uk_users_id_card_hash ON users (id_card_hash)",
    ),
];

/// Creates the missing profile indexes; run after `database.sql`.
pub(super) fn apply_schema(conn: &mut PooledConn) -> ::mysql::Result<()> {
    for (name, ddl) in INDEXES {
        let found: Option<u8> = conn.exec_first(
            "SELECT 1 FROM information_schema.statistics WHERE table_schema = DATABASE() \
             AND table_name = 'users' AND index_name = ? LIMIT 1",
            (name,),
        )?;
        if found.is_none() {
            match conn.query_drop(ddl) {
                Err(::mysql::Error::MySqlError(e)) if e.code == ER_DUP_KEYNAME => {}
                other => other?,
            }
        }
    }
    Ok(())
}

impl MysqlStore {
    /// Runs one `UPDATE users ... WHERE id = ?` (the id last). MySQL
    /// counts only changed rows, so an update to the same values (0) is told
    /// from a missing user with a `SELECT`.
    fn update_user(
        &self,
        sql: &str,
        params: Vec<::mysql::Value>,
        uid: u64,
    ) -> Result<Changed, StoreError> {
        self.run(|c| {
            let mut values = params.clone();
            values.push(uid.into());
            c.exec_drop(sql, values)?;
            let changed = c.affected_rows();
            if changed > 0 {
                return Ok(Some(changed));
            }
            let found: Option<u8> = c.exec_first("SELECT 1 FROM users WHERE id = ?", (uid,))?;
            Ok(found.map(|_| 0))
        })
    }
}

impl Profiles for MysqlStore {
    fn set_nickname(&self, uid: u64, nickname: &str) -> Result<Changed, StoreError> {
        check_len("nickname", nickname, MAX_NICKNAME_CHARS)?;
        self.update_user(
            "UPDATE users SET nickname = ? WHERE id = ?",
            vec![nickname.into()],
            uid,
        )
    }

    fn set_avatar(&self, uid: u64, avatar: &str) -> Result<Changed, StoreError> {
        check_len("avatar", avatar, MAX_AVATAR_CHARS)?;
        self.update_user(
            "UPDATE users SET avatar = ? WHERE id = ?",
            vec![avatar.into()],
            uid,
        )
    }

    fn set_realname(&self, uid: u64, r: &RealName) -> Result<Changed, StoreError> {
        self.update_user(
            "UPDATE users SET realname = ?, id_card_mask = ?, id_card_hash = ?, \
             realname_verified = 1 WHERE id = ?",
            vec![
                r.name_mask.as_str().into(),
                r.id_mask.as_str().into(),
                r.id_hash.as_str().into(),
            ],
            uid,
        )
    }

    fn realname(&self, uid: u64) -> Result<Option<RealName>, StoreError> {
        let row: Option<(String, String, String)> = self.run(|c| {
            c.exec_first(
                "SELECT realname, id_card_mask, id_card_hash FROM users \
                 WHERE id = ? AND id_card_hash IS NOT NULL",
                (uid,),
            )
        })?;
        Ok(row.map(|(name_mask, id_mask, id_hash)| RealName {
            name_mask,
            id_mask,
            id_hash,
        }))
    }

    fn set_location(&self, uid: u64, point: Point, now: i64) -> Result<Changed, StoreError> {
        self.update_user(
            "UPDATE users SET longitude = ?, latitude = ?, location_at = ? WHERE id = ?",
            vec![point.lon.into(), point.lat.into(), now.into()],
            uid,
        )
    }

    fn located_in(&self, area: &Area, limit: usize) -> Result<Vec<Located>, StoreError> {
        let lon_filter = if area.lon.0 <= area.lon.1 {
            "longitude BETWEEN ? AND ?"
        } else {
            "(longitude >= ? OR longitude <= ?)"
        };
        let sql = format!(
            "SELECT id, longitude, latitude, location_at FROM (SELECT id, longitude, latitude, \
             location_at, ({dlon}) AS dlon FROM users \
             WHERE latitude BETWEEN ? AND ? AND {lon_filter} \
             AND location_at >= ? AND id <> ?) AS near \
             ORDER BY (latitude - ?) * (latitude - ?) + dlon * dlon * ?, id LIMIT ?",
            dlon = DLON_SQL.replace("{c}", "?"),
        );
        let c = area.center;
        let mut params: Vec<::mysql::Value> = vec![c.lon.into(); DLON_SQL.matches("{c}").count()];
        params.extend([
            area.lat.0.into(),
            area.lat.1.into(),
            area.lon.0.into(),
            area.lon.1.into(),
            area.since.into(),
            area.exclude.into(),
            c.lat.into(),
            c.lat.into(),
            lon_weight(area).into(),
            (limit as u64).into(),
        ]);
        let rows: Vec<(u64, f64, f64, i64)> = self.run(|conn| conn.exec(&sql, params.clone()))?;
        let ids: Vec<u64> = rows.iter().map(|r| r.0).collect();
        let mut users: HashMap<u64, User> = self
            .users_by_ids(&ids)?
            .into_iter()
            .map(|u| (u.id, u))
            .collect();
        Ok(rows
            .into_iter()
            .filter_map(|(id, lon, lat, at)| {
                Some(Located {
                    user: users.remove(&id)?,
                    point: Point { lon, lat },
                    at,
                })
            })
            .collect())
    }

    fn users_by_ids(&self, ids: &[u64]) -> Result<Vec<User>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(IN_CHUNK) {
            let sql = format!(
                "SELECT {USER_COLUMNS} FROM users WHERE id IN ({})",
                placeholders(chunk.len())
            );
            let rows: Vec<Row> = self.run(|c| c.exec(&sql, chunk.to_vec()))?;
            for row in rows {
                out.push(user_from_row(row)?);
            }
        }
        out.sort_by_key(|u| u.id);
        Ok(out)
    }
}
