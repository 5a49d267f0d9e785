//! Sending responses: one send or sendmsg per batch through the ring, then a large body with
//! `sendfile` from the worker itself, a step at a time, with a POLLOUT poll in the ring
//! between steps.
//!
//! Why not splice through the ring: io_uring has no sendfile, and its splice always runs in a
//! kernel worker thread (io-wq). Measured against the epoll engine's sendfile, those hops cost
//! 0.2 context switches per 50 KiB response and 1.3 per 1 MiB one, and 16-47% more server CPU
//! per request; under a slow-read attack the worker threads competed with the worker for the
//! CPU. A sendfile needs a process descriptor for the socket, which a direct accept does not
//! give: the first large body of a connection installs one (`IORING_OP_FIXED_FD_INSTALL`,
//! Linux 6.8), kept until the connection closes. Where that is unavailable the body is sent
//! from its mapping by sendmsg instead.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use io_uring::opcode;

use super::slots::{BodyStage, Phase, Timer};
use super::token::{Op, Token};
use super::{fixed, ring, Worker};
use crate::batch::{FileSend, FILE_STEP_BYTES_MAX};
use crate::observe::access_log::PeerText;
use crate::observe::stats::Event;

/// The address logged when none is known (no access log, so no address was asked for).
static NO_PEER: PeerText = PeerText::UNKNOWN;

impl Worker {
    /// Sends the slot's batch if one is ready and no send is in flight: its iovecs with one
    /// send or sendmsg, then a large body, if any, from its file.
    pub(super) fn flush(&mut self, index: u32) {
        let slot = self.slots.get(index);
        if slot.sending {
            return;
        }
        let Some(batch_index) = slot.batch else { return };
        let batch = self.batches.get(batch_index);
        if batch.is_empty() {
            self.release_batch(index);
            return;
        }
        if batch.iovecs_sent() {
            self.send_body(index);
            return;
        }
        // The heads go out with MSG_MORE when a file body follows: head and body then share
        // segments.
        let more = if batch.file_body().is_some() { libc::MSG_MORE } else { 0 };
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
        slot.body_stage = BodyStage::None;
        // SAFETY: the msghdr and its iovecs live inside the boxed batch, which stays assigned
        // to this slot (`slot.batch`) and unmodified until `on_send` reaps this send. The
        // iovecs (and a plain send's one buffer) point into the batch's own head area or into
        // the bytes of entries the batch holds an `Arc` to (batch.rs invariant).
        unsafe { ring::push(&mut self.ring, &entry) };
        self.slots.arm(index, Timer::Send, self.now + self.ticks.send);
    }

    /// The batch's iovecs are sent: moves one step of its file body with `sendfile`, then
    /// waits in the ring until the socket takes more (a full step yields the same way, so one
    /// large body does not hold up the other connections). Finishes the batch when nothing is
    /// left.
    fn send_body(&mut self, index: u32) {
        let slot = self.slots.get(index);
        let batch_index = slot.batch.expect("a body to send needs a batch");
        if self.batches.get(batch_index).file_body().is_none() {
            return self.batch_sent(index);
        }
        let Some(sock) = slot.sock.as_ref().map(AsRawFd::as_raw_fd) else {
            if self.fd_install {
                let install = opcode::FixedFdInstall::new(fixed(slot.fd), 0).build();
                return self.push_body_op(index, install, BodyStage::Install);
            }
            // No process descriptor for sendfile: send the rest from the mapping.
            if self.batches.get(batch_index).file_to_iovec() {
                self.flush(index);
            } else {
                self.fail_send(index);
            }
            return;
        };
        let batch = self.batches.get(batch_index);
        match batch.send_file(sock, FILE_STEP_BYTES_MAX) {
            FileSend::Moved(_) if batch.file_body().is_none() => self.batch_sent(index),
            FileSend::Moved(_) | FileSend::Blocked => {
                let poll = opcode::PollAdd::new(fixed(slot.fd), libc::POLLOUT as u32).build();
                self.push_body_op(index, poll, BodyStage::WaitWritable);
            }
            FileSend::Failed => self.fail_send(index),
        }
    }

    /// Submits the install or the poll of a file body's send, as the slot's send operation.
    fn push_body_op(&mut self, index: u32, entry: io_uring::squeue::Entry, stage: BodyStage) {
        let slot = self.slots.get(index);
        let token = Token { op: Op::Send, generation: slot.generation, slot: index };
        slot.sending = true;
        slot.body_stage = stage;
        // SAFETY: a poll or a descriptor install names the socket by its fixed slot, which
        // stays registered until this operation completes (the close waits for it), and
        // carries no pointer.
        unsafe { ring::push(&mut self.ring, &entry.user_data(token.pack())) };
        self.slots.arm(index, Timer::Send, self.now + self.ticks.send);
    }

    pub(super) fn on_send(&mut self, token: Token, result: i32) {
        let Some(slot) = self.slots.current(token.slot, token.generation) else {
            debug_assert!(false, "a slot is never released with a send in flight");
            return;
        };
        slot.sending = false;
        let stage = std::mem::replace(&mut slot.body_stage, BodyStage::None);
        if stage == BodyStage::Install && result >= 0 {
            // SAFETY: the kernel just installed this descriptor for us; nothing else owns it.
            slot.sock = Some(unsafe { OwnedFd::from_raw_fd(result) });
        }
        if slot.phase != Phase::Open {
            self.release_batch(token.slot);
            self.finish_close(token.slot);
            return;
        }
        match stage {
            BodyStage::Install if result < 0 => {
                // Kernels before 6.8 (EINVAL), or no descriptor free (EMFILE): the mapping
                // instead, from now on for the first and only for this body for the second.
                if result == -libc::EINVAL {
                    self.fd_install = false;
                }
                let batch = self.batches.get(self.slots.get(token.slot).batch.expect("a batch"));
                if batch.file_to_iovec() {
                    self.flush(token.slot);
                } else {
                    self.fail_send(token.slot);
                }
            }
            BodyStage::Install | BodyStage::WaitWritable if result >= 0 => {
                self.send_body(token.slot)
            }
            BodyStage::None if result >= 0 => {
                let slot = self.slots.get(token.slot);
                let batch = self.batches.get(slot.batch.expect("a send in flight has a batch"));
                if batch.advance(result as usize) {
                    self.send_body(token.slot); // the file body, if any; else done
                } else {
                    self.flush(token.slot); // a short send
                }
            }
            // EPIPE, ECONNRESET, EFAULT (a file truncated under its mapping)...
            _ => self.fail_send(token.slot),
        }
    }

    /// Everything in the batch left: count it, then close, or go on with the connection.
    fn batch_sent(&mut self, index: u32) {
        self.recorder.stats.count(Event::Sent, false);
        self.release_batch(index);
        if self.slots.get(index).session.closing {
            self.begin_linger(index);
            return;
        }
        self.drain_input(index);
        self.after_progress(index);
    }

    /// The connection failed while sending: close it.
    fn fail_send(&mut self, index: u32) {
        self.release_batch(index);
        self.begin_close(index);
        self.finish_close(index);
    }

    /// Takes the slot's batch back, once it is sent or its connection ended: its responses
    /// are counted and logged first, with the bytes of each that left.
    pub(super) fn release_batch(&mut self, index: u32) {
        if let Some(batch_index) = self.slots.get(index).batch.take() {
            let batch = self.batches.get(batch_index);
            let peer = self.peers.get(index as usize).unwrap_or(&NO_PEER);
            self.recorder.finish(batch, peer, self.now_micros, self.log.as_mut());
            batch.clear();
            self.batches.put(batch_index);
        }
    }
}
