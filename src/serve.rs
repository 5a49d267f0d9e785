//! Request bytes in, queued responses out: the protocol logic every engine shares. Sans-I/O:
//! it reads from a byte slice, writes into a `Batch`, and tells its caller how many input bytes
//! it used and whether the connection must close. No allocation, no syscall.

use std::sync::Arc;

use crate::batch::Batch;
use crate::files::resolve;
use crate::files::{Body, Entry, FileCache, Lookup};
use crate::http::date::DateCache;
use crate::http::fields::{self, Ranges};
use crate::http::response::{HeadWriter, Overflow};
use crate::http::{self, Method, ParseLimits, Parsed, Reject, Request, Status, Version};
use crate::limits::REQUEST_TARGET_BYTES_MAX;
use crate::observe::access_log::{LogFormat, RequestText};
use crate::observe::stats::method_index;
use crate::site::Site;

/// Stack buffer for resolving typical request paths.
const SMALL_PATH_BYTES: usize = 256;

/// Room `append_index` may need beyond the path itself (`/index.html`).
const INDEX_SUFFIX_BYTES: usize = 11;

/// Room for any cache key: the longest decoded path plus `/index.html`.
pub type KeyBuffer = [u8; REQUEST_TARGET_BYTES_MAX + INDEX_SUFFIX_BYTES];

/// What the caller knows that the request bytes do not.
pub struct Context<'a> {
    /// The files being served.
    pub files: &'a FileCache,
    /// The engine's clock for cache freshness, in milliseconds (read once per loop turn).
    pub now_ms: u64,
    /// The same clock in microseconds: when a response was answered, for its latency.
    pub now_micros: u64,
    /// The access log's format, if one is written: request text is escaped for it.
    pub log: Option<LogFormat>,
    /// The cached Date value, and the current second.
    pub date: &'a DateCache,
    /// This connection has reached its keep-alive request limit with this request.
    pub last_request: bool,
    /// The client has closed its sending side: the last complete request in the input gets
    /// the last response, marked `Connection: close`.
    pub peer_closed: bool,
    /// Request-head limits.
    pub limits: &'a ParseLimits,
    /// Headers added to every response, fallback, error pages, listings.
    pub site: &'a Site,
}

/// What every connection of a worker shares.
pub struct Shared<'a> {
    /// The files being served.
    pub files: &'a FileCache,
    /// The engine's clock for cache freshness, in milliseconds.
    pub now_ms: u64,
    /// The same clock in microseconds (`Context::now_micros`).
    pub now_micros: u64,
    /// The access log's format, if one is written.
    pub log: Option<LogFormat>,
    /// The cached Date value, and the current second.
    pub date: &'a DateCache,
    /// Request-head limits.
    pub limits: &'a ParseLimits,
    /// Requests per keep-alive connection.
    pub keepalive_requests: u32,
    /// Headers added to every response, fallback, error pages, listings.
    pub site: &'a Site,
}

/// What every request of an event-loop worker is served with besides its connection, batch
/// and cache: one per worker, the same for the io_uring and epoll engines.
pub struct Serving {
    /// The Date header value, refreshed by the worker's tick.
    pub date: DateCache,
    pub limits: ParseLimits,
    pub keepalive_requests: u32,
    /// Headers added to every response, fallback, error pages, listings.
    pub site: Arc<Site>,
}

impl Serving {
    pub fn new(config: &crate::config::Config) -> Serving {
        Serving {
            date: DateCache::new(),
            limits: config.parse_limits,
            keepalive_requests: config.keepalive_requests,
            site: Arc::clone(&config.site),
        }
    }

    /// The context `Session::serve_all` needs, from this worker's state and clock.
    pub fn shared<'a>(
        &'a self,
        files: &'a FileCache,
        now_ms: u64,
        now_micros: u64,
        log: Option<LogFormat>,
    ) -> Shared<'a> {
        Shared {
            files,
            now_ms,
            now_micros,
            log,
            date: &self.date,
            limits: &self.limits,
            keepalive_requests: self.keepalive_requests,
            site: &self.site,
        }
    }
}

/// Per-connection protocol state, kept the same way by every engine.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    /// Requests answered.
    pub requests: u32,
    /// Request-body bytes still to discard.
    pub skip_bytes: u64,
    /// A response that ends the connection is queued: answer nothing after it.
    pub closing: bool,
    /// The client half-closed (end of stream): answer what it sent, then close.
    pub peer_closed: bool,
}

