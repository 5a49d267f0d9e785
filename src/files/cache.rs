//! The on-demand file cache: a map from a resolved request path to what serving it needs (the
//! entry with its open file, body and precomputed header fields, or the fact that the path is a
//! directory, is missing or is forbidden), filled when a path is first requested and bounded in
//! entries and bytes.
//!
//! Two halves, so the request path stays sans-I/O:
//! - `get` (no I/O, no allocation): the answer if it is fresh, else `Lookup::Unknown`;
//! - `fill` (I/O, called by the engine when `serve` reports a miss): opens the path with
//!   `openat2(RESOLVE_BENEATH)` under the root's descriptor, or, for a cached answer that is
//!   due, revalidates it with one `statx` of the path (plus its directory and variants).
//!
//! Freshness: an answer is used without any system call for `revalidate` after it was checked
//! (500 ms by default), so a file created, rewritten, replaced, truncated or deleted shows up
//! within that time, and a hot entry costs at most one revalidation per interval.
//!
//! Eviction: CLOCK (second chance). Every hit sets the slot's reference bit; inserting into a
//! full cache sweeps the hand, clearing bits, and evicts the first slot whose bit was clear.
//! A hit touches one `Cell<bool>`, so `get` takes `&self`. Evicting drops the cache's `Arc`;
//! batches still sending from the entry hold their own.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{mime, Entry, Stamp};
use crate::Error;

/// Longest path `openat2` accepts (PATH_MAX, including the NUL); longer keys are missing.
const PATH_BYTES_MAX: usize = libc::PATH_MAX as usize;

/// Bytes charged per cached answer beyond its own data: the map entry, the slot and the key's
/// allocation, rounded up.
const SLOT_OVERHEAD_BYTES: usize = 256;

/// Bounds and freshness of a cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// Most answers held (files, directories and negative answers alike); each open file holds
    /// a descriptor and a mapping, so this also bounds those.
    pub entries: usize,
    /// Most bytes held: bodies read into memory, mapped bodies, header fields, keys.
    pub bytes: usize,
    /// Milliseconds an answer is used before it is checked again; `None` never re-checks (for
    /// trees that do not change).
    pub revalidate_ms: Option<u64>,
}

/// What the cache knows about a path, borrowed for one request.
pub enum Lookup<'a> {
    /// A regular file.
    File(&'a Arc<Entry>),
    /// A directory: its index, or a redirect adding the slash.
    Directory,
    /// Nothing servable: absent, outside the root, or not a regular file (FIFO, socket,
    /// device): 404.
    Missing,
    /// Permission denied: 403.
    Forbidden,
    /// Out of descriptors or memory for this request: 503 with Retry-After.
    Busy,
    /// An I/O error: 500.
    Failed,
    /// Not cached, or due for revalidation: the engine must `fill` it first.
    Unknown,
}

/// A cached answer.
enum Answer {
    File(Arc<Entry>),
    Directory,
    Missing,
    Forbidden,
    /// Transient failures are kept for the loop turn that met them only (`checked_ms` equal to
    /// the current time), so the request that asked gets its error and the next one retries.
    Busy,
    Failed,
}

/// The directory holding a file, as it was when the file was opened: creating or deleting a
/// `.br`/`.gz` sibling changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DirStamp {
    ino: u64,
    mtime_nanos: i128,
    ctime_nanos: i128,
}

/// A directory's stamp (`None` if it could not be read) and when it was taken.
type DirSeen = (Option<DirStamp>, u64);

struct Slot {
    key: Box<[u8]>,
    answer: Answer,
    dir: Option<DirStamp>,
    checked_ms: u64,
    weight: usize,
    referenced: Cell<bool>,
}

/// Counters of one cache (read by tests and at exit).
#[derive(Debug, Default, Clone, Copy)]
pub struct CacheCounters {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Fills of paths not in the cache.
    pub misses: u64,
    /// Revalidations of cached answers (one `statx` each, plus directory and variants).
    pub revalidations: u64,
    /// Answers evicted to make room.
    pub evictions: u64,
}

