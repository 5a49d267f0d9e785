//! The load itself: one thread per core, each with its own epoll loop and its share of the
//! connections. Request bytes are built once; responses are parsed in place; each thread
//! records into its own histograms; nothing is allocated per request.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::config::{unix_ms, Config};
use crate::http::{build_request, Event, Finished, Parser};
use crate::report::Report;
use crate::stats::{self, Stats};

/// Receive buffer per connection: holds any response head; bodies stream through it.
pub const RECV_BUFFER_BYTES: usize = 16 * 1024;

/// Largest single discard of body bytes (recv with MSG_TRUNC). The kernel never writes to the
/// buffer (TCP drops truncated bytes without copying them), so this is address space only:
/// the allocation is never touched and costs no memory.
const DISCARD_BYTES: usize = 4 * 1024 * 1024;

/// Bodies at least this large make the next head on that connection be read through a small
/// window, so that only a little of the following body is copied before the rest is discarded.
const LARGE_BODY_BYTES: u64 = 4 * 1024;

/// The read window for a head on a connection that sees large bodies: a whole head from any
/// common server; a larger head is read in further windows.
const HEAD_WINDOW_BYTES: usize = 1024;

/// Events taken from epoll per wait.
const EVENTS_PER_WAIT: usize = 256;

/// How often timeouts are checked and progress is published.
const HOUSEKEEPING_NS: u64 = 100_000_000;

/// Pause before reconnecting after a failed connection attempt, so a refusing server does not
/// turn the load generator into a busy loop.
const RECONNECT_BACKOFF_NS: u64 = 10_000_000;

/// epoll token of the coordinated start's eventfd (connections use their index).
const GO_TOKEN: u64 = u32::MAX as u64;

/// State shared by the threads and the progress printer.
struct Shared {
    stop: AtomicBool,
    /// Coordinated start: when the load began, ns since `started` (`u64::MAX` before).
    go_ns: AtomicU64,
    /// Requests left to send with `-n` (may go negative).
    remaining: AtomicI64,
    completed: Vec<AtomicU64>,
    errors: Vec<AtomicU64>,
}

/// Runs the configured load and merges the threads' statistics into a report.
pub fn run(config: &Config) -> Result<Report, String> {
    raise_nofile_limit();
    let requests: Vec<Vec<u8>> =
        config.paths.iter().map(|p| build_request(&config.host, p, &config.headers)).collect();
    let threads = config.threads.max(1) as usize;
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        go_ns: AtomicU64::new(u64::MAX),
        remaining: AtomicI64::new(config.requests.map_or(i64::MAX, |n| n as i64)),
        completed: (0..threads).map(|_| AtomicU64::new(0)).collect(),
        errors: (0..threads).map(|_| AtomicU64::new(0)).collect(),
    });
    // Coordinated start: the threads connect and then wait for this eventfd.
    let go = match config.start_at {
        // SAFETY: eventfd has no pointer arguments; the result is checked.
        Some(_) => match unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) } {
            // SAFETY: `fd` is a fresh descriptor owned by nothing else.
            fd if fd >= 0 => Some(unsafe { OwnedFd::from_raw_fd(fd) }),
            _ => return Err(format!("eventfd: {}", std::io::Error::last_os_error())),
        },
        None => None,
    };
    let go_fd = go.as_ref().map(AsRawFd::as_raw_fd);
    let cpu_before = cpu_time();
    let started = Instant::now();
    let started_wall = SystemTime::now();
    let progress = (config.progress && is_tty(2)).then(|| spawn_progress(Arc::clone(&shared)));
    let per_thread = config.connections as usize / threads;
    let extra = config.connections as usize % threads;
    // Coordinated start: the wall clock read on waking at the agreed instant.
    let mut woke_wall = None;
    let results: Vec<Result<(Stats, u64), String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|id| {
                let count = per_thread + usize::from(id < extra);
                let (shared, requests) = (Arc::clone(&shared), &requests);
                scope.spawn(move || {
                    Thread::new(config, requests, id, count, shared, started, go_fd)?.run()
                })
            })
            .collect();
        if let (Some(at), Some(fd)) = (config.start_at, go_fd) {
            // The warm-up, if any, runs just before the agreed instant.
            sleep_until(at.checked_sub(config.warmup).unwrap_or(at));
            woke_wall = Some(SystemTime::now());
            shared.go_ns.store(started.elapsed().as_nanos() as u64, Ordering::Release);
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live local to our eventfd.
            unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
        }
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a thread panicked".into())))
            .collect()
    });
    shared.stop.store(true, Ordering::Release);
    if let Some(handle) = progress {
        let _ = handle.join();
        eprint!("\r\x1b[K");
    }
    let cpu = cpu_time().saturating_sub(cpu_before);
    let mut total = Stats::new(1);
    let mut live = 0;
    for result in results {
        let (stats, live_conns) = result?;
        total.merge(&stats);
        live += live_conns;
    }
    let go_ns = match shared.go_ns.load(Ordering::Acquire) {
        u64::MAX => 0,
        go => go,
    };
    let begun = Duration::from_nanos(go_ns) + config.warmup;
    let measured = started.elapsed().saturating_sub(begun);
    let mut report = Report::build(config, &total, measured, cpu, live);
    // The actual start: the wall clock read on waking (coordinated), else at the start, plus
    // the warm-up, which the monotonic clock measured.
    report.start_unix_ms = match woke_wall {
        Some(woke) => unix_ms(woke + config.warmup),
        None => unix_ms(started_wall + begun),
    };
    report.start_requested_unix_ms = config.start_at.map(unix_ms);
    if let Some(n) = config.requests {
        let unsent = n.saturating_sub(total.sent_total);
        if unsent > 0 {
            report.gave_up = Some(format!(
                "gave up: no connection for the --timeout of {:.2?}; {unsent} of {n} requests \
                 not sent",
                config.timeout
            ));
        }
    }
    Ok(report)
}

