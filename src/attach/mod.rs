//! Attachments: what an uploaded file is (its extension and its first bytes
//! must agree), the name it is stored under (random, never the client's
//! path), and where it goes — a local directory served back by the gateway
//! ([`Local`]) or an S3-compatible object store ([`S3`]).
//!
//! A stored file's key is `<dir>/<32 hex digits>[.<ext>]`, `<dir>` being
//! `img`, `voice`, `video` or `file`. Pictures, voice and video are served
//! with their own content type; everything under `file/` as
//! `application/octet-stream` with `Content-Disposition: attachment`, so no
//! upload is ever rendered by a browser as a page.

mod local;
mod s3;

pub use self::local::Local;
pub use self::s3::{S3Config, S3};

use std::fmt;

/// What kind of attachment an upload claims to be (`type` of `chat/upload`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// Type 1: jpg jpeg png gif bmp webp.
    Picture,
    /// Type 2: mp3 amr m4a aac wav ogg opus.
    Voice,
    /// Type 3: mp4 mov webm.
    Video,
    /// Type 6: anything, always served as a download.
    File,
}

/// A container or codec recognised by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Magic {
    Jpeg,
    Png,
    Gif,
    Bmp,
    Webp,
    /// MPEG audio: an ID3 tag or a layer I–III frame header.
    Mpeg,
    /// AAC in ADTS frames (or behind an ID3 tag).
    Adts,
    Amr,
    Wav,
    Ogg,
    /// ISO base media (`ftyp` box): mp4, m4a.
    Bmff,
    /// QuickTime: `ftyp` or a classic top-level atom.
    QuickTime,
    /// Matroska/WebM (EBML header).
    Ebml,
}

/// Accepted extensions per category: extension, the content it must have,
/// the content type it is served with.
const FORMATS: &[(Category, &str, Magic, &str)] = &[
    (Category::Picture, "jpg", Magic::Jpeg, "image/jpeg"),
    (Category::Picture, "jpeg", Magic::Jpeg, "image/jpeg"),
    (Category::Picture, "png", Magic::Png, "image/png"),
    (Category::Picture, "gif", Magic::Gif, "image/gif"),
    (Category::Picture, "bmp", Magic::Bmp, "image/bmp"),
    (Category::Picture, "webp", Magic::Webp, "image/webp"),
    (Category::Voice, "mp3", Magic::Mpeg, "audio/mpeg"),
    (Category::Voice, "amr", Magic::Amr, "audio/amr"),
    (Category::Voice, "m4a", Magic::Bmff, "audio/mp4"),
    (Category::Voice, "aac", Magic::Adts, "audio/aac"),
    (Category::Voice, "wav", Magic::Wav, "audio/wav"),
    (Category::Voice, "ogg", Magic::Ogg, "audio/ogg"),
    (Category::Voice, "opus", Magic::Ogg, "audio/ogg"),
    (Category::Video, "mp4", Magic::Bmff, "video/mp4"),
    (Category::Video, "mov", Magic::QuickTime, "video/quicktime"),
    (Category::Video, "webm", Magic::Ebml, "video/webm"),
];

/// Content type of everything under `file/`.
pub const DOWNLOAD_TYPE: &str = "application/octet-stream";

impl Category {
    /// The category of a `type` parameter.
    pub fn from_type(t: &str) -> Option<Category> {
        match t.trim() {
            "1" => Some(Category::Picture),
            "2" => Some(Category::Voice),
            "3" => Some(Category::Video),
            "6" => Some(Category::File),
            _ => None,
        }
    }

    fn dir(self) -> &'static str {
        match self {
            Category::Picture => "img",
            Category::Voice => "voice",
            Category::Video => "video",
            Category::File => "file",
        }
    }

    fn from_dir(dir: &str) -> Option<Category> {
        [
            Category::Picture,
            Category::Voice,
            Category::Video,
            Category::File,
        ]
        .into_iter()
        .find(|c| c.dir() == dir)
    }
}

/// Where and how a checked upload is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The storage key, `<dir>/<random>[.<ext>]`.
    pub key: String,
    /// The content type it is served with.
    pub content_type: &'static str,
    /// Whether it is served as a download (`Content-Disposition: attachment`).
    pub download: bool,
}