/// One worker's cache (the blocking engine shares one behind a mutex).
pub struct FileCache {
    /// The root, opened once; every path is opened beneath it.
    root: OwnedFd,
    /// Its canonical path, for symlinks given as absolute paths (see `open_beneath`).
    root_path: PathBuf,
    index: HashMap<Box<[u8]>, u32>,
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    hand: usize,
    bytes: usize,
    limits: CacheLimits,
    hits: Cell<u64>,
    counters: CacheCounters,
    /// Each directory's stamp and when it was taken: entries of one directory share one
    /// `statx` of it per interval (it tells whether a `.br`/`.gz` sibling appeared).
    dir_stamps: RefCell<HashMap<Box<[u8]>, DirSeen>>,
}

impl FileCache {
    /// A cache over `root` (a directory).
    pub fn open(root: &Path, limits: CacheLimits) -> Result<FileCache, Error> {
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags_directory()
            .open(root)
            .map_err(|source| Error::Root { path: root.to_path_buf(), source })?;
        let root_path = root
            .canonicalize()
            .map_err(|source| Error::Root { path: root.to_path_buf(), source })?;
        Ok(FileCache::with_root(OwnedFd::from(dir), root_path, limits))
    }

    fn with_root(root: OwnedFd, root_path: PathBuf, limits: CacheLimits) -> FileCache {
        FileCache {
            root,
            root_path,
            index: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            hand: 0,
            bytes: 0,
            limits: CacheLimits { entries: limits.entries.max(1), ..limits },
            hits: Cell::new(0),
            counters: CacheCounters::default(),
            dir_stamps: RefCell::new(HashMap::new()),
        }
    }

    /// A second cache over the same root holding the same answers (shared entries), for
    /// another worker.
    pub fn try_clone(&self) -> io::Result<FileCache> {
        let mut copy =
            FileCache::with_root(self.root.try_clone()?, self.root_path.clone(), self.limits);
        for slot in self.slots.iter().flatten() {
            let answer = match &slot.answer {
                Answer::File(entry) => Answer::File(Arc::clone(entry)),
                Answer::Directory => Answer::Directory,
                Answer::Missing => Answer::Missing,
                Answer::Forbidden => Answer::Forbidden,
                Answer::Busy | Answer::Failed => continue,
            };
            copy.insert(slot.key.clone(), answer, slot.dir, slot.checked_ms, slot.weight);
        }
        Ok(copy)
    }

