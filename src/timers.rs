//! Connection timeouts for the event-loop engines: one FIFO list per timeout kind, threaded
//! through the connection records (`TimerLink`). Each kind has a single duration, so FIFO
//! order is deadline order: arming moves a record to the tail in O(1) and the tick pops
//! expired records from the head. No heap, no timer per connection in the kernel.

/// A worker's timeouts in ticks (`limits::TICK_MILLIS`, one second), from the configuration.
pub struct Ticks {
    pub header: u64,
    pub idle: u64,
    pub send: u64,
    pub linger: u64,
    pub shutdown: u64,
}

impl Ticks {
    pub fn new(config: &crate::config::Config) -> Ticks {
        // A timeout under a second still gets one tick: zero would expire on arming.
        let secs = |d: std::time::Duration| d.as_secs().max(1);
        Ticks {
            header: secs(config.header_timeout),
            idle: secs(config.keepalive_timeout),
            send: secs(config.send_timeout),
            linger: crate::limits::LINGER_TIMEOUT_SECS.into(),
            shutdown: config.shutdown_timeout.as_secs(),
        }
    }
}

/// Marks the end of a list.
const NIL: u32 = u32::MAX;

/// Which timeout a connection is waiting on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// No timer (closing).
    None = 0,
    /// Waiting for a request head to complete.
    Header = 1,
    /// Idle keep-alive between requests.
    Idle = 2,
    /// A send is making no progress.
    Send = 3,
    /// Half-closed after the last response, discarding the client's last bytes.
    Linger = 4,
}

/// Number of timer lists (every kind but `None`).
const TIMER_KINDS: usize = 4;

/// A record's place in the timer lists.
#[derive(Debug, Clone, Copy)]
pub struct TimerLink {
    timer: Timer,
    deadline: u64,
    prev: u32,
    next: u32,
}

impl Default for TimerLink {
    fn default() -> Self {
        TimerLink { timer: Timer::None, deadline: 0, prev: NIL, next: NIL }
    }
}

impl TimerLink {
    /// The timer the record is waiting on.
    pub fn timer(&self) -> Timer {
        self.timer
    }
}

/// A record that can wait in the timer lists.
pub trait Timed {
    fn link(&self) -> &TimerLink;
    fn link_mut(&mut self) -> &mut TimerLink;
}

/// The heads, tails and lengths of the lists; the links live in the records.
#[derive(Debug)]
pub struct TimerLists {
    heads: [u32; TIMER_KINDS],
    tails: [u32; TIMER_KINDS],
    armed: [u32; TIMER_KINDS],
}

impl Default for TimerLists {
    fn default() -> Self {
        TimerLists { heads: [NIL; TIMER_KINDS], tails: [NIL; TIMER_KINDS], armed: [0; TIMER_KINDS] }
    }
}

impl TimerLists {
    /// Puts `records[index]` at the tail of `timer`'s list, expiring at tick `deadline`.
    pub fn arm<T: Timed>(&mut self, records: &mut [T], index: u32, timer: Timer, deadline: u64) {
        self.disarm(records, index);
        if timer == Timer::None {
            return;
        }
        let kind = timer as usize - 1;
        self.armed[kind] += 1;
        let tail = self.tails[kind];
        *records[index as usize].link_mut() = TimerLink { timer, deadline, prev: tail, next: NIL };
        if tail == NIL {
            self.heads[kind] = index;
        } else {
            records[tail as usize].link_mut().next = index;
        }
        self.tails[kind] = index;
    }

    /// Takes `records[index]` out of its timer list.
    pub fn disarm<T: Timed>(&mut self, records: &mut [T], index: u32) {
        let TimerLink { timer, prev, next, .. } = *records[index as usize].link();
        if timer == Timer::None {
            return;
        }
        let kind = timer as usize - 1;
        self.armed[kind] -= 1;
        if prev == NIL {
            self.heads[kind] = next;
        } else {
            records[prev as usize].link_mut().next = next;
        }
        if next == NIL {
            self.tails[kind] = prev;
        } else {
            records[next as usize].link_mut().prev = prev;
        }
        *records[index as usize].link_mut() = TimerLink::default();
    }

    /// The first record of `timer`'s list if it expired by tick `now`; it is disarmed.
    pub fn pop_expired<T: Timed>(
        &mut self,
        records: &mut [T],
        timer: Timer,
        now: u64,
    ) -> Option<u32> {
        let head = self.heads[timer as usize - 1];
        if head == NIL || records[head as usize].link().deadline > now {
            return None;
        }
        self.disarm(records, head);
        Some(head)
    }

    /// Records waiting on `timer` (not `None`).
    pub fn armed(&self, timer: Timer) -> u32 {
        self.armed[timer as usize - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Record(TimerLink);

    impl Timed for Record {
        fn link(&self) -> &TimerLink {
            &self.0
        }
        fn link_mut(&mut self) -> &mut TimerLink {
            &mut self.0
        }
    }

    #[test]
    fn timers_expire_in_deadline_order_and_rearming_moves_to_tail() {
        let mut records: Vec<Record> = (0..4).map(|_| Record(TimerLink::default())).collect();
        let mut lists = TimerLists::default();
        lists.arm(&mut records, 0, Timer::Idle, 5);
        lists.arm(&mut records, 1, Timer::Idle, 6);
        lists.arm(&mut records, 2, Timer::Idle, 7);
        lists.arm(&mut records, 0, Timer::Idle, 8); // activity on 0
        assert_eq!(lists.armed(Timer::Idle), 3);
        assert_eq!(lists.pop_expired(&mut records, Timer::Idle, 4), None);
        assert_eq!(lists.pop_expired(&mut records, Timer::Idle, 7), Some(1));
        assert_eq!(lists.pop_expired(&mut records, Timer::Idle, 7), Some(2));
        assert_eq!(lists.pop_expired(&mut records, Timer::Idle, 7), None);
        lists.arm(&mut records, 0, Timer::Send, 9);
        assert_eq!(lists.pop_expired(&mut records, Timer::Idle, 100), None);
        assert_eq!(lists.pop_expired(&mut records, Timer::Send, 100), Some(0));
        assert_eq!((lists.armed(Timer::Idle), lists.armed(Timer::Send)), (0, 0));
        assert_eq!(records[0].link().timer(), Timer::None);
    }
}
