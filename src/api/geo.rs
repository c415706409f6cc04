//! Nearby people: `geo/users` (PROTOCOL §1.2), answered by the configured
//! search engine, distances rounded to 100 m, locations older than
//! `geo.ttl` left out.

use std::collections::HashMap;

use serde_json::json;

use super::profile::public;
use super::{fail, ok, page_params, search_error, store_error, Caller, Route, Routes};
use crate::auth;
use crate::geo::{format_distance, Point};
use crate::http::{Params, Response};
use crate::node::Shared;
use crate::search::NearbyQuery;

/// Geo routes.
pub(super) const ROUTES: Routes = &[("geo/users", Route::Authed(users, true))];

/// Largest and default search radius, km.
const MAX_DISTANCE_KM: f64 = 100.0;

/// The radius in metres: `distance` km, 0 < d ≤ 100, default 100.
fn radius_m(params: &Params) -> Option<f64> {
    match params
        .get("distance")
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        None => Some(MAX_DISTANCE_KM * 1000.0),
        Some(d) => {
            let km: f64 = d.parse().ok()?;
            (km.is_finite() && km > 0.0 && km <= MAX_DISTANCE_KM).then_some(km * 1000.0)
        }
    }
}

fn users(node: &Shared, caller: &Caller, params: &Params) -> Response {
    let (Some(center), Some(radius_m), Ok((limit, offset))) = (
        Point::parse(params.str("longitude"), params.str("latitude")),
        radius_m(params),
        page_params(params),
    ) else {
        return fail("数据非法");
    };
    let ttl = i64::try_from(node.config.geo.ttl.as_secs()).unwrap_or(i64::MAX);
    let query = NearbyQuery {
        center,
        radius_m,
        since: auth::now_secs().saturating_sub(ttl),
        exclude: caller.uid,
        limit,
        offset,
    };
    let hits = match node.search.nearby(&query) {
        Ok(h) => h,
        Err(e) => return search_error(e),
    };
    let ids: Vec<u64> = hits.iter().map(|h| h.id).collect();
    let users: HashMap<u64, _> = match node.store.users_by_ids(&ids) {
        Ok(list) => list.into_iter().map(|u| (u.id, u)).collect(),
        Err(e) => return store_error(e),
    };
    let list: Vec<_> = hits
        .iter()
        .filter_map(|h| {
            let mut item = public(users.get(&h.id)?);
            item["distance"] = json!(format_distance(h.metres));
            Some(item)
        })
        .collect();
    ok("ok", json!({ "list": list }))
}
