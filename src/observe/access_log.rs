//! Access-log lines: nginx's `combined` format byte for byte, its escaping included, or one
//! JSON object per line with the same fields and the request's duration. Sans-I/O: lines are
//! written into a caller's buffer; `log_sink` writes them out.
//!
//! A request's own text (its request line, Referer and User-Agent) is escaped when it is
//! served, into its batch (`Batch::annotate`): its bytes are reused before the response is
//! sent. The rest (address, time, bytes sent) is known only when the response is done.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};

/// The line formats.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// nginx's `combined`: `$remote_addr - $remote_user [$time_local] "$request" $status
    /// $body_bytes_sent "$http_referer" "$http_user_agent"`.
    Combined,
    /// One JSON object per line: the same fields (`null` when absent), `time` in ISO 8601
    /// and `request_time` in seconds.
    Json,
}

/// The longest line: every escaped field comes from one request head, at most
/// `REQUEST_HEAD_BYTES_MAX` bytes, each byte escaped to at most 6 (JSON `\u00XX`), plus the
/// fixed text. Log buffers keep this much slack so a line is never cut.
pub const LINE_BYTES_MAX: usize = 6 * crate::limits::REQUEST_HEAD_BYTES_MAX + 512;

/// What a line needs from its request, raw.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestText<'a> {
    /// The request line as received, without its line end.
    pub line: &'a [u8],
    /// The Referer value, if the request had one.
    pub referer: Option<&'a [u8]>,
    /// The User-Agent value, if the request had one.
    pub user_agent: Option<&'a [u8]>,
}

