//! Directory listings (`--autoindex`): a directory's entries as an HTML page and as JSON in
//! nginx's `autoindex_format json` shape. Reading a directory has no io_uring operation, so this
//! runs where blocking is harmless: on the io_uring engine's lister thread
//! (`uring::lister`), or in the blocking engine's connection thread.
//!
//! Bounded: at most `LISTING_ENTRIES_MAX` entries are listed, the first in the listing's
//! order (directories first, then names in byte order, as nginx sorts); the rest are counted,
//! not kept, so a directory of any size costs at most that many entries of memory.

use std::collections::BinaryHeap;
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use crate::observe::access_log::{self, LogFormat};

/// Entries listed at most; the page says how many more there are. Caddy's browse stops at
/// 10,000 too: a page that long is already past what a browser lists comfortably.
pub const LISTING_ENTRIES_MAX: usize = 10_000;

/// One listed name.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Name {
    /// Directories sort first.
    is_file: bool,
    name: Vec<u8>,
}

/// Lists directory `dir_fd` (opened beneath the root) whose path from the root is `dir`
/// (empty for the root) into `html` and `json`. Symbolic links are listed only when they lead
/// inside `root_path` (the server's symlink policy); names starting with a dot only when
/// `hidden`. Returns 0, or -errno.
pub fn list(
    dir_fd: i32,
    dir: &[u8],
    hidden: bool,
    root_path: &Path,
    html: &mut Vec<u8>,
    json: &mut Vec<u8>,
) -> i32 {
    // The directory through its descriptor: no path is resolved again.
    let base = format!("/proc/self/fd/{dir_fd}");
    let entries = match std::fs::read_dir(&base) {
        Ok(entries) => entries,
        Err(e) => return -e.raw_os_error().unwrap_or(libc::EIO),
    };
    let mut kept: BinaryHeap<Name> = BinaryHeap::new();
    let mut total = 0usize;
    for entry in entries.flatten() {
        let name = entry.file_name().as_bytes().to_vec();
        if name.first() == Some(&b'.') && !hidden {
            continue;
        }
        total += 1;
        let is_file = !entry.file_type().is_ok_and(|t| t.is_dir());
        let candidate = Name { is_file, name };
        if kept.len() < LISTING_ENTRIES_MAX {
            kept.push(candidate);
        } else if kept.peek().is_some_and(|largest| candidate < *largest) {
            kept.pop();
            kept.push(candidate);
        }
    }
    let names = kept.into_sorted_vec();
    let mut rows = Vec::with_capacity(names.len());
    for Name { name, .. } in names {
        let path = Path::new(&base).join(std::ffi::OsStr::from_bytes(&name));
        let Ok(link) = std::fs::symlink_metadata(&path) else { continue };
        let meta = if link.file_type().is_symlink() {
            // Only links that stay inside the root are served, so only those are listed.
            let inside = std::fs::canonicalize(&path).is_ok_and(|real| real.starts_with(root_path));
            match std::fs::metadata(&path) {
                Ok(meta) if inside => meta,
                _ => continue,
            }
        } else {
            link
        };
        use std::os::unix::fs::MetadataExt;
        rows.push(Row { name, dir: meta.is_dir(), size: meta.len(), mtime: meta.mtime() });
    }
    write_html(dir, &rows, total, html);
    write_json(&rows, json);
    0
}

struct Row {
    name: Vec<u8>,
    dir: bool,
    size: u64,
    mtime: i64,
}

fn write_html(dir: &[u8], rows: &[Row], total: usize, out: &mut Vec<u8>) {
    let mut title = String::from("/");
    if !dir.is_empty() {
        title.push_str(&String::from_utf8_lossy(dir));
        title.push('/');
    }
    let title = html_escape(title.as_bytes());
    let mut page = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of {title}</title>\
         <style>body{{font-family:sans-serif}}td{{padding:0 1em 0 0}}td.n{{text-align:right}}\
         </style></head>\n<body><h1>Index of {title}</h1>\n<table>\n\
         <tr><th>Name</th><th>Size</th><th>Last modified (UTC)</th></tr>\n"
    );
    if !dir.is_empty() {
        page.push_str("<tr><td><a href=\"../\">../</a></td><td></td><td></td></tr>\n");
    }
    for row in rows {
        let slash = if row.dir { "/" } else { "" };
        let size = if row.dir { String::from("-") } else { row.size.to_string() };
        let _ = writeln!(
            page,
            "<tr><td><a href=\"{}{slash}\">{}{slash}</a></td><td class=n>{size}</td><td>{}</td></tr>",
            percent_encode(&row.name),
            html_escape(&row.name),
            listing_date(row.mtime),
        );
    }
    page.push_str("</table>\n");
    if total > rows.len() {
        let _ = writeln!(
            page,
            "<p>Showing the first {} of {total} entries (listings stop at {LISTING_ENTRIES_MAX}).</p>",
            rows.len()
        );
    }
    page.push_str("</body></html>\n");
    out.extend_from_slice(page.as_bytes());
}

