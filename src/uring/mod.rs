//! The io_uring engine: one worker per thread, each with its own ring, listener, provided
//! receive buffers, connection slots and pools. Every socket operation (accept, recv, send,
//! shutdown, close) goes through the ring; the only syscall in steady state is the one
//! `io_uring_enter` per loop turn that submits new work and waits for completions.
//!
//! A turn: publish returned receive buffers, submit and wait, copy a batch of completions out
//! of the CQ, then dispatch each (reaping is separate from handling, so handlers may push new
//! entries freely).

pub mod buf_ring;
pub mod pool;
pub mod ring;
pub mod slots;
pub mod token;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use crate::batch::Batch;
use crate::config::Config;
use crate::files::FileCache;
use crate::http::date::DateCache;
use crate::http::{ParseLimits, Status, Version};
use crate::limits::{
    CQE_BATCH_COUNT, HELD_BUFFERS_PER_CONNECTION_MAX, HELD_BUFFERS_TOTAL_MAX, INPUT_BUFFER_BYTES,
    RECV_BUFFER_BYTES, RECV_BUFFER_COUNT, TICK_MILLIS,
};
use crate::serve::{self, KeyBuffer, Shared};
use crate::Error;

use buf_ring::{BufRing, BUFFER_GROUP};
use pool::Pool;
use slots::{Phase, Slot, Slots, SpliceStage, Timer, NO_BUFFER};
use token::{Op, Token};

/// Kernel worker threads (bounded and unbounded each) per ring, for splices.
const IOWQ_WORKERS_MAX: u32 = 64;

/// Direct descriptors reserved beyond the connection limit, so connections over the limit can
/// still be accepted and closed at once instead of waiting in the backlog.
const REFUSED_IN_FLIGHT_MAX: u32 = 64;

/// An input buffer: bytes received and not yet answered.
type Input = [u8; INPUT_BUFFER_BYTES];

/// Timeouts converted to ticks.
struct Ticks {
    header: u64,
    idle: u64,
    send: u64,
    linger: u64,
    shutdown: u64,
}

/// Counters kept per worker (read in tests and at exit).
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections closed at once because the worker was full or draining.
    pub refused: u64,
    /// Batches sent completely (one or more responses each).
    pub sends: u64,
    /// Multishot recvs ended by an empty buffer ring and re-armed.
    pub enobufs: u64,
    /// Accept errors (EMFILE, ENFILE...), each followed by a one-tick back-off.
    pub accept_errors: u64,
    /// Connections closed for holding more receive buffers than their share while not
    /// reading their responses.
    pub overruns: u64,
    /// File-cache lookups answered without a system call.
    pub cache_hits: u64,
    /// Paths opened because the cache did not know them.
    pub cache_misses: u64,
    /// Cached answers re-checked (statx) after their interval.
    pub cache_revalidations: u64,
    /// Cached answers evicted to stay within the bounds.
    pub cache_evictions: u64,
}

impl Counters {
    /// Adds a file cache's counters.
    pub fn add_cache(&mut self, cache: crate::files::CacheCounters) {
        self.cache_hits += cache.hits;
        self.cache_misses += cache.misses;
        self.cache_revalidations += cache.revalidations;
        self.cache_evictions += cache.evictions;
    }

    /// Adds another worker's counters.
    pub fn add(&mut self, other: &Counters) {
        self.accepted += other.accepted;
        self.refused += other.refused;
        self.sends += other.sends;
        self.enobufs += other.enobufs;
        self.accept_errors += other.accept_errors;
        self.overruns += other.overruns;
        self.cache_hits += other.cache_hits;
        self.cache_misses += other.cache_misses;
        self.cache_revalidations += other.cache_revalidations;
        self.cache_evictions += other.cache_evictions;
    }
}

/// One thread's engine. Field order matters: `ring` is declared first so it is dropped first,
/// and the kernel has let go of every buffer registered with it before `bufs` is freed.
pub struct Worker {
    ring: IoUring,
    bufs: BufRing,
    slots: Slots,
    /// Per receive buffer: the next buffer held by the same connection, and the byte count.
    held_next: Box<[u16]>,
    held_len: Box<[u32]>,
    /// Per held buffer: where its unused bytes start (after request-body bytes skipped).
    held_from: Box<[u16]>,
    /// Receive buffers held by all connections (at most `HELD_BUFFERS_TOTAL_MAX`).
    held_total: u32,
    /// Connections whose recv ended with ENOBUFS, re-armed at the end of the loop turn (so an
    /// empty buffer ring can never make us re-arm and fail in a loop); `starved_spare` is the
    /// second list swapped in while one is walked, so neither allocates after warm-up.
    starved: Vec<(u32, u32)>,
    starved_spare: Vec<(u32, u32)>,
    inputs: Pool<Input>,
    batches: Pool<Batch>,
    pipes: Pipes,
    listener: OwnedFd,
    wake: Arc<OwnedFd>,
    /// Target of the eventfd read; boxed so its address is fixed while the read is in flight.
    wake_value: Box<u64>,
    /// The tick timeout's timespec; boxed for the same reason.
    tick_spec: Box<types::Timespec>,
    /// This worker's file cache: hits need no system call, misses are filled in place.
    files: FileCache,
    /// Milliseconds since the worker started, read once per loop turn: the cache's clock.
    now_ms: u64,
    limits: ParseLimits,
    date: DateCache,
    ticks: Ticks,
    keepalive_requests: u32,
    max_connections: u32,
    started: Instant,
    now: u64,
    accept_armed: bool,
    accept_backoff: bool,
    /// The kernel bounds each multishot recv by bytes (`ring::with_total_limit`, 6.17+);
    /// cleared the first time it refuses that with EINVAL.
    recv_limit: bool,
    /// Tick by which a graceful shutdown gives up on in-flight responses.
    draining_until: Option<u64>,
    counters: Counters,
}

