//! A bounded source of one record per line of a file (JSON lines, CSV...).
//!
//! Every subtask reads the file and keeps the lines whose number `% parallelism`
//! is its index, so parsing is spread over the subtasks. The position (byte
//! offset and line number of the next line) is checkpointed; a restored run
//! seeks there. With [`LineSource::event_time`], the source emits watermarks:
//! newest event time − out-of-orderness − 1 (the newest time is part of the
//! position, so the watermark does not go back after a restore).
//!
//! The file is cut into chunks of whole lines ([`CHUNK_BYTES`]) that are
//! parsed one at a time and handed on in file order. With
//! [`LineSource::parse_threads`], helper threads parse the chunks ahead of the
//! subtask (which parses too while it waits): parsing is most of a JSON job's
//! work, and this puts a spare core on it without changing the order of the
//! records, the positions or the errors.

use super::{ConnectorContext, Source, SourcePoll};
use crate::error::{Result, WeirError};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;
use weir_operators::Timestamp;

/// Parses one line (without its newline); an `Err` fails the job naming the file and line.
pub type LineParser<T> = fn(&[u8]) -> std::result::Result<T, String>;

/// A record's event time and the bound on disorder in ms.
type EventTime<T> = (fn(&T) -> i64, i64);

/// Bytes of the file parsed as one unit (whole lines; longer when one line is).
/// Small enough that a chunk's records usually fit one batch of the runtime.
pub const CHUNK_BYTES: usize = 128 << 10;

/// A line-file source, described; [`LineSource::factory`] makes it a source.
#[derive(Debug, Clone)]
pub struct LineSource<T> {
    path: PathBuf,
    parse: LineParser<T>,
    event_time: Option<EventTime<T>>,
    parse_threads: usize,
    records: Arc<AtomicU64>,
}

