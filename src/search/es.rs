//! Elasticsearch engine (REST through a blocking `reqwest` client): user and
//! group search with `wildcard` queries on keyword fields (wildcards in the
//! word escaped, case-insensitive), nearby people with a `geo_distance`
//! filter sorted by `_geo_distance`, documents upserted with the `_update`
//! API (`doc_as_upsert`) and deleted groups removed with the document
//! `DELETE` API. The request bodies and the reading of
//! answers are plain functions over JSON, tested against the documented
//! shapes; this engine has not run against a live server here.

use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::{Method, Url};
use serde_json::{json, Value};

use super::{page, GroupDoc, Hit, NearbyQuery, Search, SearchError, UserDoc};
use crate::geo::Point;

/// Elasticsearch as a search engine.
pub struct Elasticsearch {
    base: Url,
    users_index: String,
    groups_index: String,
    client: Client,
}

/// Escapes the wildcard query's special characters (`*`, `?`, `\`).
fn escape_wildcard(word: &str) -> String {
    let mut out = String::with_capacity(word.len() + 2);
    for c in word.chars() {
        if matches!(c, '*' | '?' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A case-insensitive "contains `word`" clause on a keyword field.
fn contains(field: &str, word: &str) -> Value {
    json!({ "wildcard": { field: {
        "value": format!("*{}*", escape_wildcard(word)),
        "case_insensitive": true,
    } } })
}

/// The body of a user search, `except` left out.
pub(crate) fn users_query(word: &str, except: u64, limit: u32, offset: u64) -> Value {
    json!({
        "from": offset,
        "size": limit,
        "_source": ["id"],
        "sort": [{ "id": "asc" }],
        "query": { "bool": {
            "should": [contains("username", word), contains("nickname", word)],
            "minimum_should_match": 1,
            "must_not": [{ "term": { "id": except } }],
        } },
    })
}

/// The body of a group search.
pub(crate) fn groups_query(word: &str, limit: u32, offset: u64) -> Value {
    json!({
        "from": offset,
        "size": limit,
        "_source": ["id"],
        "sort": [{ "id": "asc" }],
        "query": { "bool": { "filter": [contains("name", word)] } },
    })
}

/// The body of a nearby search.
pub(crate) fn nearby_query(q: &NearbyQuery) -> Value {
    let here = json!({ "lat": q.center.lat, "lon": q.center.lon });
    json!({
        "from": q.offset,
        "size": q.limit,
        "_source": ["id", "location"],
        "query": { "bool": {
            "filter": [
                { "geo_distance": { "distance": format!("{}m", q.radius_m), "location": here } },
                { "range": { "location_at": { "gte": q.since } } },
            ],
            "must_not": [{ "term": { "id": q.exclude } }],
        } },
        "sort": [
            { "_geo_distance": {
                "location": here, "order": "asc", "unit": "m", "distance_type": "arc",
            } },
            { "id": "asc" },
        ],
    })
}

/// The partial document of a user (the location only when it changed).
pub(crate) fn user_update(doc: &UserDoc<'_>) -> Value {
    let u = doc.user;
    let mut fields = json!({
        "id": u.id,
        "username": u.username,
        "nickname": u.nickname,
        "avatar": u.avatar,
        "sex": u.sex,
    });
    if let Some((p, at)) = doc.location {
        fields["location"] = json!({ "lat": p.lat, "lon": p.lon });
        fields["location_at"] = json!(at);
    }
    json!({ "doc": fields, "doc_as_upsert": true })
}

/// The document of a group.
pub(crate) fn group_update(doc: &GroupDoc) -> Value {
    json!({
        "doc": {
            "id": doc.id,
            "owner_id": doc.owner_id,
            "name": doc.name,
            "created_at": doc.created_at,
        },
        "doc_as_upsert": true,
    })
}

/// The mappings of the users and groups indexes.
pub(crate) fn mappings() -> (Value, Value) {
    (
        json!({ "mappings": { "properties": {
            "id": { "type": "long" },
            "username": { "type": "keyword" },
            "nickname": { "type": "keyword" },
            "avatar": { "type": "keyword", "index": false },
            "sex": { "type": "integer" },
            "location": { "type": "geo_point" },
            "location_at": { "type": "long" },
        } } }),
        json!({ "mappings": { "properties": {
            "id": { "type": "long" },
            "owner_id": { "type": "long" },
            "name": { "type": "keyword" },
            "created_at": { "type": "long" },
        } } }),
    )
}

/// Reads the answer to a document `DELETE`: removed, or already absent
/// (404 with `result: not_found`); anything else, a missing index
/// included, is an error.
pub(crate) fn read_deleted(path: &str, status: u16, resp: &Value) -> Result<(), SearchError> {
    match status {
        200..=299 => Ok(()),
        404 if resp["result"] == "not_found" => Ok(()),
        _ => Err(SearchError::Backend(format!(
            "{path}: HTTP {status}: {resp}"
        ))),
    }
}

/// The hits of a search answer.
fn hits(resp: &Value) -> Result<&Vec<Value>, SearchError> {
    resp["hits"]["hits"]
        .as_array()
        .ok_or_else(|| SearchError::Backend(format!("no hits.hits in {resp}")))
}

/// A hit's user or group id: `_source.id`, else the document `_id`.
fn hit_id(hit: &Value) -> Result<u64, SearchError> {
    hit["_source"]["id"]
        .as_u64()
        .or_else(|| hit["_id"].as_str().and_then(|s| s.parse().ok()))
        .ok_or_else(|| SearchError::Backend(format!("hit without an id: {hit}")))
}

/// The ids of a search answer, in its order.
pub(crate) fn read_ids(resp: &Value) -> Result<Vec<u64>, SearchError> {
    hits(resp)?.iter().map(hit_id).collect()
}

/// The hits of a nearby answer, measured from `center` with weim's own
/// great-circle formula (the first sort value when the source has no
/// location).
pub(crate) fn read_nearby(resp: &Value, center: Point) -> Result<Vec<Hit>, SearchError> {
    hits(resp)?
        .iter()
        .map(|hit| {
            let id = hit_id(hit)?;
            let loc = &hit["_source"]["location"];
            let metres = match (loc["lon"].as_f64(), loc["lat"].as_f64()) {
                (Some(lon), Some(lat)) => center.distance_m(&Point { lon, lat }),
                _ => hit["sort"][0]
                    .as_f64()
                    .ok_or_else(|| SearchError::Backend(format!("hit without distance: {hit}")))?,
            };
            Ok(Hit { id, metres })
        })
        .collect()
}

impl Elasticsearch {
    /// A client for the cluster at `url`; nothing is sent yet.
    pub fn new(
        url: &str,
        users_index: &str,
        groups_index: &str,
    ) -> Result<Elasticsearch, SearchError> {
        let base = Url::parse(&format!("{}/", url.trim_end_matches('/')))
            .map_err(|e| SearchError::Backend(format!("search.url {url:?}: {e}")))?;
        let client = Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| SearchError::Backend(format!("HTTP client: {e}")))?;
        Ok(Elasticsearch {
            base,
            users_index: users_index.to_string(),
            groups_index: groups_index.to_string(),
            client,
        })
    }

    /// Sends one JSON request; the answer's JSON, or an error naming the
    /// status and the start of the body.
    fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), SearchError> {
        let url = self
            .base
            .join(path)
            .map_err(|e| SearchError::Backend(format!("{path}: {e}")))?;
        let mut req = self.client.request(method, url);
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let resp = req
            .send()
            .map_err(|e| SearchError::Backend(format!("{path}: {e}")))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .bytes()
            .map_err(|e| SearchError::Backend(format!("{path}: {e}")))?;
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, value))
    }

    /// Sends and insists on a 2xx answer.
    fn call(&self, method: Method, path: &str, body: &Value) -> Result<Value, SearchError> {
        match self.send(method, path, Some(body))? {
            (200..=299, v) => Ok(v),
            (status, v) => Err(SearchError::Backend(format!("{path}: HTTP {status}: {v}"))),
        }
    }

    /// Creates the two indexes with their mappings unless they exist.
    pub fn ensure_indexes(&self) -> Result<(), SearchError> {
        let (users, groups) = mappings();
        for (index, body) in [(&self.users_index, users), (&self.groups_index, groups)] {
            match self.send(Method::PUT, index, Some(&body))? {
                (200..=299, _) => {}
                (400, v) if v["error"]["type"] == "resource_already_exists_exception" => {}
                (status, v) => {
                    return Err(SearchError::Backend(format!(
                        "PUT {index}: HTTP {status}: {v}"
                    )))
                }
            }
        }
        Ok(())
    }
}

