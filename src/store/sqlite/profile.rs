//! SQLite side of [`Profiles`].

use rusqlite::{params, params_from_iter, OptionalExtension};

use super::{user_from_row, SqliteStore};
use crate::geo::Point;
use crate::store::profile::{check_len, lon_weight, DLON_SQL};
use crate::store::{
    Area, Changed, Located, Profiles, RealName, StoreError, User, MAX_AVATAR_CHARS,
    MAX_NICKNAME_CHARS, USER_COLUMNS,
};

/// Indexes of the profile queries; applied after the main schema.
pub(super) const SCHEMA: &str = "
CREATE INDEX IF NOT EXISTS idx_users_location ON users (latitude, longitude);
CREATE UNIQUE INDEX IF NOT EXISTS uk_users_id_card_hash ON users (id_card_hash);
";

fn id(v: u64) -> i64 {
    // Ids above i64::MAX cannot exist in SQLite; -1 matches nothing.
    i64::try_from(v).unwrap_or(-1)
}

impl SqliteStore {
    /// Runs one `UPDATE users ... WHERE id = ?1 AND <a value differs>`:
    /// SQLite counts the rows a `WHERE` matched, so the condition makes it
    /// count changed rows as MySQL does; 0 is told from a missing user with
    /// a `SELECT`.
    fn update_user(
        &self,
        sql: &str,
        uid: u64,
        rest: &[&dyn rusqlite::ToSql],
    ) -> Result<Changed, StoreError> {
        self.with_conn(|c| {
            let mut values: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(rest.len() + 1);
            let uid = id(uid);
            values.push(&uid);
            values.extend_from_slice(rest);
            let changed = c.prepare_cached(sql)?.execute(&values[..])?;
            if changed > 0 {
                return Ok(Some(changed as u64));
            }
            let found = c
                .prepare_cached("SELECT 1 FROM users WHERE id = ?1")?
                .query_row(params![uid], |_| Ok(()))
                .optional()?;
            Ok(found.map(|()| 0))
        })
    }
}

impl Profiles for SqliteStore {
    fn set_nickname(&self, uid: u64, nickname: &str) -> Result<Changed, StoreError> {
        check_len("nickname", nickname, MAX_NICKNAME_CHARS)?;
        self.update_user(
            "UPDATE users SET nickname = ?2 WHERE id = ?1 AND nickname IS NOT ?2",
            uid,
            &[&nickname],
        )
    }

    fn set_avatar(&self, uid: u64, avatar: &str) -> Result<Changed, StoreError> {
        check_len("avatar", avatar, MAX_AVATAR_CHARS)?;
        self.update_user(
            "UPDATE users SET avatar = ?2 WHERE id = ?1 AND avatar IS NOT ?2",
            uid,
            &[&avatar],
        )
    }

    fn set_realname(&self, uid: u64, r: &RealName) -> Result<Changed, StoreError> {
        self.update_user(
            "UPDATE users SET realname = ?2, id_card_mask = ?3, id_card_hash = ?4, \
             realname_verified = 1 WHERE id = ?1 AND (realname IS NOT ?2 \
             OR id_card_mask IS NOT ?3 OR id_card_hash IS NOT ?4 OR realname_verified IS NOT 1)",
            uid,
            &[&r.name_mask, &r.id_mask, &r.id_hash],
        )
    }

    fn realname(&self, uid: u64) -> Result<Option<RealName>, StoreError> {
        self.with_conn(|c| {
            c.prepare_cached(
                "SELECT realname, id_card_mask, id_card_hash FROM users \
                 WHERE id = ?1 AND id_card_hash IS NOT NULL",
            )?
            .query_row(params![id(uid)], |r| {
                Ok(RealName {
                    name_mask: r.get(0)?,
                    id_mask: r.get(1)?,
                    id_hash: r.get(2)?,
                })
            })
            .optional()
        })
    }

    fn set_location(&self, uid: u64, point: Point, now: i64) -> Result<Changed, StoreError> {
        self.update_user(
            "UPDATE users SET longitude = ?2, latitude = ?3, location_at = ?4 WHERE id = ?1 \
             AND (longitude IS NOT ?2 OR latitude IS NOT ?3 OR location_at IS NOT ?4)",
            uid,
            &[&point.lon, &point.lat, &now],
        )
    }

    fn located_in(&self, area: &Area, limit: usize) -> Result<Vec<Located>, StoreError> {
        let lon_filter = if area.lon.0 <= area.lon.1 {
            "longitude BETWEEN ?3 AND ?4"
        } else {
            "(longitude >= ?3 OR longitude <= ?4)"
        };
        let sql = format!(
            "SELECT * FROM (SELECT {USER_COLUMNS}, longitude, latitude, location_at, \
             ({dlon}) AS dlon FROM users \
             WHERE latitude BETWEEN ?1 AND ?2 AND {lon_filter} \
             AND location_at >= ?5 AND id <> ?6) \
             ORDER BY (latitude - ?8) * (latitude - ?8) + dlon * dlon * ?9, id LIMIT ?10",
            dlon = DLON_SQL.replace("{c}", "?7"),
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_conn(|c| {
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(
                params![
                    area.lat.0,
                    area.lat.1,
                    area.lon.0,
                    area.lon.1,
                    area.since,
                    id(area.exclude),
                    area.center.lon,
                    area.center.lat,
                    lon_weight(area),
                    limit
                ],
                |row| {
                    Ok(Located {
                        user: user_from_row(row)?,
                        point: Point {
                            lon: row.get(9)?,
                            lat: row.get(10)?,
                        },
                        at: row.get(11)?,
                    })
                },
            )?;
            rows.collect()
        })
    }

    fn users_by_ids(&self, ids: &[u64]) -> Result<Vec<User>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id IN ({marks}) ORDER BY id");
            let found = self.with_conn(|c| {
                let mut stmt = c.prepare_cached(&sql)?;
                let rows = stmt.query_map(
                    params_from_iter(chunk.iter().map(|&v| id(v))),
                    user_from_row,
                )?;
                rows.collect::<rusqlite::Result<Vec<User>>>()
            })?;
            out.extend(found);
        }
        out.sort_by_key(|u| u.id);
        Ok(out)
    }
}
