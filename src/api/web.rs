//! The browser files the gateway serves itself: the web app at `/`, the
//! operator's page at `/admin`, the JavaScript SDK at `/sdk/weim.js` and
//! their scripts and styles under `/web/`. They are compiled into the
//! binary (one binary serves them), answered with their type, a strong
//! `ETag` computed at build time (`If-None-Match` → 304), `Cache-Control:
//! no-cache` (revalidated on every use, so an upgrade shows at once) and a
//! `Content-Security-Policy` without inline script. `http.web: false`
//! turns them off; `GET /` then answers the JSON welcome to every client.

use crate::http::{Request, Response};
use crate::node::Shared;

/// One embedded file.
struct File {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    etag: &'static str,
}

/// FNV-1a, 64 bits: a content hash the compiler computes.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    h
}

/// `"<16 hex digits>"` of the content hash, as a quoted entity tag.
const fn etag(bytes: &[u8]) -> [u8; 18] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let h = fnv1a(bytes);
    let mut out = [b'"'; 18];
    let mut i = 0;
    while i < 16 {
        out[1 + i] = HEX[((h >> (60 - 4 * i)) & 0xf) as usize];
        i += 1;
    }
    out
}

macro_rules! files {
    ($($path:literal => $file:literal, $type:literal;)*) => {
        &[$(File {
            path: $path,
            content_type: $type,
            body: include_bytes!(concat!("../../web/", $file)),
            etag: {
                const TAG: [u8; 18] = etag(include_bytes!(concat!("../../web/", $file)));
                match std::str::from_utf8(&TAG) {
                    Ok(s) => s,
                    Err(_) => panic!("an entity tag is ASCII"),
                }
            },
        }),*]
    };
}

/// Every embedded file by the path it is served at.
const FILES: &[File] = files![
    "/" => "index.html", "text/html; charset=utf-8";
    "/admin" => "admin.html", "text/html; charset=utf-8";
    "/sdk/weim.js" => "sdk/weim.js", "text/javascript; charset=utf-8";
    "/web/app.js" => "app.js", "text/javascript; charset=utf-8";
    "/web/i18n.js" => "i18n.js", "text/javascript; charset=utf-8";
    "/web/app.css" => "app.css", "text/css; charset=utf-8";
    "/web/admin.js" => "admin.js", "text/javascript; charset=utf-8";
    "/web/admin.css" => "admin.css", "text/css; charset=utf-8";
    "/web/icon.svg" => "icon.svg", "image/svg+xml";
];

/// Whether `GET /` is asked for by a browser: its `Accept` names
/// `text/html` (other clients keep the JSON welcome).
pub(super) fn wants_html(req: &Request) -> bool {
    req.header("accept")
        .is_some_and(|a| a.split(',').any(|t| t.trim().starts_with("text/html")))
}

/// The embedded file served at `path`, when the web files are on and there
/// is one.
pub(super) fn serve(node: &Shared, req: &Request, path: &str) -> Option<Response> {
    if !node.config.http.web {
        return None;
    }
    let file = FILES.iter().find(|f| f.path == path)?;
    let fresh = req.header("if-none-match").is_some_and(|v| {
        v.split(',')
            .any(|t| t.trim() == file.etag || t.trim() == "*")
    });
    let mut resp = if fresh {
        Response {
            content_type: file.content_type,
            ..Response::text(304, "")
        }
    } else {
        Response {
            content_type: file.content_type,
            ..Response::text(200, file.body)
        }
    };
    resp.headers.push(("ETag", file.etag.to_string()));
    resp.headers.push(("Cache-Control", "no-cache".into()));
    resp.headers
        .push(("X-Content-Type-Options", "nosniff".into()));
    resp.headers.push(("Referrer-Policy", "no-referrer".into()));
    resp.headers
        .push(("Content-Security-Policy", policy(node, file.path)));
    Some(resp)
}

/// The `Content-Security-Policy`: scripts, styles and everything else from
/// this origin only (no inline script or style); sockets to any host (the
/// SDK may be pointed at another node); pictures also from `data:`/`blob:`
/// and from where uploads are answered (`http.public_url`,
/// `attach.s3_public_url`). The operator's page may also read the other
/// nodes of the cluster (their advertised addresses, from the peer table).
fn policy(node: &Shared, path: &str) -> String {
    let mut img = String::from("'self' data: blob:");
    for origin in [
        node.config.http.public_url.as_str(),
        node.config.attach.s3_public_url.as_str(),
    ] {
        if !origin.is_empty() {
            img.push(' ');
            img.push_str(origin);
        }
    }
    let mut connect = String::from("'self' ws: wss:");
    if path == "/admin" {
        let peers = node
            .delivery
            .cluster()
            .map(|c| c.peers.list())
            .unwrap_or_default();
        for peer in peers {
            // Only plain host:port addresses become sources.
            if peer
                .addr
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b))
            {
                connect.push_str(&format!(" http://{} https://{}", peer.addr, peer.addr));
            }
        }
    }
    format!(
        "default-src 'self'; connect-src {connect}; img-src {img}; \
         style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; \
         frame-ancestors 'none'; form-action 'self'"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_tags_follow_the_content() {
        assert_eq!(&etag(b""), b"\"cbf29ce484222325\"");
        assert_ne!(etag(b"a"), etag(b"b"));
        for f in FILES {
            assert_eq!(f.etag.as_bytes(), etag(f.body));
            assert!(!f.body.is_empty(), "{} is empty", f.path);
        }
    }
}
