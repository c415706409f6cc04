//! Attachments in a local directory, served back by the gateway under
//! `attach.url_prefix`.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use super::{served_as, AttachError, Attachments, Opened, Range, Stored};

/// A directory of attachments.
#[derive(Debug)]
pub struct Local {
    dir: PathBuf,
    url_prefix: String,
}

impl Local {
    /// Files under `dir` (created when missing), served at `url_prefix`.
    pub fn open(dir: PathBuf, url_prefix: &str) -> Result<Local, AttachError> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| AttachError(format!("cannot create {}: {e}", dir.display())))?;
        Ok(Local {
            dir,
            url_prefix: url_prefix.to_string(),
        })
    }
}

impl Attachments for Local {
    fn put(&self, stored: &Stored, data: &[u8]) -> Result<String, AttachError> {
        let path = self.dir.join(&stored.key);
        let parent = path.parent().unwrap_or(&self.dir);
        std::fs::create_dir_all(parent)
            .map_err(|e| AttachError(format!("cannot create {}: {e}", parent.display())))?;
        // Written under a temporary name, then renamed: a reader never sees
        // half a file.
        let tmp = path.with_extension("part");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            AttachError(format!("cannot write {}: {e}", path.display()))
        })?;
        Ok(format!("{}{}", self.url_prefix, stored.key))
    }

    fn open(&self, key: &str, range: Option<Range>) -> Opened {
        // Only keys of the generated shape are ever joined to the directory:
        // no `..`, no absolute path, no other file.
        if served_as(key).is_none() {
            return Opened::Missing;
        }
        let Ok(mut file) = std::fs::File::open(self.dir.join(key)) else {
            return Opened::Missing;
        };
        let Ok(total) = file.metadata().map(|m| m.len()) else {
            return Opened::Missing;
        };
        let (start, len) = match range.map(|r| r.within(total)) {
            None => (0, total),
            Some(Some(sel)) => sel,
            Some(None) => return Opened::Unsatisfiable(total),
        };
        if start > 0 && file.seek(SeekFrom::Start(start)).is_err() {
            return Opened::Missing;
        }
        Opened::Found {
            total,
            start,
            len,
            reader: Box::new(file.take(len)),
        }
    }
}
