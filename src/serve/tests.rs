use super::*;
use crate::files::CacheLimits;
use crate::http::date::DateCache;
use crate::site::Site;

fn root() -> (tempfile::TempDir, FileCache) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), b"<p>home</p>").unwrap();
    std::fs::create_dir(dir.path().join("docs")).unwrap();
    std::fs::write(dir.path().join("docs/index.html"), b"docs").unwrap();
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    let limits = CacheLimits {
        entries: 100,
        bytes: 1 << 20,
        revalidate_ms: None,
        watch: false,
        open_files: 1000,
    };
    let cache = FileCache::open(dir.path(), limits).unwrap();
    (dir, cache)
}

/// Serves `input` once (filling the cache on a miss, as an engine does) and returns the step
/// and the bytes queued.
fn run(cache: &mut FileCache, input: &[u8]) -> (Step, String) {
    let date = DateCache::new();
    let limits = ParseLimits::default();
    let mut batch = Batch::new();
    let step = loop {
        let ctx = Context {
            files: cache,
            now_ms: 0,
            now_micros: 0,
            log: None,
            date: &date,
            last_request: false,
            peer_closed: false,
            limits: &limits,
            site: &Site::default(),
        };
        match serve(input, &ctx, &mut batch) {
            Step::Miss(of) => {
                let mut key: KeyBuffer = [0; std::mem::size_of::<KeyBuffer>()];
                let site = Site::default();
                let key =
                    miss_key(input, &limits, &site, of, &mut key).expect("a miss names a key");
                cache.fill(key, 0);
            }
            step => break step,
        }
    };
    let mut out = Vec::new();
    for iov in batch.pending() {
        // SAFETY: test-only: the iovecs point into the batch or an entry it holds, both alive.
        out.extend_from_slice(unsafe {
            std::slice::from_raw_parts(iov.iov_base as *const u8, iov.iov_len)
        });
    }
    (step, String::from_utf8_lossy(&out).into_owned())
}

#[test]
fn root_serves_index_html() {
    let (_dir, mut snap) = root();
    let (step, out) = run(&mut snap, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(step, Step::Responded { consumed: 27, skip_bytes: 0, close: false });
    assert!(out.starts_with("HTTP/1.1 200 OK\r\nServer: ringserve\r\nDate: "), "{out}");
    assert!(out.contains("Content-Type: text/html; charset=utf-8\r\nContent-Length: 11\r\n"));
    assert!(out.ends_with("\r\n\r\n<p>home</p>"), "{out}");
}

#[test]
fn head_has_length_but_no_body() {
    let (_dir, mut snap) = root();
    let (_, out) = run(&mut snap, b"HEAD /index.html HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(out.contains("Content-Length: 11\r\n") && out.ends_with("\r\n\r\n"), "{out}");
}

#[test]
fn directories_redirect_then_serve_their_index() {
    let (_dir, mut snap) = root();
    let (_, out) = run(&mut snap, b"GET /docs HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 301 ") && out.contains("Location: /docs/\r\n"), "{out}");
    let (_, out) = run(&mut snap, b"GET /docs/ HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 200 ") && out.ends_with("docs"), "{out}");
    let (_, out) = run(&mut snap, b"GET /empty/ HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 404 "), "no listing: {out}");
    let (_, out) = run(&mut snap, b"GET /index.html/ HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 404 "), "{out}");
}

#[test]
fn errors_are_well_formed_and_close_when_in_doubt() {
    let (_dir, mut snap) = root();
    let (step, out) = run(&mut snap, b"GET /../x HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(matches!(step, Step::Responded { close: true, .. }));
    assert!(out.starts_with("HTTP/1.1 400 ") && out.contains("Connection: close\r\n"), "{out}");
    let (step, out) = run(&mut snap, b"DELETE / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(matches!(step, Step::Responded { close: false, .. }));
    assert!(out.starts_with("HTTP/1.1 405 ") && out.contains("Allow: GET, HEAD\r\n"), "{out}");
    let (step, _) = run(&mut snap, b"GARBAGE\r\n\r\n");
    assert!(matches!(step, Step::Responded { close: true, .. }));
}

#[test]
fn http10_closes_unless_asked_to_keep_alive() {
    let (_dir, mut snap) = root();
    let (step, out) = run(&mut snap, b"GET / HTTP/1.0\r\n\r\n");
    assert!(matches!(step, Step::Responded { close: true, .. }));
    assert!(out.contains("Connection: close\r\n"));
    let (step, out) = run(&mut snap, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert!(matches!(step, Step::Responded { close: false, .. }));
    assert!(out.contains("Connection: keep-alive\r\n"));
}

#[test]
fn a_body_on_get_is_skipped_not_parsed() {
    let (_dir, mut snap) = root();
    let (step, _) = run(
        &mut snap,
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\nGET /evil HTTP/1.1\r\n",
    );
    assert_eq!(step, Step::Responded { consumed: 47, skip_bytes: 20, close: false });
}
