//! The files served. `cache` finds them on demand and keeps what serving them needs; this
//! module is one file version (`Entry`): its bytes ready (small files read into memory, larger
//! ones mapped) and its response-header fields precomputed. `Body` is how a response refers to
//! those bytes. `resolve` turns a request path into a cache key; `mime` picks Content-Type.

pub mod cache;
pub mod fill;
pub mod listing;
pub mod mime;
pub mod resolve;
mod watch;

use std::fs::File;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use memmap2::Mmap;

pub use cache::{Begin, CacheCounters, CacheLimits, FileCache, Lookup};
pub use fill::{Fill, Request};
pub use watch::EVENTS_BUFFER_BYTES;

/// Files up to this size are read into memory instead of mapped. Only these bytes, which the
/// server owns, are ever read in user space (copied behind a response head). Larger files are
/// mapped and their bytes are only ever read by the kernel (a sendmsg iovec, or sendfile from
/// the open file), where a page truncated away makes the send fail with EFAULT and that connection
/// close, never the process die of SIGBUS. `Body` makes the difference a type: a mapped slice has
/// no way to become a `&[u8]`.
pub const COPIED_FILE_BYTES_MAX: u64 = 16 * 1024;

/// A file's bytes.
enum Bytes {
    Empty,
    Copied(Box<[u8]>),
    /// The mapping, and the open file, which the engines send large bodies from with sendfile
    /// (zero-copy).
    Mapped(Mmap, File),
}

/// Identity of a file version: if none of these changed, a cached entry is still right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    dev: u64,
    len: u64,
    mtime_nanos: i128,
    /// Caught even when a rewrite restores size and mtime (`cp -p`, `rsync --inplace -t`).
    ctime_nanos: i128,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            ino: meta.ino(),
            dev: meta.dev(),
            len: meta.len(),
            mtime_nanos: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_nanos: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        }
    }
}

/// One file version: its bytes and the header fields of its responses.
pub struct Entry {
    bytes: Bytes,
    stamp: Stamp,
    /// Size in bytes.
    pub len: u64,
    /// Modification time, whole seconds since the epoch (HTTP dates have no finer unit).
    pub mtime_secs: u64,
    /// Strong validator: `"inode-size-mtime"` in hex.
    pub etag: Box<str>,
    /// Complete header fields of a 200: Content-Type, Content-Length, then `meta`.
    pub fields_200: Box<[u8]>,
    /// Content-Type line.
    pub type_line: Box<[u8]>,
    /// Last-Modified, ETag, Accept-Ranges, and for files with precompressed variants
    /// Content-Encoding (variants only) and Vary lines.
    pub meta: Box<[u8]>,
    /// `FILE.br`, if it exists beside the file.
    pub br: Option<Arc<Entry>>,
    /// `FILE.gz`, if it exists beside the file.
    pub gzip: Option<Arc<Entry>>,
    /// For a directory listing (this entry is its HTML): the same listing as JSON.
    pub json: Option<Arc<Entry>>,
}

impl Entry {
    /// Builds the entry for `bytes`; `encoding` is set for precompressed variants and `vary`
    /// when the file has variants (or is one); `extra` holds the site's header lines for this
    /// path (`Site::file_fields`), sent on every 200, 206 and 304 of it.
    fn build(
        bytes: Bytes,
        stamp: Stamp,
        content_type: &str,
        encoding: Option<&str>,
        vary: bool,
        extra: &[u8],
    ) -> Entry {
        let mtime_secs = u64::try_from(stamp.mtime_nanos.div_euclid(1_000_000_000)).unwrap_or(0);
        let etag: Box<str> = format!("\"{:x}-{:x}-{:x}\"", stamp.ino, stamp.len, mtime_secs).into();
        let type_line = format!("Content-Type: {content_type}\r\n").into_bytes().into_boxed_slice();
        let mut meta = format!(
            "Last-Modified: {}\r\nETag: {etag}\r\nAccept-Ranges: bytes\r\n",
            httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(mtime_secs))
        );
        if let Some(encoding) = encoding {
            meta.push_str(&format!("Content-Encoding: {encoding}\r\n"));
        }
        if vary {
            meta.push_str("Vary: Accept-Encoding\r\n");
        }
        let mut meta = meta.into_bytes();
        meta.extend_from_slice(extra);
        let mut fields_200 = type_line.to_vec();
        fields_200.extend_from_slice(format!("Content-Length: {}\r\n", stamp.len).as_bytes());
        fields_200.extend_from_slice(&meta);
        Entry {
            bytes,
            stamp,
            len: stamp.len,
            mtime_secs,
            etag,
            fields_200: fields_200.into_boxed_slice(),
            type_line,
            meta: meta.into_boxed_slice(),
            br: None,
            gzip: None,
            json: None,
        }
    }

    /// The file's bytes, exactly `len` of them.
    pub fn body(&self) -> Body<'_> {
        match &self.bytes {
            Bytes::Empty => Body::Owned(&[]),
            Bytes::Copied(b) => Body::Owned(b),
            Bytes::Mapped(m, file) => Body::Mapped(MappedSlice {
                ptr: m.as_ptr(),
                len: m.len(),
                file_len: m.len(),
                fd: file.as_raw_fd(),
                offset: 0,
                _entry: PhantomData,
            }),
        }
    }

    /// Files this entry keeps open and mapped: itself and its variants when larger than
    /// `COPIED_FILE_BYTES_MAX`.
    pub fn open_files(&self) -> usize {
        let own = usize::from(matches!(self.bytes, Bytes::Mapped(..)));
        own + self.br.as_ref().map_or(0, |e| e.open_files())
            + self.gzip.as_ref().map_or(0, |e| e.open_files())
    }

    /// Whether this entry has precompressed variants.
    pub fn has_variants(&self) -> bool {
        self.br.is_some() || self.gzip.is_some()
    }

    /// Bytes this entry accounts for in the cache budget: header fields, variants, and the
    /// body's bytes that can become resident in the process: all of a body read into memory,
    /// all of a mapped one sent from its mapping (below `FILE_BODY_BYTES_MIN`), none of a
    /// larger one, which is always sent from the file (ranges included) and never touches
    /// the mapping (counting it would let one large video push every small file out).
    pub fn weight(&self) -> usize {
        let body = match &self.bytes {
            Bytes::Mapped(..) if self.len as usize >= crate::batch::FILE_BODY_BYTES_MIN => 0,
            Bytes::Mapped(..) => self.len as usize,
            Bytes::Empty | Bytes::Copied(_) => self.len as usize,
        };
        let own = body + self.fields_200.len() + self.type_line.len() + self.meta.len();
        own + self.json.as_ref().map_or(0, |e| e.weight())
            + self.br.as_ref().map_or(0, |e| e.weight())
            + self.gzip.as_ref().map_or(0, |e| e.weight())
    }
}