/// A request in flight on a connection.
#[derive(Debug, Clone, Copy, Default)]
struct InFlight {
    /// When it should have been sent (constant rate) or was sent (closed loop), ns since start.
    intended_ns: u64,
    sent_ns: u64,
    path: u32,
    measured: bool,
}

/// One connection and its buffers (allocated once; reused across reconnects).
struct Conn {
    stream: Option<TcpStream>,
    connecting: bool,
    retry_at_ns: u64,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    parser: Parser,
    /// Ring of requests in flight, oldest first.
    inflight: Box<[InFlight]>,
    head: usize,
    count: usize,
    /// Request bytes not yet written.
    out: Vec<u8>,
    out_pos: usize,
    want_write: bool,
    body_mismatch: bool,
    /// The last response had a large body: read the next head through a small window.
    large_bodies: bool,
}

impl Conn {
    fn new(pipeline: usize, request_max: usize) -> Conn {
        Conn {
            stream: None,
            connecting: false,
            retry_at_ns: 0,
            buf: vec![0u8; RECV_BUFFER_BYTES].into_boxed_slice(),
            start: 0,
            end: 0,
            parser: Parser::default(),
            inflight: vec![InFlight::default(); pipeline].into_boxed_slice(),
            head: 0,
            count: 0,
            out: Vec::with_capacity(pipeline * request_max),
            out_pos: 0,
            want_write: false,
            body_mismatch: false,
            large_bodies: false,
        }
    }

    fn push(&mut self, request: InFlight) {
        let index = (self.head + self.count) % self.inflight.len();
        self.inflight[index] = request;
        self.count += 1;
    }

    fn pop(&mut self) -> Option<InFlight> {
        (self.count > 0).then(|| {
            let r = self.inflight[self.head];
            self.head = (self.head + 1) % self.inflight.len();
            self.count -= 1;
            r
        })
    }

    fn front(&self) -> Option<&InFlight> {
        (self.count > 0).then(|| &self.inflight[self.head])
    }
}

/// Whether a read loop should try again or wait for the next readiness event.
enum Progress {
    More,
    Drained,
}

/// How a connection ended, for the error accounting of its requests in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loss {
    Reset,
    BrokenPipe,
    Closed,
    Parse,
    Timeout,
    Other,
    /// The run ended: requests stay "in flight at the end".
    Shutdown,
}

