//! A batch of responses queued for one send: response heads copied into a fixed area, bodies
//! referenced in place (in the file mappings) through iovecs, so pipelined responses leave in
//! one `sendmsg` and no body byte is copied in user space unless it is tiny and owned.
//!
//! **Invariants:** every iovec points either into `heads` (owned, never reallocated) or into a
//! file mapping of an entry in `entries`; both live until `clear`, which the engines call only after
//! the kernel has finished with the send. Only `Body::Owned` bytes are ever copied here; a
//! mapped body is only handed to the kernel (iovec or sendfile), so a file truncated under its
//! mapping can fail a send but never fault the process.

use std::sync::Arc;

use crate::files::{Body, Entry};
use crate::http::response::{HeadWriter, Overflow};
use crate::limits::{BATCH_HEAD_BYTES, BATCH_IOVEC_COUNT, RESPONSE_HEAD_BYTES_MAX};
use crate::observe::access_log::{self, LogFormat, RequestText};

/// Bodies up to this size are copied next to their head: one contiguous run of bytes costs the
/// kernel less than an extra iovec, and a pipelined burst of small files becomes one segment.
pub const INLINE_BODY_BYTES_MAX: usize = 2048;

/// Bodies at least this large are sent from their file with `sendfile` (the kernel hands page-cache
/// pages to the socket: no copy in user space or into the socket buffer) instead of from the
/// mapping with sendmsg, which copies every byte into the socket buffer. Measured with sendfile
/// (loopback, 100 connections, server CPU-us per request and req/s, sendfile vs copy): under
/// loadgen copying costs less from 32 to 128 KiB (32 KiB 8.3/6.9, 96 KiB 16.0/13.6), under wrk it
/// serves 6-19% fewer requests at every size and costs both cores as much or more (32 KiB
/// 20.8/22.4, 128 KiB 55/73 us); the copying client is the common one, so zero-copy from 24 KiB
/// stays. Files this small are read into memory at scan time (16 KiB and below) and have no file to
/// send from.
pub const FILE_BODY_BYTES_MIN: usize = 24 * 1024;

/// Bytes of a file body one `sendfile` call may move before the connection yields to others.
/// Without a cap one call queued a whole 1 MiB body in the socket, which is cheap for a client
/// that reads in user space and costly for one that drains in the kernel (what the congestion
/// control does not let out at once is paced by timer). Measured with the unsent cap
/// (`limits::UNSENT_BYTES_MAX`), io_uring engine, 1 MiB file, 100 connections, medians of 3
/// rounds, req/s and server CPU-us per request, 512 KiB against the alternative: 4 MiB (a whole
/// body per call) lost under loadgen (6,945 143 vs 4,968 200) and under wrk (143 vs 153 us);
/// 256 KiB tied under loadgen (142 vs 142 us) and lost under wrk (5,917 148 vs 5,111 181).
pub const FILE_STEP_BYTES_MAX: usize = 512 * 1024;

/// A body sent from its file (`sendfile`) after the batch's iovecs are sent.
#[derive(Debug, Clone, Copy)]
pub struct FileBody {
    /// The file, kept open by an entry the batch holds.
    pub fd: std::os::fd::RawFd,
    /// Next file offset to send.
    pub offset: u64,
    /// Bytes not yet sent.
    pub left: u64,
    /// The body's first byte in the mapping and its file offset, for a fallback to sendmsg.
    mapped: *const u8,
    first_offset: u64,
}

/// What one `Batch::send_file` call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileSend {
    /// This many bytes were sent (the body is done when `Batch::file_body` is `None`).
    Moved(usize),
    /// The socket is full (EAGAIN): wait until it is writable.
    Blocked,
    /// The connection failed, or the file shrank under the body.
    Failed,
}

/// What the access log and the counters need of one queued response.
#[derive(Debug, Clone, Copy)]
pub struct Exchange {
    /// The status code sent.
    pub status: u16,
    /// The method's metric label (`observe::stats::method_index`).
    pub method: u8,
    /// When `serve` answered it, by the engine's clock in microseconds.
    pub served_micros: u64,
    /// Where its body starts in the batch's byte stream, and its length.
    body_start: u64,
    body_len: u64,
    /// Its escaped request text in the batch's `log_text`: start, end of the request line,
    /// of the Referer and of the User-Agent; a field is absent when `has` lacks its bit.
    text: [u32; 4],
    has: u8,
}

