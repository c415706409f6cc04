//! Search: users and groups by name, and nearby people, behind one small
//! trait with one results contract — ids in rank order (with distances for
//! nearby people); the handlers load what they show from the store, so a
//! list looks the same whichever engine ranked it.
//!
//! Engines:
//! - [`SqlSearch`] (default): the store. Users and groups by name are the
//!   store's own searches ([`Social::search_users`],
//!   [`Social::search_groups`]); nearby people are a bounding-box query
//!   ([`Profiles::located_in`]) refined by exact great-circle distances
//!   here.
//! - [`Elasticsearch`] (`search.kind: elasticsearch`): every method, with
//!   documents kept in step through [`Search::user_changed`],
//!   [`Search::group_changed`] and [`Search::group_removed`].
//! - [`RedisGeo`] (`geo.redis` set) wraps either of them and answers nearby
//!   people with GEOADD/GEOSEARCH.
//!
//! [`Social::search_users`]: crate::store::Social::search_users
//! [`Social::search_groups`]: crate::store::Social::search_groups

mod es;
mod geo_redis;

pub use self::es::Elasticsearch;
pub use self::geo_redis::RedisGeo;

use std::fmt;
use std::sync::Arc;

use crate::geo::{bounding_box, Point};
use crate::store::{Area, Group, Store, StoreError, User};

/// Most candidates the SQL engine ranks for one nearby search: the nearest
/// this many (by a flat-earth approximation) are sorted exactly.
pub const MAX_CANDIDATES: usize = 2000;

/// A nearby-people search.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NearbyQuery {
    /// Where the caller stands.
    pub center: Point,
    /// Search radius in metres.
    pub radius_m: f64,
    /// Only locations set at or after this time (unix seconds).
    pub since: i64,
    /// Left out of the results (the caller).
    pub exclude: u64,
    /// Page size.
    pub limit: u32,
    /// Results skipped before the page.
    pub offset: u64,
}

/// One nearby person.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// User id.
    pub id: u64,
    /// Great-circle distance from the query's center, metres.
    pub metres: f64,
}

/// A user as search engines index it.
#[derive(Debug, Clone, Copy)]
pub struct UserDoc<'a> {
    /// The account.
    pub user: &'a User,
    /// A new location and its time, when it changed.
    pub location: Option<(Point, i64)>,
}

/// A group as search engines index it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDoc {
    /// Group id.
    pub id: u64,
    /// Owner's user id.
    pub owner_id: u64,
    /// Group name.
    pub name: String,
    /// Creation time, unix seconds.
    pub created_at: i64,
}

impl From<&Group> for GroupDoc {
    fn from(g: &Group) -> GroupDoc {
        GroupDoc {
            id: g.id,
            owner_id: g.owner_id,
            name: g.name.clone(),
            created_at: g.created_at,
        }
    }
}

/// Why a search failed.
#[derive(Debug)]
pub enum SearchError {
    /// The store failed.
    Store(StoreError),
    /// The search engine failed or answered something unexpected.
    Backend(String),
}

impl fmt::Display for SearchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SearchError::Store(e) => write!(f, "search: {e}"),
            SearchError::Backend(m) => write!(f, "search engine: {m}"),
        }
    }
}

impl std::error::Error for SearchError {}

impl From<StoreError> for SearchError {
    fn from(e: StoreError) -> Self {
        SearchError::Store(e)
    }
}

/// A search engine. Calls block: workers only.
pub trait Search: Send + Sync {
    /// Users whose username or nickname contains `word` (case-insensitive,
    /// wildcards literal), `except` left out (the caller), ascending by id.
    fn users(
        &self,
        word: &str,
        except: u64,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<u64>, SearchError>;

    /// Groups whose name contains `word`, ascending by id.
    fn groups(&self, word: &str, limit: u32, offset: u64) -> Result<Vec<u64>, SearchError>;

    /// People within the radius whose location is fresh, the caller left
    /// out, nearest first (ties by id), one page.
    fn nearby(&self, q: &NearbyQuery) -> Result<Vec<Hit>, SearchError>;

    /// A user was created or changed (called after the store committed).
    fn user_changed(&self, doc: &UserDoc<'_>) -> Result<(), SearchError>;

    /// A group was created or renamed (called after the store committed).
    fn group_changed(&self, doc: &GroupDoc) -> Result<(), SearchError>;

    /// A group was deleted (called after the store committed); nothing to
    /// do when the engine does not know it.
    fn group_removed(&self, id: u64) -> Result<(), SearchError>;
}

/// Sorts hits nearest first (ties by id) and cuts one page.
fn page(mut hits: Vec<Hit>, q: &NearbyQuery) -> Vec<Hit> {
    hits.sort_by(|a, b| a.metres.total_cmp(&b.metres).then(a.id.cmp(&b.id)));
    hits.into_iter()
        .skip(usize::try_from(q.offset).unwrap_or(usize::MAX))
        .take(q.limit as usize)
        .collect()
}

/// Search through the store's SQL.
pub struct SqlSearch {
    store: Arc<dyn Store>,
}

impl SqlSearch {
    /// Searches `store`.
    pub fn new(store: Arc<dyn Store>) -> SqlSearch {
        SqlSearch { store }
    }
}

impl Search for SqlSearch {
    fn users(
        &self,
        word: &str,
        except: u64,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<u64>, SearchError> {
        let found = self.store.search_users(word, except, limit, offset)?;
        Ok(found.into_iter().map(|u| u.id).collect())
    }

    fn groups(&self, word: &str, limit: u32, offset: u64) -> Result<Vec<u64>, SearchError> {
        let found = self.store.search_groups(word, limit, offset)?;
        Ok(found.into_iter().map(|f| f.group.id).collect())
    }

    fn nearby(&self, q: &NearbyQuery) -> Result<Vec<Hit>, SearchError> {
        let (lat, lon) = bounding_box(q.center, q.radius_m);
        let area = Area {
            center: q.center,
            lat,
            lon,
            since: q.since,
            exclude: q.exclude,
        };
        let hits = self
            .store
            .located_in(&area, MAX_CANDIDATES)?
            .into_iter()
            .map(|l| Hit {
                id: l.user.id,
                metres: q.center.distance_m(&l.point),
            })
            .filter(|h| h.metres <= q.radius_m)
            .collect();
        Ok(page(hits, q))
    }

    fn user_changed(&self, _doc: &UserDoc<'_>) -> Result<(), SearchError> {
        Ok(())
    }

    fn group_changed(&self, _doc: &GroupDoc) -> Result<(), SearchError> {
        Ok(())
    }

    fn group_removed(&self, _id: u64) -> Result<(), SearchError> {
        Ok(())
    }
}