/// The lower-cased extension of a client's file name (after the last `.`
/// of its last path component), if it is 1–10 letters or digits.
fn extension(filename: &str) -> Option<String> {
    let base = filename.rsplit(['/', '\\']).next().unwrap_or("");
    let (_, ext) = base.rsplit_once('.')?;
    let ok = (1..=10).contains(&ext.len()) && ext.bytes().all(|b| b.is_ascii_alphanumeric());
    ok.then(|| ext.to_ascii_lowercase())
}

fn sniff(data: &[u8], magic: Magic) -> bool {
    let at = |off: usize, bytes: &[u8]| data.get(off..off + bytes.len()) == Some(bytes);
    let b = |i: usize| data.get(i).copied().unwrap_or(0);
    match magic {
        Magic::Jpeg => at(0, b"\xff\xd8\xff"),
        Magic::Png => at(0, b"\x89PNG\r\n\x1a\n"),
        Magic::Gif => at(0, b"GIF87a") || at(0, b"GIF89a"),
        Magic::Bmp => at(0, b"BM") && data.len() >= 26,
        Magic::Webp => at(0, b"RIFF") && at(8, b"WEBP"),
        Magic::Mpeg => at(0, b"ID3") || (b(0) == 0xff && b(1) & 0xe0 == 0xe0 && b(1) & 0x06 != 0),
        Magic::Adts => at(0, b"ID3") || (b(0) == 0xff && b(1) & 0xf6 == 0xf0),
        Magic::Amr => at(0, b"#!AMR\n") || at(0, b"#!AMR-WB\n"),
        Magic::Wav => at(0, b"RIFF") && at(8, b"WAVE"),
        Magic::Ogg => at(0, b"OggS"),
        Magic::Bmff => at(4, b"ftyp"),
        Magic::QuickTime => [&b"ftyp"[..], b"moov", b"mdat", b"wide", b"free", b"skip"]
            .iter()
            .any(|atom| at(4, atom)),
        Magic::Ebml => at(0, b"\x1a\x45\xdf\xa3"),
    }
}

/// Checks an upload claimed to be of category `cat`: for pictures, voice and
/// video the extension must be one of the category's and the content must
/// start as that format does; a file (type 6) may be anything. Returns where
/// to store it under a new random name, or `None` when refused.
pub fn check(cat: Category, filename: &str, data: &[u8]) -> Option<Stored> {
    let ext = extension(filename);
    let name = random_name();
    if cat == Category::File {
        let key = match ext {
            Some(ext) => format!("file/{name}.{ext}"),
            None => format!("file/{name}"),
        };
        return Some(Stored {
            key,
            content_type: DOWNLOAD_TYPE,
            download: true,
        });
    }
    let ext = ext?;
    let &(_, ext, magic, content_type) =
        FORMATS.iter().find(|(c, e, _, _)| *c == cat && *e == ext)?;
    sniff(data, magic).then(|| Stored {
        key: format!("{}/{name}.{ext}", cat.dir()),
        content_type,
        download: false,
    })
}

/// 32 random hex digits.
fn random_name() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness: fall back on time and a counter (still unique).
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        bytes[..8].copy_from_slice(&nanos.to_le_bytes());
        bytes[8..].copy_from_slice(&n.to_le_bytes());
    }
    crate::idcard::hex(&bytes)
}

/// How a stored key is served: `(content type, download)`; `None` for
/// anything that is not the shape of a key weim generates.
pub fn served_as(key: &str) -> Option<(&'static str, bool)> {
    let (dir, file) = key.split_once('/')?;
    let cat = Category::from_dir(dir)?;
    let (name, ext) = match file.split_once('.') {
        Some((n, e)) => (n, Some(e)),
        None => (file, None),
    };
    let hex_ok = name.len() == 32 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !hex_ok {
        return None;
    }
    if cat == Category::File {
        let ext_ok = ext.is_none_or(|e| {
            (1..=10).contains(&e.len())
                && e.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
        return ext_ok.then_some((DOWNLOAD_TYPE, true));
    }
    let ext = ext?;
    FORMATS
        .iter()
        .find(|(c, e, _, _)| *c == cat && *e == ext)
        .map(|&(_, _, _, content_type)| (content_type, false))
}

/// Why storing failed.
#[derive(Debug)]
pub struct AttachError(pub String);

impl fmt::Display for AttachError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "attachments: {}", self.0)
    }
}

