//! The io_uring engine: one worker per thread, each with its own ring, listeners, provided
//! receive buffers, connection slots and pools. Every socket operation (accept, recv, send,
//! shutdown, close) goes through the ring; the only syscall in steady state is the one
//! `io_uring_enter` per loop turn that submits new work and waits for completions.
//!
//! A turn: publish returned receive buffers, submit and wait, copy a batch of completions out
//! of the CQ, then dispatch each (reaping is separate from handling, so handlers may push new
//! entries freely).

pub mod buf_ring;
mod close;
mod lister;
mod lookup;
mod observe;
pub mod pool;
mod receive;
pub mod ring;
mod send;
pub mod slots;
pub mod token;

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Instant;

use io_uring::{opcode, types, IoUring};

use crate::batch::Batch;
use crate::config::Config;
use crate::files::FileCache;
use crate::limits::{
    CQE_BATCH_COUNT, INPUT_BUFFER_BYTES, RECV_BUFFER_BYTES, RECV_BUFFER_COUNT, TICK_MILLIS,
};
use crate::observe::access_log::PeerText;
use crate::observe::log_sink::LogSink;
use crate::observe::stats::Counters;
use crate::observe::Recorder;
use crate::serve::Serving;
use crate::timers::Ticks;
use crate::Error;

use buf_ring::BufRing;
use lookup::Lookups;
use pool::Pool;

use slots::{Slots, NO_BUFFER};
use token::{Op, Token};

/// Kernel worker threads (bounded and unbounded each) per ring: io-wq serves only what cannot
/// complete inline, the file cache's cold opens and reads and the access log's writes. The cap
/// keeps a burst of cold misses from spawning a thread each.
const IOWQ_WORKERS_MAX: u32 = 64;

/// Direct descriptors reserved beyond the connection limit, so connections over the limit can
/// still be accepted and closed at once instead of waiting in the backlog.
const REFUSED_IN_FLIGHT_MAX: u32 = 64;

/// An input buffer: bytes received and not yet answered.
type Input = [u8; INPUT_BUFFER_BYTES];

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
    /// Whether the kernel installs process descriptors for direct ones (Linux 6.8); cleared
    /// at the first EINVAL, after which file bodies go from their mapping.
    fd_install: bool,
    /// The sockets this worker accepts on, one per `--addr` (a completion's token names its
    /// listener by index, so each is re-armed on its own).
    listeners: Vec<Listening>,
    wake: Arc<OwnedFd>,
    /// Target of the eventfd read; boxed so its address is fixed while the read is in flight.
    wake_value: Box<u64>,
    /// The tick timeout's timespec; boxed for the same reason.
    tick_spec: Box<types::Timespec>,
    /// This worker's file cache: hits need no system call; misses are filled through the
    /// ring (`lookups`) while their connections wait.
    files: FileCache,
    /// Target of the inotify event reads (`lookup::arm_watch`); boxed so its address is fixed
    /// while a read is in flight.
    watch_buf: Box<[u8]>,
    /// Fills in flight and the connections waiting for them. Declared after `ring`: dropped
    /// after it, and the worker never exits while a fill runs.
    lookups: Lookups,
    /// Milliseconds since the worker started, read once per loop turn: the cache's clock.
    now_ms: u64,
    /// The Date header, parse limits and keep-alive limit every request is served with.
    serving: Serving,
    ticks: Ticks,
    max_connections: u32,
    started: Instant,
    now: u64,
    /// The kernel bounds each multishot recv by bytes (`ring::with_total_limit`, 6.17+);
    /// cleared the first time it refuses that with EINVAL.
    recv_limit: bool,
    /// Tick by which a graceful shutdown gives up on in-flight responses.
    draining_until: Option<u64>,
    /// Counters and gauges.
    recorder: Recorder,
    /// The access log, if one is written.
    log: Option<LogSink>,
    /// The same clock as `now_ms`, in microseconds: response latencies.
    now_micros: u64,
    /// With an access log: each slot's client address (as text), and where the kernel
    /// writes it (getsockopt SO_PEERNAME, `observe.rs`). Empty without a log.
    peers: Box<[PeerText]>,
    peer_addrs: Box<[libc::sockaddr_in6]>,
    /// The thread that lists directories for fills (with `--autoindex`).
    lister: Option<lister::Lister>,
}

/// One listening socket of a worker and the state of its multishot accept.
struct Listening {
    fd: OwnedFd,
    /// Bytes of the listener's address family's sockaddr (what SO_PEERNAME fills for the
    /// connections it accepts): an IPv6 socket's clients have a `sockaddr_in6`, also when
    /// they are IPv4 clients of a dual-stack socket systemd passed (mapped addresses).
    peer_addr_len: u32,
    /// A multishot accept is in flight.
    armed: bool,
    /// Accepting failed (out of descriptors); re-armed on the next tick.
    backoff: bool,
}

