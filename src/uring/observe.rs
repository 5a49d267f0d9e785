//! What the worker reports: each connection's client address for the access log (a
//! getsockopt(SO_PEERNAME) through the ring: a multishot accept cannot return addresses), the
//! access log's writes through the ring, and the gauges published once per loop turn.

use io_uring::opcode;

use super::slots::Timer;
use super::token::{Op, Token};
use super::{fixed, ring, Worker};
use crate::observe::access_log::{now_secs, LogFormat, PeerText};
use crate::observe::log_sink::LogSink;

impl Worker {
    /// With an access log, asks the kernel for a new connection's client address, a sockaddr
    /// of `len` bytes (that of the family of the listener that accepted it).
    pub(super) fn ask_peer(&mut self, index: u32, len: u32) {
        let Some(target) = self.peer_addrs.get_mut(index as usize) else { return };
        self.peers[index as usize] = PeerText::default();
        let slot = self.slots.get(index);
        let entry = opcode::GetSockOpt::new(
            fixed(slot.fd),
            libc::SOL_SOCKET as u32,
            libc::SO_PEERNAME as u32,
            (target as *mut libc::sockaddr_in6).cast(),
            len.min(std::mem::size_of::<libc::sockaddr_in6>() as u32),
        )
        .build();
        let token = Token { op: Op::Peer, generation: slot.generation, slot: index };
        slot.other_ops += 1;
        // SAFETY: the kernel writes at most `len` (capped at sizeof sockaddr_in6) bytes into
        // this slot's entry of the boxed `peer_addrs`, which lives as long as the worker; the
        // slot is not released (nor its entry reused) until this completion arrives
        // (`other_ops`).
        unsafe { ring::push(&mut self.ring, &entry.user_data(token.pack())) };
    }

    pub(super) fn on_peer(&mut self, token: Token, result: i32) {
        let index = token.slot as usize;
        if result > 0 {
            self.peers[index] = PeerText::from_sockaddr(&self.peer_addrs[index], result as usize);
        }
        self.on_other(token);
    }

    /// Submits the access log's next write if one is due (any buffered lines when `force`).
    pub(super) fn flush_log(&mut self, force: bool) {
        let Some(log) = &mut self.log else { return };
        let Some((fd, ptr, len)) = log.next_write(force, now_secs()) else { return };
        // O_APPEND places every write at the end of the file, whatever the offset (-1: the
        // file position, which also suits standard output when it is a pipe).
        let entry = opcode::Write::new(io_uring::types::Fd(fd), ptr, len as u32)
            .offset(u64::MAX)
            .build()
            .user_data(Token::worker(Op::LogWrite).pack());
        // SAFETY: `ptr..ptr+len` is inside the sink's buffer being written, which it does not
        // touch until `on_written`; the descriptor is kept open by the sink (`in_flight`)
        // until then, even if a reopen replaced it. The worker does not exit while a write is
        // in flight (`log_idle`).
        unsafe { ring::push(&mut self.ring, &entry) };
    }

    pub(super) fn on_log_written(&mut self, result: i32) {
        if let Some(log) = &mut self.log {
            log.on_written(i64::from(result), now_secs());
        }
        self.flush_log(self.draining_until.is_some());
    }

    /// The access log's format, if one is written (request text is escaped for it).
    pub(super) fn log_format(&self) -> Option<LogFormat> {
        self.log.as_ref().map(LogSink::format)
    }

    /// Nothing left to write to the access log (the last condition of a shutdown).
    pub(super) fn log_idle(&self) -> bool {
        self.log.as_ref().is_none_or(|log| log.is_idle())
    }

    /// Publishes the gauges: connections by state, the file cache's counts, the log's.
    pub(super) fn publish(&mut self) {
        let stats = &self.recorder.stats;
        let reading = u64::from(self.slots.armed(Timer::Header));
        let writing = u64::from(self.slots.armed(Timer::Send));
        let idle = u64::from(self.slots.armed(Timer::Idle));
        let closing = u64::from(self.slots.live()).saturating_sub(reading + writing + idle);
        stats.set_connections([reading, writing, idle, closing]);
        stats.set_cache(self.files.counters(), self.files.len(), self.files.bytes());
        if let Some(log) = &self.log {
            stats.set_log(log.written, log.dropped);
        }
    }
}