impl<'a> RequestText<'a> {
    /// The request line at the start of `input` (up to its LF, without CR), for a request
    /// whose head could not be parsed.
    pub fn first_line(input: &'a [u8]) -> RequestText<'a> {
        // A line longer than any head we accept is cut there: `LINE_BYTES_MAX` holds.
        let input = &input[..input.len().min(crate::limits::REQUEST_HEAD_BYTES_MAX)];
        let end = input.iter().position(|&b| b == b'\n').unwrap_or(input.len());
        let line = &input[..end];
        RequestText { line: line.strip_suffix(b"\r").unwrap_or(line), ..RequestText::default() }
    }
}

/// Appends `src` escaped for `format`: nginx's `escape=default` (`"`, `\`, bytes below 0x20
/// and from 0x7F as `\xHH`, upper-case) or a JSON string's contents (valid UTF-8 is kept,
/// other bytes become `\u00HH`, so the line stays valid JSON).
pub fn escape(format: LogFormat, src: &[u8], out: &mut Vec<u8>) {
    match format {
        LogFormat::Combined => escape_nginx(src, out),
        LogFormat::Json => escape_json(src, out),
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn escape_nginx(src: &[u8], out: &mut Vec<u8>) {
    for &b in src {
        if b < 0x20 || b == b'"' || b == b'\\' || b >= 0x7F {
            out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]);
        } else {
            out.push(b);
        }
    }
}

fn escape_json(src: &[u8], out: &mut Vec<u8>) {
    for chunk in src.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                '\n' => out.extend_from_slice(b"\\n"),
                '\r' => out.extend_from_slice(b"\\r"),
                '\t' => out.extend_from_slice(b"\\t"),
                c if (c as u32) < 0x20 || c == '\u{7f}' => {
                    out.extend_from_slice(b"\\u00");
                    out.extend_from_slice(&[HEX[c as usize >> 4], HEX[c as usize & 15]]);
                }
                c => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        for &b in chunk.invalid() {
            out.extend_from_slice(b"\\u00");
            out.extend_from_slice(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

/// The current second in both log formats, recomputed only when the second changes.
pub struct LogTime {
    secs: i64,
    /// `02/Dec/2026:03:45:12 +0000` (nginx `$time_local`).
    local: [u8; 26],
    /// `2026-12-02T03:45:12+00:00` (nginx `$time_iso8601`).
    iso: [u8; 25],
}

impl Default for LogTime {
    fn default() -> Self {
        let mut time = LogTime { secs: -1, local: [b' '; 26], iso: [b' '; 25] };
        time.update(now_secs());
        time
    }
}

impl LogTime {
    /// Moves to `unix_secs` (local time, as nginx's `$time_local`).
    pub fn update(&mut self, unix_secs: i64) {
        if unix_secs == self.secs {
            return;
        }
        self.secs = unix_secs;
        // SAFETY: localtime_r writes only the local `tm`; `t` is a live time_t.
        let tm = unsafe {
            let mut tm: libc::tm = std::mem::zeroed();
            let t: libc::time_t = unix_secs;
            if libc::localtime_r(&t, &mut tm).is_null() {
                return;
            }
            tm
        };
        const MONTHS: [&str; 12] =
            ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
        let offset_min = tm.tm_gmtoff / 60;
        let sign = if offset_min < 0 { '-' } else { '+' };
        let (oh, om) = (offset_min.abs() / 60, offset_min.abs() % 60);
        let month = MONTHS[tm.tm_mon.clamp(0, 11) as usize];
        let (year, mon, day) = (tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
        let (h, m, s) = (tm.tm_hour, tm.tm_min, tm.tm_sec);
        let _ = write!(
            &mut self.local[..],
            "{day:02}/{month}/{year:04}:{h:02}:{m:02}:{s:02} {sign}{oh:02}{om:02}"
        );
        let _ = write!(
            &mut self.iso[..],
            "{year:04}-{mon:02}-{day:02}T{h:02}:{m:02}:{s:02}{sign}{oh:02}:{om:02}"
        );
    }
}

/// Seconds since the epoch, by the wall clock.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A client address as text (IPv6 without brackets, an IPv4-mapped address as IPv4, as nginx
/// prints `$remote_addr`), kept per connection.
#[derive(Clone, Copy)]
pub struct PeerText {
    bytes: [u8; 46],
    len: u8,
}

impl Default for PeerText {
    fn default() -> Self {
        PeerText::UNKNOWN
    }
}

impl PeerText {
    /// `-`, nginx's text for a value it does not have.
    pub const UNKNOWN: PeerText = {
        let mut bytes = [0; 46];
        bytes[0] = b'-';
        PeerText { bytes, len: 1 }
    };

    /// The text of `addr`'s IP.
    pub fn new(addr: SocketAddr) -> PeerText {
        let ip = match addr.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        let mut text = PeerText { bytes: [0; 46], len: 0 };
        let mut cursor = &mut text.bytes[..];
        let _ = write!(cursor, "{ip}");
        let left = cursor.len();
        text.len = (46 - left) as u8;
        text
    }

    /// The text of a `sockaddr_in` or `sockaddr_in6` the kernel wrote (`len` bytes).
    pub fn from_sockaddr(storage: &libc::sockaddr_in6, len: usize) -> PeerText {
        let family = i32::from(storage.sin6_family);
        if family == libc::AF_INET && len >= std::mem::size_of::<libc::sockaddr_in>() {
            // SAFETY: the kernel wrote a sockaddr_in at the start of this sockaddr_in6-sized,
            // suitably aligned storage.
            let v4 =
                unsafe { &*(storage as *const libc::sockaddr_in6).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
            return PeerText::new(SocketAddr::new(IpAddr::V4(ip), 0));
        }
        if family == libc::AF_INET6 && len >= std::mem::size_of::<libc::sockaddr_in6>() {
            let ip = std::net::Ipv6Addr::from(storage.sin6_addr.s6_addr);
            return PeerText::new(SocketAddr::new(IpAddr::V6(ip), 0));
        }
        PeerText::default()
    }

    /// The text.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// One finished response, as a line needs it. The text fields are already escaped for the
/// format (`escape`).
pub struct Line<'a> {
    pub addr: &'a [u8],
    pub request: &'a [u8],
    pub status: u16,
    pub body_bytes: u64,
    pub referer: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
    /// From the request being answered to its last byte sent.
    pub micros: u64,
}

/// Appends one line, with its LF.
pub fn write_line(format: LogFormat, time: &LogTime, line: &Line<'_>, out: &mut Vec<u8>) {
    let mut number = itoa::Buffer::new();
    match format {
        LogFormat::Combined => {
            out.extend_from_slice(line.addr);
            out.extend_from_slice(b" - - [");
            out.extend_from_slice(&time.local);
            out.extend_from_slice(b"] \"");
            out.extend_from_slice(line.request);
            out.extend_from_slice(b"\" ");
            out.extend_from_slice(number.format(line.status).as_bytes());
            out.push(b' ');
            out.extend_from_slice(number.format(line.body_bytes).as_bytes());
            out.extend_from_slice(b" \"");
            out.extend_from_slice(line.referer.unwrap_or(b"-"));
            out.extend_from_slice(b"\" \"");
            out.extend_from_slice(line.user_agent.unwrap_or(b"-"));
            out.extend_from_slice(b"\"\n");
        }
        LogFormat::Json => {
            let quoted = |out: &mut Vec<u8>, value: Option<&[u8]>| match value {
                Some(v) => {
                    out.push(b'"');
                    out.extend_from_slice(v);
                    out.push(b'"');
                }
                None => out.extend_from_slice(b"null"),
            };
            out.extend_from_slice(b"{\"time\":\"");
            out.extend_from_slice(&time.iso);
            out.extend_from_slice(b"\",\"remote_addr\":\"");
            out.extend_from_slice(line.addr);
            out.extend_from_slice(b"\",\"remote_user\":null,\"request\":");
            quoted(out, Some(line.request));
            out.extend_from_slice(b",\"status\":");
            out.extend_from_slice(number.format(line.status).as_bytes());
            out.extend_from_slice(b",\"body_bytes_sent\":");
            out.extend_from_slice(number.format(line.body_bytes).as_bytes());
            out.extend_from_slice(b",\"http_referer\":");
            quoted(out, line.referer);
            out.extend_from_slice(b",\"http_user_agent\":");
            quoted(out, line.user_agent);
            out.extend_from_slice(b",\"request_time\":");
            out.extend_from_slice(number.format(line.micros / 1_000_000).as_bytes());
            out.push(b'.');
            let frac = line.micros % 1_000_000;
            let digits = number.format(frac).as_bytes();
            out.extend(std::iter::repeat_n(b'0', 6 - digits.len()));
            out.extend_from_slice(digits);
            out.extend_from_slice(b"}\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(format: LogFormat, src: &[u8]) -> String {
        let mut out = Vec::new();
        escape(format, src, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn nginx_escaping_matches_ngx_http_log_escape() {
        let c = LogFormat::Combined;
        assert_eq!(escaped(c, b"GET /a%20b HTTP/1.1"), "GET /a%20b HTTP/1.1");
        assert_eq!(escaped(c, b"a\"b\\c"), "a\\x22b\\x5Cc");
        assert_eq!(escaped(c, "а".as_bytes()), "\\xD0\\xB0");
        assert_eq!(escaped(c, b"\t\x01\x7f~ "), "\\x09\\x01\\x7F~ ");
    }

    #[test]
    fn json_escaping_keeps_utf8_and_stays_valid() {
        let j = LogFormat::Json;
        assert_eq!(escaped(j, b"a\"b\\c"), "a\\\"b\\\\c");
        assert_eq!(escaped(j, "а".as_bytes()), "а");
        assert_eq!(escaped(j, b"\xff\x01\n"), "\\u00FF\\u0001\\n");
    }

    #[test]
    fn combined_line_has_nginx_shape() {
        let mut time = LogTime::default();
        time.update(0);
        // The test runs under the machine's zone; only the fixed width is certain.
        let line = Line {
            addr: b"::1",
            request: b"GET / HTTP/1.1",
            status: 200,
            body_bytes: 0,
            referer: None,
            user_agent: Some(b"curl/8"),
            micros: 1,
        };
        let mut out = Vec::new();
        write_line(LogFormat::Combined, &time, &line, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("::1 - - ["), "{text}");
        assert!(text.ends_with("] \"GET / HTTP/1.1\" 200 0 \"-\" \"curl/8\"\n"), "{text}");
        assert_eq!(text.find(']').unwrap() - text.find('[').unwrap() - 1, 26);
    }

    #[test]
    fn json_line_parses() {
        let time = LogTime::default();
        let mut request = Vec::new();
        escape(LogFormat::Json, b"GET /\"\xff HTTP/1.1", &mut request);
        let line = Line {
            addr: b"127.0.0.1",
            request: &request,
            status: 404,
            body_bytes: 12,
            referer: Some(b"x"),
            user_agent: None,
            micros: 1_234_567,
        };
        let mut out = Vec::new();
        write_line(LogFormat::Json, &time, &line, &mut out);
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["status"], 404);
        assert_eq!(value["request"], "GET /\"\u{ff} HTTP/1.1");
        assert_eq!(value["http_user_agent"], serde_json::Value::Null);
        assert_eq!(value["request_time"], 1.234567);
    }

    #[test]
    fn peers_print_as_nginx_does() {
        let v6: SocketAddr = "[::1]:5".parse().unwrap();
        assert_eq!(PeerText::new(v6).as_bytes(), b"::1");
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:5".parse().unwrap();
        assert_eq!(PeerText::new(mapped).as_bytes(), b"10.0.0.1");
        let long: SocketAddr = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe]:1".parse().unwrap();
        assert_eq!(PeerText::new(long).as_bytes().len(), 39);
    }
}
