//! Accepting connections and receiving requests: the multishot accept, the multishot recv with
//! its byte limit and the one place that decides whether a connection should receive
//! (`settle_recv`), input and held buffers (backpressure), and serving what arrived (with the
//! file cache filled on a miss).

use std::os::fd::{AsRawFd, RawFd};

use io_uring::{cqueue, opcode, types};

use super::buf_ring::BUFFER_GROUP;
use super::slots::{Phase, Timer, NO_BUFFER};
use super::token::{Op, Token};
use super::{fixed, ring, Worker};
use crate::limits::{
    HELD_BUFFERS_PER_CONNECTION_MAX, HELD_BUFFERS_TOTAL_MAX, INPUT_BUFFER_BYTES, RECV_BUFFER_BYTES,
};
use crate::observe::errlog::{self, Kind};
use crate::observe::stats::Event;
use crate::serve::{self, KeyBuffer};

impl Worker {
    /// Arms the multishot accept of listener `listener`; its token carries the index.
    pub(super) fn arm_accept(&mut self, listener: usize) {
        let Some(listening) = self.listeners.get_mut(listener) else { return };
        // Direct accept (Linux 5.19): each socket goes straight into the ring's fixed-file
        // table and is never a process descriptor, so later operations skip the fd-table
        // lookup and refcounting (shared by all threads), and no descriptor number can be
        // reused under an operation in flight. Non-blocking: the ring polls for readiness
        // either way, and the worker's own sendfile of a large body (send.rs) must return
        // EAGAIN on a full socket instead of waiting for the client.
        let entry = opcode::AcceptMulti::new(types::Fd(listening.fd.as_raw_fd()))
            .allocate_file_index(true)
            .flags(libc::SOCK_NONBLOCK)
            .build()
            .user_data(accept_token(listener).pack());
        listening.armed = true;
        // SAFETY: multishot accept without a sockaddr carries no pointer.
        unsafe { ring::push(&mut self.ring, &entry) };
    }

