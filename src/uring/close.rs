//! Closing connections and time: the lingering half-close after a last response, cancels and
//! the close itself (submitted only when nothing else is in flight), the one-second tick with
//! its timers, the 408 for slow heads, and the graceful shutdown.

use std::time::SystemTime;

use io_uring::opcode;

use super::slots::{Phase, Timer, NO_BUFFER};
use super::token::{Op, Token};
use super::{fixed, ring, Worker};
use crate::limits::TICK_MILLIS;
use crate::serve;

impl Worker {
    pub(super) fn on_other(&mut self, token: Token) {
        let Some(slot) = self.slots.current(token.slot, token.generation) else {
            debug_assert!(false, "a slot is never released with an operation in flight");
            return;
        };
        slot.other_ops -= 1;
        self.settle_recv(token.slot);
        self.finish_close(token.slot);
    }

    /// After the last response: half-close and read until the client closes, so it receives
    /// the response rather than a reset caused by unread bytes.
    pub(super) fn begin_linger(&mut self, index: u32) {
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
    pub(super) fn begin_close(&mut self, index: u32) {
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
            self.release_batch(index);
        }
        self.finish_close(index);
    }

    pub(super) fn drop_input(&mut self, index: u32) {
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
    pub(super) fn finish_close(&mut self, index: u32) {
        let slot = self.slots.get(index);
        if slot.phase != Phase::Closing || slot.recv_armed || slot.sending {
            return;
        }
        // Shutdown runs asynchronously in the kernel and names the socket by descriptor
        // number: closing before it completed could let it hit a new connection that reused
        // the number. So the close waits for every other operation.
        if !slot.close_submitted && slot.other_ops == 0 {
            slot.close_submitted = true;
            // The socket's process descriptor, if one was installed, goes first: the
            // connection ends only when both references are gone.
            slot.sock = None;
            let fd = slot.fd;
            self.push_slot_op(index, Op::Close, opcode::Close::new(fixed(fd)).build());
            return;
        }
        if slot.close_submitted && slot.other_ops == 0 {
            self.slots.release(index);
        }
    }

    pub(super) fn on_tick(&mut self) {
        self.now = self.started.elapsed().as_millis() as u64 / TICK_MILLIS;
        self.serving.date.refresh(SystemTime::now());
        self.expire_timers();
        super::pool::release_freed(self.inputs.trim() + self.batches.trim());
        for listener in 0..self.listeners.len() {
            let listening = &mut self.listeners[listener];
            if listening.backoff && self.draining_until.is_none() {
                listening.backoff = false;
                if !listening.armed {
                    self.arm_accept(listener);
                }
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

    pub(super) fn expire_timers(&mut self) {
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
    pub(super) fn respond_timeout(&mut self, index: u32) {
        let slot = self.slots.get(index);
        if slot.sending || slot.phase != Phase::Open {
            self.drop_input(index);
            self.begin_close(index);
            return;
        }
        let log = self.log.as_ref().map(|log| log.format());
        let slot = self.slots.get(index);
        let batch_index = *slot.batch.get_or_insert_with(|| self.batches.take());
        slot.session.closing = true;
        let partial = match slot.input {
            Some(input) => &self.inputs.get(input)[..slot.input_len as usize],
            None => &[][..],
        };
        let batch = self.batches.get(batch_index);
        let date = &self.serving.date;
        let site = &self.serving.site;
        let queued = serve::push_timeout(batch, date, site, partial, self.now_micros, log).is_ok();
        self.drop_input(index);
        if !queued {
            self.begin_close(index);
            return;
        }
        self.flush(index);
    }

    pub(super) fn on_wake(&mut self, result: i32) {
        if result < 0 && result != -libc::ECANCELED {
            self.arm_wake();
            return;
        }
        if self.draining_until.is_some() {
            return;
        }
        self.draining_until = Some(self.now + self.ticks.shutdown);
        for listener in 0..self.listeners.len() {
            if !self.listeners[listener].armed {
                continue;
            }
            let accept = super::receive::accept_token(listener).pack();
            let entry = opcode::AsyncCancel::new(accept)
                .build()
                .user_data(Token::worker(Op::Reject).pack());
            // SAFETY: cancel carries no pointer.
            unsafe { ring::push(&mut self.ring, &entry) };
        }
        let live: Vec<u32> = self.slots.in_use().collect();
        for index in live {
            let slot = self.slots.get(index);
            if slot.phase == Phase::Open && !slot.sending && !slot.filling {
                self.begin_close(index);
            } else if slot.filling {
                // Waiting for a file-cache fill with a request to answer: answered as if the
                // client had half-closed, the last complete request with `Connection: close`.
                slot.session.peer_closed = true;
            } else {
                slot.session.closing = true;
            }
        }
    }
}
