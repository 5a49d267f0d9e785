//! Sending a batch from a non-blocking socket: `send` when the pending bytes are one
//! contiguous run, `sendmsg` over the iovecs otherwise (MSG_NOSIGNAL: a reset is an error
//! result, never SIGPIPE), then `sendfile` for a large body (`Batch::send_file`), as the
//! other engines do. A short send resumes where it stopped on the next EPOLLOUT.

use std::os::fd::RawFd;

use super::errno;
use crate::batch::{Batch, FileSend, FILE_STEP_BYTES_MAX};

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
        // The heads go out with MSG_MORE when a file body follows: head and body then share
        // segments, as one sendmsg would.
        let more = if batch.file_body().is_some() { libc::MSG_MORE } else { 0 };
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
    // One step per connection per loop turn (`FILE_STEP_BYTES_MAX`); the rest waits for the
    // end of the turn.
    if batch.file_body().is_some() {
        if *budget == 0 {
            return Sent::Yield;
        }
        match batch.send_file(fd, (*budget).min(FILE_STEP_BYTES_MAX)) {
            FileSend::Moved(n) => *budget = budget.saturating_sub(n),
            FileSend::Blocked => return Sent::Blocked,
            FileSend::Failed => return Sent::Failed,
        }
        if batch.file_body().is_some() {
            return Sent::Yield;
        }
    }
    Sent::Done
}
