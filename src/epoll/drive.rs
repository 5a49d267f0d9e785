//! A connection's life between events: read what the socket holds, serve it into a batch,
//! send the batch, and wait; the 408 for slow heads, the lingering half-close after a last
//! response, and closing.
//!
//! Backpressure: nothing is read while a send waits for EPOLLOUT, and at most one input
//! buffer is read ahead, so a client that pipelines without reading is stopped by its socket's
//! receive window, not by our memory.

use super::conn::{Phase, Timer, NIL};
use super::send::{send_batch, Sent};
use super::{errno, Worker, DRIVE_BYTES_PER_TURN_MAX};
use crate::limits::INPUT_BUFFER_BYTES;
use crate::observe::stats::Event;
use crate::serve::{self, KeyBuffer};

/// Cache fills one serve of a connection's input may run before it gives up on the input
/// (the connection closes). Each fill answers the key it was asked for, so a request needs at
/// most three (its path, then an error page or the fallback, then a listing); this bounds a
/// cache that could not keep an answer at all.
const FILLS_PER_SERVE_MAX: usize = 64;

/// Bytes discarded per read while lingering.
const LINGER_READ_BYTES: usize = 4096;

/// Reads one lingering connection may make per loop turn before it waits for the end of the
/// turn: a client that keeps sending cannot keep the worker to itself.
const LINGER_READS_PER_TURN_MAX: usize = 64;

/// What reading found.
enum Read {
    /// Bytes arrived (maybe none, if the socket was drained already).
    Bytes(usize),
    /// The connection failed (reset).
    Failed,
}

