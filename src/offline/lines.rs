//! Input lines for `replay` and `score`, each held only up to a limit: a longer line (or CSV
//! record) is skipped to its end and reported by number, so that it costs the limit, not its
//! length. The limit applies to the text read, after any decompression.

use std::io::{self, BufRead, Read};

/// Longest line (or CSV record) read, in bytes. A prediction-log line holds one instance and
/// its answer, and `serve` takes bodies of 1 MiB by default: 16 MiB leaves room for larger
/// configured bodies while keeping one held line far below the memory budget.
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// A line (or record) past this length gets its buffer sized for the limit at once: grown by
/// doubling, the last copy would hold the old and the new buffer, 1.5 times the limit.
const GROWN: usize = 1 << 20;

/// What the next line is.
pub enum Line<'a> {
    /// Its text, without the line end; `number` is its first line (1-based).
    Text { number: u64, text: &'a [u8] },
    /// Longer than the limit: skipped, only its length was counted.
    TooLong { number: u64, bytes: u64 },
}

impl Line<'_> {
    pub fn too_long(bytes: u64) -> String {
        format!("longer than the limit of {MAX_LINE_BYTES} bytes ({bytes} bytes)")
    }
}

/// How lines end: at every newline (JSON Lines), or at a line end outside quotes (CSV).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Split {
    Newline,
    Csv,
}

pub struct Lines<R> {
    reader: R,
    split: Split,
    limit: usize,
    buf: Vec<u8>,
    /// Newlines read so far: the next line's number is one more.
    newlines: u64,
}

impl<R: BufRead> Lines<R> {
    pub fn new(reader: R, split: Split) -> Self {
        Self::with_limit(reader, split, MAX_LINE_BYTES)
    }

    fn with_limit(reader: R, split: Split, limit: usize) -> Self {
        Self { reader, split, limit, buf: Vec::new(), newlines: 0 }
    }

    /// The next line, or `None` at the end of the input.
    pub fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        let number = self.newlines + 1;
        let bytes = match self.split {
            Split::Newline => self.read_line()?,
            Split::Csv => self.read_record()?,
        };
        Ok(match bytes {
            None => None,
            Some(bytes) if bytes > self.limit as u64 => {
                // Lines after a long one need no more than a usual line's room.
                self.buf.clear();
                self.buf.shrink_to(1 << 16);
                Some(Line::TooLong { number, bytes })
            }
            Some(_) => {
                let end = self.buf.iter().rposition(|&b| b != b'\n' && b != b'\r').map_or(0, |i| i + 1);
                Some(Line::Text { number, text: &self.buf[..end] })
            }
        })
    }

    /// Reads up to the next newline into `buf`, keeping at most `limit` bytes; the line's
    /// length in bytes without its newline, `None` at the end.
    fn read_line(&mut self) -> io::Result<Option<u64>> {
        self.buf.clear();
        let first = GROWN.min(self.limit);
        let mut held = (&mut self.reader).take(first as u64).read_until(b'\n', &mut self.buf)?;
        if held == first && held < self.limit && self.buf.last() != Some(&b'\n') {
            // A long line: room for the limit at once, rather than doubling past it.
            self.buf.reserve_exact(self.limit.saturating_sub(held));
            held += (&mut self.reader).take(self.limit.saturating_sub(held) as u64).read_until(b'\n', &mut self.buf)?;
        }
        if held == 0 {
            return Ok(None);
        }
        if self.buf.last() == Some(&b'\n') {
            self.newlines += 1;
            return Ok(Some(held as u64 - 1));
        }
        // Without a newline: the last line, or a line at the limit with more to come.
        let next = self.reader.fill_buf()?.first().copied();
        if held < self.limit || next.is_none() {
            return Ok(Some(held as u64));
        }
        if next == Some(b'\n') {
            self.reader.consume(1);
            self.newlines += 1;
            return Ok(Some(held as u64));
        }
        // Too long: skipped in slices through the buffer, with the standard library's search.
        let mut length = held as u64;
        loop {
            self.buf.clear();
            let n = (&mut self.reader).take(1 << 16).read_until(b'\n', &mut self.buf)? as u64;
            if self.buf.last() == Some(&b'\n') {
                self.newlines += 1;
                return Ok(Some(length + n - 1));
            }
            if n == 0 {
                return Ok(Some(length));
            }
            length += n;
        }
    }

    /// Reads one CSV record: up to a line end outside quotes, so that a quoted cell spanning
    /// lines stays whole. Bytes beyond the limit are counted, not kept; the record's length
    /// without its line end, `None` at the end.
    fn read_record(&mut self) -> io::Result<Option<u64>> {
        self.buf.clear();
        let (mut size, mut state, mut any) = (0u64, Csv::FieldStart, false);
        loop {
            let available = self.reader.fill_buf()?;
            if available.is_empty() {
                break;
            }
            any = true;
            let mut end = None;
            for (i, &b) in available.iter().enumerate() {
                if b == b'\n' {
                    self.newlines += 1;
                }
                let ends;
                (state, ends) = state.next(b);
                if ends {
                    end = Some(i + 1);
                    break;
                }
            }
            let taken = end.unwrap_or(available.len());
            size += taken as u64;
            // One byte over the limit for the record's end, which does not count.
            if size <= self.limit as u64 + 1 {
                if self.buf.len() >= GROWN && self.buf.capacity() <= self.limit {
                    self.buf.reserve_exact(self.limit + 1 - self.buf.len());
                }
                self.buf.extend_from_slice(&available[..taken]);
            } else {
                self.buf.clear();
            }
            self.reader.consume(taken);
            if end.is_some() {
                return Ok(Some(size - 1));
            }
        }
        Ok(any.then_some(size))
    }
}

