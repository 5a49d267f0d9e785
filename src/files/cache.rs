//! The on-demand file cache: a map from a resolved request path to what serving it needs (the
//! entry with its open file, body and precomputed header fields, or the fact that the path is a
//! directory, is missing or is forbidden), filled when a path is first requested and bounded in
//! entries and bytes.
//!
//! Two halves, so the request path stays sans-I/O:
//! - `get` (no I/O, no allocation): the answer if it is fresh, else `Lookup::Unknown`;
//! - `begin` (called by the engine when `serve` reports a miss): a `Fill` (see `fill`) that
//!   opens the path with `openat2(RESOLVE_BENEATH)` under the root's descriptor, through the
//!   engine's ring or with plain system calls (`FileCache::fill`), and `finish` stores what it
//!   found.
//!
//! Freshness: an answer is used without any system call for `revalidate` after it was checked
//! (500 ms by default). Then the next request for it waits for a revalidation (the path opened
//! again and compared by inode, size, mtime and ctime, with its directory's stamp for siblings
//! that appeared). So a file created, rewritten, replaced, truncated or deleted shows up within
//! that time, and a hot entry costs at most one revalidation per interval.
//!
//! Eviction: CLOCK (second chance). Every hit sets the slot's reference bit; inserting into a
//! full cache sweeps the hand, clearing bits, and evicts the first slot whose bit was clear.
//! A hit touches one `Cell<bool>`, so `get` takes `&self`. Evicting drops the cache's `Arc`;
//! batches still sending from the entry hold their own.

use std::cell::Cell;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::fill::{self, Fill, Old, Outcome, Request, PARTS};
use super::watch::{Event, Watcher};
use super::Entry;
use crate::site::Site;
use crate::Error;

/// Longest path `openat2` accepts (PATH_MAX, including the NUL); longer keys are missing.
pub(super) const PATH_BYTES_MAX: usize = libc::PATH_MAX as usize;

/// Finished fills a cache keeps for reuse: enough for the revalidations of one loop turn.
const FILLS_SPARE_MAX: usize = 64;

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
    /// Most files held open (and mapped): those larger than 16 KiB, with their variants.
    pub open_files: usize,
    /// Milliseconds an answer is used before it is checked again; `None` never re-checks (for
    /// trees that do not change).
    pub revalidate_ms: Option<u64>,
    /// Watch directories with inotify (`watch`): an answer under watched directories is used
    /// until an event says it changed, with no interval re-check.
    pub watch: bool,
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

/// What `begin` found.
pub enum Begin {
    /// The cached answer is fresh: serve it.
    Fresh,
    /// The cached answer is due: drive this fill to re-check it.
    Revalidate(Box<Fill>),
    /// Nothing usable cached: requests for the path wait for this fill.
    Miss(Box<Fill>),
}

/// A cached answer.
pub(super) enum Answer {
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
pub(super) struct DirStamp {
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
    /// Changes are reported by inotify: no interval re-check.
    watched: bool,
    /// An event said it may have changed: re-check before the next use.
    stale: bool,
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
    /// Files the cached entries keep open (bounded by `limits.open_files`).
    open_files: usize,
    limits: CacheLimits,
    hits: Cell<u64>,
    counters: CacheCounters,
    /// The site's header rules, precomputed into each file's entry when it is filled.
    site: Arc<Site>,
    /// Each directory's stamp and when it was taken: entries of one directory share one
    /// `statx` of it per interval (it tells whether a `.br`/`.gz` sibling appeared).
    dir_stamps: HashMap<Box<[u8]>, DirSeen>,
    /// Finished fills kept for reuse, so a revalidation allocates nothing. Boxed because a
    /// fill's address must not change while the kernel holds pointers into it, and it moves
    /// between this list, the engine's jobs and the caller of `begin`.
    #[allow(clippy::vec_box)]
    spare: Vec<Box<Fill>>,
    /// The inotify instance, when watching.
    watcher: Option<Watcher>,
    /// Watches to forget after a batch of events (wd, and whether to remove it), and
    /// directories whose watches below them are to be removed.
    forget: Vec<(i32, bool)>,
    forget_under: Vec<Box<[u8]>>,
    /// Batches of events applied so far: a fill that saw this change while it ran is not
    /// trusted as watched.
    events_applied: u64,
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
        // Watching replaces the interval re-check; with no re-check at all there is nothing
        // to watch for.
        let watcher = if limits.watch && limits.revalidate_ms.is_some() {
            Watcher::new().and_then(|mut w| w.watch(b"", root.as_raw_fd()).then_some(w))
        } else {
            None
        };
        FileCache {
            root,
            root_path,
            index: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            hand: 0,
            bytes: 0,
            open_files: 0,
            limits: CacheLimits { entries: limits.entries.max(1), ..limits },
            hits: Cell::new(0),
            site: Arc::default(),
            counters: CacheCounters::default(),
            dir_stamps: HashMap::new(),
            spare: Vec::new(),
            watcher,
            forget: Vec::new(),
            forget_under: Vec::new(),
            events_applied: 0,
        }
    }