impl Search for Elasticsearch {
    fn users(
        &self,
        word: &str,
        except: u64,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<u64>, SearchError> {
        let path = format!("{}/_search", self.users_index);
        let query = users_query(word, except, limit, offset);
        read_ids(&self.call(Method::POST, &path, &query)?)
    }

    fn groups(&self, word: &str, limit: u32, offset: u64) -> Result<Vec<u64>, SearchError> {
        let path = format!("{}/_search", self.groups_index);
        read_ids(&self.call(Method::POST, &path, &groups_query(word, limit, offset))?)
    }

    fn nearby(&self, q: &NearbyQuery) -> Result<Vec<Hit>, SearchError> {
        let path = format!("{}/_search", self.users_index);
        let hits = read_nearby(&self.call(Method::POST, &path, &nearby_query(q))?, q.center)?;
        // Already one page; `page` only re-sorts by weim's own distances.
        Ok(page(hits, &NearbyQuery { offset: 0, ..*q }))
    }

    fn user_changed(&self, doc: &UserDoc<'_>) -> Result<(), SearchError> {
        let path = format!("{}/_update/{}", self.users_index, doc.user.id);
        self.call(Method::POST, &path, &user_update(doc)).map(drop)
    }

    fn group_changed(&self, doc: &GroupDoc) -> Result<(), SearchError> {
        let path = format!("{}/_update/{}", self.groups_index, doc.id);
        self.call(Method::POST, &path, &group_update(doc)).map(drop)
    }

    fn group_removed(&self, id: u64) -> Result<(), SearchError> {
        let path = format!("{}/_doc/{id}", self.groups_index);
        let (status, resp) = self.send(Method::DELETE, &path, None)?;
        read_deleted(&path, status, &resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::User;

    fn user() -> User {
        User {
            id: 7,
            username: "alice01".into(),
            password_hash: "secret-hash".into(),
            nickname: "Alice".into(),
            avatar: "/files/img/a.png".into(),
            sex: 2,
            status: 0,
            realname_verified: true,
            created_at: 1,
        }
    }

    #[test]
    fn user_search_escapes_wildcards() {
        let q = users_query("a*b?c\\", 7, 20, 40);
        assert_eq!(q["from"], 40);
        assert_eq!(q["size"], 20);
        assert_eq!(q["sort"], json!([{ "id": "asc" }]));
        let should = &q["query"]["bool"]["should"];
        assert_eq!(
            should[0],
            json!({ "wildcard": { "username": { "value": "*a\\*b\\?c\\\\*", "case_insensitive": true } } })
        );
        assert_eq!(
            should[1]["wildcard"]["nickname"]["value"],
            "*a\\*b\\?c\\\\*"
        );
        assert_eq!(q["query"]["bool"]["minimum_should_match"], 1);
        assert_eq!(
            q["query"]["bool"]["must_not"],
            json!([{ "term": { "id": 7 } }])
        );
        let g = groups_query("群", 5, 0);
        assert_eq!(
            g["query"]["bool"]["filter"][0]["wildcard"]["name"]["value"],
            "*群*"
        );
    }

    #[test]
    fn nearby_request_body() {
        let q = NearbyQuery {
            center: Point::new(116.4, 39.9).unwrap(),
            radius_m: 5000.0,
            since: 1_700_000_000,
            exclude: 7,
            limit: 20,
            offset: 20,
        };
        let body = nearby_query(&q);
        let filter = &body["query"]["bool"]["filter"];
        assert_eq!(
            filter[0],
            json!({ "geo_distance": { "distance": "5000m", "location": { "lat": 39.9, "lon": 116.4 } } })
        );
        assert_eq!(
            filter[1],
            json!({ "range": { "location_at": { "gte": 1_700_000_000 } } })
        );
        assert_eq!(
            body["query"]["bool"]["must_not"],
            json!([{ "term": { "id": 7 } }])
        );
        assert_eq!(body["sort"][0]["_geo_distance"]["unit"], "m");
        assert_eq!(body["sort"][0]["_geo_distance"]["order"], "asc");
        assert_eq!(
            (body["from"].as_u64(), body["size"].as_u64()),
            (Some(20), Some(20))
        );
    }

    /// A `_search` answer as Elasticsearch documents it.
    const SEARCH_ANSWER: &str = r#"{
        "took": 5, "timed_out": false,
        "_shards": { "total": 1, "successful": 1, "skipped": 0, "failed": 0 },
        "hits": {
            "total": { "value": 2, "relation": "eq" },
            "max_score": null,
            "hits": [
                { "_index": "weim_users", "_id": "12", "_score": null,
                  "_source": { "id": 12, "location": { "lat": 39.91, "lon": 116.4 } },
                  "sort": [1112.0, 12] },
                { "_index": "weim_users", "_id": "3", "_score": null,
                  "_source": {}, "sort": [2500.5, 3] }
            ]
        }
    }"#;

    #[test]
    fn reads_search_answers() {
        let resp: Value = serde_json::from_str(SEARCH_ANSWER).unwrap();
        assert_eq!(read_ids(&resp).unwrap(), vec![12, 3]);
        let center = Point::new(116.4, 39.9).unwrap();
        let hits = read_nearby(&resp, center).unwrap();
        assert_eq!(hits[0].id, 12);
        assert!((hits[0].metres - 1112.0).abs() < 1.0, "{}", hits[0].metres);
        assert_eq!(
            hits[1],
            Hit {
                id: 3,
                metres: 2500.5
            }
        );
        let error: Value = serde_json::from_str(
            r#"{"error":{"root_cause":[],"type":"index_not_found_exception","reason":"no such index [weim_users]"},"status":404}"#,
        )
        .unwrap();
        assert!(read_ids(&error).is_err());
        assert!(read_ids(&json!({"hits": {"hits": [{"_id": "x"}]}})).is_err());
    }

    #[test]
    fn reads_delete_answers() {
        let path = "weim_groups/_doc/4";
        let deleted: Value = serde_json::from_str(
            r#"{"_index":"weim_groups","_id":"4","_version":2,"result":"deleted",
                "_shards":{"total":2,"successful":1,"failed":0},"_seq_no":5,"_primary_term":1}"#,
        )
        .unwrap();
        assert!(read_deleted(path, 200, &deleted).is_ok());
        let absent: Value = serde_json::from_str(
            r#"{"_index":"weim_groups","_id":"4","_version":3,"result":"not_found",
                "_shards":{"total":2,"successful":1,"failed":0},"_seq_no":6,"_primary_term":1}"#,
        )
        .unwrap();
        assert!(read_deleted(path, 404, &absent).is_ok());
        let no_index: Value = serde_json::from_str(
            r#"{"error":{"root_cause":[],"type":"index_not_found_exception","reason":"no such index [weim_groups]"},"status":404}"#,
        )
        .unwrap();
        assert!(read_deleted(path, 404, &no_index).is_err());
        assert!(read_deleted(path, 500, &Value::Null).is_err());
    }

    #[test]
    fn documents() {
        let u = user();
        let plain = user_update(&UserDoc {
            user: &u,
            location: None,
        });
        assert_eq!(plain["doc_as_upsert"], true);
        assert_eq!(plain["doc"]["nickname"], "Alice");
        assert!(plain["doc"].get("location").is_none());
        assert!(plain["doc"].get("password_hash").is_none());
        let moved = user_update(&UserDoc {
            user: &u,
            location: Some((Point::new(1.5, -2.5).unwrap(), 99)),
        });
        assert_eq!(moved["doc"]["location"], json!({ "lat": -2.5, "lon": 1.5 }));
        assert_eq!(moved["doc"]["location_at"], 99);
        let g = group_update(&GroupDoc {
            id: 4,
            owner_id: 7,
            name: "g".into(),
            created_at: 5,
        });
        assert_eq!(
            g["doc"],
            json!({ "id": 4, "owner_id": 7, "name": "g", "created_at": 5 })
        );
        let (users, groups) = mappings();
        assert_eq!(
            users["mappings"]["properties"]["location"]["type"],
            "geo_point"
        );
        assert_eq!(groups["mappings"]["properties"]["name"]["type"], "keyword");
    }
}
