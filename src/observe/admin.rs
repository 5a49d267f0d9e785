//! The admin listener (`--admin-addr`): `GET /health` and `GET /metrics` on an address of their
//! own, so no path of the served site is taken and the site's port can stay public while this
//! one does not. A plain thread per connection: a scrape every few seconds needs no ring. At
//! most `ADMIN_CONNECTIONS_MAX` at once, each bounded by `ADMIN_TIMEOUT`, so a client that
//! never finishes its request cannot block health checks for long.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::prometheus;
use super::stats::Registry;
use crate::http::{self, Method, ParseLimits, Parsed};
use crate::Error;

/// Admin connections served at once; more are answered 503 and closed. Health probes and
/// scrapers open one at a time.
pub const ADMIN_CONNECTIONS_MAX: usize = 16;

/// Time to receive a request and send the answer.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A running admin listener.
pub struct Admin {
    addr: SocketAddr,
    listener: Arc<TcpListener>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Admin {
    /// Binds `addr` and starts answering.
    pub fn start(addr: SocketAddr, registry: Arc<Registry>) -> Result<Admin, Error> {
        let listener =
            Arc::new(TcpListener::bind(addr).map_err(|source| bind_error(addr, source))?);
        let addr = listener.local_addr().map_err(|source| bind_error(addr, source))?;
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let thread = std::thread::Builder::new()
            .name("ringserve-admin".into())
            .spawn({
                let (listener, stop) = (Arc::clone(&listener), Arc::clone(&stop));
                move || accept_loop(&listener, &stop, &registry, started)
            })
            .map_err(|source| Error::Os { what: "start the admin thread", source })?;
        Ok(Admin { addr, listener, stop, thread: Some(thread) })
    }

    /// The bound address (its port, when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Shutting a listening socket down wakes the thread blocked in accept (Linux).
        // SAFETY: the listener is alive (we hold an Arc); shutdown takes no pointers.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn accept_loop(
    listener: &TcpListener,
    stop: &AtomicBool,
    registry: &Arc<Registry>,
    started: Instant,
) {
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::Acquire) {
            return;
        }
        let Ok((stream, _)) = accepted else {
            // Out of descriptors, or the peer gave up before we accepted: try again shortly.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        if active.fetch_add(1, Ordering::AcqRel) >= ADMIN_CONNECTIONS_MAX {
            active.fetch_sub(1, Ordering::AcqRel);
            let _ = answer(&stream, false, 503, "text/plain", b"busy\n");
            continue;
        }
        let (registry, active) = (Arc::clone(registry), Arc::clone(&active));
        let spawned =
            std::thread::Builder::new().name("ringserve-admin-conn".into()).spawn(move || {
                let _ = serve(stream, &registry, started);
                active.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            // The closure (and its count) was dropped with the error.
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn serve(mut stream: TcpStream, registry: &Registry, started: Instant) -> std::io::Result<()> {
    stream.set_read_timeout(Some(ADMIN_TIMEOUT))?;
    stream.set_write_timeout(Some(ADMIN_TIMEOUT))?;
    let mut buf = [0u8; 4096];
    let mut len = 0;
    let limits = ParseLimits { head_bytes_max: buf.len(), ..ParseLimits::default() };
    let request = loop {
        let n = stream.read(&mut buf[len..])?;
        if n == 0 {
            return Ok(());
        }
        len += n;
        match http::parse(&buf[..len], &limits) {
            Parsed::Partial if len < buf.len() => continue,
            Parsed::Complete(request) => break request,
            Parsed::Partial | Parsed::Reject(_) => {
                return answer(&stream, false, 400, "text/plain", b"bad request\n");
            }
        }
    };
    let head = request.method == Method::Head;
    if !matches!(request.method, Method::Get | Method::Head) {
        return answer(&stream, head, 405, "text/plain", b"only GET and HEAD\n");
    }
    match request.path {
        b"/health" if registry.draining() => {
            answer(&stream, head, 503, "text/plain", b"shutting down\n")
        }
        b"/health" => answer(&stream, head, 200, "text/plain", b"ok\n"),
        b"/metrics" => {
            let text = prometheus::render(&registry.total(), started.elapsed().as_secs_f64());
            answer(&stream, head, 200, prometheus::CONTENT_TYPE, text.as_bytes())
        }
        _ => answer(&stream, head, 404, "text/plain", b"not found: try /health or /metrics\n"),
    }
}

fn answer(
    mut stream: &TcpStream,
    head_only: bool,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    stream.write_all(&out)
}

fn bind_error(addr: SocketAddr, source: std::io::Error) -> Error {
    Error::Bind { flag: "--admin-addr", addr: addr.to_string(), source }
}