    /// A second cache over the same root holding the same answers (shared entries), for
    /// another worker.
    pub fn try_clone(&self) -> io::Result<FileCache> {
        let mut copy =
            FileCache::with_root(self.root.try_clone()?, self.root_path.clone(), self.limits);
        copy.site = Arc::clone(&self.site);
        for slot in self.slots.iter().flatten() {
            let answer = match &slot.answer {
                Answer::File(entry) => Answer::File(Arc::clone(entry)),
                Answer::Directory => Answer::Directory,
                Answer::Missing => Answer::Missing,
                Answer::Forbidden => Answer::Forbidden,
                Answer::Busy | Answer::Failed => continue,
            };
            // Not watched by the copy's own instance yet: re-checked by interval until then.
            copy.insert(slot.key.clone(), answer, slot.dir, slot.checked_ms, slot.weight, false);
        }
        Ok(copy)
    }

    /// Sets the site's header rules (`--cache-control`, `--header`) for files filled from now.
    pub fn set_site(&mut self, site: Arc<Site>) {
        self.site = site;
    }

    /// The fresh answer for `key` at `now_ms`, with no system call and no allocation.
    pub fn get(&self, key: &[u8], now_ms: u64) -> Lookup<'_> {
        let Some(&index) = self.index.get(key) else { return Lookup::Unknown };
        let Some(slot) = &self.slots[index as usize] else { return Lookup::Unknown };
        if !self.is_fresh(slot, now_ms) {
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

    /// Starts making the answer for `key` fresh at `now_ms`. `Fresh`: it already is. Else a
    /// fill that re-checks a cached answer that is due (`Revalidate`) or opens a path not
    /// cached, or whose last fill failed (`Miss`); requests for the path wait for it, so none
    /// is answered from a version older than the interval. Drive the fill with `requests` and
    /// `complete`, then `finish` it.
    pub fn begin(&mut self, key: &[u8], now_ms: u64) -> Begin {
        let existing = self.index.get(key).copied();
        let old = match existing.and_then(|index| self.slots[index as usize].as_ref()) {
            Some(slot) if self.is_fresh(slot, now_ms) => return Begin::Fresh,
            Some(Slot { answer: Answer::File(entry), dir, .. }) => {
                Old::File(Arc::clone(entry), *dir)
            }
            Some(Slot { answer: Answer::Busy | Answer::Failed, .. }) | None => Old::Nothing,
            Some(_) => Old::Other,
        };
        let miss = matches!(old, Old::Nothing);
        if miss {
            self.counters.misses += 1;
        } else {
            self.counters.revalidations += 1;
        }
        let dir = parent_of(key);
        let watching = self.watcher.as_ref().map(|w| w.is_watched(dir));
        let dir_known = match watching {
            // Its directory must be opened once, to add the watch.
            Some(false) => None,
            _ => self.dir_stamps.get(dir).and_then(|&(stamp, checked)| {
                self.within_interval(checked, now_ms).then_some(stamp)
            }),
        };
        let mut fill = self.spare.pop().unwrap_or_else(|| Box::new(Fill::new()));
        fill.start(key, old, dir_known, watching.is_some());
        fill.extra.clear();
        self.site.file_fields(key, &mut fill.extra);
        fill.listing_hidden = self.site.autoindex_hidden;
        fill.dir_was_watched = watching == Some(true);
        fill.events_at_begin = self.events_applied;
        if miss {
            Begin::Miss(fill)
        } else {
            Begin::Revalidate(fill)
        }
    }

    /// Passes each system call `fill` needs now to `submit`.
    pub fn requests(&self, fill: &mut Fill, submit: impl FnMut(Request)) {
        fill.requests(self.root.as_raw_fd(), submit);
    }

    /// The result of a call `requests` asked for.
    pub fn complete(&self, fill: &mut Fill, part: usize, result: i32) {
        fill.complete(part, result, &self.root_path);
    }

    /// Stores what a done fill found (`Fill::is_done`), and keeps the fill for reuse.
    pub fn finish(&mut self, mut fill: Box<Fill>, now_ms: u64) {
        debug_assert!(fill.is_done());
        if fill.dir_opened {
            let dir = parent_of(&fill.key);
            match self.dir_stamps.get_mut(dir) {
                Some(known) => *known = (fill.dir_now, now_ms),
                None => {
                    if self.dir_stamps.len() >= self.limits.entries {
                        self.dir_stamps.clear(); // bounded like the cache; refilled as needed
                    }
                    self.dir_stamps.insert(dir.into(), (fill.dir_now, now_ms));
                }
            }
        }
        let watched = self.watched_after(&mut fill);
        let existing = self.index.get(fill.key.as_slice()).copied();
        // A fill that could not conclude (it never should) answers 500 rather than leave the
        // request without an answer.
        let outcome = fill.outcome.take().unwrap_or(Outcome::Answer(Answer::Failed, None));
        match (outcome, existing) {
            (Outcome::Unchanged, Some(index)) => self.touch(index, now_ms, watched),
            (Outcome::Unchanged, None) => {} // evicted meanwhile
            (Outcome::Answer(answer, dir), existing) => {
                if let Some(index) = existing {
                    let had_file = matches!(
                        self.slots[index as usize],
                        Some(Slot { answer: Answer::File(_), .. })
                    );
                    if had_file && matches!(answer, Answer::Busy | Answer::Failed) {
                        // Changed, but cannot be reopened now (out of descriptors): keep
                        // serving the version we have for another interval rather than fail
                        // requests for it.
                        self.touch(index, now_ms, false);
                        return self.recycle(fill);
                    }
                    self.remove(index);
                }
                let weight = fill.key.len()
                    + SLOT_OVERHEAD_BYTES
                    + match &answer {
                        Answer::File(entry) => entry.weight(),
                        _ => 0,
                    };
                let watched = watched && !matches!(answer, Answer::Busy | Answer::Failed);
                self.insert(fill.key.as_slice().into(), answer, dir, now_ms, weight, watched);
            }
        }
        self.recycle(fill);
    }

    /// Whether inotify reports the changes of what `fill` found: its directory (and their
    /// ancestors) watched, adding the watch now with the directory it opened, and no symbolic
    /// link on the way.
    fn watched_after(&mut self, fill: &mut Fill) -> bool {
        let Some(watcher) = &mut self.watcher else { return false };
        let dir_file = fill.dir_file.take();
        if fill.symlinked() {
            return false;
        }
        let dir = parent_of(&fill.key);
        let quiet = fill.events_at_begin == self.events_applied;
        if !watcher.is_watched(dir) {
            // Not while events arrived: the directory this fill opened may have been renamed
            // away meanwhile, and would be watched under a path it no longer has.
            if let (Some(file), true) = (dir_file, quiet) {
                watcher.watch(dir, file.as_raw_fd());
            }
            // Watched from now on, but a change between this fill's opens and the new watch
            // was reported to no one: this answer keeps the interval re-check until its next
            // fill.
            return false;
        }
        // Watched since before the fill began, and no event arrived while it ran (one might
        // concern what it read; then the interval re-check covers it).
        fill.dir_was_watched && quiet
    }

    /// The descriptor of this cache's inotify instance, if it watches: the engine reads events
    /// from it and passes them to `apply_events`.
    pub fn watch_fd(&self) -> Option<RawFd> {
        self.watcher.as_ref().map(|w| w.fd())
    }

    /// Marks stale every answer the inotify events in `buf` may concern: the entry named, the
    /// file a `.br`/`.gz` sibling belongs to, everything under a directory that moved or went
    /// away, and everything after a queue overflow.
    pub fn apply_events(&mut self, buf: &[u8]) {
        let Some(watcher) = self.watcher.take() else { return };
        self.events_applied += 1;
        let mut key = [0u8; PATH_BYTES_MAX];
        watcher.events(buf, |wd, Event { dir, mask, name }| {
            if mask & libc::IN_Q_OVERFLOW != 0 {
                // Events were dropped, watches' removals among them: trust nothing, and let
                // fills add every watch again.
                for slot in self.slots.iter_mut().flatten() {
                    slot.stale = true;
                }
                self.forget_under.push(Box::default());
                return;
            }
            if mask & libc::IN_IGNORED != 0 {
                self.forget.push((wd, false));
            }
            let Some(dir) = dir else { return };
            if mask & (libc::IN_DELETE_SELF | libc::IN_MOVE_SELF) != 0 {
                // The watches below it now watch directories under other paths, or none.
                self.stale_under(dir);
                self.forget.push((wd, mask & libc::IN_MOVE_SELF != 0));
                self.forget_under.push(dir.into());
                return;
            }
            if name.is_empty() {
                return;
            }
            let joined = if dir.is_empty() { 0 } else { dir.len() + 1 };
            if joined + name.len() > key.len() {
                return;
            }
            key[..dir.len()].copy_from_slice(dir);
            if !dir.is_empty() {
                key[dir.len()] = b'/';
            }
            key[joined..joined + name.len()].copy_from_slice(name);
            let path = &key[..joined + name.len()];
            self.stale_key(path);
            // The directory's listing, if cached, shows this name.
            let mut listing = [0u8; PATH_BYTES_MAX + 1];
            let listing_key = listing_key_of(dir, &mut listing);
            self.stale_key(listing_key);
            for suffix in [&b".br"[..], b".gz"] {
                if let Some(base) = path.strip_suffix(suffix) {
                    self.stale_key(base);
                }
            }
            if mask & libc::IN_ISDIR != 0 {
                self.stale_under(path);
                if mask & (libc::IN_MOVED_FROM | libc::IN_DELETE) != 0 {
                    self.forget_under.push(path.into());
                }
            }
        });
        let mut watcher = watcher;
        for (wd, remove) in self.forget.drain(..) {
            watcher.forget(wd, remove);
        }
        for dir in self.forget_under.drain(..) {
            watcher.forget_under(&dir);
        }
        self.watcher = Some(watcher);
    }

    /// Reads one buffer of the events pending on `watch_fd` with a plain system call and
    /// applies them (the blocking engine, once `poll` said the descriptor is readable);
    /// `false` when none were pending. One buffer per call, so the caller can let go of the
    /// cache's lock between reads.
    pub fn read_events(&mut self, buf: &mut [u8]) -> bool {
        let read = match &self.watcher {
            Some(watcher) => watcher.read_into(buf),
            None => return false,
        };
        match read {
            Ok(n) if n > 0 => {
                self.apply_events(&buf[..n]);
                true
            }
            _ => false, // EAGAIN: drained
        }
    }

    /// Stops watching (events can no longer be read): every answer is re-checked by interval
    /// from now on.
    pub fn unwatch(&mut self) {
        self.watcher = None;
        for slot in self.slots.iter_mut().flatten() {
            slot.watched = false;
        }
    }

    fn stale_key(&mut self, key: &[u8]) {
        if let Some(&index) = self.index.get(key) {
            if let Some(slot) = &mut self.slots[index as usize] {
                slot.stale = true;
            }
        }
    }

    /// Marks stale every answer at or below directory `dir` (rare: a directory moved or went
    /// away), and forgets its stamp.
    fn stale_under(&mut self, dir: &[u8]) {
        for slot in self.slots.iter_mut().flatten() {
            let below = dir.is_empty()
                || slot
                    .key
                    .strip_prefix(dir)
                    .is_some_and(|rest| rest.is_empty() || rest[0] == b'/');
            if below {
                slot.stale = true;
            }
        }
    }

    fn recycle(&mut self, mut fill: Box<Fill>) {
        fill.old = Old::Nothing; // lets an evicted entry go
        if self.spare.len() < FILLS_SPARE_MAX {
            self.spare.push(fill);
        }
    }

    /// Makes the answer for `key` fresh at `now_ms` with plain system calls (the blocking
    /// engine, warm-up, tests). Afterwards `get(key, now_ms)` answers.
    pub fn fill(&mut self, key: &[u8], now_ms: u64) {
        let mut fill = match self.begin(key, now_ms) {
            Begin::Fresh => return,
            Begin::Revalidate(fill) | Begin::Miss(fill) => fill,
        };
        while !fill.is_done() {
            let mut asked = [None; PARTS];
            let mut count = 0;
            self.requests(&mut fill, |request| {
                asked[count] = Some(request);
                count += 1;
            });
            if count == 0 {
                break; // cannot happen: an unfinished fill always asks; `finish` answers 500
            }
            for request in asked.into_iter().flatten() {
                let result = fill::perform(request, &self.root_path);
                self.complete(&mut fill, request.part(), result);
            }
        }
        self.finish(fill, now_ms);
    }

    fn is_fresh(&self, slot: &Slot, now_ms: u64) -> bool {
        match slot.answer {
            _ if slot.stale => false,
            Answer::Busy | Answer::Failed => slot.checked_ms == now_ms,
            _ => slot.watched || self.within_interval(slot.checked_ms, now_ms),
        }
    }

    fn within_interval(&self, checked_ms: u64, now_ms: u64) -> bool {
        self.limits
            .revalidate_ms
            .is_none_or(|interval| now_ms.saturating_sub(checked_ms) < interval)
    }

    fn touch(&mut self, index: u32, now_ms: u64, watched: bool) {
        if let Some(slot) = &mut self.slots[index as usize] {
            slot.checked_ms = now_ms;
            slot.stale = false;
            slot.watched = watched;
        }
    }

    /// Counters so far.
    pub fn counters(&self) -> CacheCounters {
        CacheCounters { hits: self.hits.get(), ..self.counters }
    }

    /// Bytes held (bodies in memory, header fields), as bounded by `--cache-mib`.
    pub fn bytes(&self) -> usize {
        self.bytes
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
        watched: bool,
    ) {
        while !self.index.is_empty()
            && (self.index.len() >= self.limits.entries || self.bytes + weight > self.limits.bytes)
        {
            self.evict_one(false);
        }
        let files = match &answer {
            Answer::File(entry) => entry.open_files(),
            _ => 0,
        };
        while files > 0 && self.open_files > 0 && self.open_files + files > self.limits.open_files {
            self.evict_one(true);
        }
        self.open_files += files;
        let slot = Slot {
            key: key.clone(),
            answer,
            dir,
            checked_ms,
            weight,
            referenced: Cell::new(false),
            watched,
            stale: false,
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

    /// CLOCK: the first slot from the hand whose reference bit is clear (among slots holding
    /// open files, if `open_only`); bits passed over are cleared. Two sweeps always find one.
    fn evict_one(&mut self, open_only: bool) {
        let len = self.slots.len();
        for _ in 0..2 * len {
            let at = self.hand % len;
            self.hand = (at + 1) % len;
            let Some(slot) = &self.slots[at] else { continue };
            if open_only && !matches!(&slot.answer, Answer::File(e) if e.open_files() > 0) {
                continue;
            }
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
            if let Answer::File(entry) = &slot.answer {
                self.open_files -= entry.open_files();
            }
            self.free.push(index);
        }
    }
}

/// What an error from opening or reading a path means for requests.
pub(super) fn answer_for_error(e: &io::Error) -> Answer {
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
        Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EAGAIN) => {
            crate::observe::errlog::report(
                crate::observe::errlog::Kind::Descriptors,
                format_args!("opening a file failed: {e}; answering 503 until it succeeds"),
            );
            Answer::Busy
        }
        _ if e.kind() == io::ErrorKind::Other => Answer::Missing, // "not a regular file"
        _ => Answer::Failed,
    }
}

/// The cache key of directory `dir`'s listing: its path and a `/` (`/` for the root).
pub fn listing_key_of<'b>(dir: &[u8], buf: &'b mut [u8]) -> &'b [u8] {
    let len = dir.len().min(buf.len() - 1);
    buf[..len].copy_from_slice(&dir[..len]);
    buf[len] = b'/';
    &buf[..=len]
}

