//! Connection records and their timers: a fixed array allocated at start-up, a free list, a
//! generation per record (an event for a connection that ended since is recognized as stale),
//! and the FIFO timer lists of `crate::timers`, as `uring::slots` has them.

use std::os::fd::RawFd;

use crate::observe::access_log::PeerText;
use crate::serve::Session;
pub use crate::timers::Timer;
use crate::timers::{Timed, TimerLink, TimerLists};

/// Marks the end of an intrusive list, and "no pooled buffer".
pub const NIL: u32 = u32::MAX;

/// Generations wrap at 2^31: the epoll key keeps the top bit for the worker's own descriptors.
const GENERATION_MASK: u32 = (1 << 31) - 1;

/// The life of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The record is unused.
    Free,
    /// Reading requests and sending responses.
    Open,
    /// The last response is sent and SHUT_WR done: reading and discarding until the client
    /// closes or the linger timer fires.
    Lingering,
}

/// One connection.
pub struct Conn {
    pub fd: RawFd,
    pub phase: Phase,
    pub generation: u32,
    /// Pooled input buffer (`NIL`: none; lent only while the connection holds bytes).
    pub input: u32,
    pub input_len: usize,
    /// Pooled batch (`NIL`: none; lent while responses are queued or being sent).
    pub batch: u32,
    pub session: Session,
    /// The socket may hold unread bytes (edge-triggered: set by an event, cleared by EAGAIN
    /// or end of stream).
    pub readable: bool,
    /// The client ended its stream (read returned 0).
    pub eof: bool,
    /// epoll reported a half-close or hang-up: read until the end of stream shows, even
    /// after a short read.
    pub rdhup: bool,
    /// A send stopped at EAGAIN: the batch waits for EPOLLOUT; nothing is read meanwhile.
    pub sending: bool,
    /// Queued on the worker's list of connections to drive again this turn.
    pub queued: bool,
    /// The client's address, with an access log.
    pub peer: PeerText,
    timer: TimerLink,
}

impl Timed for Conn {
    fn link(&self) -> &TimerLink {
        &self.timer
    }
    fn link_mut(&mut self) -> &mut TimerLink {
        &mut self.timer
    }
}

impl Conn {
    fn empty() -> Conn {
        Conn {
            fd: -1,
            phase: Phase::Free,
            generation: 0,
            input: NIL,
            input_len: 0,
            batch: NIL,
            session: Session::default(),
            readable: false,
            eof: false,
            rdhup: false,
            sending: false,
            queued: false,
            peer: PeerText::default(),
            timer: TimerLink::default(),
        }
    }

    /// The timer the connection is waiting on.
    pub fn timer(&self) -> Timer {
        self.timer.timer()
    }
}

/// Every connection record of a worker, the free list and the timer lists.
pub struct Conns {
    conns: Box<[Conn]>,
    free: Vec<u32>,
    timers: TimerLists,
    live: u32,
}

impl Conns {
    /// `count` free records.
    pub fn new(count: u32) -> Conns {
        Conns {
            conns: (0..count).map(|_| Conn::empty()).collect(),
            free: (0..count).rev().collect(),
            timers: TimerLists::default(),
            live: 0,
        }
    }

    /// Takes a free record for socket `fd`.
    pub fn open(&mut self, fd: RawFd) -> Option<u32> {
        let index = self.free.pop()?;
        let conn = &mut self.conns[index as usize];
        let generation = conn.generation;
        *conn = Conn::empty();
        conn.generation = generation;
        conn.fd = fd;
        conn.phase = Phase::Open;
        self.live += 1;
        Some(index)
    }

    /// Returns a record whose socket is closed and whose buffers went back to their pools.
    pub fn release(&mut self, index: u32) {
        self.disarm(index);
        let conn = &mut self.conns[index as usize];
        debug_assert!(conn.input == NIL && conn.batch == NIL);
        conn.phase = Phase::Free;
        conn.fd = -1;
        conn.generation = (conn.generation + 1) & GENERATION_MASK;
        self.live -= 1;
        self.free.push(index);
    }

    pub fn get(&mut self, index: u32) -> &mut Conn {
        &mut self.conns[index as usize]
    }

    /// The record at `index` if `generation` is its current one and it is in use.
    pub fn current(&mut self, index: u32, generation: u32) -> Option<&mut Conn> {
        let conn = self.conns.get_mut(index as usize)?;
        (conn.phase != Phase::Free && conn.generation == generation).then_some(conn)
    }

    /// Open connections.
    pub fn live(&self) -> u32 {
        self.live
    }

    /// Connections waiting on `timer` (not `None`).
    pub fn armed(&self, timer: Timer) -> u32 {
        self.timers.armed(timer)
    }

    /// Indices of every record in use (for shutdown).
    pub fn in_use(&self) -> impl Iterator<Item = u32> + '_ {
        self.conns.iter().enumerate().filter(|(_, c)| c.phase != Phase::Free).map(|(i, _)| i as u32)
    }

    /// Puts the connection at the tail of `timer`'s list, expiring at tick `deadline`.
    pub fn arm(&mut self, index: u32, timer: Timer, deadline: u64) {
        self.timers.arm(&mut self.conns, index, timer, deadline);
    }

    /// Takes the connection out of its timer list.
    pub fn disarm(&mut self, index: u32) {
        self.timers.disarm(&mut self.conns, index);
    }

    /// The first connection of `timer`'s list if it expired by tick `now`; it is disarmed.
    pub fn pop_expired(&mut self, timer: Timer, now: u64) -> Option<u32> {
        self.timers.pop_expired(&mut self.conns, timer, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_expire_in_deadline_order_and_records_get_new_generations() {
        let mut conns = Conns::new(3);
        let a = conns.open(10).unwrap();
        let b = conns.open(11).unwrap();
        conns.arm(a, Timer::Idle, 5);
        conns.arm(b, Timer::Idle, 6);
        conns.arm(a, Timer::Idle, 8); // activity on a moves it to the tail
        assert_eq!(conns.pop_expired(Timer::Idle, 7), Some(b));
        assert_eq!(conns.pop_expired(Timer::Idle, 7), None);
        conns.arm(a, Timer::Send, 9);
        assert_eq!((conns.armed(Timer::Idle), conns.armed(Timer::Send)), (0, 1));
        let generation = conns.get(a).generation;
        conns.release(a);
        assert!(conns.current(a, generation).is_none());
        assert_eq!(conns.armed(Timer::Send), 0);
        let c = conns.open(12).unwrap();
        assert_eq!(c, a);
        assert!(conns.current(c, generation).is_none(), "a stale event finds nothing");
    }
}
