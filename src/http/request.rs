//! Request-head parsing (RFC 9112) on top of httparse, which does the tokenizing without
//! allocating; this module adds what httparse leaves to its caller: limits, the headers a
//! static server acts on, and the mapping of every malformed input to one status.

use crate::limits::{HEADER_COUNT_MAX, REQUEST_HEAD_BYTES_MAX, REQUEST_TARGET_BYTES_MAX};

/// Request methods, as far as a static server cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET: send the representation.
    Get,
    /// HEAD: as GET, without the body.
    Head,
    /// A registered method we do not allow on static files (POST, PUT...): 405.
    NotAllowed,
    /// A method token we do not know: 501.
    Unknown,
}

/// HTTP versions we speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0: close unless the client asks for keep-alive.
    Http10,
    /// HTTP/1.1: keep-alive unless the client asks to close.
    Http11,
}

/// Why a request head was refused; each maps to exactly one status in `response.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Malformed syntax or a framing conflict: 400.
    BadRequest,
    /// The request target is longer than `REQUEST_TARGET_BYTES_MAX`: 414.
    UriTooLong,
    /// The head is larger than `REQUEST_HEAD_BYTES_MAX` or has too many fields: 431.
    HeadTooLarge,
    /// An HTTP version other than 1.0 and 1.1: 505.
    VersionNotSupported,
}

/// A parsed request head, borrowing from the input buffer.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The method.
    pub method: Method,
    /// The path of the target, still percent-encoded, without the query; starts with `/`
    /// (absolute-form targets are reduced to their path).
    pub path: &'a [u8],
    /// The query with its `?` (empty without one), kept for redirects.
    pub query: &'a [u8],
    /// The version.
    pub version: Version,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
    /// Length of the head in bytes, including the blank line.
    pub head_len: usize,
    /// Body bytes that follow the head (Content-Length); skipped, never parsed as a request.
    pub content_length: u64,
    /// The request has a chunked body, which we do not decode: answer and close.
    pub chunked: bool,
    /// `Expect: 100-continue`: the client may or may not send its body after an early final
    /// response, so a request with a body is answered and the connection closed.
    pub expect_continue: bool,
    /// `If-None-Match` value.
    pub if_none_match: Option<&'a [u8]>,
    /// `If-Modified-Since` value.
    pub if_modified_since: Option<&'a [u8]>,
    /// `If-Match` value.
    pub if_match: Option<&'a [u8]>,
    /// `If-Unmodified-Since` value.
    pub if_unmodified_since: Option<&'a [u8]>,
    /// `Range` value.
    pub range: Option<&'a [u8]>,
    /// `If-Range` value.
    pub if_range: Option<&'a [u8]>,
    /// `Accept-Encoding` value.
    pub accept_encoding: Option<&'a [u8]>,
    /// `Accept` value (a directory listing's JSON form).
    pub accept: Option<&'a [u8]>,
    /// `Referer` value (for the access log).
    pub referer: Option<&'a [u8]>,
    /// `User-Agent` value (for the access log).
    pub user_agent: Option<&'a [u8]>,
}

/// Request-head limits in force (tunable by flags up to the compile-time maxima).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseLimits {
    /// Largest head accepted (431 above), at most `REQUEST_HEAD_BYTES_MAX`.
    pub head_bytes_max: usize,
    /// Most header fields accepted (431 above), at most `HEADER_COUNT_MAX`.
    pub header_count_max: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits { head_bytes_max: REQUEST_HEAD_BYTES_MAX, header_count_max: HEADER_COUNT_MAX }
    }
}

/// Result of parsing the start of a buffer. Returned by value once per request and never
/// stored, so the size of the `Complete` variant costs nothing, and boxing it would allocate
/// per request.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Parsed<'a> {
    /// A whole head; `head_len` bytes of input belong to it.
    Complete(Request<'a>),
    /// More bytes are needed; not an error.
    Partial,
    /// The head can never become valid; answer with the mapped status and close.
    Reject(Reject),
}

