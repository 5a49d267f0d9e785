//! The files served: an immutable snapshot of the document root with every file's bytes ready
//! (small files copied, larger ones mapped) and its response-header fields precomputed.
//! Requests look paths up in a hash map and never touch the file system. A watcher thread
//! rescans the root every second and publishes a new snapshot when anything changed
//! (`Library`); workers pick it up with one atomic load per loop turn.

pub mod mime;
pub mod resolve;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use memmap2::Mmap;

use crate::limits::FILES_MAX;
use crate::Error;

/// Files up to this size are read into memory instead of mapped: their bytes may be copied in
/// user space (inline bodies), and a copy cannot fault with SIGBUS when the file is truncated
/// under us. Larger files are only ever read by the kernel (sendmsg from the mapping), where a
/// truncated page makes the send fail with EFAULT and the connection close, not the process die.
pub const COPIED_FILE_BYTES_MAX: u64 = 16 * 1024;

/// Default time between rescans of the root: changes show up within this time.
pub const RESCAN_INTERVAL_MILLIS: u64 = 500;

/// A file's bytes.
enum Bytes {
    Empty,
    Copied(Box<[u8]>),
    /// The mapping, and the open file, which the io_uring engine splices from for large
    /// bodies (zero-copy, like sendfile).
    Mapped(Mmap, File),
}

/// Identity of a file version: if none of these changed, the entry is reused on rescan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    dev: u64,
    len: u64,
    mtime_nanos: i128,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            ino: meta.ino(),
            dev: meta.dev(),
            len: meta.len(),
            mtime_nanos: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}

/// One file version: its bytes and the header fields of its responses.
pub struct Entry {
    bytes: Bytes,
    stamp: Stamp,
    /// Size in bytes.
    pub len: u64,
    /// Modification time, whole seconds since the epoch (HTTP dates have no finer unit).
    pub mtime_secs: u64,
    /// Strong validator: `"inode-size-mtime"` in hex.
    pub etag: Box<str>,
    /// Complete header fields of a 200: Content-Type, Content-Length, then `meta`.
    pub fields_200: Box<[u8]>,
    /// Content-Type line.
    pub type_line: Box<[u8]>,
    /// Last-Modified, ETag, Accept-Ranges, and for files with precompressed variants
    /// Content-Encoding (variants only) and Vary lines.
    pub meta: Box<[u8]>,
    /// `FILE.br`, if it exists beside the file.
    pub br: Option<Arc<Entry>>,
    /// `FILE.gz`, if it exists beside the file.
    pub gzip: Option<Arc<Entry>>,
}

impl Entry {
    /// Reads or maps `path`.
    fn open(path: &Path) -> io::Result<(Bytes, Stamp)> {
        let mut file = File::open(path)?;
        let stamp = Stamp::of(&file.metadata()?);
        let bytes = if stamp.len == 0 {
            Bytes::Empty
        } else if stamp.len <= COPIED_FILE_BYTES_MAX {
            let mut buf = Vec::with_capacity(stamp.len as usize);
            file.read_to_end(&mut buf)?;
            if buf.len() as u64 != stamp.len {
                return Err(io::Error::other("file changed while being read"));
            }
            Bytes::Copied(buf.into_boxed_slice())
        } else {
            // SAFETY: `Mmap::map` is unsafe because the file may be truncated or modified
            // while mapped. Bytes of mapped files are only read by the kernel (sendmsg
            // iovecs), where a truncated page fails the send with EFAULT instead of raising
            // SIGBUS; user space copies only files small enough to be `Copied`.
            let map = unsafe { Mmap::map(&file)? };
            Bytes::Mapped(map, file)
        };
        Ok((bytes, stamp))
    }

