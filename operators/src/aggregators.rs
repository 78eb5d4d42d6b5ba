//! Built-in incremental aggregations for `aggregate` and the window
//! operators: count; sum, min and max over a field of any [`Numeric`] type
//! (integers, floats); average over an `i64` field.
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

use crate::keyed::{Aggregator, StateValue};

/// A number a [`Sum`], [`Min`] or [`Max`] aggregates: the integers and the
/// floats. Integer sums saturate instead of wrapping.
pub trait Numeric: StateValue + Copy + PartialOrd {
    /// The sum of nothing.
    const ZERO: Self;
    /// Below every value (where `Max` starts).
    const LOWEST: Self;
    /// Above every value (where `Min` starts).
    const HIGHEST: Self;
    /// `self + other`, saturating for integers.
    fn plus(self, other: Self) -> Self;
}

macro_rules! numeric_int {
    ($($t:ty),*) => {$(
        impl Numeric for $t {
            const ZERO: Self = 0;
            const LOWEST: Self = <$t>::MIN;
            const HIGHEST: Self = <$t>::MAX;
            #[inline]
            fn plus(self, other: Self) -> Self {
                self.saturating_add(other)
            }
        }
    )*};
}
numeric_int!(i8, i16, i32, i64, i128, u8, u16, u32, u64, u128, isize, usize);

macro_rules! numeric_float {
    ($($t:ty),*) => {$(
        impl Numeric for $t {
            const ZERO: Self = 0.0;
            const LOWEST: Self = <$t>::NEG_INFINITY;
            const HIGHEST: Self = <$t>::INFINITY;
            #[inline]
            fn plus(self, other: Self) -> Self {
                self + other
            }
        }
    )*};
}
numeric_float!(f32, f64);

/// The smaller of two (a NaN never wins).
#[inline]
fn smaller<N: Numeric>(a: N, b: N) -> N {
    if b < a {
        b
    } else {
        a
    }
}

/// The larger of two (a NaN never wins).
#[inline]
fn larger<N: Numeric>(a: N, b: N) -> N {
    if b > a {
        b
    } else {
        a
    }
}

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

/// The sum of a field of any [`Numeric`] type (integers saturate instead of
/// wrapping).
#[derive(Debug, Clone, Copy)]
pub struct Sum<F>(pub F);

impl<I, N: Numeric, F: Fn(&I) -> N + Clone + Send + 'static> Aggregator<I, N> for Sum<F> {
    type Acc = N;
    fn create(&self) -> N {
        N::ZERO
    }
    #[inline]
    fn add(&self, acc: &mut N, record: &I) {
        *acc = acc.plus((self.0)(record));
    }
    fn result(&self, acc: &N) -> N {
        *acc
    }
}

impl<I, N: Numeric, F: Fn(&I) -> N + Clone + Send + 'static> MergeAggregator<I, N> for Sum<F> {
    fn merge(&self, into: &mut N, other: N) {
        *into = into.plus(other);
    }
}

/// The smallest value of a field of any [`Numeric`] type.
#[derive(Debug, Clone, Copy)]
pub struct Min<F>(pub F);

impl<I, N: Numeric, F: Fn(&I) -> N + Clone + Send + 'static> Aggregator<I, N> for Min<F> {
    type Acc = N;
    fn create(&self) -> N {
        N::HIGHEST
    }
    #[inline]
    fn add(&self, acc: &mut N, record: &I) {
        *acc = smaller(*acc, (self.0)(record));
    }
    fn result(&self, acc: &N) -> N {
        *acc
    }
}

impl<I, N: Numeric, F: Fn(&I) -> N + Clone + Send + 'static> MergeAggregator<I, N> for Min<F> {
    fn merge(&self, into: &mut N, other: N) {
        *into = smaller(*into, other);
    }
}

/// The largest value of a field of any [`Numeric`] type.
#[derive(Debug, Clone, Copy)]
pub struct Max<F>(pub F);

impl<I, N: Numeric, F: Fn(&I) -> N + Clone + Send + 'static> Aggregator<I, N> for Max<F> {
    type Acc = N;
    fn create(&self) -> N {
        N::LOWEST
    }
    #[inline]
    fn add(&self, acc: &mut N, record: &I) {
        *acc = larger(*acc, (self.0)(record));
    }
    fn result(&self, acc: &N) -> N {
        *acc
    }
}

impl<I, N: Numeric, F: Fn(&I) -> N + Clone + Send + 'static> MergeAggregator<I, N> for Max<F> {
    fn merge(&self, into: &mut N, other: N) {
        *into = larger(*into, other);
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

    #[test]
    fn sum_min_and_max_take_any_numeric_field() {
        let v = [5, -3, 12, 7, 0];
        assert_eq!(run(&Sum(|x: &i64| *x as f64 / 2.0), &v), 10.5);
        assert_eq!(run(&Max(|x: &i64| *x as u8), &v), 253, "-3 as u8");
        assert_eq!(run(&Min(|x: &i64| *x as f32), &v), -3.0);
        assert_eq!(run(&Sum(|_: &i64| u8::MAX), &v), u8::MAX, "integers saturate");
        assert_eq!(
            run(&Max(|x: &i64| if *x == 12 { f64::NAN } else { *x as f64 }), &v),
            7.0,
            "NaN never wins"
        );
    }
}