/// Parses one request head from the start of `input`. Inlined: called out of line (it has two
/// callers, `serve` and the cold `miss_key`), it cost 47 of the 2,273 user-space instructions
/// of a pipelined small-page request (callgrind, 32,000 requests).
#[inline(always)]
pub fn parse<'a>(input: &'a [u8], limits: &ParseLimits) -> Parsed<'a> {
    // Uninitialized header slots: initializing 64 empty headers (2 KiB) cost more than parsing
    // a short request (criterion `parse/wrk`).
    let mut headers =
        [const { std::mem::MaybeUninit::<httparse::Header<'a>>::uninit() }; HEADER_COUNT_MAX];
    let count_max = limits.header_count_max.min(HEADER_COUNT_MAX);
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(input, &mut headers[..count_max]) {
        Ok(httparse::Status::Complete(head_len)) => {
            if head_len > limits.head_bytes_max {
                return Parsed::Reject(Reject::HeadTooLarge);
            }
            match interpret(&req, head_len) {
                Ok(request) => Parsed::Complete(request),
                Err(reject) => Parsed::Reject(reject),
            }
        }
        Ok(httparse::Status::Partial) => partial(input, limits),
        Err(httparse::Error::TooManyHeaders) => Parsed::Reject(Reject::HeadTooLarge),
        Err(httparse::Error::Version) => Parsed::Reject(version_reject(input)),
        Err(_) => Parsed::Reject(reject_token_or_target(input)),
    }
}

/// An incomplete head is fine until it outgrows the limits.
fn partial<'a>(input: &'a [u8], limits: &ParseLimits) -> Parsed<'a> {
    let line_end = input.iter().position(|&b| b == b'\n');
    if line_end.is_none() && input.len() > REQUEST_TARGET_BYTES_MAX + 32 {
        return Parsed::Reject(Reject::UriTooLong);
    }
    if input.len() > limits.head_bytes_max {
        return Parsed::Reject(Reject::HeadTooLarge);
    }
    Parsed::Partial
}

/// httparse says "bad version": tell a well-formed other version (505) from garbage (400).
fn version_reject(input: &[u8]) -> Reject {
    let line_end = input.iter().position(|&b| b == b'\n').unwrap_or(input.len());
    let line = input[..line_end].strip_suffix(b"\r").unwrap_or(&input[..line_end]);
    let mut parts = line.split(|&b| b == b' ');
    let (Some(_method), Some(_target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Reject::BadRequest; // HTTP/0.9 ("GET /") or a mangled line.
    };
    match version {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            Reject::VersionNotSupported
        }
        _ => Reject::BadRequest,
    }
}

/// Any other syntax error is a 400, unless the target alone is what is too long.
fn reject_token_or_target(input: &[u8]) -> Reject {
    let line_end = input.iter().position(|&b| b == b'\n').unwrap_or(input.len());
    if line_end > REQUEST_TARGET_BYTES_MAX + 32 {
        Reject::UriTooLong
    } else {
        Reject::BadRequest
    }
}

/// Checks a complete head and picks out what a static server acts on.
fn interpret<'a>(req: &httparse::Request<'_, 'a>, head_len: usize) -> Result<Request<'a>, Reject> {
    let version = match req.version {
        Some(0) => Version::Http10,
        Some(1) => Version::Http11,
        _ => return Err(Reject::VersionNotSupported),
    };
    let target = req.path.ok_or(Reject::BadRequest)?.as_bytes();
    if target.len() > REQUEST_TARGET_BYTES_MAX {
        return Err(Reject::UriTooLong);
    }
    let method = method_of(req.method.ok_or(Reject::BadRequest)?);
    let (path, query) = if method == Method::Get || method == Method::Head {
        path_of(target).ok_or(Reject::BadRequest)?
    } else {
        (target, &b""[..])
    };
    let mut request = Request {
        method,
        path,
        query,
        version,
        keep_alive: version == Version::Http11,
        head_len,
        content_length: 0,
        chunked: false,
        expect_continue: false,
        if_none_match: None,
        if_modified_since: None,
        if_match: None,
        if_unmodified_since: None,
        range: None,
        if_range: None,
        accept_encoding: None,
        accept: None,
        referer: None,
        user_agent: None,
    };
    read_fields(req.headers, &mut request)?;
    Ok(request)
}

