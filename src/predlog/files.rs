//! The rolling files of the prediction log, written only in whole lines.
//!
//! tracing-appender's `RollingFileAppender` hides its file, so after a failed or short write it
//! could neither cut the torn line off nor tell us how much reached the disk; this small writer
//! keeps the length it knows ends with a whole line and cuts back to it (`File::set_len`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use super::policy::{self, Kept};
use super::sink::{Sink, Written};
use crate::config::{PredictionLogConfig, Rotation};

pub struct LogFiles {
    dir: PathBuf,
    rotation: Rotation,
    max_files: usize,
    max_bytes: u64,
    file_cap: u64,
    /// This log's files, oldest first; the last is the one being written, and its `bytes` is
    /// the length known to end with a whole line.
    kept: Vec<Kept>,
    current: Option<File>,
    /// A failed write may have left bytes past the good length that could not be cut yet.
    torn: bool,
    label: String,
    part: u32,
    /// The current part's path, checked before each write (the file may have been deleted).
    path: PathBuf,
    next_rollover: Option<OffsetDateTime>,
}

impl LogFiles {
    /// Creates the folder first (nothing reads it before), then continues the newest file if it
    /// belongs to the current period.
    pub fn open(config: &PredictionLogConfig, now: OffsetDateTime) -> io::Result<Self> {
        let mut files = Self {
            dir: config.directory.clone(),
            rotation: config.rotation,
            max_files: config.max_files,
            max_bytes: config.max_bytes,
            file_cap: policy::file_cap(config.max_bytes, config.max_files),
            kept: Vec::new(),
            current: None,
            torn: false,
            label: String::new(),
            part: 0,
            path: PathBuf::new(),
            next_rollover: None,
        };
        fs::create_dir_all(&files.dir)?;
        files.kept = scan(&files.dir)?;
        files.start_period(now)?;
        Ok(files)
    }

    /// Writes the lines of `buf` (line `i` ends at byte `ends[i]`) until one fails. A failed
    /// write is cut back to the last whole line, so the files only ever hold whole lines.
    fn write_lines(&mut self, buf: &[u8], ends: &[usize], now: OffsetDateTime) -> Written {
        let mut done = Written { lines: 0, bytes: 0, error: None };
        if let Err(error) = self.prepare(now) {
            done.error = Some(error);
            return done;
        }
        while done.lines < ends.len() {
            let current = self.current_len();
            let room = self.file_cap.saturating_sub(current);
            let n = policy::lines_that_fit(&ends[done.lines..], done.bytes, room, current == 0);
            if n == 0 {
                if let Err(error) = self.start_part(self.part + 1) {
                    done.error = Some(error);
                    break;
                }
                continue;
            }
            let end = ends[done.lines + n - 1];
            if let Err(error) = self.append(&buf[done.bytes..end]) {
                done.error = Some(error);
                break;
            }
            done.lines += n;
            done.bytes = end;
        }
        done
    }

