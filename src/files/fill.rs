//! Filling one cache answer: opening a path beneath the root together with its `.br`/`.gz`
//! siblings and (once per interval) its directory, then reading small bodies.
//!
//! A `Fill` is a state machine that asks for system calls instead of making them
//! (`FileCache::requests`), and is told their results (`FileCache::complete`). The io_uring
//! engine submits them to its ring, so a miss never blocks its worker: an `openat2` runs inline
//! when the path's dentries are cached and goes to io-wq when they are not, and a read of cached
//! pages completes inline. The blocking engine performs them directly (`FileCache::fill`). Both
//! engines run the same decisions. Only operations on a descriptor already open are made in
//! place (fstat, mmap, fcntl, close): with the inode in memory they never wait for a disk.
//!
//! A revalidation is a fill too: the path is opened again and its stamp compared with the
//! cached entry's. When the file and its directory did not change, the old entry stays and
//! nothing is allocated (fills are pooled by the cache).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use memmap2::MmapOptions;

use super::cache::{answer_for_error, parent_of, Answer, DirStamp, PATH_BYTES_MAX};
use super::{Bytes, Entry, Stamp, COPIED_FILE_BYTES_MAX};

/// Parts of a fill, each one path: the file, its two precompressed siblings, its directory.
pub(super) const FILE: usize = 0;
const BR: usize = 1;
const GZ: usize = 2;
const DIR: usize = 3;
/// Number of parts (and the most operations a fill has in flight at once).
pub const PARTS: usize = 4;

/// Tries of an `openat2` that a concurrent rename made inconclusive (EAGAIN), and of a read
/// of a file that changed while it was read.
const TRIES_MAX: u8 = 3;

/// A system call a fill needs. Every pointer points into the fill, which the cache keeps boxed:
/// it stays valid until the fill is finished or dropped, so until the call completes as long
/// as the driver finishes (or drops) a fill only after its calls completed.
#[derive(Debug, Clone, Copy)]
pub enum Request {
    /// `openat2(dirfd, path, how, size_of(open_how))`; the result is a descriptor or -errno.
    Open { part: usize, dirfd: RawFd, path: *const libc::c_char, how: *const libc::open_how },
    /// `pread(fd, buf, len, 0)`; the result is the byte count or -errno.
    Read { part: usize, fd: RawFd, buf: *mut u8, len: u32 },
    /// List directory `fd` (`listing::list`) into `html` and `json`; the result is 0 or
    /// -errno. No io_uring operation reads a directory: the engine runs it where blocking is
    /// harmless.
    List(ListRequest),
}

/// A directory listing a fill needs (`Request::List`). Its pointers are into the fill, like
/// every request's.
#[derive(Debug, Clone, Copy)]
pub struct ListRequest {
    pub part: usize,
    pub fd: RawFd,
    /// The directory's path from the root (the fill's key without its final `/`).
    pub dir: *const u8,
    pub dir_len: usize,
    pub hidden: bool,
    pub html: *mut Vec<u8>,
    pub json: *mut Vec<u8>,
}

impl ListRequest {
    /// Performs the listing. Call only where blocking is allowed.
    ///
    /// # Safety
    /// The fill that asked for it must be alive and not touched until the result is passed to
    /// `complete` (as for a kernel operation on its buffers).
    pub unsafe fn perform(&self, root_path: &std::path::Path) -> i32 {
        // SAFETY: per this function's contract, the key bytes and the two vectors live in the
        // fill, which nothing else reads or writes meanwhile.
        let (dir, html, json) = unsafe {
            (std::slice::from_raw_parts(self.dir, self.dir_len), &mut *self.html, &mut *self.json)
        };
        super::listing::list(self.fd, dir, self.hidden, root_path, html, json)
    }
}

