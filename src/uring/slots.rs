//! Connection slots: a fixed array allocated at start-up, a free list, and the timer lists.
//!
//! **Invariants.** The slot array never grows, so nothing about a slot moves while the kernel
//! holds a token for it. A slot returns to the free list only when no operation on it is in
//! flight (`Slot::is_quiet`), and its generation is bumped then, so a late completion for the
//! old connection is recognized as stale.
//!
//! Timers: the FIFO lists of `crate::timers`, threaded through the slots.

use std::os::fd::{OwnedFd, RawFd};

use super::token::GENERATION_MASK;
use crate::serve::Session;
pub use crate::timers::Timer;
use crate::timers::{Timed, TimerLink, TimerLists};

/// Marks the end of a held-buffer list.
pub const NO_BUFFER: u16 = u16::MAX;

/// Which kind of send operation is in flight for a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyStage {
    /// A send or sendmsg of the batch's iovecs (or nothing is in flight).
    None,
    /// The install of a process descriptor for the socket, for sendfile.
    Install,
    /// A POLLOUT poll between two sendfile steps of a file body.
    WaitWritable,
}

/// The life of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not in use.
    Free,
    /// Reading requests, sending responses.
    Open,
    /// We sent our last response and half-closed (SHUT_WR); discarding input until the client
    /// closes or the linger timer fires, so the client reads the response instead of a reset.
    Lingering,
    /// Waiting for in-flight operations to finish, then closing the socket.
    Closing,
}

/// One connection's state. About 64 bytes; buffers are borrowed from pools only while used.
pub struct Slot {
    /// The socket: its index in the ring's fixed-file table (a direct descriptor).
    pub fd: RawFd,
    /// Bumped when the slot is freed; part of every token.
    pub generation: u32,
    /// Where the connection is in its life.
    pub phase: Phase,
    /// A multishot recv is armed (its final completion has not arrived).
    pub recv_armed: bool,
    /// A cancel of the recv is in flight (input full: stop receiving); the recv's last
    /// completion clears `recv_armed`.
    pub recv_cancelling: bool,
    /// The recv ended with ENOBUFS: re-armed on the next loop turn, once buffers came back.
    pub starved: bool,
    /// The client closed its side (recv returned 0): never re-arm recv.
    pub eof: bool,
    /// A send operation is in flight (`body_stage` says which).
    pub sending: bool,
    /// The next request waits for a file-cache fill (`lookup.rs`): nothing is served until
    /// it completes.
    pub filling: bool,
    /// Close, cancel and shutdown operations in flight.
    pub other_ops: u8,
    /// The Close op was submitted.
    pub close_submitted: bool,
    /// Protocol state: requests answered, body bytes to skip, closing after this batch.
    pub session: Session,
    /// Index of the input buffer holding unprocessed bytes, if any.
    pub input: Option<u32>,
    /// Bytes held in the input buffer.
    pub input_len: u32,
    /// First and last of the received buffers we could not absorb yet (a list threaded
    /// through the worker's per-buffer `held_next`), or `NO_BUFFER`.
    pub held_head: u16,
    pub held_tail: u16,
    /// Number of held buffers (at most `HELD_BUFFERS_PER_CONNECTION_MAX`).
    pub held_count: u16,
    /// Index of the batch being filled or sent, if any.
    pub batch: Option<u32>,
    /// A process descriptor for the socket, installed for sendfile by the connection's first
    /// file body; closed before the socket's fixed slot is.
    pub sock: Option<OwnedFd>,
    /// What the in-flight send operation is.
    pub body_stage: BodyStage,
    /// The slot's place in the timer lists.
    timer: TimerLink,
}

impl Timed for Slot {
    fn link(&self) -> &TimerLink {
        &self.timer
    }
    fn link_mut(&mut self) -> &mut TimerLink {
        &mut self.timer
    }
}

impl Slot {
    fn empty() -> Slot {
        Slot {
            fd: -1,
            generation: 0,
            phase: Phase::Free,
            recv_armed: false,
            recv_cancelling: false,
            starved: false,
            eof: false,
            sending: false,
            filling: false,
            other_ops: 0,
            close_submitted: false,
            session: Session::default(),
            input: None,
            input_len: 0,
            held_head: NO_BUFFER,
            held_tail: NO_BUFFER,
            held_count: 0,
            batch: None,
            sock: None,
            body_stage: BodyStage::None,
            timer: TimerLink::default(),
        }
    }

