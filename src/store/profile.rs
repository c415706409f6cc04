//! Profiles: nickname, avatar, real-name verification and locations, and
//! the bounding-box query behind nearby people.
//!
//! The `users` table holds these columns; this trait adds two indexes to it
//! (idempotently, at open): `(latitude, longitude)` for the bounding box and a
//! unique one on `id_card_hash`, so that one national ID number cannot verify
//! two accounts even when two requests race.

use super::{StoreError, User};
use crate::geo::Point;

/// A successful real-name verification as stored: never the ID number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealName {
    /// The name with every character after the first replaced by `*`.
    pub name_mask: String,
    /// The ID number's first 3 and last 4 characters, `*` between.
    pub id_mask: String,
    /// Keyed hash of the ID number (lower-case hex), unique across accounts.
    pub id_hash: String,
}

/// The part of the earth a nearby search looks at, with its filters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Area {
    /// Where the caller stands: candidates are ordered by (approximate)
    /// distance from here.
    pub center: Point,
    /// Latitudes from `.0` to `.1`, inclusive.
    pub lat: (f64, f64),
    /// Longitudes from `.0` (west) to `.1` (east), inclusive; west > east
    /// when the box crosses the antimeridian.
    pub lon: (f64, f64),
    /// Only locations set at or after this time (unix seconds).
    pub since: i64,
    /// This user is left out (the caller).
    pub exclude: u64,
}

/// A user with a location.
#[derive(Debug, Clone, PartialEq)]
pub struct Located {
    /// The user.
    pub user: User,
    /// Where they were.
    pub point: Point,
    /// When they said so (unix seconds).
    pub at: i64,
}

/// What an update of a user's row did: `None` when the user does not
/// exist, else the number of rows it changed (1, or 0 when every value was
/// already so: MySQL's count of affected rows, which the old server
/// answered as `result`).
pub type Changed = Option<u64>;

/// Longest nickname accepted by the store, in characters.
pub const MAX_NICKNAME_CHARS: usize = 64;
/// Longest avatar URL accepted by the store, in characters.
pub const MAX_AVATAR_CHARS: usize = 512;

/// Profile updates and location queries.
pub trait Profiles {
    /// Sets the nickname (at most [`MAX_NICKNAME_CHARS`]).
    fn set_nickname(&self, uid: u64, nickname: &str) -> Result<Changed, StoreError>;

    /// Sets the avatar URL (at most [`MAX_AVATAR_CHARS`]).
    fn set_avatar(&self, uid: u64, avatar: &str) -> Result<Changed, StoreError>;

    /// Records a real-name verification and marks the user verified.
    /// `Err(Conflict)` when another account holds the same `id_hash`;
    /// verifying again with the same number is Ok (and changes nothing).
    fn set_realname(&self, uid: u64, realname: &RealName) -> Result<Changed, StoreError>;

    /// The stored verification of a user, if any.
    fn realname(&self, uid: u64) -> Result<Option<RealName>, StoreError>;

    /// Sets the user's location and its time. The point must be valid (see
    /// [`Point::new`]).
    fn set_location(&self, uid: u64, point: Point, now: i64) -> Result<Changed, StoreError>;

    /// Users located in `area` (box, freshness, exclusion), nearest to its
    /// center first by a flat-earth approximation, at most `limit`. The
    /// caller computes exact distances.
    fn located_in(&self, area: &Area, limit: usize) -> Result<Vec<Located>, StoreError>;

    /// The users with these ids, in ascending id order; unknown ids are
    /// skipped.
    fn users_by_ids(&self, ids: &[u64]) -> Result<Vec<User>, StoreError>;
}

/// Checks a nickname and an avatar against the column sizes.
pub(crate) fn check_len(what: &str, value: &str, max: usize) -> Result<(), StoreError> {
    if value.chars().count() > max {
        return Err(StoreError::Other(format!(
            "{what} longer than {max} characters"
        )));
    }
    Ok(())
}

/// The squared cosine of the center's latitude: the weight of a longitude
/// difference against a latitude difference in the ordering.
pub(crate) fn lon_weight(area: &Area) -> f64 {
    let c = area.center.lat.to_radians().cos();
    c * c
}

/// The ordering distance's longitude difference, wrapped to −180…180, as SQL
/// over `longitude` and one parameter (the center's longitude, `{c}`) written at each `{c}`.
pub(crate) const DLON_SQL: &str = "CASE WHEN longitude - {c} > 180 THEN longitude - {c} - 360 \
     WHEN longitude - {c} < -180 THEN longitude - {c} + 360 ELSE longitude - {c} END";
