//! Static-file semantics: validators and conditional requests, ranges, precompressed
//! variants, directories, the MIME table, strict parsing statuses.

use std::io::{BufReader, Write};

use crate::support::*;

fn semantic_root(root: &std::path::Path) {
    demo_root(root);
    std::fs::write(root.join("digits.txt"), b"0123456789").unwrap();
    std::fs::write(root.join("app.js"), b"console.log('identity');\n").unwrap();
    std::fs::write(root.join("app.js.gz"), b"GZIP-BYTES").unwrap();
    std::fs::write(root.join("app.js.br"), b"BR-BYTES").unwrap();
    std::fs::write(root.join("only-gz.css"), b"body{color:red}").unwrap();
    std::fs::write(root.join("only-gz.css.gz"), b"GZ-CSS").unwrap();
    std::fs::write(root.join("empty.txt"), b"").unwrap();
    for name in [
        "a.svg", "a.json", "a.png", "a.jpeg", "a.gif", "a.webp", "a.avif", "a.ico", "a.woff",
        "a.woff2", "a.ttf", "a.otf", "a.wasm", "a.xml", "a.pdf", "a.mp4", "a.webm", "a.mp3",
        "a.ogg", "a.zip", "a.mjs", "a.weird",
    ] {
        std::fs::write(root.join(name), b"x").unwrap();
    }
}

fn request(server: &Server, head: &str) -> Response {
    get(server, &format!("{head}\r\n\r\n"))
}

#[test]
fn every_200_has_strong_validators() {
    let server = Server::start(semantic_root, &[]);
    let r = request(&server, "GET /digits.txt HTTP/1.1\r\nHost: t");
    let etag = r.header("etag").expect("ETag");
    assert!(etag.starts_with('"') && etag.ends_with('"') && !etag.starts_with("W/"), "{etag}");
    let lm = r.header("last-modified").expect("Last-Modified");
    assert!(httpdate::parse_http_date(lm).is_ok(), "{lm}");
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
}

#[test]
fn conditional_requests() {
    let server = Server::start(semantic_root, &[]);
    let r = request(&server, "GET /digits.txt HTTP/1.1\r\nHost: t");
    let etag = r.header("etag").unwrap().to_string();
    let lm = r.header("last-modified").unwrap().to_string();
    let status = |extra: &str| {
        request(&server, &format!("GET /digits.txt HTTP/1.1\r\nHost: t\r\n{extra}")).status
    };
    assert_eq!(status(&format!("If-None-Match: {etag}")), 304);
    assert_eq!(status(&format!("If-None-Match: \"other\", W/{etag}")), 304, "list, weak compare");
    assert_eq!(status("If-None-Match: *"), 304);
    assert_eq!(status("If-None-Match: \"other\""), 200);
    assert_eq!(status(&format!("If-Modified-Since: {lm}")), 304);
    assert_eq!(status("If-Modified-Since: Sat, 01 Jan 2000 00:00:00 GMT"), 200);
    assert_eq!(status("If-Modified-Since: not a date"), 200, "unparsable date ignored");
    assert_eq!(
        status(&format!("If-None-Match: \"other\"\r\nIf-Modified-Since: {lm}")),
        200,
        "If-None-Match wins over If-Modified-Since"
    );
    assert_eq!(status("If-Match: \"other\""), 412);
    assert_eq!(status(&format!("If-Match: {etag}")), 200);
    assert_eq!(status(&format!("If-Match: W/{etag}")), 412, "If-Match compares strongly");
    assert_eq!(status("If-Unmodified-Since: Sat, 01 Jan 2000 00:00:00 GMT"), 412);
    assert_eq!(status(&format!("If-Unmodified-Since: {lm}")), 200);
    let not_modified =
        request(&server, &format!("GET /digits.txt HTTP/1.1\r\nHost: t\r\nIf-None-Match: {etag}"));
    assert_eq!(not_modified.header("etag"), Some(etag.as_str()));
    assert!(not_modified.body.is_empty());
}