struct Thread<'a> {
    config: &'a Config,
    requests: &'a [Vec<u8>],
    id: usize,
    epoll: OwnedFd,
    conns: Vec<Conn>,
    stats: Stats,
    shared: Arc<Shared>,
    started: Instant,
    /// Coordinated start: waiting for the go event; nothing is sent until then.
    waiting: bool,
    /// The go eventfd, until its event arrived.
    go_fd: Option<RawFd>,
    /// When the load began, ns since `started` (0 unless the start was coordinated).
    base_ns: u64,
    measure_from_ns: u64,
    end_ns: Option<u64>,
    next_path: usize,
    /// Per path: status and body length of the first response (default verification).
    expected: Vec<Option<(u16, u64)>>,
    /// Constant rate: the next index of this thread's share of the global schedule.
    rate_next: u64,
    /// Constant rate: connections able to take another request.
    ready: Vec<u32>,
    stopping: bool,
    /// Established connections open now.
    live: usize,
    /// Since when no connection has been established (meaningful while `live` is 0).
    no_connection_since_ns: u64,
    /// `-n`: no connection for `--timeout`, so the requests left cannot be sent.
    gave_up: bool,
    /// Target of body discards; `None` when bodies are checked byte by byte (--verify-file).
    discard: Option<Box<[u8]>>,
}

