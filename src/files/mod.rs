//! The files served: an immutable snapshot of the document root, scanned once and mapped into
//! memory, with each file's response-header fields precomputed. Requests look paths up in a
//! hash map and never touch the file system.

pub mod mime;
pub mod resolve;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use memmap2::Mmap;

use crate::limits::FILES_MAX;
use crate::Error;

/// One file: its bytes (mapped) and the header fields of its 200 response.
pub struct Entry {
    /// The mapping; `None` for an empty file (a zero-length mapping is not allowed).
    map: Option<Mmap>,
    /// Size in bytes at scan time.
    pub len: u64,
    /// Modification time at scan time.
    pub mtime: SystemTime,
    /// Strong validator: `"inode-size-mtime"` in hex.
    pub etag: Box<str>,
    /// Content-Type, Content-Length, Last-Modified, ETag and Accept-Ranges lines of a 200.
    pub fields: Box<[u8]>,
}

impl Entry {
    /// Maps `path` and precomputes its header fields.
    fn open(path: &Path, name: &str) -> io::Result<Entry> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        let len = meta.len();
        let map = if len == 0 {
            None
        } else {
            // SAFETY: `Mmap::map` is unsafe because another process may modify or truncate the
            // file while it is mapped; reading a truncated page raises SIGBUS. The snapshot is
            // rebuilt when files change, and a truncation while serving is the documented
            // residual risk (ARCHITECTURE.md, "File mappings").
            Some(unsafe { Mmap::map(&file)? })
        };
        let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
        let mtime_secs = mtime.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let etag: Box<str> = format!("\"{:x}-{:x}-{:x}\"", meta.ino(), len, mtime_secs).into();
        let mut fields = Vec::with_capacity(256);
        fields.extend_from_slice(b"Content-Type: ");
        fields.extend_from_slice(mime::content_type(name).as_bytes());
        fields.extend_from_slice(b"\r\nContent-Length: ");
        fields.extend_from_slice(len.to_string().as_bytes());
        fields.extend_from_slice(b"\r\nLast-Modified: ");
        fields.extend_from_slice(httpdate::fmt_http_date(mtime).as_bytes());
        fields.extend_from_slice(b"\r\nETag: ");
        fields.extend_from_slice(etag.as_bytes());
        fields.extend_from_slice(b"\r\nAccept-Ranges: bytes\r\n");
        Ok(Entry { map, len, mtime, etag, fields: fields.into_boxed_slice() })
    }

    /// The file's bytes.
    pub fn body(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}

/// What a resolved path names.
pub enum Lookup<'a> {
    /// A regular file.
    File(&'a Entry),
    /// A directory: serve its index, or redirect to add the trailing slash.
    Directory,
    /// Nothing.
    Missing,
}

/// The document root as scanned at one moment.
pub struct Snapshot {
    /// Relative path (no leading slash) to file.
    files: HashMap<Box<[u8]>, Arc<Entry>>,
    /// Relative paths of directories (`""` is the root).
    dirs: HashSet<Box<[u8]>>,
}

impl Snapshot {
    /// Scans `root` (canonical), mapping every regular file. Symlinks are followed only when
    /// their target stays inside the root; anything else is left out, so it can never be
    /// served.
    pub fn scan(root: &Path) -> Result<Snapshot, Error> {
        let mut snapshot = Snapshot { files: HashMap::new(), dirs: HashSet::new() };
        let mut visited = HashSet::new();
        snapshot.dirs.insert(Box::from(&b""[..]));
        visited.insert(root.to_path_buf());
        let mut pending: Vec<(PathBuf, String)> = vec![(root.to_path_buf(), String::new())];
        while let Some((dir, rel)) = pending.pop() {
            let entries = std::fs::read_dir(&dir)
                .map_err(|source| Error::Scan { path: dir.clone(), source })?;
            for entry in entries {
                let entry = entry.map_err(|source| Error::Scan { path: dir.clone(), source })?;
                let Ok(name) = entry.file_name().into_string() else {
                    continue; // not UTF-8: no URL can name it reliably
                };
                let path = entry.path();
                let rel_child = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
                let Some(real) = inside_root(&path, root) else {
                    continue;
                };
                let Ok(meta) = std::fs::metadata(&real) else {
                    continue; // vanished or unreadable: not served
                };
                if meta.is_dir() {
                    if visited.insert(real.clone()) {
                        snapshot.dirs.insert(Box::from(rel_child.as_bytes()));
                        pending.push((real, rel_child));
                    }
                } else if meta.is_file() {
                    if snapshot.files.len() >= FILES_MAX {
                        return Err(Error::TooManyFiles {
                            root: root.to_path_buf(),
                            max: FILES_MAX,
                        });
                    }
                    let file = Entry::open(&real, &name)
                        .map_err(|source| Error::Scan { path: path.clone(), source })?;
                    snapshot.files.insert(Box::from(rel_child.as_bytes()), Arc::new(file));
                }
            }
        }
        Ok(snapshot)
    }

    /// Looks up a resolved relative path.
    pub fn lookup(&self, rel: &[u8]) -> Lookup<'_> {
        if let Some(entry) = self.files.get(rel) {
            return Lookup::File(entry);
        }
        if self.dirs.contains(rel) {
            return Lookup::Directory;
        }
        Lookup::Missing
    }

    /// Number of files served.
    pub fn file_count(&self) -> usize {
        self.files.len()
    }
}

/// The canonical target of `path` if it lies inside `root`.
fn inside_root(path: &Path, root: &Path) -> Option<PathBuf> {
    let real = path.canonicalize().ok()?;
    real.starts_with(root).then_some(real)
}