impl Request {
    /// The part the result belongs to (pass it back to `complete`).
    pub fn part(&self) -> usize {
        match *self {
            Request::Open { part, .. } | Request::Read { part, .. } => part,
            Request::List(list) => list.part,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing to do (not needed, or absent).
    Idle,
    /// An open to request.
    ToOpen,
    /// A read to request (`file` is open, `buf` has room for `stamp.len` bytes).
    ToRead,
    /// An open or read requested and not completed.
    Opening,
    Reading,
    /// `file` is open.
    Opened,
    /// The open or read failed with this errno.
    Failed(i32),
    /// `bytes` hold the body (for the directory part: `dir` holds its stamp).
    Ready,
    /// A directory to list (the file part of a listing), and its listing in flight.
    ToList,
    Listing,
}

struct Part {
    /// The NUL-terminated path (capacity kept between fills).
    path: Vec<u8>,
    how: libc::open_how,
    state: State,
    tries: u8,
    /// Opened without RESOLVE_BENEATH (an absolute symlink): containment checked after.
    fallback: bool,
    /// Reached through a symbolic link (inotify on its directory would not see its changes).
    symlinked: bool,
    file: Option<File>,
    stamp: Option<Stamp>,
    /// Read target of a small body.
    buf: Vec<u8>,
    bytes: Option<Bytes>,
}

impl Part {
    fn new() -> Part {
        Part {
            path: Vec::new(),
            // SAFETY: open_how is a plain C struct; all-zero is valid (no flags, no resolve).
            how: unsafe { std::mem::zeroed() },
            state: State::Idle,
            tries: 0,
            fallback: false,
            symlinked: false,
            file: None,
            stamp: None,
            buf: Vec::new(),
            bytes: None,
        }
    }

    /// Ready to open `base` + `suffix` beneath the root (first without following symbolic
    /// links if `no_symlinks`, to learn whether inotify sees its changes); `false` if that is no
    /// valid path.
    fn prepare_open(&mut self, base: &[u8], suffix: &[u8], flags: i32, no_symlinks: bool) -> bool {
        self.path.clear();
        let base = if base.is_empty() { &b"."[..] } else { base };
        if base.len() + suffix.len() + 1 > PATH_BYTES_MAX || base.contains(&0) {
            return false;
        }
        self.path.extend_from_slice(base);
        self.path.extend_from_slice(suffix);
        self.path.push(0);
        // openat2 refuses O_PATH with any flag but O_DIRECTORY, O_NOFOLLOW and O_CLOEXEC.
        let extra = if flags & libc::O_PATH != 0 { 0 } else { libc::O_NOCTTY };
        self.how.flags = (flags | extra | libc::O_CLOEXEC) as u64;
        self.how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
        if no_symlinks {
            self.how.resolve |= libc::RESOLVE_NO_SYMLINKS;
        }
        self.state = State::ToOpen;
        true
    }

    fn reset(&mut self) {
        self.state = State::Idle;
        self.tries = 0;
        self.fallback = false;
        self.symlinked = false;
        self.file = None;
        self.stamp = None;
        self.bytes = None;
    }
}

/// What the cache held for the path when the fill began.
pub(super) enum Old {
    /// Nothing (a miss): requests wait for the fill.
    Nothing,
    /// A file, kept (and served) until the fill finds it changed; with its directory's stamp.
    File(Arc<Entry>, Option<DirStamp>),
    /// A directory or negative answer, replaced by whatever the fill finds.
    Other,
}

/// What a finished fill found.
pub(super) enum Outcome {
    /// The cached file is still current.
    Unchanged,
    /// The new answer, with the directory's stamp (for files).
    Answer(Answer, Option<DirStamp>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Opening,
    Reading,
    Done,
}

/// One fill in progress (see the module comment). Created by `FileCache::begin`.
pub struct Fill {
    pub(super) key: Vec<u8>,
    pub(super) old: Old,
    /// The directory's stamp if the cache had a fresh one (then the directory is not opened).
    pub(super) dir_known: Option<Option<DirStamp>>,
    /// The directory's stamp as this fill found it (from `dir_known` or its open).
    pub(super) dir_now: Option<DirStamp>,
    /// The directory was opened: its new stamp is stored at `finish`.
    pub(super) dir_opened: bool,
    /// The directory, kept open for `finish` to add its inotify watch.
    pub(super) dir_file: Option<File>,
    /// Opens try without following symbolic links first (the cache watches).
    no_symlinks: bool,
    /// The directory was watched when the fill began, and how many batches of events the
    /// cache had applied then (see `FileCache::watched_after`).
    pub(super) dir_was_watched: bool,
    pub(super) events_at_begin: u64,
    /// The site's header lines for this path (`Site::file_fields`), set by `begin`.
    pub(super) extra: Vec<u8>,
    /// The key names a directory listing (it ends in `/`), and whether it shows dot files.
    listing: bool,
    pub(super) listing_hidden: bool,
    /// A listing's JSON form (its HTML is the file part's `buf`).
    listing_json: Vec<u8>,
    parts: [Part; PARTS],
    stage: Stage,
    in_flight: u8,
    pub(super) outcome: Option<Outcome>,
}

impl Fill {
    pub(super) fn new() -> Fill {
        Fill {
            key: Vec::new(),
            old: Old::Nothing,
            dir_known: None,
            dir_now: None,
            dir_opened: false,
            dir_file: None,
            no_symlinks: false,
            dir_was_watched: false,
            events_at_begin: 0,
            extra: Vec::new(),
            listing: false,
            listing_hidden: false,
            listing_json: Vec::new(),
            parts: [Part::new(), Part::new(), Part::new(), Part::new()],
            stage: Stage::Done,
            in_flight: 0,
            outcome: None,
        }
    }

    /// Sets the fill up for `key`: the file's part (and, for a miss or a changed directory,
    /// its siblings', and the directory's when its stamp is not fresh) ready to open.
    pub(super) fn start(
        &mut self,
        key: &[u8],
        old: Old,
        dir_known: Option<Option<DirStamp>>,
        no_symlinks: bool,
    ) {
        self.key.clear();
        self.key.extend_from_slice(key);
        for part in &mut self.parts {
            part.reset();
        }
        self.stage = Stage::Opening;
        self.in_flight = 0;
        self.outcome = None;
        self.dir_now = None;
        self.dir_opened = false;
        self.dir_file = None;
        self.no_symlinks = no_symlinks;
        // A cached file's absent siblings cannot have appeared while its directory is
        // unchanged, so a revalidation by interval opens only the siblings it has; a changed
        // directory opens the rest in a second round (`examine`). A watching cache re-checks
        // after an event, which may be a sibling appearing within the directory stamp's
        // interval: it opens them all.
        let (with_br, with_gz) = match &old {
            Old::File(entry, _) if !no_symlinks => (entry.br.is_some(), entry.gzip.is_some()),
            _ => (true, true),
        };
        self.old = old;
        self.dir_known = dir_known;
        let flags = libc::O_RDONLY | libc::O_NONBLOCK;
        // A key ending in `/` is the listing of the directory it names (`--autoindex`).
        self.listing = key.ends_with(b"/");
        let (path, flags) = match key.strip_suffix(b"/") {
            Some(dir) => (dir.strip_prefix(b"/").unwrap_or(dir), flags | libc::O_DIRECTORY),
            None => (key, flags),
        };
        if !self.parts[FILE].prepare_open(path, b"", flags, no_symlinks) {
            // Longer than PATH_MAX or holding a NUL: nothing can be there.
            self.conclude(Outcome::Answer(Answer::Missing, None));
            return;
        }
        if self.listing {
            if self.dir_known.is_none() {
                let flags = libc::O_PATH | libc::O_DIRECTORY;
                self.parts[DIR].prepare_open(parent_of(key), b"", flags, no_symlinks);
            }
            return;
        }
        if with_br {
            self.parts[BR].prepare_open(key, b".br", flags, no_symlinks);
        }
        if with_gz {
            self.parts[GZ].prepare_open(key, b".gz", flags, no_symlinks);
        }
        if self.dir_known.is_none() {
            let flags = libc::O_PATH | libc::O_DIRECTORY;
            self.parts[DIR].prepare_open(parent_of(key), b"", flags, no_symlinks);
        }
    }

    /// Whether a symbolic link was on the way to anything this fill opened.
    pub(super) fn symlinked(&self) -> bool {
        self.parts.iter().any(|p| p.symlinked)
    }

    /// The path being filled.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Whether the fill has its outcome and no call in flight (then `finish` it).
    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done && self.in_flight == 0
    }

    fn conclude(&mut self, outcome: Outcome) {
        self.outcome = Some(outcome);
        self.stage = Stage::Done;
        // Descriptors opened for parts not needed any more close now; ones still in flight
        // close when they complete (`complete` drops results of a finished fill).
        for part in &mut self.parts {
            if !matches!(part.state, State::Opening | State::Reading) {
                part.file = None;
            }
        }
    }

    /// Passes each call the fill needs now to `submit`.
    pub(super) fn requests(&mut self, root: RawFd, mut submit: impl FnMut(Request)) {
        if self.stage == Stage::Done {
            return;
        }
        for (index, part) in self.parts.iter_mut().enumerate() {
            match part.state {
                State::ToOpen => {
                    part.state = State::Opening;
                    self.in_flight += 1;
                    submit(Request::Open {
                        part: index,
                        dirfd: root,
                        path: part.path.as_ptr().cast(),
                        how: &part.how,
                    });
                }
                State::ToList => {
                    let Some(file) = &part.file else { continue };
                    part.state = State::Listing;
                    self.in_flight += 1;
                    let dir = self.key.strip_suffix(b"/").unwrap_or(&self.key);
                    let dir = dir.strip_prefix(b"/").unwrap_or(dir);
                    submit(Request::List(ListRequest {
                        part: index,
                        fd: file.as_raw_fd(),
                        dir: dir.as_ptr(),
                        dir_len: dir.len(),
                        hidden: self.listing_hidden,
                        html: &mut part.buf,
                        json: &mut self.listing_json,
                    }));
                }
                State::ToRead => {
                    let (Some(file), Some(stamp)) = (&part.file, part.stamp) else { continue };
                    part.state = State::Reading;
                    self.in_flight += 1;
                    submit(Request::Read {
                        part: index,
                        fd: file.as_raw_fd(),
                        buf: part.buf.as_mut_ptr(),
                        len: stamp.len as u32,
                    });
                }
                _ => {}
            }
        }
    }

    /// The result of the call requested for `part`; `root_path` is the root's canonical path.
    pub(super) fn complete(&mut self, part: usize, result: i32, root_path: &std::path::Path) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let done = self.stage == Stage::Done;
        let p = &mut self.parts[part];
        match p.state {
            State::Opening => {
                if result >= 0 {
                    // SAFETY: a descriptor the kernel just opened for us, owned by nothing else.
                    let file = File::from(unsafe { OwnedFd::from_raw_fd(result as RawFd) });
                    if done {
                        return; // closes it
                    }
                    if p.fallback && !contained(&file, root_path) {
                        p.state = State::Failed(libc::EXDEV);
                    } else {
                        p.file = Some(file);
                        p.state = State::Opened;
                    }
                } else {
                    let errno = -result;
                    if errno == libc::EAGAIN && p.tries < TRIES_MAX {
                        // A concurrent rename kept the kernel from proving containment.
                        p.tries += 1;
                        p.state = State::ToOpen;
                    } else if errno == libc::ELOOP && p.how.resolve & libc::RESOLVE_NO_SYMLINKS != 0
                    {
                        // A symbolic link on the way: allowed, but not watchable.
                        p.symlinked = true;
                        p.how.resolve &= !libc::RESOLVE_NO_SYMLINKS;
                        p.state = State::ToOpen;
                    } else if errno == libc::EXDEV && !p.fallback && part != DIR {
                        // RESOLVE_BENEATH refuses absolute symlinks, even ones that point back
                        // inside the root: open plainly, then keep the file only if it lies
                        // under the root's canonical path (the server's symlink policy).
                        p.fallback = true;
                        p.symlinked = true;
                        p.how.resolve = libc::RESOLVE_NO_MAGICLINKS;
                        p.state = State::ToOpen;
                    } else {
                        p.state = State::Failed(errno);
                    }
                }
            }
            State::Reading => {
                if done {
                    return;
                }
                let len = p.stamp.map_or(0, |s| s.len as usize);
                if result < 0 {
                    p.state = State::Failed(-result);
                } else if result as usize == len {
                    // SAFETY: the buffer was made with room for `len` bytes (`prepare_body`) and
                    // the kernel wrote all of them.
                    unsafe { p.buf.set_len(len) };
                    let now =
                        p.file.as_ref().and_then(|f| f.metadata().ok()).map(|m| Stamp::of(&m));
                    if now == p.stamp {
                        p.bytes =
                            Some(Bytes::Copied(std::mem::take(&mut p.buf).into_boxed_slice()));
                        p.state = State::Ready;
                        p.file = None;
                    } else {
                        retry_read(p);
                    }
                } else {
                    retry_read(p); // shorter than fstat said: changed while read
                }
            }
            State::Listing => {
                if done {
                    return;
                }
                p.file = None;
                if result < 0 {
                    p.state = State::Failed(-result);
                } else {
                    let html = std::mem::take(&mut p.buf).into_boxed_slice();
                    p.bytes = Some(Bytes::Copied(html));
                    p.state = State::Ready;
                }
            }
            _ => debug_assert!(false, "completion for part {part} in state {:?}", p.state),
        }
        if self.in_flight == 0 && !done {
            self.advance();
        }
    }

    /// With nothing in flight: moves to the next stage, or concludes.
    fn advance(&mut self) {
        if self
            .parts
            .iter()
            .any(|p| matches!(p.state, State::ToOpen | State::ToRead | State::ToList))
        {
            return; // retries to request first
        }
        match self.stage {
            Stage::Opening => self.examine(),
            Stage::Reading => {
                if let Some(errno) = self.parts.iter().find_map(|p| match p.state {
                    State::Failed(e) => Some(e),
                    _ => None,
                }) {
                    let answer = answer_for_error(&io::Error::from_raw_os_error(errno));
                    self.conclude(Outcome::Answer(answer, None));
                } else {
                    self.build();
                }
            }
            Stage::Done => {}
        }
    }

    /// Every open completed: decide what the path is, whether a cached file changed, and
    /// which bodies to read.
    fn examine(&mut self) {
        if self.parts[DIR].state != State::Idle {
            self.dir_opened = true;
            self.dir_file = self.parts[DIR].file.take();
            self.dir_now = self
                .dir_file
                .as_ref()
                .and_then(|f| f.metadata().ok())
                .map(|m| DirStamp::of_metadata(&m));
            self.parts[DIR].state = State::Idle;
        } else if let Some(known) = self.dir_known {
            self.dir_now = known;
        }
        let file = &mut self.parts[FILE];
        let meta = match (file.state, &file.file) {
            (State::Opened, Some(f)) => f.metadata(),
            (State::Failed(errno), _) => Err(io::Error::from_raw_os_error(errno)),
            _ => Err(io::Error::from_raw_os_error(libc::EIO)),
        };
        let meta = match meta {
            Ok(meta) => meta,
            Err(e) => return self.conclude(Outcome::Answer(answer_for_error(&e), None)),
        };
        if self.listing {
            if !meta.is_dir() {
                return self.conclude(Outcome::Answer(Answer::Missing, None));
            }
            // Listed anew at every fill: a file changing inside changes sizes and times, not
            // the directory's own stamp.
            file.stamp = Some(Stamp::of(&meta));
            file.buf.clear();
            self.listing_json.clear();
            file.state = State::ToList;
            self.stage = Stage::Reading;
            return;
        }
        if meta.is_dir() {
            return self.conclude(Outcome::Answer(Answer::Directory, None));
        }
        if !meta.is_file() {
            // FIFO, socket, device: never served (opened non-blocking, so nothing waited).
            return self.conclude(Outcome::Answer(Answer::Missing, None));
        }
        file.stamp = Some(Stamp::of(&meta));
        for v in [BR, GZ] {
            let p = &mut self.parts[v];
            if let (State::Opened, Some(f)) = (p.state, &p.file) {
                match f.metadata() {
                    Ok(m) if m.is_file() => p.stamp = Some(Stamp::of(&m)),
                    Ok(_) => p.reset(), // not a regular file: as if absent
                    Err(e) => p.state = State::Failed(e.raw_os_error().unwrap_or(libc::EIO)),
                }
            }
        }
        if let Old::File(entry, dir) = &self.old {
            let same_dir = *dir == self.dir_now;
            let same = |p: &Part, cached: Option<&Arc<Entry>>| match cached {
                Some(e) => p.stamp == Some(e.stamp),
                None if p.state == State::Idle => same_dir, // not opened: nothing appeared?
                None => p.stamp.is_none(),                  // opened: still absent?
            };
            if self.parts[FILE].stamp == Some(entry.stamp)
                && same_dir
                && same(&self.parts[BR], entry.br.as_ref())
                && same(&self.parts[GZ], entry.gzip.as_ref())
            {
                return self.conclude(Outcome::Unchanged);
            }
            // Changed: build anew, after opening the siblings this round skipped.
            self.old = Old::Other;
            let key = std::mem::take(&mut self.key);
            let flags = libc::O_RDONLY | libc::O_NONBLOCK;
            for (v, suffix) in [(BR, &b".br"[..]), (GZ, b".gz")] {
                if self.parts[v].state == State::Idle {
                    self.parts[v].prepare_open(&key, suffix, flags, self.no_symlinks);
                }
            }
            self.key = key;
            if self.parts.iter().any(|p| p.state == State::ToOpen) {
                return;
            }
        }
        for v in [BR, GZ] {
            if let State::Failed(errno) = self.parts[v].state {
                match answer_for_error(&io::Error::from_raw_os_error(errno)) {
                    Answer::Missing | Answer::Forbidden => self.parts[v].reset(),
                    other => return self.conclude(Outcome::Answer(other, None)),
                }
            }
        }
        self.stage = Stage::Reading;
        for v in [FILE, BR, GZ] {
            if self.parts[v].state == State::Opened {
                if let Err(e) = prepare_body(&mut self.parts[v]) {
                    return self.conclude(Outcome::Answer(answer_for_error(&e), None));
                }
            }
        }
        if !self.parts.iter().any(|p| p.state == State::ToRead) {
            self.build();
        }
    }

    /// Every body is ready: the entry, with its variants.
    fn build(&mut self) {
        if self.listing {
            return self.build_listing();
        }
        let content_type = super::mime::content_type(&file_name(&self.key));
        let extra = &self.extra;
        let mut take = |v: usize, encoding: Option<&str>, vary: bool| -> Option<Entry> {
            let p = &mut self.parts[v];
            let (bytes, stamp) = (p.bytes.take()?, p.stamp?);
            Some(Entry::build(bytes, stamp, content_type, encoding, vary, extra))
        };
        let br = take(BR, Some("br"), true).map(Arc::new);
        let gzip = take(GZ, Some("gzip"), true).map(Arc::new);
        let vary = br.is_some() || gzip.is_some();
        let Some(mut entry) = take(FILE, None, vary) else {
            let e = io::Error::from_raw_os_error(libc::EIO);
            return self.conclude(Outcome::Answer(answer_for_error(&e), None));
        };
        entry.br = br;
        entry.gzip = gzip;
        let dir = self.dir_now;
        self.conclude(Outcome::Answer(Answer::File(Arc::new(entry)), dir));
    }
}

impl Fill {
    /// The listing's HTML entry, with its JSON form beside it. Their validators come from the
    /// directory's stamp and each body's length.
    fn build_listing(&mut self) {
        let p = &mut self.parts[FILE];
        let (Some(Bytes::Copied(html)), Some(dir)) = (p.bytes.take(), p.stamp) else {
            let e = io::Error::from_raw_os_error(libc::EIO);
            return self.conclude(Outcome::Answer(answer_for_error(&e), None));
        };
        let mut extra = std::mem::take(&mut self.extra);
        extra.extend_from_slice(b"Vary: Accept\r\n");
        let json = std::mem::take(&mut self.listing_json).into_boxed_slice();
        let json_stamp = Stamp { len: json.len() as u64, ..dir };
        let json =
            Entry::build(Bytes::Copied(json), json_stamp, "application/json", None, false, &extra);
        let html_stamp = Stamp { len: html.len() as u64, ..dir };
        let mut entry = Entry::build(
            Bytes::Copied(html),
            html_stamp,
            "text/html; charset=utf-8",
            None,
            false,
            &extra,
        );
        self.extra = extra;
        entry.json = Some(Arc::new(json));
        let dir_now = self.dir_now;
        self.conclude(Outcome::Answer(Answer::File(Arc::new(entry)), dir_now));
    }
}

/// For an open regular file with its stamp: an empty body, a mapping (larger than
/// `COPIED_FILE_BYTES_MAX`), or a read to request into a buffer of exactly its length. The
/// body's length is the stamp's: a mapping covers exactly that many bytes (a file that grows
/// later is never sent longer than its Content-Length) and a copy holds exactly that many.
fn prepare_body(p: &mut Part) -> io::Result<()> {
    let Some(stamp) = p.stamp else { return Err(io::Error::from_raw_os_error(libc::EIO)) };
    if stamp.len == 0 {
        p.bytes = Some(Bytes::Empty);
        p.state = State::Ready;
        p.file = None;
        return Ok(());
    }
    if stamp.len > COPIED_FILE_BYTES_MAX {
        let Some(file) = p.file.take() else { return Err(io::Error::from_raw_os_error(libc::EIO)) };
        // SAFETY: fcntl on a descriptor `file` owns. Back to blocking mode for the kernel's
        // splices and sendfile; a failure leaves O_NONBLOCK, which regular files ignore.
        unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, 0) };
        // SAFETY: `map` is unsafe because the file may be truncated or modified while mapped.
        // Mapped bytes are never read in user space (`MappedSlice` has no accessor); the kernel
        // reading a page truncated away fails the send with EFAULT. The mapping covers exactly
        // `stamp.len` bytes, however long the file is by now.
        let map = unsafe { MmapOptions::new().len(stamp.len as usize).map(&file)? };
        p.bytes = Some(Bytes::Mapped(map, file));
        p.state = State::Ready;
        return Ok(());
    }
    if let Some(file) = &p.file {
        // SAFETY: fcntl on a descriptor the part owns. Opened O_NONBLOCK so that a FIFO
        // swapped in could not block the open; a regular file must lose it before the read,
        // or io_uring answers EAGAIN for pages not cached instead of reading them from disk.
        unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, 0) };
    }
    p.buf = Vec::with_capacity(stamp.len as usize);
    p.state = State::ToRead;
    Ok(())
}