const HAS_REFERER: u8 = 1;
const HAS_USER_AGENT: u8 = 2;

/// Where an exchange's request text is.
pub struct TextOf<'a> {
    exchange: &'a Exchange,
    text: &'a [u8],
}

impl<'a> TextOf<'a> {
    /// The text, escaped for the log's format (empty when the batch was served without one).
    pub fn get(&self) -> ExchangeText<'a> {
        let [start, line, referer, agent] = self.exchange.text.map(|n| n as usize);
        let has = self.exchange.has;
        let text = self.text;
        let field = |bit: u8, from: usize, to: usize| {
            (has & bit != 0).then(|| text.get(from..to).unwrap_or_default())
        };
        ExchangeText {
            request: text.get(start..line).unwrap_or_default(),
            referer: field(HAS_REFERER, line, referer),
            user_agent: field(HAS_USER_AGENT, referer, agent),
        }
    }
}

/// An exchange's request text, escaped for the log's format.
pub struct ExchangeText<'a> {
    pub request: &'a [u8],
    pub referer: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
}

/// Responses waiting to be sent on one connection.
pub struct Batch {
    heads: Box<[u8]>,
    heads_len: usize,
    iov: Box<[libc::iovec]>,
    iov_len: usize,
    /// First iovec not yet completely sent.
    iov_next: usize,
    /// Bytes queued and not yet sent.
    remaining_bytes: usize,
    /// The entries whose bytes (read or mapped) iovecs point into, kept alive until `clear`
    /// even if the cache evicts or replaces them meanwhile. Allocated once, at most one per
    /// response.
    entries: Vec<Arc<Entry>>,
    /// The message header handed to `sendmsg`; its address must not move while a send is in
    /// flight, so batches are always boxed.
    msg: libc::msghdr,
    /// A large body that follows the iovecs; a batch with one takes no further responses.
    file: Option<FileBody>,
    /// One per queued response, for the access log and the counters. Allocated once.
    exchanges: Vec<Exchange>,
    /// The exchanges' request text, escaped (only with an access log). Grows to the largest
    /// batch's need once, then is reused with the batch.
    log_text: Vec<u8>,
    /// Bytes of the stream queued (heads, bodies, the file body) and sent so far.
    queued_bytes: u64,
    sent_bytes: u64,
}

