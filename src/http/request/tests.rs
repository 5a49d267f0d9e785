use super::*;

fn complete(input: &[u8]) -> Request<'_> {
    match parse(input, &ParseLimits::default()) {
        Parsed::Complete(r) => r,
        other => panic!(
            "expected a complete request from {:?}, got {other:?}",
            String::from_utf8_lossy(input)
        ),
    }
}

fn reject(input: &[u8]) -> Reject {
    match parse(input, &ParseLimits::default()) {
        Parsed::Reject(r) => r,
        other => {
            panic!("expected a rejection of {:?}, got {other:?}", String::from_utf8_lossy(input))
        }
    }
}

#[test]
fn simple_get_keeps_alive_on_1_1() {
    let r = complete(b"GET /index.html?x=1 HTTP/1.1\r\nHost: a\r\n\r\nGET");
    assert_eq!(r.method, Method::Get);
    assert_eq!(r.path, b"/index.html");
    assert_eq!(r.version, Version::Http11);
    assert!(r.keep_alive);
    assert_eq!(r.head_len, 41);
}

#[test]
fn connection_header_decides_keep_alive() {
    assert!(!complete(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").keep_alive);
    assert!(!complete(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
    assert!(complete(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
    assert!(
        !complete(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\n\r\n").keep_alive
    );
}

#[test]
fn partial_heads_wait_for_more() {
    assert!(matches!(parse_default(b""), Parsed::Partial));
    assert!(matches!(parse_default(b"GET / HT"), Parsed::Partial));
    assert!(matches!(parse_default(b"GET / HTTP/1.1\r\nHost: a\r\n"), Parsed::Partial));
}

#[test]
fn malformed_heads_map_to_one_status_each() {
    assert_eq!(reject(b"GET /\r\n\r\n"), Reject::BadRequest); // HTTP/0.9
    assert_eq!(reject(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"), Reject::VersionNotSupported);
    assert_eq!(reject(b"GET / HTTP/1.1\r\n\r\n"), Reject::BadRequest); // no Host
    assert_eq!(reject(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), Reject::BadRequest);
    assert_eq!(reject(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"), Reject::BadRequest);
    assert_eq!(reject(b"GET / HTTP/1.1\r\nHost a\r\n\r\n"), Reject::BadRequest);
    assert_eq!(
        reject(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
        Reject::BadRequest
    );
    assert_eq!(
        reject(
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
        ),
        Reject::BadRequest
    );
    assert_eq!(
        reject(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n"),
        Reject::BadRequest
    );
    assert_eq!(reject(b"GET relative HTTP/1.1\r\nHost: a\r\n\r\n"), Reject::BadRequest);
}

#[test]
fn oversized_heads_are_refused() {
    let mut long_target = b"GET /".to_vec();
    long_target.extend(std::iter::repeat_n(b'a', REQUEST_TARGET_BYTES_MAX + 100));
    assert_eq!(reject(&long_target), Reject::UriTooLong);
    let mut many = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..HEADER_COUNT_MAX + 1 {
        many.extend(format!("X-{i}: y\r\n").as_bytes());
    }
    many.extend(b"\r\n");
    assert_eq!(reject(&many), Reject::HeadTooLarge);
    let mut big = b"GET / HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', REQUEST_HEAD_BYTES_MAX));
    assert_eq!(reject(&big), Reject::HeadTooLarge);
}

#[test]
fn absolute_form_is_reduced_to_its_path() {
    assert_eq!(complete(b"GET http://h/a/b?q HTTP/1.1\r\nHost: h\r\n\r\n").path, b"/a/b");
    assert_eq!(complete(b"GET http://h HTTP/1.1\r\nHost: h\r\n\r\n").path, b"/");
}

#[test]
fn methods_are_classified() {
    assert_eq!(complete(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n").method, Method::Head);
    assert_eq!(complete(b"POST / HTTP/1.1\r\nHost: a\r\n\r\n").method, Method::NotAllowed);
    assert_eq!(complete(b"BREW / HTTP/1.1\r\nHost: a\r\n\r\n").method, Method::Unknown);
}

#[test]
fn content_length_is_read_for_skipping() {
    let r = complete(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(r.content_length, 5);
}

fn parse_default(input: &[u8]) -> Parsed<'_> {
    parse(input, &ParseLimits::default())
}

#[test]
fn limits_are_tunable_below_the_maxima() {
    let limits = ParseLimits { head_bytes_max: 64, header_count_max: 2 };
    let three = b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n";
    assert!(matches!(parse(three, &limits), Parsed::Reject(Reject::HeadTooLarge)));
    let long =
        b"GET / HTTP/1.1\r\nHost: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    assert!(matches!(parse(long, &limits), Parsed::Reject(Reject::HeadTooLarge)));
    assert!(matches!(parse(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", &limits), Parsed::Complete(_)));
}

#[test]
fn rfc9112_strictness() {
    let bad: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", // obs-fold
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",    // bare CR in a value
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n",    // NUL
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n",  // control byte
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n",  // DEL
        b"GET / HTTP/1.1\r\nHost: a\x1b\r\n\r\n",           // control byte in Host
        b"GET / HTTP/1.1\r\nHost: a\r\nX\t: a\r\n\r\n",     // whitespace before colon
        b"GET / HTTP/1.1\r\nHost: a\r\n: empty name\r\n\r\n", // no field name
        b"GET /\0 HTTP/1.1\r\nHost: a\r\n\r\n",             // NUL in the target
        b"GET / HTTP/1.1\rHost: a\r\n\r\n",                 // bare CR ending a line
        b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",              // two spaces
        b"G\x01T / HTTP/1.1\r\nHost: a\r\n\r\n",            // control byte in the method
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
    ];
    for input in bad {
        assert_eq!(reject(input), Reject::BadRequest, "{:?}", String::from_utf8_lossy(input));
    }
    assert_eq!(reject(b"GET / HTTP/1.2\r\nHost: a\r\n\r\n"), Reject::VersionNotSupported);
    assert_eq!(reject(b"GET / HTTP/3.0\r\nHost: a\r\n\r\n"), Reject::VersionNotSupported);
}
