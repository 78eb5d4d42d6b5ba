//! A bounded source of one record per line of a file (JSON lines, CSV...).
//!
//! Every subtask reads the file and keeps the lines whose number `% parallelism`
//! is its index, so parsing is spread over the subtasks. The position (byte
//! offset and line number of the next line) is checkpointed; a restored run
//! seeks there. With [`LineSource::event_time`], the source emits watermarks:
//! newest event time − out-of-orderness − 1 (the newest time is part of the
//! position, so the watermark does not go back after a restore).

use super::{ConnectorContext, Source, SourcePoll};
use crate::error::{Result, WeirError};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use weir_operators::Timestamp;

/// Parses one line (without its newline); an `Err` fails the job naming the file and line.
pub type LineParser<T> = fn(&[u8]) -> std::result::Result<T, String>;

/// A record's event time and the bound on disorder in ms.
type EventTime<T> = (fn(&T) -> i64, i64);

/// A line-file source, described; [`LineSource::factory`] makes it a source.
#[derive(Debug, Clone)]
pub struct LineSource<T> {
    path: PathBuf,
    parse: LineParser<T>,
    event_time: Option<EventTime<T>>,
    records: Arc<AtomicU64>,
}

impl<T: Send + 'static> LineSource<T> {
    /// Reads `path`, one record per non-empty line, parsed by `parse`.
    pub fn new(path: impl Into<PathBuf>, parse: LineParser<T>) -> Self {
        LineSource {
            path: path.into(),
            parse,
            event_time: None,
            records: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Event time of a record and the bound on disorder: enables watermarks.
    pub fn event_time(mut self, of: fn(&T) -> i64, out_of_orderness_ms: i64) -> Self {
        self.event_time = Some((of, out_of_orderness_ms));
        self
    }

    /// Records read in this run, over every subtask.
    pub fn records_read(&self) -> Arc<AtomicU64> {
        self.records.clone()
    }

    /// The factory for [`crate::JobBuilder::source`].
    pub fn factory(self) -> impl Fn(ConnectorContext) -> Result<LineReader<T>> + Send + 'static {
        move |ctx| LineReader::open(&self, &ctx)
    }
}

/// A running line-file source subtask.
pub struct LineReader<T> {
    name: String,
    path: PathBuf,
    file: File,
    /// Bytes read from the file; `start..end` not yet consumed.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    at_eof: bool,
    parse: LineParser<T>,
    event_time: Option<EventTime<T>>,
    subtask: u64,
    parallelism: u64,
    /// Byte offset and number of the next line.
    offset: u64,
    line: u64,
    newest: Option<i64>,
    records: Arc<AtomicU64>,
}

impl<T> LineReader<T> {
    fn error(name: &str, path: &Path, message: String) -> WeirError {
        WeirError::Connector {
            connector: name.to_string(),
            message: format!("{}: {message}", path.display()),
        }
    }

    /// Opens subtask `ctx.subtask`, at the restored position if any.
    ///
    /// # Errors
    /// The file cannot be opened or the restored position is malformed.
    pub fn open(source: &LineSource<T>, ctx: &ConnectorContext) -> Result<Self> {
        let name = format!("{}[{}]", ctx.uid, ctx.subtask);
        let mut file =
            File::open(&source.path).map_err(|e| Self::error(&name, &source.path, format!("cannot open: {e}")))?;
        // Position: byte offset, line number, and (when event time is on) the newest event time.
        let word = |b: &[u8], i: usize| b.get(i..i + 8).and_then(|w| w.try_into().ok()).map(u64::from_be_bytes);
        let (offset, line, newest) = match &ctx.restored {
            None => (0, 0, None),
            Some(b) if b.len() == 16 || b.len() == 24 => (
                word(b, 0).unwrap_or(0),
                word(b, 8).unwrap_or(0),
                word(b, 16).map(|t| t as i64),
            ),
            Some(b) => {
                return Err(Self::error(
                    &name,
                    &source.path,
                    format!("restored position has {} bytes, expected 16 or 24", b.len()),
                ))
            }
        };
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| Self::error(&name, &source.path, format!("cannot seek to byte {offset}: {e}")))?;
        Ok(LineReader {
            name,
            path: source.path.clone(),
            file,
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            at_eof: false,
            parse: source.parse,
            event_time: source.event_time,
            subtask: ctx.subtask as u64,
            parallelism: ctx.parallelism.max(1) as u64,
            offset,
            line,
            newest,
            records: source.records.clone(),
        })
    }
}