    /// Before a write: a deleted folder or file is created again, a torn tail cut, a new
    /// period's file started.
    fn prepare(&mut self, now: OffsetDateTime) -> io::Result<()> {
        match fs::metadata(&self.path) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let path = self.path.clone();
                let folder_gone = !self.dir.is_dir();
                fs::create_dir_all(&self.dir)?;
                self.kept = scan(&self.dir)?;
                self.start_part(self.part)?;
                if folder_gone {
                    tracing::warn!(dir = %self.dir.display(), "the prediction log folder was deleted; created it again");
                } else {
                    tracing::warn!(file = %path.display(), "the prediction log file was deleted; started it again");
                }
            }
            Err(e) => return Err(e),
        }
        if self.current.is_none() {
            self.start_part(self.part)?;
        }
        if self.torn {
            let len = self.current_len();
            self.current.as_ref().expect("opened above").set_len(len)?;
            self.torn = false;
        }
        if self.next_rollover.is_some_and(|at| now >= at) {
            self.start_period(now)?;
        }
        Ok(())
    }

    /// The file of the period `now` falls in: the newest file if it is of this period (after a
    /// restart), else the period's first part.
    fn start_period(&mut self, now: OffsetDateTime) -> io::Result<()> {
        self.label = policy::period_label(self.rotation, policy::period_start(self.rotation, now).unwrap_or(now));
        self.next_rollover = policy::next_period(self.rotation, now);
        let newest = self.kept.last().and_then(|k| policy::parse_name(&k.name));
        let part = match newest {
            Some((label, part)) if label == self.label => part,
            _ => 0,
        };
        self.start_part(part)
    }

    /// Opens part `part` of the current period (appending if it exists), then deletes the
    /// oldest files beyond `max_files` and `max_bytes`.
    fn start_part(&mut self, part: u32) -> io::Result<()> {
        self.current = None;
        self.part = part;
        let name = policy::file_name(&self.label, part);
        self.path = self.dir.join(&name);
        let mut file = OpenOptions::new().create(true).append(true).read(true).open(&self.path)?;
        let len = whole_lines_len(&mut file)?;
        self.kept.retain(|k| k.name != name);
        self.kept.push(Kept { name, bytes: len });
        self.current = Some(file);
        self.torn = false;
        self.delete_oldest(0);
        Ok(())
    }

    fn append(&mut self, piece: &[u8]) -> io::Result<()> {
        self.delete_oldest(piece.len() as u64);
        let good = self.current_len();
        let file = self.current.as_mut().expect("a file is open after prepare");
        match file.write_all(piece) {
            Ok(()) => {
                self.kept.last_mut().expect("the current file is kept").bytes += piece.len() as u64;
                Ok(())
            }
            Err(error) => {
                // Append mode: once cut, the next write lands right after the last whole line.
                self.torn = file.set_len(good).is_err();
                Err(error)
            }
        }
    }

    fn delete_oldest(&mut self, incoming: u64) {
        let n = policy::oldest_to_delete(&self.kept, self.max_files, self.max_bytes, incoming);
        for old in self.kept.drain(..n) {
            let path = self.dir.join(&old.name);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(error) => {
                    tracing::warn!(%error, file = %path.display(), "cannot delete an old prediction log file")
                }
            }
        }
    }

    fn current_len(&self) -> u64 {
        self.kept.last().map_or(0, |k| k.bytes)
    }
}

impl Sink for LogFiles {
    fn write(&mut self, buf: &[u8], ends: &[usize], now: OffsetDateTime) -> Written {
        self.write_lines(buf, ends, now)
    }

    fn describe(&self) -> String {
        self.dir.display().to_string()
    }
}

/// This log's files in `dir`, oldest first (by modification time, then name).
fn scan(dir: &Path) -> io::Result<Vec<Kept>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else { continue };
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_file() && policy::parse_name(&name).is_some() {
            let modified = meta.modified().unwrap_or(std::time::SystemTime::UNIX_EPOCH);
            files.push((modified, Kept { name, bytes: meta.len() }));
        }
    }
    files.sort_by(|a, b| (a.0, &a.1.name).cmp(&(b.0, &b.1.name)));
    Ok(files.into_iter().map(|(_, kept)| kept).collect())
}

/// The file's length after cutting a torn last line (left by a crash mid-write) off.
pub(super) fn whole_lines_len(file: &mut File) -> io::Result<u64> {
    let len = file.metadata()?.len();
    let mut end = len;
    let mut block = [0u8; 8192];
    while end > 0 {
        let start = end.saturating_sub(block.len() as u64);
        let chunk = &mut block[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            end = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    if end != len {
        file.set_len(end)?;
        tracing::warn!(cut_bytes = len - end, "cut a partial last line off the prediction log");
    }
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_cut_when_a_file_is_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("predictions.jsonl");
        fs::write(&path, "{\"a\":1}\n{\"a\":2}\n{\"a\":").unwrap();
        let mut file = OpenOptions::new().append(true).read(true).open(&path).unwrap();
        assert_eq!(whole_lines_len(&mut file).unwrap(), 16);
        file.write_all(b"{\"a\":3}\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n");
        fs::write(&path, "no newline at all").unwrap();
        let mut file = OpenOptions::new().append(true).read(true).open(&path).unwrap();
        assert_eq!(whole_lines_len(&mut file).unwrap(), 0);
    }
}
