//! Site options: response headers added to every response (`--header`), `Cache-Control` by
//! path (`--cache-control`), the single-page-app fallback (`--fallback`), error pages
//! (`--error-page`) and directory listings (`--autoindex`). Validated once at start-up;
//! header lines are precomputed bytes (a file's own lines go into its cache entry when it is
//! filled), so no rule is matched per request.

use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::files::resolve;
use crate::http::Status;
use crate::limits::REQUEST_TARGET_BYTES_MAX;

/// Header names ringserve writes itself: setting them with `--header` would send them twice or
/// contradict the framing.
const OWN_HEADERS: [&str; 14] = [
    "content-length",
    "content-type",
    "content-encoding",
    "content-range",
    "transfer-encoding",
    "connection",
    "date",
    "server",
    "etag",
    "last-modified",
    "accept-ranges",
    "vary",
    "location",
    "keep-alive",
];

/// Statuses ringserve sends that an error page can replace the body of.
const ERROR_STATUSES: [Status; 9] = [
    Status::BadRequest,
    Status::Forbidden,
    Status::NotFound,
    Status::MethodNotAllowed,
    Status::RangeNotSatisfiable,
    Status::InternalServerError,
    Status::NotImplemented,
    Status::ServiceUnavailable,
    Status::PreconditionFailed,
];

/// One `--cache-control` rule.
#[derive(Debug)]
struct CacheRule {
    /// Globs without a `/`, matched against the file name.
    names: GlobSet,
    /// Globs with a `/`, matched against the path from the root.
    paths: GlobSet,
    /// `Cache-Control: VALUE\r\n`.
    line: Box<[u8]>,
}

/// The validated site options.
#[derive(Debug, Default)]
pub struct Site {
    /// `Name: value\r\n` lines from `--header`, added to every response.
    pub headers: Box<[u8]>,
    rules: Vec<CacheRule>,
    /// The cache key of `--fallback`, if set.
    pub fallback: Option<Box<[u8]>>,
    /// Per status, the cache key of its error page.
    pub error_pages: Vec<(Status, Box<[u8]>)>,
    /// List directories that have no index.html.
    pub autoindex: bool,
    /// Include names starting with a dot in listings.
    pub autoindex_hidden: bool,
}

/// The raw option values, as the command line gives them.
#[derive(Debug, Default, Clone)]
pub struct SiteOptions {
    pub headers: Vec<String>,
    pub cache_control: Vec<String>,
    pub fallback: Option<String>,
    pub error_pages: Vec<String>,
    pub autoindex: bool,
    pub autoindex_hidden: bool,
}

impl Site {
    /// Validates the options against the root: every header well-formed and not one ringserve
    /// writes, every rule a valid glob list with a value, no rule shadowed by an identical one,
    /// the fallback and error pages files inside the root. Errors name the flag and the value.
    pub fn new(options: &SiteOptions, root: &Path) -> Result<Site, String> {
        let mut site = Site {
            autoindex: options.autoindex || options.autoindex_hidden,
            autoindex_hidden: options.autoindex_hidden,
            ..Site::default()
        };
        let mut headers = Vec::new();
        for header in &options.headers {
            let (name, value) = header
                .split_once(':')
                .ok_or_else(|| format!("--header {header:?}: expected 'NAME: VALUE'"))?;
            let value = value.trim();
            if name.is_empty() || !name.bytes().all(is_token) {
                return Err(format!("--header {header:?}: {name:?} is not a header name"));
            }
            if OWN_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                return Err(format!("--header {header:?}: ringserve sets {name} itself"));
            }
            check_value("--header", header, value)?;
            if name.eq_ignore_ascii_case("cache-control") && !options.cache_control.is_empty() {
                return Err(format!(
                    "--header {header:?} conflicts with --cache-control: use one or the other"
                ));
            }
            headers.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        site.headers = headers.into_boxed_slice();
        let mut seen: Vec<&str> = Vec::new();
        for rule in &options.cache_control {
            let (globs, value) = rule
                .split_once('=')
                .ok_or_else(|| format!("--cache-control {rule:?}: expected 'GLOB=VALUE'"))?;
            let value = value.trim();
            if value.is_empty() {
                return Err(format!("--cache-control {rule:?}: the value is empty"));
            }
            check_value("--cache-control", rule, value)?;
            if seen.contains(&globs.trim()) {
                return Err(format!(
                    "--cache-control {rule:?}: an earlier rule has the same globs, so this one \
                     never applies (the first match wins)"
                ));
            }
            seen.push(globs.trim());
            let (mut names, mut paths) = (GlobSetBuilder::new(), GlobSetBuilder::new());
            for glob in globs.split(',').map(str::trim) {
                if glob.is_empty() {
                    return Err(format!("--cache-control {rule:?}: an empty glob"));
                }
                let pattern = glob.trim_start_matches('/');
                let compiled = GlobBuilder::new(pattern)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| format!("--cache-control {rule:?}: {e}"))?;
                if pattern.contains('/') {
                    paths.add(compiled);
                } else {
                    names.add(compiled);
                }
            }
            let build = |b: GlobSetBuilder| b.build().map_err(|e| format!("--cache-control: {e}"));
            site.rules.push(CacheRule {
                names: build(names)?,
                paths: build(paths)?,
                line: format!("Cache-Control: {value}\r\n").into_bytes().into_boxed_slice(),
            });
        }
        if let Some(fallback) = &options.fallback {
            site.fallback = Some(page_key("--fallback", fallback, root)?);
        }
        for page in &options.error_pages {
            let (code, path) = page
                .split_once('=')
                .ok_or_else(|| format!("--error-page {page:?}: expected 'STATUS=/PATH'"))?;
            let status = code
                .trim()
                .parse::<u16>()
                .ok()
                .and_then(|code| ERROR_STATUSES.iter().copied().find(|s| s.code() == code))
                .ok_or_else(|| {
                    let codes: Vec<String> =
                        ERROR_STATUSES.iter().map(|s| s.code().to_string()).collect();
                    format!("--error-page {page:?}: the status must be one of {}", codes.join(", "))
                })?;
            if site.error_pages.iter().any(|(s, _)| *s == status) {
                return Err(format!("--error-page {page:?}: {code} already has a page"));
            }
            site.error_pages.push((status, page_key("--error-page", path.trim(), root)?));
        }
        Ok(site)
    }

    /// Appends the header lines a file at `key` (path from the root) carries: its
    /// `Cache-Control`, if a rule matches, then the `--header` lines.
    pub fn file_fields(&self, key: &[u8], out: &mut Vec<u8>) {
        let path = String::from_utf8_lossy(key);
        let name = path.rsplit('/').next().unwrap_or(&path);
        if let Some(rule) =
            self.rules.iter().find(|r| r.names.is_match(name) || r.paths.is_match(path.as_ref()))
        {
            out.extend_from_slice(&rule.line);
        }
        out.extend_from_slice(&self.headers);
    }

    /// The error page's key for `status`, if one is set.
    pub fn error_page(&self, status: Status) -> Option<&[u8]> {
        self.error_pages.iter().find(|(s, _)| *s == status).map(|(_, key)| &key[..])
    }
}

