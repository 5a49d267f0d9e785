//! The `Date` header value, formatted at most once per second per worker (hyper's date.rs
//! idea): formatting an IMF-fixdate per request would cost more than parsing the request.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// Length of an IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
pub const DATE_BYTES: usize = 29;

/// A cached `Date` value and the second it was formatted for.
pub struct DateCache {
    second: u64,
    text: [u8; DATE_BYTES],
}

impl DateCache {
    /// A cache holding the current time.
    pub fn new() -> DateCache {
        let mut cache = DateCache { second: u64::MAX, text: [b' '; DATE_BYTES] };
        cache.refresh(SystemTime::now());
        cache
    }

    /// Reformats if `now` is in a later second than the cached value.
    pub fn refresh(&mut self, now: SystemTime) {
        let second = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        if second == self.second {
            return;
        }
        self.second = second;
        // Formatted through `Write` into the fixed array: no allocation, even once a second.
        let date = httpdate::HttpDate::from(UNIX_EPOCH + std::time::Duration::from_secs(second));
        let mut text = [b' '; DATE_BYTES];
        let mut out = &mut text[..];
        if write!(out, "{date}").is_ok() && out.is_empty() {
            self.text = text;
        }
    }

    /// The second the value is for, in seconds since the Unix epoch.
    pub fn unix_secs(&self) -> u64 {
        self.second
    }

    /// The formatted value, without the header name.
    pub fn bytes(&self) -> &[u8; DATE_BYTES] {
        &self.text
    }
}

impl Default for DateCache {
    fn default() -> Self {
        DateCache::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_imf_fixdate_once_per_second() {
        let mut cache = DateCache::new();
        cache.refresh(UNIX_EPOCH + std::time::Duration::from_secs(784_111_777));
        assert_eq!(cache.bytes(), b"Sun, 06 Nov 1994 08:49:37 GMT");
        cache.refresh(UNIX_EPOCH + std::time::Duration::from_millis(784_111_777_900));
        assert_eq!(cache.bytes(), b"Sun, 06 Nov 1994 08:49:37 GMT");
        cache.refresh(UNIX_EPOCH + std::time::Duration::from_secs(784_111_778));
        assert_eq!(cache.bytes(), b"Sun, 06 Nov 1994 08:49:38 GMT");
    }
}
