//! Where access-log lines go: each worker formats lines into its own buffer and writes it out in
//! large writes (through its ring, or with plain `write` in the blocking engine), never one
//! write per request; all workers append to one file opened with `O_APPEND`, which SIGUSR1
//! reopens (logrotate's `create`) and which `copytruncate` may truncate under us.
//!
//! The policy is nginx's (`buffer=64k flush=1s`): write when the buffer fills, every second
//! (the worker's tick), and at reopen and shutdown. One write is in flight per worker at a
//! time; lines keep going into a second buffer meanwhile. When that one is full too (a disk
//! slower than the requests) or the disk fails, lines are dropped and counted, a line on
//! standard error says so at most once a minute, and serving never waits.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::access_log::{self, Line, LogFormat, LogTime, LINE_BYTES_MAX};
use super::errlog::{self, Kind};
use crate::limits::KIB;

/// Lines buffered per worker before they must be written: nginx's `gzip` default buffer. One
/// write per about 400 lines of 160 bytes.
pub const LOG_BUFFER_BYTES: usize = 64 * KIB;

/// A write starts once this much is buffered (or at the tick): half the buffer, so the other
/// half takes lines while the write is in flight.
pub const LOG_WRITE_BYTES: usize = LOG_BUFFER_BYTES / 2;

/// The log file every worker appends to, replaced by `reopen`.
pub struct LogTarget {
    /// The path, or `None` for standard output.
    path: Option<PathBuf>,
    file: Mutex<Arc<OwnedFd>>,
    /// Bumped by each reopen; workers compare it before each write.
    generation: AtomicU64,
}

impl LogTarget {
    /// Opens (creates) `path` for appending; `-` is standard output.
    pub fn open(path: &Path) -> io::Result<LogTarget> {
        let (path, fd) = if path == Path::new("-") {
            (None, io::stdout().as_fd().try_clone_to_owned()?)
        } else {
            (Some(path.to_owned()), open_append(path)?)
        };
        Ok(LogTarget { path, file: Mutex::new(Arc::new(fd)), generation: AtomicU64::new(0) })
    }

    /// Opens the path again (after logrotate renamed the file) and makes workers switch to it
    /// before their next write; writes in flight finish in the old file. Standard output is
    /// never reopened.
    pub fn reopen(&self) -> io::Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        let fd = open_append(path)?;
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(fd);
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// The path, for messages.
    pub fn describe(&self) -> String {
        self.path.as_ref().map_or_else(|| "standard output".to_owned(), |p| p.display().to_string())
    }

    fn current(&self) -> (u64, Arc<OwnedFd>) {
        let file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        (self.generation.load(Ordering::Acquire), Arc::clone(&file))
    }
}

fn open_append(path: &Path) -> io::Result<OwnedFd> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)?;
    Ok(file.into())
}

/// One worker's access log: the buffers, the write in flight and the counts.
pub struct LogSink {
    format: LogFormat,
    time: LogTime,
    target: Arc<LogTarget>,
    generation: u64,
    fd: Arc<OwnedFd>,
    /// Lines being added.
    fill: Vec<u8>,
    fill_lines: u64,
    /// Lines being written (`done` bytes of them already are), empty when none.
    out: Vec<u8>,
    out_lines: u64,
    done: usize,
    /// The file of the write in flight, kept open until its completion.
    in_flight: Option<Arc<OwnedFd>>,
    /// After a failed write, nothing is written before this second (nginx skips the rest of
    /// the second after ENOSPC), so a full disk costs one failed write per second.
    paused_until_secs: i64,
    /// Lines written and dropped.
    pub written: u64,
    pub dropped: u64,
}

impl LogSink {
    /// A sink for `target`; its buffers are allocated now, once.
    pub fn new(format: LogFormat, target: Arc<LogTarget>) -> LogSink {
        let (generation, fd) = target.current();
        LogSink {
            format,
            time: LogTime::default(),
            target,
            generation,
            fd,
            fill: Vec::with_capacity(LOG_BUFFER_BYTES + LINE_BYTES_MAX),
            fill_lines: 0,
            out: Vec::with_capacity(LOG_BUFFER_BYTES + LINE_BYTES_MAX),
            out_lines: 0,
            done: 0,
            in_flight: None,
            paused_until_secs: 0,
            written: 0,
            dropped: 0,
        }
    }

    /// The line format.
    pub fn format(&self) -> LogFormat {
        self.format
    }

    /// Moves the line's clock to `unix_secs`.
    pub fn set_time(&mut self, unix_secs: i64) {
        self.time.update(unix_secs);
    }

    /// Adds one line, or drops it (counted) when the buffer is full. Never allocates: the
    /// buffer has room for a full buffer plus the longest line.
    pub fn append(&mut self, line: &Line<'_>) {
        if self.fill.len() >= LOG_BUFFER_BYTES {
            self.dropped += 1;
            return;
        }
        access_log::write_line(self.format, &self.time, line, &mut self.fill);
        self.fill_lines += 1;
    }