/// The cache key of a page given as `/path` under the root; it must exist as a regular file.
fn page_key(flag: &str, path: &str, root: &Path) -> Result<Box<[u8]>, String> {
    if !path.starts_with('/') {
        return Err(format!("{flag} {path:?}: give a path from the root, starting with /"));
    }
    let mut buf = [0u8; REQUEST_TARGET_BYTES_MAX];
    let resolved = resolve::resolve(path.as_bytes(), &mut buf)
        .map_err(|_| format!("{flag} {path:?}: not a path inside the root"))?;
    let key = &buf[..resolved.len];
    let file = root.join(String::from_utf8_lossy(key).as_ref());
    let canonical =
        file.canonicalize().map_err(|e| format!("{flag} {path:?}: {}: {e}", file.display()))?;
    let root = root.canonicalize().map_err(|e| format!("{flag}: root: {e}"))?;
    if !canonical.starts_with(&root) {
        return Err(format!("{flag} {path:?}: leads outside the root"));
    }
    if !canonical.is_file() {
        return Err(format!("{flag} {path:?}: not a regular file"));
    }
    Ok(key.into())
}

fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn check_value(flag: &str, whole: &str, value: &str) -> Result<(), String> {
    if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(format!("{flag} {whole:?}: control characters are not allowed in a value"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(cache_control: &[&str], headers: &[&str]) -> Result<Site, String> {
        let options = SiteOptions {
            cache_control: cache_control.iter().map(|s| s.to_string()).collect(),
            headers: headers.iter().map(|s| s.to_string()).collect(),
            ..SiteOptions::default()
        };
        Site::new(&options, Path::new("."))
    }

    fn fields(site: &Site, key: &str) -> String {
        let mut out = Vec::new();
        site.file_fields(key.as_bytes(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn first_matching_rule_wins_names_and_paths() {
        let s = site(
            &[
                "*.css,*.js,*.woff2=public, max-age=31536000, immutable",
                "*.html=no-cache",
                "/docs/**=max-age=60",
            ],
            &["X-Content-Type-Options: nosniff"],
        )
        .unwrap();
        assert_eq!(
            fields(&s, "assets/app.js"),
            "Cache-Control: public, max-age=31536000, immutable\r\nX-Content-Type-Options: nosniff\r\n"
        );
        assert_eq!(
            fields(&s, "index.html"),
            "Cache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\n"
        );
        assert_eq!(
            fields(&s, "docs/a/b.txt"),
            "Cache-Control: max-age=60\r\nX-Content-Type-Options: nosniff\r\n"
        );
        assert_eq!(fields(&s, "docs.txt"), "X-Content-Type-Options: nosniff\r\n");
    }

    #[test]
    fn bad_and_conflicting_options_are_refused_with_the_flag() {
        let err = |cc: &[&str], h: &[&str]| site(cc, h).err().unwrap_or_default();
        assert!(err(&["*.css"], &[]).contains("--cache-control"));
        assert!(err(&["*.css="], &[]).contains("empty"));
        assert!(err(&["[x=1"], &[]).contains("--cache-control"));
        assert!(err(&["*.css=a", "*.css=b"], &[]).contains("never applies"));
        assert!(err(&[], &["NoColon"]).contains("NAME: VALUE"));
        assert!(err(&[], &["Content-Length: 5"]).contains("sets Content-Length itself"));
        assert!(err(&[], &["Bad Name: x"]).contains("not a header name"));
        assert!(err(&[], &["X-A: a\u{1}b"]).contains("control"));
        assert!(err(&["*=x"], &["Cache-Control: y"]).contains("conflicts"));
    }
}
