//! The epoll engine: the readiness-based baseline, with the same `Session`, `Batch`, file
//! cache and `observe` as the io_uring engine, so a comparison between the two isolates the
//! I/O interface. Tuned as a readiness server would be: one edge-triggered epoll instance per
//! worker thread, each worker with its own SO_REUSEPORT listeners, `accept4` until EAGAIN,
//! reads until EAGAIN into a pooled input buffer, `send`/`sendmsg` of the batch's iovecs and
//! `sendfile` for a large body, resumed on EPOLLOUT.
//!
//! A loop turn: `epoll_wait` (until the next tick at most), handle each event, drive the
//! connections that stopped only to let others run, then the tick if one is due (timers, the
//! Date, pool trimming, gauges, the access log).
//!
//! Modules: `conn` (connection records and timer lists), `drive` (read, serve, linger,
//! close), `send` (sendmsg and sendfile).

mod conn;
mod drive;
mod send;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::batch::Batch;
use crate::config::Config;
use crate::files::FileCache;
use crate::limits::{INPUT_BUFFER_BYTES, TICK_MILLIS};
use crate::observe::access_log::PeerText;
use crate::observe::log_sink::LogSink;
use crate::observe::stats::{Counters, Event};
use crate::observe::Recorder;
use crate::serve::Serving;
use crate::timers::Ticks;
use crate::uring::pool::Pool;
use crate::Error;

use conn::{Conns, Phase, Timer};

/// Events taken from the kernel per `epoll_wait`: enough that a busy worker rarely needs a
/// second call per turn, small enough (12 bytes each) to stay in cache.
const EVENTS_PER_WAIT_MAX: usize = 256;

/// Bytes one connection may read and send in one loop turn before it is put back at the end of
/// the turn's queue: a client that pipelines without pause, or a fast reader of a huge file,
/// cannot keep the worker from every other connection.
const DRIVE_BYTES_PER_TURN_MAX: usize = 2 << 20;

/// Room reserved at start-up in each list of connections that yielded their turn: a client
/// that pipelines past `DRIVE_BYTES_PER_TURN_MAX` or has a body left to send yields, and the
/// first such turn must not allocate in the middle of serving. The lists grow beyond it, once,
/// when more connections than this yield in one turn (8 bytes an entry).
const READY_CONNECTIONS_INITIAL: usize = 64;

/// inotify buffers read per loop turn: a flood of file events cannot starve requests (the
/// descriptor is level-triggered, so the rest is read next turn).
const WATCH_READS_PER_TURN_MAX: usize = 8;

/// epoll keys of the worker's own descriptors carry this bit; a connection's key is its
/// generation (31 bits) and index.
const KEY_WORKER: u64 = 1 << 63;
/// The stop eventfd.
const KEY_WAKE: u64 = KEY_WORKER | u32::MAX as u64;
/// The file cache's inotify descriptor.
const KEY_WATCH: u64 = KEY_WORKER | (u32::MAX - 1) as u64;

/// An input buffer: bytes received and not yet answered.
type Input = [u8; INPUT_BUFFER_BYTES];

/// One listening socket of a worker.
struct Listening {
    fd: OwnedFd,
    /// accept4 failed for lack of descriptors or memory: retried on the next tick.
    backoff: bool,
}

/// One thread's epoll engine.
pub struct Worker {
    epoll: OwnedFd,
    listeners: Vec<Listening>,
    wake: Arc<OwnedFd>,
    conns: Conns,
    inputs: Pool<Input>,
    batches: Pool<Batch>,
    /// This worker's file cache. A miss is filled in place with plain system calls.
    files: FileCache,
    watch_buf: Box<[u8]>,
    serving: Serving,
    ticks: Ticks,
    started: Instant,
    /// The tick count, and the cache's and latencies' clocks, read once per loop turn.
    now: u64,
    now_ms: u64,
    now_micros: u64,
    /// When the next tick is due, in `now_ms` milliseconds.
    next_tick_ms: u64,
    /// Tick by which a graceful shutdown gives up on in-flight responses.
    draining_until: Option<u64>,
    recorder: Recorder,
    log: Option<LogSink>,
    /// Connections to drive again at the end of the turn (index, generation), and the list
    /// swapped in while one is walked, so neither allocates after warm-up.
    ready: Vec<(u32, u32)>,
    ready_spare: Vec<(u32, u32)>,
    events: Box<[libc::epoll_event]>,
}

