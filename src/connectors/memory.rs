//! A bounded source of in-memory elements and a sink that prints: the
//! first job of a newcomer, and small tests (Flink's `fromElements` and
//! `print()`).
//!
//! ```
//! use weir::connectors::memory::{ElementSource, PrintSink};
//! use weir::{JobBuilder, JobConfig};
//!
//! let job = JobBuilder::new("words");
//! job.source("lines", ElementSource::factory(vec!["to be or not to be".to_string()]))
//!     .uid("lines")
//!     .flat_map(|line: String| line.split(' ').map(|w| (w.to_string(), 1u64)).collect::<Vec<_>>())
//!     .key_by(|(word, _): &(String, u64)| word.clone())
//!     .reduce("count", |a, b| (a.0.clone(), a.1 + b.1))
//!     .uid("count")
//!     .sink("print", PrintSink::factory());
//! # let dir = tempfile::tempdir().unwrap();
//! # let checkpoints = dir.path();
//! job.build()?.run(JobConfig::with_checkpoint_dir(checkpoints))?;
//! // prints `print[0]> ("to", 1)`, ..., `print[0]> ("be", 2)`, ...
//! # Ok::<(), weir::WeirError>(())
//! ```

use super::{ConnectorContext, Sink, Source, SourcePoll};
use crate::error::{Result, WeirError};
use std::fmt::Debug;
use std::sync::Arc;
use weir_operators::CheckpointId;

/// A bounded source of the given elements. Subtask `s` of `p` emits the
/// elements at indices `s, s + p, s + 2p, ...` in order; its position (how
/// many it emitted) is checkpointed, so a restored job does not emit an
/// element twice.
pub struct ElementSource<T> {
    elements: Arc<Vec<T>>,
    /// Index of the next element of this subtask.
    next: usize,
    step: usize,
}

impl<T: Clone + Send + Sync + 'static> ElementSource<T> {
    /// A factory for a source of `elements` (split over the subtasks).
    pub fn factory(elements: Vec<T>) -> impl Fn(ConnectorContext) -> Result<ElementSource<T>> + Send + 'static {
        let elements = Arc::new(elements);
        move |ctx| {
            let emitted = match &ctx.restored {
                Some(bytes) => {
                    let raw: [u8; 8] = bytes.as_slice().try_into().map_err(|_| WeirError::Connector {
                        connector: format!("{}[{}]", ctx.uid, ctx.subtask),
                        message: format!("the restored position is {} bytes, not 8", bytes.len()),
                    })?;
                    u64::from_be_bytes(raw) as usize
                }
                None => 0,
            };
            let step = ctx.parallelism.max(1);
            Ok(ElementSource {
                elements: elements.clone(),
                next: ctx.subtask + emitted * step,
                step,
            })
        }
    }
}

impl<T: Clone + Send + Sync + 'static> Source<T> for ElementSource<T> {
    fn poll(&mut self, out: &mut Vec<T>, max: usize) -> Result<SourcePoll> {
        if self.next >= self.elements.len() {
            return Ok(SourcePoll::End);
        }
        while out.len() < max && self.next < self.elements.len() {
            out.push(self.elements[self.next].clone());
            self.next += self.step;
        }
        Ok(SourcePoll::Ready)
    }

    fn position(&mut self) -> Result<Vec<u8>> {
        Ok(((self.next / self.step) as u64).to_be_bytes().to_vec())
    }

    fn describe_position(&self) -> String {
        format!("emitted={}", self.next / self.step)
    }
}

/// Prints every record to stdout as `<sink>[<subtask>]> {record:?}`, like
/// Flink's `print()`. Not transactional: after a crash, records since the
/// last checkpoint are printed again.
pub struct PrintSink {
    prefix: String,
}

impl PrintSink {
    /// A factory for a printing sink.
    pub fn factory() -> impl Fn(ConnectorContext) -> Result<PrintSink> + Send + 'static {
        |ctx| {
            Ok(PrintSink {
                prefix: format!("{}[{}]> ", ctx.uid, ctx.subtask),
            })
        }
    }
}

impl<T: Debug + Send + 'static> Sink<T> for PrintSink {
    fn is_stateful() -> bool {
        false
    }
    fn write(&mut self, records: &mut Vec<T>) -> Result<()> {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        for r in records.drain(..) {
            // A closed stdout (a pipe to `head`) is not the job's failure.
            let _ = writeln!(out, "{}{r:?}", self.prefix);
        }
        Ok(())
    }
    fn snapshot(&mut self, _id: CheckpointId) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }
    fn commit(&mut self, _id: CheckpointId) -> Result<()> {
        Ok(())
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
            ..ConnectorContext::standalone("elements", subtask, parallelism)
        }
    }

    #[test]
    fn subtasks_split_the_elements_and_resume_from_their_position() {
        let make = ElementSource::factory((0..10).collect::<Vec<u32>>());
        let mut s1 = make(ctx(1, 3, None)).unwrap();
        let mut out = Vec::new();
        assert_eq!(s1.poll(&mut out, 2).unwrap(), SourcePoll::Ready);
        assert_eq!(out, vec![1, 4]);
        let position = s1.position().unwrap();
        let mut again = make(ctx(1, 3, Some(position))).unwrap();
        out.clear();
        assert_eq!(again.poll(&mut out, 10).unwrap(), SourcePoll::Ready);
        assert_eq!(out, vec![7], "resumes after what the checkpoint holds");
        assert_eq!(again.poll(&mut out, 10).unwrap(), SourcePoll::End);
        assert!(make(ctx(0, 1, Some(vec![1, 2]))).is_err(), "a bad position is an error");
    }
}