impl Worker {
    /// Sets up the ring and buffers on the calling thread, which must be the one that runs it.
    pub fn new(
        config: &Config,
        listener: OwnedFd,
        wake: Arc<OwnedFd>,
        files: FileCache,
    ) -> Result<Worker, Error> {
        let (ring, _mode) = ring::build()?;
        let bufs = BufRing::register(&ring, RECV_BUFFER_COUNT, RECV_BUFFER_BYTES)
            .map_err(|source| Error::Uring { what: "buffer ring registration", source })?;
        // Room for every connection plus some that are accepted only to be closed at once. The
        // kernel caps the table at RLIMIT_NOFILE; with a smaller table the connection limit
        // shrinks to fit, so connections beyond it are still refused at once, not dropped by
        // a full table (accept then fails with ENFILE, which backs off for a tick).
        let table = (config.max_connections + REFUSED_IN_FLIGHT_MAX).min(nofile_limit()).max(2);
        let max_connections =
            config.max_connections.min(table - (table / 4).min(REFUSED_IN_FLIGHT_MAX));
        ring.submitter()
            .register_files_sparse(table)
            .map_err(|source| Error::Uring { what: "fixed-file table registration", source })?;
        // Splices run in the kernel's io-wq threads. They never block on a socket (non-
        // blocking splice plus a poll in the ring); the cap bounds the threads (without one the
        // kernel grew 259 under 1,000 slow readers) while leaving room for 100 busy
        // connections: at 50 KiB bodies a cap of 1 made 448k context switches in 3 s and
        // served 11% fewer requests than 64 (66k switches).
        let _ =
            ring.submitter().register_iowq_max_workers(&mut [IOWQ_WORKERS_MAX, IOWQ_WORKERS_MAX]);
        let secs = |d: std::time::Duration| d.as_secs().max(1);
        Ok(Worker {
            ring,
            bufs,
            slots: Slots::new(config.max_connections),
            held_next: vec![NO_BUFFER; usize::from(RECV_BUFFER_COUNT)].into_boxed_slice(),
            held_len: vec![0; usize::from(RECV_BUFFER_COUNT)].into_boxed_slice(),
            held_from: vec![0; usize::from(RECV_BUFFER_COUNT)].into_boxed_slice(),
            held_total: 0,
            starved: Vec::new(),
            starved_spare: Vec::new(),
            inputs: Pool::new(|| Box::new([0u8; INPUT_BUFFER_BYTES])),
            batches: Pool::new(Batch::new),
            pipes: Pipes::default(),
            listener,
            wake,
            wake_value: Box::new(0),
            tick_spec: Box::new(types::Timespec::new().nsec((TICK_MILLIS * 1_000_000) as u32)),
            files,
            now_ms: 0,
            limits: config.parse_limits,
            date: DateCache::new(),
            ticks: Ticks {
                header: secs(config.header_timeout),
                idle: secs(config.keepalive_timeout),
                send: secs(config.send_timeout),
                linger: crate::limits::LINGER_TIMEOUT_SECS.into(),
                shutdown: config.shutdown_timeout.as_secs(),
            },
            keepalive_requests: config.keepalive_requests,
            max_connections,
            started: Instant::now(),
            now: 0,
            accept_armed: false,
            accept_backoff: false,
            // The environment switch exercises the pre-6.17 path (held-buffer caps) in tests.
            recv_limit: std::env::var_os("RINGSERVE_NO_RECV_LIMIT").is_none(),
            draining_until: None,
            counters: Counters::default(),
        })
    }

    /// Runs until a shutdown is requested and every connection is closed.
    pub fn run(mut self) -> Result<Counters, Error> {
        self.arm_accept();
        self.arm_tick();
        self.arm_wake();
        let mut completions: Vec<(u64, i32, u32)> = Vec::with_capacity(CQE_BATCH_COUNT);
        // The event loop: the one loop that does not end by itself; it ends when a drain
        // completes.
        loop {
            self.bufs.publish();
            if let Err(e) = self.ring.submit_and_wait(1) {
                match e.raw_os_error() {
                    Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN) => {}
                    _ => return Err(Error::Uring { what: "submit", source: e }),
                }
            }
            self.now_ms = self.started.elapsed().as_millis() as u64;
            completions.clear();
            completions.extend(
                self.ring
                    .completion()
                    .take(CQE_BATCH_COUNT)
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            for &(user_data, result, flags) in &completions {
                self.dispatch(user_data, result, flags);
            }
            self.rearm_starved();
            if self.draining_until.is_some() && self.slots.live() == 0 {
                self.counters.add_cache(self.files.counters());
                return Ok(self.counters);
            }
        }
    }

    fn dispatch(&mut self, user_data: u64, result: i32, flags: u32) {
        let Some(token) = Token::unpack(user_data) else {
            debug_assert!(false, "unknown user_data {user_data:#x}");
            return;
        };
        match token.op {
            Op::Accept => self.on_accept(result, flags),
            Op::Recv => self.on_recv(token, result, flags),
            Op::Send => {
                self.on_send(token, result);
                self.settle_current(token);
            }
            Op::Fill => {
                self.on_fill(token, result);
                self.settle_current(token);
            }
            Op::Close | Op::Cancel | Op::Shutdown => self.on_other(token),
            Op::Tick => self.on_tick(),
            Op::Wake => self.on_wake(result),
            Op::Reject => {}
        }
    }

    // ---- submissions -------------------------------------------------------------------

    fn arm_accept(&mut self) {
        // Direct accept (Linux 5.19): each socket goes straight into the ring's fixed-file
        // table and is never a process descriptor, so later operations skip the fd-table
        // lookup and refcounting (shared by all threads), and no descriptor number can be
        // reused under an operation in flight.
        let entry = opcode::AcceptMulti::new(types::Fd(self.listener.as_raw_fd()))
            .allocate_file_index(true)
            .build()
            .user_data(Token::worker(Op::Accept).pack());
        // SAFETY: multishot accept without a sockaddr carries no pointer.
        unsafe { ring::push(&mut self.ring, &entry) };
        self.accept_armed = true;
    }

