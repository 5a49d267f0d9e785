//! `user_data` packing: which operation a completion belongs to, and for connection operations
//! which slot and which generation of that slot. A completion whose generation no longer
//! matches its slot is stale (the slot was reused) and is dropped, never applied.

/// Operations ringserve submits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// Multishot accept on one of the worker's listeners (the slot field is its index).
    Accept = 1,
    /// Multishot recv on a connection.
    Recv = 2,
    /// sendmsg of a connection's batch.
    Send = 3,
    /// Close of a connection's socket.
    Close = 4,
    /// Cancel of a connection's recv.
    Cancel = 5,
    /// Half-close (SHUT_WR) before a lingering close.
    Shutdown = 6,
    /// The worker's periodic tick.
    Tick = 7,
    /// Read of the worker's wake-up eventfd (shutdown requested).
    Wake = 8,
    /// Close of a socket that never got a slot (over the connection limit).
    Reject = 9,
    /// A file-cache fill's open or read; the slot field names the fill, the generation field
    /// its generation and part (see `lookup.rs`).
    Lookup = 11,
    /// Read of the file cache's inotify events.
    Watch = 12,
    /// Poll for inotify events, on kernels whose read answered EAGAIN instead of waiting.
    WatchPoll = 13,
    /// getsockopt(SO_PEERNAME) of a new connection, for the access log.
    Peer = 14,
    /// Write of the access log's buffer.
    LogWrite = 15,
    /// Read of the lister thread's eventfd: directory listings finished.
    Listed = 16,
}

impl Op {
    fn from_u8(v: u8) -> Option<Op> {
        Some(match v {
            1 => Op::Accept,
            2 => Op::Recv,
            3 => Op::Send,
            4 => Op::Close,
            5 => Op::Cancel,
            6 => Op::Shutdown,
            7 => Op::Tick,
            8 => Op::Wake,
            9 => Op::Reject,
            11 => Op::Lookup,
            12 => Op::Watch,
            13 => Op::WatchPoll,
            14 => Op::Peer,
            15 => Op::LogWrite,
            16 => Op::Listed,
            _ => return None,
        })
    }
}

/// A decoded `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// The operation.
    pub op: Op,
    /// Generation of the slot when the operation was submitted (24 bits).
    pub generation: u32,
    /// Slot index (the listener's index for accepts, 0 for other worker-level operations).
    pub slot: u32,
}

/// Generations wrap at 24 bits.
pub const GENERATION_MASK: u32 = (1 << 24) - 1;

impl Token {
    /// A worker-level token.
    pub fn worker(op: Op) -> Token {
        Token { op, generation: 0, slot: 0 }
    }

    /// Packs into `user_data`: op in the top 8 bits, generation in the next 24, slot below.
    pub fn pack(self) -> u64 {
        (self.op as u64) << 56
            | u64::from(self.generation & GENERATION_MASK) << 32
            | u64::from(self.slot)
    }

    /// Unpacks a `user_data`; `None` for values ringserve never submits.
    pub fn unpack(user_data: u64) -> Option<Token> {
        let op = Op::from_u8((user_data >> 56) as u8)?;
        Some(Token {
            op,
            generation: (user_data >> 32) as u32 & GENERATION_MASK,
            slot: user_data as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let t = Token { op: Op::Send, generation: GENERATION_MASK, slot: 16_383 };
        assert_eq!(Token::unpack(t.pack()), Some(t));
        assert_eq!(Token::unpack(0), None);
    }
}