impl Worker {
    /// Sets up the ring and buffers on the calling thread, which must be the one that runs it.
    pub fn new(
        config: &Config,
        listeners: Vec<(OwnedFd, std::net::SocketAddr)>,
        wake: Arc<OwnedFd>,
        files: FileCache,
        recorder: Recorder,
        log: Option<LogSink>,
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
        let _ =
            ring.submitter().register_iowq_max_workers(&mut [IOWQ_WORKERS_MAX, IOWQ_WORKERS_MAX]);
        let peers = if log.is_some() { config.max_connections as usize } else { 0 };
        // SAFETY: sockaddr_in6 is a plain C struct; all-zero bytes are a valid value.
        let zero_addr: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        let listeners = listeners
            .into_iter()
            .map(|(fd, addr)| Listening {
                fd,
                peer_addr_len: if addr.is_ipv4() {
                    std::mem::size_of::<libc::sockaddr_in>()
                } else {
                    std::mem::size_of::<libc::sockaddr_in6>()
                } as u32,
                armed: false,
                backoff: false,
            })
            .collect();
        let lister = if config.site.autoindex {
            Some(
                lister::Lister::start(config.root.clone())
                    .map_err(|source| Error::Os { what: "start the lister thread", source })?,
            )
        } else {
            None
        };
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
            fd_install: true,
            listeners,
            wake,
            wake_value: Box::new(0),
            tick_spec: Box::new(types::Timespec::new().nsec((TICK_MILLIS * 1_000_000) as u32)),
            files,
            lookups: Lookups::default(),
            watch_buf: vec![0u8; crate::files::EVENTS_BUFFER_BYTES].into_boxed_slice(),
            now_ms: 0,
            serving: Serving::new(config),
            ticks: Ticks::new(config),
            max_connections,
            started: Instant::now(),
            now: 0,
            // The environment switch exercises the pre-6.17 path (held-buffer caps) in tests.
            recv_limit: std::env::var_os("RINGSERVE_NO_RECV_LIMIT").is_none(),
            draining_until: None,
            recorder,
            log,
            now_micros: 0,
            peers: vec![PeerText::default(); peers].into_boxed_slice(),
            peer_addrs: vec![zero_addr; peers].into_boxed_slice(),
            lister,
        })
    }

    /// Runs until a shutdown is requested and every connection is closed.
    pub fn run(mut self) -> Result<Counters, Error> {
        for listener in 0..self.listeners.len() {
            self.arm_accept(listener);
        }
        self.arm_tick();
        self.arm_wake();
        self.arm_watch();
        self.arm_lister();
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
            self.now_micros = self.started.elapsed().as_micros() as u64;
            self.now_ms = self.now_micros / 1000;
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
            let draining = self.draining_until.is_some();
            self.flush_log(draining);
            self.publish();
            if draining && self.slots.live() == 0 && self.lookups.is_idle() && self.log_idle() {
                return Ok(self.recorder.stats.snapshot());
            }
        }
    }

    fn dispatch(&mut self, user_data: u64, result: i32, flags: u32) {
        let Some(token) = Token::unpack(user_data) else {
            debug_assert!(false, "unknown user_data {user_data:#x}");
            return;
        };
        match token.op {
            Op::Accept => self.on_accept(token.slot as usize, result, flags),
            Op::Recv => self.on_recv(token, result, flags),
            Op::Send => {
                self.on_send(token, result);
                self.settle_current(token);
            }
            Op::Lookup => self.on_lookup(token, result),
            Op::Watch => self.on_watch(result),
            Op::WatchPoll => self.arm_watch(),
            Op::Close | Op::Cancel | Op::Shutdown => self.on_other(token),
            Op::Tick => {
                self.on_tick();
                self.flush_log(true);
            }
            Op::Peer => self.on_peer(token, result),
            Op::LogWrite => self.on_log_written(result),
            Op::Listed => self.on_listed(result),
            Op::Wake => self.on_wake(result),
            Op::Reject => {}
        }
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

    fn push_slot_op(&mut self, index: u32, op: Op, entry: io_uring::squeue::Entry) {
        let slot = self.slots.get(index);
        let token = Token { op, generation: slot.generation, slot: index };
        slot.other_ops += 1;
        // SAFETY: close, shutdown and cancel entries carry no pointers.
        unsafe { ring::push(&mut self.ring, &entry.user_data(token.pack())) };
    }
}

/// The soft RLIMIT_NOFILE (the start-up code raised it to the hard limit).
pub(crate) fn nofile_limit() -> u32 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the local struct only.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    u32::try_from(limit.rlim_cur).unwrap_or(u32::MAX)
}

/// The ring's fixed-file slot of a connection (`Slot::fd` holds the direct descriptor index).
pub(super) fn fixed(fd: RawFd) -> types::Fixed {
    types::Fixed(fd as u32)
}