/// What `Session::serve_all` did with its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    /// Input bytes answered (or skipped as request bodies).
    pub used: usize,
    /// The request at `used` needs a path the cache must fill first (`miss_key` gives it);
    /// serve the rest of the input again after the fill.
    pub miss: Option<MissOf>,
}

/// Which path a request waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissOf {
    /// The path it names.
    Request,
    /// The `--fallback` page.
    Fallback,
    /// The `--error-page` for this status.
    ErrorPage(Status),
    /// The listing of the directory the request names (`--autoindex`).
    Listing,
}

impl Session {
    /// Serves every complete request at the start of `input` into `batch`. Stops at a partial
    /// head, a full batch, a cache miss, or a response that ends the connection (then all
    /// input counts as used: nothing after it is answered).
    pub fn serve_all(&mut self, input: &[u8], shared: &Shared<'_>, batch: &mut Batch) -> Served {
        let mut pos = 0;
        let done = |used: usize| Served { used, miss: None };
        loop {
            if self.closing {
                return done(input.len());
            }
            if self.skip_bytes > 0 {
                let skip = self.skip_bytes.min((input.len() - pos) as u64);
                pos += skip as usize;
                self.skip_bytes -= skip;
            }
            if pos == input.len() {
                return done(pos);
            }
            let ctx = Context {
                files: shared.files,
                now_ms: shared.now_ms,
                now_micros: shared.now_micros,
                log: shared.log,
                date: shared.date,
                last_request: self.requests + 1 >= shared.keepalive_requests,
                peer_closed: self.peer_closed,
                limits: shared.limits,
                site: shared.site,
            };
            match serve(&input[pos..], &ctx, batch) {
                Step::Partial | Step::Full => return done(pos),
                Step::Miss(of) => return Served { used: pos, miss: Some(of) },
                Step::Responded { consumed, skip_bytes, close } => {
                    pos += consumed;
                    self.requests += 1;
                    self.skip_bytes = skip_bytes;
                    self.closing = close;
                }
            }
        }
    }
}

/// The outcome of serving from the start of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A response was queued for the request in the first `consumed` bytes; `skip_bytes` of
    /// request body follow and must be discarded; `close` ends the connection after the send.
    Responded { consumed: usize, skip_bytes: u64, close: bool },
    /// The input holds only part of a request head.
    Partial,
    /// The batch has no room for another response: send it first.
    Full,
    /// The request needs a path the cache does not know (or must re-check): nothing was
    /// queued; the engine fills the cache (`miss_key`) and serves the request again.
    Miss(MissOf),
}

/// Serves the request at the start of `input` into `batch`.
pub fn serve(input: &[u8], ctx: &Context<'_>, batch: &mut Batch) -> Step {
    if !batch.has_room() {
        return Step::Full;
    }
    let step = match http::parse(input, ctx.limits) {
        Parsed::Partial => return Step::Partial,
        Parsed::Reject(reject) => {
            let status = status_of(reject);
            let responded = Step::Responded { consumed: input.len(), skip_bytes: 0, close: true };
            let step = respond_error(batch, ctx, status, false, false, Version::Http11)
                .map(|miss| miss.map_or(responded, Step::Miss));
            if step.is_ok() {
                note(batch, ctx, input, method_index(Method::Unknown), None, None);
            }
            step
        }
        Parsed::Complete(request) => {
            let step = respond(&request, input.len(), ctx, batch);
            if let Ok(Step::Responded { .. }) = step {
                let method = method_index(request.method);
                note(batch, ctx, input, method, request.referer, request.user_agent);
            }
            step
        }
    };
    step.unwrap_or(Step::Full)
}

/// Notes the response just queued for the access log and the counters.
fn note(
    batch: &mut Batch,
    ctx: &Context<'_>,
    input: &[u8],
    method: u8,
    referer: Option<&[u8]>,
    user_agent: Option<&[u8]>,
) {
    let text = match ctx.log {
        Some(_) => RequestText { referer, user_agent, ..RequestText::first_line(input) },
        None => RequestText::default(),
    };
    batch.annotate(method, ctx.now_micros, ctx.log, &text);
}

/// The one place a parse rejection becomes a status.
pub fn status_of(reject: Reject) -> Status {
    match reject {
        Reject::BadRequest => Status::BadRequest,
        Reject::UriTooLong => Status::UriTooLong,
        Reject::HeadTooLarge => Status::HeaderFieldsTooLarge,
        Reject::VersionNotSupported => Status::VersionNotSupported,
    }
}

