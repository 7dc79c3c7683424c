//! The object-storage sink's local spool: lines are appended to an open part file; a part is
//! closed (renamed from `.jsonl.open` to `.jsonl`) at its size or age, then uploaded and
//! deleted by the uploader. Names start with the part's UTC start time, then the host and a
//! random id of this process, so that objects sort by time and replicas never collide.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use metrics::Gauge;
use time::OffsetDateTime;

use crate::predlog::files::whole_lines_len;
use crate::predlog::sink::Written;

const OPEN: &str = ".jsonl.open";
const CLOSED: &str = ".jsonl";

pub struct Spool {
    dir: PathBuf,
    /// `<host>-<id>`, in every part's name.
    origin: String,
    seq: u64,
    current: Option<Part>,
    /// Bytes in closed parts not uploaded yet.
    closed_bytes: u64,
    part_bytes: u64,
    max_bytes: u64,
    pub interval: Duration,
    gauge: Gauge,
    /// A part was opened or closed since the last [`Spool::take_changed`]: the uploader's
    /// wait changes.
    changed: bool,
}

struct Part {
    file: File,
    path: PathBuf,
    bytes: u64,
    opened: Instant,
}

impl Spool {
    /// Scans `dir`: parts an earlier run left open (it crashed) are cut to whole lines and
    /// closed, so that they are uploaded with the rest.
    pub fn open(dir: &Path, part_bytes: u64, max_bytes: u64, interval: Duration, gauge: Gauge) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let mut closed_bytes = 0;
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
            if let Some(stem) = name.strip_suffix(OPEN) {
                let mut file = OpenOptions::new().read(true).write(true).open(&path)?;
                whole_lines_len(&mut file)?;
                fs::rename(&path, dir.join(format!("{stem}{CLOSED}")))?;
            }
        }
        for path in closed_parts(dir) {
            closed_bytes += fs::metadata(&path).map_or(0, |m| m.len());
        }
        let origin = format!("{}-{:08x}", host_name(), fastrand::u32(..));
        gauge.set(closed_bytes as f64);
        Ok(Self {
            dir: dir.to_owned(),
            origin,
            seq: 0,
            current: None,
            closed_bytes,
            part_bytes,
            max_bytes,
            interval,
            gauge,
            changed: false,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends whole lines while the spool has room; a part that reaches its size is closed.
    pub fn append(&mut self, buf: &[u8], ends: &[usize], now: OffsetDateTime) -> Written {
        let used = self.closed_bytes + self.current.as_ref().map_or(0, |p| p.bytes);
        let room = self.max_bytes.saturating_sub(used);
        let fit = ends.partition_point(|&end| end as u64 <= room);
        let mut done = Written { lines: 0, bytes: 0, error: None };
        if fit > 0 {
            let end = ends[fit - 1];
            match self.write(&buf[..end], now) {
                Ok(()) => done = Written { lines: fit, bytes: end, error: None },
                Err(error) => return Written::failed(error),
            }
        }
        if fit < ends.len() {
            done.error = Some(io::Error::new(io::ErrorKind::StorageFull, "the upload spool is full"));
        }
        if self.current.as_ref().is_some_and(|p| p.bytes >= self.part_bytes) {
            self.close_current();
        }
        self.gauge.set((self.closed_bytes + self.current.as_ref().map_or(0, |p| p.bytes)) as f64);
        done
    }

    fn write(&mut self, piece: &[u8], now: OffsetDateTime) -> io::Result<()> {
        if self.current.is_none() {
            self.seq += 1;
            let path = self.dir.join(format!("{}-{}-{:06}{OPEN}", stamp(now), self.origin, self.seq));
            let file = OpenOptions::new().create(true).append(true).open(&path)?;
            self.current = Some(Part { file, path, bytes: 0, opened: Instant::now() });
            self.changed = true;
        }
        let part = self.current.as_mut().expect("opened above");
        if let Err(error) = part.file.write_all(piece) {
            // Cut back to the last whole line (append mode writes after it next time).
            let _ = part.file.set_len(part.bytes);
            return Err(error);
        }
        part.bytes += piece.len() as u64;
        Ok(())
    }

    /// Closes the open part if it is older than the upload interval (or `always`); true if
    /// a part was closed.
    pub fn close_if_due(&mut self, always: bool) -> bool {
        let due = self.current.as_ref().is_some_and(|p| always || p.opened.elapsed() >= self.interval);
        if due {
            self.close_current();
        }
        due
    }

    /// How long until the open part is due; `None` when there is none.
    pub fn due_in(&self) -> Option<Duration> {
        self.current.as_ref().map(|p| self.interval.saturating_sub(p.opened.elapsed()))
    }

    fn close_current(&mut self) {
        let Some(part) = self.current.take() else { return };
        drop(part.file);
        let name = part.path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let closed = self.dir.join(format!("{}{CLOSED}", name.trim_end_matches(OPEN)));
        match fs::rename(&part.path, &closed) {
            Ok(()) => {
                self.closed_bytes += part.bytes;
                self.changed = true;
            }
            // Left open, it is closed and uploaded at the next start.
            Err(error) => tracing::error!(%error, file = %part.path.display(), "cannot close a prediction log part"),
        }
    }

    /// Whether a part was opened or closed since the last call.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// An uploaded part of `bytes` bytes is gone from the spool.
    pub fn uploaded(&mut self, bytes: u64) {
        self.closed_bytes = self.closed_bytes.saturating_sub(bytes);
        self.gauge.set((self.closed_bytes + self.current.as_ref().map_or(0, |p| p.bytes)) as f64);
    }
}

/// Closed parts in `dir`, oldest first (their names start with their time).
pub fn closed_parts(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut parts: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(is_part_name))
        .collect();
    parts.sort();
    parts
}

