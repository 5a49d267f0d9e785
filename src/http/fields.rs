//! Parsers for the request fields a static server acts on: entity-tag lists (RFC 9110 8.8.3),
//! HTTP dates, byte ranges (RFC 9110 14.1) and Accept-Encoding with q-values (12.5.3). Pure
//! functions on byte slices; nothing allocates.

use super::request::trim;

/// Whether the entity-tag list `list` (`*` or `tag, W/"tag", ...`) matches `etag` (a strong
/// tag like `"abc"`). Weak comparison ignores `W/` prefixes; strong comparison never matches a
/// weak tag.
pub fn etag_matches(list: &[u8], etag: &str, weak: bool) -> bool {
    let list = trim(list);
    if list == b"*" {
        return true;
    }
    list.split(|&b| b == b',').map(trim).any(|tag| {
        let (is_weak, opaque) = match tag.strip_prefix(b"W/") {
            Some(rest) => (true, rest),
            None => (false, tag),
        };
        (weak || !is_weak) && opaque == etag.as_bytes()
    })
}

/// An HTTP date as seconds since the epoch; `None` if it does not parse (then it is ignored).
pub fn parse_date(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(trim(value)).ok()?;
    let time = httpdate::parse_http_date(text).ok()?;
    time.duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// Most ranges examined in one `Range` header: more is an abuse, and the header is ignored.
pub const RANGE_COUNT_MAX: usize = 16;

/// What a `Range` header asks of a representation of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ranges {
    /// Ignore the header: send the whole representation with 200 (invalid syntax, an unknown
    /// unit, or several ranges, which we answer in full rather than as multipart: that can
    /// never send more than the file, so overlapping-range amplification cannot work).
    Full,
    /// One satisfiable range, `first..=last`: 206.
    One { first: u64, last: u64 },
    /// Syntactically valid but no range overlaps the representation: 416.
    Unsatisfiable,
}

/// Interprets a `Range` value for a representation of `len` bytes.
pub fn parse_range(value: &[u8], len: u64) -> Ranges {
    let value = trim(value);
    let Some(eq) = value.iter().position(|&b| b == b'=') else { return Ranges::Full };
    if !trim(&value[..eq]).eq_ignore_ascii_case(b"bytes") {
        return Ranges::Full;
    }
    let mut satisfiable: Option<(u64, u64)> = None;
    let mut satisfiable_count = 0usize;
    for (i, spec) in value[eq + 1..].split(|&b| b == b',').map(trim).enumerate() {
        if i >= RANGE_COUNT_MAX {
            return Ranges::Full;
        }
        if spec.is_empty() {
            continue; // RFC 9110 allows empty list elements
        }
        let Some(span) = parse_spec(spec) else { return Ranges::Full };
        if let Some(range) = resolve_spec(span, len) {
            satisfiable_count += 1;
            satisfiable = Some(range);
        }
    }
    match (satisfiable_count, satisfiable) {
        (0, _) => Ranges::Unsatisfiable,
        (1, Some((first, last))) => Ranges::One { first, last },
        _ => Ranges::Full,
    }
}

/// `a-b`, `a-` or `-n`.
#[derive(Debug, Clone, Copy)]
enum Span {
    From(u64, Option<u64>),
    Suffix(u64),
}

fn parse_spec(spec: &[u8]) -> Option<Span> {
    let dash = spec.iter().position(|&b| b == b'-')?;
    let (first, last) = (&spec[..dash], &spec[dash + 1..]);
    match (digits(first), digits(last)) {
        (Some(a), Some(b)) if a <= b => Some(Span::From(a, Some(b))),
        (Some(a), None) if last.is_empty() => Some(Span::From(a, None)),
        (None, Some(n)) if first.is_empty() => Some(Span::Suffix(n)),
        _ => None,
    }
}

fn resolve_spec(span: Span, len: u64) -> Option<(u64, u64)> {
    match span {
        Span::From(first, _) if first >= len => None,
        Span::From(first, last) => Some((first, last.map_or(len - 1, |l| l.min(len - 1)))),
        Span::Suffix(0) => None,
        Span::Suffix(_) if len == 0 => None,
        Span::Suffix(n) => Some((len - n.min(len), len - 1)),
    }
}

/// 1*DIGIT, at most 18 digits (no overflow).
fn digits(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 18 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0')))
}

/// Which precompressed codings the client accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Accepts {
    /// q-value (x1000) for br; 0 = not acceptable.
    pub br: u16,
    /// q-value (x1000) for gzip; 0 = not acceptable.
    pub gzip: u16,
}