/// A response body: bytes the server owns, or a slice of a file mapping that only the kernel
/// may read. Both have exactly the length the entry's Content-Length says.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    /// Memory the server owns (files of at most `COPIED_FILE_BYTES_MAX`, error pages): may be
    /// copied in user space.
    Owned(&'a [u8]),
    /// Part of a mapped file.
    Mapped(MappedSlice<'a>),
}

impl<'a> Body<'a> {
    /// Length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Body::Owned(b) => b.len(),
            Body::Mapped(m) => m.len,
        }
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes, if the server owns them (a mapped body cannot be read in user space).
    pub fn owned(self) -> Option<&'a [u8]> {
        match self {
            Body::Owned(bytes) => Some(bytes),
            Body::Mapped(_) => None,
        }
    }

    /// Bytes `start..end`, or `None` if that is not inside the body (never a panic).
    pub fn slice(self, start: u64, end: u64) -> Option<Body<'a>> {
        if start > end || end > self.len() as u64 {
            return None;
        }
        let (start, end) = (start as usize, end as usize);
        Some(match self {
            Body::Owned(b) => Body::Owned(&b[start..end]),
            Body::Mapped(m) => Body::Mapped(MappedSlice {
                ptr: m.ptr.wrapping_add(start),
                len: end - start,
                file_len: m.file_len,
                fd: m.fd,
                offset: m.offset + start as u64,
                _entry: PhantomData,
            }),
        })
    }
}

/// A slice of a file mapping, valid while the entry it came from lives. Deliberately without
/// any way to read it as `&[u8]`: a file truncated under its mapping makes user-space reads of
/// the lost pages raise SIGBUS, while the kernel reading them (sendmsg, splice) fails cleanly.
#[derive(Debug, Clone, Copy)]
pub struct MappedSlice<'a> {
    ptr: *const u8,
    len: usize,
    /// Length of the whole mapping the slice is part of.
    file_len: usize,
    fd: RawFd,
    offset: u64,
    _entry: PhantomData<&'a Entry>,
}

impl MappedSlice<'_> {
    /// The slice's address, for the kernel to read (a sendmsg iovec).
    pub fn addr(&self) -> *const u8 {
        self.ptr
    }

    /// Whether the slice belongs to a file large enough that any part of it is sent from the
    /// file, never from the mapping (so the mapping's pages never become resident in the
    /// process).
    pub fn from_file(&self) -> bool {
        self.file_len >= crate::batch::FILE_BODY_BYTES_MIN
    }

    /// The open file and the slice's offset in it, for sendfile.
    pub fn file(&self) -> (RawFd, u64) {
        (self.fd, self.offset)
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the slice is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The entry the cache builds for `name` in `dir` (for tests here and in `batch`).
#[cfg(test)]
pub(crate) fn entry_of(dir: &std::path::Path, name: &str) -> Arc<Entry> {
    let limits = CacheLimits {
        entries: 10,
        bytes: 1 << 30,
        revalidate_ms: None,
        watch: false,
        open_files: 10,
    };
    let mut cache = FileCache::open(dir, limits).unwrap();
    cache.fill(name.as_bytes(), 0);
    match cache.get(name.as_bytes(), 0) {
        Lookup::File(entry) => Arc::clone(entry),
        _ => panic!("{name} is no file"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_keeps_its_length_whatever_the_file_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.bin");
        std::fs::write(&path, vec![7u8; 64 << 10]).unwrap();
        let entry = entry_of(dir.path(), "m.bin");
        // Shrunk and grown after the fstat: the body is still exactly the length the head
        // announces, and slicing it never panics.
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(10).unwrap();
        assert_eq!((entry.body().len(), entry.len), (64 << 10, 64 << 10));
        assert!(matches!(entry.body(), Body::Mapped(_)), "large files are only mapped");
        assert!(entry.body().slice(65_000, 65_536).is_some());
        assert!(entry.body().slice(65_000, 65_537).is_none());
        std::fs::write(&path, vec![8u8; 100 << 10]).unwrap();
        assert_eq!(entry.body().len(), 64 << 10);
        std::fs::write(dir.path().join("s.txt"), b"0123456789").unwrap();
        let entry = entry_of(dir.path(), "s.txt");
        assert_eq!(entry.body().owned(), Some(&b"0123456789"[..]));
    }
}
