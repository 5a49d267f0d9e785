//! Request bytes (built once per path) and an incremental response parser that works in
//! place on the connection's receive buffer: no allocation per response.

/// Builds the request bytes for `path`.
pub fn build_request(host: &str, path: &str, headers: &[String]) -> Vec<u8> {
    let mut out = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
    for header in headers {
        out.push_str(header);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// Most header fields read from a response.
const RESPONSE_HEADERS_MAX: usize = 64;

/// A finished response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    /// Status code.
    pub status: u16,
    /// Body bytes.
    pub body_bytes: u64,
    /// Head plus body (plus chunk framing) bytes.
    pub wire_bytes: u64,
    /// The server said `Connection: close`.
    pub close: bool,
}

/// What `Parser::feed` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The input was used up without finishing a response.
    NeedMore,
    /// A response finished after `consumed` bytes of this input.
    Done { consumed: usize, response: Finished },
    /// The bytes are not HTTP/1.1.
    Invalid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Body { left: u64 },
    ChunkSize,
    ChunkData { left: u64 },
    ChunkDataEnd,
    Trailer,
}

/// Parses one response at a time from successive slices of input.
#[derive(Debug, Clone)]
pub struct Parser {
    state: State,
    status: u16,
    close: bool,
    body_bytes: u64,
    wire_bytes: u64,
    /// Digits of a chunk-size line split across reads.
    line: [u8; 32],
    line_len: usize,
}

impl Default for Parser {
    fn default() -> Self {
        Parser {
            state: State::Head,
            status: 0,
            close: false,
            body_bytes: 0,
            wire_bytes: 0,
            line: [0; 32],
            line_len: 0,
        }
    }
}

impl Parser {
    /// Whether the parser is between responses.
    pub fn is_idle(&self) -> bool {
        self.state == State::Head
    }

    /// Body bytes of the current response received so far (for body verification).
    pub fn body_offset(&self) -> u64 {
        self.body_bytes
    }

    /// Bytes left of a Content-Length body, when the parser is inside one.
    pub fn body_left(&self) -> Option<u64> {
        match self.state {
            State::Body { left } => Some(left),
            _ => None,
        }
    }

    /// Accounts for `n` body bytes the caller consumed without looking at them (discarded in
    /// the kernel); `n` is at most `body_left()`. Returns the response when that ended it.
    pub fn skip_body(&mut self, n: u64) -> Option<Finished> {
        let State::Body { left } = self.state else { return None };
        debug_assert!(n <= left, "skipped past the body");
        let n = n.min(left);
        self.body_bytes += n;
        self.wire_bytes += n;
        if n == left {
            self.state = State::Head;
            return Some(self.finish());
        }
        self.state = State::Body { left: left - n };
        None
    }

    /// Feeds `input`; the head must be whole in `input` to be parsed (the caller keeps
    /// unconsumed bytes and feeds them again with more). `on_body` sees every body slice.
    pub fn feed(&mut self, input: &[u8], mut on_body: impl FnMut(u64, &[u8])) -> Event {
        let mut pos = 0;
        loop {
            match self.state {
                State::Head => {
                    if pos > 0 {
                        return Event::NeedMore; // the caller re-feeds from here
                    }
                    match self.parse_head(input) {
                        Ok(Some(n)) => pos = n,
                        Ok(None) => return Event::NeedMore,
                        Err(()) => return Event::Invalid,
                    }
                    if let State::Head = self.state {
                        return Event::Done { consumed: pos, response: self.finish() };
                    }
                }
                State::Body { left } => {
                    let n = left.min((input.len() - pos) as u64) as usize;
                    on_body(self.body_bytes, &input[pos..pos + n]);
                    self.body_bytes += n as u64;
                    self.wire_bytes += n as u64;
                    pos += n;
                    if left == n as u64 {
                        self.state = State::Head;
                        return Event::Done { consumed: pos, response: self.finish() };
                    }
                    self.state = State::Body { left: left - n as u64 };
                    return Event::NeedMore;
                }
                State::ChunkSize | State::Trailer | State::ChunkDataEnd => {
                    let Some(nl) = input[pos..].iter().position(|&b| b == b'\n') else {
                        if !self.keep_line(&input[pos..]) {
                            return Event::Invalid;
                        }
                        self.wire_bytes += (input.len() - pos) as u64;
                        return Event::NeedMore;
                    };
                    if !self.keep_line(&input[pos..pos + nl]) {
                        return Event::Invalid;
                    }
                    self.wire_bytes += nl as u64 + 1;
                    pos += nl + 1;
                    let line_len = self.line_len;
                    self.line_len = 0;
                    let line = trim_cr(&self.line[..line_len]);
                    match self.state {
                        State::ChunkSize => {
                            let digits = line.split(|&b| b == b';').next().unwrap_or(b"");
                            let Some(size) = parse_hex(digits) else { return Event::Invalid };
                            self.state = if size == 0 {
                                State::Trailer
                            } else {
                                State::ChunkData { left: size }
                            };
                        }
                        State::ChunkDataEnd if line.is_empty() => self.state = State::ChunkSize,
                        State::ChunkDataEnd => return Event::Invalid,
                        _ if line.is_empty() => {
                            self.state = State::Head;
                            return Event::Done { consumed: pos, response: self.finish() };
                        }
                        _ => {} // a trailer field: ignored
                    }
                }
                State::ChunkData { left } => {
                    let n = left.min((input.len() - pos) as u64) as usize;
                    on_body(self.body_bytes, &input[pos..pos + n]);
                    self.body_bytes += n as u64;
                    self.wire_bytes += n as u64;
                    pos += n;
                    if left > n as u64 {
                        self.state = State::ChunkData { left: left - n as u64 };
                        return Event::NeedMore;
                    }
                    self.state = State::ChunkDataEnd;
                }
            }
        }
    }