    fn arm_tick(&mut self) {
        let entry = opcode::Timeout::new(&*self.tick_spec as *const types::Timespec)
            .build()
            .user_data(Token::worker(Op::Tick).pack());
        // SAFETY: the timespec is the worker's boxed `tick_spec`, which is never modified and
        // lives as long as the worker, longer than the ring (dropped first).
        unsafe { ring::push(&mut self.ring, &entry) };
    }

    fn arm_wake(&mut self) {
        let entry = opcode::Read::new(
            types::Fd(self.wake.as_raw_fd()),
            (&mut *self.wake_value as *mut u64).cast(),
            8,
        )
        .build()
        .user_data(Token::worker(Op::Wake).pack());
        // SAFETY: the target is the boxed `wake_value`, owned by the worker, which outlives the
        // ring; the eventfd is kept open by the `Arc` the worker holds.
        unsafe { ring::push(&mut self.ring, &entry) };
    }

    fn arm_recv(&mut self, index: u32) {
        let slot = self.slots.get(index);
        let token = Token { op: Op::Recv, generation: slot.generation, slot: index };
        let mut entry = opcode::RecvMulti::new(fixed(slot.fd), BUFFER_GROUP).build();
        if self.recv_limit {
            // No more than the input buffer can still take: then whatever the kernel receives
            // before we look fits in it, nothing is ever held, and once the input is full the
            // recv simply ends and TCP's window holds the client back.
            let room = INPUT_BUFFER_BYTES - slot.input_len as usize;
            entry = ring::with_total_limit(entry, room.max(RECV_BUFFER_BYTES) as u32);
        }
        let entry = entry.user_data(token.pack());
        slot.recv_armed = true;
        slot.recv_cancelling = false;
        // SAFETY: the recv names a buffer group, not a buffer: the kernel picks buffers from
        // `bufs`, which outlives the ring.
        unsafe { ring::push(&mut self.ring, &entry) };
    }

    /// Sends the slot's batch if one is ready and no send is in flight: its iovecs with one
    /// sendmsg, then a large body, if any, by splicing.
    fn flush(&mut self, index: u32) {
        let slot = self.slots.get(index);
        if slot.sending {
            return;
        }
        let Some(batch_index) = slot.batch else { return };
        let batch = self.batches.get(batch_index);
        if batch.is_empty() {
            batch.clear();
            self.batches.put(batch_index);
            slot.batch = None;
            return;
        }
        if batch.iovecs_sent() {
            self.splice_more(index);
            return;
        }
        let more = if batch.splice().is_some() { libc::MSG_MORE } else { 0 };
        let flags = (libc::MSG_NOSIGNAL | more) as u32;
        let token = Token { op: Op::Send, generation: slot.generation, slot: index };
        // One contiguous run (a small response with its body copied behind the head, or the
        // rest of a short send) goes by plain send: the kernel then copies no msghdr and
        // imports no iovec array.
        let entry = match batch.pending() {
            // A run over 4 GiB goes in parts: short sends resume where they stopped.
            [one] => {
                let len = one.iov_len.min(u32::MAX as usize) as u32;
                opcode::Send::new(fixed(slot.fd), one.iov_base.cast(), len)
                    .flags(flags as i32)
                    .build()
            }
            _ => opcode::SendMsg::new(fixed(slot.fd), batch.msghdr()).flags(flags).build(),
        }
        .user_data(token.pack());
        slot.sending = true;
        slot.splice_stage = SpliceStage::None;
        // SAFETY: the msghdr and its iovecs live inside the boxed batch, which stays assigned
        // to this slot (`slot.batch`) and unmodified until `on_send` reaps this send. The
        // iovecs (and a plain send's one buffer) point into the batch's own head area or into
        // the bytes of entries the batch holds an `Arc` to (batch.rs invariant).
        unsafe { ring::push(&mut self.ring, &entry) };
        self.slots.arm(index, Timer::Send, self.now + self.ticks.send);
    }

    /// Moves the next chunk of a large body: file -> pipe, or pipe -> socket while the pipe
    /// holds bytes. Without a free pipe, a body that has not started goes out by sendmsg.
    fn splice_more(&mut self, index: u32) {
        let slot = self.slots.get(index);
        let batch_index = slot.batch.expect("splicing needs a batch");
        if slot.pipe.is_none() {
            slot.pipe = self.pipes.take();
        }
        let Some(pipe_index) = slot.pipe else {
            if self.batches.get(batch_index).splice_to_iovec() {
                self.flush(index);
            } else {
                self.begin_close(index);
            }
            return;
        };
        let pipe = self.pipes.get(pipe_index);
        let body = *self.batches.get(batch_index).splice().expect("a body to splice");
        let slot = self.slots.get(index);
        let (entry, stage) = if slot.splice_stage == SpliceStage::WaitWritable {
            // The socket was full: wait until it takes more, in the ring, not in a kernel
            // worker thread.
            let poll = opcode::PollAdd::new(fixed(slot.fd), libc::POLLOUT as u32).build();
            (poll, SpliceStage::WaitWritable)
        } else if body.in_pipe > 0 {
            // Non-blocking: a full socket returns EAGAIN instead of parking a kernel worker
            // thread per slow reader (splice always runs in io-wq).
            let entry = opcode::Splice::new(
                types::Fd(pipe.read.as_raw_fd()),
                -1,
                fixed(slot.fd),
                -1,
                body.in_pipe as u32,
            )
            .flags(libc::SPLICE_F_NONBLOCK);
            (entry.build(), SpliceStage::ToSocket)
        } else {
            // File -> pipe linked to pipe -> socket: one submission, and the socket splice
            // starts when the fill completes, without a turn of our loop in between. The
            // fill's completion is skipped when it moves the whole chunk; a short or failed
            // fill posts its own completion and cancels the socket splice.
            let chunk = fill_bytes(&body, pipe);
            let fill = opcode::Splice::new(
                types::Fd(body.fd),
                body.offset as i64,
                types::Fd(pipe.write.as_raw_fd()),
                -1,
                chunk,
            )
            .build()
            .flags(squeue::Flags::IO_LINK | squeue::Flags::SKIP_SUCCESS)
            .user_data(Token { op: Op::Fill, generation: slot.generation, slot: index }.pack());
            let send = opcode::Splice::new(
                types::Fd(pipe.read.as_raw_fd()),
                -1,
                fixed(slot.fd),
                -1,
                chunk,
            )
            .flags(libc::SPLICE_F_NONBLOCK)
            .build()
            .user_data(Token { op: Op::Send, generation: slot.generation, slot: index }.pack());
            slot.sending = true;
            slot.splice_stage = SpliceStage::Linked;
            // SAFETY: splice carries descriptors, no pointers. The file stays open through
            // an entry the slot's batch holds; the pipe stays in the pool, assigned to
            // this slot, until the chain completes.
            unsafe { ring::push_chain(&mut self.ring, &[fill, send]) };
            self.slots.arm(index, Timer::Send, self.now + self.ticks.send);
            return;
        };
        let token = Token { op: Op::Send, generation: slot.generation, slot: index };
        slot.sending = true;
        slot.splice_stage = stage;
        // SAFETY: splice carries descriptors, no pointers. The file stays open through the
        // entry the slot's batch holds; the pipe stays in the pool, assigned to this slot,
        // until the splice completes.
        unsafe { ring::push(&mut self.ring, &entry.user_data(token.pack())) };
        self.slots.arm(index, Timer::Send, self.now + self.ticks.send);
    }