/// Where a CSV reader is within a record, as the `csv` crate reads it: a quote opens a quoted
/// cell only at a cell's start, and `""` inside one is a quote.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Csv {
    FieldStart,
    Unquoted,
    Quoted,
    QuoteInQuoted,
}

impl Csv {
    /// The state after `b`, and whether `b` ends the record (`\r` alone ends one too, as in
    /// the `csv` crate; the `\n` of `\r\n` then ends an empty record, which is skipped).
    fn next(self, b: u8) -> (Csv, bool) {
        match (self, b) {
            (Csv::Quoted, b'"') => (Csv::QuoteInQuoted, false),
            (Csv::Quoted, _) => (Csv::Quoted, false),
            (_, b'\n' | b'\r') => (Csv::FieldStart, true),
            (_, b',') => (Csv::FieldStart, false),
            (Csv::FieldStart | Csv::QuoteInQuoted, b'"') => (Csv::Quoted, false),
            _ => (Csv::Unquoted, false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &str, split: Split, limit: usize, capacity: usize) -> Vec<(u64, Result<String, u64>)> {
        let reader = io::BufReader::with_capacity(capacity, input.as_bytes());
        let mut lines = Lines::with_limit(reader, split, limit);
        let mut out = Vec::new();
        while let Some(line) = lines.next_line().unwrap() {
            out.push(match line {
                Line::Text { number, text } => (number, Ok(String::from_utf8(text.to_vec()).unwrap())),
                Line::TooLong { number, bytes } => (number, Err(bytes)),
            });
        }
        out
    }

    #[test]
    fn a_line_over_the_limit_is_skipped_to_its_end_and_counted() {
        for capacity in [1, 3, 64] {
            let got = all("ab\nabcdefgh\r\nabcd\n\nxyz", Split::Newline, 4, capacity);
            let want =
                [(1, Ok("ab".into())), (2, Err(9)), (3, Ok("abcd".into())), (4, Ok("".into())), (5, Ok("xyz".into()))];
            assert_eq!(got, want, "buffer of {capacity}");
            assert_eq!(all("abcdef", Split::Newline, 4, capacity), [(1, Err(6))], "the last line, without a newline");
            assert_eq!(all("abcdefg\n", Split::Newline, 4, capacity), [(1, Err(7))]);
            assert_eq!(all("abcd", Split::Newline, 4, capacity), [(1, Ok("abcd".into()))], "exactly the limit");
        }
    }

    #[test]
    fn a_long_line_is_kept_up_to_the_limit_exactly() {
        let limit = 3 * GROWN / 2;
        let at_limit = "a".repeat(limit);
        let input = format!("{at_limit}\n{at_limit}b\nok\n{at_limit}");
        let got = all(&input, Split::Newline, limit, 1 << 16);
        let want = [(1, Ok(at_limit.clone())), (2, Err(limit as u64 + 1)), (3, Ok("ok".into())), (4, Ok(at_limit))];
        assert!(got == want, "{:?}", got.iter().map(|(n, l)| (n, l.as_ref().map(String::len))).collect::<Vec<_>>());
    }

    #[test]
    fn a_csv_record_ends_at_a_line_end_outside_quotes() {
        let input = "a,b\r\n\"x\ny\",\"q\"\"\n\"\nab\"c,d\nlong,\"1234\n5678\"\nz";
        for capacity in [1, 5, 64] {
            let got = all(input, Split::Csv, 13, capacity);
            let want = [
                (1, Ok("a,b".into())),
                (1, Ok("".into())), // the \n of \r\n
                (2, Ok("\"x\ny\",\"q\"\"\n\"".into())),
                (5, Ok("ab\"c,d".into())),
                (6, Err(16)),
                (8, Ok("z".into())),
            ];
            assert_eq!(got, want, "buffer of {capacity}");
        }
    }
}
