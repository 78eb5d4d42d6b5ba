//! Built-in incremental aggregations for `aggregate` and the window
//! operators: count, sum, min, max, average, over an `i64` field.
//!
//! Each is also a [`MergeAggregator`], so it works on session windows, whose
//! accumulators merge when sessions do.
//!
//! ```
//! use weir_operators::{Aggregator, aggregators::{Max, Avg}};
//! let max = Max(|r: &(u32, i64)| r.1);
//! let mut acc = max.create();
//! max.add(&mut acc, &(1, 7));
//! max.add(&mut acc, &(2, 3));
//! assert_eq!(max.result(&acc), 7);
//! let avg = Avg(|r: &i64| *r);
//! let mut acc = avg.create();
//! avg.add(&mut acc, &1);
//! avg.add(&mut acc, &2);
//! assert_eq!(avg.result(&acc), 1.5);
//! ```

use crate::keyed::Aggregator;

/// An aggregation whose accumulators can be combined (needed by session
/// windows: two sessions bridged by a record become one).
pub trait MergeAggregator<I, O>: Aggregator<I, O> {
    /// Adds everything `other` accumulated into `into`.
    fn merge(&self, into: &mut Self::Acc, other: Self::Acc);
}

/// The number of records.
#[derive(Debug, Clone, Copy, Default)]
pub struct Count;

impl<I> Aggregator<I, u64> for Count {
    type Acc = u64;
    fn create(&self) -> u64 {
        0
    }
    #[inline]
    fn add(&self, acc: &mut u64, _record: &I) {
        *acc += 1;
    }
    fn result(&self, acc: &u64) -> u64 {
        *acc
    }
}

impl<I> MergeAggregator<I, u64> for Count {
    fn merge(&self, into: &mut u64, other: u64) {
        *into += other;
    }
}

/// The sum of a field (wrapping on overflow is avoided by saturating).
#[derive(Debug, Clone, Copy)]
pub struct Sum<F>(pub F);

impl<I, F: Fn(&I) -> i64 + Clone + Send + 'static> Aggregator<I, i64> for Sum<F> {
    type Acc = i64;
    fn create(&self) -> i64 {
        0
    }
    #[inline]
    fn add(&self, acc: &mut i64, record: &I) {
        *acc = acc.saturating_add((self.0)(record));
    }
    fn result(&self, acc: &i64) -> i64 {
        *acc
    }
}

impl<I, F: Fn(&I) -> i64 + Clone + Send + 'static> MergeAggregator<I, i64> for Sum<F> {
    fn merge(&self, into: &mut i64, other: i64) {
        *into = into.saturating_add(other);
    }
}

/// The smallest value of a field.
#[derive(Debug, Clone, Copy)]
pub struct Min<F>(pub F);

impl<I, F: Fn(&I) -> i64 + Clone + Send + 'static> Aggregator<I, i64> for Min<F> {
    type Acc = i64;
    fn create(&self) -> i64 {
        i64::MAX
    }
    #[inline]
    fn add(&self, acc: &mut i64, record: &I) {
        *acc = (*acc).min((self.0)(record));
    }
    fn result(&self, acc: &i64) -> i64 {
        *acc
    }
}

impl<I, F: Fn(&I) -> i64 + Clone + Send + 'static> MergeAggregator<I, i64> for Min<F> {
    fn merge(&self, into: &mut i64, other: i64) {
        *into = (*into).min(other);
    }
}

/// The largest value of a field.
#[derive(Debug, Clone, Copy)]
pub struct Max<F>(pub F);

impl<I, F: Fn(&I) -> i64 + Clone + Send + 'static> Aggregator<I, i64> for Max<F> {
    type Acc = i64;
    fn create(&self) -> i64 {
        i64::MIN
    }
    #[inline]
    fn add(&self, acc: &mut i64, record: &I) {
        *acc = (*acc).max((self.0)(record));
    }
    fn result(&self, acc: &i64) -> i64 {
        *acc
    }
}

impl<I, F: Fn(&I) -> i64 + Clone + Send + 'static> MergeAggregator<I, i64> for Max<F> {
    fn merge(&self, into: &mut i64, other: i64) {
        *into = (*into).max(other);
    }
}

/// The mean of a field (exact sum in `i128`, then one division).
#[derive(Debug, Clone, Copy)]
pub struct Avg<F>(pub F);

impl<I, F: Fn(&I) -> i64 + Clone + Send + 'static> Aggregator<I, f64> for Avg<F> {
    type Acc = (i128, u64);
    fn create(&self) -> (i128, u64) {
        (0, 0)
    }
    #[inline]
    fn add(&self, acc: &mut (i128, u64), record: &I) {
        acc.0 += i128::from((self.0)(record));
        acc.1 += 1;
    }
    fn result(&self, acc: &(i128, u64)) -> f64 {
        if acc.1 == 0 {
            0.0
        } else {
            acc.0 as f64 / acc.1 as f64
        }
    }
}

impl<I, F: Fn(&I) -> i64 + Clone + Send + 'static> MergeAggregator<I, f64> for Avg<F> {
    fn merge(&self, into: &mut (i128, u64), other: (i128, u64)) {
        into.0 += other.0;
        into.1 += other.1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<O, A: MergeAggregator<i64, O>>(a: &A, values: &[i64]) -> O {
        // Split in two and merge, so merge is exercised with add.
        let (x, y) = values.split_at(values.len() / 2);
        let mut left = a.create();
        x.iter().for_each(|v| a.add(&mut left, v));
        let mut right = a.create();
        y.iter().for_each(|v| a.add(&mut right, v));
        a.merge(&mut left, right);
        a.result(&left)
    }

    #[test]
    fn built_in_aggregations_add_and_merge() {
        let v = [5, -3, 12, 7, 0];
        assert_eq!(run(&Count, &v), 5);
        assert_eq!(run(&Sum(|x: &i64| *x), &v), 21);
        assert_eq!(run(&Min(|x: &i64| *x), &v), -3);
        assert_eq!(run(&Max(|x: &i64| *x), &v), 12);
        assert_eq!(run(&Avg(|x: &i64| *x), &v), 4.2);
    }
}