impl Worker {
    /// Sets up the epoll instance and registers the listeners, the stop eventfd and the cache's
    /// inotify descriptor.
    pub fn new(
        config: &Config,
        listeners: Vec<(OwnedFd, std::net::SocketAddr)>,
        wake: Arc<OwnedFd>,
        files: FileCache,
        recorder: Recorder,
        log: Option<LogSink>,
    ) -> Result<Worker, Error> {
        // SAFETY: epoll_create1 takes no pointer; the result is checked before use.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(Error::Os {
                what: "epoll_create1",
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: a fresh descriptor nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut listening = Vec::with_capacity(listeners.len());
        for (index, (fd, _)) in listeners.into_iter().enumerate() {
            set_nonblocking(fd.as_raw_fd())
                .map_err(|source| Error::Os { what: "make a listener non-blocking", source })?;
            // Level-triggered: a listener in backoff keeps its pending connections signalled.
            ctl(
                &epoll,
                libc::EPOLL_CTL_ADD,
                fd.as_raw_fd(),
                libc::EPOLLIN as u32,
                KEY_WORKER | index as u64,
            )
            .map_err(|source| Error::Os { what: "epoll_ctl (listener)", source })?;
            listening.push(Listening { fd, backoff: false });
        }
        ctl(&epoll, libc::EPOLL_CTL_ADD, wake.as_raw_fd(), libc::EPOLLIN as u32, KEY_WAKE)
            .map_err(|source| Error::Os { what: "epoll_ctl (eventfd)", source })?;
        if let Some(watch) = files.watch_fd() {
            ctl(&epoll, libc::EPOLL_CTL_ADD, watch, libc::EPOLLIN as u32, KEY_WATCH)
                .map_err(|source| Error::Os { what: "epoll_ctl (inotify)", source })?;
        }
        let empty = libc::epoll_event { events: 0, u64: 0 };
        Ok(Worker {
            epoll,
            listeners: listening,
            wake,
            conns: Conns::new(config.max_connections),
            inputs: Pool::new(|| Box::new([0u8; INPUT_BUFFER_BYTES])),
            batches: Pool::new(Batch::new),
            files,
            watch_buf: vec![0u8; crate::files::EVENTS_BUFFER_BYTES].into_boxed_slice(),
            serving: Serving::new(config),
            ticks: Ticks::new(config),
            started: Instant::now(),
            now: 0,
            now_ms: 0,
            now_micros: 0,
            next_tick_ms: TICK_MILLIS,
            draining_until: None,
            recorder,
            log,
            ready: Vec::with_capacity(READY_CONNECTIONS_INITIAL),
            ready_spare: Vec::with_capacity(READY_CONNECTIONS_INITIAL),
            events: vec![empty; EVENTS_PER_WAIT_MAX].into_boxed_slice(),
        })
    }

