//! The operator contract and the stateless one-to-one operators.
//!
//! An [`Operator`] turns each input record into zero or more outputs appended
//! to `out`. The runtime calls it one record at a time from a batch and chains
//! consecutive operators of a task into one monomorphized loop, so a closure
//! passed to `map` compiles into the task's record loop with no dynamic
//! dispatch per record.

use crate::message::Timestamp;

/// An error raised by user code in an operator; it fails the job with the
/// operator's name attached.
#[derive(Debug)]
pub struct OperatorError(pub String);

impl std::fmt::Display for OperatorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for OperatorError {}

impl From<crate::codec::CodecError> for OperatorError {
    fn from(e: crate::codec::CodecError) -> Self {
        OperatorError(e.to_string())
    }
}

/// A one-to-one (not keyed) operator: callbacks with no-op defaults.
pub trait Operator<I, O>: Send + 'static {
    /// Processes one record, appending outputs to `out`.
    fn process(&mut self, record: I, out: &mut Vec<O>) -> Result<(), OperatorError>;
    /// Event time advanced to `watermark` on every input.
    fn on_watermark(&mut self, _watermark: Timestamp, _out: &mut Vec<O>) -> Result<(), OperatorError> {
        Ok(())
    }
    /// All inputs ended; last chance to emit.
    fn on_end(&mut self, _out: &mut Vec<O>) -> Result<(), OperatorError> {
        Ok(())
    }
}

/// `map`: one output per input.
#[derive(Clone)]
pub struct Map<F>(pub F);
impl<I, O, F: FnMut(I) -> O + Send + 'static> Operator<I, O> for Map<F> {
    #[inline]
    fn process(&mut self, record: I, out: &mut Vec<O>) -> Result<(), OperatorError> {
        out.push((self.0)(record));
        Ok(())
    }
}

/// `filter`: keeps the records for which the predicate holds.
#[derive(Clone)]
pub struct Filter<F>(pub F);
impl<T, F: FnMut(&T) -> bool + Send + 'static> Operator<T, T> for Filter<F> {
    #[inline]
    fn process(&mut self, record: T, out: &mut Vec<T>) -> Result<(), OperatorError> {
        if (self.0)(&record) {
            out.push(record);
        }
        Ok(())
    }
}

/// `flat_map`: any number of outputs per input.
#[derive(Clone)]
pub struct FlatMap<F>(pub F);
impl<I, O, It: IntoIterator<Item = O>, F: FnMut(I) -> It + Send + 'static> Operator<I, O> for FlatMap<F> {
    #[inline]
    fn process(&mut self, record: I, out: &mut Vec<O>) -> Result<(), OperatorError> {
        out.extend((self.0)(record));
        Ok(())
    }
}

/// `inspect`: sees every record, passes it on unchanged.
#[derive(Clone)]
pub struct Inspect<F>(pub F);
impl<T, F: FnMut(&T) + Send + 'static> Operator<T, T> for Inspect<F> {
    #[inline]
    fn process(&mut self, record: T, out: &mut Vec<T>) -> Result<(), OperatorError> {
        (self.0)(&record);
        out.push(record);
        Ok(())
    }
}

/// `try_map`: one output per input, or an error that fails the job.
#[derive(Clone)]
pub struct TryMap<F>(pub F);
impl<I, O, F: FnMut(I) -> Result<O, OperatorError> + Send + 'static> Operator<I, O> for TryMap<F> {
    #[inline]
    fn process(&mut self, record: I, out: &mut Vec<O>) -> Result<(), OperatorError> {
        out.push((self.0)(record)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<I, O>(op: &mut impl Operator<I, O>, input: Vec<I>) -> Vec<O> {
        let mut out = Vec::new();
        for r in input {
            op.process(r, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn stateless_operators_do_what_they_say() {
        assert_eq!(run(&mut Map(|x: i32| x * 2), vec![1, 2]), vec![2, 4]);
        assert_eq!(run(&mut Filter(|x: &i32| *x > 1), vec![1, 2, 3]), vec![2, 3]);
        assert_eq!(
            run(&mut FlatMap(|x: i32| vec![x; x as usize]), vec![1, 2]),
            vec![1, 2, 2]
        );
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counter = seen.clone();
        let inspect = move |_: &i32| {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        };
        assert_eq!(run(&mut Inspect(inspect), vec![5, 6]), vec![5, 6]);
        assert_eq!(seen.load(std::sync::atomic::Ordering::Relaxed), 2);
        let mut failing = TryMap(|x: i32| {
            if x < 0 {
                Err(OperatorError("negative".into()))
            } else {
                Ok(x)
            }
        });
        let mut out = Vec::new();
        assert!(failing.process(-1, &mut out).is_err());
    }
}