impl<'a> Thread<'a> {
    fn new(
        config: &'a Config,
        requests: &'a [Vec<u8>],
        id: usize,
        count: usize,
        shared: Arc<Shared>,
        started: Instant,
        go_fd: Option<RawFd>,
    ) -> Result<Thread<'a>, String> {
        // SAFETY: epoll_create1 has no pointer arguments; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(format!("epoll_create1: {}", std::io::Error::last_os_error()));
        }
        let request_max = requests.iter().map(Vec::len).max().unwrap_or(0);
        let pipeline = config.pipeline as usize;
        let measured_secs = config.duration.as_secs() as usize + 2;
        let timeline_secs = if config.requests.is_some() { 64 } else { measured_secs };
        let thread = Thread {
            config,
            requests,
            id,
            // SAFETY: `fd` is a fresh descriptor owned by nothing else.
            epoll: unsafe { OwnedFd::from_raw_fd(fd) },
            conns: (0..count).map(|_| Conn::new(pipeline, request_max)).collect(),
            stats: Stats::new(timeline_secs),
            shared,
            started,
            waiting: go_fd.is_some(),
            go_fd,
            base_ns: 0,
            measure_from_ns: config.warmup.as_nanos() as u64,
            // While waiting for a coordinated start, no end: `begin` sets it.
            end_ns: config.requests.is_none().then(|| match go_fd {
                Some(_) => u64::MAX,
                None => (config.warmup + config.duration).as_nanos() as u64,
            }),
            next_path: id % requests.len().max(1),
            expected: vec![None; requests.len()],
            rate_next: 0,
            ready: Vec::with_capacity(count),
            stopping: false,
            live: 0,
            no_connection_since_ns: 0,
            gave_up: false,
            // Zeroed allocations this large come straight from mmap and are never touched.
            discard: config.verify_body.is_none().then(|| vec![0u8; DISCARD_BYTES].into()),
        };
        if let Some(fd) = go_fd {
            let mut event = libc::epoll_event { events: libc::EPOLLIN as u32, u64: GO_TOKEN };
            // SAFETY: `event` is a live local; both descriptors are open.
            if unsafe {
                libc::epoll_ctl(thread.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event)
            } < 0
            {
                return Err(format!("epoll_ctl(eventfd): {}", std::io::Error::last_os_error()));
            }
        }
        Ok(thread)
    }

    /// Coordinated start: the go event arrived; the schedule and the measured window now
    /// begin at the instant the main thread recorded.
    fn begin(&mut self, go_fd: RawFd, now: u64) {
        // SAFETY: removes an open descriptor from our epoll set (level-triggered and never
        // read, it would otherwise wake this loop again and again).
        unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                go_fd,
                std::ptr::null_mut(),
            )
        };
        self.waiting = false;
        self.base_ns = self.shared.go_ns.load(Ordering::Acquire).min(now);
        self.measure_from_ns = self.base_ns + self.config.warmup.as_nanos() as u64;
        if self.end_ns.is_some() {
            self.end_ns = Some(self.measure_from_ns + self.config.duration.as_nanos() as u64);
        }
        self.no_connection_since_ns = self.no_connection_since_ns.max(self.base_ns);
        if self.config.rate.is_some() {
            self.dispatch_due(now);
            return;
        }
        for index in 0..self.conns.len() as u32 {
            let conn = &self.conns[index as usize];
            if conn.stream.is_none() || conn.connecting {
                continue;
            }
            for _ in 0..self.config.pipeline {
                if !self.send_next(index, now, now) {
                    break;
                }
            }
            self.write_pending(index, now);
        }
    }

    fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    /// The event loop of one thread; returns its statistics and live connections at the end.
    fn run(mut self) -> Result<(Stats, u64), String> {
        let now = self.now_ns();
        for index in 0..self.conns.len() {
            self.connect(index as u32, now);
        }
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS_PER_WAIT];
        let mut next_housekeeping = now + HOUSEKEEPING_NS;
        loop {
            let now = self.now_ns();
            if self.finished(now) {
                break;
            }
            if self.config.rate.is_some() {
                self.dispatch_due(now);
            }
            if now >= next_housekeeping {
                next_housekeeping = now + HOUSEKEEPING_NS;
                self.housekeeping(now);
            }
            let wait_ns = self.wait_ns(now, next_housekeeping);
            let ts = libc::timespec {
                tv_sec: (wait_ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (wait_ns % 1_000_000_000) as libc::c_long,
            };
            // SAFETY: `events` and `ts` are live locals; the kernel writes at most
            // EVENTS_PER_WAIT entries.
            let n = unsafe {
                libc::epoll_pwait2(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    EVENTS_PER_WAIT as i32,
                    &ts,
                    std::ptr::null(),
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(format!("epoll_pwait2: {e}"));
            }
            for event in &events[..n as usize] {
                if event.u64 == GO_TOKEN {
                    if let Some(fd) = self.go_fd.take() {
                        self.begin(fd, self.now_ns());
                    }
                    continue;
                }
                self.on_event(event.u64 as u32, event.events);
            }
        }
        let live = self.conns.iter().filter(|c| c.stream.is_some() && !c.connecting).count() as u64;
        self.stats.in_flight_at_end = self
            .conns
            .iter()
            .map(|c| {
                (0..c.count)
                    .filter(|i| c.inflight[(c.head + i) % c.inflight.len()].measured)
                    .count() as u64
            })
            .sum();
        Ok((self.stats, live))
    }

    /// The run is over: the deadline passed, or `-n` is exhausted and nothing is in flight.
    fn finished(&mut self, now: u64) -> bool {
        if self.waiting {
            return false;
        }
        if self.gave_up {
            return true;
        }
        if let Some(end) = self.end_ns {
            return now >= end;
        }
        if self.shared.remaining.load(Ordering::Relaxed) > 0 && !self.rate_exhausted() {
            return false;
        }
        self.stopping = true;
        self.conns.iter().all(|c| c.count == 0)
    }

    fn rate_exhausted(&self) -> bool {
        match (self.config.rate, self.config.requests) {
            (Some(_), Some(n)) => self.global_index(self.rate_next) >= n,
            _ => false,
        }
    }

    fn global_index(&self, local: u64) -> u64 {
        local * self.config.threads as u64 + self.id as u64
    }

    /// Intended send time of this thread's `local`-th scheduled request.
    fn due_ns(&self, local: u64) -> u64 {
        let rate = self.config.rate.unwrap_or(1) as u128;
        self.base_ns + (self.global_index(local) as u128 * 1_000_000_000 / rate) as u64
    }

    fn wait_ns(&self, now: u64, next_housekeeping: u64) -> u64 {
        let mut until = next_housekeeping;
        if let Some(end) = self.end_ns {
            until = until.min(end);
        }
        if self.config.rate.is_some()
            && !self.waiting
            && !self.ready.is_empty()
            && !self.rate_exhausted()
        {
            until = until.min(self.due_ns(self.rate_next));
        }
        until.saturating_sub(now)
    }

    fn housekeeping(&mut self, now: u64) {
        let timeout = self.config.timeout.as_nanos() as u64;
        for index in 0..self.conns.len() {
            let conn = &self.conns[index];
            if conn.stream.is_none() && now >= conn.retry_at_ns {
                self.connect(index as u32, now);
                continue;
            }
            let overdue = conn.front().is_some_and(|r| now.saturating_sub(r.sent_ns) > timeout);
            if overdue || (conn.connecting && now.saturating_sub(conn.retry_at_ns) > timeout) {
                self.lose(
                    index as u32,
                    if conn.connecting { Loss::Other } else { Loss::Timeout },
                    now,
                );
            }
        }
        if self.config.requests.is_some()
            && self.live == 0
            && !self.stopping
            && !self.waiting
            && now.saturating_sub(self.no_connection_since_ns) > timeout
        {
            // -n cannot finish without a connection: give up instead of retrying forever.
            self.gave_up = true;
            self.stopping = true;
        }
        self.shared.completed[self.id].store(self.stats.completed, Ordering::Relaxed);
        let errors = self.stats.errors.request_errors() + self.stats.errors.connect_errors();
        self.shared.errors[self.id].store(errors, Ordering::Relaxed);
    }

    // ---- connections -------------------------------------------------------------------

    fn connect(&mut self, index: u32, now: u64) {
        let addr = self.config.addr;
        let socket = match socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM.nonblocking().cloexec(),
            None,
        ) {
            Ok(s) => s,
            Err(e) => return self.connect_failed(index, &e, now),
        };
        let _ = socket.set_nodelay(true);
        match socket.connect(&addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return self.connect_failed(index, &e, now),
        }
        let stream: TcpStream = socket.into();
        let fd = stream.as_raw_fd();
        let conn = &mut self.conns[index as usize];
        conn.stream = Some(stream);
        conn.connecting = true;
        conn.retry_at_ns = now; // connect start, for the connect timeout
        conn.start = 0;
        conn.end = 0;
        conn.parser = Parser::default();
        conn.out.clear();
        conn.out_pos = 0;
        conn.want_write = true;
        self.epoll_ctl(libc::EPOLL_CTL_ADD, fd, index, true);
    }

    fn connect_failed(&mut self, index: u32, e: &std::io::Error, now: u64) {
        match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => self.stats.errors.connect_refused += 1,
            Some(libc::ETIMEDOUT) => self.stats.errors.connect_timeout += 1,
            Some(libc::EADDRNOTAVAIL) => self.stats.errors.address_exhausted += 1,
            _ => self.stats.errors.connect_other += 1,
        }
        let conn = &mut self.conns[index as usize];
        conn.stream = None;
        conn.connecting = false;
        conn.retry_at_ns = now + RECONNECT_BACKOFF_NS;
    }

    fn epoll_ctl(&self, op: i32, fd: RawFd, index: u32, write: bool) {
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP | if write { libc::EPOLLOUT } else { 0 })
                as u32,
            u64: u64::from(index),
        };
        // SAFETY: `event` is a live local; the descriptors are open.
        unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut event) };
    }

    /// Removes the connection's socket from the epoll set and closes it.
    fn close_stream(&mut self, index: u32) {
        if let Some(stream) = self.conns[index as usize].stream.take() {
            // SAFETY: removes an open descriptor from our epoll set before it is closed.
            unsafe {
                libc::epoll_ctl(
                    self.epoll.as_raw_fd(),
                    libc::EPOLL_CTL_DEL,
                    stream.as_raw_fd(),
                    std::ptr::null_mut(),
                )
            };
        }
    }

    /// Drops the connection, accounts for its requests in flight, and reconnects unless the
    /// run is ending.
    fn lose(&mut self, index: u32, loss: Loss, now: u64) {
        let conn = &self.conns[index as usize];
        if conn.stream.is_some() && !conn.connecting {
            self.live -= 1;
            if self.live == 0 {
                self.no_connection_since_ns = now;
            }
        }
        self.close_stream(index);
        let conn = &mut self.conns[index as usize];
        let was_connecting = std::mem::replace(&mut conn.connecting, false);
        while let Some(request) = conn.pop() {
            if !request.measured || loss == Loss::Shutdown {
                continue;
            }
            let errors = &mut self.stats.errors;
            match loss {
                Loss::Reset => errors.reset += 1,
                Loss::BrokenPipe => errors.broken_pipe += 1,
                Loss::Closed => errors.closed_mid_response += 1,
                Loss::Parse => errors.parse += 1,
                Loss::Timeout => errors.timeout += 1,
                Loss::Other | Loss::Shutdown => errors.other += 1,
            }
        }
        if was_connecting && loss == Loss::Other {
            self.stats.errors.connect_timeout += 1;
        }
        self.ready.retain(|&r| r != index);
        if self.stopping || self.end_ns.is_some_and(|end| now >= end) {
            return;
        }
        self.stats.reconnects += 1;
        self.connect(index, now);
    }

    // ---- I/O ---------------------------------------------------------------------------

    fn on_event(&mut self, index: u32, events: u32) {
        let now = self.now_ns();
        let conn = &self.conns[index as usize];
        let Some(stream) = conn.stream.as_ref() else { return };
        if conn.connecting {
            if events & (libc::EPOLLOUT | libc::EPOLLERR | libc::EPOLLHUP) as u32 == 0 {
                return;
            }
            match socket2::SockRef::from(stream).take_error() {
                Ok(None) => self.on_connected(index, now),
                Ok(Some(e)) | Err(e) => {
                    self.close_stream(index);
                    self.connect_failed(index, &e, now);
                }
            }
            return;
        }
        if events & libc::EPOLLOUT as u32 != 0 {
            self.write_pending(index, now);
        }
        if events & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0
        {
            self.read(index, now);
        }
    }

    fn on_connected(&mut self, index: u32, now: u64) {
        self.live += 1;
        self.stats.connections_made += 1;
        let conn = &mut self.conns[index as usize];
        conn.connecting = false;
        conn.want_write = false;
        let fd = conn.stream.as_ref().map(|s| s.as_raw_fd()).unwrap_or(-1);
        self.epoll_ctl(libc::EPOLL_CTL_MOD, fd, index, false);
        if self.config.rate.is_some() {
            self.ready.push(index);
            self.dispatch_due(now);
        } else {
            for _ in 0..self.config.pipeline {
                if !self.send_next(index, now, now) {
                    break;
                }
            }
            self.write_pending(index, now);
        }
    }

    /// Queues the next request on `index` (closed loop: if the run allows another).
    fn send_next(&mut self, index: u32, intended_ns: u64, now: u64) -> bool {
        if self.waiting || self.stopping || self.end_ns.is_some_and(|end| now >= end) {
            return false;
        }
        if self.config.requests.is_some()
            && self.config.rate.is_none()
            && self.shared.remaining.fetch_sub(1, Ordering::Relaxed) <= 0
        {
            self.stopping = true;
            return false;
        }
        let path = self.next_path;
        self.next_path = (self.next_path + 1) % self.requests.len();
        let measured = intended_ns >= self.measure_from_ns;
        self.stats.sent_total += 1;
        if measured {
            self.stats.sent += 1;
        }
        let conn = &mut self.conns[index as usize];
        if conn.out_pos == conn.out.len() {
            conn.out.clear();
            conn.out_pos = 0;
        }
        conn.out.extend_from_slice(&self.requests[path]);
        conn.push(InFlight { intended_ns, sent_ns: now, path: path as u32, measured });
        true
    }

    /// Constant rate: sends every request that is due, while connections can take one.
    fn dispatch_due(&mut self, now: u64) {
        while !self.waiting && !self.rate_exhausted() && !self.stopping {
            let due = self.due_ns(self.rate_next);
            if due > now || self.end_ns.is_some_and(|end| due >= end) {
                return;
            }
            let Some(&index) = self.ready.last() else { return };
            if !self.send_next(index, due, now) {
                return;
            }
            self.rate_next += 1;
            if due >= self.measure_from_ns {
                stats::record(&mut self.stats.lag, now.saturating_sub(due) / 1000);
            }
            if self.conns[index as usize].count >= self.config.pipeline as usize {
                self.ready.pop();
            }
            self.write_pending(index, now);
        }
    }

    fn write_pending(&mut self, index: u32, now: u64) {
        let conn = &mut self.conns[index as usize];
        let Some(stream) = conn.stream.as_mut() else { return };
        while conn.out_pos < conn.out.len() {
            match stream.write(&conn.out[conn.out_pos..]) {
                Ok(n) => conn.out_pos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    let loss = match e.kind() {
                        ErrorKind::BrokenPipe => Loss::BrokenPipe,
                        ErrorKind::ConnectionReset => Loss::Reset,
                        _ => Loss::Other,
                    };
                    return self.lose(index, loss, now);
                }
            }
        }
        let want = conn.out_pos < conn.out.len();
        if want != conn.want_write {
            conn.want_write = want;
            let fd = stream.as_raw_fd();
            self.epoll_ctl(libc::EPOLL_CTL_MOD, fd, index, want);
        }
    }

    fn read(&mut self, index: u32, now: u64) {
        loop {
            if self.discard.is_some() && self.conns[index as usize].parser.body_left().is_some() {
                match self.discard_body(index, now) {
                    Progress::More => continue,
                    Progress::Drained => return,
                }
            }
            let conn = &mut self.conns[index as usize];
            let Some(stream) = conn.stream.as_mut() else { return };
            if conn.end == conn.buf.len() {
                return self.lose(index, Loss::Parse, now); // a head larger than the buffer
            }
            let limit = if conn.large_bodies && self.discard.is_some() {
                (conn.end + HEAD_WINDOW_BYTES).min(conn.buf.len())
            } else {
                conn.buf.len()
            };
            let n = match stream.read(&mut conn.buf[conn.end..limit]) {
                Ok(0) => return self.on_eof(index, now),
                Ok(n) => n,
                Err(e) => match self.read_error(index, &e, now) {
                    Progress::More => continue,
                    Progress::Drained => return,
                },
            };
            let filled = conn.end + n == limit;
            conn.end += n;
            if !self.parse(index, now) {
                return;
            }
            self.write_pending(index, now);
            if !filled {
                return;
            }
        }
    }

    /// Drops the rest of a Content-Length body in the kernel: recv with MSG_TRUNC makes TCP
    /// discard the bytes without copying them, so a large body costs loadgen one syscall and
    /// no memory traffic (wrk, by contrast, copies every byte). Only used when no body check
    /// needs the bytes; the count is exact either way.
    fn discard_body(&mut self, index: u32, now: u64) -> Progress {
        let conn = &mut self.conns[index as usize];
        let (Some(stream), Some(left), Some(discard)) =
            (conn.stream.as_ref(), conn.parser.body_left(), self.discard.as_mut())
        else {
            return Progress::Drained;
        };
        debug_assert_eq!(conn.start, conn.end, "body bytes are never left in the buffer");
        let want = left.min(discard.len() as u64) as usize;
        // SAFETY: `discard` is a live, writable allocation of at least `want` bytes (the
        // kernel would not write to it with MSG_TRUNC anyway); the descriptor is open.
        let n = unsafe {
            libc::recv(
                stream.as_raw_fd(),
                discard.as_mut_ptr().cast(),
                want,
                libc::MSG_TRUNC | libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            return self.read_error(index, &std::io::Error::last_os_error(), now);
        }
        if n == 0 {
            self.on_eof(index, now);
            return Progress::Drained;
        }
        let Some(response) = conn.parser.skip_body(n as u64) else {
            // Less than asked: the socket is empty for now.
            return if (n as usize) < want { Progress::Drained } else { Progress::More };
        };
        if !self.on_response(index, response, now) {
            return Progress::Drained;
        }
        self.write_pending(index, now);
        Progress::More
    }

    /// Handles a failed read or discard: go on (EINTR), wait (EAGAIN) or drop the connection.
    fn read_error(&mut self, index: u32, e: &std::io::Error, now: u64) -> Progress {
        match e.kind() {
            ErrorKind::Interrupted => return Progress::More,
            ErrorKind::WouldBlock => {}
            ErrorKind::ConnectionReset => self.lose(index, Loss::Reset, now),
            _ => self.lose(index, Loss::Other, now),
        }
        Progress::Drained
    }

    fn on_eof(&mut self, index: u32, now: u64) {
        let conn = &self.conns[index as usize];
        if conn.count == 0 && conn.parser.is_idle() && conn.start == conn.end {
            // Not an error: the server closed an idle keep-alive connection; reconnect.
            self.stats.idle_closes += 1;
            self.lose(index, Loss::Shutdown, now);
        } else {
            self.lose(index, Loss::Closed, now);
        }
    }

    /// Parses what the buffer holds; false if the connection was dropped.
    fn parse(&mut self, index: u32, now: u64) -> bool {
        let verify = self.config.verify_body.as_deref();
        loop {
            let conn = &mut self.conns[index as usize];
            let mut mismatch = conn.body_mismatch;
            let event = conn.parser.feed(&conn.buf[conn.start..conn.end], |offset, body| {
                if let Some(expected) = verify {
                    let start = offset as usize;
                    if expected.get(start..start + body.len()) != Some(body) {
                        mismatch = true;
                    }
                }
            });
            conn.body_mismatch = mismatch;
            match event {
                Event::Done { consumed, response } => {
                    conn.start += consumed;
                    if conn.start == conn.end {
                        conn.start = 0;
                        conn.end = 0;
                    }
                    if !self.on_response(index, response, now) {
                        return false;
                    }
                }
                Event::NeedMore => {
                    if conn.parser.is_idle() {
                        if conn.start > 0 {
                            conn.buf.copy_within(conn.start..conn.end, 0);
                            conn.end -= conn.start;
                            conn.start = 0;
                        }
                    } else {
                        conn.start = 0;
                        conn.end = 0;
                    }
                    return true;
                }
                Event::Invalid => {
                    self.lose(index, Loss::Parse, now);
                    return false;
                }
            }
        }
    }

    /// Accounts for one complete response and sends the next request.
    fn on_response(&mut self, index: u32, response: Finished, now: u64) -> bool {
        let conn = &mut self.conns[index as usize];
        let Some(request) = conn.pop() else {
            self.lose(index, Loss::Parse, now); // a response nobody asked for
            return false;
        };
        let mismatch = std::mem::replace(&mut conn.body_mismatch, false);
        conn.large_bodies = response.body_bytes >= LARGE_BODY_BYTES;
        if request.measured {
            let stats = &mut self.stats;
            stats.completed += 1;
            stats.status[usize::from(response.status / 100).min(5)] += 1;
            stats.wire_bytes += response.wire_bytes;
            stats.body_bytes += response.body_bytes;
            let service_us = now.saturating_sub(request.sent_ns) / 1000;
            if self.config.rate.is_some() {
                stats::record(&mut stats.latency, now.saturating_sub(request.intended_ns) / 1000);
                stats::record(&mut stats.service, service_us);
            } else {
                stats::record(&mut stats.latency, service_us);
            }
            let second = ((now - self.measure_from_ns) / 1_000_000_000) as usize;
            if second >= stats.timeline.len() {
                stats.timeline.resize(second + 1, 0);
            }
            stats.timeline[second] += 1;
            let expected = self.expected[request.path as usize]
                .get_or_insert((response.status, response.body_bytes));
            let verify_len = self.config.verify_body.as_ref().map(|b| b.len() as u64);
            if mismatch
                || *expected != (response.status, response.body_bytes)
                || verify_len.is_some_and(|len| len != response.body_bytes)
            {
                stats.errors.verification += 1;
            }
        }
        if response.close {
            // The server ends the connection after this response; requests behind it are lost.
            self.lose(index, Loss::Closed, now);
            return false;
        }
        if self.config.rate.is_some() {
            let conn = &self.conns[index as usize];
            if conn.count + 1 == self.config.pipeline as usize {
                self.ready.push(index);
            }
            self.dispatch_due(now);
        } else {
            // Queued only: `read` writes once after parsing everything it read, so a pipelined
            // burst of responses is answered with one write, not one write per response.
            self.send_next(index, now, now);
        }
        true
    }
}