    fn push_slot_op(&mut self, index: u32, op: Op, entry: io_uring::squeue::Entry) {
        let slot = self.slots.get(index);
        let token = Token { op, generation: slot.generation, slot: index };
        slot.other_ops += 1;
        // SAFETY: close, shutdown and cancel entries carry no pointers.
        unsafe { ring::push(&mut self.ring, &entry.user_data(token.pack())) };
    }

    // ---- completions -------------------------------------------------------------------

    fn on_accept(&mut self, result: i32, flags: u32) {
        if !cqueue::more(flags) {
            self.accept_armed = false;
        }
        if result < 0 {
            if result != -libc::ECANCELED {
                self.counters.accept_errors += 1;
                // EMFILE/ENFILE/ENOMEM: retry on the next tick, not in a busy loop.
                self.accept_backoff = true;
            }
        } else {
            self.on_accepted(result);
        }
        if !self.accept_armed && !self.accept_backoff && self.draining_until.is_none() {
            self.arm_accept();
        }
    }

    fn on_accepted(&mut self, fd: RawFd) {
        let refuse = self.slots.live() >= self.max_connections || self.draining_until.is_some();
        let opened = if refuse { None } else { self.slots.open(fd) };
        match opened {
            Some(index) => {
                self.counters.accepted += 1;
                self.arm_recv(index);
                self.slots.arm(index, Timer::Header, self.now + self.ticks.header);
            }
            None => {
                self.counters.refused += 1;
                let entry = opcode::Close::new(fixed(fd))
                    .build()
                    .user_data(Token::worker(Op::Reject).pack());
                // SAFETY: close carries no pointer.
                unsafe { ring::push(&mut self.ring, &entry) };
            }
        }
    }

    fn on_recv(&mut self, token: Token, result: i32, flags: u32) {
        let buffer = cqueue::buffer_select(flags);
        let Some(slot) = self.slots.current(token.slot, token.generation) else {
            if let Some(bid) = buffer {
                self.bufs.give_back(bid);
            }
            return;
        };
        if !cqueue::more(flags) {
            slot.recv_armed = false;
        }
        let phase = slot.phase;
        match (result, buffer) {
            (n, Some(bid)) if n > 0 => match phase {
                Phase::Open => self.on_data(token.slot, bid, n as usize),
                Phase::Lingering | Phase::Closing | Phase::Free => self.bufs.give_back(bid),
            },
            (0, _) => self.on_eof(token.slot),
            (e, _) if e == -libc::ENOBUFS => {
                // The buffer ring ran dry. Re-arming now would fail the same way, in a loop:
                // wait for the end of this turn, when the buffers in hand are back.
                self.counters.enobufs += 1;
                let slot = self.slots.get(token.slot);
                if !slot.starved {
                    slot.starved = true;
                    self.starved.push((token.slot, token.generation));
                }
            }
            (e, _) if e == -libc::ECANCELED => {}
            // A kernel older than 6.17 refuses the byte limit: re-arm without it (below);
            // the held-buffer caps in `absorb` bound what a connection takes instead.
            (e, _) if e == -libc::EINVAL && self.recv_limit => self.recv_limit = false,
            _ => self.begin_close(token.slot),
        }
        self.settle_recv(token.slot);
        self.finish_close(token.slot);
    }

    /// Arms the connection's recv if it wants one and has none. The one place that decides,
    /// called after every completion that concerns the connection (recv, send, fill, cancel,
    /// shutdown), so no order of completions can leave a connection that should receive with
    /// no recv armed.
    fn settle_recv(&mut self, index: u32) {
        let slot = self.slots.get(index);
        if slot.recv_armed || slot.eof || slot.starved {
            return;
        }
        let wants = match slot.phase {
            // Not while its input is backed up behind unsent responses: then TCP's window
            // holds the client back, not our memory.
            Phase::Open => {
                !slot.session.closing
                    && slot.held_head == NO_BUFFER
                    && slot.input_len as usize <= INPUT_BUFFER_BYTES / 2
            }
            Phase::Lingering => true,
            Phase::Closing | Phase::Free => false,
        };
        if wants {
            self.arm_recv(index);
        }
    }

    /// Re-arms the receives that ran out of buffers during this turn: their buffers have been
    /// given back by now, and are published before the next submission.
    fn rearm_starved(&mut self) {
        if self.starved.is_empty() {
            return;
        }
        std::mem::swap(&mut self.starved, &mut self.starved_spare);
        let mut waiting = std::mem::take(&mut self.starved_spare);
        for &(index, generation) in &waiting {
            if let Some(slot) = self.slots.current(index, generation) {
                slot.starved = false;
                self.settle_recv(index);
            }
        }
        waiting.clear();
        self.starved_spare = waiting;
    }

