//! Nearby people in Redis: GEOADD into `<prefix>:pos` and the time of each
//! location in the sorted set `<prefix>:at`; a search first drops the
//! locations older than the query's `since`, then asks GEOSEARCH for the
//! nearest members and measures them with the same great-circle formula as
//! the SQL engine. Users and groups go to the wrapped engine.
//!
//! Redis' GEO cannot hold latitudes beyond ±85.05112878°: a location there
//! is removed from Redis (such a user is not found through it).

use std::time::Duration;

use parking_lot::Mutex;

use super::{page, GroupDoc, Hit, NearbyQuery, Search, SearchError, UserDoc};
use crate::geo::Point;

/// Largest latitude Redis' GEO accepts.
const MAX_LAT: f64 = 85.051_128_78;
/// Connections kept for reuse.
const POOL: usize = 8;
/// Connect, read and write time-out of a Redis connection.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Nearby people in Redis, everything else in `inner`.
pub struct RedisGeo {
    inner: Box<dyn Search>,
    client: redis::Client,
    pos_key: String,
    at_key: String,
    pool: Mutex<Vec<redis::Connection>>,
}

fn backend(e: redis::RedisError) -> SearchError {
    SearchError::Backend(format!("redis: {e}"))
}

impl RedisGeo {
    /// Wraps `inner`; `url` is checked, nothing is sent yet.
    pub fn new(inner: Box<dyn Search>, url: &str, prefix: &str) -> Result<RedisGeo, SearchError> {
        let client = redis::Client::open(url).map_err(backend)?;
        Ok(RedisGeo {
            inner,
            client,
            pos_key: format!("{prefix}:pos"),
            at_key: format!("{prefix}:at"),
            pool: Mutex::new(Vec::new()),
        })
    }

    /// Runs `f` on a pooled connection; a connection that failed is dropped.
    fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, SearchError> {
        let pooled = self.pool.lock().pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => {
                let c = self
                    .client
                    .get_connection_with_timeout(TIMEOUT)
                    .map_err(backend)?;
                c.set_read_timeout(Some(TIMEOUT)).map_err(backend)?;
                c.set_write_timeout(Some(TIMEOUT)).map_err(backend)?;
                c
            }
        };
        let result = f(&mut conn).map_err(backend)?;
        let mut pool = self.pool.lock();
        if pool.len() < POOL {
            pool.push(conn);
        }
        Ok(result)
    }

    /// Records (or, beyond Redis' latitudes, forgets) a user's location.
    fn locate(&self, uid: u64, point: Point, at: i64) -> Result<(), SearchError> {
        self.with_conn(|c| {
            let mut pipe = redis::pipe();
            pipe.atomic();
            if point.lat.abs() <= MAX_LAT {
                pipe.cmd("GEOADD")
                    .arg(&self.pos_key)
                    .arg(point.lon)
                    .arg(point.lat)
                    .arg(uid)
                    .ignore()
                    .cmd("ZADD")
                    .arg(&self.at_key)
                    .arg(at)
                    .arg(uid)
                    .ignore();
            } else {
                pipe.cmd("ZREM").arg(&self.pos_key).arg(uid).ignore();
                pipe.cmd("ZREM").arg(&self.at_key).arg(uid).ignore();
            }
            pipe.query::<()>(c)
        })
    }
}

impl Search for RedisGeo {
    fn users(
        &self,
        word: &str,
        except: u64,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<u64>, SearchError> {
        self.inner.users(word, except, limit, offset)
    }

    fn groups(&self, word: &str, limit: u32, offset: u64) -> Result<Vec<u64>, SearchError> {
        self.inner.groups(word, limit, offset)
    }

    fn nearby(&self, q: &NearbyQuery) -> Result<Vec<Hit>, SearchError> {
        // One more than the page, for the caller left out.
        let count = q
            .offset
            .saturating_add(u64::from(q.limit))
            .saturating_add(1);
        let found: Vec<(u64, (f64, f64))> = self.with_conn(|c| {
            let stale: Vec<u64> = redis::cmd("ZRANGEBYSCORE")
                .arg(&self.at_key)
                .arg("-inf")
                .arg(format!("({}", q.since))
                .query(c)?;
            if !stale.is_empty() {
                redis::pipe()
                    .atomic()
                    .cmd("ZREM")
                    .arg(&self.pos_key)
                    .arg(&stale)
                    .ignore()
                    .cmd("ZREM")
                    .arg(&self.at_key)
                    .arg(&stale)
                    .ignore()
                    .query::<()>(c)?;
            }
            redis::cmd("GEOSEARCH")
                .arg(&self.pos_key)
                .arg("FROMLONLAT")
                .arg(q.center.lon)
                .arg(q.center.lat)
                .arg("BYRADIUS")
                .arg(q.radius_m)
                .arg("m")
                .arg("ASC")
                .arg("COUNT")
                .arg(count)
                .arg("WITHCOORD")
                .query(c)
        })?;
        let hits = found
            .into_iter()
            .filter(|(id, _)| *id != q.exclude)
            .map(|(id, (lon, lat))| Hit {
                id,
                metres: q.center.distance_m(&Point { lon, lat }),
            })
            .collect();
        Ok(page(hits, q))
    }

    fn user_changed(&self, doc: &UserDoc<'_>) -> Result<(), SearchError> {
        if let Some((point, at)) = doc.location {
            self.locate(doc.user.id, point, at)?;
        }
        self.inner.user_changed(doc)
    }

    fn group_changed(&self, doc: &GroupDoc) -> Result<(), SearchError> {
        self.inner.group_changed(doc)
    }

    fn group_removed(&self, id: u64) -> Result<(), SearchError> {
        self.inner.group_removed(id)
    }
}
