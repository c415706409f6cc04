//! Attachments in an S3-compatible object store (AWS S3, MinIO, Qiniu
//! Kodo's S3 endpoint...): one path-style `PUT <endpoint>/<bucket>/<key>`
//! per upload, signed with AWS Signature Version 4 (header-based, signed
//! payload hash), through a blocking `reqwest` client. Clients fetch objects
//! from `attach.s3_public_url`; the gateway's own route under
//! `attach.url_prefix` also serves them (a signed `GET`), for private
//! buckets.

use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::Url;
use sha2::{Digest, Sha256};

use super::{AttachError, Attachments, Opened, Range, Stored};
use crate::idcard::{hex, hmac_sha256};

/// What it takes to reach a bucket.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// Endpoint URL, e.g. `http://127.0.0.1:9000`.
    pub endpoint: String,
    /// Bucket name.
    pub bucket: String,
    /// Region of the signatures.
    pub region: String,
    /// Access key id.
    pub access_key: String,
    /// Secret key.
    pub secret_key: String,
    /// Public URL base of objects; empty = `<endpoint>/<bucket>/`.
    pub public_url: String,
}

/// A bucket of an S3-compatible store.
pub struct S3 {
    config: S3Config,
    base: Url,
    host: String,
    public_url: String,
    client: Client,
}

impl std::fmt::Debug for S3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3")
            .field("endpoint", &self.config.endpoint)
            .field("bucket", &self.config.bucket)
            .finish()
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters (and `/`
/// when `keep_slash`), as SigV4's canonical URI wants.
fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `YYYYMMDD'T'HHMMSS'Z'` of a unix time.
fn amz_date(unix_secs: i64) -> String {
    let (y, mo, d, h, mi, s) = crate::auth::utc_datetime(unix_secs);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
}

/// The `Authorization` header of a request without query string, signed
/// with `cfg`'s keys and region: `headers` are the signed headers (names
/// lower-case, `host` and `x-amz-date` among them), `path` the canonical
/// (already encoded) URI, `date` the `x-amz-date` value.
fn authorization(
    cfg: &S3Config,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    payload_sha256: &str,
    date: &str,
) -> String {
    let (access_key, region) = (&cfg.access_key, &cfg.region);
    let mut headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.trim())).collect();
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let signed: Vec<&str> = headers.iter().map(|(n, _)| *n).collect();
    let signed = signed.join(";");
    let canonical = format!("{method}\n{path}\n\n{canonical_headers}\n{signed}\n{payload_sha256}");
    let day = &date[..8];
    let scope = format!("{day}/{region}/s3/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac_sha256(format!("AWS4{}", cfg.secret_key).as_bytes(), day.as_bytes());
    for part in [region.as_str(), "s3", "aws4_request"] {
        key = hmac_sha256(&key, part.as_bytes());
    }
    let signature = hex(&hmac_sha256(&key, to_sign.as_bytes()));
    format!("AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={signature}")
}

impl S3 {
    /// A client for the bucket; checks the endpoint URL (nothing is sent).
    pub fn new(config: S3Config) -> Result<S3, AttachError> {
        let base = Url::parse(config.endpoint.trim_end_matches('/'))
            .map_err(|e| AttachError(format!("attach.s3_endpoint {:?}: {e}", config.endpoint)))?;
        if base.scheme() != "http" {
            return Err(AttachError(format!(
                "attach.s3_endpoint {:?}: only http:// endpoints are supported (no TLS in this build)",
                config.endpoint
            )));
        }
        let host = match (base.host_str(), base.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => {
                return Err(AttachError(format!(
                    "attach.s3_endpoint {:?} has no host",
                    config.endpoint
                )))
            }
        };
        let public_url = if config.public_url.is_empty() {
            format!(
                "{}/{}/",
                config.endpoint.trim_end_matches('/'),
                config.bucket
            )
        } else {
            format!("{}/", config.public_url.trim_end_matches('/'))
        };
        let client = Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| AttachError(format!("HTTP client: {e}")))?;
        Ok(S3 {
            config,
            base,
            host,
            public_url,
            client,
        })
    }

    /// The canonical path of an object.
    fn path(&self, key: &str) -> String {
        let prefix = self.base.path().trim_end_matches('/');
        format!(
            "{}/{}/{}",
            uri_encode(prefix, true),
            uri_encode(&self.config.bucket, false),
            uri_encode(key, true)
        )
    }
}