impl<T> LineReader<T> {
    /// The next line (without its `\n`) as a range of `buf`, reading more of
    /// the file as needed; `None` at the end of the file. Lines are cut in
    /// place: no copy of each line out of the read buffer.
    fn next_line(&mut self) -> Result<Option<std::ops::Range<usize>>> {
        loop {
            let (start, end) = (self.start, self.end);
            if let Some(i) = memchr::memchr(b'\n', &self.buf[start..end]) {
                self.start = start + i + 1;
                return Ok(Some(start..start + i));
            }
            if self.at_eof {
                if start == end {
                    return Ok(None);
                }
                self.start = end; // a last line without a newline
                return Ok(Some(start..end));
            }
            // Keep the partial line, then fill the rest (grow for a long line).
            self.buf.copy_within(start..end, 0);
            self.end -= start;
            self.start = 0;
            if self.end == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            let n = loop {
                match self.file.read(&mut self.buf[self.end..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        return Err(Self::error(
                            &self.name,
                            &self.path,
                            format!("read error at byte {}: {e}", self.offset),
                        ))
                    }
                }
            };
            self.end += n;
            self.at_eof = n == 0;
        }
    }
}

/// Bytes read from the file at a time.
const READ_CHUNK: usize = 1 << 20;

impl<T: Send + 'static> Source<T> for LineReader<T> {
    fn poll(&mut self, out: &mut Vec<T>, max: usize) -> Result<SourcePoll> {
        let start = out.len();
        while out.len() - start < max {
            let Some(range) = self.next_line()? else {
                self.records.fetch_add((out.len() - start) as u64, Ordering::Relaxed);
                return Ok(if out.len() > start {
                    SourcePoll::Ready
                } else {
                    SourcePoll::End
                });
            };
            let (number, mine) = (self.line, self.line % self.parallelism == self.subtask);
            // The newline, unless this is a last line without one.
            let newline = u64::from(range.end < self.end);
            self.offset += range.len() as u64 + newline;
            self.line += 1;
            let text = self.buf[range].trim_ascii();
            if !mine || text.is_empty() {
                continue;
            }
            let record = (self.parse)(text)
                .map_err(|e| Self::error(&self.name, &self.path, format!("line {}: {e}", number + 1)))?;
            if let Some((of, _)) = self.event_time {
                let ts = of(&record);
                self.newest = Some(self.newest.map_or(ts, |n| n.max(ts)));
            }
            out.push(record);
        }
        self.records.fetch_add((out.len() - start) as u64, Ordering::Relaxed);
        Ok(SourcePoll::Ready)
    }

    fn watermark(&mut self) -> Option<Timestamp> {
        let (_, bound) = self.event_time?;
        self.newest
            .map(|t| Timestamp(t.saturating_sub(bound).saturating_sub(1)))
    }

    fn position(&mut self) -> Result<Vec<u8>> {
        let mut p = self.offset.to_be_bytes().to_vec();
        p.extend_from_slice(&self.line.to_be_bytes());
        if let Some(newest) = self.newest {
            p.extend_from_slice(&newest.to_be_bytes());
        }
        Ok(p)
    }

    fn describe_position(&self) -> String {
        format!("byte={} line={}", self.offset, self.line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(subtask: usize, parallelism: usize, restored: Option<Vec<u8>>) -> ConnectorContext {
        ConnectorContext {
            restored,
            ..ConnectorContext::standalone("lines", subtask, parallelism)
        }
    }

    fn number(line: &[u8]) -> std::result::Result<i64, String> {
        std::str::from_utf8(line)
            .map_err(|e| e.to_string())?
            .parse()
            .map_err(|e| format!("not a number: {e}"))
    }

    #[test]
    fn subtasks_split_the_lines_and_resume_from_their_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.txt");
        std::fs::write(&path, "1\n2\n\n3\n4\n5").unwrap();
        let source = LineSource::new(&path, number).event_time(|t| *t, 0);
        let mut r0 = LineReader::open(&source, &ctx(0, 2, None)).unwrap();
        let mut out = Vec::new();
        assert_eq!(r0.poll(&mut out, 1).unwrap(), SourcePoll::Ready);
        assert_eq!(out, [1]);
        assert_eq!(r0.watermark(), Some(Timestamp(0)));
        let pos = r0.position().unwrap();
        let mut again = LineReader::open(&source, &ctx(0, 2, Some(pos))).unwrap();
        assert_eq!(
            again.watermark(),
            Some(Timestamp(0)),
            "the watermark is part of the position"
        );
        let mut rest = Vec::new();
        while again.poll(&mut rest, 10).unwrap() == SourcePoll::Ready {}
        assert_eq!(rest, [4], "subtask 0 of 2 owns lines 1, 3 (empty) and 5 (the 4)");
        let mut r1 = LineReader::open(&source, &ctx(1, 2, None)).unwrap();
        let mut odd = Vec::new();
        while r1.poll(&mut odd, 10).unwrap() == SourcePoll::Ready {}
        assert_eq!(odd, [2, 3, 5]);
    }

    #[test]
    fn a_bad_line_is_an_error_naming_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.txt");
        std::fs::write(&path, "1\nx\n").unwrap();
        let mut r = LineReader::open(&LineSource::new(&path, number), &ctx(0, 1, None)).unwrap();
        let e = r.poll(&mut Vec::new(), 10).unwrap_err().to_string();
        assert!(
            e.contains("in.txt") && e.contains("line 2") && e.contains("not a number"),
            "{e}"
        );
    }
}