    /// Keeps a partial line (chunk sizes and trailers are short; long ones are invalid).
    fn keep_line(&mut self, part: &[u8]) -> bool {
        if self.state == State::Trailer {
            return true; // trailer contents are not kept
        }
        let end = self.line_len + part.len();
        if end > self.line.len() {
            return false;
        }
        self.line[self.line_len..end].copy_from_slice(part);
        self.line_len = end;
        true
    }

    /// Parses a head at the start of `input`: `Ok(Some(len))` when complete.
    fn parse_head(&mut self, input: &[u8]) -> Result<Option<usize>, ()> {
        let mut headers = [httparse::EMPTY_HEADER; RESPONSE_HEADERS_MAX];
        let mut response = httparse::Response::new(&mut headers);
        let len = match response.parse(input) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(()),
        };
        let status = response.code.ok_or(())?;
        let mut content_length = None;
        let mut chunked = false;
        let mut close = response.version == Some(0);
        for h in response.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                let text = std::str::from_utf8(h.value).map_err(|_| ())?;
                content_length = Some(text.trim().parse::<u64>().map_err(|_| ())?);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = h.value.windows(7).any(|w| w.eq_ignore_ascii_case(b"chunked"));
            } else if h.name.eq_ignore_ascii_case("connection") {
                let v = h.value;
                if v.windows(5).any(|w| w.eq_ignore_ascii_case(b"close")) {
                    close = true;
                } else if v.windows(10).any(|w| w.eq_ignore_ascii_case(b"keep-alive")) {
                    close = false;
                }
            }
        }
        self.status = status;
        self.close = close;
        self.body_bytes = 0;
        self.wire_bytes = len as u64;
        let bodyless = status / 100 == 1 || status == 204 || status == 304;
        self.state = if bodyless {
            State::Head
        } else if chunked {
            State::ChunkSize
        } else {
            match content_length {
                Some(0) => State::Head,
                Some(n) => State::Body { left: n },
                None => return Err(()), // read-until-close bodies cannot be pipelined
            }
        };
        Ok(Some(len))
    }

    fn finish(&mut self) -> Finished {
        Finished {
            status: self.status,
            body_bytes: self.body_bytes,
            wire_bytes: self.wire_bytes,
            close: self.close,
        }
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn parse_hex(digits: &[u8]) -> Option<u64> {
    let mut value = 0u64;
    let mut count = 0;
    for &d in digits.iter().filter(|b| **b != b' ' && **b != b'\t') {
        count += 1;
        if count > 15 {
            return None;
        }
        value = value * 16 + u64::from((d as char).to_digit(16)?);
    }
    (count > 0).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(parser: &mut Parser, input: &[u8]) -> Vec<Finished> {
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            match parser.feed(&input[pos..], |_, _| {}) {
                Event::Done { consumed, response } => {
                    pos += consumed;
                    out.push(response);
                }
                Event::NeedMore => return out,
                Event::Invalid => panic!("invalid at {pos}"),
            }
        }
    }

    #[test]
    fn content_length_and_pipelined() {
        let mut p = Parser::default();
        let two = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        let r = all(&mut p, two);
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].status, r[0].body_bytes), (200, 3));
        assert_eq!(r[0].wire_bytes, 41);
        assert_eq!(r[1].status, 404);
    }

    #[test]
    fn skipped_body_bytes_count_like_fed_ones() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab";
        let mut fed = Parser::default();
        assert_eq!(fed.feed(head, |_, _| {}), Event::NeedMore);
        let Event::Done { response: whole, .. } = fed.feed(b"cdefghij", |_, _| {}) else {
            panic!("the fed body should finish the response");
        };
        let mut skipped = Parser::default();
        assert_eq!(skipped.feed(head, |_, _| {}), Event::NeedMore);
        assert_eq!(skipped.body_left(), Some(8));
        assert_eq!(skipped.skip_body(5), None);
        assert_eq!(skipped.body_left(), Some(3));
        assert_eq!(skipped.skip_body(3), Some(whole));
        assert!(skipped.is_idle());
        assert_eq!(skipped.body_left(), None);
    }

    #[test]
    fn chunked_bodies_across_reads() {
        let body = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nT: v\r\n\r\n";
        for split in 1..body.len() {
            let mut p = Parser::default();
            let mut done = None;
            let mut buf = Vec::new();
            for part in [&body[..split], &body[split..]] {
                buf.extend_from_slice(part);
                match p.feed(&buf, |_, _| {}) {
                    Event::Done { consumed, response } => {
                        done = Some(response);
                        buf.drain(..consumed);
                    }
                    Event::NeedMore => {
                        if !p.is_idle() {
                            buf.clear(); // body bytes were consumed
                        }
                    }
                    Event::Invalid => panic!("invalid at split {split}"),
                }
            }
            let r = done.unwrap_or_else(|| panic!("not done at split {split}"));
            assert_eq!(r.body_bytes, 11, "split {split}");
        }
    }

    #[test]
    fn garbage_is_invalid() {
        assert_eq!(Parser::default().feed(b"NOT HTTP\r\n\r\n", |_, _| {}), Event::Invalid);
    }
}
