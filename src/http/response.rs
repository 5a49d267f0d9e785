//! Status codes and the response heads ringserve writes. Heads are assembled from precomputed
//! pieces (per-file fields, the cached Date) by plain copies into a caller's buffer.

use super::date::DATE_BYTES;

/// The statuses a static server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    PartialContent,
    MovedPermanently,
    NotModified,
    BadRequest,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    PreconditionFailed,
    UriTooLong,
    RangeNotSatisfiable,
    HeaderFieldsTooLarge,
    InternalServerError,
    NotImplemented,
    ServiceUnavailable,
    VersionNotSupported,
}

impl Status {
    /// The status line, including CRLF.
    pub fn line(self) -> &'static [u8] {
        match self {
            Status::Ok => b"HTTP/1.1 200 OK\r\n",
            Status::PartialContent => b"HTTP/1.1 206 Partial Content\r\n",
            Status::MovedPermanently => b"HTTP/1.1 301 Moved Permanently\r\n",
            Status::NotModified => b"HTTP/1.1 304 Not Modified\r\n",
            Status::BadRequest => b"HTTP/1.1 400 Bad Request\r\n",
            Status::Forbidden => b"HTTP/1.1 403 Forbidden\r\n",
            Status::NotFound => b"HTTP/1.1 404 Not Found\r\n",
            Status::MethodNotAllowed => b"HTTP/1.1 405 Method Not Allowed\r\n",
            Status::RequestTimeout => b"HTTP/1.1 408 Request Timeout\r\n",
            Status::PreconditionFailed => b"HTTP/1.1 412 Precondition Failed\r\n",
            Status::UriTooLong => b"HTTP/1.1 414 URI Too Long\r\n",
            Status::RangeNotSatisfiable => b"HTTP/1.1 416 Range Not Satisfiable\r\n",
            Status::HeaderFieldsTooLarge => b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
            Status::InternalServerError => b"HTTP/1.1 500 Internal Server Error\r\n",
            Status::NotImplemented => b"HTTP/1.1 501 Not Implemented\r\n",
            Status::ServiceUnavailable => b"HTTP/1.1 503 Service Unavailable\r\n",
            Status::VersionNotSupported => b"HTTP/1.1 505 HTTP Version Not Supported\r\n",
        }
    }

    /// The numeric code.
    pub fn code(self) -> u16 {
        let line = self.line();
        line[9..12].iter().fold(0u16, |acc, &d| acc * 10 + u16::from(d - b'0'))
    }

    /// A small HTML body for error statuses, so browsers show something readable.
    pub fn error_body(self) -> &'static [u8] {
        match self {
            Status::BadRequest => body!("400 Bad Request"),
            Status::Forbidden => body!("403 Forbidden"),
            Status::NotFound => body!("404 Not Found"),
            Status::MethodNotAllowed => body!("405 Method Not Allowed"),
            Status::RequestTimeout => body!("408 Request Timeout"),
            Status::PreconditionFailed => body!("412 Precondition Failed"),
            Status::UriTooLong => body!("414 URI Too Long"),
            Status::RangeNotSatisfiable => body!("416 Range Not Satisfiable"),
            Status::HeaderFieldsTooLarge => body!("431 Request Header Fields Too Large"),
            Status::InternalServerError => body!("500 Internal Server Error"),
            Status::NotImplemented => body!("501 Not Implemented"),
            Status::ServiceUnavailable => body!("503 Service Unavailable"),
            Status::VersionNotSupported => body!("505 HTTP Version Not Supported"),
            Status::MovedPermanently => body!("301 Moved Permanently"),
            Status::Ok | Status::PartialContent | Status::NotModified => b"",
        }
    }
}

macro_rules! body {
    ($text:literal) => {
        concat!(
            "<!DOCTYPE html>\n<html><head><title>",
            $text,
            "</title></head><body><h1>",
            $text,
            "</h1><hr>ringserve</body></html>\n"
        )
        .as_bytes()
    };
}
use body;

/// The `Server` header line every response carries.
pub const SERVER_LINE: &[u8] = b"Server: ringserve\r\n";

/// Writes response heads into a fixed slice, refusing (not truncating) when out of room.
pub struct HeadWriter<'a> {
    out: &'a mut [u8],
    len: usize,
    /// The status `start` wrote (0 before), for the access log and counters.
    status: u16,
}

/// The head did not fit in the space left; nothing was committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

impl<'a> HeadWriter<'a> {
    /// A writer over `out`, starting empty.
    pub fn new(out: &'a mut [u8]) -> HeadWriter<'a> {
        HeadWriter { out, len: 0, status: 0 }
    }

    /// Appends `bytes`.
    pub fn put(&mut self, bytes: &[u8]) -> Result<(), Overflow> {
        let end = self.len + bytes.len();
        let dst = self.out.get_mut(self.len..end).ok_or(Overflow)?;
        dst.copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    /// Appends a decimal number.
    pub fn put_u64(&mut self, n: u64) -> Result<(), Overflow> {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut n = n;
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.put(&digits[i..])
    }

    /// Status line, Server and Date: the start of every head.
    pub fn start(&mut self, status: Status, date: &[u8; DATE_BYTES]) -> Result<(), Overflow> {
        self.status = status.code();
        self.put(status.line())?;
        self.put(SERVER_LINE)?;
        self.put(b"Date: ")?;
        self.put(date)?;
        self.put(b"\r\n")
    }

    /// The `Connection` line when one is needed, then the blank line ending the head.
    pub fn finish(&mut self, keep_alive: bool, http10: bool) -> Result<(), Overflow> {
        if !keep_alive {
            self.put(b"Connection: close\r\n")?;
        } else if http10 {
            self.put(b"Connection: keep-alive\r\n")?;
        }
        self.put(b"\r\n")
    }

    /// The status code `start` wrote (0 if it was not called).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_lines() {
        assert_eq!(Status::Ok.code(), 200);
        assert_eq!(Status::HeaderFieldsTooLarge.code(), 431);
        assert_eq!(Status::VersionNotSupported.code(), 505);
    }

    #[test]
    fn writer_refuses_instead_of_truncating() {
        let mut buf = [0u8; 8];
        let mut w = HeadWriter::new(&mut buf);
        assert!(w.put(b"12345").is_ok());
        assert_eq!(w.put(b"6789"), Err(Overflow));
        assert_eq!(w.len(), 5);
        assert!(w.put_u64(987).is_ok());
        assert_eq!(&buf, b"12345987");
    }
}