/// `YYYYMMDDTHHMMSSmmmZ-<host>-<id>-<seq>.jsonl`.
fn is_part_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(CLOSED) else { return false };
    stem.len() > 20
        && stem.as_bytes()[8] == b'T'
        && stem.as_bytes()[18] == b'Z'
        && stem[..8].bytes().all(|b| b.is_ascii_digit())
}

/// The object name of a closed part: `<YYYY-MM-DD>/<part name>.gz` under the prefix.
pub fn object_name(part: &Path) -> Option<String> {
    let name = part.file_name()?.to_str()?;
    is_part_name(name).then(|| format!("{}-{}-{}/{name}.gz", &name[..4], &name[4..6], &name[6..8]))
}

/// `YYYYMMDDTHHMMSSmmmZ`: sorts as the time does.
fn stamp(at: OffsetDateTime) -> String {
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}{:03}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

/// The host's name, reduced to letters, digits and `-` (at most 63): a pod's or dyno's name.
fn host_name() -> String {
    let mut raw = [0u8; 256];
    // SAFETY: the buffer is writable for its length; the name is NUL-terminated if it fits.
    let ok = unsafe { libc::gethostname(raw.as_mut_ptr().cast(), raw.len()) } == 0;
    let name = if ok { &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())] } else { b"host".as_slice() };
    let clean: String =
        name.iter().map(|&b| if b.is_ascii_alphanumeric() { b as char } else { '-' }).take(63).collect();
    if clean.is_empty() {
        "host".into()
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_named_by_time_host_and_sequence() {
        let date = time::Date::from_calendar_date(2026, time::Month::December, 3).unwrap();
        let at = date.with_hms_milli(15, 51, 26, 123).unwrap().assume_utc();
        assert_eq!(stamp(at), "20261203T155126123Z");
        let part = Path::new("/spool/20261203T155126123Z-web-1-0a1b2c3d-000001.jsonl");
        assert_eq!(object_name(part).unwrap(), "2026-12-03/20261203T155126123Z-web-1-0a1b2c3d-000001.jsonl.gz");
        assert_eq!(object_name(Path::new("/spool/20261203T155126123Z-web.jsonl.open")), None);
        assert_eq!(object_name(Path::new("/spool/predictions.jsonl")), None);
        assert!(!host_name().is_empty() && host_name().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    }

    #[test]
    fn a_full_spool_takes_the_lines_that_fit_and_refuses_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20, 10, Duration::from_secs(60), Gauge::noop()).unwrap();
        let now = OffsetDateTime::now_utc();
        let done = spool.append(b"{\"a\":1}\n{\"a\":2}\n", &[8, 16], now);
        assert_eq!((done.lines, done.bytes), (1, 8));
        assert_eq!(done.error.unwrap().kind(), io::ErrorKind::StorageFull);
        assert!(spool.close_if_due(true));
        assert_eq!(closed_parts(dir.path()).len(), 1);
        spool.uploaded(8);
        let done = spool.append(b"{\"a\":2}\n", &[8], now);
        assert_eq!(done.lines, 1, "room again once the part is uploaded");
    }

    #[test]
    fn a_part_left_open_by_a_crash_is_closed_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("20261203T155126123Z-web-0a1b2c3d-000001.jsonl.open");
        fs::write(&open, "{\"a\":1}\n{\"a\"").unwrap();
        let spool = Spool::open(dir.path(), 1 << 20, 1 << 20, Duration::from_secs(60), Gauge::noop()).unwrap();
        let parts = closed_parts(dir.path());
        assert_eq!(parts.len(), 1);
        assert_eq!(fs::read_to_string(&parts[0]).unwrap(), "{\"a\":1}\n");
        assert_eq!(spool.closed_bytes, 8);
    }
}
