//! Fan-out: a stream with two consumers (`tee`) or split by a function
//! (`split`). Both branches stay in the vertex of the stream they fork from
//! (one task runs the fork and both chains); the vertex's task maker is
//! complete once both branches have ended (in a sink or an exchange).

use super::{Pending, Stream, TailMaker};
use crate::runtime::plan::{TaskContext, TaskMaker};
use crate::task::chain::Downstream;
use crate::task::fork::ForkStage;
use std::sync::{Arc, Mutex};
use weir_operators::Either;

/// What the two branches of one fork share until both have ended.
struct ForkJoin<T, A, B, R> {
    inner: Option<Box<dyn Pending<T>>>,
    left: Option<TailMaker<A>>,
    right: Option<TailMaker<B>>,
    /// The routing function, cloned for each subtask (a concrete type: the
    /// per-record call is static and inlines).
    route: Option<R>,
}

impl<T, A, B, R> ForkJoin<T, A, B, R>
where
    T: Send + 'static,
    A: Send + 'static,
    B: Send + 'static,
    R: FnMut(T, &mut Vec<A>, &mut Vec<B>) + Clone + Send + 'static,
{
    /// The vertex's task maker once both branches ended, else `None`.
    fn try_finish(&mut self) -> Option<TaskMaker> {
        if self.left.is_none() || self.right.is_none() {
            return None;
        }
        let (left, right, route) = (self.left.take()?, self.right.take()?, self.route.take()?);
        let tail: TailMaker<T> = Box::new(move |cx: &TaskContext<'_>| {
            let (l, r) = (left(cx)?, right(cx)?);
            Ok(Box::new(ForkStage::new(route.clone(), l, r)) as Box<dyn Downstream<T>>)
        });
        self.inner.take()?.finish(tail)
    }
}

type Shared<T, A, B, R> = Arc<Mutex<ForkJoin<T, A, B, R>>>;

/// The left branch of a fork.
struct LeftPending<T, A, B, R>(Shared<T, A, B, R>);
/// The right branch of a fork.
struct RightPending<T, A, B, R>(Shared<T, A, B, R>);

impl<T, A, B, R> Pending<A> for LeftPending<T, A, B, R>
where
    T: Send + 'static,
    A: Send + 'static,
    B: Send + 'static,
    R: FnMut(T, &mut Vec<A>, &mut Vec<B>) + Clone + Send + 'static,
{
    fn finish(self: Box<Self>, tail: TailMaker<A>) -> Option<TaskMaker> {
        let mut join = self.0.lock().ok()?;
        join.left = Some(tail);
        join.try_finish()
    }
}

impl<T, A, B, R> Pending<B> for RightPending<T, A, B, R>
where
    T: Send + 'static,
    A: Send + 'static,
    B: Send + 'static,
    R: FnMut(T, &mut Vec<A>, &mut Vec<B>) + Clone + Send + 'static,
{
    fn finish(self: Box<Self>, tail: TailMaker<B>) -> Option<TaskMaker> {
        let mut join = self.0.lock().ok()?;
        join.right = Some(tail);
        join.try_finish()
    }
}

impl<T: Send + 'static> Stream<T> {
    /// Routes each record with `route` into two streams (to either, both or
    /// neither): the general fork that `tee` and `split` are made of.
    fn fork<A: Send + 'static, B: Send + 'static, R>(mut self, name: &str, route: R) -> (Stream<A>, Stream<B>)
    where
        R: FnMut(T, &mut Vec<A>, &mut Vec<B>) + Clone + Send + 'static,
    {
        let op = self.graph.borrow_mut().add_operator(name, false, self.vertex);
        let join: Shared<T, A, B, R> = Arc::new(Mutex::new(ForkJoin {
            inner: Some(self.take()),
            left: None,
            right: None,
            route: Some(route),
        }));
        let left = Stream::new(self.graph.clone(), self.vertex, op, Box::new(LeftPending(join.clone())));
        let right = Stream::new(self.graph.clone(), self.vertex, op, Box::new(RightPending(join)));
        (left, right)
    }

    /// The stream twice, for two consumers (Flink uses a stream as often as
    /// you like): each record is cloned once for the second branch; barriers,
    /// watermarks and the end reach both. Chain a `tee` again for more.
    pub fn tee(self) -> (Stream<T>, Stream<T>)
    where
        T: Clone,
    {
        self.fork("tee", |t: T, a: &mut Vec<T>, b: &mut Vec<T>| {
            b.push(t.clone());
            a.push(t);
        })
    }

    /// Splits by `f` into the `Left` and `Right` records, without copying:
    /// a side output (late records, bad records, anything tagged) that ends
    /// in its own sink.
    pub fn split<A: Send + 'static, B: Send + 'static, F>(self, mut f: F) -> (Stream<A>, Stream<B>)
    where
        F: FnMut(T) -> Either<A, B> + Clone + Send + 'static,
    {
        self.fork("split", move |t: T, a: &mut Vec<A>, b: &mut Vec<B>| match f(t) {
            Either::Left(x) => a.push(x),
            Either::Right(y) => b.push(y),
        })
    }
}