    /// The fresh answer for `key` at `now_ms`, with no system call and no allocation.
    pub fn get(&self, key: &[u8], now_ms: u64) -> Lookup<'_> {
        let Some(&index) = self.index.get(key) else { return Lookup::Unknown };
        let Some(slot) = &self.slots[index as usize] else { return Lookup::Unknown };
        let fresh = match slot.answer {
            Answer::Busy | Answer::Failed => slot.checked_ms == now_ms,
            _ => self
                .limits
                .revalidate_ms
                .is_none_or(|interval| now_ms.saturating_sub(slot.checked_ms) < interval),
        };
        if !fresh {
            return Lookup::Unknown;
        }
        slot.referenced.set(true);
        self.hits.set(self.hits.get() + 1);
        match &slot.answer {
            Answer::File(entry) => Lookup::File(entry),
            Answer::Directory => Lookup::Directory,
            Answer::Missing => Lookup::Missing,
            Answer::Forbidden => Lookup::Forbidden,
            Answer::Busy => Lookup::Busy,
            Answer::Failed => Lookup::Failed,
        }
    }

    /// Makes the answer for `key` fresh at `now_ms`: revalidates a cached file (no allocation
    /// when it did not change), or opens the path. Afterwards `get(key, now_ms)` answers.
    pub fn fill(&mut self, key: &[u8], now_ms: u64) {
        let existing = self.index.get(key).copied();
        if let Some(index) = existing {
            let unchanged = match &self.slots[index as usize] {
                Some(Slot { answer: Answer::File(entry), dir, .. }) => {
                    self.counters.revalidations += 1;
                    self.unchanged(key, entry, *dir, now_ms)
                }
                _ => false,
            };
            if unchanged {
                self.touch(index, now_ms);
                return;
            }
        } else {
            self.counters.misses += 1;
        }
        let (answer, dir) = self.open_answer(key, now_ms);
        if let Some(index) = existing {
            let had_file =
                matches!(self.slots[index as usize], Some(Slot { answer: Answer::File(_), .. }));
            if had_file && matches!(answer, Answer::Busy | Answer::Failed) {
                // Changed, but cannot be reopened now (out of descriptors): keep serving the
                // version we have for another interval rather than fail requests for it.
                self.touch(index, now_ms);
                return;
            }
            self.remove(index);
        }
        let weight = key.len()
            + SLOT_OVERHEAD_BYTES
            + match &answer {
                Answer::File(entry) => entry.weight(),
                _ => 0,
            };
        self.insert(key.into(), answer, dir, now_ms, weight);
    }

    fn touch(&mut self, index: u32, now_ms: u64) {
        if let Some(slot) = &mut self.slots[index as usize] {
            slot.checked_ms = now_ms;
        }
    }

    /// Counters so far.
    pub fn counters(&self) -> CacheCounters {
        CacheCounters { hits: self.hits.get(), ..self.counters }
    }

    /// Answers held.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Walks the root breadth-first and fills the cache with its files until the first one
    /// that does not fit (for benchmarks and small sites). Returns the files cached.
    pub fn warm(&mut self, root: &Path, now_ms: u64) -> usize {
        let mut pending: std::collections::VecDeque<Vec<u8>> = [Vec::new()].into();
        let mut files = 0;
        while let Some(dir) = pending.pop_front() {
            let path =
                root.join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&dir));
            let Ok(entries) = std::fs::read_dir(&path) else { continue };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let mut key = dir.clone();
                if !key.is_empty() {
                    key.push(b'/');
                }
                key.extend_from_slice(name.as_encoded_bytes());
                match entry.file_type() {
                    Ok(t) if t.is_dir() => pending.push_back(key),
                    Ok(_) => {
                        if self.index.len() + 1 > self.limits.entries {
                            return files;
                        }
                        let before = self.counters.evictions;
                        self.fill(&key, now_ms);
                        if self.counters.evictions != before {
                            return files; // full: the rest is filled on demand
                        }
                        if matches!(self.get(&key, now_ms), Lookup::File(_)) {
                            files += 1;
                        }
                    }
                    Err(_) => {}
                }
            }
        }
        files
    }

    fn insert(
        &mut self,
        key: Box<[u8]>,
        answer: Answer,
        dir: Option<DirStamp>,
        checked_ms: u64,
        weight: usize,
    ) {
        while !self.index.is_empty()
            && (self.index.len() >= self.limits.entries || self.bytes + weight > self.limits.bytes)
        {
            self.evict_one();
        }
        let slot = Slot {
            key: key.clone(),
            answer,
            dir,
            checked_ms,
            weight,
            referenced: Cell::new(false),
        };
        let index = match self.free.pop() {
            Some(index) => {
                self.slots[index as usize] = Some(slot);
                index
            }
            None => {
                self.slots.push(Some(slot));
                (self.slots.len() - 1) as u32
            }
        };
        self.bytes += weight;
        self.index.insert(key, index);
    }

    /// CLOCK: the first slot from the hand whose reference bit is clear; bits passed over are
    /// cleared. Two sweeps always find one.
    fn evict_one(&mut self) {
        let len = self.slots.len();
        for _ in 0..2 * len {
            let at = self.hand % len;
            self.hand = (at + 1) % len;
            let Some(slot) = &self.slots[at] else { continue };
            if slot.referenced.replace(false) {
                continue;
            }
            self.remove(at as u32);
            self.counters.evictions += 1;
            return;
        }
    }

    fn remove(&mut self, index: u32) {
        if let Some(slot) = self.slots[index as usize].take() {
            self.index.remove(&slot.key);
            self.bytes -= slot.weight;
            self.free.push(index);
        }
    }

    /// Whether a cached file is still what `statx` sees now: the file (by path, so a
    /// replacement by rename is seen), its variants, and its directory (a sibling appearing).
    fn unchanged(&self, key: &[u8], entry: &Entry, dir: Option<DirStamp>, now_ms: u64) -> bool {
        let same = |suffix: &[u8], stamp: Option<Stamp>| -> bool {
            let now = c_path(key, suffix, &mut [0u8; PATH_BYTES_MAX]).and_then(|p| {
                statx_at(self.root.as_raw_fd(), p.as_ptr().cast()).ok().map(|s| Stamp::of_statx(&s))
            });
            now == stamp
        };
        if !same(b"", Some(entry.stamp)) {
            return false;
        }
        if !same(b".br", entry.br.as_ref().map(|e| e.stamp))
            || !same(b".gz", entry.gzip.as_ref().map(|e| e.stamp))
        {
            return false;
        }
        self.dir_stamp(parent_of(key), now_ms) == dir
    }

    /// The stamp of directory `dir`, taken at most once per revalidation interval and shared
    /// by all its entries. No allocation for a directory seen before.
    fn dir_stamp(&self, dir: &[u8], now_ms: u64) -> Option<DirStamp> {
        let mut stamps = self.dir_stamps.borrow_mut();
        let fresh = |checked: u64| {
            self.limits
                .revalidate_ms
                .is_none_or(|interval| now_ms.saturating_sub(checked) < interval)
        };
        if let Some((stamp, checked)) = stamps.get(dir) {
            if fresh(*checked) {
                return *stamp;
            }
        }
        let mut path = [0u8; PATH_BYTES_MAX];
        let stamp = c_path(dir, b"", &mut path)
            .and_then(|p| statx_at(self.root.as_raw_fd(), p.as_ptr().cast()).ok())
            .map(|s| DirStamp::of(&s));
        match stamps.get_mut(dir) {
            Some(known) => *known = (stamp, now_ms),
            None => {
                if stamps.len() >= self.limits.entries {
                    stamps.clear(); // bounded like the cache; refilled as directories are seen
                }
                stamps.insert(dir.into(), (stamp, now_ms));
            }
        }
        stamp
    }

    /// Opens `key` beneath the root and decides what it is.
    fn open_answer(&self, key: &[u8], now_ms: u64) -> (Answer, Option<DirStamp>) {
        let file = match self.open_beneath(key, b"") {
            Ok(file) => file,
            Err(e) => return (answer_for_error(&e), None),
        };
        let meta = match file.metadata() {
            Ok(meta) => meta,
            Err(e) => return (answer_for_error(&e), None),
        };
        if meta.is_dir() {
            return (Answer::Directory, None);
        }
        if !meta.is_file() {
            return (Answer::Missing, None); // FIFO, socket, device: never served
        }
        let dir = self.dir_stamp(parent_of(key), now_ms);
        let content_type = mime::content_type(&file_name(key));
        let (bytes, stamp) = match Entry::read_or_map(file) {
            Ok(opened) => opened,
            Err(e) => return (answer_for_error(&e), None),
        };
        let variant = |suffix: &[u8], encoding: &str| -> Result<Option<Arc<Entry>>, Answer> {
            // Most files have no sibling: a `statx` says so without allocating an open file
            // (which `openat2` does before it finds nothing). One that exists is then opened
            // beneath the root like any file.
            let mut buf = [0u8; PATH_BYTES_MAX];
            let probe = c_path(key, suffix, &mut buf)
                .map(|p| statx_at(self.root.as_raw_fd(), p.as_ptr().cast()));
            if let Some(Err(e)) = &probe {
                if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) {
                    return Ok(None);
                }
            }
            match self.open_beneath(key, suffix) {
                Ok(file) if file.metadata().is_ok_and(|m| m.is_file()) => {
                    let (bytes, stamp) =
                        Entry::read_or_map(file).map_err(|e| answer_for_error(&e))?;
                    Ok(Some(Arc::new(Entry::build(
                        bytes,
                        stamp,
                        content_type,
                        Some(encoding),
                        true,
                    ))))
                }
                Ok(_) => Ok(None),
                Err(e) => match answer_for_error(&e) {
                    Answer::Missing | Answer::Forbidden => Ok(None),
                    other => Err(other),
                },
            }
        };
        let (br, gzip) = match (variant(b".br", "br"), variant(b".gz", "gzip")) {
            (Ok(br), Ok(gzip)) => (br, gzip),
            (Err(answer), _) | (_, Err(answer)) => return (answer, None),
        };
        let has_variants = br.is_some() || gzip.is_some();
        let mut entry = Entry::build(bytes, stamp, content_type, None, has_variants);
        entry.br = br;
        entry.gzip = gzip;
        (Answer::File(Arc::new(entry)), dir)
    }

    /// `openat2(root, key + suffix, O_RDONLY | O_NONBLOCK, RESOLVE_BENEATH | NO_MAGICLINKS)`:
    /// the kernel refuses any path, `..` or symlink that leads outside the root (EXDEV), and
    /// a FIFO swapped in cannot block the open. RESOLVE_BENEATH also refuses absolute symlinks,
    /// even ones that point back inside the root; for those (EXDEV) the path is opened plainly
    /// and kept only if the file it reached lies under the root's canonical path, which is the
    /// policy the server has always had for symlinks.
    fn open_beneath(&self, key: &[u8], suffix: &[u8]) -> io::Result<File> {
        match self.openat2(key, suffix, libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS) {
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                let file = self.openat2(key, suffix, libc::RESOLVE_NO_MAGICLINKS)?;
                let real = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
                if real.starts_with(&self.root_path) {
                    Ok(file)
                } else {
                    Err(e)
                }
            }
            other => other,
        }
    }

    fn openat2(&self, key: &[u8], suffix: &[u8], resolve: u64) -> io::Result<File> {
        let mut buf = [0u8; PATH_BYTES_MAX];
        let path = c_path(key, suffix, &mut buf)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENAMETOOLONG))?;
        // SAFETY: open_how is a plain C struct; all-zero is valid (no flags, no resolve).
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC) as u64;
        how.resolve = resolve;
        for _ in 0..OPEN_RETRIES_MAX {
            // SAFETY: `path` is NUL-terminated in a live stack buffer and `how` a live local
            // of the size passed; the kernel copies both before returning.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    self.root.as_raw_fd(),
                    path.as_ptr(),
                    &how as *const libc::open_how,
                    std::mem::size_of::<libc::open_how>(),
                )
            };
            if fd >= 0 {
                // SAFETY: a fresh descriptor that nothing else owns.
                return Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }));
            }
            let e = io::Error::last_os_error();
            // EAGAIN: a concurrent rename kept the kernel from proving containment; retry.
            if e.raw_os_error() != Some(libc::EAGAIN) {
                return Err(e);
            }
        }
        Err(io::Error::from_raw_os_error(libc::EAGAIN))
    }
}

