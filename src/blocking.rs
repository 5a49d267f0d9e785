//! The blocking baseline engine: the classic design the socket example grows into, one
//! thread per connection with blocking std::net I/O. It shares `serve`, `batch`, `http` and
//! `files` with the io_uring engine, so a benchmark between the two isolates the I/O model.
//! It is also what a user can run where io_uring is unavailable (`--engine blocking`).

use std::collections::HashMap;
use std::io::{ErrorKind, Read};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::batch::{Batch, FileSend};
use crate::config::Config;
use crate::files::FileCache;
use crate::http::date::DateCache;
use crate::http::ParseLimits;
use crate::limits::{INPUT_BUFFER_BYTES, LINGER_TIMEOUT_SECS};
use crate::observe::access_log::PeerText;
use crate::observe::log_sink::LogSink;
use crate::observe::stats::{Counters, Event};
use crate::observe::Recorder;
use crate::serve::{self, KeyBuffer, Session, Shared};

/// Stack per connection thread: the serving path needs little, and 10,000 connections at the
/// default 8 MiB would reserve 80 GiB of address space.
pub const CONNECTION_STACK_BYTES: usize = 256 * 1024;

/// Shared between the accept threads, connection threads and the stopper.
pub struct Control {
    stopping: AtomicBool,
    /// An eventfd every accept thread polls beside its listener; a stop makes it readable
    /// (and nobody reads it, so it stays so). Listeners are never shut down: one systemd
    /// passed must still listen after we exit, for the next start.
    stop_fd: OwnedFd,
    /// Open connections by id, so a stop can wake the threads blocked in `read`; its size is
    /// the connection count all accept threads check against the limit.
    open: Mutex<HashMap<u64, RawFd>>,
    next_id: AtomicU64,
}

impl Control {
    /// Stops accepting and wakes idle connections; responses being written finish.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to the eventfd we own.
        unsafe { libc::write(self.stop_fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        for fd in self.open.lock().unwrap_or_else(|e| e.into_inner()).values() {
            // SAFETY: as above; the map holds only descriptors of live connection threads.
            unsafe { libc::shutdown(*fd, libc::SHUT_RD) };
        }
    }
}

/// A thread running an engine; it returns the engine's counters when it stops.
pub type EngineThread = JoinHandle<Result<Counters, crate::Error>>;

/// Starts an accept thread per listener, and the thread that returns the engine's counters
/// once they all stopped.
pub fn start(
    config: &Config,
    listeners: Vec<TcpListener>,
    files: FileCache,
    recorder: Recorder,
    log: Option<LogSink>,
) -> std::io::Result<(EngineThread, Arc<Control>)> {
    // SAFETY: eventfd has no pointer arguments; the result is checked before use.
    let stop_fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if stop_fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let control = Arc::new(Control {
        stopping: AtomicBool::new(false),
        // SAFETY: a fresh descriptor nothing else owns.
        stop_fd: unsafe { OwnedFd::from_raw_fd(stop_fd) },
        open: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(0),
    });
    let settings = Arc::new(Settings::from(config));
    let watch_fd = files.watch_fd();
    let files = Arc::new(Files {
        cache: Mutex::new(files),
        started: Instant::now(),
        recorder,
        log_format: log.as_ref().map(LogSink::format),
        log: log.map(Mutex::new),
    });
    if files.log.is_some() {
        let (files, control) = (Arc::clone(&files), Arc::clone(&control));
        std::thread::Builder::new()
            .name("ringserve-log".into())
            .spawn(move || log_loop(&files, &control))?;
    }
    if let Some(fd) = watch_fd {
        let (files, control) = (Arc::clone(&files), Arc::clone(&control));
        std::thread::Builder::new()
            .name("ringserve-watch".into())
            .spawn(move || watch_loop(fd, &files, &control))?;
    }
    let mut accepting = Vec::with_capacity(listeners.len());
    for (index, listener) in listeners.into_iter().enumerate() {
        // Accepts follow a poll, and must not block if the connection went away meanwhile.
        listener.set_nonblocking(true)?;
        let (settings, files, accept_control) =
            (Arc::clone(&settings), Arc::clone(&files), Arc::clone(&control));
        let spawned = std::thread::Builder::new()
            .name(format!("ringserve-accept-{index}"))
            .spawn(move || accept_loop(&listener, &settings, &files, &accept_control));
        match spawned {
            Ok(handle) => accepting.push(handle),
            Err(e) => {
                control.stop();
                for handle in accepting {
                    let _ = handle.join();
                }
                return Err(e);
            }
        }
    }
    let handle = std::thread::Builder::new().name("ringserve-engine".into()).spawn(move || {
        for handle in accepting {
            let _ = handle.join();
        }
        files.publish_cache();
        files.flush_log();
        Ok(files.recorder.stats.snapshot())
    })?;
    Ok((handle, control))
}

/// The file cache all connection threads share (a lock per request: this is the simple
/// baseline), the clock its freshness is measured by, and the counters and access log (a
/// lock per batch of responses; lines are written with blocking writes under it).
struct Files {
    cache: Mutex<FileCache>,
    started: Instant,
    recorder: Recorder,
    log: Option<Mutex<LogSink>>,
    log_format: Option<crate::observe::access_log::LogFormat>,
}

impl Files {
    fn lock(&self) -> std::sync::MutexGuard<'_, FileCache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes the cache's counters and size to the metrics.
    fn publish_cache(&self) {
        let cache = self.lock();
        self.recorder.stats.set_cache(cache.counters(), cache.len(), cache.bytes());
    }

