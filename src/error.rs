//! Start-up and operating errors: each carries the context a user needs (path, address, errno)
//! and a hint of what to do. Client protocol errors are not here: they are HTTP responses.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Why the server could not start or keep running.
#[derive(Debug)]
pub enum Error {
    /// Bad command-line usage.
    Usage(String),
    /// The document root is missing or unreadable.
    Root { path: PathBuf, source: io::Error },
    /// The listening socket could not be set up.
    Bind { addr: SocketAddr, source: io::Error },
    /// io_uring is unavailable or lacks a feature ringserve needs.
    Uring { what: &'static str, source: io::Error },
    /// The access log could not be opened.
    AccessLog { path: PathBuf, source: io::Error },
    /// Another OS-level failure at start-up (threads, signals, eventfd).
    Os { what: &'static str, source: io::Error },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(msg) => write!(f, "{}", msg.lines().next().unwrap_or("bad usage")),
            Error::Root { path, source } => {
                write!(f, "cannot serve root {}: {source}", path.display())
            }
            Error::Bind { addr, source } if source.kind() == io::ErrorKind::AddrInUse => write!(
                f,
                "cannot listen on {addr}: address already in use (another server is running \
                 there; pick another with --addr)"
            ),
            Error::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            Error::Uring { what, source } => write!(f, "{}", uring_message(what, source)),
            Error::AccessLog { path, source } => {
                write!(f, "cannot open access log {}: {source}", path.display())
            }
            Error::Os { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

/// The io_uring failure with the reason and the fix, as specific as the errno allows.
fn uring_message(what: &str, source: &io::Error) -> String {
    let hint = match source.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            "io_uring is forbidden here: a container seccomp profile (Docker's default blocks \
             io_uring; run with --security-opt seccomp=unconfined) or the sysctl \
             kernel.io_uring_disabled (set it to 0: sysctl -w kernel.io_uring_disabled=0)"
        }
        Some(libc::ENOSYS) => "this kernel has no io_uring (needs Linux 6.0 or later)",
        Some(libc::EINVAL) => {
            "this kernel lacks an io_uring feature ringserve needs (multishot recv, \
             provided buffer rings and SINGLE_ISSUER need Linux 6.0 or later)"
        }
        Some(libc::ENOMEM) => {
            "the kernel refused memory for the ring or its buffers (raise the memlock limit: \
             ulimit -l unlimited)"
        }
        _ => "",
    };
    let fallback = "or run the thread-per-connection engine: --engine blocking";
    if hint.is_empty() {
        format!("io_uring {what} failed: {source}; {fallback}")
    } else {
        format!("io_uring {what} failed: {source}; {hint}; {fallback}")
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Root { source, .. }
            | Error::Bind { source, .. }
            | Error::Uring { source, .. }
            | Error::AccessLog { source, .. }
            | Error::Os { source, .. } => Some(source),
            Error::Usage(_) => None,
        }
    }
}
