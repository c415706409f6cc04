//! Uploads: `chat/upload`, the body limit of the upload routes, storing a
//! checked file through the attachment backend, and serving stored files
//! back under `attach.url_prefix` (`GET` and `HEAD`, one byte range with
//! `206`, the body streamed in pieces, never read whole).

use serde_json::{json, Value};

use super::{fail, ok, Caller, Route, Routes, FAIL};
use crate::attach::{self, Category, Opened, Range};
use crate::config::Limits;
use crate::http::{BodyStream, Params, Request, Response, Upload};
use crate::node::Shared;

/// Upload routes.
pub(super) const ROUTES: Routes = &[("im/chat/upload", Route::Upload(chat_upload, true))];

/// Paths whose body may be as large as `limits.max_upload`.
const UPLOAD_PATHS: &[&str] = &["/api/v1/im/chat/upload", "/api/v1/user/update/avatar"];

/// Largest chat attachment, bytes.
const MAX_CHAT_FILE: usize = 20 << 20;

/// The largest request body accepted for `method` on `path`:
/// `limits.max_upload` on the upload routes (which take `POST` only),
/// `limits.max_body` elsewhere. The reactor refuses a larger
/// `Content-Length` with 413 before reading the body.
pub fn body_limit(limits: &Limits, method: &str, path: &str) -> usize {
    if method == "POST" && UPLOAD_PATHS.contains(&path) {
        limits.max_upload
    } else {
        limits.max_body
    }
}

/// The answer when a backend (object store, search engine) fails: 503.
pub(super) fn unavailable(e: impl std::fmt::Display) -> Response {
    log::warn!("{e}");
    Response::envelope(503, FAIL, "服务暂不可用，请稍后重试", Value::Null)
}

/// Checks an upload as `cat` and stores it; its URL, or the answer to give.
pub(super) fn store_upload(
    node: &Shared,
    cat: Category,
    file: &Upload<'_>,
) -> Result<String, Response> {
    let Some(stored) = attach::check(cat, &file.filename, file.data) else {
        return Err(fail(match cat {
            Category::Picture => "图片格式不受支持",
            Category::Voice => "语音格式不受支持",
            Category::Video => "视频格式不受支持",
            Category::File => "请选择文件",
        }));
    };
    node.attach.put(&stored, file.data).map_err(unavailable)
}

fn chat_upload(node: &Shared, _: &Caller, req: &Request, params: &Params) -> Response {
    let Some(file) = req.file("file").filter(|f| !f.data.is_empty()) else {
        return fail("请选择文件");
    };
    let Some(cat) = Category::from_type(params.str("type")) else {
        return fail("非法参数");
    };
    if file.data.len() > MAX_CHAT_FILE {
        return fail("文件太大");
    }
    match store_upload(node, cat, &file) {
        Ok(url) => ok("上传成功", json!({ "url": url })),
        Err(resp) => resp,
    }
}

/// `GET <url_prefix><key>`: a file of the local backend, with its content
/// type, `nosniff`, a sandboxing CSP, and `attachment` for plain files.
pub(super) fn serve(node: &Shared, req: &Request, key: &str) -> Response {
    let Some((content_type, download)) = attach::served_as(key) else {
        return Response::error(404);
    };
    let range = req.header("range").and_then(Range::parse);
    let mut resp = match node.attach.open(key, range) {
        Opened::Missing => return Response::error(404),
        Opened::Unsatisfiable(total) => {
            let mut resp = Response::error(416);
            resp.headers
                .push(("Content-Range", format!("bytes */{total}")));
            return resp;
        }
        Opened::Found {
            total,
            start,
            len,
            reader,
        } => {
            let mut resp = Response {
                content_type,
                stream: Some(BodyStream {
                    reader,
                    remaining: len,
                }),
                ..Response::text(200, Vec::new())
            };
            if range.is_some() {
                resp.status = 206;
                let last = (start + len).saturating_sub(1);
                resp.headers
                    .push(("Content-Range", format!("bytes {start}-{last}/{total}")));
            }
            resp
        }
    };
    resp.headers.push(("Accept-Ranges", "bytes".into()));
    resp.headers
        .push(("X-Content-Type-Options", "nosniff".into()));
    resp.headers.push((
        "Content-Security-Policy",
        "default-src 'none'; sandbox".into(),
    ));
    resp.headers.push((
        "Cache-Control",
        "public, max-age=31536000, immutable".into(),
    ));
    if download {
        resp.headers
            .push(("Content-Disposition", "attachment".into()));
    }
    resp
}
