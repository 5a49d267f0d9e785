//! The files served: an immutable snapshot of the document root with every file's bytes ready
//! (small files copied, larger ones mapped) and its response-header fields precomputed.
//! Requests look paths up in a hash map and never touch the file system. A watcher thread
//! rescans the root every second and publishes a new snapshot when anything changed
//! (`Library`); workers pick it up with one atomic load per loop turn.

pub mod mime;
pub mod resolve;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Seek};
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use memmap2::{Mmap, MmapOptions};

use crate::limits::FILES_MAX;
use crate::Error;

/// Files up to this size are read into memory instead of mapped. Only these bytes, which the
/// server owns, are ever read in user space (copied behind a response head). Larger files are
/// mapped and their bytes are only ever read by the kernel (a sendmsg iovec, or a splice from the
/// open file), where a page truncated away makes the send fail with EFAULT and that connection
/// close, never the process die of SIGBUS. `Body` makes the difference a type: a mapped slice has
/// no way to become a `&[u8]`.
pub const COPIED_FILE_BYTES_MAX: u64 = 16 * 1024;

/// Times a file that changes while it is read (its length or mtime moved between fstat and the
/// end of the read) is read again before the scan gives up on it for this round.
const READ_ATTEMPTS_MAX: u32 = 3;

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
    /// Reads or maps `path`. The file is opened non-blocking, so a FIFO or device swapped in
    /// for a regular file cannot block the scan, and anything but a regular file is refused.
    /// The body's length is the length fstat reported, whatever the file does afterwards: a
    /// mapping covers exactly that many bytes (a file that grows later is never sent longer
    /// than its Content-Length), and a copy holds exactly that many.
    fn open(path: &Path) -> io::Result<(Bytes, Stamp)> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)?;
        for _ in 0..READ_ATTEMPTS_MAX {
            let meta = file.metadata()?;
            if !meta.file_type().is_file() {
                return Err(io::Error::other("not a regular file"));
            }
            let stamp = Stamp::of(&meta);
            if stamp.len == 0 {
                return Ok((Bytes::Empty, stamp));
            }
            if stamp.len > COPIED_FILE_BYTES_MAX {
                // SAFETY: fcntl on a descriptor `file` owns. Back to blocking mode for the
                // kernel's splices and sendfile; a failure leaves O_NONBLOCK, which regular
                // files ignore.
                unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, 0) };
                // SAFETY: `map` is unsafe because the file may be truncated or modified while
                // mapped. Mapped bytes are never read in user space (`MappedSlice` has no
                // accessor); the kernel reading a page truncated away fails the send with
                // EFAULT. The mapping covers exactly `stamp.len` bytes, however long the file
                // is by now.
                let map = unsafe { MmapOptions::new().len(stamp.len as usize).map(&file)? };
                return Ok((Bytes::Mapped(map, file), stamp));
            }
            let mut buf = Vec::with_capacity(stamp.len as usize);
            (&mut file).take(stamp.len).read_to_end(&mut buf)?;
            let unchanged = file.metadata().map(|m| Stamp::of(&m)).ok() == Some(stamp);
            if buf.len() as u64 == stamp.len && unchanged {
                return Ok((Bytes::Copied(buf.into_boxed_slice()), stamp));
            }
            file.seek(io::SeekFrom::Start(0))?;
        }
        Err(io::Error::other("file kept changing while being read"))
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

    /// The file's bytes, exactly `len` of them.
    pub fn body(&self) -> Body<'_> {
        match &self.bytes {
            Bytes::Empty => Body::Owned(&[]),
            Bytes::Copied(b) => Body::Owned(b),
            Bytes::Mapped(m, file) => Body::Mapped(MappedSlice {
                ptr: m.as_ptr(),
                len: m.len(),
                fd: file.as_raw_fd(),
                offset: 0,
                _entry: PhantomData,
            }),
        }
    }

    /// Whether this entry has precompressed variants.
    pub fn has_variants(&self) -> bool {
        self.br.is_some() || self.gzip.is_some()
    }
}