/// Collects the fields we act on and enforces the framing rules of RFC 9112 section 6.
fn read_fields<'a>(
    fields: &[httparse::Header<'a>],
    request: &mut Request<'a>,
) -> Result<(), Reject> {
    let mut host_count = 0u32;
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding = false;
    for field in fields {
        let name = field.name.as_bytes();
        // No control byte (but HTAB) and no DEL can be in `value`: httparse refuses them, with
        // the default parser configuration used here (`rfc9112_strictness` holds it to that).
        // Scanning again byte by byte was about 240 of the 3,430 user-space instructions per
        // request on the large tree (callgrind).
        let value = trim(field.value);
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => host_count += 1,
            5 if name.eq_ignore_ascii_case(b"range") => request.range = Some(value),
            7 if name.eq_ignore_ascii_case(b"referer") => request.referer = Some(value),
            6 if name.eq_ignore_ascii_case(b"accept") => request.accept = Some(value),
            6 if name.eq_ignore_ascii_case(b"expect") => {
                request.expect_continue = value.eq_ignore_ascii_case(b"100-continue")
            }
            8 if name.eq_ignore_ascii_case(b"if-match") => request.if_match = Some(value),
            8 if name.eq_ignore_ascii_case(b"if-range") => request.if_range = Some(value),
            10 if name.eq_ignore_ascii_case(b"connection") => {
                apply_connection(value, request);
            }
            10 if name.eq_ignore_ascii_case(b"user-agent") => request.user_agent = Some(value),
            13 if name.eq_ignore_ascii_case(b"if-none-match") => {
                request.if_none_match = Some(value)
            }
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                let n = parse_content_length(value)?;
                if content_length.is_some_and(|old| old != n) {
                    return Err(Reject::BadRequest);
                }
                content_length = Some(n);
            }
            15 if name.eq_ignore_ascii_case(b"accept-encoding") => {
                request.accept_encoding = Some(value)
            }
            17 if name.eq_ignore_ascii_case(b"if-modified-since") => {
                request.if_modified_since = Some(value)
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                transfer_encoding = true;
                request.chunked = true;
            }
            19 if name.eq_ignore_ascii_case(b"if-unmodified-since") => {
                request.if_unmodified_since = Some(value)
            }
            _ => {}
        }
    }
    if host_count > 1 || (host_count == 0 && request.version == Version::Http11) {
        return Err(Reject::BadRequest);
    }
    if transfer_encoding && content_length.is_some() {
        return Err(Reject::BadRequest);
    }
    if transfer_encoding && request.version == Version::Http10 {
        return Err(Reject::BadRequest);
    }
    request.content_length = content_length.unwrap_or(0);
    if request.chunked {
        request.keep_alive = false;
    }
    Ok(())
}

/// `Connection` is a comma-separated token list; `close` wins over `keep-alive`.
fn apply_connection(value: &[u8], request: &mut Request<'_>) {
    for token in value.split(|&b| b == b',').map(trim) {
        if token.eq_ignore_ascii_case(b"close") {
            request.keep_alive = false;
            return;
        }
        if token.eq_ignore_ascii_case(b"keep-alive") {
            request.keep_alive = true;
        }
    }
}

/// Content-Length is 1*DIGIT; a list of identical values is allowed (RFC 9110 8.6).
fn parse_content_length(value: &[u8]) -> Result<u64, Reject> {
    let mut result: Option<u64> = None;
    for part in value.split(|&b| b == b',').map(trim) {
        if part.is_empty() || part.len() > 18 || !part.iter().all(u8::is_ascii_digit) {
            return Err(Reject::BadRequest);
        }
        let n = part.iter().fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0'));
        if result.is_some_and(|old| old != n) {
            return Err(Reject::BadRequest);
        }
        result = Some(n);
    }
    result.ok_or(Reject::BadRequest)
}

/// The path of an origin-form (`/a?b`) or absolute-form (`http://host/a?b`) target.
/// The path and the query (with its `?`, empty if none) of a request target; a fragment,
/// which clients should not send, is dropped.
fn path_of(target: &[u8]) -> Option<(&[u8], &[u8])> {
    let path = if target.first() == Some(&b'/') {
        target
    } else {
        let rest = strip_prefix_ignore_case(target, b"http://")
            .or_else(|| strip_prefix_ignore_case(target, b"https://"))?;
        let path_start = rest.iter().position(|&b| b == b'/' || b == b'?').unwrap_or(rest.len());
        if path_start == 0 {
            return None; // no authority
        }
        match rest.get(path_start) {
            Some(b'/') => &rest[path_start..],
            _ => b"/",
        }
    };
    let end = path.iter().position(|&b| b == b'?' || b == b'#').unwrap_or(path.len());
    let rest = &path[end..];
    let query_end = rest.iter().position(|&b| b == b'#').unwrap_or(rest.len());
    Some((&path[..end], &rest[..query_end]))
}

fn strip_prefix_ignore_case<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    if s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix) {
        Some(&s[prefix.len()..])
    } else {
        None
    }
}

fn method_of(token: &str) -> Method {
    match token {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" | "PUT" | "DELETE" | "OPTIONS" | "PATCH" | "TRACE" | "CONNECT" => Method::NotAllowed,
        _ => Method::Unknown,
    }
}

/// Strips optional whitespace (SP / HTAB) from both ends.
pub fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests;