/// Retries of an `openat2` that a concurrent rename made inconclusive (EAGAIN).
const OPEN_RETRIES_MAX: u32 = 3;

/// What an error from opening or reading a path means for requests.
fn answer_for_error(e: &io::Error) -> Answer {
    match e.raw_os_error() {
        // Absent, a component that is not a directory, too long, a symlink loop, or an
        // escape from the root (EXDEV, from RESOLVE_BENEATH; ELOOP for magic links), or a
        // socket (ENXIO): nothing to serve.
        Some(
            libc::ENOENT
            | libc::ENOTDIR
            | libc::ENAMETOOLONG
            | libc::ELOOP
            | libc::EXDEV
            | libc::ENXIO
            | libc::ENODEV,
        ) => Answer::Missing,
        Some(libc::EACCES | libc::EPERM) => Answer::Forbidden,
        Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EAGAIN) => Answer::Busy,
        _ if e.kind() == io::ErrorKind::Other => Answer::Missing, // "not a regular file"
        _ => Answer::Failed,
    }
}

/// `key` + `suffix` + NUL in `buf` (`.` for the root), or `None` if too long.
fn c_path<'b>(key: &[u8], suffix: &[u8], buf: &'b mut [u8; PATH_BYTES_MAX]) -> Option<&'b [u8]> {
    let key = if key.is_empty() { &b"."[..] } else { key };
    let len = key.len() + suffix.len();
    if len + 1 > buf.len() || key.contains(&0) {
        return None;
    }
    buf[..key.len()].copy_from_slice(key);
    buf[key.len()..len].copy_from_slice(suffix);
    buf[len] = 0;
    Some(&buf[..=len])
}