    /// The write to submit now, if one is due: the rest of a short write, or the buffered
    /// lines once there are `LOG_WRITE_BYTES` of them (any amount when `force`: the tick,
    /// a reopen, shutdown). The bytes stay untouched until `on_written`.
    pub fn next_write(&mut self, force: bool, now_secs: i64) -> Option<(RawFd, *const u8, usize)> {
        if self.in_flight.is_some() || now_secs < self.paused_until_secs {
            return None;
        }
        if self.out.is_empty() {
            if self.fill.is_empty() || (!force && self.fill.len() < LOG_WRITE_BYTES) {
                return None;
            }
            std::mem::swap(&mut self.fill, &mut self.out);
            self.out_lines = std::mem::take(&mut self.fill_lines);
            self.done = 0;
            // Between buffers is where a reopen takes effect: no line is split across files.
            if self.target.generation.load(Ordering::Acquire) != self.generation {
                (self.generation, self.fd) = self.target.current();
            }
        }
        self.in_flight = Some(Arc::clone(&self.fd));
        let rest = &self.out[self.done..];
        Some((self.fd.as_raw_fd(), rest.as_ptr(), rest.len()))
    }

    /// The result of the write `next_write` asked for: bytes written, or `-errno`.
    pub fn on_written(&mut self, result: i64, now_secs: i64) {
        self.in_flight = None;
        if result > 0 {
            self.done += result as usize;
            if self.done >= self.out.len() {
                self.written += self.out_lines;
                self.out.clear();
                self.out_lines = 0;
            }
            return;
        }
        // A write of 0 bytes makes no progress: handled as a failure, not retried forever.
        let errno = if result == 0 { libc::EIO } else { -result as i32 };
        self.dropped += self.out_lines;
        self.out.clear();
        self.out_lines = 0;
        self.paused_until_secs = now_secs + 1;
        errlog::report(
            Kind::LogWrite,
            format_args!(
                "access log {}: write failed: {}; lines are dropped ({} so far) while serving \
                 goes on",
                self.target.describe(),
                io::Error::from_raw_os_error(errno),
                self.dropped
            ),
        );
    }

    /// Whether a write is in flight.
    pub fn writing(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Nothing buffered and nothing in flight.
    pub fn is_idle(&self) -> bool {
        self.in_flight.is_none() && self.out.is_empty() && self.fill.is_empty()
    }

    /// Writes what is due with plain blocking `write` calls (the blocking engine, and the
    /// io_uring engine's last flush if its ring is gone).
    pub fn write_now(&mut self, force: bool) {
        let now = access_log::now_secs();
        while let Some((fd, ptr, len)) = self.next_write(force, now) {
            // SAFETY: `ptr..ptr+len` is inside `self.out`, unmodified until `on_written`;
            // the descriptor is kept open by `in_flight`.
            let n = unsafe { libc::write(fd, ptr.cast(), len) };
            let result = if n < 0 { -i64::from(errno()) } else { n as i64 };
            self.on_written(result, now);
            if result <= 0 {
                break;
            }
        }
    }
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> Line<'static> {
        Line {
            addr: b"127.0.0.1",
            request: b"GET / HTTP/1.1",
            status: 200,
            body_bytes: 5,
            referer: None,
            user_agent: None,
            micros: 3,
        }
    }

    #[test]
    fn lines_reach_the_file_in_large_writes_and_a_reopen_switches_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let target = Arc::new(LogTarget::open(&path).unwrap());
        let mut sink = LogSink::new(LogFormat::Combined, Arc::clone(&target));
        sink.append(&line());
        assert!(sink.next_write(false, 0).is_none(), "one line is not worth a write");
        sink.write_now(true);
        assert_eq!(sink.written, 1);
        std::fs::rename(&path, dir.path().join("access.log.1")).unwrap();
        target.reopen().unwrap();
        sink.append(&line());
        sink.append(&line());
        sink.write_now(true);
        assert_eq!(sink.written, 3);
        let old = std::fs::read_to_string(dir.path().join("access.log.1")).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert_eq!((old.lines().count(), new.lines().count()), (1, 2));
        assert!(sink.is_idle());
    }

    #[test]
    fn a_full_buffer_drops_and_counts_and_failures_pause_writing() {
        let dir = tempfile::tempdir().unwrap();
        let target = Arc::new(LogTarget::open(&dir.path().join("a.log")).unwrap());
        let mut sink = LogSink::new(LogFormat::Combined, target);
        let per_line = 60;
        for _ in 0..(LOG_BUFFER_BYTES / per_line + 10) {
            sink.append(&line());
        }
        let (_, _, len) = sink.next_write(false, 10).expect("a full buffer is due");
        // Meanwhile the second buffer fills and overflows.
        for _ in 0..(LOG_BUFFER_BYTES / per_line + 10) {
            sink.append(&line());
        }
        assert!(sink.dropped > 0);
        let dropped_before = sink.dropped;
        sink.on_written(-i64::from(libc::ENOSPC), 10);
        assert!(sink.dropped > dropped_before + (len / per_line) as u64 / 2);
        assert!(sink.next_write(true, 10).is_none(), "paused for the rest of the second");
        assert!(sink.next_write(true, 11).is_some(), "tries again the next second");
    }
}