impl<T: Send + 'static> LineSource<T> {
    /// Reads `path`, one record per non-empty line, parsed by `parse`.
    pub fn new(path: impl Into<PathBuf>, parse: LineParser<T>) -> Self {
        LineSource {
            path: path.into(),
            parse,
            event_time: None,
            parse_threads: 0,
            records: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Event time of a record and the bound on disorder: enables watermarks.
    pub fn event_time(mut self, of: fn(&T) -> i64, out_of_orderness_ms: i64) -> Self {
        self.event_time = Some((of, out_of_orderness_ms));
        self
    }

    /// Helper threads per subtask that parse chunks ahead of it (default 0:
    /// the subtask parses alone). Worth it when cores are spare, e.g. one at
    /// parallelism 1 on two cores; records come out in the same order.
    pub fn parse_threads(mut self, threads: usize) -> Self {
        self.parse_threads = threads;
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

fn source_error(name: &str, path: &Path, message: String) -> WeirError {
    WeirError::Connector {
        connector: name.to_string(),
        message: format!("{}: {message}", path.display()),
    }
}

/// Cuts the file into chunks of whole lines.
struct LineCutter {
    file: File,
    /// The start of a line whose end was not read yet.
    carry: Vec<u8>,
    /// Byte offset of the next chunk (of `carry[0]`).
    offset: u64,
    at_eof: bool,
}

impl LineCutter {
    /// The next chunk into the front of `buf`, with its byte offset and
    /// length; `None` at the end of the file. A chunk ends with a newline
    /// unless it is the last line of a file without one. `buf` only grows:
    /// a recycled buffer is not zeroed again (that was 5 % of a q0 run).
    fn cut(&mut self, buf: &mut Vec<u8>) -> std::io::Result<Option<(u64, usize)>> {
        let mut filled = self.carry.len();
        if buf.len() < filled {
            buf.resize(filled, 0);
        }
        buf[..filled].copy_from_slice(&self.carry);
        self.carry.clear();
        while !self.at_eof {
            let want = filled + CHUNK_BYTES;
            if buf.len() < want {
                buf.resize(want, 0);
            }
            let n = loop {
                match self.file.read(&mut buf[filled..want]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            self.at_eof = n == 0;
            let read = filled..filled + n;
            filled += n;
            // Keep a partial last line for the next chunk; read on while not one line is whole.
            if let Some(i) = memchr::memrchr(b'\n', &buf[read.clone()]) {
                let end = read.start + i + 1;
                self.carry.extend_from_slice(&buf[end..filled]);
                filled = end;
                break;
            }
        }
        if filled == 0 {
            return Ok(None);
        }
        let offset = self.offset;
        self.offset += filled as u64;
        Ok(Some((offset, filled)))
    }
}

/// The records of one chunk, parsed.
struct Parsed<T> {
    records: Vec<T>,
    /// Per record: the byte offset after its line and the lines of the chunk up to and including it.
    ends: Vec<(u64, u64)>,
    /// The byte offset after the chunk and its number of lines.
    end_offset: u64,
    lines: u64,
    /// Why the job fails after the records before it.
    error: Option<ChunkError>,
}

/// What ends a job at a chunk.
enum ChunkError {
    /// A line (lines into the chunk) that failed to parse.
    Line(u64, String),
    /// The file could not be read.
    Read(String),
}

impl<T> Parsed<T> {
    fn empty(records: Vec<T>, offset: u64) -> Self {
        Parsed {
            ends: Vec::with_capacity(records.capacity()),
            records,
            end_offset: offset,
            lines: 0,
            error: None,
        }
    }
}

/// A chunk cut from the file, to parse.
struct Cut {
    seq: u64,
    offset: u64,
    /// Absolute number of its first line, known only when subtasks split lines (parallelism > 1).
    first_line: Option<u64>,
    /// The chunk is `bytes[..len]`.
    bytes: Vec<u8>,
    len: usize,
}

/// What the subtask and its parse helpers share.
struct Pipeline<T> {
    cutter: LineCutter,
    /// Sequence number of the next chunk to cut, and of the next to hand on.
    next_cut: u64,
    next_deliver: u64,
    /// Parsed chunks `next_deliver..`, `None` while one is being parsed.
    parsed: VecDeque<Option<Parsed<T>>>,
    /// Absolute line number at the cutter (only counted when parallelism > 1).
    cut_line: u64,
    /// No more chunks: the end of the file or a read error was cut.
    cut_all: bool,
    stop: bool,
    spare_bytes: Vec<Vec<u8>>,
    spare_records: Vec<Vec<T>>,
}

struct Shared<T> {
    state: Mutex<Pipeline<T>>,
    /// A chunk was parsed, or one was handed on (room to cut), or stop.
    changed: Condvar,
    parse: LineParser<T>,
    subtask: u64,
    parallelism: u64,
    /// Chunks cut and not yet handed on, at most.
    max_chunks_ahead: u64,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, Pipeline<T>> {
        // A panic while holding the lock cannot leave the pipeline half-changed
        // in a way that matters more than the failure it reports.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Cuts the next chunk, under the lock; `None` when there is none now
    /// (all cut, stopping, or `max_chunks_ahead` chunks waiting).
    fn cut(&self, p: &mut Pipeline<T>) -> Option<Cut> {
        if p.cut_all || p.stop || p.next_cut - p.next_deliver >= self.max_chunks_ahead {
            return None;
        }
        let mut bytes = p.spare_bytes.pop().unwrap_or_default();
        let seq = p.next_cut;
        let cut = match p.cutter.cut(&mut bytes) {
            Ok(Some((offset, len))) => {
                let first_line = (self.parallelism > 1).then(|| {
                    let first = p.cut_line;
                    p.cut_line += memchr::memchr_iter(b'\n', &bytes[..len]).count() as u64;
                    first
                });
                Cut {
                    seq,
                    offset,
                    first_line,
                    bytes,
                    len,
                }
            }
            Ok(None) => {
                p.cut_all = true;
                return None;
            }
            Err(e) => {
                // Handed on in order like a chunk: the records before it come first.
                p.cut_all = true;
                p.next_cut += 1;
                let mut failed = Parsed::empty(Vec::new(), p.cutter.offset);
                failed.error = Some(ChunkError::Read(format!("read error at byte {}: {e}", p.cutter.offset)));
                p.parsed.push_back(Some(failed));
                return None;
            }
        };
        p.next_cut += 1;
        p.parsed.push_back(None);
        Some(cut)
    }

    /// Cuts the next chunk if one may be cut, parses it without the lock and
    /// files it; says whether it did.
    fn parse_next<'a>(&'a self, mut p: MutexGuard<'a, Pipeline<T>>) -> (MutexGuard<'a, Pipeline<T>>, bool) {
        let Some(cut) = self.cut(&mut p) else {
            return (p, false);
        };
        let records = p.spare_records.pop().unwrap_or_default();
        drop(p);
        let mut parsed = Parsed::empty(records, cut.offset);
        let (parse, subtask, parallelism) = (self.parse, self.subtask, self.parallelism);
        let mut chunk = || {
            parse_chunk(
                &cut.bytes[..cut.len],
                cut.first_line,
                subtask,
                parallelism,
                parse,
                &mut parsed,
            )
        };
        if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut chunk)) {
            // The line being parsed is the chunk's last counted one.
            let message = format!("the parser panicked: {}", crate::error::panic_message(&panic));
            parsed.error = Some(ChunkError::Line(parsed.lines.saturating_sub(1), message));
        }
        let mut p = self.lock();
        let slot = (cut.seq - p.next_deliver) as usize;
        if let Some(s) = p.parsed.get_mut(slot) {
            *s = Some(parsed);
        }
        p.spare_bytes.push(cut.bytes);
        self.changed.notify_all();
        (p, true)
    }

    /// A helper thread: parse chunks until all are cut or the reader stops.
    fn help(&self) {
        let mut p = self.lock();
        while !(p.stop || p.cut_all) {
            let (guard, parsed) = self.parse_next(p);
            p = guard;
            if !parsed {
                p = self.changed.wait(p).unwrap_or_else(|e| e.into_inner());
            }
        }
    }
}

/// Parses the lines of `bytes` that belong to `subtask` into `parsed`
/// (which starts at the chunk's byte offset), stopping at a bad line.
fn parse_chunk<T>(
    bytes: &[u8],
    first_line: Option<u64>,
    subtask: u64,
    parallelism: u64,
    parse: LineParser<T>,
    parsed: &mut Parsed<T>,
) {
    let offset = parsed.end_offset;
    let mut at = 0usize;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let (len, step) = match memchr::memchr(b'\n', rest) {
            Some(i) => (i, i + 1),
            None => (rest.len(), rest.len()), // the last line of a file without a final newline
        };
        let text = rest[..len].trim_ascii();
        at += step;
        parsed.lines += 1;
        parsed.end_offset = offset + at as u64;
        let lines = parsed.lines;
        let mine = first_line.is_none_or(|first| (first + lines - 1) % parallelism == subtask);
        if !mine || text.is_empty() {
            continue;
        }
        match parse(text) {
            Ok(r) => {
                parsed.records.push(r);
                parsed.ends.push((parsed.end_offset, lines));
            }
            Err(e) => {
                parsed.error = Some(ChunkError::Line(lines - 1, e));
                return;
            }
        }
    }
}

/// A running line-file source subtask.
pub struct LineReader<T> {
    name: String,
    path: PathBuf,
    shared: Arc<Shared<T>>,
    helpers: Vec<std::thread::JoinHandle<()>>,
    /// The chunk being handed on: its records from `taken` on are not yet.
    current: Option<Parsed<T>>,
    taken: usize,
    event_time: Option<EventTime<T>>,
    /// Line number at the start of the current chunk.
    base_line: u64,
    /// Byte offset and number of the next line after the records handed on.
    offset: u64,
    line: u64,
    newest: Option<i64>,
    records: Arc<AtomicU64>,
}

impl<T: Send + 'static> LineReader<T> {
    /// Opens subtask `ctx.subtask`, at the restored position if any.
    ///
    /// # Errors
    /// The file cannot be opened or the restored position is malformed.
    pub fn open(source: &LineSource<T>, ctx: &ConnectorContext) -> Result<Self> {
        let name = format!("{}[{}]", ctx.uid, ctx.subtask);
        let mut file =
            File::open(&source.path).map_err(|e| source_error(&name, &source.path, format!("cannot open: {e}")))?;
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
                return Err(source_error(
                    &name,
                    &source.path,
                    format!("restored position has {} bytes, expected 16 or 24", b.len()),
                ))
            }
        };
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| source_error(&name, &source.path, format!("cannot seek to byte {offset}: {e}")))?;
        let shared = Arc::new(Shared {
            state: Mutex::new(Pipeline {
                cutter: LineCutter {
                    file,
                    carry: Vec::new(),
                    offset,
                    at_eof: false,
                },
                next_cut: 0,
                next_deliver: 0,
                parsed: VecDeque::new(),
                cut_line: line,
                cut_all: false,
                stop: false,
                spare_bytes: Vec::new(),
                spare_records: Vec::new(),
            }),
            changed: Condvar::new(),
            parse: source.parse,
            subtask: ctx.subtask as u64,
            parallelism: ctx.parallelism.max(1) as u64,
            // Enough for every thread to parse one while the next waits to be handed on.
            max_chunks_ahead: 2 * (source.parse_threads as u64 + 1),
        });
        let mut reader = LineReader {
            name: name.clone(),
            path: source.path.clone(),
            shared: shared.clone(),
            helpers: Vec::new(),
            current: None,
            taken: 0,
            event_time: source.event_time,
            base_line: line,
            offset,
            line,
            newest,
            records: source.records.clone(),
        };
        for i in 0..source.parse_threads {
            let shared = shared.clone();
            let helper = std::thread::Builder::new()
                .name(format!("{name}-parse-{i}"))
                .spawn(move || shared.help())
                .map_err(|e| source_error(&name, &source.path, format!("cannot start a parse thread: {e}")))?;
            reader.helpers.push(helper);
        }
        Ok(reader)
    }

    /// The next parsed chunk in file order. Parses one itself while the next
    /// is not ready; waits a little for a helper's when no more may be cut.
    fn next_chunk(&mut self) -> Next<T> {
        let shared = &*self.shared;
        let mut p = shared.lock();
        loop {
            if matches!(p.parsed.front(), Some(Some(_))) {
                if let Some(Some(chunk)) = p.parsed.pop_front() {
                    p.next_deliver += 1;
                    drop(p);
                    shared.changed.notify_all(); // room to cut one more
                    return Next::Chunk(chunk);
                }
            }
            if p.parsed.is_empty() && p.cut_all {
                return Next::End;
            }
            let (guard, parsed) = shared.parse_next(p);
            p = guard;
            if !parsed && p.parsed.front().is_some_and(Option::is_none) {
                // A helper parses the next chunk and no more may be cut: wait for it.
                let (guard, timeout) = shared
                    .changed
                    .wait_timeout(p, HELPER_WAIT)
                    .unwrap_or_else(|e| e.into_inner());
                if timeout.timed_out() {
                    return Next::NotYet;
                }
                p = guard;
            }
        }
    }

    /// Hands back a spent record buffer for the parsers to reuse.
    fn recycle(&self, mut records: Vec<T>) {
        if records.capacity() > 0 {
            records.clear();
            let mut p = self.shared.lock();
            if p.spare_records.len() < p.parsed.len() + 2 {
                p.spare_records.push(records);
            }
        }
    }
}

