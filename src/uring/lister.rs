//! The lister thread: directory listings (`--autoindex`) for a worker's fills. io_uring has no
//! operation that reads a directory, and a directory of 100,000 entries on a cold disk can
//! take long, so a fill's `Request::List` runs here, never on the worker. The result comes back
//! through an eventfd the worker's ring reads, then is handed to the fill like any completion.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};

use io_uring::{opcode, types};

use super::token::{Op, Token};
use super::{ring, Worker};
use crate::files::fill::ListRequest;

/// A listing to make, and the completion to post for it.
struct Job {
    request: ListRequest,
    user_data: u64,
}

// SAFETY: the request's pointers are into a fill the worker keeps boxed and does not touch
// until this job's completion is handed back (`Fill::is_done` is false while it is in
// flight); only the lister thread uses them meanwhile.
unsafe impl Send for Job {}

/// A worker's link to its lister thread.
pub(super) struct Lister {
    jobs: Sender<Job>,
    done: Arc<Mutex<Vec<(u64, i32)>>>,
    event: Arc<OwnedFd>,
    /// Target of the ring's read of `event`; boxed so its address is fixed while it is in
    /// flight.
    event_value: Box<u64>,
}

impl Lister {
    /// Starts a lister thread for listings beneath `root_path` (canonical).
    pub(super) fn start(root_path: PathBuf) -> std::io::Result<Lister> {
        // SAFETY: eventfd takes no pointers; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a descriptor just created, owned by nothing else.
        let event = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        let done = Arc::new(Mutex::new(Vec::new()));
        let (jobs, receive) = channel::<Job>();
        let (thread_done, thread_event) = (Arc::clone(&done), Arc::clone(&event));
        std::thread::Builder::new().name("ringserve-lister".into()).spawn(move || {
            // Ends when the worker drops its sender (the worker never exits with a fill
            // running, so no job is lost).
            while let Ok(job) = receive.recv() {
                // SAFETY: see `Job`: the fill lives and is left alone until this completes.
                let result = unsafe { job.request.perform(&root_path) };
                thread_done.lock().unwrap_or_else(|e| e.into_inner()).push((job.user_data, result));
                let one: u64 = 1;
                // SAFETY: writes 8 bytes from a live u64 to an eventfd the Arc keeps open.
                unsafe { libc::write(thread_event.as_raw_fd(), (&one as *const u64).cast(), 8) };
            }
        })?;
        Ok(Lister { jobs, done, event, event_value: Box::new(0) })
    }

    /// Queues a listing; its completion arrives as `user_data` with the result.
    pub(super) fn submit(&self, request: ListRequest, user_data: u64) -> bool {
        self.jobs.send(Job { request, user_data }).is_ok()
    }
}

impl Worker {
    /// Arms the ring's read of the lister's eventfd, if there is a lister.
    pub(super) fn arm_lister(&mut self) {
        let Some(lister) = &mut self.lister else { return };
        let entry = opcode::Read::new(
            types::Fd(lister.event.as_raw_fd()),
            (&mut *lister.event_value as *mut u64).cast(),
            8,
        )
        .build()
        .user_data(Token::worker(Op::Listed).pack());
        // SAFETY: the target is the lister's boxed `event_value` and the eventfd is kept open
        // by its Arc; both live as long as the worker, longer than the ring (dropped first).
        unsafe { ring::push(&mut self.ring, &entry) };
    }

    /// Listings finished: hand each result to its fill, then read the eventfd again.
    pub(super) fn on_listed(&mut self, _result: i32) {
        let finished = match &self.lister {
            Some(lister) => {
                std::mem::take(&mut *lister.done.lock().unwrap_or_else(|e| e.into_inner()))
            }
            None => return,
        };
        for (user_data, result) in finished {
            if let Some(token) = Token::unpack(user_data) {
                self.on_lookup(token, result);
            }
        }
        self.arm_lister();
    }
}
