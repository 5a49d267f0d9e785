//! Request path to a key in the file cache. The lexical traversal policy lives here:
//! percent-decoding happens exactly once, `.` and `..` segments are applied lexically and can
//! never climb above the root, and NUL bytes are refused. Symlinks are the cache's concern
//! (`files::cache`): the kernel opens every key beneath the root (RESOLVE_BENEATH).

use crate::limits::REQUEST_TARGET_BYTES_MAX;

/// A resolved path, relative to the root, with no leading slash (`""` is the root itself).
#[derive(Debug, PartialEq, Eq)]
pub struct Resolved {
    /// Bytes of the relative path in the caller's buffer.
    pub len: usize,
    /// The request path ended in `/` (asks for a directory's index).
    pub trailing_slash: bool,
}

/// Why a path cannot name anything under the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// A bad percent escape, a NUL byte, or `..` above the root: 400.
    BadPath,
}

/// Room for the longest decoded path: decoding never makes a path longer.
pub type PathBuffer = [u8; REQUEST_TARGET_BYTES_MAX];

/// Decodes and normalizes `path` (which starts with `/`) into `out`, in one pass: bytes are
/// percent-decoded as they are copied, and each segment is judged when its `/` arrives. A
/// decoded `%2F` separates segments like `/` does (it can still never climb out).
pub fn resolve(path: &[u8], out: &mut [u8]) -> Result<Resolved, Invalid> {
    if path.first() != Some(&b'/') {
        return Err(Invalid::BadPath);
    }
    let mut len = 0usize; // out[..len]: finished segments, each followed by '/', then the current one
    let mut segment_start = 0usize;
    let mut trailing_slash;
    let mut i = 1;
    loop {
        let byte = match path.get(i) {
            None => None,
            Some(b'%') => {
                let hi = path.get(i + 1).and_then(|&b| hex_value(b));
                let lo = path.get(i + 2).and_then(|&b| hex_value(b));
                let (Some(hi), Some(lo)) = (hi, lo) else { return Err(Invalid::BadPath) };
                i += 3;
                Some(hi << 4 | lo)
            }
            Some(&b) => {
                i += 1;
                Some(b)
            }
        };
        match byte {
            Some(0) => return Err(Invalid::BadPath),
            Some(b'/') | None => {
                match &out[segment_start..len] {
                    b"" | b"." => {
                        len = segment_start;
                        trailing_slash = true;
                    }
                    b".." => {
                        if segment_start == 0 {
                            return Err(Invalid::BadPath); // an attempt to leave the root
                        }
                        let previous_end = segment_start - 1; // the '/' ending the previous one
                        let previous_start = out[..previous_end]
                            .iter()
                            .rposition(|&b| b == b'/')
                            .map_or(0, |p| p + 1);
                        len = previous_start;
                        segment_start = previous_start;
                        trailing_slash = true;
                    }
                    _ if byte.is_some() => {
                        *out.get_mut(len).ok_or(Invalid::BadPath)? = b'/';
                        len += 1;
                        segment_start = len;
                        trailing_slash = true;
                    }
                    _ => trailing_slash = false,
                }
                if byte.is_none() {
                    break;
                }
            }
            Some(b) => {
                *out.get_mut(len).ok_or(Invalid::BadPath)? = b;
                len += 1;
            }
        }
    }
    if len > 0 && out[len - 1] == b'/' {
        len -= 1; // the last segment was empty, "." or "..": drop its separator
    }
    Ok(Resolved { len, trailing_slash })
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(path: &str) -> Result<(String, bool), Invalid> {
        let mut out = [0u8; REQUEST_TARGET_BYTES_MAX];
        let r = resolve(path.as_bytes(), &mut out)?;
        let mut small = [0u8; 64];
        if path.len() < small.len() {
            assert_eq!(resolve(path.as_bytes(), &mut small), Ok(Resolved { ..r }), "{path}");
        }
        Ok((String::from_utf8_lossy(&out[..r.len]).into_owned(), r.trailing_slash))
    }

    #[test]
    fn plain_paths() {
        assert_eq!(check("/"), Ok(("".into(), true)));
        assert_eq!(check("/index.html"), Ok(("index.html".into(), false)));
        assert_eq!(check("/a/b/"), Ok(("a/b".into(), true)));
        assert_eq!(check("//a///b"), Ok(("a/b".into(), false)));
        assert_eq!(check("/a/./b"), Ok(("a/b".into(), false)));
    }

    #[test]
    fn dot_dot_cannot_climb_out() {
        assert_eq!(check("/a/../b"), Ok(("b".into(), false)));
        assert_eq!(check("/a/b/.."), Ok(("a".into(), true)));
        assert_eq!(check("/.."), Err(Invalid::BadPath));
        assert_eq!(check("/../etc/passwd"), Err(Invalid::BadPath));
        assert_eq!(check("/a/../../etc/passwd"), Err(Invalid::BadPath));
        assert_eq!(check("/%2e%2e/etc/passwd"), Err(Invalid::BadPath));
        assert_eq!(check("/a/%2E%2E/%2e%2e/x"), Err(Invalid::BadPath));
    }

    #[test]
    fn decoding_happens_once() {
        // %252e decodes to the literal text "%2e", a file name, not a dot.
        assert_eq!(check("/%252e%252e/etc/passwd"), Ok(("%2e%2e/etc/passwd".into(), false)));
        assert_eq!(check("/a%20b"), Ok(("a b".into(), false)));
        // Backslash is an ordinary byte in a Linux file name.
        assert_eq!(check("/..\\..\\etc\\passwd"), Ok(("..\\..\\etc\\passwd".into(), false)));
    }

    #[test]
    fn bad_escapes_and_nul_are_refused() {
        assert_eq!(check("/a%zz"), Err(Invalid::BadPath));
        assert_eq!(check("/a%2"), Err(Invalid::BadPath));
        assert_eq!(check("/a%00.html"), Err(Invalid::BadPath));
        assert_eq!(check("/%2fetc"), Ok(("etc".into(), false)));
    }
}
