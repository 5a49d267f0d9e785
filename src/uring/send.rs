//! Sending responses: one send or sendmsg per batch, and large bodies spliced from their file
//! through a pipe lent from the worker's pool, in linked file -> pipe -> socket steps, with a
//! POLLOUT poll in the ring when the socket is full.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use io_uring::{opcode, squeue, types};

use super::slots::{Phase, SpliceStage, Timer};
use super::token::{Op, Token};
use super::{fixed, ring, Worker};
use crate::observe::access_log::PeerText;
use crate::observe::stats::Event;

/// The address logged when none is known (no access log, so no address was asked for).
static NO_PEER: PeerText = PeerText::UNKNOWN;

impl Worker {
    /// Sends the slot's batch if one is ready and no send is in flight: its iovecs with one
    /// sendmsg, then a large body, if any, by splicing.
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
            self.splice_more(index);
            return;
        }
        let more = if batch.splice().is_some() { libc::MSG_MORE } else { 0 };
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
        slot.splice_stage = SpliceStage::None;
        // SAFETY: the msghdr and its iovecs live inside the boxed batch, which stays assigned
        // to this slot (`slot.batch`) and unmodified until `on_send` reaps this send. The
        // iovecs (and a plain send's one buffer) point into the batch's own head area or into
        // the bytes of entries the batch holds an `Arc` to (batch.rs invariant).
        unsafe { ring::push(&mut self.ring, &entry) };
        self.slots.arm(index, Timer::Send, self.now + self.ticks.send);
    }

    /// Moves the next chunk of a large body: file -> pipe, or pipe -> socket while the pipe
    /// holds bytes. Without a free pipe, a body that has not started goes out by sendmsg.
    pub(super) fn splice_more(&mut self, index: u32) {
        let slot = self.slots.get(index);
        let batch_index = slot.batch.expect("splicing needs a batch");
        if slot.pipe.is_none() {
            slot.pipe = self.pipes.take();
        }
        let Some(pipe_index) = slot.pipe else {
            if self.batches.get(batch_index).splice_to_iovec() {
                self.flush(index);
            } else {
                self.begin_close(index);
            }
            return;
        };
        let pipe = self.pipes.get(pipe_index);
        let body = *self.batches.get(batch_index).splice().expect("a body to splice");
        let slot = self.slots.get(index);
        let (entry, stage) = if slot.splice_stage == SpliceStage::WaitWritable {
            // The socket was full: wait until it takes more, in the ring, not in a kernel
            // worker thread.
            let poll = opcode::PollAdd::new(fixed(slot.fd), libc::POLLOUT as u32).build();
            (poll, SpliceStage::WaitWritable)
        } else if body.in_pipe > 0 {
            // Non-blocking: a full socket returns EAGAIN instead of parking a kernel worker
            // thread per slow reader (splice always runs in io-wq).
            let entry = opcode::Splice::new(
                types::Fd(pipe.read.as_raw_fd()),
                -1,
                fixed(slot.fd),
                -1,
                body.in_pipe as u32,
            )
            .flags(libc::SPLICE_F_NONBLOCK);
            (entry.build(), SpliceStage::ToSocket)
        } else {
            // File -> pipe linked to pipe -> socket: one submission, and the socket splice
            // starts when the fill completes, without a turn of our loop in between. The
            // fill's completion is skipped when it moves the whole chunk; a short or failed
            // fill posts its own completion and cancels the socket splice.
            let chunk = fill_bytes(&body, pipe);
            let fill = opcode::Splice::new(
                types::Fd(body.fd),
                body.offset as i64,
                types::Fd(pipe.write.as_raw_fd()),
                -1,
                chunk,
            )
            .build()
            .flags(squeue::Flags::IO_LINK | squeue::Flags::SKIP_SUCCESS)
            .user_data(Token { op: Op::Fill, generation: slot.generation, slot: index }.pack());
            let send = opcode::Splice::new(
                types::Fd(pipe.read.as_raw_fd()),
                -1,
                fixed(slot.fd),
                -1,
                chunk,
            )
            .flags(libc::SPLICE_F_NONBLOCK)
            .build()
            .user_data(Token { op: Op::Send, generation: slot.generation, slot: index }.pack());
            slot.sending = true;
            slot.splice_stage = SpliceStage::Linked;
            // SAFETY: splice carries descriptors, no pointers. The file stays open through
            // an entry the slot's batch holds; the pipe stays in the pool, assigned to
            // this slot, until the chain completes.
            unsafe { ring::push_chain(&mut self.ring, &[fill, send]) };
            self.slots.arm(index, Timer::Send, self.now + self.ticks.send);
            return;
        };
        let token = Token { op: Op::Send, generation: slot.generation, slot: index };
        slot.sending = true;
        slot.splice_stage = stage;
        // SAFETY: splice carries descriptors, no pointers. The file stays open through the
        // entry the slot's batch holds; the pipe stays in the pool, assigned to this slot,
        // until the splice completes.
        unsafe { ring::push(&mut self.ring, &entry.user_data(token.pack())) };
        self.slots.arm(index, Timer::Send, self.now + self.ticks.send);
    }

    pub(super) fn on_send(&mut self, token: Token, result: i32) {
        let Some(slot) = self.slots.current(token.slot, token.generation) else {
            debug_assert!(false, "a slot is never released with a send in flight");
            return;
        };
        slot.sending = false;
        let mut stage = std::mem::replace(&mut slot.splice_stage, SpliceStage::None);
        let batch_index = slot.batch.expect("a send in flight has a batch");
        let phase = slot.phase;
        if stage == SpliceStage::Linked {
            // The fill moved its whole chunk (else its own completion would have come and
            // this one would not); account for it, then for the socket splice. Neither the
            // body's counts nor the pipe changed while the chain was in flight, so the chunk is
            // the one `splice_more` asked for.
            let pipe = self.pipes.get(slot.pipe.expect("a linked splice holds a pipe"));
            let body = self.batches.get(batch_index).splice().expect("a linked splice's body");
            let chunk = u64::from(fill_bytes(body, pipe));
            body.offset += chunk;
            body.to_pipe -= chunk;
            body.in_pipe += chunk;
            stage = SpliceStage::ToSocket;
        }
        // A full socket: poll for room, then splice again.
        if stage == SpliceStage::ToSocket && result == -libc::EAGAIN && phase == Phase::Open {
            self.slots.get(token.slot).splice_stage = SpliceStage::WaitWritable;
            self.splice_more(token.slot);
            return;
        }
        // A splice moving 0 bytes means the file shrank under us (or the peer is gone).
        let failed = result < 0
            || (result == 0 && matches!(stage, SpliceStage::ToPipe | SpliceStage::ToSocket));
        if phase != Phase::Open || failed {
            self.release_pipe(token.slot, false);
            self.release_batch(token.slot);
            if phase == Phase::Open {
                self.begin_close(token.slot); // EPIPE, ECONNRESET, EFAULT...
            }
            self.finish_close(token.slot);
            return;
        }
        let batch = self.batches.get(batch_index);
        let done = match (stage, batch.splice()) {
            (SpliceStage::None, _) => batch.advance(result as usize) && batch.is_empty(),
            (SpliceStage::ToPipe, Some(body)) => {
                body.offset += result as u64;
                body.to_pipe -= result as u64;
                body.in_pipe += result as u64;
                false
            }
            (SpliceStage::ToSocket, Some(body)) => {
                body.in_pipe -= result as u64;
                let done = body.to_pipe == 0 && body.in_pipe == 0;
                batch.spliced_out(result as u64);
                done
            }
            (SpliceStage::WaitWritable, Some(_)) => false, // writable again: splice on
            (SpliceStage::Linked, _) => unreachable!("a linked splice is accounted above"),
            (_, None) => unreachable!("a splice completion without a spliced body"),
        };
        if !done {
            self.flush(token.slot); // short send, or the next splice step
            return;
        }
        self.recorder.stats.count(Event::Sent, false);
        self.release_pipe(token.slot, true);
        self.release_batch(token.slot);
        if self.slots.get(token.slot).session.closing {
            self.begin_linger(token.slot);
            return;
        }
        self.drain_input(token.slot);
        self.after_progress(token.slot);
    }

    /// A linked fill moved less than its chunk or failed; the socket splice behind it was
    /// cancelled without a completion of its own.
    pub(super) fn on_fill(&mut self, token: Token, result: i32) {
        let Some(slot) = self.slots.current(token.slot, token.generation) else {
            debug_assert!(false, "a slot is never released with a splice in flight");
            return;
        };
        debug_assert_eq!(slot.splice_stage, SpliceStage::Linked);
        // Reported as the pipe step alone: a short fill continues from where it stopped, an
        // empty or failed one (the file shrank) ends the connection.
        slot.splice_stage = SpliceStage::ToPipe;
        self.on_send(Token { op: Op::Send, ..token }, result);
    }

    /// Takes the slot's pipe back. Only a pipe whose body was sent completely (`drained`) is
    /// reused; after an error or a close a splice may have moved bytes we never accounted for
    /// (a cancelled or failed step), so the pipe is closed rather than risk sending them to
    /// the next client.
    pub(super) fn release_pipe(&mut self, index: u32, drained: bool) {
        if let Some(pipe_index) = self.slots.get(index).pipe.take() {
            self.pipes.put(pipe_index, drained);
        }
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

/// Bytes a splice pipe can hold, and so the most one linked file -> pipe -> socket step moves.
/// Measured on loopback under the BBR congestion control (1 MiB file, 100 connections): 64 KiB
/// 8.9k req/s, 128 KiB 11.3k, 256 KiB 14.3k, 512 KiB 9.5k, 1 MiB 3.6k. A larger step queues
/// more than BBR's pacing lets out at once and the connection is paced by timer; 256 KiB is
/// also what lighttpd writes per sendfile call. The kernel may grant less (fs.pipe-max-size);
/// the pipe's real capacity is used.
const PIPE_BYTES: i32 = 256 * 1024;

/// Pipes per worker at most: each is two descriptors; a connection without one sends its
/// large body with sendmsg from the mapping instead.
const PIPES_MAX: usize = 256;

/// A pipe for splicing large bodies.
pub(super) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: u32,
}