    /// The client closed its sending side: answer every complete request it sent (the last
    /// one with `Connection: close`), then close.
    fn on_eof(&mut self, index: u32) {
        let slot = self.slots.get(index);
        slot.eof = true; // nothing more will come: never re-arm
        slot.session.peer_closed = true;
        match slot.phase {
            Phase::Open => {
                self.drain_input(index);
                self.after_progress(index);
            }
            Phase::Lingering => self.begin_close(index),
            Phase::Closing | Phase::Free => {}
        }
    }

    fn on_data(&mut self, index: u32, bid: u16, len: usize) {
        let slot = self.slots.get(index);
        let next_in_stream = slot.input.is_none() && slot.held_head == NO_BUFFER;
        // Request-body bytes next in the stream are dropped on arrival, even while a send is
        // in flight: a large upload never fills the input or holds receive buffers.
        let mut from = 0;
        if next_in_stream && slot.session.skip_bytes > 0 {
            let skip = slot.session.skip_bytes.min(len as u64);
            slot.session.skip_bytes -= skip;
            from = skip as usize;
            if from == len {
                self.bufs.give_back(bid);
                self.after_progress(index);
                return;
            }
        }
        if next_in_stream && !slot.sending {
            let data = &self.bufs.data(bid, len)[from..];
            let env = Env {
                date: &self.date,
                limits: &self.limits,
                keepalive_requests: self.keepalive_requests,
                now_ms: self.now_ms,
            };
            let slot = self.slots.get(index);
            let consumed = serve_all(slot, data, &mut self.batches, &mut self.files, &env);
            if consumed < data.len() {
                let input_index = self.inputs.take();
                let input = self.inputs.get(input_index);
                let rest = &data[consumed..];
                input[..rest.len()].copy_from_slice(rest);
                let slot = self.slots.get(index);
                slot.input = Some(input_index);
                slot.input_len = rest.len() as u32;
            }
            self.bufs.give_back(bid);
        } else {
            self.absorb(index, bid, from, len);
            self.drain_input(index);
        }
        self.after_progress(index);
    }

    /// Copies received bytes behind the slot's pending input; when the input buffer is full
    /// (the client pipelines faster than it reads responses), holds the receive buffer and
    /// stops receiving until the backlog drains. Completions already in the CQ when the recv
    /// is cancelled are held too, in arrival order: no byte is dropped.
    fn absorb(&mut self, index: u32, bid: u16, from: usize, len: usize) {
        let slot = self.slots.get(index);
        let input_len = slot.input_len as usize;
        if slot.held_head != NO_BUFFER || input_len + len - from > INPUT_BUFFER_BYTES {
            if slot.held_count >= HELD_BUFFERS_PER_CONNECTION_MAX
                || self.held_total >= HELD_BUFFERS_TOTAL_MAX
            {
                // More than the receive window lets through after a cancel: never let one
                // client take the buffers everyone else needs.
                self.counters.overruns += 1;
                self.bufs.give_back(bid);
                self.begin_close(index);
                return;
            }
            slot.held_count += 1;
            self.held_total += 1;
            self.held_next[usize::from(bid)] = NO_BUFFER;
            self.held_len[usize::from(bid)] = len as u32;
            self.held_from[usize::from(bid)] = from as u16;
            if slot.held_tail == NO_BUFFER {
                slot.held_head = bid;
            } else {
                self.held_next[usize::from(slot.held_tail)] = bid;
            }
            slot.held_tail = bid;
            let cancel = slot.recv_armed && !slot.recv_cancelling;
            if cancel {
                slot.recv_cancelling = true;
                let recv = Token { op: Op::Recv, generation: slot.generation, slot: index };
                self.push_slot_op(index, Op::Cancel, opcode::AsyncCancel::new(recv.pack()).build());
            }
            return;
        }
        self.copy_to_input(index, bid, from, len);
    }

    /// Appends a receive buffer's bytes to the slot's input (the caller checked the room) and
    /// gives the buffer back.
    fn copy_to_input(&mut self, index: u32, bid: u16, from: usize, len: usize) {
        let slot = self.slots.get(index);
        let input_len = slot.input_len as usize;
        let data = &self.bufs.data(bid, len)[from..];
        debug_assert!(input_len + data.len() <= INPUT_BUFFER_BYTES);
        let input_index = *slot.input.get_or_insert_with(|| self.inputs.take());
        slot.input_len += data.len() as u32;
        self.inputs.get(input_index)[input_len..input_len + data.len()].copy_from_slice(data);
        self.bufs.give_back(bid);
    }

    /// Removes the first held buffer if it fits behind the pending input.
    fn pop_held_if_fits(&mut self, index: u32) -> Option<(u16, usize, usize)> {
        let slot = self.slots.get(index);
        let bid = slot.held_head;
        if bid == NO_BUFFER {
            return None;
        }
        let len = self.held_len[usize::from(bid)] as usize;
        let from = usize::from(self.held_from[usize::from(bid)]);
        if slot.input_len as usize + len - from > INPUT_BUFFER_BYTES {
            return None;
        }
        slot.held_head = self.held_next[usize::from(bid)];
        if slot.held_head == NO_BUFFER {
            slot.held_tail = NO_BUFFER;
        }
        slot.held_count -= 1;
        self.held_total -= 1;
        Some((bid, from, len))
    }

