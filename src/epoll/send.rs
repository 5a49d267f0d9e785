//! Sending a batch from a non-blocking socket: `send` when the pending bytes are one
//! contiguous run, `sendmsg` over the iovecs otherwise (MSG_NOSIGNAL: a reset is an error
//! result, never SIGPIPE), then `sendfile` for a large body (`Batch::splice`), the same
//! zero-copy path as the io_uring engine's splice. A short send resumes where it stopped on
//! the next EPOLLOUT.

use std::os::fd::RawFd;

use super::errno;
use crate::batch::Batch;

/// Bytes of a large body one connection hands to `sendfile` per loop turn; the rest waits for
/// the end of the turn. Without a cap one call queued a whole 1 MiB body in the socket, which
/// is cheap for a client that reads in user space and costly for one that drains in the
/// kernel (what the congestion control does not let out at once is paced by timer). 1 MiB
/// file, 100 connections, server CPU-us per request (medians of 3 rounds, loadgen / wrk):
/// uncapped 473 / 124, 256 KiB 153 / 218, 512 KiB 155 / 157; 512 KiB is the best compromise.
const SENDFILE_BYTES_PER_TURN_MAX: usize = 512 * 1024;

/// How far a send got.
pub(super) enum Sent {
    /// Everything in the batch left.
    Done,
    /// The socket is full: resume on EPOLLOUT.
    Blocked,
    /// The connection's share of this loop turn is used: resume at the end of the turn.
    Yield,
    /// The connection failed (reset, or the file shrank under a body being sent).
    Failed,
}

/// Sends what `batch` still holds on socket `fd`, taking the bytes sent from `budget`.
pub(super) fn send_batch(fd: RawFd, batch: &mut Batch, budget: &mut usize) -> Sent {
    while !batch.iovecs_sent() {
        // The heads go out with MSG_MORE when a spliced body follows: head and body then share
        // segments, as one sendmsg would.
        let more = if batch.splice().is_some() { libc::MSG_MORE } else { 0 };
        let flags = libc::MSG_NOSIGNAL | more;
        let pending = batch.pending();
        let n = if let [one] = pending {
            // SAFETY: the iovec points into the batch's heads or into an entry the batch holds
            // an `Arc` to, alive and unmodified for this synchronous call.
            unsafe { libc::send(fd, one.iov_base, one.iov_len, flags) }
        } else {
            // SAFETY: the msghdr and its iovecs point into `batch` and the entries it holds,
            // alive and unmodified for this synchronous call.
            unsafe { libc::sendmsg(fd, batch.msghdr(), flags) }
        };
        if n < 0 {
            match errno() {
                libc::EINTR => continue,
                libc::EAGAIN => return Sent::Blocked,
                _ => return Sent::Failed,
            }
        }
        batch.advance(n as usize);
        *budget = budget.saturating_sub(n as usize);
    }
    let mut step = SENDFILE_BYTES_PER_TURN_MAX;
    while let Some(body) = batch.splice().filter(|b| b.to_pipe > 0) {
        if *budget == 0 || step == 0 {
            return Sent::Yield;
        }
        let mut offset = body.offset as libc::off_t;
        let count = (body.to_pipe as usize).min(*budget).min(step);
        // SAFETY: `offset` is a live local; the file is kept open by an entry the batch holds,
        // and the socket by its connection.
        let n = unsafe { libc::sendfile(fd, body.fd, &mut offset, count) };
        if n <= 0 {
            if n < 0 {
                match errno() {
                    libc::EINTR => continue,
                    libc::EAGAIN => return Sent::Blocked,
                    _ => {}
                }
            }
            return Sent::Failed; // an error, or the file shrank under us
        }
        body.offset += n as u64;
        body.to_pipe -= n as u64;
        batch.spliced_out(n as u64);
        *budget = budget.saturating_sub(n as usize);
        step = step.saturating_sub(n as usize);
    }
    batch.finish_splice();
    Sent::Done
}