#[test]
fn single_ranges() {
    let server = Server::start(semantic_root, &[]);
    let range = |spec: &str| {
        request(&server, &format!("GET /digits.txt HTTP/1.1\r\nHost: t\r\nRange: {spec}"))
    };
    let r = range("bytes=2-5");
    assert_eq!((r.status, r.body.as_slice()), (206, &b"2345"[..]));
    assert_eq!(r.header("content-range"), Some("bytes 2-5/10"));
    assert_eq!(r.header("content-length"), Some("4"));
    assert_eq!(range("bytes=7-").body, b"789");
    assert_eq!(range("bytes=-3").body, b"789");
    assert_eq!(range("bytes=8-100").header("content-range"), Some("bytes 8-9/10"));
    let r = range("bytes=10-");
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */10"));
    assert_eq!(range("bytes=5-2").status, 200, "invalid syntax is ignored");
    assert_eq!(range("lines=1-2").status, 200, "unknown unit is ignored");
    let r = range("bytes=0-1,4-5");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"0123456789"[..]), "several ranges: full");
}

#[test]
fn overlapping_ranges_cannot_amplify() {
    let server = Server::start(semantic_root, &[]);
    let spec = vec!["0-"; 500].join(",");
    let r =
        request(&server, &format!("GET /digits.txt HTTP/1.1\r\nHost: t\r\nRange: bytes={spec}"));
    assert!(r.body.len() <= 10, "sent {} bytes of a 10-byte file", r.body.len());
}

#[test]
fn if_range() {
    let server = Server::start(semantic_root, &[]);
    let r = request(&server, "GET /digits.txt HTTP/1.1\r\nHost: t");
    let etag = r.header("etag").unwrap().to_string();
    let lm = r.header("last-modified").unwrap().to_string();
    let status = |validator: &str| {
        request(
            &server,
            &format!(
                "GET /digits.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=0-1\r\nIf-Range: {validator}"
            ),
        )
        .status
    };
    assert_eq!(status(&etag), 206);
    assert_eq!(status(&lm), 206);
    assert_eq!(status("\"stale\""), 200);
    assert_eq!(status(&format!("W/{etag}")), 200, "weak tags never match If-Range");
    assert_eq!(status("Sat, 01 Jan 2000 00:00:00 GMT"), 200);
}

#[test]
fn precompressed_variants() {
    let server = Server::start(semantic_root, &[]);
    let get_with = |ae: &str| {
        request(&server, &format!("GET /app.js HTTP/1.1\r\nHost: t\r\nAccept-Encoding: {ae}"))
    };
    let br = get_with("br;q=1, gzip;q=0.8");
    assert_eq!((br.body.as_slice(), br.header("content-encoding")), (&b"BR-BYTES"[..], Some("br")));
    assert_eq!(br.header("vary"), Some("Accept-Encoding"));
    assert_eq!(br.header("content-type"), Some("text/javascript; charset=utf-8"));
    assert_eq!(br.header("content-length"), Some("8"));
    let gz = get_with("gzip");
    assert_eq!(
        (gz.body.as_slice(), gz.header("content-encoding")),
        (&b"GZIP-BYTES"[..], Some("gzip"))
    );
    assert_ne!(gz.header("etag"), br.header("etag"), "each variant has its own ETag");
    assert_eq!(get_with("gzip;q=0.9, br;q=0.1").header("content-encoding"), Some("gzip"));
    assert_eq!(get_with("br;q=0, gzip;q=0").header("content-encoding"), None);
    assert_eq!(get_with("*;q=0.5, br;q=0").header("content-encoding"), Some("gzip"));
    let identity = request(&server, "GET /app.js HTTP/1.1\r\nHost: t");
    assert_eq!(identity.header("content-encoding"), None);
    assert_eq!(identity.header("vary"), Some("Accept-Encoding"), "Vary on identity too");
    let css = request(&server, "GET /only-gz.css HTTP/1.1\r\nHost: t\r\nAccept-Encoding: br");
    assert_eq!(css.header("content-encoding"), None, "no br sibling");
    let range = request(
        &server,
        "GET /app.js HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\nRange: bytes=0-3",
    );
    // Clients resume and split downloads by offsets into the decoded bytes, so a range is
    // always cut from the identity file (curl -C - --compressed, curl -r 0-99 --compressed).
    assert_eq!(
        (range.status, range.body.as_slice(), range.header("content-encoding")),
        (206, &b"cons"[..], None),
        "ranges are served from the identity file"
    );
    assert_eq!(range.header("vary"), Some("Accept-Encoding"));
    assert_eq!(range.header("content-range"), Some("bytes 0-3/25"));
    let plain =
        request(&server, "GET /digits.txt HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip, br");
    assert_eq!(plain.header("vary"), None, "no Vary on files without variants");
}