/// nginx's `autoindex_format json`: `[{"name":..., "type":"directory"|"file", "mtime":
/// "<RFC 1123 date>", "size": N (files only)}, ...]`.
fn write_json(rows: &[Row], out: &mut Vec<u8>) {
    out.push(b'[');
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"\n{ \"name\":\"");
        access_log::escape(LogFormat::Json, &row.name, out);
        let kind = if row.dir { "directory" } else { "file" };
        let _ = write!(
            JsonOut(out),
            "\", \"type\":\"{kind}\", \"mtime\":\"{}\"",
            httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(row.mtime.max(0) as u64))
        );
        if !row.dir {
            let _ = write!(JsonOut(out), ", \"size\":{}", row.size);
        }
        out.extend_from_slice(b" }");
    }
    out.extend_from_slice(b"\n]\n");
}

/// `fmt::Write` into a byte vector.
struct JsonOut<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for JsonOut<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// `2026-12-02 03:45`, from seconds since the epoch.
fn listing_date(secs: i64) -> String {
    let stamp = crate::observe::errlog::timestamp(secs);
    stamp[..16].replace('T', " ")
}

/// Text that is safe inside HTML elements and attribute values.
fn html_escape(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A name as one path segment of a link: every byte but unreserved ones percent-encoded, so
/// `?`, `#`, `%`, `/` and quotes in names cannot change what the link points to.
fn percent_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn lists_dirs_first_escapes_names_and_hides_dot_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::write(root.join("<img src=x onerror=alert(1)>"), "x").unwrap();
        std::fs::write(root.join("b c?.txt"), "12345").unwrap();
        std::fs::write(root.join(".hidden"), "").unwrap();
        std::fs::create_dir(root.join("zdir")).unwrap();
        let fd = std::fs::File::open(&root).unwrap();
        let (mut html, mut json) = (Vec::new(), Vec::new());
        assert_eq!(list(fd.as_raw_fd(), b"", false, &root, &mut html, &mut json), 0);
        let html = String::from_utf8(html).unwrap();
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(html.contains("href=\"%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E\""));
        assert!(html.contains("href=\"b%20c%3F.txt\""));
        assert!(!html.contains(".hidden"));
        assert!(html.find("zdir/").unwrap() < html.find("b%20c").unwrap(), "dirs first");
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        let names: Vec<&str> =
            value.as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["zdir", "<img src=x onerror=alert(1)>", "b c?.txt"]);
        assert_eq!(value[2]["size"], 5);
        assert_eq!(value[0]["type"], "directory");
        assert!(value[0].get("size").is_none());
        let (mut html, mut json) = (Vec::new(), Vec::new());
        list(fd.as_raw_fd(), b"", true, &root, &mut html, &mut json);
        assert!(String::from_utf8(html).unwrap().contains(".hidden"));
    }

    #[test]
    fn a_huge_directory_lists_the_first_entries_and_counts_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        for i in 0..(LISTING_ENTRIES_MAX + 25) {
            std::fs::write(root.join(format!("f{i:06}")), "").unwrap();
        }
        let fd = std::fs::File::open(&root).unwrap();
        let (mut html, mut json) = (Vec::new(), Vec::new());
        list(fd.as_raw_fd(), b"sub", false, &root, &mut html, &mut json);
        let html = String::from_utf8(html).unwrap();
        assert!(html.contains(&format!(
            "first {LISTING_ENTRIES_MAX} of {} entries",
            LISTING_ENTRIES_MAX + 25
        )));
        assert!(
            html.contains("f000000") && !html.contains(&format!("f{:06}", LISTING_ENTRIES_MAX))
        );
        assert!(html.contains("Index of /sub/"));
    }
}
