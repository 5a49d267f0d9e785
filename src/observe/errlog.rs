//! Operating errors on standard error: one line each, with a UTC timestamp, and rate-limited per
//! kind (the first at once, then at most one a minute saying how many were suppressed), so a
//! flood of failures cannot fill a disk.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Between two lines of the same kind (nginx reports a failing log once a minute).
pub const REPORT_INTERVAL: Duration = Duration::from_secs(60);

/// What went wrong; each kind is rate-limited on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// accept failed for lack of descriptors (EMFILE, ENFILE) or memory.
    Descriptors,
    /// An access-log write failed.
    LogWrite,
    /// An access-log reopen (SIGUSR1) failed.
    LogReopen,
    /// An io_uring operation failed in a way it should not.
    Uring,
}

const KINDS: usize = 4;

struct State {
    last: Option<Instant>,
    suppressed: u64,
}

static STATES: Mutex<[State; KINDS]> =
    Mutex::new([const { State { last: None, suppressed: 0 } }; KINDS]);

/// Writes `message` as one line, unless a line of this kind was written less than
/// `REPORT_INTERVAL` ago (then it is counted, and the next line says how many were skipped).
pub fn report(kind: Kind, message: fmt::Arguments<'_>) {
    let now = Instant::now();
    let suppressed = {
        let mut states = STATES.lock().unwrap_or_else(|e| e.into_inner());
        let state = &mut states[kind as usize];
        if state.last.is_some_and(|last| now.duration_since(last) < REPORT_INTERVAL) {
            state.suppressed += 1;
            return;
        }
        state.last = Some(now);
        std::mem::take(&mut state.suppressed)
    };
    let stamp = timestamp(crate::observe::access_log::now_secs());
    if suppressed > 0 {
        eprintln!("{stamp} ringserve: {message} ({suppressed} more like it in the last minute)");
    } else {
        eprintln!("{stamp} ringserve: {message}");
    }
}

/// `2026-12-02T03:45:12Z`.
pub fn timestamp(unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_rfc3339() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(timestamp(1_796_183_112), "2026-12-02T03:45:12Z");
        assert_eq!(timestamp(951_782_400), "2000-02-29T00:00:00Z");
    }
}
