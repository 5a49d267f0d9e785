//! The whole protocol step on arbitrary bytes, as both engines run it: serve until partial,
//! full or closing; every queued response must start with a status line.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use ringserve::batch::Batch;
use ringserve::files::Snapshot;
use ringserve::http::ParseLimits;
use ringserve::serve::{Session, Shared};

fn snapshot() -> &'static Arc<Snapshot> {
    static SNAPSHOT: OnceLock<(tempfile::TempDir, Arc<Snapshot>)> = OnceLock::new();
    &SNAPSHOT
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::write(dir.path().join("index.html"), b"<p>hi</p>").expect("write");
            std::fs::write(dir.path().join("a.js"), b"let a = 1;").expect("write");
            std::fs::write(dir.path().join("a.js.gz"), b"GZ").expect("write");
            std::fs::create_dir(dir.path().join("d")).expect("mkdir");
            let root = dir.path().canonicalize().expect("canonical root");
            let snapshot = Arc::new(Snapshot::scan(&root).expect("scan"));
            (dir, snapshot)
        })
        .1
}

fuzz_target!(|data: &[u8]| {
    let limits = ParseLimits::default();
    let date = *b"Sun, 06 Nov 1994 08:49:37 GMT";
    let shared = Shared { snapshot: snapshot(), date: &date, limits: &limits, keepalive_requests: 100 };
    let mut session = Session::default();
    let mut batch = Batch::new();
    let used = session.serve_all(data, &shared, &mut batch);
    assert!(used <= data.len());
    if let Some(first) = batch.pending().first() {
        // SAFETY: the iovec points into the batch or the snapshot, both alive here.
        let head = unsafe { std::slice::from_raw_parts(first.iov_base as *const u8, first.iov_len) };
        assert!(head.starts_with(b"HTTP/1.1 "));
    }
});