fn respond(
    req: &Request<'_>,
    input_len: usize,
    ctx: &Context<'_>,
    batch: &mut Batch,
) -> Result<Step, Overflow> {
    // The last request of a half-closed client: nothing complete follows it in the input.
    let last_of_peer =
        ctx.peer_closed && input_len as u64 <= req.head_len as u64 + req.content_length;
    // A chunked body is not decoded, and after an early answer to `Expect: 100-continue` the
    // client may or may not send its body: either way the next request cannot be found, so
    // the connection ends (RFC 9112 section 9.3).
    let next_request_unknown = req.chunked || (req.expect_continue && req.content_length > 0);
    let keep_alive = req.keep_alive && !ctx.last_request && !last_of_peer && !next_request_unknown;
    let head_only = req.method == Method::Head;
    let done = |close: bool| Step::Responded {
        consumed: req.head_len,
        skip_bytes: req.content_length,
        close,
    };
    match req.method {
        Method::Get | Method::Head => {}
        Method::NotAllowed | Method::Unknown => {
            let status = if req.method == Method::NotAllowed {
                Status::MethodNotAllowed
            } else {
                Status::NotImplemented
            };
            let miss = respond_error(batch, ctx, status, keep_alive, head_only, req.version)?;
            return Ok(miss.map_or(done(!keep_alive), Step::Miss));
        }
    }
    // Typical paths resolve in a small stack buffer; zeroing the full-size one for every
    // request showed up as memset in profiles.
    let mut small = [0u8; SMALL_PATH_BYTES];
    let mut large: KeyBuffer;
    let buf: &mut [u8] = if req.path.len() + INDEX_SUFFIX_BYTES <= small.len() {
        &mut small
    } else {
        large = [0u8; REQUEST_TARGET_BYTES_MAX + INDEX_SUFFIX_BYTES];
        &mut large
    };
    let Ok((key, trailing_slash)) = key_of(req.path, buf) else {
        let miss = respond_error(batch, ctx, Status::BadRequest, false, head_only, req.version)?;
        return Ok(miss.map_or(done(true), Step::Miss));
    };
    let status = match ctx.files.get(key, ctx.now_ms) {
        Lookup::Unknown => return Ok(Step::Miss(MissOf::Request)),
        Lookup::File(entry) => {
            respond_file(req, ctx, batch, entry, keep_alive)?;
            return Ok(done(!keep_alive));
        }
        Lookup::Directory if !trailing_slash => {
            push_redirect(batch, ctx, req, keep_alive, head_only)?;
            return Ok(done(!keep_alive));
        }
        Lookup::Directory | Lookup::Missing => {
            // A directory without index.html: its listing, when asked for.
            if trailing_slash && ctx.site.autoindex {
                let mut listing = [0u8; REQUEST_TARGET_BYTES_MAX + 1];
                match ctx.files.get(listing_key(key, &mut listing), ctx.now_ms) {
                    Lookup::Unknown => return Ok(Step::Miss(MissOf::Listing)),
                    Lookup::File(entry) => {
                        let json = req.accept.is_some_and(wants_json);
                        let rep = entry.json.as_ref().filter(|_| json).unwrap_or(entry);
                        respond_file(req, ctx, batch, rep, keep_alive)?;
                        return Ok(done(!keep_alive));
                    }
                    _ => {} // not a directory: 404
                }
            }
            // A single-page app's deep link gets its page; a missing asset stays 404.
            if let Some(fallback) =
                ctx.site.fallback.as_deref().filter(|_| !has_extension(req.path))
            {
                match ctx.files.get(fallback, ctx.now_ms) {
                    Lookup::Unknown => return Ok(Step::Miss(MissOf::Fallback)),
                    Lookup::File(entry) => {
                        respond_file(req, ctx, batch, entry, keep_alive)?;
                        return Ok(done(!keep_alive));
                    }
                    _ => {} // gone since start-up: 404
                }
            }
            Status::NotFound
        }
        Lookup::Forbidden => Status::Forbidden,
        Lookup::Busy => Status::ServiceUnavailable,
        Lookup::Failed => Status::InternalServerError,
    };
    let miss = respond_error(batch, ctx, status, keep_alive, head_only, req.version)?;
    Ok(miss.map_or(done(!keep_alive), Step::Miss))
}

