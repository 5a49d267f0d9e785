//! A fixed set of keep-alive connections for benches: connect outside the timed region, then
//! run batches of requests through them and check every response.

use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::http::{Event, Parser};

/// How long a batch may wait for any progress before it fails.
pub const BATCH_STALL_MILLIS: i32 = 5000;

/// Why a batch failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// A response had another status or body length than expected.
    Mismatch { status: u16, body_bytes: u64 },
    /// The server closed or reset a connection.
    Closed,
    /// The bytes were not an HTTP/1.1 response.
    Parse,
    /// No progress for `BATCH_STALL_MILLIS`.
    Stalled,
    /// A socket or epoll call failed.
    Io(String),
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchError::Mismatch { status, body_bytes } => {
                write!(f, "unexpected response: status {status}, {body_bytes} body bytes")
            }
            BatchError::Closed => write!(f, "the server closed a connection"),
            BatchError::Parse => write!(f, "the server sent something that is not HTTP/1.1"),
            BatchError::Stalled => write!(f, "no response for {BATCH_STALL_MILLIS} ms"),
            BatchError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for BatchError {}

struct PoolConn {
    stream: TcpStream,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    parser: Parser,
    busy: bool,
}

/// Open keep-alive connections to one server, all sending the same request.
pub struct Pool {
    epoll: OwnedFd,
    conns: Vec<PoolConn>,
    request: Vec<u8>,
}

impl Pool {
    /// Opens `connections` keep-alive connections to `addr`, each sending `request` (complete
    /// request bytes, e.g. `b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"`).
    pub fn connect(addr: SocketAddr, connections: usize, request: &[u8]) -> std::io::Result<Pool> {
        // SAFETY: no pointer arguments; checked below.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor owned by nothing else.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut conns = Vec::with_capacity(connections);
        for index in 0..connections {
            let stream = TcpStream::connect(addr)?;
            stream.set_nodelay(true)?;
            stream.set_nonblocking(true)?;
            let mut event = libc::epoll_event { events: libc::EPOLLIN as u32, u64: index as u64 };
            // SAFETY: live local event; open descriptors.
            if unsafe { libc::epoll_ctl(fd, libc::EPOLL_CTL_ADD, stream.as_raw_fd(), &mut event) }
                < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            conns.push(PoolConn {
                stream,
                buf: vec![0u8; crate::worker::RECV_BUFFER_BYTES].into_boxed_slice(),
                start: 0,
                end: 0,
                parser: Parser::default(),
                busy: false,
            });
        }
        Ok(Pool { epoll, conns, request: request.to_vec() })
    }

    /// Sends `requests` requests spread over the connections (one in flight per connection),
    /// waits for every response, and checks each has `expect_status` and a body of
    /// `expect_body_len` bytes. Returns the number of responses checked.
    pub fn run_batch(
        &mut self,
        requests: u64,
        expect_status: u16,
        expect_body_len: u64,
    ) -> Result<u64, BatchError> {
        let mut unsent = requests;
        let mut ok = 0u64;
        for index in 0..self.conns.len() {
            if unsent == 0 {
                break;
            }
            self.send(index)?;
            unsent -= 1;
        }
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 256];
        while ok < requests {
            // SAFETY: live local buffer of 256 events.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    256,
                    BATCH_STALL_MILLIS,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(BatchError::Io(e.to_string()));
            }
            if n == 0 {
                return Err(BatchError::Stalled);
            }
            for event in &events[..n as usize] {
                let index = event.u64 as usize;
                let done = self.read(index, expect_status, expect_body_len)?;
                ok += done;
                if done > 0 && unsent > 0 {
                    self.send(index)?;
                    unsent -= 1;
                }
            }
        }
        Ok(ok)
    }

    fn send(&mut self, index: usize) -> Result<(), BatchError> {
        let conn = &mut self.conns[index];
        conn.busy = true;
        let mut written = 0;
        while written < self.request.len() {
            match conn.stream.write(&self.request[written..]) {
                Ok(n) => written += n,
                Err(e)
                    if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted =>
                {
                    std::thread::yield_now();
                }
                Err(_) => return Err(BatchError::Closed),
            }
        }
        Ok(())
    }

    /// Reads what is there; returns how many responses completed (0 or 1).
    fn read(&mut self, index: usize, status: u16, body_len: u64) -> Result<u64, BatchError> {
        let conn = &mut self.conns[index];
        let n = match conn.stream.read(&mut conn.buf[conn.end..]) {
            Ok(0) => return Err(BatchError::Closed),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                return Ok(0)
            }
            Err(_) => return Err(BatchError::Closed),
        };
        conn.end += n;
        match conn.parser.feed(&conn.buf[conn.start..conn.end], |_, _| {}) {
            Event::Done { consumed, response } => {
                conn.start += consumed;
                if conn.start != conn.end {
                    return Err(BatchError::Parse); // more bytes than the one response asked for
                }
                conn.start = 0;
                conn.end = 0;
                conn.busy = false;
                if response.status != status || response.body_bytes != body_len {
                    return Err(BatchError::Mismatch {
                        status: response.status,
                        body_bytes: response.body_bytes,
                    });
                }
                Ok(1)
            }
            Event::NeedMore => {
                if !conn.parser.is_idle() {
                    conn.start = 0;
                    conn.end = 0;
                } else if conn.end == conn.buf.len() {
                    return Err(BatchError::Parse);
                }
                Ok(0)
            }
            Event::Invalid => Err(BatchError::Parse),
        }
    }
}
