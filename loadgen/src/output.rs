//! Result files written whole or not at all: the bytes go to a temporary file in the target's
//! directory, which is then renamed over the target (rename is atomic within a filesystem),
//! so a reader never sees half a file and a failed write leaves nothing behind.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Mode asked for new result files; the umask narrows it as for any other file.
const RESULT_FILE_MODE: u32 = 0o666;

/// The directory a temporary sibling of `path` goes into.
fn directory(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

fn temporary(path: &Path) -> Result<tempfile::NamedTempFile, String> {
    if path.is_dir() {
        return Err(format!("cannot write {}: it is a directory", path.display()));
    }
    tempfile::Builder::new()
        .prefix(".loadgen-")
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(RESULT_FILE_MODE))
        .tempfile_in(directory(path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Checks, before a run, that `path` could be written (its directory exists and takes new
/// files, and it is not a directory), leaving nothing behind.
pub fn check_writable(path: &Path) -> Result<(), String> {
    temporary(path).map(drop)
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut file = temporary(path)?;
    let failed = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    file.write_all(bytes).map_err(failed)?;
    file.as_file().sync_all().map_err(failed)?;
    file.persist(path).map_err(|e| failed(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_whole_or_refused_leaving_nothing() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let target = dir.path().join("out.txt");
        check_writable(&target).expect("writable");
        write_atomic(&target, b"one").expect("written");
        write_atomic(&target, b"two").expect("replaced");
        assert_eq!(std::fs::read(&target).expect("readable"), b"two");
        let missing = dir.path().join("no-such-dir").join("out.txt");
        let error = check_writable(&missing).expect_err("no such directory");
        assert!(error.starts_with(&format!("cannot write {}", missing.display())), "{error}");
        assert!(write_atomic(dir.path(), b"x").expect_err("a directory").contains("directory"));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("listable")
            .map(|e| e.expect("an entry").file_name())
            .collect();
        assert_eq!(names, ["out.txt"], "no temporary file is left");
    }
}