fn spawn_progress(shared: Arc<Shared>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut last = 0u64;
        let mut last_at = Instant::now();
        while !shared.stop.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(100));
            let done: u64 = shared.completed.iter().map(|c| c.load(Ordering::Relaxed)).sum();
            let errors: u64 = shared.errors.iter().map(|c| c.load(Ordering::Relaxed)).sum();
            let rate = (done - last) as f64 / last_at.elapsed().as_secs_f64();
            last = done;
            last_at = Instant::now();
            eprint!("\r\x1b[K{rate:>12.0} req/s  {done} done  {errors} errors");
        }
    })
}

fn is_tty(fd: RawFd) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

/// Sleeps until the wall-clock instant `at` (CLOCK_REALTIME, absolute, so a clock step during
/// the wait is followed and every machine wakes at the same wall-clock time).
fn sleep_until(at: SystemTime) {
    let Ok(since_epoch) = at.duration_since(std::time::UNIX_EPOCH) else { return };
    let ts = libc::timespec {
        tv_sec: since_epoch.as_secs() as libc::time_t,
        tv_nsec: since_epoch.subsec_nanos() as libc::c_long,
    };
    loop {
        // SAFETY: `ts` is a live local; no remaining-time pointer with TIMER_ABSTIME.
        let rc = unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_REALTIME,
                libc::TIMER_ABSTIME,
                &ts,
                std::ptr::null_mut(),
            )
        };
        if rc != libc::EINTR {
            return;
        }
    }
}

/// User plus system CPU time of this process.
pub fn cpu_time() -> Duration {
    // SAFETY: getrusage writes the local struct only.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Raises the soft descriptor limit to the hard one (10,000 connections need it).
fn raise_nofile_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write the local struct only.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