    fn now_micros(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// Counts and logs the batch's responses (sent, or cut off), then writes the log if due.
    fn finish(&self, batch: &mut Batch, peer: &PeerText) {
        let now = self.now_micros();
        let Some(log) = &self.log else {
            self.recorder.finish(batch, peer, now, None);
            return;
        };
        let mut sink = log.lock().unwrap_or_else(|e| e.into_inner());
        self.recorder.finish(batch, peer, now, Some(&mut sink));
        sink.write_now(false);
        self.recorder.stats.set_log(sink.written, sink.dropped);
    }

    /// Writes whatever the access log holds.
    fn flush_log(&self) {
        if let Some(log) = &self.log {
            let mut sink = log.lock().unwrap_or_else(|e| e.into_inner());
            sink.write_now(true);
            self.recorder.stats.set_log(sink.written, sink.dropped);
        }
    }
}

/// Writes the access log once a second until the server stops (nginx's `flush=1s`).
fn log_loop(files: &Files, control: &Control) {
    while !control.stopping.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(WATCH_POLL_MILLIS as u64));
        files.flush_log();
    }
}

/// Applies the cache's inotify events as they arrive, until the server stops. `fd` stays open
/// as long as the cache, which this thread keeps alive.
fn watch_loop(fd: RawFd, files: &Files, control: &Control) {
    let mut buf = vec![0u8; crate::files::EVENTS_BUFFER_BYTES];
    while !control.stopping.load(Ordering::Acquire) {
        let mut poll = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one live pollfd; the timeout bounds how long a stop waits for this thread.
        let ready = unsafe { libc::poll(&mut poll, 1, WATCH_POLL_MILLIS) };
        // The lock is taken per buffer of events, so a stream of them cannot starve requests.
        while ready > 0 && files.lock().read_events(&mut buf) {}
        files.publish_cache();
    }
}

/// How often the watcher thread looks at the stop flag while no event arrives, and how often
/// the log thread writes the access log.
const WATCH_POLL_MILLIS: i32 = 200;

/// The configuration a connection thread needs.
struct Settings {
    header_timeout: Duration,
    keepalive_timeout: Duration,
    send_timeout: Duration,
    keepalive_requests: u32,
    max_connections: usize,
    limits: ParseLimits,
    site: Arc<crate::site::Site>,
}

