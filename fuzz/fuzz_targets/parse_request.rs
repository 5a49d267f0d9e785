//! The request parser on arbitrary bytes: never panics, never claims more bytes than it got.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringserve::http::{parse, ParseLimits, Parsed};

fuzz_target!(|data: &[u8]| {
    if let Parsed::Complete(request) = parse(data, &ParseLimits::default()) {
        assert!(request.head_len <= data.len());
        assert!(request.path.is_empty() || request.path.starts_with(b"/") || request.method != ringserve::http::Method::Get);
    }
});