/// How long the subtask waits for a helper's chunk before it looks at its commands again.
const HELPER_WAIT: Duration = Duration::from_millis(5);

impl<T> Drop for LineReader<T> {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.changed.notify_all();
        for helper in self.helpers.drain(..) {
            let _ = helper.join();
        }
    }
}

/// What [`LineReader::next_chunk`] found.
enum Next<T> {
    Chunk(Parsed<T>),
    /// A helper is still parsing the next chunk.
    NotYet,
    End,
}

impl<T: Send + 'static> Source<T> for LineReader<T> {
    fn poll(&mut self, out: &mut Vec<T>, max: usize) -> Result<SourcePoll> {
        let start = out.len();
        let mut ended = false;
        while out.len() - start < max {
            let chunk = match self.current.as_mut() {
                Some(chunk) => chunk,
                None => match self.next_chunk() {
                    Next::Chunk(chunk) => {
                        self.taken = 0;
                        self.current.insert(chunk)
                    }
                    Next::NotYet => break,
                    Next::End => {
                        ended = true;
                        break;
                    }
                },
            };
            let n = chunk.records.len().min(max - (out.len() - start));
            if n > 0 {
                let (end, lines) = chunk.ends[self.taken + n - 1];
                if out.is_empty() && n == chunk.records.len() {
                    std::mem::swap(out, &mut chunk.records); // the whole chunk: no copy
                } else {
                    out.extend(chunk.records.drain(..n));
                }
                self.taken += n;
                self.offset = end;
                self.line = self.base_line + lines;
                if let Some((of, _)) = self.event_time {
                    let newest = out[out.len() - n..].iter().map(of).max();
                    self.newest = self.newest.max(newest);
                }
            }
            if !chunk.records.is_empty() {
                break; // the batch is full
            }
            // Every record of the chunk is out; then its error, if it has one.
            let failure = match &chunk.error {
                Some(ChunkError::Line(line, e)) => Some(format!("line {}: {e}", self.base_line + line + 1)),
                Some(ChunkError::Read(e)) => Some(e.clone()),
                None => None,
            };
            if let Some(message) = failure {
                if out.len() > start {
                    break; // the records before the bad line first
                }
                return Err(source_error(&self.name, &self.path, message));
            }
            self.offset = chunk.end_offset;
            self.line = self.base_line + chunk.lines;
            self.base_line = self.line;
            let spent = std::mem::take(&mut chunk.records);
            self.current = None;
            self.recycle(spent);
        }
        self.records.fetch_add((out.len() - start) as u64, Ordering::Relaxed);
        Ok(if out.len() > start {
            SourcePoll::Ready
        } else if ended {
            SourcePoll::End
        } else {
            SourcePoll::Idle(Duration::ZERO)
        })
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
            incarnation: "test".into(),
            checkpoint_request: crate::connectors::CheckpointRequest::none(),
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
        let mut before = Vec::new();
        assert_eq!(r.poll(&mut before, 10).unwrap(), SourcePoll::Ready);
        assert_eq!(before, [1], "the records before the bad line come first");
        let e = r.poll(&mut Vec::new(), 10).unwrap_err().to_string();
        assert!(
            e.contains("in.txt") && e.contains("line 2") && e.contains("not a number"),
            "{e}"
        );
    }

    /// Every record of `reader`, polled `max` at a time, with the position after each poll.
    fn drain_all(reader: &mut LineReader<i64>, max: usize) -> (Vec<i64>, Vec<Vec<u8>>) {
        let (mut all, mut positions) = (Vec::new(), Vec::new());
        loop {
            let mut out = Vec::new();
            match reader.poll(&mut out, max).unwrap() {
                SourcePoll::End => return (all, positions),
                _ => {
                    all.extend(out);
                    positions.push(reader.position().unwrap());
                }
            }
        }
    }

    /// Many chunks of numbered lines, with empty lines, a line longer than a chunk and no final newline.
    fn big_file(dir: &Path) -> (PathBuf, Vec<i64>) {
        let mut text = String::new();
        let mut numbers = Vec::new();
        for i in 0..300_000i64 {
            if i % 1000 == 7 {
                text.push('\n');
            }
            if i == 150_000 {
                // one number padded to more than a chunk
                text.push_str(&" ".repeat(CHUNK_BYTES + 10));
            }
            text.push_str(&i.to_string());
            numbers.push(i);
            if i + 1 < 300_000 {
                text.push('\n');
            }
        }
        let path = dir.join("big.txt");
        std::fs::write(&path, text).unwrap();
        (path, numbers)
    }

    #[test]
    fn parse_threads_keep_the_order_the_positions_and_the_split() {
        let dir = tempfile::tempdir().unwrap();
        let (path, numbers) = big_file(dir.path());
        for parallelism in [1, 2] {
            let mut alone = Vec::new();
            for subtask in 0..parallelism {
                let source = LineSource::new(&path, number).event_time(|t| *t, 0);
                let mut r = LineReader::open(&source, &ctx(subtask, parallelism, None)).unwrap();
                let (serial, serial_positions) = drain_all(&mut r, 1024);
                for threads in [1, 3] {
                    let source = LineSource::new(&path, number)
                        .event_time(|t| *t, 0)
                        .parse_threads(threads);
                    let mut r = LineReader::open(&source, &ctx(subtask, parallelism, None)).unwrap();
                    let (helped, helped_positions) = drain_all(&mut r, 1024);
                    assert_eq!(helped, serial, "p={parallelism} subtask {subtask}, {threads} threads");
                    assert_eq!(helped_positions.last(), serial_positions.last());
                }
                alone.extend(serial);
            }
            alone.sort_unstable();
            assert_eq!(alone, numbers, "the subtasks of p={parallelism} read every line once");
        }
    }

    #[test]
    fn a_restore_mid_chunk_resumes_at_the_next_record() {
        let dir = tempfile::tempdir().unwrap();
        let (path, numbers) = big_file(dir.path());
        let source = LineSource::new(&path, number).event_time(|t| *t, 0).parse_threads(1);
        let mut r = LineReader::open(&source, &ctx(0, 1, None)).unwrap();
        let mut first = Vec::new();
        // Odd batch sizes cut chunks in the middle.
        while first.len() < 123_457 {
            let mut out = Vec::new();
            r.poll(&mut out, 333).unwrap();
            first.extend(out);
        }
        let pos = r.position().unwrap();
        drop(r);
        let mut again = LineReader::open(&source, &ctx(0, 1, Some(pos))).unwrap();
        assert_eq!(again.watermark(), Some(Timestamp(*first.last().unwrap() - 1)));
        let (rest, _) = drain_all(&mut again, 1000);
        first.extend(rest);
        assert_eq!(first, numbers);
    }

    #[test]
    fn with_helpers_a_bad_line_still_fails_after_the_records_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.txt");
        let mut text: String = (0..100_000).map(|i| format!("{i}\n")).collect();
        text.push_str("oops\n");
        text.push_str(&(0..100_000).map(|i| format!("{i}\n")).collect::<String>());
        std::fs::write(&path, text).unwrap();
        let source = LineSource::new(&path, number).parse_threads(2);
        let mut r = LineReader::open(&source, &ctx(0, 1, None)).unwrap();
        let mut got = Vec::new();
        let error = loop {
            let mut out = Vec::new();
            match r.poll(&mut out, 1024) {
                Ok(SourcePoll::End) => panic!("the bad line was not reported"),
                Ok(_) => got.extend(out),
                Err(e) => break e.to_string(),
            }
        };
        assert_eq!(
            got,
            (0..100_000).collect::<Vec<i64>>(),
            "every record before the bad line"
        );
        assert!(
            error.contains("line 100001") && error.contains("not a number"),
            "{error}"
        );
    }

    fn number_or_panic(line: &[u8]) -> std::result::Result<i64, String> {
        assert!(line != b"boom", "boom at this line");
        number(line)
    }

    #[test]
    fn a_parser_panic_fails_naming_its_line_after_the_records_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.txt");
        let mut text: String = (0..100_000).map(|i| format!("{i}\n")).collect();
        text.push_str("boom\n1\n");
        std::fs::write(&path, text).unwrap();
        let source = LineSource::new(&path, number_or_panic).parse_threads(1);
        let mut r = LineReader::open(&source, &ctx(0, 1, None)).unwrap();
        let mut got = 0;
        let error = loop {
            let mut out = Vec::new();
            match r.poll(&mut out, 1024) {
                Ok(SourcePoll::End) => panic!("the panic was not reported"),
                Ok(_) => got += out.len(),
                Err(e) => break e.to_string(),
            }
        };
        assert_eq!(got, 100_000);
        assert!(
            error.contains("line 100001") && error.contains("boom at this line"),
            "{error}"
        );
    }
}
