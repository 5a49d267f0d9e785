//! The provided-buffer ring (Linux 5.19): receive buffers allocated once at start-up and
//! registered with the kernel, which picks one for each multishot recv completion. Buffers go
//! back by writing a ring entry and publishing the tail, which we do once per loop turn.

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

/// Buffer group id of the single group each worker registers.
pub const BUFFER_GROUP: u16 = 0;

/// Receive buffers plus the ring through which the kernel takes them.
pub struct BufRing {
    /// The ring of `count` entries: anonymous, page-aligned memory shared with the kernel.
    ring: *mut BufRingEntry,
    ring_bytes: usize,
    /// The buffers themselves, `count * buf_bytes`, one anonymous mapping. Kept as a raw
    /// pointer: the kernel writes into it behind Rust's back, so we only ever form a reference
    /// to one buffer, after its completion says the kernel is done with it.
    memory: *mut u8,
    memory_bytes: usize,
    count: u16,
    buf_bytes: usize,
    /// Our copy of the tail; published to the kernel by `publish`.
    tail: u16,
    /// Buffers returned since the last publish.
    unpublished: u16,
}

impl BufRing {
    /// Allocates `count` buffers of `buf_bytes` and registers them as `BUFFER_GROUP`.
    pub fn register(ring: &IoUring, count: u16, buf_bytes: usize) -> io::Result<BufRing> {
        assert!(count.is_power_of_two() && count <= 32_768, "kernel rule for ring entries");
        let ring_bytes = usize::from(count) * std::mem::size_of::<BufRingEntry>();
        let memory_bytes = usize::from(count) * buf_bytes;
        let addr = map_anonymous(ring_bytes)?;
        let memory = match map_anonymous(memory_bytes) {
            Ok(memory) => memory,
            Err(e) => {
                // SAFETY: `addr` was mapped just above with `ring_bytes` and is not yet shared.
                unsafe { libc::munmap(addr.cast(), ring_bytes) };
                return Err(e);
            }
        };
        // Touch every page now: the buffers are allocated once at start-up, and faulting them
        // in here keeps the resident size flat under load instead of creeping up by 8 MiB.
        // SAFETY: `memory` is a fresh private mapping of `memory_bytes` that nobody else uses
        // yet (it is registered with the kernel only below).
        unsafe { std::ptr::write_bytes(memory.cast::<u8>(), 0, memory_bytes) };
        let mut bufs = BufRing {
            ring: addr.cast(),
            ring_bytes,
            memory: memory.cast(),
            memory_bytes,
            count,
            buf_bytes,
            tail: 0,
            unpublished: 0,
        };
        // SAFETY: `ring` is `ring_bytes` of page-aligned memory owned by `bufs`, which the
        // worker drops only after the ring (fields are declared ring-first in `Worker`), so the
        // kernel never sees it freed while registered.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(addr as u64, count, BUFFER_GROUP, 0)?;
        }
        for bid in 0..count {
            bufs.give_back(bid);
        }
        bufs.publish();
        Ok(bufs)
    }

    /// The bytes the kernel wrote into buffer `bid`.
    ///
    /// Call only for a buffer the kernel handed over in a completion and that has not been
    /// given back since: then the kernel does not write it while the slice lives.
    pub fn data(&self, bid: u16, len: usize) -> &[u8] {
        assert!(bid < self.count, "buffer id from the kernel is within the group");
        let start = usize::from(bid) * self.buf_bytes;
        // SAFETY: `start + len` is inside the `memory_bytes` mapping (bid < count, len
        // clamped to buf_bytes); per this function's contract the kernel is not writing it.
        unsafe { std::slice::from_raw_parts(self.memory.add(start), len.min(self.buf_bytes)) }
    }

    /// Queues buffer `bid` for the kernel again; visible after `publish`.
    pub fn give_back(&mut self, bid: u16) {
        debug_assert!(bid < self.count);
        let index = usize::from(self.tail & (self.count - 1));
        let addr = self.memory as u64 + usize::from(bid) as u64 * self.buf_bytes as u64;
        // SAFETY: `index < count`, so the entry lies inside the ring mapping. The kernel only
        // reads entries between its head and the published tail; this one is past the
        // published tail until `publish`, so we are its only user.
        let entry = unsafe { &mut *self.ring.add(index) };
        entry.set_addr(addr);
        entry.set_len(self.buf_bytes as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        self.unpublished += 1;
    }

    /// Makes returned buffers visible to the kernel.
    pub fn publish(&mut self) {
        if self.unpublished == 0 {
            return;
        }
        self.unpublished = 0;
        // SAFETY: the tail field lives in the first entry of the ring mapping, which outlives
        // this call; the kernel reads it with acquire ordering, so the entries written above
        // are visible before it sees the new tail.
        unsafe {
            let tail = BufRingEntry::tail(self.ring) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: both mappings were created in `register` with exactly these sizes; the ring they
        // was registered with is dropped before us, so the kernel no longer reads it.
        unsafe {
            libc::munmap(self.ring.cast(), self.ring_bytes);
            libc::munmap(self.memory.cast(), self.memory_bytes);
        }
    }
}

/// Anonymous, private, page-aligned read-write memory.
fn map_anonymous(bytes: usize) -> io::Result<*mut libc::c_void> {
    // SAFETY: no address hint and no file; the result is checked for MAP_FAILED.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_ANONYMOUS | libc::MAP_PRIVATE,
            -1,
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        Err(io::Error::last_os_error())
    } else {
        Ok(addr)
    }
}