impl Attachments for S3 {
    fn put(&self, stored: &Stored, data: &[u8]) -> Result<String, AttachError> {
        let path = self.path(&stored.key);
        let date = amz_date(crate::auth::now_secs());
        let payload = hex(&Sha256::digest(data));
        let mut headers = vec![
            ("content-type", stored.content_type.to_string()),
            ("host", self.host.clone()),
            ("x-amz-content-sha256", payload.clone()),
            ("x-amz-date", date.clone()),
        ];
        if stored.download {
            headers.push(("content-disposition", "attachment".to_string()));
        }
        let auth = authorization(&self.config, "PUT", &path, &headers, &payload, &date);
        let mut url = self.base.clone();
        url.set_path(&path);
        let mut req = self.client.put(url).header("authorization", auth);
        for (name, value) in headers.iter().filter(|(n, _)| *n != "host") {
            req = req.header(*name, value);
        }
        let resp = req
            .body(data.to_vec())
            .send()
            .map_err(|e| AttachError(format!("PUT {}: {e}", stored.key)))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().unwrap_or_default();
            let body: String = body.chars().take(300).collect();
            return Err(AttachError(format!(
                "PUT {}: HTTP {status}: {body}",
                stored.key
            )));
        }
        Ok(format!("{}{}", self.public_url, stored.key))
    }

    fn open(&self, key: &str, range: Option<Range>) -> Opened {
        let path = self.path(key);
        let date = amz_date(crate::auth::now_secs());
        let payload = hex(&Sha256::digest(b""));
        let mut headers = vec![("host", self.host.clone())];
        if let Some(r) = range {
            headers.push(("range", range_header(r)));
        }
        headers.push(("x-amz-content-sha256", payload.clone()));
        headers.push(("x-amz-date", date.clone()));
        let auth = authorization(&self.config, "GET", &path, &headers, &payload, &date);
        let mut url = self.base.clone();
        url.set_path(&path);
        let mut req = self.client.get(url).header("authorization", auth);
        for (name, value) in headers.into_iter().filter(|(n, _)| *n != "host") {
            req = req.header(name, value);
        }
        let resp = match req.send() {
            Ok(r) => r,
            Err(e) => {
                log::warn!("GET {key}: {e}");
                return Opened::Missing;
            }
        };
        let content_range = resp
            .headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let status = resp.status().as_u16();
        match (
            status,
            content_range.as_deref().and_then(parse_content_range),
        ) {
            (200, _) => match resp.content_length() {
                Some(total) => Opened::Found {
                    total,
                    start: 0,
                    len: total,
                    reader: Box::new(resp),
                },
                None => Opened::Missing,
            },
            (206, Some((Some((start, end)), total))) => Opened::Found {
                total,
                start,
                len: end + 1 - start,
                reader: Box::new(resp),
            },
            (416, Some((None, total))) => Opened::Unsatisfiable(total),
            _ => Opened::Missing,
        }
    }
}

/// The `Range` header of a byte range.
fn range_header(r: Range) -> String {
    match r {
        Range::From(a, Some(b)) => format!("bytes={a}-{b}"),
        Range::From(a, None) => format!("bytes={a}-"),
        Range::Last(n) => format!("bytes=-{n}"),
    }
}

/// `bytes first-last/total` or `bytes */total`: `(Some((first, last)) or
/// None, total)`.
fn parse_content_range(v: &str) -> Option<(Option<(u64, u64)>, u64)> {
    let (span, total) = v.trim().strip_prefix("bytes ")?.split_once('/')?;
    let total = total.trim().parse().ok()?;
    if span.trim() == "*" {
        return Some((None, total));
    }
    let (a, b) = span.split_once('-')?;
    let (a, b): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a <= b).then_some((Some((a, b)), total))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The examples of AWS's "Signature Calculations for the Authorization
    // Header: Transferring Payload in a Single Chunk" (S3 API reference).
    fn example() -> S3Config {
        S3Config {
            endpoint: "https://s3.amazonaws.com".into(),
            bucket: "examplebucket".into(),
            region: "us-east-1".into(),
            access_key: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            public_url: String::new(),
        }
    }
    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn content_ranges() {
        assert_eq!(
            parse_content_range("bytes 0-9/100"),
            Some((Some((0, 9)), 100))
        );
        assert_eq!(parse_content_range("bytes */100"), Some((None, 100)));
        assert_eq!(parse_content_range("bytes 9-0/100"), None);
        assert_eq!(parse_content_range("items 0-9/100"), None);
        assert_eq!(range_header(Range::Last(5)), "bytes=-5");
    }

    #[test]
    fn get_object_example() {
        let headers = [
            ("host", "examplebucket.s3.amazonaws.com".to_string()),
            ("range", "bytes=0-9".to_string()),
            ("x-amz-content-sha256", EMPTY_SHA256.to_string()),
            ("x-amz-date", "20130524T000000Z".to_string()),
        ];
        let auth = authorization(
            &example(),
            "GET",
            "/test.txt",
            &headers,
            EMPTY_SHA256,
            "20130524T000000Z",
        );
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn put_object_example() {
        let payload = hex(&Sha256::digest(b"Welcome to Amazon S3."));
        assert_eq!(
            payload,
            "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
        );
        let headers = [
            ("date", "Fri, 24 May 2013 00:00:00 GMT".to_string()),
            ("host", "examplebucket.s3.amazonaws.com".to_string()),
            ("x-amz-content-sha256", payload.clone()),
            ("x-amz-date", "20130524T000000Z".to_string()),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY".to_string()),
        ];
        let path = uri_encode("/test$file.text", true);
        assert_eq!(path, "/test%24file.text");
        let auth = authorization(
            &example(),
            "PUT",
            &path,
            &headers,
            &payload,
            "20130524T000000Z",
        );
        assert!(
            auth.ends_with(
                "Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
            ),
            "{auth}"
        );
    }

    #[test]
    fn paths_and_urls() {
        let s3 = S3::new(S3Config {
            endpoint: "http://127.0.0.1:9000/".into(),
            bucket: "my bucket".into(),
            region: "us-east-1".into(),
            access_key: "a".into(),
            secret_key: "s".into(),
            public_url: String::new(),
        })
        .unwrap();
        assert_eq!(s3.host, "127.0.0.1:9000");
        assert_eq!(s3.path("img/ab.png"), "/my%20bucket/img/ab.png");
        assert_eq!(s3.public_url, "http://127.0.0.1:9000/my bucket/");
        assert_eq!(amz_date(1_369_353_600), "20130524T000000Z");
        for endpoint in ["not a url", "https://s3.amazonaws.com", "http://"] {
            let config = S3Config {
                endpoint: endpoint.into(),
                ..s3.config.clone()
            };
            assert!(S3::new(config).is_err(), "{endpoint}");
        }
    }
}
