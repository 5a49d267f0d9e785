//! Browser smoke test: Debian's headless Chromium loads the demo page from a real server; the
//! page's script reports whether the picture decoded (naturalWidth > 0). A screenshot is saved
//! under target/. Without Chromium the test says so and passes, unless
//! RINGSERVE_REQUIRE_BROWSER=1 (set by scripts/test.sh, which installs Chromium).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// Seconds Chromium may take for one page before the test fails.
const BROWSER_TIMEOUT_SECS: u64 = 60;

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"].iter().find_map(|name| {
        std::env::var_os("PATH")?
            .to_str()?
            .split(':')
            .map(|dir| PathBuf::from(dir).join(name))
            .find(|p| p.is_file())
    })
}

/// Chromium, or `None` after saying the test is skipped (a failure instead when
/// RINGSERVE_REQUIRE_BROWSER=1, as in scripts/test.sh, which installs it).
pub(crate) fn chromium_or_skip() -> Option<PathBuf> {
    let found = chromium();
    if found.is_none() {
        assert!(
            std::env::var("RINGSERVE_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "Chromium is required (RINGSERVE_REQUIRE_BROWSER=1) but not installed"
        );
        eprintln!("SKIPPED: chromium not installed (scripts/test.sh installs it)");
    }
    found
}

pub(crate) fn run_chromium(binary: &PathBuf, profile: &std::path::Path, args: &[String]) -> String {
    let mut child = Command::new(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let started = Instant::now();
    loop {
        if child.try_wait().expect("wait chromium").is_some() {
            break;
        }
        if started.elapsed() > Duration::from_secs(BROWSER_TIMEOUT_SECS) {
            let _ = child.kill();
            panic!("chromium did not finish within {BROWSER_TIMEOUT_SECS} s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    out
}

#[test]
fn chromium_shows_the_page_and_decodes_the_picture() {
    let Some(binary) = chromium_or_skip() else { return };
    let server = Server::start_at(&static_dir(), &[]);
    let url = format!("http://localhost:{}/", server.addr.port());
    let profile = tempfile::tempdir().unwrap();
    let dom = run_chromium(&binary, profile.path(), &["--dump-dom".into(), url.clone()]);
    assert!(dom.contains("<title>ringserve</title>"), "title missing from DOM: {dom}");
    let width = dom
        .split("data-natural-width=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|w| w.parse::<u32>().ok())
        .unwrap_or_else(|| panic!("the page script did not report the picture: {dom}"));
    assert!(width > 0, "the picture did not decode");
    assert_eq!(width, 480);

    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&shots).unwrap();
    let shot = shots.join("ringserve-index.png");
    let _ = std::fs::remove_file(&shot);
    run_chromium(
        &binary,
        profile.path(),
        &[format!("--screenshot={}", shot.display()), "--window-size=800,600".into(), url],
    );
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(size > 1000, "no screenshot at {}", shot.display());
    eprintln!("screenshot: {}", shot.display());
}

#[test]
fn chromium_renders_a_loadgen_plot() {
    let Some(binary) = chromium_or_skip() else { return };
    let server = Server::start_at(&static_dir(), &[]);
    let url = format!("http://127.0.0.1:{}/", server.addr.port());
    let mut config = loadgen::Config::new(&url, 4).unwrap();
    config.duration = Duration::from_millis(1500);
    let report = loadgen::run(&config).unwrap();
    assert!(report.requests.completed > 0, "{:?}", report.requests);
    let run = loadgen::plot::Run { label: "ringserve <&>".into(), report: &report };
    let svg = loadgen::plot::render(&[run], loadgen::plot::YScale::Auto, "browser check");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("plot.svg"), svg).unwrap();
    // An <img> decodes the SVG only if it is a valid, self-contained image.
    std::fs::write(
        dir.path().join("plot.html"),
        "<!doctype html><body><img src=\"plot.svg\" \
         onload=\"document.body.dataset.naturalWidth = this.naturalWidth\" \
         onerror=\"document.body.dataset.naturalWidth = 'error'\"></body>",
    )
    .unwrap();
    let page = format!("file://{}", dir.path().join("plot.html").display());
    let profile = tempfile::tempdir().unwrap();
    let dom = run_chromium(&binary, profile.path(), &["--dump-dom".into(), page]);
    assert!(dom.contains("data-natural-width=\"1040\""), "the SVG did not render: {dom}");

    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser").join("loadgen-plot.png");
    std::fs::create_dir_all(shot.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&shot);
    let svg_url = format!("file://{}", dir.path().join("plot.svg").display());
    run_chromium(
        &binary,
        profile.path(),
        &[format!("--screenshot={}", shot.display()), "--window-size=1040,760".into(), svg_url],
    );
    // A blank 1040x760 page compresses to a few KB; lines and text make it far larger.
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(size > 20_000, "screenshot {} is {size} bytes: blank?", shot.display());
    eprintln!("screenshot: {}", shot.display());
}