/// The cache key of the listing of the directory whose index key is `index_key`
/// (`docs/index.html` -> `docs/`, `index.html` -> `/`).
fn listing_key<'b>(index_key: &[u8], buf: &'b mut [u8]) -> &'b [u8] {
    let dir = index_key.strip_suffix(b"index.html").unwrap_or(index_key);
    let dir = dir.strip_suffix(b"/").unwrap_or(dir);
    crate::files::cache::listing_key_of(dir, buf)
}

/// Whether an `Accept` value asks for JSON (a directory listing's other form).
fn wants_json(accept: &[u8]) -> bool {
    accept.windows(16).any(|w| w.eq_ignore_ascii_case(b"application/json"))
}

/// Whether the last segment of a request path has an extension (`/app.js`, not `/about`).
fn has_extension(path: &[u8]) -> bool {
    let last = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
    last.iter().skip(1).any(|&b| b == b'.')
}

/// An error response: the site's page for `status` (`--error-page`) as its body when one is
/// set, else the built-in page. `Some(miss)` when the page must be filled first (nothing was
/// queued).
fn respond_error(
    batch: &mut Batch,
    ctx: &Context<'_>,
    status: Status,
    keep_alive: bool,
    head_only: bool,
    version: Version,
) -> Result<Option<MissOf>, Overflow> {
    let page = ctx.site.error_page(status).map(|key| ctx.files.get(key, ctx.now_ms));
    let entry = match page {
        Some(Lookup::Unknown) => return Ok(Some(MissOf::ErrorPage(status))),
        Some(Lookup::File(entry)) => entry,
        // No page, or it went away since start-up: the built-in one.
        _ => {
            return push_error(
                batch,
                ctx.date,
                status,
                keep_alive,
                head_only,
                version,
                &ctx.site.headers,
            )
            .map(|()| None);
        }
    };
    batch.hold(entry)?;
    let body = if head_only { Body::Owned(&[]) } else { entry.body() };
    batch.push_file(
        |w| {
            w.start(status, ctx.date.bytes())?;
            w.put(&entry.type_line)?;
            w.put(b"Content-Length: ")?;
            w.put_u64(entry.len)?;
            w.put(b"\r\n")?;
            w.put(&ctx.site.headers)?;
            w.finish(keep_alive, version == Version::Http10)
        },
        body,
    )?;
    Ok(None)
}

/// The cache key a request path names (its index for a path ending in `/`), and whether it
/// ended in `/`. `Err` for a path that cannot name anything under the root (400).
fn key_of<'b>(path: &[u8], buf: &'b mut [u8]) -> Result<(&'b [u8], bool), resolve::Invalid> {
    let resolved = resolve::resolve(path, buf)?;
    let len = if resolved.trailing_slash {
        append_index(buf, resolved.len).ok_or(resolve::Invalid::BadPath)?
    } else {
        resolved.len
    };
    Ok((&buf[..len], resolved.trailing_slash))
}

/// The key the request at the start of `input` waits for, after `serve` answered
/// `Step::Miss(of)` for it: what the engine must `fill`.
pub fn miss_key<'b>(
    input: &[u8],
    limits: &ParseLimits,
    site: &Site,
    of: MissOf,
    buf: &'b mut KeyBuffer,
) -> Option<&'b [u8]> {
    let page = match of {
        MissOf::Request => {
            return match http::parse(input, limits) {
                Parsed::Complete(req) => key_of(req.path, buf).ok().map(|(key, _)| key),
                Parsed::Partial | Parsed::Reject(_) => None,
            };
        }
        MissOf::Listing => {
            let Parsed::Complete(req) = http::parse(input, limits) else { return None };
            let mut index = [0u8; std::mem::size_of::<KeyBuffer>()];
            let (key, _) = key_of(req.path, &mut index).ok()?;
            let len = listing_key(key, buf).len();
            return Some(&buf[..len]);
        }
        MissOf::Fallback => site.fallback.as_deref()?,
        MissOf::ErrorPage(status) => site.error_page(status)?,
    };
    let key = buf.get_mut(..page.len())?;
    key.copy_from_slice(page);
    Some(key)
}