    /// Builds the entry for `bytes`; `encoding` is set for precompressed variants and `vary`
    /// when the file has variants (or is one).
    fn build(
        bytes: Bytes,
        stamp: Stamp,
        content_type: &str,
        encoding: Option<&str>,
        vary: bool,
    ) -> Entry {
        let mtime_secs = u64::try_from(stamp.mtime_nanos.div_euclid(1_000_000_000)).unwrap_or(0);
        let etag: Box<str> = format!("\"{:x}-{:x}-{:x}\"", stamp.ino, stamp.len, mtime_secs).into();
        let type_line = format!("Content-Type: {content_type}\r\n").into_bytes().into_boxed_slice();
        let mut meta = format!(
            "Last-Modified: {}\r\nETag: {etag}\r\nAccept-Ranges: bytes\r\n",
            httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(mtime_secs))
        );
        if let Some(encoding) = encoding {
            meta.push_str(&format!("Content-Encoding: {encoding}\r\n"));
        }
        if vary {
            meta.push_str("Vary: Accept-Encoding\r\n");
        }
        let mut fields_200 = type_line.to_vec();
        fields_200.extend_from_slice(format!("Content-Length: {}\r\n", stamp.len).as_bytes());
        fields_200.extend_from_slice(meta.as_bytes());
        Entry {
            bytes,
            stamp,
            len: stamp.len,
            mtime_secs,
            etag,
            fields_200: fields_200.into_boxed_slice(),
            type_line,
            meta: meta.into_bytes().into_boxed_slice(),
            br: None,
            gzip: None,
        }
    }

    /// The file's bytes.
    pub fn body(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Empty => &[],
            Bytes::Copied(b) => b,
            Bytes::Mapped(m, _) => m,
        }
    }

    /// The open file behind a mapped body (files over `COPIED_FILE_BYTES_MAX`), for splicing.
    pub fn file_fd(&self) -> Option<std::os::fd::RawFd> {
        match &self.bytes {
            Bytes::Mapped(_, file) => Some(std::os::fd::AsRawFd::as_raw_fd(file)),
            Bytes::Empty | Bytes::Copied(_) => None,
        }
    }

    /// Whether this entry has precompressed variants.
    pub fn has_variants(&self) -> bool {
        self.br.is_some() || self.gzip.is_some()
    }
}

/// What a resolved path names.
pub enum Lookup<'a> {
    /// A regular file.
    File(&'a Arc<Entry>),
    /// A directory: serve its index, or redirect to add the trailing slash.
    Directory,
    /// Nothing.
    Missing,
}

/// A file found by the scan, before entries are built.
struct Found {
    real: PathBuf,
    name: String,
    meta: std::fs::Metadata,
}

/// The document root as scanned at one moment.
pub struct Snapshot {
    /// Relative path (no leading slash) to file.
    files: HashMap<Box<[u8]>, Arc<Entry>>,
    /// Relative paths of directories (`""` is the root).
    dirs: HashSet<Box<[u8]>>,
}

impl Snapshot {
    /// Scans `root` (canonical). Symlinks are followed only when their target stays inside
    /// the root; anything else is left out, so it can never be served.
    pub fn scan(root: &Path) -> Result<Snapshot, Error> {
        Snapshot::rescan(root, None)
    }

    /// Scans `root`, reusing the entries of `previous` whose files (and variants) did not
    /// change.
    pub fn rescan(root: &Path, previous: Option<&Snapshot>) -> Result<Snapshot, Error> {
        let (found, dirs) = walk(root)?;
        let mut files: HashMap<Box<[u8]>, Arc<Entry>> = HashMap::with_capacity(found.len());
        for (rel, f) in &found {
            let br = found.get(&format!("{rel}.br"));
            let gzip = found.get(&format!("{rel}.gz"));
            let stamps = (
                Stamp::of(&f.meta),
                br.map(|v| Stamp::of(&v.meta)),
                gzip.map(|v| Stamp::of(&v.meta)),
            );
            let reuse = previous.and_then(|p| p.files.get(rel.as_bytes())).filter(|e| {
                e.stamp == stamps.0
                    && e.br.as_ref().map(|v| v.stamp) == stamps.1
                    && e.gzip.as_ref().map(|v| v.stamp) == stamps.2
            });
            let entry = match reuse {
                Some(entry) => Arc::clone(entry),
                None => match build_entry(f, br, gzip) {
                    Some(entry) => Arc::new(entry),
                    None => continue, // vanished or unreadable since the walk: not served
                },
            };
            files.insert(Box::from(rel.as_bytes()), entry);
        }
        Ok(Snapshot { files, dirs })
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

    /// Whether `other` would serve exactly the same bytes for every path.
    fn same_as(&self, other: &Snapshot) -> bool {
        self.dirs == other.dirs
            && self.files.len() == other.files.len()
            && self.files.iter().all(|(k, v)| other.files.get(k).is_some_and(|o| Arc::ptr_eq(v, o)))
    }
}

/// Builds a file's entry; with `.br`/`.gz` siblings, attaches them as variants, each with
/// the base file's Content-Type, its own validators, `Content-Encoding` and `Vary`.
fn build_entry(f: &Found, br: Option<&Found>, gzip: Option<&Found>) -> Option<Entry> {
    let content_type = mime::content_type(&f.name);
    let has_variants = br.is_some() || gzip.is_some();
    let variant = |v: Option<&Found>, encoding: &str| -> Option<Arc<Entry>> {
        let (bytes, stamp) = Entry::open(&v?.real).ok()?;
        Some(Arc::new(Entry::build(bytes, stamp, content_type, Some(encoding), true)))
    };
    let (bytes, stamp) = Entry::open(&f.real).ok()?;
    let mut entry = Entry::build(bytes, stamp, content_type, None, has_variants);
    entry.br = variant(br, "br");
    entry.gzip = variant(gzip, "gzip");
    Some(entry)
}

/// Every regular file and directory under `root`, by relative path.
#[allow(clippy::type_complexity)]
fn walk(root: &Path) -> Result<(HashMap<String, Found>, HashSet<Box<[u8]>>), Error> {
    let mut found = HashMap::new();
    let mut dirs = HashSet::new();
    let mut visited = HashSet::new();
    dirs.insert(Box::from(&b""[..]));
    visited.insert(root.to_path_buf());
    let mut pending: Vec<(PathBuf, String)> = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = pending.pop() {
        let entries =
            std::fs::read_dir(&dir).map_err(|source| Error::Scan { path: dir.clone(), source })?;
        for entry in entries {
            let Ok(entry) = entry else { continue };
            let Ok(name) = entry.file_name().into_string() else {
                continue; // not UTF-8: no URL can name it reliably
            };
            let rel_child = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
            let Some(real) = inside_root(&entry.path(), root) else { continue };
            let Ok(meta) = std::fs::metadata(&real) else { continue };
            if meta.is_dir() {
                if visited.insert(real.clone()) {
                    dirs.insert(Box::from(rel_child.as_bytes()));
                    pending.push((real, rel_child));
                }
            } else if meta.is_file() {
                if found.len() >= FILES_MAX {
                    return Err(Error::TooManyFiles { root: root.to_path_buf(), max: FILES_MAX });
                }
                found.insert(rel_child, Found { real, name, meta });
            }
        }
    }
    Ok((found, dirs))
}

/// The canonical target of `path` if it lies inside `root`.
fn inside_root(path: &Path, root: &Path) -> Option<PathBuf> {
    let real = path.canonicalize().ok()?;
    real.starts_with(root).then_some(real)
}

/// The current snapshot, shared by the workers and replaced by the watcher.
pub struct Library {
    root: PathBuf,
    current: Mutex<Arc<Snapshot>>,
    generation: AtomicU64,
    stop: AtomicBool,
}

impl Library {
    /// Scans `root` once.
    pub fn open(root: &Path) -> Result<Arc<Library>, Error> {
        let snapshot = Arc::new(Snapshot::scan(root)?);
        Ok(Arc::new(Library {
            root: root.to_path_buf(),
            current: Mutex::new(snapshot),
            generation: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        }))
    }

