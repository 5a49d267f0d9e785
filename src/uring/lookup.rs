//! Files for requests: a request for a path the cache does not know waits in its slot while the
//! cache's fill (`files::fill`) runs through the ring, and the worker keeps serving every other
//! connection. An answer that is due for revalidation is re-checked the same way. Requests for
//! a path already being filled join that fill.
//!
//! A fill's opens (`OpenAt2` beneath the root) run inline when the path's dentries are cached
//! and go to the kernel's io-wq when they are not; its reads of small bodies complete inline
//! from the page cache or as async buffered reads. Nothing here waits for a disk.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use io_uring::{opcode, types};

use super::slots::Phase;
use super::token::{Op, Token, GENERATION_MASK};
use super::{ring, Worker};
use crate::files::{Begin, Fill, Request};

/// Bits of a lookup token's generation field that name the fill's part.
const PART_BITS: u32 = 2;
const _: () = assert!(crate::files::fill::PARTS <= 1 << PART_BITS);

/// Fills in flight, each with the connections waiting for it. At most one per waiting
/// connection plus the revalidations started in a loop turn, so bounded by the connection
/// limit; each fill holds at most four descriptors while it runs.
#[derive(Default)]
pub(super) struct Lookups {
    jobs: Vec<Job>,
    free: Vec<u32>,
    /// Fills by the hash of their path, so later requests for the same path join them. A
    /// hash, not the path, so that a revalidation allocates nothing; a fill whose hash is
    /// taken by another path's fill runs unlisted (nothing is wrong, one open is repeated).
    by_key: HashMap<u64, u32>,
    hasher: RandomState,
    running: usize,
}

#[derive(Default)]
struct Job {
    fill: Option<Box<Fill>>,
    /// Connections (slot, generation) whose next request waits for this fill.
    waiters: Vec<(u32, u32)>,
    generation: u32,
    /// The hash under which `by_key` lists this fill, if it does.
    hash: Option<u64>,
}

impl Lookups {
    /// Whether no fill is in flight (then the worker may exit: no buffer of a fill is still
    /// the kernel's).
    pub(super) fn is_idle(&self) -> bool {
        self.running == 0
    }
}

impl Worker {
    /// The next request of connection `index` names `key`, which the cache must fill first:
    /// starts that fill, or joins the one in flight. `true` when the request can be served at
    /// once (the answer is fresh, or is served while a revalidation runs).
    pub(super) fn on_miss(&mut self, index: u32, key: &[u8]) -> bool {
        let generation = self.slots.get(index).generation;
        let hash = self.lookups.hasher.hash_one(key);
        let running = self.lookups.by_key.get(&hash).copied().filter(|&job| {
            self.lookups.jobs[job as usize].fill.as_ref().is_some_and(|fill| fill.key() == key)
        });
        let job = match running {
            Some(job) => job,
            None => match self.files.begin(key, self.now_ms) {
                Begin::Fresh => return true,
                Begin::Revalidate(fill) | Begin::Miss(fill) => {
                    match self.start_fill(fill, hash) {
                        Some(job) => job,
                        None => return true, // concluded without a system call
                    }
                }
            },
        };
        self.lookups.jobs[job as usize].waiters.push((index, generation));
        self.slots.get(index).filling = true;
        false
    }

    /// Submits a fill's first calls; `None` if it needed none and is already stored.
    fn start_fill(&mut self, mut fill: Box<Fill>, hash: u64) -> Option<u32> {
        if fill.is_done() {
            self.files.finish(fill, self.now_ms);
            return None;
        }
        let job = match self.lookups.free.pop() {
            Some(job) => job,
            None => {
                self.lookups.jobs.push(Job::default());
                (self.lookups.jobs.len() - 1) as u32
            }
        };
        self.submit_requests(job, &mut fill);
        let slot = &mut self.lookups.jobs[job as usize];
        slot.fill = Some(fill);
        if let std::collections::hash_map::Entry::Vacant(vacant) = self.lookups.by_key.entry(hash) {
            vacant.insert(job);
            slot.hash = Some(hash);
        }
        self.lookups.running += 1;
        Some(job)
    }

