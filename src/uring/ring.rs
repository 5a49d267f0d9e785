//! Ring set-up: the strongest setup flags the kernel accepts, a clear error when io_uring is
//! unavailable, and the one function that pushes submission entries.
//!
//! Kernel floor: 6.0 (multishot recv, SINGLE_ISSUER). DEFER_TASKRUN (6.1) is used when present,
//! else COOP_TASKRUN (5.19).

use io_uring::{opcode, squeue, IoUring};

use crate::limits::{CQ_ENTRIES, SQ_ENTRIES};
use crate::Error;

/// Which task-run mode the ring got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskRun {
    /// SINGLE_ISSUER + DEFER_TASKRUN: completions are processed only when we wait (6.1+).
    Defer,
    /// SINGLE_ISSUER + COOP_TASKRUN: no interrupting IPIs (6.0).
    Coop,
}

/// Builds a ring for the calling thread, the only thread that will ever submit to it.
pub fn build() -> Result<(IoUring, TaskRun), Error> {
    let defer = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(CQ_ENTRIES)
        .setup_submit_all()
        .build(SQ_ENTRIES);
    let ring = match defer {
        Ok(ring) => (ring, TaskRun::Defer),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let coop = IoUring::builder()
                .setup_single_issuer()
                .setup_coop_taskrun()
                .setup_cqsize(CQ_ENTRIES)
                .build(SQ_ENTRIES)
                .map_err(|source| Error::Uring { what: "setup", source })?;
            (coop, TaskRun::Coop)
        }
        Err(source) => return Err(Error::Uring { what: "setup", source }),
    };
    check_features(&ring.0)?;
    Ok(ring)
}

/// Refuses kernels that lack what the engine relies on, naming the missing piece.
fn check_features(ring: &IoUring) -> Result<(), Error> {
    let params = ring.params();
    if !params.is_feature_nodrop() {
        return Err(missing("completion-queue NODROP (Linux 5.5)"));
    }
    if !params.is_feature_fast_poll() {
        return Err(missing("FAST_POLL (Linux 5.7)"));
    }
    let mut probe = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|source| Error::Uring { what: "probe", source })?;
    for (code, name) in [
        (opcode::AcceptMulti::CODE, "accept"),
        (opcode::RecvMulti::CODE, "recv"),
        (opcode::SendMsg::CODE, "sendmsg"),
        (opcode::Close::CODE, "close"),
        (opcode::Shutdown::CODE, "shutdown"),
        (opcode::Timeout::CODE, "timeout"),
        (opcode::AsyncCancel::CODE, "async cancel"),
        (opcode::OpenAt2::CODE, "openat2"),
        (opcode::Read::CODE, "read"),
    ] {
        if !probe.is_supported(code) {
            return Err(Error::Uring {
                what: name,
                source: std::io::Error::from_raw_os_error(libc::EINVAL),
            });
        }
    }
    Ok(())
}

fn missing(feature: &'static str) -> Error {
    Error::Uring { what: feature, source: std::io::Error::from_raw_os_error(libc::EINVAL) }
}

/// Pushes a chain of linked entries so that they reach the kernel in one submission: a chain
/// split across two submissions would be cut at the split.
///
/// # Safety
/// As for `push`, for every entry.
pub unsafe fn push_chain(ring: &mut IoUring, entries: &[squeue::Entry]) {
    loop {
        let sq = ring.submission();
        if sq.capacity() - sq.len() >= entries.len() {
            break;
        }
        drop(sq);
        submit_full(ring);
    }
    for entry in entries {
        // SAFETY: forwarded from this function's contract; there is room for every entry.
        unsafe { push(ring, entry) };
    }
}

/// Pushes `entry`, submitting first if the submission queue is full.
///
/// # Safety
/// Every buffer, iovec, msghdr and timespec the entry points to must stay valid and unmoved
/// until its completion (the last one, for multishot operations) has been reaped.
pub unsafe fn push(ring: &mut IoUring, entry: &squeue::Entry) {
    loop {
        // SAFETY: forwarded from this function's contract.
        if unsafe { ring.submission().push(entry) }.is_ok() {
            return;
        }
        submit_full(ring);
    }
}

/// Hands a full submission queue to the kernel. Completions are not lost by this: the CQ is
/// sized for them and NODROP is required at set-up.
fn submit_full(ring: &mut IoUring) {
    if let Err(e) = ring.submit() {
        if e.raw_os_error() != Some(libc::EBUSY) && e.raw_os_error() != Some(libc::EINTR) {
            panic!("io_uring submit failed with a full queue: {e}");
        }
    }
}

/// Byte offset of the `optlen` field (a union with `file_index` and `splice_fd_in`) in a
/// submission entry: kernel ABI, the same on every architecture.
const SQE_OPTLEN_OFFSET: usize = 44;

/// A multishot recv that ends by itself (its last completion without IORING_CQE_F_MORE) once
/// it has received `bytes`: the kernel's own bound on what one connection takes from the
/// buffer ring before we look (Linux 6.17+, `sqe->optlen`). Without it, a multishot recv keeps
/// filling buffers until a cancel arrives, and a client that never reads its responses could
/// take any number of them. Older kernels refuse a non-zero field with EINVAL (it was
/// `file_index`, which recv rejected); the worker then re-arms without it.
pub fn with_total_limit(entry: squeue::Entry, bytes: u32) -> squeue::Entry {
    const _: () = assert!(std::mem::size_of::<squeue::Entry>() == 64);
    // SAFETY: `Entry` is `#[repr(C)]` around the kernel's 64-byte `io_uring_sqe`, built from
    // an all-zero entry, so every byte is initialized and any byte pattern is a valid entry
    // for the kernel to judge.
    let mut raw: [u8; 64] = unsafe { std::mem::transmute(entry) };
    raw[SQE_OPTLEN_OFFSET..SQE_OPTLEN_OFFSET + 4].copy_from_slice(&bytes.to_ne_bytes());
    // SAFETY: as above, in the other direction.
    unsafe { std::mem::transmute::<[u8; 64], squeue::Entry>(raw) }
}