/// A response body: bytes the server owns, or a slice of a file mapping that only the kernel
/// may read. Both have exactly the length the entry's Content-Length says.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    /// Memory the server owns (files of at most `COPIED_FILE_BYTES_MAX`, error pages): may be
    /// copied in user space.
    Owned(&'a [u8]),
    /// Part of a mapped file.
    Mapped(MappedSlice<'a>),
}

impl<'a> Body<'a> {
    /// Length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Body::Owned(b) => b.len(),
            Body::Mapped(m) => m.len,
        }
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes, if the server owns them (a mapped body cannot be read in user space).
    pub fn owned(self) -> Option<&'a [u8]> {
        match self {
            Body::Owned(bytes) => Some(bytes),
            Body::Mapped(_) => None,
        }
    }

    /// Bytes `start..end`, or `None` if that is not inside the body (never a panic).
    pub fn slice(self, start: u64, end: u64) -> Option<Body<'a>> {
        if start > end || end > self.len() as u64 {
            return None;
        }
        let (start, end) = (start as usize, end as usize);
        Some(match self {
            Body::Owned(b) => Body::Owned(&b[start..end]),
            Body::Mapped(m) => Body::Mapped(MappedSlice {
                ptr: m.ptr.wrapping_add(start),
                len: end - start,
                fd: m.fd,
                offset: m.offset + start as u64,
                _entry: PhantomData,
            }),
        })
    }
}

/// A slice of a file mapping, valid while the entry it came from lives. Deliberately without
/// any way to read it as `&[u8]`: a file truncated under its mapping makes user-space reads of
/// the lost pages raise SIGBUS, while the kernel reading them (sendmsg, splice) fails cleanly.
#[derive(Debug, Clone, Copy)]
pub struct MappedSlice<'a> {
    ptr: *const u8,
    len: usize,
    fd: RawFd,
    offset: u64,
    _entry: PhantomData<&'a Entry>,
}

impl MappedSlice<'_> {
    /// The slice's address, for the kernel to read (a sendmsg iovec).
    pub fn addr(&self) -> *const u8 {
        self.ptr
    }

    /// The open file and the slice's offset in it, for splice or sendfile.
    pub fn file(&self) -> (RawFd, u64) {
        (self.fd, self.offset)
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the slice is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
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
                    Ok(entry) => Arc::new(entry),
                    // Gone since the walk: not served.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    // Out of descriptors, or the file is changing under us: keep serving the
                    // version we have (the stamps differ, so the next rescan tries again)
                    // rather than answer 404 for a file that exists.
                    Err(_) => match previous.and_then(|p| p.files.get(rel.as_bytes())) {
                        Some(entry) => Arc::clone(entry),
                        None => continue,
                    },
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
fn build_entry(f: &Found, br: Option<&Found>, gzip: Option<&Found>) -> io::Result<Entry> {
    let content_type = mime::content_type(&f.name);
    let has_variants = br.is_some() || gzip.is_some();
    let variant = |v: Option<&Found>, encoding: &str| -> io::Result<Option<Arc<Entry>>> {
        let Some(v) = v else { return Ok(None) };
        match Entry::open(&v.real) {
            Ok((bytes, stamp)) => {
                Ok(Some(Arc::new(Entry::build(bytes, stamp, content_type, Some(encoding), true))))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    };
    let (bytes, stamp) = Entry::open(&f.real)?;
    let mut entry = Entry::build(bytes, stamp, content_type, None, has_variants);
    entry.br = variant(br, "br")?;
    entry.gzip = variant(gzip, "gzip")?;
    Ok(entry)
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
    fn a_body_keeps_its_length_whatever_the_file_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.bin");
        std::fs::write(&path, vec![7u8; 64 << 10]).unwrap();
        let (bytes, stamp) = Entry::open(&path).unwrap();
        let entry = Entry::build(bytes, stamp, "application/octet-stream", None, false);
        // Shrunk and grown after the fstat: the body is still exactly the length the head
        // announces, and slicing it never panics.
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(10).unwrap();
        assert_eq!((entry.body().len(), entry.len), (64 << 10, 64 << 10));
        assert!(matches!(entry.body(), Body::Mapped(_)), "large files are only mapped");
        assert!(entry.body().slice(65_000, 65_536).is_some());
        assert!(entry.body().slice(65_000, 65_537).is_none());
        std::fs::write(&path, vec![8u8; 100 << 10]).unwrap();
        assert_eq!(entry.body().len(), 64 << 10);
        let small = dir.path().join("s.txt");
        std::fs::write(&small, b"0123456789").unwrap();
        let (bytes, stamp) = Entry::open(&small).unwrap();
        let entry = Entry::build(bytes, stamp, "text/plain", None, false);
        assert_eq!(entry.body().owned(), Some(&b"0123456789"[..]));
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pipe");
        let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo reads a NUL-terminated path that lives across the call.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
        // A blocking open of a FIFO waits for a writer forever; run it where a hang shows.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(Entry::open(&path).is_err());
        });
        let refused = rx.recv_timeout(Duration::from_secs(5)).expect("open of a FIFO returned");
        assert!(refused, "a FIFO is not served");
    }

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
        assert_eq!(a.gzip.as_ref().and_then(|g| g.body().owned()), Some(&b"GZ"[..]));
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