impl Batch {
    /// An empty batch with its memory allocated.
    pub fn new() -> Box<Batch> {
        let empty = libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 };
        Box::new(Batch {
            heads: vec![0u8; BATCH_HEAD_BYTES].into_boxed_slice(),
            heads_len: 0,
            iov: vec![empty; BATCH_IOVEC_COUNT].into_boxed_slice(),
            iov_len: 0,
            iov_next: 0,
            remaining_bytes: 0,
            entries: Vec::with_capacity(BATCH_IOVEC_COUNT / 2),
            // SAFETY: msghdr is a plain C struct for which all-zero bytes is a valid value
            // (null pointers, zero lengths).
            msg: unsafe { std::mem::zeroed() },
            file: None,
            exchanges: Vec::with_capacity(BATCH_IOVEC_COUNT / 2),
            log_text: Vec::new(),
            queued_bytes: 0,
            sent_bytes: 0,
        })
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.remaining_bytes == 0 && self.file.is_none()
    }

    /// Whether the iovecs are all sent (a file body may still follow).
    pub fn iovecs_sent(&self) -> bool {
        self.remaining_bytes == 0
    }

    /// Whether one more response of any kind fits.
    pub fn has_room(&self) -> bool {
        self.file.is_none()
            && self.iov_len + 2 <= self.iov.len()
            && self.heads.len() - self.heads_len >= RESPONSE_HEAD_BYTES_MAX
    }

    /// Queues a response with a file's body: owned bytes like `push`; a mapped slice by
    /// reference (an iovec the kernel reads), or marked for sending from its file when large.
    pub fn push_file(
        &mut self,
        write: impl FnOnce(&mut HeadWriter<'_>) -> Result<(), Overflow>,
        body: Body<'_>,
    ) -> Result<(), Overflow> {
        let mapped = match body {
            Body::Owned(bytes) => return self.push(write, bytes),
            Body::Mapped(mapped) => mapped,
        };
        self.push(write, &[])?;
        if mapped.is_empty() {
            return Ok(());
        }
        if let Some(last) = self.exchanges.last_mut() {
            last.body_len = mapped.len() as u64;
        }
        // Any part of a large file is sent from the file, small ranges too: then its mapping is
        // never read and costs the process no memory (`Entry::weight` counts none of it).
        if !mapped.from_file() {
            self.push_iov(mapped.addr(), mapped.len());
            return Ok(());
        }
        let (fd, offset) = mapped.file();
        self.queued_bytes += mapped.len() as u64;
        self.file = Some(FileBody {
            fd,
            offset,
            left: mapped.len() as u64,
            mapped: mapped.addr(),
            first_offset: offset,
        });
        Ok(())
    }

    /// The body to send from its file once the iovecs are sent, if any.
    pub fn file_body(&self) -> Option<&FileBody> {
        self.file.as_ref()
    }

    /// Sends up to `max` bytes of the file body to socket `sock` with one `sendfile` (the
    /// socket non-blocking, or blocking with a send timeout), and accounts for them; the body
    /// is forgotten once all of it left. Shared by the three engines.
    pub fn send_file(&mut self, sock: std::os::fd::RawFd, max: usize) -> FileSend {
        let Some(body) = self.file.as_mut() else { return FileSend::Moved(0) };
        let count = (body.left as usize).min(max);
        let mut offset = body.offset as libc::off_t;
        let n = loop {
            // SAFETY: `offset` is a live local; the file is kept open by an entry this batch
            // holds, and the socket by its connection, for this synchronous call.
            let n = unsafe { libc::sendfile(sock, body.fd, &mut offset, count) };
            if n >= 0 {
                break n as usize;
            }
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => return FileSend::Blocked,
                _ => return FileSend::Failed,
            }
        };
        if n == 0 && count > 0 {
            return FileSend::Failed; // the file shrank under us
        }
        body.offset += n as u64;
        body.left -= n as u64;
        if body.left == 0 {
            self.file = None;
        }
        self.sent_bytes += n as u64;
        FileSend::Moved(n)
    }

    /// Turns what is left of the file body into an iovec over its mapping, for when it cannot
    /// be sent from the file. Returns false if there is no body or no free iovec.
    pub fn file_to_iovec(&mut self) -> bool {
        match self.file {
            Some(body) if self.iov_len < self.iov.len() => {
                self.file = None;
                let done = (body.offset - body.first_offset) as usize;
                // Already counted as queued when it was marked for sending from the file.
                self.queued_bytes -= body.left;
                self.push_iov(body.mapped.wrapping_add(done), body.left as usize);
                true
            }
            _ => false,
        }
    }

    /// Keeps `entry` alive until the batch is cleared: call before queuing a body that points
    /// into it. One atomic increment, no allocation (a batch holds at most one entry per
    /// response, and `has_room` bounds responses by iovecs).
    pub fn hold(&mut self, entry: &Arc<Entry>) -> Result<(), Overflow> {
        if self.entries.last().is_some_and(|last| Arc::ptr_eq(last, entry)) {
            return Ok(());
        }
        if self.entries.len() == self.entries.capacity() {
            return Err(Overflow);
        }
        self.entries.push(Arc::clone(entry));
        Ok(())
    }

    /// Queues one response: a head written by `write`, then `body`, memory the server owns
    /// that lives in a held entry or is `'static` (small bodies are copied behind the head).
    /// Nothing is queued if the head does not fit.
    pub fn push(
        &mut self,
        write: impl FnOnce(&mut HeadWriter<'_>) -> Result<(), Overflow>,
        body: &[u8],
    ) -> Result<(), Overflow> {
        if self.iov_len + 2 > self.iov.len() || self.exchanges.len() == self.exchanges.capacity() {
            return Err(Overflow);
        }
        let start = self.heads_len;
        let mut writer = HeadWriter::new(&mut self.heads[start..]);
        write(&mut writer)?;
        let mut head_len = writer.len();
        self.exchanges.push(Exchange {
            status: writer.status(),
            method: 0,
            served_micros: 0,
            body_start: self.queued_bytes + head_len as u64,
            body_len: body.len() as u64,
            text: [0; 4],
            has: 0,
        });
        let inline = body.len() <= INLINE_BODY_BYTES_MAX && writer.put(body).is_ok();
        if inline {
            head_len += body.len();
        }
        self.heads_len += head_len;
        self.push_iov(self.heads[start..].as_ptr(), head_len);
        if !inline && !body.is_empty() {
            self.push_iov(body.as_ptr(), body.len());
        }
        Ok(())
    }

    /// Notes what the access log and counters need of the response just queued: its method
    /// label, when it was answered and, with a log, its request text escaped for `log`.
    pub fn annotate(
        &mut self,
        method: u8,
        served_micros: u64,
        log: Option<LogFormat>,
        text: &RequestText<'_>,
    ) {
        let Some(last) = self.exchanges.last_mut() else { return };
        last.method = method;
        last.served_micros = served_micros;
        let Some(format) = log else { return };
        let out = &mut self.log_text;
        let mut ends = [out.len() as u32; 4];
        access_log::escape(format, text.line, out);
        ends[1] = out.len() as u32;
        if let Some(referer) = text.referer {
            access_log::escape(format, referer, out);
            last.has |= HAS_REFERER;
        }
        ends[2] = out.len() as u32;
        if let Some(agent) = text.user_agent {
            access_log::escape(format, agent, out);
            last.has |= HAS_USER_AGENT;
        }
        ends[3] = out.len() as u32;
        last.text = ends;
    }

    /// Hands each queued response to `each` with the body bytes of it that were sent (and a
    /// handle to its request text, read only if the log needs it), then forgets them. Call
    /// when the batch is done: sent, or its connection ended.
    pub fn finish_exchanges(&mut self, mut each: impl FnMut(&Exchange, u64, TextOf<'_>)) {
        for exchange in &self.exchanges {
            let sent = self.sent_bytes.saturating_sub(exchange.body_start).min(exchange.body_len);
            each(exchange, sent, TextOf { exchange, text: &self.log_text });
        }
        self.exchanges.clear();
        self.log_text.clear();
    }

    /// Appends an iovec, merging it with the previous one when the bytes are contiguous.
    fn push_iov(&mut self, base: *const u8, len: usize) {
        if len == 0 {
            return;
        }
        self.remaining_bytes += len;
        self.queued_bytes += len as u64;
        if let Some(last) = self.iov[..self.iov_len].last_mut() {
            if (last.iov_base as *const u8).wrapping_add(last.iov_len) == base {
                last.iov_len += len;
                return;
            }
        }
        self.iov[self.iov_len] = libc::iovec { iov_base: base as *mut libc::c_void, iov_len: len };
        self.iov_len += 1;
    }

    /// Records that the kernel sent `sent_bytes`; returns whether everything is sent.
    pub fn advance(&mut self, sent_bytes: usize) -> bool {
        let mut left = sent_bytes.min(self.remaining_bytes);
        self.remaining_bytes -= left;
        self.sent_bytes += left as u64;
        while left > 0 && self.iov_next < self.iov_len {
            let iov = &mut self.iov[self.iov_next];
            if left >= iov.iov_len {
                left -= iov.iov_len;
                self.iov_next += 1;
            } else {
                iov.iov_base = (iov.iov_base as *mut u8).wrapping_add(left) as *mut libc::c_void;
                iov.iov_len -= left;
                left = 0;
            }
        }
        self.remaining_bytes == 0
    }

    /// The iovecs still to send.
    pub fn pending(&self) -> &[libc::iovec] {
        &self.iov[self.iov_next..self.iov_len]
    }

    /// A message header over the pending iovecs, for `sendmsg`. The pointer stays valid until
    /// the batch is modified or dropped.
    pub fn msghdr(&mut self) -> *const libc::msghdr {
        let pending = &self.iov[self.iov_next..self.iov_len];
        self.msg.msg_iov = pending.as_ptr() as *mut libc::iovec;
        self.msg.msg_iovlen = pending.len();
        &self.msg
    }

    /// Bytes not yet sent.
    pub fn remaining_bytes(&self) -> usize {
        self.remaining_bytes
    }

    /// Empties the batch and releases the entries. Call only when no send is in flight.
    pub fn clear(&mut self) {
        self.heads_len = 0;
        self.iov_len = 0;
        self.iov_next = 0;
        self.remaining_bytes = 0;
        self.entries.clear();
        self.file = None;
        self.exchanges.clear();
        self.log_text.clear();
        self.queued_bytes = 0;
        self.sent_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gather(batch: &Batch) -> Vec<u8> {
        let mut out = Vec::new();
        for iov in batch.pending() {
            // SAFETY: test-only: every pending iovec points into `batch.heads` or a static
            // slice, both alive for this call.
            out.extend_from_slice(unsafe {
                std::slice::from_raw_parts(iov.iov_base as *const u8, iov.iov_len)
            });
        }
        out
    }

    static BIG: [u8; 5000] = [b'x'; 5000];

    #[test]
    fn small_bodies_are_inlined_and_large_ones_referenced() {
        let mut batch = Batch::new();
        batch.push(|w| w.put(b"HEAD1\r\n"), b"small").unwrap();
        batch.push(|w| w.put(b"HEAD2\r\n"), &BIG).unwrap();
        assert_eq!(batch.pending().len(), 2, "head1+small+head2 are contiguous");
        let bytes = gather(&batch);
        assert!(bytes.starts_with(b"HEAD1\r\nsmallHEAD2\r\nxxx"));
        assert_eq!(bytes.len(), 19 + 5000);
        assert_eq!(batch.remaining_bytes(), bytes.len());
    }

    #[test]
    fn short_sends_resume_where_they_stopped() {
        let mut batch = Batch::new();
        batch.push(|w| w.put(b"AAAA"), &BIG).unwrap();
        assert!(!batch.advance(2));
        assert!(gather(&batch).starts_with(b"AAx"));
        assert!(!batch.advance(2 + 4000));
        assert_eq!(gather(&batch).len(), 1000);
        assert!(batch.advance(1000));
        assert!(batch.is_empty());
    }

    /// The cache's entry for a file of `len` bytes (mapped, since it is large).
    fn large_entry(dir: &std::path::Path, len: usize) -> Arc<Entry> {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(dir.join("f.bin"), bytes).unwrap();
        crate::files::entry_of(dir, "f.bin")
    }

    #[test]
    fn a_file_body_goes_by_sendfile_in_steps_and_stops_on_a_full_socket() {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let len = 1 << 20;
        let entry = large_entry(dir.path(), len);
        let mut batch = Batch::new();
        batch.hold(&entry).unwrap();
        batch.push_file(|w| w.put(b"HEAD"), entry.body()).unwrap();
        assert_eq!(batch.file_body().map(|b| b.left), Some(len as u64));
        let (sender, mut receiver) = std::os::unix::net::UnixStream::pair().unwrap();
        sender.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let mut blocked = 0;
        while batch.file_body().is_some() {
            match batch.send_file(sender.as_raw_fd(), 64 << 10) {
                FileSend::Moved(n) => assert!(n > 0 && n <= 64 << 10, "one step, at most max"),
                FileSend::Blocked => {
                    blocked += 1;
                    let mut buf = vec![0u8; 256 << 10];
                    let n = receiver.read(&mut buf).unwrap();
                    got.extend_from_slice(&buf[..n]);
                }
                FileSend::Failed => panic!("sendfile failed"),
            }
        }
        drop(sender);
        receiver.read_to_end(&mut got).unwrap();
        assert!(blocked > 0, "a 1 MiB body fills a socket pair's buffer");
        assert_eq!(got, std::fs::read(dir.path().join("f.bin")).unwrap());
        assert_eq!(batch.remaining_bytes(), 4, "only the head is left, for its own send");
    }

    #[test]
    fn a_file_that_shrank_under_its_body_fails_the_send() {
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let entry = large_entry(dir.path(), 100 << 10);
        let mut batch = Batch::new();
        batch.hold(&entry).unwrap();
        batch.push_file(|w| w.put(b"HEAD"), entry.body()).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("f.bin"))
            .unwrap()
            .set_len(0)
            .unwrap();
        let (sender, _receiver) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(batch.send_file(sender.as_raw_fd(), usize::MAX), FileSend::Failed);
    }
}