impl From<&Config> for Settings {
    fn from(config: &Config) -> Settings {
        Settings {
            header_timeout: config.header_timeout,
            keepalive_timeout: config.keepalive_timeout,
            send_timeout: config.send_timeout,
            keepalive_requests: config.keepalive_requests,
            max_connections: config.max_connections as usize * config.threads,
            limits: config.parse_limits,
            site: Arc::clone(&config.site),
        }
    }
}

/// Accepts on one listener until the server stops, a thread per connection; returns when
/// every connection it started has ended.
fn accept_loop(
    listener: &TcpListener,
    settings: &Arc<Settings>,
    files: &Arc<Files>,
    control: &Arc<Control>,
) {
    let stats = &files.recorder.stats;
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    let mut polls = [
        libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: control.stop_fd.as_raw_fd(), events: libc::POLLIN, revents: 0 },
    ];
    while !control.stopping.load(Ordering::Acquire) {
        // SAFETY: two live pollfds; no timeout: a stop makes the eventfd readable.
        let ready = unsafe { libc::poll(polls.as_mut_ptr(), 2, -1) };
        if ready < 0 || polls[1].revents != 0 {
            continue; // EINTR, or stopping (the loop condition)
        }
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
            Err(_) => {
                // EMFILE and friends: back off instead of spinning.
                stats.count(Event::AcceptError, true);
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        threads.retain(|t| !t.is_finished());
        let open = control.open.lock().unwrap_or_else(|e| e.into_inner()).len();
        if open >= settings.max_connections {
            stats.count(Event::Refused, true);
            continue; // dropped: closed at once
        }
        stats.count(Event::Accepted, true);
        let id = control.next_id.fetch_add(1, Ordering::Relaxed);
        control.open.lock().unwrap_or_else(|e| e.into_inner()).insert(id, stream.as_raw_fd());
        let (settings, files, conn_control) =
            (Arc::clone(settings), Arc::clone(files), Arc::clone(control));
        let spawned =
            std::thread::Builder::new().stack_size(CONNECTION_STACK_BYTES).spawn(move || {
                Connection::new(stream, &settings, files).run();
                conn_control.open.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
            });
        match spawned {
            Ok(handle) => threads.push(handle),
            Err(_) => {
                stats.count(Event::Refused, true);
                control.open.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
            }
        }
    }
    for thread in threads {
        let _ = thread.join();
    }
}

/// One connection's thread state.
struct Connection<'s> {
    stream: TcpStream,
    settings: &'s Settings,
    files: Arc<Files>,
    date: DateCache,
    input: Box<[u8]>,
    input_len: usize,
    batch: Box<Batch>,
    session: Session,
    /// The client's address, for the access log.
    peer: PeerText,
}