/// The directory part of a key (`""` for the root).
fn parent_of(key: &[u8]) -> &[u8] {
    key.iter().rposition(|&b| b == b'/').map_or(&[][..], |slash| &key[..slash])
}

/// The last component of a key, for its Content-Type.
fn file_name(key: &[u8]) -> String {
    let name = key.iter().rposition(|&b| b == b'/').map_or(key, |slash| &key[slash + 1..]);
    String::from_utf8_lossy(name).into_owned()
}

/// `statx(dirfd, path)` following symlinks (in-root links are allowed; one pointing out is
/// caught when the changed path is re-opened beneath the root).
fn statx_at(dirfd: RawFd, path: *const libc::c_char) -> io::Result<libc::statx> {
    // SAFETY: statx is a plain C struct; all-zero is a valid value to be overwritten.
    let mut out: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and lives across the call; `out` is a live local.
    let rc = unsafe {
        libc::statx(dirfd, path, libc::AT_STATX_SYNC_AS_STAT, libc::STATX_BASIC_STATS, &mut out)
    };
    if rc == 0 {
        Ok(out)
    } else {
        Err(io::Error::last_os_error())
    }
}

impl DirStamp {
    fn of(s: &libc::statx) -> DirStamp {
        DirStamp {
            ino: s.stx_ino,
            mtime_nanos: nanos(s.stx_mtime),
            ctime_nanos: nanos(s.stx_ctime),
        }
    }
}

