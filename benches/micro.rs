//! Micro benches of the per-request CPU work outside the kernel: parsing a request head,
//! routing a path to its cached response (the whole `serve` step into a batch), and
//! formatting a response head. Each iteration asserts its result, so a broken fast path
//! cannot look fast.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringserve::batch::Batch;
use ringserve::files::{CacheLimits, FileCache};
use ringserve::http::date::DateCache;
use ringserve::http::response::HeadWriter;
use ringserve::http::{self, ParseLimits, Parsed, Status};
use ringserve::serve::{self, Context, Step};
use std::hint::black_box;

const BROWSER_REQUEST: &[u8] = b"GET /assets/app.js?v=3 HTTP/1.1\r\n\
Host: localhost:8000\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120 Safari/537.36\r\n\
Accept: */*\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Referer: http://localhost:8000/\r\n\
Connection: keep-alive\r\n\r\n";

const WRK_REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n";

fn parse(c: &mut Criterion) {
    let limits = ParseLimits::default();
    let mut group = c.benchmark_group("parse");
    for (name, input) in [("wrk", WRK_REQUEST), ("browser", BROWSER_REQUEST)] {
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| match http::parse(black_box(input), &limits) {
                Parsed::Complete(r) => assert_eq!(r.head_len, input.len()),
                other => panic!("{other:?}"),
            })
        });
    }
    group.finish();
}

fn route(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), vec![b'x'; 135]).unwrap();
    std::fs::create_dir(dir.path().join("assets")).unwrap();
    std::fs::write(dir.path().join("assets/app.js"), vec![b'y'; 40_000]).unwrap();
    std::fs::write(dir.path().join("assets/app.js.br"), vec![b'z'; 9_000]).unwrap();
    // Both paths cached, as in steady state: the bench measures hits.
    let cache_limits = CacheLimits {
        entries: 16,
        bytes: 1 << 20,
        revalidate_ms: None,
        watch: false,
        open_files: 1000,
    };
    let mut files = FileCache::open(dir.path(), cache_limits).unwrap();
    files.fill(b"index.html", 0);
    files.fill(b"assets/app.js", 0);
    let date = DateCache::new();
    let limits = ParseLimits::default();
    let ctx = Context {
        files: &files,
        now_ms: 0,
        now_micros: 0,
        log: None,
        date: &date,
        last_request: false,
        peer_closed: false,
        limits: &limits,
        site: &ringserve::site::Site::default(),
    };
    let mut batch = Batch::new();
    let mut group = c.benchmark_group("serve");
    group.throughput(Throughput::Elements(1));
    for (name, input) in [("wrk_index", WRK_REQUEST), ("browser_br_variant", BROWSER_REQUEST)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let step = serve::serve(black_box(input), &ctx, &mut batch);
                assert!(matches!(step, Step::Responded { close: false, .. }), "{step:?}");
                batch.clear();
            })
        });
    }
    group.finish();
}

fn format_head(c: &mut Criterion) {
    let date = DateCache::new();
    let fields = b"Content-Type: text/html; charset=utf-8\r\nContent-Length: 135\r\n\
Last-Modified: Tue, 24 Nov 2026 20:10:13 GMT\r\nETag: \"51027e-87-6b05ef25\"\r\n\
Accept-Ranges: bytes\r\n";
    let mut out = [0u8; 1024];
    c.bench_function("format_head_200", |b| {
        b.iter(|| {
            let mut w = HeadWriter::new(&mut out);
            w.start(Status::Ok, date.bytes()).unwrap();
            w.put(black_box(fields)).unwrap();
            w.finish(true, false).unwrap();
            assert!(w.len() > 200);
        })
    });
}

criterion_group!(benches, parse, route, format_head);
criterion_main!(benches);