impl<'s> Connection<'s> {
    fn new(stream: TcpStream, settings: &'s Settings, files: Arc<Files>) -> Connection<'s> {
        let _ = stream.set_nodelay(true);
        let _ = stream.set_write_timeout(Some(settings.send_timeout));
        let peer = match (&files.log, stream.peer_addr()) {
            (Some(_), Ok(addr)) => PeerText::new(addr),
            _ => PeerText::default(),
        };
        Connection {
            stream,
            settings,
            files,
            date: DateCache::new(),
            input: vec![0u8; INPUT_BUFFER_BYTES].into_boxed_slice(),
            input_len: 0,
            batch: Batch::new(),
            session: Session::default(),
            peer,
        }
    }

    /// Reads requests and writes responses until the connection ends.
    fn run(mut self) {
        let mut head_started: Option<Instant> = None;
        loop {
            self.date.refresh(SystemTime::now());
            let used = self.serve_input();
            self.input.copy_within(used..self.input_len, 0);
            self.input_len -= used;
            if !self.batch.is_empty() {
                let sent = self.write_batch();
                self.files.finish(&mut self.batch, &self.peer);
                self.batch.clear();
                if !sent {
                    return;
                }
                if self.session.closing {
                    self.linger();
                    return;
                }
                head_started = None;
                continue; // more pipelined requests may be waiting in the input
            }
            // Wait for more bytes: the header deadline runs from the first byte of a head.
            let timeout = if self.input_len > 0 {
                let started = *head_started.get_or_insert_with(Instant::now);
                self.settings.header_timeout.saturating_sub(started.elapsed())
            } else {
                self.settings.keepalive_timeout
            };
            match self.read_more(timeout) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if self.input_len > 0 {
                        self.respond_timeout();
                    }
                    return;
                }
                Err(_) => return,
            }
        }
    }

    /// Serves what the input holds, filling the cache (with plain system calls, under the
    /// lock) whenever a request names a path it does not know yet; returns the bytes used.
    fn serve_input(&mut self) -> usize {
        let now_micros = self.files.now_micros();
        let now_ms = now_micros / 1000;
        let log = self.files.log_format;
        let mut used = 0;
        loop {
            let mut cache = self.files.lock();
            let shared = Shared {
                files: &cache,
                now_ms,
                now_micros,
                log,
                date: &self.date,
                limits: &self.settings.limits,
                keepalive_requests: self.settings.keepalive_requests,
                site: &self.settings.site,
            };
            let input = &self.input[used..self.input_len];
            let served = self.session.serve_all(input, &shared, &mut self.batch);
            used += served.used;
            let Some(of) = served.miss else { return used };
            let mut key: KeyBuffer = [0; std::mem::size_of::<KeyBuffer>()];
            let (limits, site) = (&self.settings.limits, &self.settings.site);
            match serve::miss_key(&self.input[used..self.input_len], limits, site, of, &mut key) {
                Some(key) => cache.fill(key, now_ms),
                None => return used, // cannot happen: the miss was for a complete request
            }
        }
    }

    fn read_more(&mut self, timeout: Duration) -> std::io::Result<usize> {
        if timeout.is_zero() {
            return Err(ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(timeout))?;
        let n = self.stream.read(&mut self.input[self.input_len..])?;
        self.input_len += n;
        Ok(n)
    }

    /// Writes the whole batch with sendmsg, resuming after short writes. False on error or
    /// send timeout.
    fn write_batch(&mut self) -> bool {
        while !self.batch.iovecs_sent() {
            // SAFETY: the msghdr and iovecs point into `self.batch` and the entries it holds,
            // both alive and unmodified for the duration of this synchronous call.
            let n = unsafe {
                libc::sendmsg(self.stream.as_raw_fd(), self.batch.msghdr(), libc::MSG_NOSIGNAL)
            };
            if n < 0 {
                if std::io::Error::last_os_error().kind() == ErrorKind::Interrupted {
                    continue;
                }
                return false;
            }
            self.batch.advance(n as usize);
        }
        // Large bodies go with sendfile from the file (zero-copy), like the other engines; the
        // socket is blocking with a send timeout, so each call moves all it is given or fails.
        let sock = self.stream.as_raw_fd();
        while self.batch.file_body().is_some() {
            if !matches!(self.batch.send_file(sock, usize::MAX), FileSend::Moved(_)) {
                return false; // error, send timeout (EAGAIN), or the file shrank under us
            }
        }
        true
    }

    fn respond_timeout(&mut self) {
        let partial = &self.input[..self.input_len];
        let now = self.files.now_micros();
        let log = self.files.log_format;
        let site = &self.settings.site;
        if serve::push_timeout(&mut self.batch, &self.date, site, partial, now, log).is_err() {
            return;
        }
        let sent = self.write_batch();
        self.files.finish(&mut self.batch, &self.peer);
        if sent {
            self.linger();
        }
    }

    /// Half-closes and discards what the client still sends, so it reads our last response
    /// instead of a reset.
    fn linger(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
        let deadline = Instant::now() + Duration::from_secs(LINGER_TIMEOUT_SECS.into());
        let mut sink = [0u8; 4096];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if left.is_zero() || self.stream.set_read_timeout(Some(left)).is_err() {
                break;
            }
            match self.stream.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}