impl Pipe {
    fn new() -> Option<Pipe> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into the local array; checked below.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return None;
        }
        // SAFETY: both descriptors are fresh and owned by nothing else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let fd = write.as_raw_fd();
        // SAFETY: fcntl on a descriptor we own; failure leaves the default size, read next.
        let size = match unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, PIPE_BYTES) } {
            size if size > 0 => size,
            // SAFETY: as above.
            _ => unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) },
        };
        Some(Pipe { read, write, capacity: size.max(4096) as u32 })
    }
}

/// The worker's pipes, created on first need, reused, and closed when a whole tick passed
/// without needing them (like the buffer pools), so a burst does not hold descriptors forever.
#[derive(Default)]
pub(super) struct Pipes {
    pipes: Vec<Option<Pipe>>,
    free: Vec<u32>,
    /// Fewest free pipes seen since the last trim.
    free_low_water: usize,
}

impl Pipes {
    pub(super) fn take(&mut self) -> Option<u32> {
        if let Some(index) = self.free.pop() {
            self.free_low_water = self.free_low_water.min(self.free.len());
            return Some(index);
        }
        self.free_low_water = 0;
        let slot = self.pipes.iter().position(Option::is_none);
        if slot.is_none() && self.pipes.len() >= PIPES_MAX {
            return None;
        }
        let pipe = Pipe::new()?;
        let index = slot.unwrap_or_else(|| {
            self.pipes.push(None);
            self.pipes.len() - 1
        });
        self.pipes[index] = Some(pipe);
        Some(index as u32)
    }

    pub(super) fn get(&self, index: u32) -> &Pipe {
        self.pipes[index as usize].as_ref().expect("a taken pipe exists")
    }

    /// Closes the pipes that stayed free since the last call.
    pub(super) fn trim(&mut self) {
        for _ in 0..self.free_low_water {
            if let Some(index) = self.free.pop() {
                self.pipes[index as usize] = None;
            }
        }
        self.free_low_water = self.free.len();
    }

    /// Returns a pipe; one with bytes left in it is closed instead of reused.
    pub(super) fn put(&mut self, index: u32, clean: bool) {
        if clean {
            self.free.push(index);
        } else {
            self.pipes[index as usize] = None;
        }
    }
}

/// Bytes one linked step moves from the file into the pipe: the rest of the body, at most a
/// pipe-full.
fn fill_bytes(body: &crate::batch::SpliceBody, pipe: &Pipe) -> u32 {
    body.to_pipe.min(u64::from(pipe.capacity)) as u32
}