    /// Serves from the input buffer until it is empty, the batch is full, or a send is needed.
    fn drain_input(&mut self, index: u32) {
        loop {
            let slot = self.slots.get(index);
            if slot.sending || slot.phase != Phase::Open {
                return;
            }
            if let Some(input_index) = slot.input {
                let len = slot.input_len as usize;
                let input = self.inputs.get(input_index);
                let env = Env {
                    date: &self.date,
                    limits: &self.limits,
                    keepalive_requests: self.keepalive_requests,
                    now_ms: self.now_ms,
                };
                let slot = self.slots.get(index);
                let consumed =
                    serve_all(slot, &input[..len], &mut self.batches, &mut self.files, &env);
                input.copy_within(consumed..len, 0);
                let slot = self.slots.get(index);
                slot.input_len = (len - consumed) as u32;
                if slot.input_len == 0 {
                    slot.input = None;
                    self.inputs.put(input_index);
                }
            }
            // Move held buffers into the input; if none fits, a send must drain it first.
            let Some((bid, from, len)) = self.pop_held_if_fits(index) else { return };
            self.copy_to_input(index, bid, from, len);
            while let Some((bid, from, len)) = self.pop_held_if_fits(index) {
                self.copy_to_input(index, bid, from, len);
            }
        }
    }

    /// After handling input or a send: send what is queued, resume receiving, pick the timer.
    fn after_progress(&mut self, index: u32) {
        self.flush(index);
        let slot = self.slots.get(index);
        if slot.phase != Phase::Open {
            return;
        }
        if slot.sending {
            return; // flush armed the send timer
        }
        if slot.eof {
            // Everything the client sent is answered and sent; what is left is at most part
            // of a request that can never complete.
            self.begin_close(index);
            return;
        }
        // The header timer runs from a head's first byte and is never extended (slow
        // headers); the idle timer is, by every byte of a request body being skipped.
        let timer = if slot.input.is_some() { Timer::Header } else { Timer::Idle };
        let body_arriving = timer == Timer::Idle && slot.session.skip_bytes > 0;
        if slot.timer != timer || body_arriving {
            let ticks = if timer == Timer::Header { self.ticks.header } else { self.ticks.idle };
            self.slots.arm(index, timer, self.now + ticks);
        }
    }

    fn on_send(&mut self, token: Token, result: i32) {
        let Some(slot) = self.slots.current(token.slot, token.generation) else {
            debug_assert!(false, "a slot is never released with a send in flight");
            return;
        };
        slot.sending = false;
        let mut stage = std::mem::replace(&mut slot.splice_stage, SpliceStage::None);
        let batch_index = slot.batch.expect("a send in flight has a batch");
        let phase = slot.phase;
        if stage == SpliceStage::Linked {
            // The fill moved its whole chunk (else its own completion would have come and
            // this one would not); account for it, then for the socket splice. Neither the
            // body's counts nor the pipe changed while the chain was in flight, so the chunk is
            // the one `splice_more` asked for.
            let pipe = self.pipes.get(slot.pipe.expect("a linked splice holds a pipe"));
            let body = self.batches.get(batch_index).splice().expect("a linked splice's body");
            let chunk = u64::from(fill_bytes(body, pipe));
            body.offset += chunk;
            body.to_pipe -= chunk;
            body.in_pipe += chunk;
            stage = SpliceStage::ToSocket;
        }
        // A full socket: poll for room, then splice again.
        if stage == SpliceStage::ToSocket && result == -libc::EAGAIN && phase == Phase::Open {
            self.slots.get(token.slot).splice_stage = SpliceStage::WaitWritable;
            self.splice_more(token.slot);
            return;
        }
        // A splice moving 0 bytes means the file shrank under us (or the peer is gone).
        let failed = result < 0
            || (result == 0 && matches!(stage, SpliceStage::ToPipe | SpliceStage::ToSocket));
        if phase != Phase::Open || failed {
            self.release_pipe(token.slot, false);
            self.release_batch(token.slot);
            if phase == Phase::Open {
                self.begin_close(token.slot); // EPIPE, ECONNRESET, EFAULT...
            }
            self.finish_close(token.slot);
            return;
        }
        let batch = self.batches.get(batch_index);
        let done = match (stage, batch.splice()) {
            (SpliceStage::None, _) => batch.advance(result as usize) && batch.is_empty(),
            (SpliceStage::ToPipe, Some(body)) => {
                body.offset += result as u64;
                body.to_pipe -= result as u64;
                body.in_pipe += result as u64;
                false
            }
            (SpliceStage::ToSocket, Some(body)) => {
                body.in_pipe -= result as u64;
                body.to_pipe == 0 && body.in_pipe == 0
            }
            (SpliceStage::WaitWritable, Some(_)) => false, // writable again: splice on
            (SpliceStage::Linked, _) => unreachable!("a linked splice is accounted above"),
            (_, None) => unreachable!("a splice completion without a spliced body"),
        };
        if !done {
            self.flush(token.slot); // short send, or the next splice step
            return;
        }
        self.counters.sends += 1;
        self.release_pipe(token.slot, true);
        self.release_batch(token.slot);
        if self.slots.get(token.slot).session.closing {
            self.begin_linger(token.slot);
            return;
        }
        self.drain_input(token.slot);
        self.after_progress(token.slot);
    }

    /// A linked fill moved less than its chunk or failed; the socket splice behind it was
    /// cancelled without a completion of its own.
    fn on_fill(&mut self, token: Token, result: i32) {
        let Some(slot) = self.slots.current(token.slot, token.generation) else {
            debug_assert!(false, "a slot is never released with a splice in flight");
            return;
        };
        debug_assert_eq!(slot.splice_stage, SpliceStage::Linked);
        // Reported as the pipe step alone: a short fill continues from where it stopped, an
        // empty or failed one (the file shrank) ends the connection.
        slot.splice_stage = SpliceStage::ToPipe;
        self.on_send(Token { op: Op::Send, ..token }, result);
    }

    /// Takes the slot's pipe back. Only a pipe whose body was sent completely (`drained`) is
    /// reused; after an error or a close a splice may have moved bytes we never accounted for
    /// (a cancelled or failed step), so the pipe is closed rather than risk sending them to
    /// the next client.
    fn release_pipe(&mut self, index: u32, drained: bool) {
        if let Some(pipe_index) = self.slots.get(index).pipe.take() {
            self.pipes.put(pipe_index, drained);
        }
    }

