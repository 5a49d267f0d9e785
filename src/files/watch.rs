//! Change notification for the file cache: one inotify instance per cache, with a watch on
//! every directory that holds a cached answer and on each of its ancestors up to the root.
//! An event names the entry that changed; the cache marks it stale (`FileCache::apply_events`)
//! and the next request for it re-checks it. An answer under watched directories is then used
//! with no re-check at all, so a large hot set costs nothing while nothing changes, and a
//! change shows up as soon as its event is read.
//!
//! Not seen by inotify (so those answers keep the interval re-check, or it is documented):
//! paths through a symbolic link (the events land in the link target's directory; such
//! answers are never marked watched), directories whose watch could not be added (the
//! per-user limit), changes on network filesystems and writes through another process's
//! mapping (use `--no-watch` there). An event-queue overflow marks every answer stale.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Events that can change what a cached answer should be: contents and metadata of a child
/// (write, truncate, chmod), names appearing, disappearing or moving, and the directory itself
/// going away. IN_EXCL_UNLINK: nothing from children already unlinked.
const MASK: u32 = libc::IN_MODIFY
    | libc::IN_ATTRIB
    | libc::IN_CLOSE_WRITE
    | libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ONLYDIR
    | libc::IN_EXCL_UNLINK;

/// Bytes of one read of events: at least one event with the longest name (the kernel refuses a
/// smaller buffer with EINVAL), and room for a burst.
pub const EVENTS_BUFFER_BYTES: usize = 16 * 1024;

/// Size of `struct inotify_event` before its name.
const EVENT_HEAD_BYTES: usize = 16;

/// The inotify instance and which directory each watch is on.
pub(super) struct Watcher {
    fd: OwnedFd,
    by_wd: HashMap<i32, Box<[u8]>>,
    by_dir: HashMap<Box<[u8]>, i32>,
}

/// One event: the directory watched (its key) and what happened, to which name.
pub(super) struct Event<'a> {
    /// Key of the watched directory, `None` for a watch already forgotten.
    pub dir: Option<&'a [u8]>,
    pub mask: u32,
    pub name: &'a [u8],
}

impl Watcher {
    /// A new instance (non-blocking: the ring polls it), or `None` if inotify is unavailable
    /// (then every answer is re-checked by interval).
    pub(super) fn new() -> Option<Watcher> {
        // SAFETY: inotify_init1 takes flags only.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        Some(Watcher {
            // SAFETY: a descriptor just created that nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            by_wd: HashMap::new(),
            by_dir: HashMap::new(),
        })
    }

    /// The descriptor to read events from.
    pub(super) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Whether `dir` (a directory key) and its ancestors are watched.
    pub(super) fn is_watched(&self, dir: &[u8]) -> bool {
        self.by_dir.contains_key(dir)
    }

    /// Watches directory `dir` (open as `dir_fd`, reached without symbolic links) and each
    /// ancestor not watched yet, walking up with `..` from the descriptor (names already in
    /// memory: nothing waits for a disk). All or nothing: `dir` counts as watched only once
    /// the whole chain up to a watched ancestor is, since a rename of an unwatched ancestor
    /// would go unseen; on a failure the watches this call added are removed.
    pub(super) fn watch(&mut self, dir: &[u8], dir_fd: RawFd) -> bool {
        let mut key = dir;
        let mut owned: Option<OwnedFd> = None;
        let mut added: Vec<(Box<[u8]>, i32)> = Vec::new();
        let complete = loop {
            if self.by_dir.contains_key(key) {
                break true;
            }
            let fd = owned.as_ref().map_or(dir_fd, |f| f.as_raw_fd());
            let Some(wd) = self.add(key, fd) else { break false };
            added.push((key.into(), wd));
            if key.is_empty() {
                break true;
            }
            key = super::cache::parent_of(key);
            // SAFETY: a NUL-terminated literal and a descriptor we hold; the new descriptor
            // is owned below.
            let parent = unsafe {
                libc::openat(fd, c"..".as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            };
            if parent < 0 {
                break false;
            }
            // SAFETY: a descriptor just opened that nothing else owns.
            owned = Some(unsafe { OwnedFd::from_raw_fd(parent) });
        };
        for (key, wd) in added {
            if complete {
                self.by_wd.insert(wd, key.clone());
                self.by_dir.insert(key, wd);
            } else {
                // SAFETY: plain call on our inotify descriptor.
                unsafe { libc::inotify_rm_watch(self.fd(), wd) };
            }
        }
        complete
    }

    /// A new watch on the directory open as `fd`, or `None`: the per-user limit (ENOSPC), the
    /// directory gone, or a directory already watched under another key (moved, or a bind
    /// mount), which is left to the interval re-check.
    fn add(&mut self, key: &[u8], fd: RawFd) -> Option<i32> {
        let path = format!("/proc/self/fd/{fd}\0");
        // SAFETY: `path` is NUL-terminated and outlives the call.
        let wd = unsafe { libc::inotify_add_watch(self.fd(), path.as_ptr().cast(), MASK) };
        if wd < 0 {
            return None;
        }
        match self.by_wd.get(&wd) {
            Some(known) if **known != *key => None,
            _ => Some(wd),
        }
    }

    /// Forgets a watch the kernel removed (IN_IGNORED) or that no longer names its key
    /// (the directory moved: the watch is removed too).
    pub(super) fn forget(&mut self, wd: i32, remove: bool) {
        if let Some(key) = self.by_wd.remove(&wd) {
            self.by_dir.remove(&key);
        }
        if remove {
            // SAFETY: plain call on our inotify descriptor; an unknown wd gives EINVAL.
            unsafe { libc::inotify_rm_watch(self.fd(), wd) };
        }
    }

    /// Removes the watches on `dir` and every directory below it (moved or deleted: their keys
    /// no longer name them). Fills add them again under their new paths.
    pub(super) fn forget_under(&mut self, dir: &[u8]) {
        let below: Vec<i32> = self
            .by_wd
            .iter()
            .filter(|(_, key)| {
                dir.is_empty()
                    || key.strip_prefix(dir).is_some_and(|rest| rest.is_empty() || rest[0] == b'/')
            })
            .map(|(&wd, _)| wd)
            .collect();
        for wd in below {
            self.forget(wd, true);
        }
    }

    /// Calls `each` for every complete event in `buf` (bytes read from `fd`), with the wd.
    pub(super) fn events(&self, buf: &[u8], mut each: impl FnMut(i32, Event<'_>)) {
        let mut at = 0;
        while at + EVENT_HEAD_BYTES <= buf.len() {
            let field = |i: usize| {
                u32::from_ne_bytes([buf[at + i], buf[at + i + 1], buf[at + i + 2], buf[at + i + 3]])
            };
            let (wd, mask, len) = (field(0) as i32, field(4), field(12) as usize);
            let end = at + EVENT_HEAD_BYTES + len;
            if end > buf.len() {
                break;
            }
            let name = &buf[at + EVENT_HEAD_BYTES..end];
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
            each(wd, Event { dir: self.by_wd.get(&wd).map(|k| &**k), mask, name });
            at = end;
        }
    }

    /// Reads pending events with a plain system call (the blocking engine's watcher thread).
    pub(super) fn read_into(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is a live, writable buffer of the length passed.
        let n = unsafe { libc::read(self.fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}