/// The directory part of a key (`""` for the root).
pub(super) fn parent_of(key: &[u8]) -> &[u8] {
    key.iter().rposition(|&b| b == b'/').map_or(&[][..], |slash| &key[..slash])
}

impl DirStamp {
    pub(super) fn of_metadata(meta: &std::fs::Metadata) -> DirStamp {
        use std::os::unix::fs::MetadataExt;
        DirStamp {
            ino: meta.ino(),
            mtime_nanos: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_nanos: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        }
    }
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

    const LIMITS: CacheLimits = CacheLimits {
        entries: 100,
        bytes: 1 << 20,
        revalidate_ms: Some(500),
        watch: false,
        open_files: 1000,
    };

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
        assert_eq!(cache.counters().revalidations, 3, "f.txt twice, new.txt once");
        // A sibling appearing is seen through the directory.
        std::fs::write(dir.path().join("f.txt.br"), b"BR").unwrap();
        cache.fill(b"f.txt", 1500);
        assert!(is_file(&cache, b"f.txt", 1500).unwrap().br.is_some());
        std::fs::remove_file(&path).unwrap();
        cache.fill(b"f.txt", 2000);
        assert!(matches!(cache.get(b"f.txt", 2000), Lookup::Missing));
    }

    #[test]
    fn watched_answers_change_on_events_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/f.txt"), b"one").unwrap();
        std::fs::write(dir.path().join("top.txt"), b"top").unwrap();
        std::os::unix::fs::symlink("a/b", dir.path().join("link")).unwrap();
        // An interval no test reaches: only events make anything stale.
        let limits = CacheLimits { revalidate_ms: Some(1 << 40), watch: true, ..LIMITS };
        let mut cache = FileCache::open(dir.path(), limits).unwrap();
        assert!(cache.watch_fd().is_some(), "inotify is available");
        let mut events = vec![0u8; super::super::EVENTS_BUFFER_BYTES];
        let settle = |cache: &mut FileCache, events: &mut Vec<u8>| {
            std::thread::sleep(std::time::Duration::from_millis(20));
            while cache.read_events(events) {}
        };
        let slot = |cache: &FileCache, key: &[u8]| {
            cache.slots[cache.index[key] as usize].as_ref().map(|s| s.watched)
        };
        for key in [&b"a/b/f.txt"[..], b"a/b/f.txt.br", b"top.txt", b"link/f.txt"] {
            cache.fill(key, 0);
        }
        // Its directory's watch was added by this fill: a change before that was reported to
        // no one, so the answer keeps the interval re-check until its next fill.
        assert_eq!(slot(&cache, b"a/b/f.txt"), Some(false));
        settle(&mut cache, &mut events);
        assert!(is_file(&cache, b"a/b/f.txt", 1).is_some(), "no event: still fresh");
        // A rewrite in place, seen through the file's directory.
        std::fs::write(dir.path().join("a/b/f.txt"), b"two!").unwrap();
        settle(&mut cache, &mut events);
        assert!(matches!(cache.get(b"a/b/f.txt", 2), Lookup::Unknown), "stale after the event");
        cache.fill(b"a/b/f.txt", 2);
        assert_eq!(is_file(&cache, b"a/b/f.txt", 2).unwrap().body().owned(), Some(&b"two!"[..]));
        assert_eq!(slot(&cache, b"a/b/f.txt"), Some(true), "watched from its second fill");
        // A sibling appearing: the file is re-checked and gains its variant; the negative
        // answer for the sibling itself goes stale too.
        std::fs::write(dir.path().join("a/b/f.txt.br"), b"BR").unwrap();
        settle(&mut cache, &mut events);
        assert!(matches!(cache.get(b"a/b/f.txt.br", 3), Lookup::Unknown));
        cache.fill(b"a/b/f.txt", 3);
        assert!(is_file(&cache, b"a/b/f.txt", 3).unwrap().br.is_some());
        // An ancestor renamed: everything below it goes stale.
        std::fs::rename(dir.path().join("a"), dir.path().join("a2")).unwrap();
        settle(&mut cache, &mut events);
        cache.fill(b"a/b/f.txt", 4);
        assert!(matches!(cache.get(b"a/b/f.txt", 4), Lookup::Missing));
        assert!(is_file(&cache, b"top.txt", 4).is_some(), "others untouched");
        // Through a symbolic link: not watched, so re-checked by interval only.
        assert_eq!(slot(&cache, b"link/f.txt"), Some(false));
        assert_eq!(slot(&cache, b"top.txt"), Some(true));
    }

    #[test]
    fn the_cache_stays_within_its_bounds_and_keeps_hot_entries() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..50 {
            std::fs::write(dir.path().join(format!("{i}.txt")), vec![b'x'; 1000]).unwrap();
        }
        let limits = CacheLimits {
            entries: 10,
            bytes: 1 << 20,
            revalidate_ms: None,
            watch: false,
            open_files: 10,
        };
        let mut cache = FileCache::open(dir.path(), limits).unwrap();
        cache.fill(b"0.txt", 0);
        for i in 1..50 {
            assert!(is_file(&cache, b"0.txt", 0).is_some(), "the hot entry survives");
            cache.fill(format!("{i}.txt").as_bytes(), 0);
            assert!(cache.len() <= 10);
        }
        assert_eq!(cache.counters().evictions, 40);
        let limits = CacheLimits {
            entries: 1000,
            bytes: 5 * 1500,
            revalidate_ms: None,
            watch: false,
            open_files: 1000,
        };
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
