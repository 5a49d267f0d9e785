//! Request path to a key in the file snapshot. The whole traversal policy lives here:
//! percent-decoding happens exactly once, `.` and `..` segments are applied lexically and can
//! never climb above the root, and NUL bytes are refused. Symlinks are the scan's concern
//! (`files::scan`): only files inside the root are ever in the snapshot.

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

/// Room for the decoded path: decoding never makes a path longer.
pub type PathBuffer = [u8; REQUEST_TARGET_BYTES_MAX];

/// Decodes and normalizes `path` (which starts with `/`) into `out`.
pub fn resolve(path: &[u8], out: &mut PathBuffer) -> Result<Resolved, Invalid> {
    let mut decoded = [0u8; REQUEST_TARGET_BYTES_MAX];
    let decoded_len = percent_decode(path, &mut decoded)?;
    let decoded = &decoded[..decoded_len];
    if decoded.first() != Some(&b'/') || decoded.contains(&0) {
        return Err(Invalid::BadPath);
    }
    let mut len = 0usize;
    let mut trailing_slash = false;
    for segment in decoded[1..].split(|&b| b == b'/') {
        trailing_slash = false;
        match segment {
            b"" | b"." => trailing_slash = true,
            b".." => {
                if len == 0 {
                    return Err(Invalid::BadPath); // an attempt to leave the root
                }
                pop_segment(out, &mut len);
                trailing_slash = true;
            }
            name => {
                if len > 0 {
                    out[len] = b'/';
                    len += 1;
                }
                out[len..len + name.len()].copy_from_slice(name);
                len += name.len();
            }
        }
    }
    Ok(Resolved { len, trailing_slash })
}

/// Removes the last segment of `out[..len]`.
fn pop_segment(out: &PathBuffer, len: &mut usize) {
    let last_slash = out[..*len].iter().rposition(|&b| b == b'/');
    *len = last_slash.unwrap_or(0);
}

/// Decodes `%XX` escapes once. `+` stays `+` (it is only a space in query strings).
fn percent_decode(input: &[u8], out: &mut PathBuffer) -> Result<usize, Invalid> {
    let mut len = 0;
    let mut i = 0;
    while i < input.len() {
        let byte = match input[i] {
            b'%' => {
                let hi = input.get(i + 1).and_then(|&b| hex_value(b));
                let lo = input.get(i + 2).and_then(|&b| hex_value(b));
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(Invalid::BadPath);
                };
                i += 3;
                hi << 4 | lo
            }
            b => {
                i += 1;
                b
            }
        };
        *out.get_mut(len).ok_or(Invalid::BadPath)? = byte;
        len += 1;
    }
    Ok(len)
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