    fn submit_requests(&mut self, job: u32, fill: &mut Fill) {
        let generation = self.lookups.jobs[job as usize].generation;
        let ring = &mut self.ring;
        let lister = &self.lister;
        self.files.requests(fill, |request| {
            let part = request.part() as u32;
            let token = Token {
                op: Op::Lookup,
                generation: (generation << PART_BITS | part) & GENERATION_MASK,
                slot: job,
            };
            let entry = match request {
                Request::Open { dirfd, path, how, .. } => {
                    // `types::OpenHow` is `repr(transparent)` over the kernel's `open_how`,
                    // which `libc::open_how` also is.
                    let how = how.cast::<types::OpenHow>();
                    opcode::OpenAt2::new(types::Fd(dirfd), path, how).build()
                }
                Request::Read { fd, buf, len, .. } => {
                    opcode::Read::new(types::Fd(fd), buf, len).offset(0).build()
                }
                Request::List(list) => {
                    // A lister exists whenever listings are asked for (`--autoindex`). If it is
                    // gone, the fill gets an error (a read of descriptor -1 fails with EBADF:
                    // a 500), never waits forever.
                    let queued = lister.as_ref().is_some_and(|l| l.submit(list, token.pack()));
                    if !queued {
                        let failing = opcode::Read::new(types::Fd(-1), std::ptr::null_mut(), 0);
                        // SAFETY: a read of no bytes into no buffer: nothing is pointed to.
                        unsafe { ring::push(ring, &failing.build().user_data(token.pack())) };
                    }
                    return;
                }
            };
            // SAFETY: the path, open_how and read buffer live inside the boxed fill, which the
            // job keeps (never moved out of its box, never dropped) until every call it asked
            // for has completed: `on_lookup` finishes a fill only once `is_done`, and the
            // worker does not exit while a fill runs (`Lookups::is_idle`). The descriptors
            // read from are owned by the fill too.
            unsafe { ring::push(ring, &entry.user_data(token.pack())) };
        });
    }

    /// A fill's call completed: feed the result, submit what it needs next, and when it is
    /// done store its answer and serve the connections that waited for it.
    pub(super) fn on_lookup(&mut self, token: Token, result: i32) {
        let job = token.slot;
        let part = (token.generation & ((1 << PART_BITS) - 1)) as usize;
        let generation = token.generation >> PART_BITS;
        let Some(slot) = self.lookups.jobs.get_mut(job as usize) else { return };
        if slot.generation & (GENERATION_MASK >> PART_BITS) != generation {
            debug_assert!(false, "completion for an old fill");
            return;
        }
        let Some(mut fill) = slot.fill.take() else { return };
        self.files.complete(&mut fill, part, result);
        if !fill.is_done() {
            self.submit_requests(job, &mut fill);
            self.lookups.jobs[job as usize].fill = Some(fill);
            return;
        }
        let slot = &mut self.lookups.jobs[job as usize];
        if let Some(hash) = slot.hash.take() {
            self.lookups.by_key.remove(&hash);
        }
        slot.generation = slot.generation.wrapping_add(1);
        let mut waiters = std::mem::take(&mut slot.waiters);
        self.lookups.running -= 1;
        self.files.finish(fill, self.now_ms);
        for &(index, generation) in &waiters {
            let Some(slot) = self.slots.current(index, generation) else { continue };
            slot.filling = false;
            if slot.phase == Phase::Open {
                self.drain_input(index);
                self.after_progress(index);
            }
            self.settle_recv(index);
            self.finish_close(index);
        }
        waiters.clear();
        // Freed only now, so no fill started while serving the waiters took this job and
        // its list; the list keeps its capacity for the next fill (no allocation).
        self.lookups.jobs[job as usize].waiters = waiters;
        self.lookups.free.push(job);
    }
}

impl Worker {
    /// Reads the file cache's inotify events through the ring, if it watches. The read waits
    /// in the kernel (a poll armed by io_uring) until events arrive.
    pub(super) fn arm_watch(&mut self) {
        let Some(fd) = self.files.watch_fd() else { return };
        let len = self.watch_buf.len() as u32;
        let entry = opcode::Read::new(types::Fd(fd), self.watch_buf.as_mut_ptr(), len)
            .build()
            .user_data(Token::worker(Op::Watch).pack());
        // SAFETY: the target is the worker's boxed `watch_buf`, which outlives the ring
        // (dropped first); the inotify descriptor is owned by the worker's cache, which does too.
        unsafe { ring::push(&mut self.ring, &entry) };
    }

    pub(super) fn on_watch(&mut self, result: i32) {
        match result {
            n if n > 0 => {
                self.files.apply_events(&self.watch_buf[..n as usize]);
                self.arm_watch();
            }
            e if e == -libc::EAGAIN => {
                // An older kernel answered at once: wait for readability, then read.
                let Some(fd) = self.files.watch_fd() else { return };
                let entry = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
                    .build()
                    .user_data(Token::worker(Op::WatchPoll).pack());
                // SAFETY: a poll carries no pointer.
                unsafe { ring::push(&mut self.ring, &entry) };
            }
            // The descriptor is unusable: no more events will come, so answers go back to
            // being re-checked by interval.
            _ => self.files.unwatch(),
        }
    }
}