/// A statx timestamp in nanoseconds.
pub(super) fn nanos(t: libc::statx_timestamp) -> i128 {
    i128::from(t.tv_sec) * 1_000_000_000 + i128::from(t.tv_nsec)
}

/// `OpenOptions` for a directory handle.
trait DirectoryFlags {
    fn custom_flags_directory(&mut self) -> &mut Self;
}

impl DirectoryFlags for std::fs::OpenOptions {
    fn custom_flags_directory(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: CacheLimits =
        CacheLimits { entries: 100, bytes: 1 << 20, revalidate_ms: Some(500) };

    fn is_file(cache: &FileCache, key: &[u8], now: u64) -> Option<Arc<Entry>> {
        match cache.get(key, now) {
            Lookup::File(entry) => Some(Arc::clone(entry)),
            _ => None,
        }
    }

    #[test]
    fn files_are_found_on_first_request_with_their_variants() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.js"), b"console.log(1)").unwrap();
        std::fs::write(dir.path().join("a.js.gz"), b"GZ").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let mut cache = FileCache::open(dir.path(), LIMITS).unwrap();
        assert!(matches!(cache.get(b"a.js", 0), Lookup::Unknown), "nothing before the first fill");
        cache.fill(b"a.js", 0);
        let a = is_file(&cache, b"a.js", 0).expect("a.js");
        assert_eq!(a.gzip.as_ref().and_then(|g| g.body().owned()), Some(&b"GZ"[..]));
        assert!(a.br.is_none());
        assert!(String::from_utf8_lossy(&a.fields_200).contains("Vary: Accept-Encoding\r\n"));
        let gz = a.gzip.as_ref().unwrap();
        assert!(String::from_utf8_lossy(&gz.meta).contains("Content-Encoding: gzip\r\n"));
        assert!(String::from_utf8_lossy(&gz.type_line).contains("text/javascript"));
        cache.fill(b"sub", 0);
        assert!(matches!(cache.get(b"sub", 0), Lookup::Directory));
        cache.fill(b"nope.txt", 0);
        assert!(matches!(cache.get(b"nope.txt", 0), Lookup::Missing), "negative answers cached");
    }