impl std::error::Error for AttachError {}

/// A place to keep attachments. Calls block: workers only.
pub trait Attachments: Send + Sync {
    /// Stores `data` under `stored.key` and returns the URL clients fetch it
    /// from.
    fn put(&self, stored: &Stored, data: &[u8]) -> Result<String, AttachError>;

    /// Opens a stored key for the gateway's own `GET` route, the whole of it
    /// or one byte range: its bytes are read in pieces, never whole.
    fn open(&self, key: &str, range: Option<Range>) -> Opened;
}

/// A single byte range a client asked for (`Range: bytes=…`, RFC 9110).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// `first-` or `first-last` (inclusive).
    From(u64, Option<u64>),
    /// `-n`: the last `n` bytes.
    Last(u64),
}

impl Range {
    /// Parses a `Range` header; `None` for anything but one range in bytes
    /// (several ranges, other units: the whole file is sent instead).
    pub fn parse(header: &str) -> Option<Range> {
        let spec = header.trim().strip_prefix("bytes=")?.trim();
        if spec.contains(',') {
            return None;
        }
        let (a, b) = spec.split_once('-')?;
        let num = |s: &str| -> Option<u64> {
            let s = s.trim();
            (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
                .then(|| s.parse().ok())
                .flatten()
        };
        match (a.trim().is_empty(), b.trim().is_empty()) {
            (true, false) => num(b).map(Range::Last),
            (false, true) => num(a).map(|a| Range::From(a, None)),
            (false, false) => {
                let (a, b) = (num(a)?, num(b)?);
                (a <= b).then_some(Range::From(a, Some(b)))
            }
            (true, true) => None,
        }
    }

    /// The `(start, length)` this range selects from `total` bytes; `None`
    /// when it selects nothing (416).
    pub fn within(self, total: u64) -> Option<(u64, u64)> {
        let (start, end) = match self {
            Range::From(a, b) => (a, b.map_or(total, |b| b.saturating_add(1).min(total))),
            Range::Last(n) => (total.saturating_sub(n), total),
        };
        (start < end).then_some((start, end - start))
    }
}

/// What opening a stored key found.
pub enum Opened {
    /// Its bytes: `len` of them from `start`, of `total`.
    Found {
        /// Size of the whole object.
        total: u64,
        /// First byte sent.
        start: u64,
        /// Bytes sent.
        len: u64,
        /// Where they are read from.
        reader: Box<dyn std::io::Read + Send>,
    },
    /// The range selects nothing of `total` bytes.
    Unsatisfiable(u64),
    /// No such key, or the backend cannot be reached.
    Missing,
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