    /// Bumped every time a new snapshot is published.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.current.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Rescans now; publishes and returns true if anything changed.
    pub fn refresh(&self) -> bool {
        let previous = self.snapshot();
        let Ok(next) = Snapshot::rescan(&self.root, Some(&previous)) else {
            return false; // the root vanished for a moment: keep serving what we have
        };
        if next.same_as(&previous) {
            return false;
        }
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        self.generation.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// Starts the watcher thread, which rescans every `interval` until `stop`.
    pub fn watch(
        self: &Arc<Library>,
        interval: Duration,
    ) -> io::Result<std::thread::JoinHandle<()>> {
        let library = Arc::clone(self);
        std::thread::Builder::new().name("ringserve-watch".into()).spawn(move || {
            while !library.stop.load(Ordering::Acquire) {
                std::thread::sleep(interval);
                library.refresh();
            }
        })
    }

    /// Ends the watcher thread (within one interval).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }
}

impl std::fmt::Debug for Library {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Library({})", self.root.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_attach_and_changes_are_picked_up() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::write(root.join("a.js"), b"console.log(1)").unwrap();
        std::fs::write(root.join("a.js.gz"), b"GZ").unwrap();
        std::fs::write(root.join("b.txt"), b"b").unwrap();
        let library = Library::open(&root).unwrap();
        let snap = library.snapshot();
        let Lookup::File(a) = snap.lookup(b"a.js") else { panic!("a.js missing") };
        assert_eq!(a.gzip.as_ref().map(|g| g.body()), Some(&b"GZ"[..]));
        assert!(a.br.is_none());
        assert!(String::from_utf8_lossy(&a.fields_200).contains("Vary: Accept-Encoding\r\n"));
        let gz = a.gzip.as_ref().unwrap();
        assert!(String::from_utf8_lossy(&gz.meta).contains("Content-Encoding: gzip\r\n"));
        assert!(String::from_utf8_lossy(&gz.type_line).contains("text/javascript"));
        assert!(!library.refresh(), "nothing changed");
        std::fs::write(root.join("c.txt"), b"new").unwrap();
        std::fs::remove_file(root.join("b.txt")).unwrap();
        assert!(library.refresh());
        let snap = library.snapshot();
        assert!(matches!(snap.lookup(b"c.txt"), Lookup::File(_)));
        assert!(matches!(snap.lookup(b"b.txt"), Lookup::Missing));
        assert_eq!(library.generation(), 1);
    }
}
