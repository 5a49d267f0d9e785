//! Site options: headers on every response, Cache-Control by glob, the single-page-app
//! fallback (also in Chromium, through a deep link), error pages, and start-up refusals of bad
//! options; every engine.

use std::process::Command;

use crate::support::*;

/// A small single-page app: its page loads its script, which writes the path it was opened at.
fn spa(root: &std::path::Path) {
    std::fs::write(
        root.join("index.html"),
        "<!DOCTYPE html><title>app</title><div id=out>loading</div><script src=\"/app.js\"></script>\n",
    )
    .unwrap();
    std::fs::write(
        root.join("app.js"),
        "document.getElementById('out').setAttribute('data-route', location.pathname);\n",
    )
    .unwrap();
    std::fs::write(root.join("404.html"), "<!DOCTYPE html><p>custom not found</p>\n").unwrap();
    std::fs::create_dir(root.join("assets")).unwrap();
    std::fs::write(root.join("assets/site.css"), "body{}\n").unwrap();
}

#[test]
fn headers_and_cache_control_rules_are_on_every_matching_response() {
    for engine in ENGINES {
        let flags = [
            "--header",
            "X-Content-Type-Options: nosniff",
            "--header",
            "Access-Control-Allow-Origin: *",
            "--cache-control",
            "*.css,*.js=public, max-age=31536000, immutable",
            "--cache-control",
            "*.html=no-cache",
        ];
        let server = Server::start(spa, &with_engine(&flags, engine));
        let css = get(&server, "GET /assets/site.css HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(css.status, 200);
        assert_eq!(css.header("cache-control"), Some("public, max-age=31536000, immutable"));
        assert_eq!(css.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(css.header("access-control-allow-origin"), Some("*"));
        let page = get(&server, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(page.header("cache-control"), Some("no-cache"), "{engine:?}");
        let etag = page.header("etag").unwrap().to_owned();
        let revalidated =
            get(&server, &format!("GET / HTTP/1.1\r\nHost: t\r\nIf-None-Match: {etag}\r\n\r\n"));
        assert_eq!(revalidated.status, 304);
        assert_eq!(revalidated.header("cache-control"), Some("no-cache"), "304 keeps it");
        let range = get(&server, "GET /app.js HTTP/1.1\r\nHost: t\r\nRange: bytes=0-3\r\n\r\n");
        assert_eq!(range.status, 206);
        assert!(range.header("cache-control").is_some_and(|v| v.contains("immutable")));
        let missing = get(&server, "GET /nope.txt HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(missing.status, 404);
        assert_eq!(missing.header("x-content-type-options"), Some("nosniff"), "errors too");
        assert_eq!(missing.header("cache-control"), None, "rules are for files");
        let redirect = get(&server, "GET /assets HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(redirect.status, 301);
        assert_eq!(redirect.header("x-content-type-options"), Some("nosniff"));
    }
}

#[test]
fn fallback_serves_deep_links_and_leaves_missing_assets_404() {
    for engine in ENGINES {
        let flags = ["--fallback", "/index.html"];
        let server = Server::start(spa, &with_engine(&flags, engine));
        let deep = get(&server, "GET /users/42/settings HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(deep.status, 200, "{engine:?}");
        assert!(String::from_utf8_lossy(&deep.body).contains("<title>app</title>"));
        let head = get(&server, "HEAD /about HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!((head.status, head.body.len()), (200, 0));
        let asset = get(&server, "GET /missing.js HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(asset.status, 404, "{engine:?}: an asset stays 404");
        let script = get(&server, "GET /app.js HTTP/1.1\r\nHost: t\r\n\r\n");
        assert!(String::from_utf8_lossy(&script.body).contains("data-route"));
        let post = get(&server, "POST /users HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(post.status, 405);
    }
}

#[test]
fn error_pages_replace_the_body_and_keep_the_status() {
    for engine in ENGINES {
        let flags = ["--error-page", "404=/404.html", "--header", "X-Frame-Options: DENY"];
        let server = Server::start(spa, &with_engine(&flags, engine));
        let missing = get(&server, "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(missing.status, 404, "{engine:?}");
        assert_eq!(missing.body, b"<!DOCTYPE html><p>custom not found</p>\n");
        assert_eq!(missing.header("content-type"), Some("text/html; charset=utf-8"));
        assert_eq!(missing.header("x-frame-options"), Some("DENY"));
        let head = get(&server, "HEAD /nope HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!((head.status, head.body.len()), (404, 0));
        assert_eq!(head.header("content-length"), Some("39"));
        // Other statuses keep the built-in page.
        let bad = get(&server, "GET /%00 HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(bad.status, 400);
    }
}

#[test]
fn bad_site_options_are_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    spa(dir.path());
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.html"), "x").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.html"), dir.path().join("link.html"))
        .unwrap();
    let cases: [(&[&str], &str); 9] = [
        (&["--fallback", "/missing.html"], "--fallback"),
        (&["--fallback", "index.html"], "starting with /"),
        (&["--fallback", "/link.html"], "outside the root"),
        (&["--fallback", "/assets"], "not a regular file"),
        (&["--error-page", "418=/404.html"], "--error-page"),
        (&["--error-page", "404=/404.html", "--error-page", "404=/index.html"], "already"),
        (&["--header", "Content-Length: 3"], "--header"),
        (&["--cache-control", "*.css"], "--cache-control"),
        (&["--cache-control", "*.css=a", "--header", "Cache-Control: b"], "conflicts"),
    ];
    for (flags, expect) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_ringserve"))
            .args(["--root", dir.path().to_str().unwrap(), "--addr", "127.0.0.1:0"])
            .args(flags)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{flags:?}: one line: {stderr}");
        assert!(stderr.contains(expect), "{flags:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{flags:?}: nothing served");
    }
}

#[test]
fn chromium_opens_a_single_page_app_through_a_deep_link() {
    let Some(binary) = crate::browser::chromium_or_skip() else { return };
    let server = Server::start(spa, &["--fallback", "/index.html"]);
    let url = format!("http://localhost:{}/users/42/settings", server.addr.port());
    let profile = tempfile::tempdir().unwrap();
    let dom = crate::browser::run_chromium(&binary, profile.path(), &["--dump-dom".into(), url]);
    assert!(dom.contains("data-route=\"/users/42/settings\""), "the app did not run: {dom}");
}

/// A directory of names that need escaping in HTML and in links, a hidden file, a subdirectory
/// and symbolic links inside and outside the root.
fn listed(root: &std::path::Path) {
    let docs = root.join("docs");
    std::fs::create_dir_all(docs.join("sub")).unwrap();
    std::fs::write(docs.join("<img src=x onerror=alert(1)>"), "x").unwrap();
    std::fs::write(docs.join("a \"b\" & c?#%.txt"), "quoted").unwrap();
    std::fs::write(docs.join(".secret"), "hidden").unwrap();
    std::fs::write(root.join("inside.txt"), "in").unwrap();
    std::os::unix::fs::symlink("../inside.txt", docs.join("link-in")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", docs.join("link-out")).unwrap();
}

#[test]
fn autoindex_lists_escaped_names_as_html_and_json() {
    for engine in ENGINES {
        let server = Server::start(listed, &with_engine(&["--autoindex"], engine));
        let page = get(&server, "GET /docs/ HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(page.status, 200, "{engine:?}");
        assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
        assert_eq!(page.header("vary"), Some("Accept"));
        let html = String::from_utf8_lossy(&page.body).into_owned();
        assert!(!html.contains("<img"), "{engine:?}: a name is text, never markup: {html}");
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(html.contains("a &quot;b&quot; &amp; c?#%.txt"));
        assert!(!html.contains(".secret"), "hidden files are left out");
        assert!(html.contains("link-in") && !html.contains("link-out"), "{html}");
        assert!(html.find("sub/").unwrap() < html.find("link-in").unwrap(), "directories first");
        // Every link leads to its file.
        let href = html
            .split("href=\"")
            .filter_map(|h| h.split('"').next())
            .find(|h| h.starts_with("a%20"));
        let href = href.expect("a link for the quoted name");
        let file = get(&server, &format!("GET /docs/{href} HTTP/1.1\r\nHost: t\r\n\r\n"));
        assert_eq!((file.status, file.body.as_slice()), (200, &b"quoted"[..]), "{href}");
        let json =
            get(&server, "GET /docs/ HTTP/1.1\r\nHost: t\r\nAccept: application/json\r\n\r\n");
        assert_eq!(json.header("content-type"), Some("application/json"));
        let value: serde_json::Value = serde_json::from_slice(&json.body).unwrap();
        let names: Vec<&str> =
            value.as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["sub", "<img src=x onerror=alert(1)>", "a \"b\" & c?#%.txt", "link-in"]);
        assert_eq!(value[2]["size"], 6);
        assert_eq!(value[0]["type"], "directory");
        // Changes show: a new file is listed on the next request.
        std::fs::write(server.root().join("docs/new.txt"), "n").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            let page = get(&server, "GET /docs/ HTTP/1.1\r\nHost: t\r\n\r\n");
            if String::from_utf8_lossy(&page.body).contains("new.txt") {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{engine:?}: the new file never showed");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let plain = get(&server, "GET /nothing/ HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(plain.status, 404);
    }
    let hidden = Server::start(listed, &["--autoindex-hidden"]);
    let page = get(&hidden, "GET /docs/ HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(String::from_utf8_lossy(&page.body).contains(".secret"));
    let off = Server::start(listed, &[]);
    assert_eq!(get(&off, "GET /docs/ HTTP/1.1\r\nHost: t\r\n\r\n").status, 404);
}

#[test]
fn a_huge_listing_does_not_hold_up_other_requests() {
    let dir = tempfile::tempdir().unwrap();
    let huge = dir.path().join("huge");
    std::fs::create_dir(&huge).unwrap();
    for i in 0..100_000 {
        std::fs::File::create(huge.join(format!("file-{i:06}.txt"))).unwrap();
    }
    std::fs::write(dir.path().join("small.txt"), "small").unwrap();
    let server = Server::start_at(dir.path(), &["--autoindex", "--threads", "1"]);
    assert_eq!(get(&server, "GET /small.txt HTTP/1.1\r\nHost: t\r\n\r\n").status, 200);
    // The listing is asked for first; a request on another connection, sent after it to the
    // same (single) worker, is answered before the listing is done.
    let mut slow = server.connect();
    std::io::Write::write_all(&mut slow, b"GET /huge/ HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let fast = get(&server, "GET /small.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(fast.status, 200);
    let mut buf = [0u8; 1];
    slow.set_nonblocking(true).unwrap();
    let pending = matches!(std::io::Read::read(&mut slow, &mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    assert!(pending, "the small file was answered while the listing was still being made");
    slow.set_nonblocking(false).unwrap();
    let page = read_response(&mut std::io::BufReader::new(slow), false);
    assert_eq!(page.status, 200);
    let html = String::from_utf8_lossy(&page.body);
    assert!(
        html.contains("first 10000 of 100000 entries"),
        "bounded: {}",
        &html[html.len() - 200..]
    );
    assert!(html.contains("file-000000.txt") && !html.contains("file-010000.txt"));
}