    /// The timer the slot is waiting on.
    pub fn timer(&self) -> Timer {
        self.timer.timer()
    }

    /// No operation on this slot is in flight.
    pub fn is_quiet(&self) -> bool {
        !self.recv_armed && !self.sending && self.other_ops == 0
    }
}

/// All slots of a worker plus the free list and timer lists.
pub struct Slots {
    slots: Box<[Slot]>,
    free: Vec<u32>,
    timers: TimerLists,
    live: u32,
}

impl Slots {
    /// `count` empty slots.
    pub fn new(count: u32) -> Slots {
        let slots: Box<[Slot]> = (0..count).map(|_| Slot::empty()).collect();
        assert_eq!(slots.len(), count as usize);
        Slots { slots, free: (0..count).rev().collect(), timers: TimerLists::default(), live: 0 }
    }

    /// Takes a free slot for socket `fd`.
    pub fn open(&mut self, fd: RawFd) -> Option<u32> {
        let index = self.free.pop()?;
        let slot = &mut self.slots[index as usize];
        assert_eq!(slot.phase, Phase::Free);
        let generation = slot.generation;
        *slot = Slot::empty();
        slot.generation = generation;
        slot.fd = fd;
        slot.phase = Phase::Open;
        self.live += 1;
        Some(index)
    }

    /// Returns a slot whose socket is closed and whose operations have all completed.
    pub fn release(&mut self, index: u32) {
        self.disarm(index);
        let slot = &mut self.slots[index as usize];
        assert!(slot.is_quiet() && slot.phase == Phase::Closing, "slot released while busy");
        assert!(slot.input.is_none() && slot.batch.is_none() && slot.held_head == NO_BUFFER);
        assert!(slot.sock.is_none(), "the process descriptor is closed before the slot");
        slot.phase = Phase::Free;
        slot.fd = -1;
        slot.generation = (slot.generation + 1) & GENERATION_MASK;
        self.live -= 1;
        self.free.push(index);
    }

    /// The slot at `index`.
    pub fn get(&mut self, index: u32) -> &mut Slot {
        &mut self.slots[index as usize]
    }

    /// The slot at `index`, if the token's generation is current.
    pub fn current(&mut self, index: u32, generation: u32) -> Option<&mut Slot> {
        let slot = self.slots.get_mut(index as usize)?;
        (slot.phase != Phase::Free && slot.generation == generation).then_some(slot)
    }

    /// Open connections.
    pub fn live(&self) -> u32 {
        self.live
    }

    /// Slots waiting on `timer` (not `None`).
    pub fn armed(&self, timer: Timer) -> u32 {
        self.timers.armed(timer)
    }

    /// Indices of every slot in use (for shutdown).
    pub fn in_use(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots.iter().enumerate().filter(|(_, s)| s.phase != Phase::Free).map(|(i, _)| i as u32)
    }

    /// Puts the slot at the tail of `timer`'s list, expiring at tick `deadline`.
    pub fn arm(&mut self, index: u32, timer: Timer, deadline: u64) {
        self.timers.arm(&mut self.slots, index, timer, deadline);
    }

    /// Takes the slot out of its timer list.
    pub fn disarm(&mut self, index: u32) {
        self.timers.disarm(&mut self.slots, index);
    }

    /// The first slot of `timer`'s list if it expired by tick `now`; it is disarmed.
    pub fn pop_expired(&mut self, timer: Timer, now: u64) -> Option<u32> {
        self.timers.pop_expired(&mut self.slots, timer, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_counts_follow_arming_and_release() {
        let mut slots = Slots::new(2);
        let a = slots.open(10).unwrap();
        slots.arm(a, Timer::Idle, 5);
        assert_eq!((slots.armed(Timer::Idle), slots.get(a).timer()), (1, Timer::Idle));
        slots.get(a).phase = Phase::Closing;
        slots.release(a);
        assert_eq!(slots.armed(Timer::Idle), 0, "a released slot leaves its list");
    }

    #[test]
    fn slots_are_reused_with_a_new_generation() {
        let mut slots = Slots::new(1);
        let a = slots.open(3).unwrap();
        assert!(slots.open(4).is_none(), "capacity is fixed");
        let generation = slots.get(a).generation;
        slots.get(a).phase = Phase::Closing;
        slots.release(a);
        assert!(slots.current(a, generation).is_none());
        let b = slots.open(5).unwrap();
        assert_eq!(a, b);
        assert_ne!(slots.get(b).generation, generation);
    }
}