/// A small body changed while it was read: take its new stamp and read again, a few times.
fn retry_read(p: &mut Part) {
    p.buf.clear();
    p.tries += 1;
    let meta = p.file.as_ref().map(|f| f.metadata());
    match meta {
        Some(Ok(m)) if p.tries < TRIES_MAX && m.is_file() => {
            p.stamp = Some(Stamp::of(&m));
            p.state = State::Opened;
            if let Err(e) = prepare_body(p) {
                p.state = State::Failed(e.raw_os_error().unwrap_or(libc::EIO));
            }
        }
        _ => p.state = State::Failed(libc::EIO), // kept changing while being read: 500
    }
}

/// Whether an open file lies under the root's canonical path (for the EXDEV fallback).
fn contained(file: &File, root_path: &std::path::Path) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .is_ok_and(|real| real.starts_with(root_path))
}

/// The last component of a key, for its Content-Type.
fn file_name(key: &[u8]) -> String {
    let name = key.iter().rposition(|&b| b == b'/').map_or(key, |slash| &key[slash + 1..]);
    String::from_utf8_lossy(name).into_owned()
}

/// Performs a request with plain system calls (the blocking engine, and warm-up);
/// `root_path` is the root's canonical path (listings check symbolic links against it).
pub(super) fn perform(request: Request, root_path: &std::path::Path) -> i32 {
    let rc = match request {
        // SAFETY: `path` is NUL-terminated and `how` a live open_how of the size passed, both
        // inside the fill, which outlives the call.
        Request::Open { dirfd, path, how, .. } => unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dirfd,
                path,
                how,
                std::mem::size_of::<libc::open_how>(),
            )
        },
        // SAFETY: `buf` has room for `len` bytes inside the fill, which outlives the call.
        Request::Read { fd, buf, len, .. } => unsafe {
            libc::pread(fd, buf.cast(), len as usize, 0) as libc::c_long
        },
        // SAFETY: the fill outlives this synchronous call and is not touched meanwhile.
        Request::List(list) => return unsafe { list.perform(root_path) },
    };
    if rc < 0 {
        -io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
    } else {
        rc as i32
    }
}
