//! Connection records and their timers: a fixed array allocated at start-up, a free list, a
//! generation per record (an event for a connection that ended since is recognized as stale),
//! and one FIFO list per timeout kind. Each kind has one duration, so FIFO order is deadline
//! order: arming is O(1) and the tick pops expired connections from the head (the idea of
//! `uring::slots`).

use std::os::fd::RawFd;

use crate::observe::access_log::PeerText;
use crate::serve::Session;

/// Marks the end of an intrusive list, and "no pooled buffer".
pub const NIL: u32 = u32::MAX;

/// Generations wrap at 2^31: the epoll key keeps the top bit for the worker's own descriptors.
const GENERATION_MASK: u32 = (1 << 31) - 1;

/// Which timeout a connection is waiting on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// No timer.
    None = 0,
    /// A request head started and has not completed.
    Header = 1,
    /// Idle keep-alive between requests.
    Idle = 2,
    /// A send is waiting for the socket to drain.
    Send = 3,
    /// Half-closed after the last response, discarding the client's last bytes.
    Linger = 4,
}

/// Number of timer lists (every kind but `None`).
const TIMER_KINDS: usize = 4;

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
    timer: Timer,
    deadline: u64,
    prev: u32,
    next: u32,
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
            timer: Timer::None,
            deadline: 0,
            prev: NIL,
            next: NIL,
        }
    }

    /// The timer the connection is waiting on.
    pub fn timer(&self) -> Timer {
        self.timer
    }
}

/// Every connection record of a worker, the free list and the timer lists.
pub struct Conns {
    conns: Box<[Conn]>,
    free: Vec<u32>,
    heads: [u32; TIMER_KINDS],
    tails: [u32; TIMER_KINDS],
    armed: [u32; TIMER_KINDS],
    live: u32,
}

impl Conns {
    /// `count` free records.
    pub fn new(count: u32) -> Conns {
        Conns {
            conns: (0..count).map(|_| Conn::empty()).collect(),
            free: (0..count).rev().collect(),
            heads: [NIL; TIMER_KINDS],
            tails: [NIL; TIMER_KINDS],
            armed: [0; TIMER_KINDS],
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
        self.armed[timer as usize - 1]
    }

    /// Indices of every record in use (for shutdown).
    pub fn in_use(&self) -> impl Iterator<Item = u32> + '_ {
        self.conns.iter().enumerate().filter(|(_, c)| c.phase != Phase::Free).map(|(i, _)| i as u32)
    }

    /// Puts the connection at the tail of `timer`'s list, expiring at tick `deadline`.
    pub fn arm(&mut self, index: u32, timer: Timer, deadline: u64) {
        self.disarm(index);
        if timer == Timer::None {
            return;
        }
        let kind = timer as usize - 1;
        self.armed[kind] += 1;
        let tail = self.tails[kind];
        let conn = &mut self.conns[index as usize];
        conn.timer = timer;
        conn.deadline = deadline;
        conn.prev = tail;
        conn.next = NIL;
        if tail == NIL {
            self.heads[kind] = index;
        } else {
            self.conns[tail as usize].next = index;
        }
        self.tails[kind] = index;
    }

    /// Takes the connection out of its timer list.
    pub fn disarm(&mut self, index: u32) {
        let conn = &self.conns[index as usize];
        let (timer, prev, next) = (conn.timer, conn.prev, conn.next);
        if timer == Timer::None {
            return;
        }
        let kind = timer as usize - 1;
        self.armed[kind] -= 1;
        if prev == NIL {
            self.heads[kind] = next;
        } else {
            self.conns[prev as usize].next = next;
        }
        if next == NIL {
            self.tails[kind] = prev;
        } else {
            self.conns[next as usize].prev = prev;
        }
        let conn = &mut self.conns[index as usize];
        conn.timer = Timer::None;
        conn.prev = NIL;
        conn.next = NIL;
    }

    /// The first connection of `timer`'s list if it expired by tick `now`; it is disarmed.
    pub fn pop_expired(&mut self, timer: Timer, now: u64) -> Option<u32> {
        let head = self.heads[timer as usize - 1];
        if head == NIL || self.conns[head as usize].deadline > now {
            return None;
        }
        self.disarm(head);
        Some(head)
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