    #[test]
    fn changes_show_after_the_revalidation_interval() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.txt");
        std::fs::write(&path, b"one").unwrap();
        let mut cache = FileCache::open(dir.path(), LIMITS).unwrap();
        cache.fill(b"f.txt", 0);
        cache.fill(b"new.txt", 0);
        std::fs::write(&path, b"two!").unwrap();
        std::fs::write(dir.path().join("new.txt"), b"new").unwrap();
        // Within the interval: the cached answers, with no system call.
        assert_eq!(is_file(&cache, b"f.txt", 499).unwrap().len, 3);
        assert!(matches!(cache.get(b"new.txt", 499), Lookup::Missing));
        // Then due: the engine fills again, and the new versions are served.
        assert!(matches!(cache.get(b"f.txt", 500), Lookup::Unknown));
        cache.fill(b"f.txt", 500);
        cache.fill(b"new.txt", 500);
        assert_eq!(is_file(&cache, b"f.txt", 500).unwrap().body().owned(), Some(&b"two!"[..]));
        assert!(is_file(&cache, b"new.txt", 500).is_some(), "negative answers expire too");
        // Unchanged: revalidation keeps the same entry.
        let before = is_file(&cache, b"f.txt", 500).unwrap();
        cache.fill(b"f.txt", 1000);
        assert!(Arc::ptr_eq(&before, &is_file(&cache, b"f.txt", 1000).unwrap()));
        assert_eq!(cache.counters().revalidations, 2);
        // A sibling appearing is seen through the directory.
        std::fs::write(dir.path().join("f.txt.br"), b"BR").unwrap();
        cache.fill(b"f.txt", 1500);
        assert!(is_file(&cache, b"f.txt", 1500).unwrap().br.is_some());
        std::fs::remove_file(&path).unwrap();
        cache.fill(b"f.txt", 2000);
        assert!(matches!(cache.get(b"f.txt", 2000), Lookup::Missing));
    }

    #[test]
    fn the_cache_stays_within_its_bounds_and_keeps_hot_entries() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..50 {
            std::fs::write(dir.path().join(format!("{i}.txt")), vec![b'x'; 1000]).unwrap();
        }
        let limits = CacheLimits { entries: 10, bytes: 1 << 20, revalidate_ms: None };
        let mut cache = FileCache::open(dir.path(), limits).unwrap();
        cache.fill(b"0.txt", 0);
        for i in 1..50 {
            assert!(is_file(&cache, b"0.txt", 0).is_some(), "the hot entry survives");
            cache.fill(format!("{i}.txt").as_bytes(), 0);
            assert!(cache.len() <= 10);
        }
        assert_eq!(cache.counters().evictions, 40);
        let limits = CacheLimits { entries: 1000, bytes: 5 * 1500, revalidate_ms: None };
        let mut cache = FileCache::open(dir.path(), limits).unwrap();
        for i in 0..50 {
            cache.fill(format!("{i}.txt").as_bytes(), 0);
            assert!(cache.bytes <= 5 * 1500, "{} bytes", cache.bytes);
        }
        assert!(cache.len() >= 3, "{} entries", cache.len());
    }

    #[test]
    fn nothing_outside_the_root_and_nothing_that_blocks() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("abs")).unwrap();
        std::os::unix::fs::symlink("../", dir.path().join("up")).unwrap();
        std::fs::write(dir.path().join("in.txt"), b"in").unwrap();
        std::os::unix::fs::symlink("in.txt", dir.path().join("rel")).unwrap();
        let fifo = std::ffi::CString::new(dir.path().join("pipe").as_os_str().as_encoded_bytes());
        // SAFETY: mkfifo reads a NUL-terminated path that lives across the call.
        assert_eq!(unsafe { libc::mkfifo(fifo.unwrap().as_ptr(), 0o644) }, 0);
        let mut cache = FileCache::open(dir.path(), LIMITS).unwrap();
        for key in [&b"abs"[..], b"up/secret", b"pipe", b"no/such/dir"] {
            // A blocking open of the FIFO would wait for a writer forever: the test would hang.
            cache.fill(key, 0);
            assert!(
                matches!(cache.get(key, 0), Lookup::Missing),
                "{}",
                String::from_utf8_lossy(key)
            );
        }
        cache.fill(b"rel", 0);
        assert!(is_file(&cache, b"rel", 0).is_some(), "a symlink inside the root is followed");
        let long = vec![b'a'; 5000];
        cache.fill(&long, 0);
        assert!(matches!(cache.get(&long, 0), Lookup::Missing));
    }
}