    #[test]
    fn pictures_need_extension_and_content_to_agree() {
        let s = check(Category::Picture, "C:\\photos\\Cat.PNG", PNG).unwrap();
        assert!(
            s.key.starts_with("img/") && s.key.ends_with(".png"),
            "{}",
            s.key
        );
        assert_eq!((s.content_type, s.download), ("image/png", false));
        assert_eq!(served_as(&s.key), Some(("image/png", false)));
        assert!(check(Category::Picture, "cat.jpg", PNG).is_none());
        assert!(check(Category::Picture, "cat", PNG).is_none());
        assert!(check(Category::Picture, "cat.png", b"<svg xmlns=...>").is_none());
        assert!(check(Category::Picture, "cat.svg", b"<svg xmlns=...>").is_none());
        assert!(check(Category::Picture, "a.html", b"<html>").is_none());
        assert!(check(Category::Picture, "a.png", b"").is_none());
        assert!(check(Category::Picture, "a.jpeg", b"\xff\xd8\xff\xe0").is_some());
        assert!(check(Category::Picture, "a.gif", b"GIF89a..").is_some());
        assert!(check(Category::Picture, "a.webp", b"RIFF\0\0\0\0WEBPVP8 ").is_some());
        assert!(check(Category::Picture, "a.webp", b"RIFF\0\0\0\0WAVEfmt ").is_none());
        assert!(check(
            Category::Picture,
            "a.bmp",
            &[b'B', b'M', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        )
        .is_some());
    }

    #[test]
    fn voice_and_video() {
        assert!(check(Category::Voice, "a.mp3", b"ID3\x04").is_some());
        assert!(check(Category::Voice, "a.mp3", b"\xff\xfb\x90").is_some());
        assert!(check(Category::Voice, "a.aac", b"\xff\xf1\x50").is_some());
        assert!(check(Category::Voice, "a.mp3", b"\xff\xf1\x50").is_none());
        assert!(check(Category::Voice, "a.amr", b"#!AMR\n...").is_some());
        assert!(check(Category::Voice, "a.wav", b"RIFF\0\0\0\0WAVEfmt ").is_some());
        assert!(check(Category::Voice, "a.opus", b"OggS\0").is_some());
        assert!(check(Category::Voice, "a.m4a", b"\0\0\0\x20ftypM4A ").is_some());
        assert!(check(Category::Voice, "a.mp4", b"\0\0\0\x20ftypisom").is_none());
        assert!(check(Category::Video, "a.mp4", b"\0\0\0\x20ftypisom").is_some());
        assert!(check(Category::Video, "a.mov", b"\0\0\0\x08wide").is_some());
        assert!(check(Category::Video, "a.webm", b"\x1a\x45\xdf\xa3").is_some());
        assert!(check(Category::Video, "a.webm", PNG).is_none());
        assert!(check(Category::Video, "a.png", PNG).is_none());
    }

    #[test]
    fn files_are_downloads_with_a_safe_name() {
        let s = check(Category::File, "../../etc/passwd", b"root:x").unwrap();
        assert!(
            s.key.starts_with("file/") && !s.key.contains(".."),
            "{}",
            s.key
        );
        assert_eq!((s.content_type, s.download), (DOWNLOAD_TYPE, true));
        let s = check(Category::File, "page.HTML", b"<html>").unwrap();
        assert!(s.key.ends_with(".html"));
        assert_eq!(served_as(&s.key), Some((DOWNLOAD_TYPE, true)));
        let s = check(Category::File, "x.tar.gz;rm -rf", b"").unwrap();
        assert_eq!(s.key.len(), "file/".len() + 32);
        assert_ne!(
            check(Category::File, "a", b"").unwrap().key,
            check(Category::File, "a", b"").unwrap().key
        );
    }

    #[test]
    fn byte_ranges() {
        assert_eq!(Range::parse("bytes=0-9"), Some(Range::From(0, Some(9))));
        assert_eq!(Range::parse("bytes=100-"), Some(Range::From(100, None)));
        assert_eq!(Range::parse("bytes=-5"), Some(Range::Last(5)));
        for bad in [
            "bytes=9-0",
            "bytes=0-1,4-5",
            "items=0-1",
            "bytes=-",
            "bytes=+1-2",
            "bytes=a-",
        ] {
            assert_eq!(Range::parse(bad), None, "{bad}");
        }
        assert_eq!(Range::From(0, Some(9)).within(5), Some((0, 5)));
        assert_eq!(Range::From(3, None).within(10), Some((3, 7)));
        assert_eq!(Range::Last(4).within(10), Some((6, 4)));
        assert_eq!(Range::Last(40).within(10), Some((0, 10)));
        assert_eq!(Range::From(10, None).within(10), None);
        assert_eq!(Range::Last(0).within(10), None);
    }

    #[test]
    fn only_generated_keys_are_served() {
        let name = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            served_as(&format!("img/{name}.gif")),
            Some(("image/gif", false))
        );
        assert_eq!(
            served_as(&format!("voice/{name}.opus")),
            Some(("audio/ogg", false))
        );
        for bad in [
            format!("img/{name}.svg"),
            format!("img/{name}"),
            format!("img/{name}.png/x"),
            format!("img/../{name}.png"),
            format!("img/{}.png", name.to_uppercase()),
            format!("other/{name}.png"),
            format!("file/{name}.HTML"),
            format!("/img/{name}.png"),
            "img/.png".to_string(),
            String::new(),
        ] {
            assert_eq!(served_as(&bad), None, "{bad}");
        }
        assert_eq!(Category::from_type(" 6 "), Some(Category::File));
        assert_eq!(Category::from_type("4"), None);
    }
}