/// The representation to send: a precompressed variant when the client accepts it.
/// A range request always gets the identity file: clients store decoded bytes and resume or
/// split downloads by offsets into them, which mean nothing in the compressed bytes.
fn choose_representation<'e>(req: &Request<'_>, entry: &'e Arc<Entry>) -> &'e Arc<Entry> {
    let ranged = req.range.is_some() && req.method == Method::Get;
    if !entry.has_variants() || ranged {
        return entry;
    }
    let accepts = fields::parse_accept_encoding(req.accept_encoding.unwrap_or(b""));
    let br = entry.br.as_ref().filter(|_| accepts.br > 0);
    let gzip = entry.gzip.as_ref().filter(|_| accepts.gzip > 0);
    match (br, gzip) {
        (Some(b), Some(g)) => {
            if accepts.gzip > accepts.br {
                g
            } else {
                b
            }
        }
        (Some(b), None) => b,
        (None, Some(g)) => g,
        (None, None) => entry,
    }
}

/// The outcome of the conditional-request headers (RFC 9110 13.2.2, in its order).
#[derive(Debug, PartialEq, Eq)]
enum Precondition {
    Proceed,
    NotModified,
    Failed,
}

fn evaluate_preconditions(req: &Request<'_>, rep: &Entry, now_secs: u64) -> Precondition {
    if let Some(list) = req.if_match {
        if !fields::etag_matches(list, &rep.etag, false) {
            return Precondition::Failed;
        }
    } else if let Some(since) = req.if_unmodified_since.and_then(fields::parse_date) {
        if rep.mtime_secs > since {
            return Precondition::Failed;
        }
    }
    if let Some(list) = req.if_none_match {
        if fields::etag_matches(list, &rep.etag, true) {
            return Precondition::NotModified;
        }
    } else if let Some(since) = req.if_modified_since.and_then(fields::parse_date) {
        // A date later than our clock is invalid (RFC 9110 section 13.1.3): ignored, as
        // nginx and Apache do, instead of promising that nothing changed since the future.
        if rep.mtime_secs <= since && since <= now_secs {
            return Precondition::NotModified;
        }
    }
    Precondition::Proceed
}

/// The range to send, after `If-Range` (a strong ETag, or the exact Last-Modified date).
fn evaluate_range(req: &Request<'_>, rep: &Entry) -> Ranges {
    let Some(range) = req.range.filter(|_| req.method == Method::Get) else {
        return Ranges::Full;
    };
    if let Some(validator) = req.if_range.map(http::request::trim) {
        let fresh = if validator.starts_with(b"\"") || validator.starts_with(b"W/") {
            fields::etag_matches(validator, &rep.etag, false) && !validator.starts_with(b"W/")
        } else {
            fields::parse_date(validator) == Some(rep.mtime_secs)
        };
        if !fresh {
            return Ranges::Full;
        }
    }
    fields::parse_range(range, rep.len)
}

fn respond_file(
    req: &Request<'_>,
    ctx: &Context<'_>,
    batch: &mut Batch,
    entry: &Arc<Entry>,
    keep_alive: bool,
) -> Result<(), Overflow> {
    let http10 = req.version == Version::Http10;
    let head_only = req.method == Method::Head;
    let rep = choose_representation(req, entry);
    match evaluate_preconditions(req, rep, ctx.date.unix_secs()) {
        Precondition::Proceed => {}
        Precondition::NotModified => {
            return batch.push(
                |w| {
                    w.start(Status::NotModified, ctx.date.bytes())?;
                    w.put(&rep.meta)?;
                    w.finish(keep_alive, http10)
                },
                &[],
            );
        }
        Precondition::Failed => {
            let status = Status::PreconditionFailed;
            return builtin_error(batch, ctx, status, keep_alive, head_only, req.version);
        }
    }
    match evaluate_range(req, rep) {
        Ranges::Full => {
            let body = if head_only { Body::Owned(&[]) } else { rep.body() };
            batch.hold(rep)?;
            batch.push_file(
                |w| {
                    w.start(Status::Ok, ctx.date.bytes())?;
                    w.put(&rep.fields_200)?;
                    w.finish(keep_alive, http10)
                },
                body,
            )
        }
        Ranges::One { first, last } => {
            // The range was checked against `rep.len`, which is the body's length by
            // construction; a miss here would be a bug, answered as one, not a panic.
            let Some(body) = rep.body().slice(first, last + 1) else {
                let status = Status::InternalServerError;
                return builtin_error(batch, ctx, status, keep_alive, head_only, req.version);
            };
            batch.hold(rep)?;
            batch.push_file(
                |w| {
                    w.start(Status::PartialContent, ctx.date.bytes())?;
                    w.put(&rep.type_line)?;
                    w.put(b"Content-Length: ")?;
                    w.put_u64(last - first + 1)?;
                    w.put(b"\r\nContent-Range: bytes ")?;
                    w.put_u64(first)?;
                    w.put(b"-")?;
                    w.put_u64(last)?;
                    w.put(b"/")?;
                    w.put_u64(rep.len)?;
                    w.put(b"\r\n")?;
                    w.put(&rep.meta)?;
                    w.finish(keep_alive, http10)
                },
                body,
            )
        }
        Ranges::Unsatisfiable => {
            let status = Status::RangeNotSatisfiable;
            let body = status.error_body();
            batch.push(
                |w| {
                    w.start(status, ctx.date.bytes())?;
                    put_html_fields(w, body.len())?;
                    w.put(b"Content-Range: bytes */")?;
                    w.put_u64(rep.len)?;
                    w.put(b"\r\n")?;
                    w.put(&ctx.site.headers)?;
                    w.finish(keep_alive, http10)
                },
                body,
            )
        }
    }
}