#[test]
fn directories_queries_and_absolute_form() {
    let server = Server::start(semantic_root, &[]);
    let r = request(&server, "GET /sub HTTP/1.1\r\nHost: t");
    assert_eq!((r.status, r.header("location")), (301, Some("/sub/")));
    assert_eq!(request(&server, "GET /sub/ HTTP/1.1\r\nHost: t").body, b"sub index\n");
    assert_eq!(request(&server, "GET /a.txt?x=1&y=2 HTTP/1.1\r\nHost: t").body, b"file a\n");
    assert_eq!(request(&server, "GET http://t/a.txt HTTP/1.1\r\nHost: t").body, b"file a\n");
    std::fs::create_dir_all(std::env::temp_dir()).unwrap();
}

#[test]
fn directories_without_index_are_not_listed() {
    let server = Server::start(
        |root| {
            semantic_root(root);
            std::fs::create_dir(root.join("bare")).unwrap();
            std::fs::write(root.join("bare/file.txt"), b"x").unwrap();
        },
        &[],
    );
    assert_eq!(request(&server, "GET /bare/ HTTP/1.1\r\nHost: t").status, 404);
}

#[test]
fn mime_table() {
    let server = Server::start(semantic_root, &[]);
    for (name, expected) in [
        ("a.svg", "image/svg+xml"),
        ("a.json", "application/json"),
        ("a.png", "image/png"),
        ("a.jpeg", "image/jpeg"),
        ("a.gif", "image/gif"),
        ("a.webp", "image/webp"),
        ("a.avif", "image/avif"),
        ("a.ico", "image/x-icon"),
        ("a.woff", "font/woff"),
        ("a.woff2", "font/woff2"),
        ("a.ttf", "font/ttf"),
        ("a.otf", "font/otf"),
        ("a.wasm", "application/wasm"),
        ("a.xml", "application/xml"),
        ("a.pdf", "application/pdf"),
        ("a.mp4", "video/mp4"),
        ("a.webm", "video/webm"),
        ("a.mp3", "audio/mpeg"),
        ("a.ogg", "audio/ogg"),
        ("a.zip", "application/zip"),
        ("a.mjs", "text/javascript; charset=utf-8"),
        ("a.txt", "text/plain; charset=utf-8"),
        ("a.weird", "application/octet-stream"),
    ] {
        let r = request(&server, &format!("GET /{name} HTTP/1.1\r\nHost: t"));
        assert_eq!(r.header("content-type"), Some(expected), "{name}");
    }
}

#[test]
fn strict_parsing_statuses() {
    let server = Server::start(semantic_root, &[]);
    let cases: &[(&str, u16)] = &[
        ("GET / HTTP/1.1\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (
            "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        ("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n folded\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nNo colon\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
        ("GET /\r\n\r\n", 400),
        ("GET relative HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        ("BREW / HTTP/1.1\r\nHost: a\r\n\r\n", 501),
    ];
    for (raw, expected) in cases {
        let mut stream = server.connect();
        stream.write_all(raw.as_bytes()).unwrap();
        let mut reader = BufReader::new(stream);
        let r = read_response(&mut reader, false);
        assert_eq!(r.status, *expected, "{raw:?}");
        if *expected != 501 {
            assert_eq!(r.header("connection"), Some("close"), "{raw:?}");
            assert_closed(&mut reader);
        }
    }
    let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
    assert_eq!(get(&server, &long).status, 414);
    let many: String = (0..70).map(|i| format!("X-{i}: v\r\n")).collect();
    assert_eq!(get(&server, &format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n")).status, 431);
    let big = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n", "b".repeat(8200));
    assert_eq!(get(&server, &big).status, 431);
}