    fn release_batch(&mut self, index: u32) {
        if let Some(batch_index) = self.slots.get(index).batch.take() {
            self.batches.get(batch_index).clear();
            self.batches.put(batch_index);
        }
    }

    fn on_other(&mut self, token: Token) {
        let Some(slot) = self.slots.current(token.slot, token.generation) else {
            debug_assert!(false, "a slot is never released with an operation in flight");
            return;
        };
        slot.other_ops -= 1;
        self.settle_recv(token.slot);
        self.finish_close(token.slot);
    }

    /// `settle_recv` for the connection a completion was for, if it is still open.
    fn settle_current(&mut self, token: Token) {
        if self.slots.current(token.slot, token.generation).is_some() {
            self.settle_recv(token.slot);
        }
    }

    // ---- closing -----------------------------------------------------------------------

    /// After the last response: half-close and read until the client closes, so it receives
    /// the response rather than a reset caused by unread bytes.
    fn begin_linger(&mut self, index: u32) {
        let slot = self.slots.get(index);
        if slot.eof || slot.phase != Phase::Open {
            self.begin_close(index);
            return;
        }
        slot.phase = Phase::Lingering;
        let fd = slot.fd;
        self.drop_input(index);
        // Receiving may have been stopped (input full): drain and discard what is left. A
        // recv still being cancelled is re-armed when its last completion arrives.
        self.settle_recv(index);
        self.push_slot_op(
            index,
            Op::Shutdown,
            opcode::Shutdown::new(fixed(fd), libc::SHUT_WR).build(),
        );
        self.slots.arm(index, Timer::Linger, self.now + self.ticks.linger);
    }

    /// Starts closing: cancel what is in flight, close the socket once it all completed.
    fn begin_close(&mut self, index: u32) {
        let slot = self.slots.get(index);
        if slot.phase == Phase::Closing || slot.phase == Phase::Free {
            return;
        }
        slot.phase = Phase::Closing;
        let generation = slot.generation;
        let (recv_armed, sending) = (slot.recv_armed, slot.sending);
        self.slots.disarm(index);
        self.drop_input(index);
        if recv_armed {
            let recv = Token { op: Op::Recv, generation, slot: index };
            self.push_slot_op(index, Op::Cancel, opcode::AsyncCancel::new(recv.pack()).build());
        }
        if sending {
            let send = Token { op: Op::Send, generation, slot: index };
            self.push_slot_op(index, Op::Cancel, opcode::AsyncCancel::new(send.pack()).build());
        } else {
            self.release_pipe(index, false);
            self.release_batch(index);
        }
        self.finish_close(index);
    }

    fn drop_input(&mut self, index: u32) {
        let slot = self.slots.get(index);
        if let Some(input_index) = slot.input.take() {
            slot.input_len = 0;
            self.inputs.put(input_index);
        }
        loop {
            let slot = self.slots.get(index);
            let bid = slot.held_head;
            if bid == NO_BUFFER {
                break;
            }
            slot.held_head = self.held_next[usize::from(bid)];
            if slot.held_head == NO_BUFFER {
                slot.held_tail = NO_BUFFER;
            }
            slot.held_count -= 1;
            self.held_total -= 1;
            self.bufs.give_back(bid);
        }
    }

    /// Submits the close once nothing else is in flight; frees the slot once it completed.
    fn finish_close(&mut self, index: u32) {
        let slot = self.slots.get(index);
        if slot.phase != Phase::Closing || slot.recv_armed || slot.sending {
            return;
        }
        // Shutdown runs asynchronously in the kernel and names the socket by descriptor
        // number: closing before it completed could let it hit a new connection that reused
        // the number. So the close waits for every other operation.
        if !slot.close_submitted && slot.other_ops == 0 {
            slot.close_submitted = true;
            let fd = slot.fd;
            self.push_slot_op(index, Op::Close, opcode::Close::new(fixed(fd)).build());
            return;
        }
        if slot.close_submitted && slot.other_ops == 0 {
            self.slots.release(index);
        }
    }

    // ---- time and shutdown -------------------------------------------------------------

    fn on_tick(&mut self) {
        self.now = self.started.elapsed().as_millis() as u64 / TICK_MILLIS;
        self.date.refresh(SystemTime::now());
        self.expire_timers();
        let freed = self.inputs.trim() + self.batches.trim();
        self.pipes.trim();
        if freed > 0 {
            // Freed pool buffers stay in the allocator's heap; hand them back to the kernel
            // so the resident size returns to its idle level after a burst.
            // SAFETY: malloc_trim only releases free heap memory; no pointer is involved.
            unsafe { libc::malloc_trim(0) };
        }
        if self.accept_backoff && self.draining_until.is_none() {
            self.accept_backoff = false;
            if !self.accept_armed {
                self.arm_accept();
            }
        }
        if let Some(until) = self.draining_until {
            if self.now >= until {
                let live: Vec<u32> = self.slots.in_use().collect();
                for index in live {
                    self.begin_close(index);
                }
            }
        }
        self.arm_tick();
    }

    fn expire_timers(&mut self) {
        while let Some(index) = self.slots.pop_expired(Timer::Header, self.now) {
            if self.slots.get(index).input.is_some() {
                self.respond_timeout(index);
            } else {
                self.begin_close(index);
            }
        }
        for timer in [Timer::Idle, Timer::Send, Timer::Linger] {
            while let Some(index) = self.slots.pop_expired(timer, self.now) {
                self.begin_close(index);
            }
        }
    }

    /// 408 for a client that did not finish its request head in time, then close.
    fn respond_timeout(&mut self, index: u32) {
        self.drop_input(index);
        let slot = self.slots.get(index);
        if slot.sending || slot.phase != Phase::Open {
            self.begin_close(index);
            return;
        }
        let batch_index = *slot.batch.get_or_insert_with(|| self.batches.take());
        slot.session.closing = true;
        let batch = self.batches.get(batch_index);
        let status = Status::RequestTimeout;
        if serve::push_error(batch, &self.date, status, false, false, Version::Http11).is_err() {
            self.begin_close(index);
            return;
        }
        self.flush(index);
    }