    pub(super) fn arm_recv(&mut self, index: u32) {
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

    pub(super) fn on_accept(&mut self, listener: usize, result: i32, flags: u32) {
        let Some(listening) = self.listeners.get_mut(listener) else { return };
        if !cqueue::more(flags) {
            listening.armed = false;
        }
        let peer_addr_len = listening.peer_addr_len;
        if result < 0 {
            if result != -libc::ECANCELED {
                self.recorder.stats.count(Event::AcceptError, false);
                let error = std::io::Error::from_raw_os_error(-result);
                errlog::report(
                    Kind::Descriptors,
                    format_args!("accept failed: {error}; new connections wait a second"),
                );
                // EMFILE/ENFILE/ENOMEM: retry on the next tick, not in a busy loop.
                self.listeners[listener].backoff = true;
            }
        } else {
            self.on_accepted(result, peer_addr_len);
        }
        let listening = &self.listeners[listener];
        if !listening.armed && !listening.backoff && self.draining_until.is_none() {
            self.arm_accept(listener);
        }
    }

    pub(super) fn on_accepted(&mut self, fd: RawFd, peer_addr_len: u32) {
        let refuse = self.slots.live() >= self.max_connections || self.draining_until.is_some();
        let opened = if refuse { None } else { self.slots.open(fd) };
        match opened {
            Some(index) => {
                self.recorder.stats.count(Event::Accepted, false);
                self.ask_peer(index, peer_addr_len);
                self.arm_recv(index);
                self.slots.arm(index, Timer::Header, self.now + self.ticks.header);
            }
            None => {
                self.recorder.stats.count(Event::Refused, false);
                let entry = opcode::Close::new(fixed(fd))
                    .build()
                    .user_data(Token::worker(Op::Reject).pack());
                // SAFETY: close carries no pointer.
                unsafe { ring::push(&mut self.ring, &entry) };
            }
        }
    }

    pub(super) fn on_recv(&mut self, token: Token, result: i32, flags: u32) {
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
                self.recorder.stats.count(Event::Enobufs, false);
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
    pub(super) fn settle_recv(&mut self, index: u32) {
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

    /// `settle_recv` for the connection a completion was for, if it is still open.
    pub(super) fn settle_current(&mut self, token: Token) {
        if self.slots.current(token.slot, token.generation).is_some() {
            self.settle_recv(token.slot);
        }
    }

    /// Re-arms the receives that ran out of buffers during this turn: their buffers have been
    /// given back by now, and are published before the next submission.
    pub(super) fn rearm_starved(&mut self) {
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
    pub(super) fn on_eof(&mut self, index: u32) {
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

    pub(super) fn on_data(&mut self, index: u32, bid: u16, len: usize) {
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
        if next_in_stream && !slot.sending && !slot.filling {
            let consumed = self.serve_from(index, Source::Recv { bid, from, len });
            if consumed < len - from {
                let input_index = self.inputs.take();
                let input = self.inputs.get(input_index);
                let rest = &self.bufs.data(bid, len)[from + consumed..];
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
    pub(super) fn absorb(&mut self, index: u32, bid: u16, from: usize, len: usize) {
        let slot = self.slots.get(index);
        let input_len = slot.input_len as usize;
        if slot.held_head != NO_BUFFER || input_len + len - from > INPUT_BUFFER_BYTES {
            if slot.held_count >= HELD_BUFFERS_PER_CONNECTION_MAX
                || self.held_total >= HELD_BUFFERS_TOTAL_MAX
            {
                // More than the receive window lets through after a cancel: never let one
                // client take the buffers everyone else needs.
                self.recorder.stats.count(Event::Overrun, false);
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
    pub(super) fn copy_to_input(&mut self, index: u32, bid: u16, from: usize, len: usize) {
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
    pub(super) fn pop_held_if_fits(&mut self, index: u32) -> Option<(u16, usize, usize)> {
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
    pub(super) fn drain_input(&mut self, index: u32) {
        loop {
            let slot = self.slots.get(index);
            if slot.sending || slot.filling || slot.phase != Phase::Open {
                return;
            }
            if let Some(input_index) = slot.input {
                let len = slot.input_len as usize;
                let consumed = self.serve_from(index, Source::Input { index: input_index, len });
                self.inputs.get(input_index).copy_within(consumed..len, 0);
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
    pub(super) fn after_progress(&mut self, index: u32) {
        self.flush(index);
        let slot = self.slots.get(index);
        if slot.phase != Phase::Open {
            return;
        }
        if slot.sending {
            return; // flush armed the send timer
        }
        if slot.eof && !slot.filling {
            // Everything the client sent is answered and sent; what is left is at most part
            // of a request that can never complete.
            self.begin_close(index);
            return;
        }
        // The header timer runs from a head's first byte and is never extended (slow
        // headers); the idle timer is, by every byte of a request body being skipped.
        let timer = if slot.input.is_some() { Timer::Header } else { Timer::Idle };
        let body_arriving = timer == Timer::Idle && slot.session.skip_bytes > 0;
        if slot.timer() != timer || body_arriving {
            let ticks = if timer == Timer::Header { self.ticks.header } else { self.ticks.idle };
            self.slots.arm(index, timer, self.now + ticks);
        }
    }
}

/// The token of listener `listener`'s multishot accept (the slot field names the listener).
pub(super) fn accept_token(listener: usize) -> Token {
    Token { op: Op::Accept, generation: 0, slot: listener as u32 }
}

/// Where the bytes being served are.
#[derive(Clone, Copy)]
enum Source {
    /// Bytes `from..len` of a receive buffer.
    Recv { bid: u16, from: usize, len: usize },
    /// The first `len` bytes of an input buffer.
    Input { index: u32, len: usize },
}

impl Worker {
    /// Serves the requests `source` holds into the slot's batch; returns the bytes used. A
    /// request for a path the cache must fill starts (or joins) the fill: serving stops there,
    /// that request unused, unless the answer can be served at once.
    fn serve_from(&mut self, index: u32, source: Source) -> usize {
        let mut used = 0;
        let log = self.log_format();
        loop {
            let data = match source {
                Source::Recv { bid, from, len } => &self.bufs.data(bid, len)[from..],
                Source::Input { index, len } => &self.inputs.get(index)[..len],
            };
            let data = &data[used..];
            let slot = self.slots.get(index);
            let batch_index = *slot.batch.get_or_insert_with(|| self.batches.take());
            let shared = self.serving.shared(&self.files, self.now_ms, self.now_micros, log);
            let served = slot.session.serve_all(data, &shared, self.batches.get(batch_index));
            used += served.used;
            let Some(of) = served.miss else { return used };
            let mut key: KeyBuffer = [0; std::mem::size_of::<KeyBuffer>()];
            let (limits, site) = (&self.serving.limits, &self.serving.site);
            let Some(key) = serve::miss_key(&data[served.used..], limits, site, of, &mut key)
            else {
                return used; // cannot happen: the miss was for a complete request
            };
            if !self.on_miss(index, key) {
                return used;
            }
        }
    }
}