/// Parses `Accept-Encoding`: explicit codings take their q, `*` covers the unlisted ones,
/// `q=0` excludes, a missing header accepts nothing precompressed.
pub fn parse_accept_encoding(value: &[u8]) -> Accepts {
    let (mut br, mut gzip, mut star) = (None, None, None);
    for item in value.split(|&b| b == b',').map(trim) {
        let mut parts = item.split(|&b| b == b';').map(trim);
        let coding = parts.next().unwrap_or(b"");
        let mut q = 1000u16;
        for param in parts {
            if let Some(v) = param.strip_prefix(b"q=").or_else(|| param.strip_prefix(b"Q=")) {
                q = parse_qvalue(v).unwrap_or(0);
            }
        }
        if coding.eq_ignore_ascii_case(b"br") {
            br = Some(q);
        } else if coding.eq_ignore_ascii_case(b"gzip") || coding.eq_ignore_ascii_case(b"x-gzip") {
            gzip = Some(q);
        } else if coding == b"*" {
            star = Some(q);
        }
    }
    Accepts { br: br.or(star).unwrap_or(0), gzip: gzip.or(star).unwrap_or(0) }
}

/// `0`, `0.5`, `1`, `1.000`: thousandths.
fn parse_qvalue(v: &[u8]) -> Option<u16> {
    let (int, frac) = match v.iter().position(|&b| b == b'.') {
        Some(dot) => (&v[..dot], &v[dot + 1..]),
        None => (v, &b""[..]),
    };
    if int.len() != 1 || frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths = 0u16;
    for i in 0..3 {
        thousandths = thousandths * 10 + frac.get(i).map_or(0, |d| u16::from(d - b'0'));
    }
    match int[0] {
        b'0' => Some(thousandths),
        b'1' if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_lists() {
        assert!(etag_matches(b"*", "\"a\"", true));
        assert!(etag_matches(b"\"x\", \"a\"", "\"a\"", false));
        assert!(etag_matches(b"W/\"a\"", "\"a\"", true));
        assert!(!etag_matches(b"W/\"a\"", "\"a\"", false));
        assert!(!etag_matches(b"\"b\"", "\"a\"", true));
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range(b"bytes=0-9", 100), Ranges::One { first: 0, last: 9 });
        assert_eq!(parse_range(b"bytes=90-", 100), Ranges::One { first: 90, last: 99 });
        assert_eq!(parse_range(b"bytes=-10", 100), Ranges::One { first: 90, last: 99 });
        assert_eq!(parse_range(b"bytes=-1000", 100), Ranges::One { first: 0, last: 99 });
        assert_eq!(parse_range(b"bytes=50-1000", 100), Ranges::One { first: 50, last: 99 });
        assert_eq!(parse_range(b"bytes=100-", 100), Ranges::Unsatisfiable);
        assert_eq!(parse_range(b"bytes=-0", 100), Ranges::Unsatisfiable);
        assert_eq!(parse_range(b"bytes=0-0", 0), Ranges::Unsatisfiable);
        assert_eq!(parse_range(b"bytes=5-1", 100), Ranges::Full, "invalid: ignored");
        assert_eq!(parse_range(b"bytes=a-b", 100), Ranges::Full);
        assert_eq!(parse_range(b"items=0-1", 100), Ranges::Full, "unknown unit");
        assert_eq!(parse_range(b"bytes=0-1,5-6", 100), Ranges::Full, "several: full 200");
        assert_eq!(parse_range(b"bytes=0-1,200-300", 100), Ranges::One { first: 0, last: 1 });
        let many = format!("bytes={}", vec!["0-"; 1000].join(","));
        assert_eq!(parse_range(many.as_bytes(), 100), Ranges::Full, "amplification refused");
    }

    #[test]
    fn accept_encoding() {
        let a = parse_accept_encoding(b"br;q=1, gzip;q=0.8");
        assert_eq!(a, Accepts { br: 1000, gzip: 800 });
        assert_eq!(parse_accept_encoding(b"gzip, deflate"), Accepts { br: 0, gzip: 1000 });
        assert_eq!(parse_accept_encoding(b"*;q=0.5, br;q=0"), Accepts { br: 0, gzip: 500 });
        assert_eq!(parse_accept_encoding(b"identity"), Accepts { br: 0, gzip: 0 });
        assert_eq!(parse_accept_encoding(b"gzip;q=2"), Accepts { br: 0, gzip: 0 });
    }

    #[test]
    fn dates() {
        assert_eq!(parse_date(b"Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(parse_date(b"yesterday"), None);
    }
}