impl Worker {
    /// Handles an epoll event for connection `index`, unless it ended since.
    pub(super) fn on_conn_event(&mut self, index: u32, generation: u32, flags: u32) {
        let Some(conn) = self.conns.current(index, generation) else { return };
        if flags & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0
        {
            conn.readable = true;
        }
        if flags & (libc::EPOLLRDHUP | libc::EPOLLHUP) as u32 != 0 {
            conn.rdhup = true;
        }
        if conn.sending {
            if flags & (libc::EPOLLOUT | libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0 {
                self.resume_send(index);
            }
            return;
        }
        self.drive(index);
    }

    /// Reads, serves and sends until the connection must wait for the client (or has used its
    /// share of the turn).
    pub(super) fn drive(&mut self, index: u32) {
        let mut budget = DRIVE_BYTES_PER_TURN_MAX;
        let mut progressed = false;
        loop {
            let conn = self.conns.get(index);
            match conn.phase {
                Phase::Free => return,
                Phase::Lingering => return self.discard(index),
                Phase::Open => {}
            }
            if conn.sending {
                return;
            }
            if conn.readable && !conn.eof && budget > 0 {
                match self.read_input(index) {
                    Read::Failed => return self.close(index),
                    Read::Bytes(n) => budget = budget.saturating_sub(n),
                }
            }
            if !self.serve_input(index) {
                return self.close(index);
            }
            if self.conns.get(index).batch != NIL {
                progressed = true;
                match self.send(index, &mut budget) {
                    Sent::Done => {
                        self.finish_batch(index);
                        if self.conns.get(index).session.closing {
                            return self.linger(index);
                        }
                        continue;
                    }
                    Sent::Blocked => return self.wait_writable(index),
                    Sent::Yield => {
                        self.conns.get(index).sending = true;
                        return self.queue(index);
                    }
                    Sent::Failed => return self.close(index),
                }
            }
            let conn = self.conns.get(index);
            if conn.eof {
                // Everything the client sent is answered and sent; what is left is at most
                // part of a request that can never complete.
                return self.close(index);
            }
            if conn.readable {
                if budget == 0 {
                    return self.queue(index);
                }
                if conn.input_len == INPUT_BUFFER_BYTES {
                    // Cannot happen: the input holds a maximal head, and serving answers (or
                    // refuses) every complete one; never spin on it.
                    return self.close(index);
                }
                continue;
            }
            return self.wait_readable(index, progressed);
        }
    }

    /// Nothing to do until the client sends more: lend the input buffer back if empty, and run
    /// the header timer (from a head's first byte, never extended) or the idle one.
    fn wait_readable(&mut self, index: u32, progressed: bool) {
        let conn = self.conns.get(index);
        if conn.input != NIL && conn.input_len == 0 {
            self.inputs.put(conn.input);
            conn.input = NIL;
        }
        let timer = if conn.input != NIL { Timer::Header } else { Timer::Idle };
        let body_arriving = timer == Timer::Idle && conn.session.skip_bytes > 0;
        if conn.timer() != timer || progressed || body_arriving {
            let ticks = if timer == Timer::Header { self.ticks.header } else { self.ticks.idle };
            self.conns.arm(index, timer, self.now + ticks);
        }
    }

    /// The socket is full: wait for EPOLLOUT with the send timer running.
    fn wait_writable(&mut self, index: u32) {
        self.conns.get(index).sending = true;
        self.conns.arm(index, Timer::Send, self.now + self.ticks.send);
    }

    /// EPOLLOUT (or an error) for a connection whose send waits.
    pub(super) fn resume_send(&mut self, index: u32) {
        let mut budget = DRIVE_BYTES_PER_TURN_MAX;
        match self.send(index, &mut budget) {
            Sent::Done => {
                self.conns.get(index).sending = false;
                self.finish_batch(index);
                if self.conns.get(index).session.closing {
                    return self.linger(index);
                }
                // Bytes that arrived meanwhile wait in the socket: read and serve them.
                self.conns.get(index).readable = true;
                if budget == 0 {
                    self.queue(index);
                } else {
                    self.drive(index);
                }
            }
            Sent::Blocked => self.wait_writable(index),
            Sent::Yield => self.queue(index),
            Sent::Failed => self.close(index),
        }
    }

    fn send(&mut self, index: u32, budget: &mut usize) -> Sent {
        let conn = self.conns.get(index);
        let fd = conn.fd;
        send_batch(fd, self.batches.get(conn.batch), budget)
    }

    /// Reads until the socket is drained, the input is full, or the client ended its stream.
    fn read_input(&mut self, index: u32) -> Read {
        let conn = self.conns.get(index);
        if conn.input == NIL {
            conn.input = self.inputs.take();
        }
        let input = self.inputs.get(conn.input);
        let mut total = 0;
        loop {
            let room = INPUT_BUFFER_BYTES - conn.input_len;
            if room == 0 {
                return Read::Bytes(total); // still readable: served first, then read again
            }
            // SAFETY: writes at most `room` bytes into the pooled input buffer, from
            // `input_len` on, which is inside it.
            let n =
                unsafe { libc::read(conn.fd, input.as_mut_ptr().add(conn.input_len).cast(), room) };
            if n > 0 {
                let n = n as usize;
                conn.input_len += n;
                total += n;
                // A short read drained the socket: bytes arriving later raise a new edge. Not
                // after a half-close was signalled, whose end of stream only a read shows.
                if n < room && !conn.rdhup {
                    conn.readable = false;
                    return Read::Bytes(total);
                }
                continue;
            }
            if n == 0 {
                conn.eof = true;
                conn.readable = false;
                conn.session.peer_closed = true;
                return Read::Bytes(total);
            }
            match errno() {
                libc::EINTR => continue,
                libc::EAGAIN => {
                    conn.readable = false;
                    return Read::Bytes(total);
                }
                _ => return Read::Failed,
            }
        }
    }

    /// Serves what the input holds into the connection's batch, filling the cache in place
    /// whenever a request names a path it does not know yet. False if the connection must
    /// close (a cache that cannot keep an answer).
    ///
    /// The fill runs plain system calls on this thread (`FileCache::fill`, as the blocking
    /// engine does): on a cold disk it blocks the worker and every connection on it, as nginx
    /// does without `aio threads`. Directory listings are made the same way.
    fn serve_input(&mut self, index: u32) -> bool {
        let conn = self.conns.get(index);
        if conn.input == NIL || conn.input_len == 0 {
            return true;
        }
        if conn.batch == NIL {
            conn.batch = self.batches.take();
        }
        let input = self.inputs.get(conn.input);
        let batch = self.batches.get(conn.batch);
        let log = self.log.as_ref().map(|log| log.format());
        let mut used = 0;
        let mut fills = 0;
        loop {
            let shared = self.serving.shared(&self.files, self.now_ms, self.now_micros, log);
            let served = conn.session.serve_all(&input[used..conn.input_len], &shared, batch);
            used += served.used;
            let Some(of) = served.miss else { break };
            fills += 1;
            if fills > FILLS_PER_SERVE_MAX {
                return false;
            }
            let mut key: KeyBuffer = [0; std::mem::size_of::<KeyBuffer>()];
            let (limits, site) = (&self.serving.limits, &self.serving.site);
            match serve::miss_key(&input[used..conn.input_len], limits, site, of, &mut key) {
                Some(key) => self.files.fill(key, self.now_ms),
                None => break, // cannot happen: the miss was for a complete request
            }
        }
        input.copy_within(used..conn.input_len, 0);
        conn.input_len -= used;
        if batch.is_empty() {
            self.batches.put(conn.batch);
            conn.batch = NIL;
        }
        true
    }

    /// The batch is sent (or its connection ended): count and log its responses, lend it back.
    pub(super) fn finish_batch(&mut self, index: u32) {
        let conn = self.conns.get(index);
        if conn.batch == NIL {
            return;
        }
        let batch = self.batches.get(conn.batch);
        let sent = batch.is_empty();
        self.recorder.finish(batch, &conn.peer, self.now_micros, self.log.as_mut());
        batch.clear();
        self.batches.put(conn.batch);
        conn.batch = NIL;
        if sent {
            self.recorder.stats.count(Event::Sent, false);
        }
    }

    /// 408 for a client that did not finish its request head in time, then close.
    pub(super) fn respond_timeout(&mut self, index: u32) {
        let conn = self.conns.get(index);
        if conn.phase != Phase::Open || conn.sending || conn.input == NIL || conn.batch != NIL {
            return self.close(index);
        }
        conn.session.closing = true;
        conn.batch = self.batches.take();
        let batch = self.batches.get(conn.batch);
        let partial = &self.inputs.get(conn.input)[..conn.input_len];
        let log = self.log.as_ref().map(|log| log.format());
        let (date, site) = (&self.serving.date, &self.serving.site);
        let queued = serve::push_timeout(batch, date, site, partial, self.now_micros, log).is_ok();
        self.inputs.put(conn.input);
        conn.input = NIL;
        conn.input_len = 0;
        if !queued {
            return self.close(index);
        }
        let mut budget = DRIVE_BYTES_PER_TURN_MAX;
        match self.send(index, &mut budget) {
            Sent::Done => {
                self.finish_batch(index);
                self.linger(index);
            }
            Sent::Blocked | Sent::Yield => self.wait_writable(index),
            Sent::Failed => self.close(index),
        }
    }

    /// After the last response: half-close and read until the client closes, so it receives
    /// the response rather than a reset caused by unread bytes.
    pub(super) fn linger(&mut self, index: u32) {
        let conn = self.conns.get(index);
        if conn.eof {
            return self.close(index);
        }
        conn.phase = Phase::Lingering;
        conn.readable = true;
        if conn.input != NIL {
            self.inputs.put(conn.input);
            conn.input = NIL;
            conn.input_len = 0;
        }
        // SAFETY: shutdown of a socket this connection owns; no pointer.
        unsafe { libc::shutdown(conn.fd, libc::SHUT_WR) };
        self.conns.arm(index, Timer::Linger, self.now + self.ticks.linger);
        self.discard(index);
    }

    /// Reads and drops what a lingering client sends, until it closes (then we close).
    fn discard(&mut self, index: u32) {
        let conn = self.conns.get(index);
        let fd = conn.fd;
        let mut sink = [0u8; LINGER_READ_BYTES];
        for _ in 0..LINGER_READS_PER_TURN_MAX {
            // SAFETY: reads into a live local buffer of its length.
            let n = unsafe { libc::read(fd, sink.as_mut_ptr().cast(), sink.len()) };
            if n > 0 {
                continue;
            }
            if n < 0 && errno() == libc::EINTR {
                continue;
            }
            if n < 0 && errno() == libc::EAGAIN {
                self.conns.get(index).readable = false;
                return;
            }
            return self.close(index); // the client closed, or reset
        }
        self.queue(index);
    }

    /// Closes the socket (which leaves the epoll set with it) and frees the record; a batch
    /// still queued is counted and logged with the bytes that left.
    pub(super) fn close(&mut self, index: u32) {
        let conn = self.conns.get(index);
        if conn.phase == Phase::Free {
            return;
        }
        self.finish_batch(index);
        let conn = self.conns.get(index);
        if conn.input != NIL {
            self.inputs.put(conn.input);
            conn.input = NIL;
            conn.input_len = 0;
        }
        // SAFETY: the connection owns this descriptor; the record is released right after,
        // so it is closed once.
        unsafe { libc::close(conn.fd) };
        self.conns.release(index);
    }
}
