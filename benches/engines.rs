//! The io_uring engine against the epoll engine and the blocking thread-per-connection
//! baseline, all started
//! in-process on ephemeral ports over the same files. Keep-alive connections are opened
//! outside the timed region; each sample sends a fixed batch of requests through the loadgen
//! library, which checks every status and length (an engine that errors cannot win).
//! Throughput is in requests (criterion reports elements/s). Connection counts 1, 16, 128 and
//! 1024; criterion groups the engines per connection count.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringserve::{Config, Engine, Server};

const CONNECTION_COUNTS: [usize; 4] = [1, 16, 128, 1024];
const SMALL_PAGE_BYTES: usize = 135;
const IMAGE_BYTES: usize = 64 * 1024;

fn start(root: &std::path::Path, engine: Engine) -> Server {
    let mut config = Config::new(root, "127.0.0.1:0".parse().expect("address")).expect("config");
    config.engine = engine;
    config.threads = 1;
    config.keepalive_requests = u32::MAX;
    config.cache.revalidate_ms = None;
    Server::start(&config).expect("server starts")
}

fn engines(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("index.html"), vec![b'x'; SMALL_PAGE_BYTES]).expect("write");
    std::fs::write(dir.path().join("image.bin"), vec![b'y'; IMAGE_BYTES]).expect("write");
    let servers = [
        ("uring", start(dir.path(), Engine::Uring)),
        ("epoll", start(dir.path(), Engine::Epoll)),
        ("blocking", start(dir.path(), Engine::Blocking)),
    ];
    for (file, path, body) in
        [("small_page", "/", SMALL_PAGE_BYTES), ("image_64k", "/image.bin", IMAGE_BYTES)]
    {
        let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n");
        for connections in CONNECTION_COUNTS {
            let mut group = c.benchmark_group(format!("engines/{file}/{connections}_connections"));
            let batch = (4 * connections).max(256) as u64;
            group.throughput(Throughput::Elements(batch));
            group.sample_size(10);
            group.warm_up_time(Duration::from_millis(500));
            group.measurement_time(Duration::from_secs(2));
            for (name, server) in &servers {
                let mut pool =
                    loadgen::Pool::connect(server.local_addr(), connections, request.as_bytes())
                        .expect("connections open");
                group.bench_function(BenchmarkId::from_parameter(name), |b| {
                    b.iter(|| {
                        let ok = pool
                            .run_batch(batch, 200, body as u64)
                            .expect("every response checks out");
                        assert_eq!(ok, batch);
                    })
                });
            }
            group.finish();
        }
    }
    for (_, server) in servers {
        server.shutdown().expect("server stops");
    }
}

criterion_group!(benches, engines);
criterion_main!(benches);