    fn on_wake(&mut self, result: i32) {
        if result < 0 && result != -libc::ECANCELED {
            self.arm_wake();
            return;
        }
        if self.draining_until.is_some() {
            return;
        }
        self.draining_until = Some(self.now + self.ticks.shutdown);
        if self.accept_armed {
            let accept = Token::worker(Op::Accept).pack();
            let entry = opcode::AsyncCancel::new(accept)
                .build()
                .user_data(Token::worker(Op::Reject).pack());
            // SAFETY: cancel carries no pointer.
            unsafe { ring::push(&mut self.ring, &entry) };
        }
        let live: Vec<u32> = self.slots.in_use().collect();
        for index in live {
            let slot = self.slots.get(index);
            if slot.phase == Phase::Open && !slot.sending {
                self.begin_close(index);
            } else {
                slot.session.closing = true;
            }
        }
    }
}

/// Bytes a splice pipe can hold, and so the most one linked file -> pipe -> socket step moves.
/// Measured on loopback under the BBR congestion control (1 MiB file, 100 connections): 64 KiB
/// 8.9k req/s, 128 KiB 11.3k, 256 KiB 14.3k, 512 KiB 9.5k, 1 MiB 3.6k. A larger step queues
/// more than BBR's pacing lets out at once and the connection is paced by timer; 256 KiB is
/// also what lighttpd writes per sendfile call. The kernel may grant less (fs.pipe-max-size);
/// the pipe's real capacity is used.
const PIPE_BYTES: i32 = 256 * 1024;

/// Pipes per worker at most: each is two descriptors; a connection without one sends its
/// large body with sendmsg from the mapping instead.
const PIPES_MAX: usize = 256;

/// A pipe for splicing large bodies.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: u32,
}

impl Pipe {
    fn new() -> Option<Pipe> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into the local array; checked below.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return None;
        }
        // SAFETY: both descriptors are fresh and owned by nothing else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let fd = write.as_raw_fd();
        // SAFETY: fcntl on a descriptor we own; failure leaves the default size, read next.
        let size = match unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, PIPE_BYTES) } {
            size if size > 0 => size,
            // SAFETY: as above.
            _ => unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) },
        };
        Some(Pipe { read, write, capacity: size.max(4096) as u32 })
    }
}

/// The worker's pipes, created on first need, reused, and closed when a whole tick passed
/// without needing them (like the buffer pools), so a burst does not hold descriptors forever.
#[derive(Default)]
struct Pipes {
    pipes: Vec<Option<Pipe>>,
    free: Vec<u32>,
    /// Fewest free pipes seen since the last trim.
    free_low_water: usize,
}

impl Pipes {
    fn take(&mut self) -> Option<u32> {
        if let Some(index) = self.free.pop() {
            self.free_low_water = self.free_low_water.min(self.free.len());
            return Some(index);
        }
        self.free_low_water = 0;
        let slot = self.pipes.iter().position(Option::is_none);
        if slot.is_none() && self.pipes.len() >= PIPES_MAX {
            return None;
        }
        let pipe = Pipe::new()?;
        let index = slot.unwrap_or_else(|| {
            self.pipes.push(None);
            self.pipes.len() - 1
        });
        self.pipes[index] = Some(pipe);
        Some(index as u32)
    }

    fn get(&self, index: u32) -> &Pipe {
        self.pipes[index as usize].as_ref().expect("a taken pipe exists")
    }

    /// Closes the pipes that stayed free since the last call.
    fn trim(&mut self) {
        for _ in 0..self.free_low_water {
            if let Some(index) = self.free.pop() {
                self.pipes[index as usize] = None;
            }
        }
        self.free_low_water = self.free.len();
    }

    /// Returns a pipe; one with bytes left in it is closed instead of reused.
    fn put(&mut self, index: u32, clean: bool) {
        if clean {
            self.free.push(index);
        } else {
            self.pipes[index as usize] = None;
        }
    }
}

/// Bytes one linked step moves from the file into the pipe: the rest of the body, at most a
/// pipe-full.
fn fill_bytes(body: &crate::batch::SpliceBody, pipe: &Pipe) -> u32 {
    body.to_pipe.min(u64::from(pipe.capacity)) as u32
}

/// The soft RLIMIT_NOFILE (the start-up code raised it to the hard limit).
fn nofile_limit() -> u32 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the local struct only.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    u32::try_from(limit.rlim_cur).unwrap_or(u32::MAX)
}

/// The ring's fixed-file slot of a connection (`Slot::fd` holds the direct descriptor index).
fn fixed(fd: RawFd) -> types::Fixed {
    types::Fixed(fd as u32)
}

/// What serving needs from the worker besides the connection, the batches and the cache.
struct Env<'a> {
    date: &'a DateCache,
    limits: &'a ParseLimits,
    keepalive_requests: u32,
    now_ms: u64,
}

/// Serves what `input` holds into the slot's batch (taken from the pool if it has none);
/// returns the bytes used. A request for a path the cache does not know (or must re-check) is
/// filled in place, then serving goes on.
fn serve_all(
    slot: &mut Slot,
    input: &[u8],
    batches: &mut Pool<Batch>,
    files: &mut FileCache,
    env: &Env<'_>,
) -> usize {
    let batch_index = *slot.batch.get_or_insert_with(|| batches.take());
    let mut used = 0;
    loop {
        let shared = Shared {
            files,
            now_ms: env.now_ms,
            date: env.date,
            limits: env.limits,
            keepalive_requests: env.keepalive_requests,
        };
        let served = slot.session.serve_all(&input[used..], &shared, batches.get(batch_index));
        used += served.used;
        if !served.miss {
            return used;
        }
        let mut key: KeyBuffer = [0; std::mem::size_of::<KeyBuffer>()];
        match serve::miss_key(&input[used..], env.limits, &mut key) {
            Some(key) => files.fill(key, env.now_ms),
            None => return used, // cannot happen: the miss was for a complete request
        }
    }
}