    /// Runs until a shutdown is requested and every connection is closed.
    pub fn run(mut self) -> Result<Counters, Error> {
        loop {
            let timeout = if self.ready.is_empty() {
                self.next_tick_ms.saturating_sub(self.now_ms).min(TICK_MILLIS) as i32
            } else {
                0
            };
            // SAFETY: `events` is a live buffer of `EVENTS_PER_WAIT_MAX` entries the kernel
            // writes; the epoll descriptor is ours.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    self.events.as_mut_ptr(),
                    EVENTS_PER_WAIT_MAX as i32,
                    timeout,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINTR) {
                    return Err(Error::Os { what: "epoll_wait", source: e });
                }
            }
            self.clock();
            for i in 0..n.max(0) as usize {
                // A copy: the struct is packed on x86-64, so no reference into it.
                let event = self.events[i];
                let (key, flags) = (event.u64, event.events);
                self.dispatch(key, flags);
            }
            self.drive_ready();
            if self.now_ms >= self.next_tick_ms {
                self.next_tick_ms = self.now_ms + TICK_MILLIS;
                self.on_tick();
            }
            if let Some(log) = &mut self.log {
                log.write_now(false);
            }
            if self.draining_until.is_some() && self.conns.live() == 0 {
                if let Some(log) = &mut self.log {
                    log.write_now(true);
                }
                self.publish();
                return Ok(self.recorder.stats.snapshot());
            }
        }
    }

    fn clock(&mut self) {
        self.now_micros = self.started.elapsed().as_micros() as u64;
        self.now_ms = self.now_micros / 1000;
    }

    fn dispatch(&mut self, key: u64, flags: u32) {
        if key & KEY_WORKER == 0 {
            self.on_conn_event(key as u32, (key >> 32) as u32, flags);
            return;
        }
        match key {
            KEY_WAKE => self.on_wake(),
            KEY_WATCH => {
                for _ in 0..WATCH_READS_PER_TURN_MAX {
                    if !self.files.read_events(&mut self.watch_buf) {
                        break;
                    }
                }
            }
            _ => self.accept_all((key & u64::from(u32::MAX)) as usize),
        }
    }

    /// Accepts on listener `index` until the queue is empty (EAGAIN).
    fn accept_all(&mut self, index: usize) {
        let Some(listener) = self.listeners.get(index) else { return };
        if self.draining_until.is_some() || listener.backoff {
            return;
        }
        let listen_fd = listener.fd.as_raw_fd();
        let stats = Arc::clone(&self.recorder.stats);
        loop {
            // SAFETY: sockaddr_in6 is a plain C struct; all-zero bytes are a valid value.
            let mut addr: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            // SAFETY: `addr` and `len` are live locals; the kernel writes at most `len` bytes,
            // the size of `addr` (IPv4 and IPv6 addresses both fit).
            let fd = unsafe {
                libc::accept4(
                    listen_fd,
                    (&mut addr as *mut libc::sockaddr_in6).cast(),
                    &mut len,
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                match errno() {
                    libc::EAGAIN => return,
                    libc::EINTR | libc::ECONNABORTED => continue,
                    _ => {
                        // EMFILE, ENFILE, ENOBUFS, ENOMEM: back off until the next tick
                        // instead of spinning on a queue we cannot take from.
                        stats.count(Event::AcceptError, false);
                        if let Some(listener) = self.listeners.get_mut(index) {
                            listener.backoff = true;
                        }
                        return;
                    }
                }
            }
            let Some(conn) = self.conns.open(fd) else {
                stats.count(Event::Refused, false);
                // SAFETY: a descriptor accept4 just returned, owned by no one else.
                unsafe { libc::close(fd) };
                continue;
            };
            let generation = self.conns.get(conn).generation;
            let interest =
                (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
            let key = u64::from(generation) << 32 | u64::from(conn);
            if ctl(&self.epoll, libc::EPOLL_CTL_ADD, fd, interest, key).is_err() {
                stats.count(Event::Refused, false);
                self.close(conn);
                continue;
            }
            stats.count(Event::Accepted, false);
            if self.log.is_some() {
                self.conns.get(conn).peer = PeerText::from_sockaddr(&addr, len as usize);
            }
            self.conns.arm(conn, Timer::Header, self.now + self.ticks.header);
        }
    }

    /// Drives the connections that stopped to let others run.
    fn drive_ready(&mut self) {
        if self.ready.is_empty() {
            return;
        }
        let mut list = std::mem::take(&mut self.ready_spare);
        std::mem::swap(&mut list, &mut self.ready);
        // The list filled during this walk gets room for as many as the one walked, so a
        // repeat of this turn's burst does not grow it.
        self.ready.reserve(list.len());
        for &(index, generation) in &list {
            let Some(conn) = self.conns.current(index, generation) else { continue };
            conn.queued = false;
            if conn.sending {
                self.resume_send(index);
            } else {
                self.drive(index);
            }
        }
        list.clear();
        self.ready_spare = list;
    }

    /// Puts a connection on the list driven at the end of the turn.
    fn queue(&mut self, index: u32) {
        let conn = self.conns.get(index);
        if !conn.queued {
            conn.queued = true;
            let generation = conn.generation;
            self.ready.push((index, generation));
        }
    }

    fn on_tick(&mut self) {
        self.now = self.started.elapsed().as_millis() as u64 / TICK_MILLIS;
        self.serving.date.refresh(SystemTime::now());
        self.expire_timers();
        crate::uring::pool::release_freed(self.inputs.trim() + self.batches.trim());
        for index in 0..self.listeners.len() {
            if self.listeners[index].backoff {
                self.listeners[index].backoff = false;
                self.accept_all(index);
            }
        }
        if let Some(until) = self.draining_until {
            if self.now >= until {
                let live: Vec<u32> = self.conns.in_use().collect();
                for index in live {
                    self.close(index);
                }
            }
        }
        if let Some(log) = &mut self.log {
            log.write_now(true);
        }
        self.publish();
    }

    fn expire_timers(&mut self) {
        while let Some(index) = self.conns.pop_expired(Timer::Header, self.now) {
            self.respond_timeout(index);
        }
        for timer in [Timer::Idle, Timer::Send, Timer::Linger] {
            while let Some(index) = self.conns.pop_expired(timer, self.now) {
                self.close(index);
            }
        }
    }

    /// A stop was asked for: stop accepting (the listeners stay open: one systemd passed must
    /// still listen after we exit), close idle connections, let responses being sent finish
    /// until the shutdown timeout.
    fn on_wake(&mut self) {
        if self.draining_until.is_some() {
            return;
        }
        self.draining_until = Some(self.now + self.ticks.shutdown);
        for listener in &self.listeners {
            let _ = ctl(&self.epoll, libc::EPOLL_CTL_DEL, listener.fd.as_raw_fd(), 0, 0);
        }
        let _ = ctl(&self.epoll, libc::EPOLL_CTL_DEL, self.wake.as_raw_fd(), 0, 0);
        let live: Vec<u32> = self.conns.in_use().collect();
        for index in live {
            let conn = self.conns.get(index);
            if conn.phase == Phase::Open && !conn.sending {
                self.close(index);
            } else {
                conn.session.closing = true;
            }
        }
    }

    /// Publishes the gauges: connections by state, the file cache's counts, the log's.
    fn publish(&mut self) {
        let stats = &self.recorder.stats;
        let reading = u64::from(self.conns.armed(Timer::Header));
        let writing = u64::from(self.conns.armed(Timer::Send));
        let idle = u64::from(self.conns.armed(Timer::Idle));
        let closing = u64::from(self.conns.live()).saturating_sub(reading + writing + idle);
        stats.set_connections([reading, writing, idle, closing]);
        stats.set_cache(self.files.counters(), self.files.len(), self.files.bytes());
        if let Some(log) = &self.log {
            stats.set_log(log.written, log.dropped);
        }
    }
}

/// `epoll_ctl` on `fd` with `events` and `key`.
fn ctl(epoll: &OwnedFd, op: i32, fd: RawFd, events: u32, key: u64) -> std::io::Result<()> {
    let mut event = libc::epoll_event { events, u64: key };
    // SAFETY: `event` is a live local the kernel reads (ignored for EPOLL_CTL_DEL).
    if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), op, fd, &mut event) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn set_nonblocking(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The calling thread's errno.
fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}
