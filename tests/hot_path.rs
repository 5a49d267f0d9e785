//! No heap allocation per request in steady state: a counting global allocator wraps the
//! system allocator; the server runs in-process with one io_uring worker; after a warm-up,
//! 10,000 keep-alive requests (plain and pipelined) must cause zero allocations anywhere in
//! the process. The client side reads into fixed buffers so it allocates nothing either. Both
//! ways of re-checking cached files run meanwhile: by interval, and on inotify events; the
//! second run also writes an access log, which must not allocate per line either.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::ffi::OsStringExt;
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Sends `request` `count` times in bursts of `depth`, reading each burst's responses fully.
fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
    response_bytes: usize,
    count: usize,
    depth: usize,
) {
    let mut burst = [0u8; 4096];
    let burst_len = request.len() * depth;
    for i in 0..depth {
        burst[i * request.len()..(i + 1) * request.len()].copy_from_slice(request);
    }
    let mut buf = [0u8; 65536];
    for _ in 0..count / depth {
        stream.write_all(&burst[..burst_len]).unwrap();
        let mut want = response_bytes * depth;
        while want > 0 {
            let n = stream.read(&mut buf[..want.min(65536)]).unwrap();
            assert!(n > 0, "server closed the connection");
            want -= n;
        }
    }
}

/// Milliseconds between re-checks of a cached file in this test (500 by default).
const REVALIDATE_EVERY_MS: u64 = 5;

#[test]
fn steady_state_requests_allocate_nothing() {
    // One test, so the servers never count each other's allocations.
    for engine in [ringserve::Engine::Uring, ringserve::Engine::Epoll] {
        steady_state(engine, false);
        steady_state(engine, true);
    }
}

/// With `watch`, re-checks are triggered by inotify events: a thread opens the page for
/// writing and closes it every 2 ms (IN_CLOSE_WRITE, contents unchanged), through libc with a
/// path built beforehand, so it allocates nothing itself.
fn steady_state(engine: ringserve::Engine, watch: bool) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), vec![b'x'; 135]).unwrap();
    std::fs::write(dir.path().join("image.bin"), vec![b'y'; 64 * 1024]).unwrap();
    let mut config = ringserve::Config::new(dir.path(), "127.0.0.1:0".parse().unwrap()).unwrap();
    config.threads = 1;
    config.engine = engine;
    // Revalidation included: each cached file is re-checked (statx) every few milliseconds,
    // many times during the measured requests, and that must not allocate either.
    config.cache.revalidate_ms = Some(REVALIDATE_EVERY_MS);
    config.cache.watch = watch;
    config.keepalive_requests = u32::MAX;
    let log = dir.path().join("access.log");
    if watch {
        config.access_log =
            Some((log.clone(), ringserve::observe::access_log::LogFormat::Combined));
    }
    let server = ringserve::Server::start(&config).unwrap();
    let mut stream = TcpStream::connect(server.local_addr()).unwrap();
    stream.set_nodelay(true).unwrap();

    let cases: [(&[u8], usize); 2] = [
        (b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", 135),
        (b"GET /image.bin HTTP/1.1\r\nHost: t\r\n\r\n", 64 * 1024),
    ];
    let mut sizes = Vec::new();
    for (request, body) in cases {
        stream.write_all(request).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let mut rest = vec![0u8; body];
        stream.read_exact(&mut rest).unwrap();
        sizes.push(head.len() + body);
    }
    // Warm-up: pools and the CQ reach their steady size.
    for (i, (request, _)) in cases.iter().enumerate() {
        exchange(&mut stream, request, sizes[i], 2000, 1);
        exchange(&mut stream, request, sizes[i], 2000, 16);
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let toucher = watch.then(|| {
        let path =
            std::ffi::CString::new(dir.path().join("index.html").into_os_string().into_vec());
        let (path, stop) = (path.unwrap(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: a NUL-terminated path that lives across the call.
                let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
                assert!(fd >= 0);
                // SAFETY: closes the descriptor just opened.
                unsafe { libc::close(fd) };
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        })
    });
    std::thread::sleep(std::time::Duration::from_millis(20)); // the thread is running
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    exchange(&mut stream, cases[0].0, sizes[0], 4000, 1);
    exchange(&mut stream, cases[0].0, sizes[0], 4000, 16);
    exchange(&mut stream, cases[1].0, sizes[1], 1000, 1);
    exchange(&mut stream, cases[1].0, sizes[1], 1008, 16);
    let allocations = ALLOCATIONS.load(Ordering::SeqCst) - before;
    stop.store(true, Ordering::Relaxed);
    if let Some(toucher) = toucher {
        toucher.join().unwrap();
    }
    assert_eq!(
        allocations, 0,
        "{engine:?}, watch {watch}: {allocations} allocations during 10,008 steady-state requests"
    );
    drop(stream);
    let counters = server.shutdown().unwrap();
    assert!(
        counters.cache_revalidations > 10,
        "{engine:?}, watch {watch}: re-checks: {counters:?}"
    );
    assert_eq!(counters.cache_misses, 2, "each file opened once: {counters:?}");
    assert_eq!(counters.responses(), 2 + 8_000 + 10_008, "{counters:?}");
    if watch {
        let lines = std::fs::read_to_string(&log).unwrap().lines().count();
        assert_eq!(lines, 2 + 8_000 + 10_008, "a line per response, flushed at shutdown");
    }
}