/// `dir` + `/index.html` (or `index.html` at the root), if the buffer has room.
fn append_index(path: &mut [u8], len: usize) -> Option<usize> {
    const INDEX: &[u8] = b"index.html";
    let sep = usize::from(len > 0);
    if len + sep + INDEX.len() > path.len() {
        return None;
    }
    if sep == 1 {
        path[len] = b'/';
    }
    path[len + sep..len + sep + INDEX.len()].copy_from_slice(INDEX);
    Some(len + sep + INDEX.len())
}

/// The built-in error page for `status`, with the site's headers.
fn builtin_error(
    batch: &mut Batch,
    ctx: &Context<'_>,
    status: Status,
    keep_alive: bool,
    head_only: bool,
    version: Version,
) -> Result<(), Overflow> {
    let headers = &ctx.site.headers;
    push_error(batch, ctx.date, status, keep_alive, head_only, version, headers)
}

/// 408 for a request head that did not complete in time (`partial` is what arrived), noted for
/// the access log and counters like any response; the connection closes after it.
pub fn push_timeout(
    batch: &mut Batch,
    date: &DateCache,
    site: &Site,
    partial: &[u8],
    now_micros: u64,
    log: Option<LogFormat>,
) -> Result<(), Overflow> {
    let status = Status::RequestTimeout;
    push_error(batch, date, status, false, false, Version::Http11, &site.headers)?;
    let text = match log {
        Some(_) => RequestText::first_line(partial),
        None => RequestText::default(),
    };
    batch.annotate(method_index(Method::Unknown), now_micros, log, &text);
    Ok(())
}

/// A complete error response: status, a small HTML body, `Allow` on 405, then the site's
/// `headers`.
pub fn push_error(
    batch: &mut Batch,
    date: &DateCache,
    status: Status,
    keep_alive: bool,
    head_only: bool,
    version: Version,
    headers: &[u8],
) -> Result<(), Overflow> {
    let body = status.error_body();
    batch.push(
        |w| {
            w.start(status, date.bytes())?;
            put_html_fields(w, body.len())?;
            if status == Status::MethodNotAllowed {
                w.put(b"Allow: GET, HEAD\r\n")?;
            }
            if status == Status::ServiceUnavailable {
                // Out of descriptors or memory for a moment: worth retrying soon.
                w.put(b"Retry-After: 1\r\n")?;
            }
            w.put(headers)?;
            w.finish(keep_alive, version == Version::Http10)
        },
        if head_only { &[] } else { body },
    )
}

fn put_html_fields(w: &mut HeadWriter<'_>, body_len: usize) -> Result<(), Overflow> {
    w.put(b"Content-Type: text/html; charset=utf-8\r\nContent-Length: ")?;
    w.put_u64(body_len as u64)?;
    w.put(b"\r\n")
}

/// 301 to the same path with a trailing slash, as nginx does for directories.
fn push_redirect(
    batch: &mut Batch,
    ctx: &Context<'_>,
    req: &Request<'_>,
    keep_alive: bool,
    head_only: bool,
) -> Result<(), Overflow> {
    let status = Status::MovedPermanently;
    let body = status.error_body();
    batch.push(
        |w| {
            w.start(status, ctx.date.bytes())?;
            put_html_fields(w, body.len())?;
            w.put(b"Location: ")?;
            w.put(req.path)?;
            w.put(b"/")?;
            w.put(req.query)?;
            w.put(b"\r\n")?;
            w.put(&ctx.site.headers)?;
            w.finish(keep_alive, req.version == Version::Http10)
        },
        if head_only { &[] } else { body },
    )
}

#[cfg(test)]
mod tests;
