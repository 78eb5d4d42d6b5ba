//! The graph API: describe a job with typed streams, then `build()` it into a
//! validated [`Job`].
//!
//! ```no_run
//! use weir::{JobBuilder, JobConfig, connectors::generator::Generator, connectors::collect::CountingSink};
//! let job = JobBuilder::new("w1");
//! job.source("gen", Generator::w1_factory(Some(1_000_000), None))
//!     .uid("gen")
//!     .key_by(|e| e.key)
//!     .reduce("sum", |a, b| weir::connectors::generator::W1Event { value: a.value + b.value, ..*b })
//!     .uid("sum")
//!     .sink("count", CountingSink::factory());
//! let summary = job.build()?.run(JobConfig::with_checkpoint_dir("/tmp/weir-doc"))?;
//! # Ok::<(), weir::WeirError>(())
//! ```
//!
//! # Tasks and chaining
//! Consecutive one-to-one operators (`map`, `filter`, `flat_map`, `inspect`,
//! a keyed `process` right after its `key_by`) form one *vertex*; each of its
//! `parallelism` subtasks is one task on one thread, running the whole chain.
//! `key_by`, `rebalance` and `union` start a new vertex, connected by bounded
//! channels. `parallelism(n)` sets the parallelism of the current vertex.
//!
//! # Uids
//! Every stateful operator (sources, keyed functions, stateful sinks) needs a
//! stable `uid`: it names the operator's state in checkpoints, so state is
//! restored after code changes. `build()` rejects a missing or duplicate uid.

mod fork;
mod keyed;

pub use keyed::KeyedStream;

use crate::config::JobConfig;
use crate::connectors::{ConnectorContext, Sink, Source};
use crate::error::{Result, WeirError};
use crate::runtime::plan::{ErasedEdge, OperatorInfo, Plan, TaskBody, TaskContext, TaskMaker, Vertex};
use crate::runtime::{JobHandle, JobSummary};
use crate::task::chain::{ChannelOut, Downstream, KeyRouter, RoundRobin, Router, SinkTail, Stage};
use crate::task::run::{run_input, run_source};
use crate::task::watermarks::{BoundedOutOfOrderness, IdlenessStage, Punctuated, WatermarkGenerator, WatermarkStage};
use crossbeam_channel::{Receiver, Sender};
use std::cell::RefCell;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use weir_operators::{
    Either, Filter, FlatMap, Inspect, Map, Message, Operator, OperatorError, StateKey, TryMap, DEFAULT_MAX_PARALLELISM,
};

type TailMaker<T> = Box<dyn Fn(&TaskContext<'_>) -> Result<Box<dyn Downstream<T>>> + Send>;
type StageMaker<I, O> = Box<dyn Fn(&TaskContext<'_>, Box<dyn Downstream<O>>) -> Result<Box<dyn Downstream<I>>> + Send>;

type EdgeChannels<T> = (
    Vec<Option<Vec<Sender<Message<T>>>>>,
    Vec<Option<Vec<Receiver<Message<T>>>>>,
);

struct Edge<T> {
    from: usize,
    to: usize,
    kind: &'static str,
    channels: Mutex<EdgeChannels<T>>,
}

impl<T: Send> Edge<T> {
    fn new(from: usize, to: usize, kind: &'static str) -> Arc<Self> {
        Arc::new(Edge {
            from,
            to,
            kind,
            channels: Mutex::new((Vec::new(), Vec::new())),
        })
    }

    fn take_senders(&self, subtask: usize) -> Result<Vec<Sender<Message<T>>>> {
        let mut c = self
            .channels
            .lock()
            .map_err(|_| WeirError::Internal("an edge's channels were poisoned".into()))?;
        c.0.get_mut(subtask)
            .and_then(Option::take)
            .ok_or_else(|| WeirError::Internal(format!("no channels for subtask {subtask}")))
    }

    fn take_receivers(&self, subtask: usize) -> Result<Vec<Receiver<Message<T>>>> {
        let mut c = self
            .channels
            .lock()
            .map_err(|_| WeirError::Internal("an edge's channels were poisoned".into()))?;
        c.1.get_mut(subtask)
            .and_then(Option::take)
            .ok_or_else(|| WeirError::Internal(format!("no channels for subtask {subtask}")))
    }
}

impl<T: Send> ErasedEdge for Edge<T> {
    fn endpoints(&self) -> (usize, usize) {
        (self.from, self.to)
    }
    fn kind(&self) -> &'static str {
        self.kind
    }
    fn materialize(&self, from_parallelism: usize, to_parallelism: usize, capacity: usize) {
        let mut senders: Vec<Vec<Sender<Message<T>>>> = (0..from_parallelism).map(|_| Vec::new()).collect();
        let mut receivers: Vec<Vec<Receiver<Message<T>>>> = (0..to_parallelism).map(|_| Vec::new()).collect();
        for s in senders.iter_mut() {
            for r in receivers.iter_mut() {
                let (tx, rx) = crossbeam_channel::bounded(capacity);
                s.push(tx);
                r.push(rx);
            }
        }
        if let Ok(mut c) = self.channels.lock() {
            *c = (
                senders.into_iter().map(Some).collect(),
                receivers.into_iter().map(Some).collect(),
            );
        }
    }
}

struct GraphInner {
    name: String,
    max_parallelism: u16,
    default_parallelism: usize,
    operators: Vec<OperatorInfo>,
    vertices: Vec<Vertex>,
    edges: Vec<Arc<dyn ErasedEdge>>,
    dangling: Vec<String>,
    sinks: usize,
}

impl GraphInner {
    fn add_vertex(&mut self, is_source: bool) -> usize {
        self.vertices.push(Vertex {
            name: String::new(),
            parallelism: self.default_parallelism,
            is_source,
            make: None,
        });
        self.vertices.len() - 1
    }

    fn add_operator(&mut self, name: &str, stateful: bool, vertex: usize) -> usize {
        self.operators.push(OperatorInfo {
            name: name.to_string(),
            uid: None,
            stateful,
            vertex,
            is_source: false,
            positions_by_split: false,
            adopts_state: false,
        });
        let v = &mut self.vertices[vertex].name;
        if !v.is_empty() {
            v.push_str(" -> ");
        }
        v.push_str(name);
        self.operators.len() - 1
    }
}

/// Describes a job. Create streams from it, then [`JobBuilder::build`].
pub struct JobBuilder {
    inner: Rc<RefCell<GraphInner>>,
}

impl JobBuilder {
    /// A new job named `name` (also its directory in the checkpoint store).
    pub fn new(name: &str) -> Self {
        JobBuilder {
            inner: Rc::new(RefCell::new(GraphInner {
                name: name.to_string(),
                max_parallelism: DEFAULT_MAX_PARALLELISM,
                default_parallelism: 1,
                operators: Vec::new(),
                vertices: Vec::new(),
                edges: Vec::new(),
                dangling: Vec::new(),
                sinks: 0,
            })),
        }
    }

    /// Number of key groups, the upper bound of any parallelism (default 128).
    /// Part of the state layout: keep it across runs.
    pub fn max_parallelism(self, max_parallelism: u16) -> Self {
        self.inner.borrow_mut().max_parallelism = max_parallelism;
        self
    }

    /// Parallelism of vertices created after this call (default 1).
    pub fn default_parallelism(self, parallelism: usize) -> Self {
        self.inner.borrow_mut().default_parallelism = parallelism;
        self
    }

    /// Adds a source; `factory` creates each subtask's source. Sources are
    /// stateful (their position is checkpointed): give them a `uid`.
    pub fn source<T, S, F>(&self, name: &str, factory: F) -> Stream<T>
    where
        T: Send + 'static,
        S: Source<T>,
        F: Fn(ConnectorContext) -> Result<S> + Send + 'static,
    {
        let (vertex, op) = {
            let mut g = self.inner.borrow_mut();
            let v = g.add_vertex(true);
            let op = g.add_operator(name, true, v);
            g.operators[op].is_source = true;
            g.operators[op].positions_by_split = S::POSITIONS_BY_SPLIT;
            (v, op)
        };
        Stream::new(
            self.inner.clone(),
            vertex,
            op,
            Box::new(SourcePending {
                factory,
                op,
                vertex,
                _t: PhantomData,
            }),
        )
    }

    /// Validates the graph and freezes it into a runnable [`Job`].
    ///
    /// # Errors
    /// [`WeirError::InvalidGraph`] for: an empty or path-like job name, no
    /// sink, a stream that goes nowhere, parallelism 0 or above the maximum
    /// parallelism, a stateful operator without a uid, two operators with one
    /// uid, a cycle.
    pub fn build(self) -> Result<Job> {
        let mut g = self.inner.borrow_mut();
        let invalid = |m: String| Err(WeirError::InvalidGraph(m));
        if g.name.is_empty() || g.name.contains(['/', '\\']) || g.name.starts_with('.') {
            return invalid(format!(
                "job name `{}` must be non-empty and usable as a directory name",
                g.name
            ));
        }
        if let Some(d) = g.dangling.first() {
            return invalid(format!("the stream after `{d}` goes nowhere: end it in a sink"));
        }
        if g.sinks == 0 {
            return invalid("the job has no sink".into());
        }
        if g.max_parallelism == 0 {
            return invalid("max_parallelism must be >= 1".into());
        }
        let max = usize::from(g.max_parallelism);
        for v in &g.vertices {
            if v.parallelism == 0 || v.parallelism > max {
                return invalid(format!(
                    "parallelism {} of `{}` must be between 1 and max_parallelism {max}",
                    v.parallelism, v.name
                ));
            }
        }
        let mut seen = std::collections::HashMap::new();
        for op in &g.operators {
            match &op.uid {
                None if op.stateful => {
                    return invalid(format!(
                        "stateful operator `{}` needs a uid: call .uid(\"...\") after it",
                        op.name
                    ))
                }
                Some(uid) => {
                    if uid.is_empty() || uid.contains(['/', '\\']) {
                        return invalid(format!(
                            "uid `{uid}` of `{}` must be non-empty and contain no path separator",
                            op.name
                        ));
                    }
                    if let Some(other) = seen.insert(uid.clone(), op.name.clone()) {
                        return invalid(format!(
                            "operators `{other}` and `{}` have the same uid `{uid}`",
                            op.name
                        ));
                    }
                }
                None => {}
            }
        }
        let edges: Vec<(usize, usize)> = g.edges.iter().map(|e| e.endpoints()).collect();
        check_acyclic(g.vertices.len(), &edges, |v| g.vertices[v].name.clone())?;
        let vertices = std::mem::take(&mut g.vertices);
        for v in &vertices {
            if v.make.is_none() {
                return invalid(format!("`{}` goes nowhere: end it in a sink", v.name));
            }
        }
        Ok(Job {
            max_parallelism: g.max_parallelism,
            plan: Plan {
                name: g.name.clone(),
                vertices,
                edges: std::mem::take(&mut g.edges),
                operators: std::mem::take(&mut g.operators),
            },
        })
    }
}

/// Rejects a graph with a cycle (Kahn's algorithm), naming a vertex on it.
pub(crate) fn check_acyclic(vertices: usize, edges: &[(usize, usize)], name: impl Fn(usize) -> String) -> Result<()> {
    let mut indegree = vec![0usize; vertices];
    for &(_, to) in edges {
        indegree[to] += 1;
    }
    let mut ready: Vec<usize> = (0..vertices).filter(|&v| indegree[v] == 0).collect();
    let mut visited = 0;
    while let Some(v) = ready.pop() {
        visited += 1;
        for &(from, to) in edges {
            if from == v {
                indegree[to] -= 1;
                if indegree[to] == 0 {
                    ready.push(to);
                }
            }
        }
    }
    if visited == vertices {
        Ok(())
    } else {
        let on_cycle = (0..vertices).find(|&v| indegree[v] > 0).map(&name).unwrap_or_default();
        Err(WeirError::InvalidGraph(format!(
            "the graph has a cycle through `{on_cycle}`"
        )))
    }
}

/// A validated job, ready to run.
pub struct Job {
    max_parallelism: u16,
    plan: Plan,
}

impl Job {
    /// The job's name.
    pub fn name(&self) -> &str {
        &self.plan.name
    }

    /// Number of key groups.
    pub fn max_parallelism(&self) -> u16 {
        self.max_parallelism
    }

    /// Runs the job to its end (bounded sources) or until it fails.
    ///
    /// # Errors
    /// Invalid configuration, an unusable checkpoint directory, or the first
    /// task error.
    pub fn run(self, config: JobConfig) -> Result<JobSummary> {
        self.start(config)?.join()
    }

    /// Starts the job and returns a handle to it.
    ///
    /// # Errors
    /// Invalid configuration, an unusable checkpoint directory, a checkpoint
    /// that does not match the job, or a task that cannot be created.
    pub fn start(self, config: JobConfig) -> Result<JobHandle> {
        crate::runtime::start(self.plan, config)
    }
}

/// A not-yet-finished vertex whose chain currently produces `T`.
trait Pending<T>: Send {
    /// Ends the chain in `tail`: the vertex's task maker, or `None` while
    /// another branch of a fork (see `fork`) has not ended yet.
    fn finish(self: Box<Self>, tail: TailMaker<T>) -> Option<TaskMaker>;
}

struct SourcePending<T, S, F> {
    factory: F,
    op: usize,
    vertex: usize,
    _t: PhantomData<fn() -> (T, S)>,
}

impl<T: Send + 'static, S: Source<T>, F: Fn(ConnectorContext) -> Result<S> + Send + 'static> Pending<T>
    for SourcePending<T, S, F>
{
    fn finish(self: Box<Self>, tail: TailMaker<T>) -> Option<TaskMaker> {
        let SourcePending {
            factory, op, vertex, ..
        } = *self;
        Some(Box::new(move |cx| {
            let (env, subtask) = (cx.env, cx.subtask);
            let uid = env.uid(op)?;
            let restored = env.restored_bytes(&uid, subtask)?;
            let restored_all = env.restored_all(&uid)?;
            let source = factory(ConnectorContext {
                job: env.job.clone(),
                subtask,
                parallelism: env.parallelism[vertex],
                uid: uid.clone(),
                restored,
                incarnation: env.state().store.incarnation().to_string(),
                checkpoint_request: cx.checkpoint_request.clone(),
                restored_all,
                adopted: Vec::new(),
                backlog: cx.stats.backlog.clone(),
            })?;
            let chain = tail(cx)?;
            let (batch, drain) = (env.batch_size, env.drain_at_end);
            Ok(Box::new(move |rt| run_source(source, chain, uid, subtask, batch, drain, rt)) as TaskBody)
        }))
    }
}

struct InputPending<T> {
    edges: Vec<Arc<Edge<T>>>,
}

impl<T: Send + 'static> Pending<T> for InputPending<T> {
    fn finish(self: Box<Self>, tail: TailMaker<T>) -> Option<TaskMaker> {
        let edges = self.edges;
        Some(Box::new(move |cx| {
            let mut inputs = Vec::new();
            for e in &edges {
                inputs.extend(e.take_receivers(cx.subtask)?);
            }
            let chain = tail(cx)?;
            Ok(Box::new(move |rt| run_input(inputs, chain, rt)) as TaskBody)
        }))
    }
}

struct ChainPending<I, T> {
    inner: Box<dyn Pending<I>>,
    stage: StageMaker<I, T>,
}

impl<I: 'static, T: 'static> Pending<T> for ChainPending<I, T> {
    fn finish(self: Box<Self>, tail: TailMaker<T>) -> Option<TaskMaker> {
        let stage = self.stage;
        self.inner.finish(Box::new(move |cx| {
            let next = tail(cx)?;
            stage(cx, next)
        }))
    }
}

fn channel_tail<T: Send + 'static, R: Router<T> + 'static>(
    edge: Arc<Edge<T>>,
    router: impl Fn() -> R + Send + 'static,
) -> TailMaker<T> {
    Box::new(move |cx| {
        Ok(Box::new(ChannelOut::new(
            edge.take_senders(cx.subtask)?,
            cx.env.batch_size,
            router(),
            cx.env.cancel.clone(),
            cx.stats.clone(),
        )) as Box<dyn Downstream<T>>)
    })
}

/// A stream of `T` being described.
pub struct Stream<T: Send + 'static> {
    graph: Rc<RefCell<GraphInner>>,
    vertex: usize,
    last_op: usize,
    pending: Option<Box<dyn Pending<T>>>,
}

impl<T: Send + 'static> Drop for Stream<T> {
    fn drop(&mut self) {
        if self.pending.is_some() {
            let mut g = self.graph.borrow_mut();
            let name = g
                .operators
                .get(self.last_op)
                .map(|o| o.name.clone())
                .unwrap_or_default();
            g.dangling.push(name);
        }
    }
}

impl<T: Send + 'static> Stream<T> {
    fn new(graph: Rc<RefCell<GraphInner>>, vertex: usize, last_op: usize, pending: Box<dyn Pending<T>>) -> Self {
        Stream {
            graph,
            vertex,
            last_op,
            pending: Some(pending),
        }
    }

    fn take(&mut self) -> Box<dyn Pending<T>> {
        match self.pending.take() {
            Some(p) => p,
            None => unreachable!("a Stream always holds its pending chain until consumed"),
        }
    }

    fn finish_with(mut self, tail: TailMaker<T>) {
        if let Some(maker) = self.take().finish(tail) {
            self.graph.borrow_mut().vertices[self.vertex].make = Some(maker);
        }
    }

    /// Sets the uid of the last operator (required for stateful ones).
    pub fn uid(self, uid: &str) -> Self {
        self.graph.borrow_mut().operators[self.last_op].uid = Some(uid.to_string());
        self
    }

    /// Sets the parallelism of the current vertex (the chain this operator is in).
    pub fn parallelism(self, parallelism: usize) -> Self {
        self.graph.borrow_mut().vertices[self.vertex].parallelism = parallelism;
        self
    }

    /// Chains a one-to-one operator; `make` creates one instance per subtask.
    pub fn operator<U: Send + 'static, Op: Operator<T, U>>(
        mut self,
        name: &str,
        make: impl Fn() -> Op + Send + 'static,
    ) -> Stream<U> {
        let op = self.graph.borrow_mut().add_operator(name, false, self.vertex);
        let name = name.to_string();
        let stage: StageMaker<T, U> = Box::new(move |cx, next| {
            Ok(Box::new(Stage::new(make(), format!("{name}[{}]", cx.subtask), next)) as Box<dyn Downstream<T>>)
        });
        let inner = self.take();
        Stream::new(
            self.graph.clone(),
            self.vertex,
            op,
            Box::new(ChainPending { inner, stage }),
        )
    }

    /// One output per record.
    pub fn map<U: Send + 'static, F: FnMut(T) -> U + Clone + Send + 'static>(self, f: F) -> Stream<U> {
        self.operator("map", move || Map(f.clone()))
    }

    /// One output per record, or an error that fails the job.
    pub fn try_map<U: Send + 'static, F: FnMut(T) -> Result<U, OperatorError> + Clone + Send + 'static>(
        self,
        f: F,
    ) -> Stream<U> {
        self.operator("try_map", move || TryMap(f.clone()))
    }

    /// Keeps the records for which `f` holds.
    pub fn filter<F: FnMut(&T) -> bool + Clone + Send + 'static>(self, f: F) -> Stream<T> {
        self.operator("filter", move || Filter(f.clone()))
    }

    /// Any number of outputs per record.
    pub fn flat_map<
        U: Send + 'static,
        I: IntoIterator<Item = U> + 'static,
        F: FnMut(T) -> I + Clone + Send + 'static,
    >(
        self,
        f: F,
    ) -> Stream<U> {
        self.operator("flat_map", move || FlatMap(f.clone()))
    }

    /// Event time for any stream (Flink's `assignTimestampsAndWatermarks`):
    /// `timestamp_of` gives each record's time in ms, and the watermark is
    /// the newest time seen minus `out_of_orderness_ms` (per subtask; the
    /// stages after take the minimum over their inputs). It replaces the
    /// event time from upstream. Whether a record is late does not depend
    /// on how records are batched: a record behind the watermark of the
    /// records before it is sent after that watermark.
    pub fn assign_timestamps_and_watermarks<F: FnMut(&T) -> i64 + Clone + Send + 'static>(
        self,
        timestamp_of: F,
        out_of_orderness_ms: i64,
    ) -> Stream<T> {
        self.timestamps(move || (timestamp_of.clone(), BoundedOutOfOrderness::new(out_of_orderness_ms)))
    }

    /// Event time from `timestamp_of` (ms since the epoch) and watermarks
    /// that records carry (Flink's punctuated watermarks): after a record
    /// for which `watermark_of(record, timestamp)` returns `Some(w)`, the
    /// watermark `w` goes out (if it is ahead of the last one), so a record
    /// is late exactly when it is behind a watermark carried by a record
    /// before it, whatever the batching. It replaces the event time from
    /// upstream.
    pub fn assign_timestamps_and_punctuated_watermarks<F, P>(self, timestamp_of: F, watermark_of: P) -> Stream<T>
    where
        F: FnMut(&T) -> i64 + Clone + Send + 'static,
        P: FnMut(&T, i64) -> Option<i64> + Clone + Send + 'static,
    {
        self.timestamps(move || {
            let generator = Punctuated {
                watermark_of: watermark_of.clone(),
                newest: None,
            };
            (timestamp_of.clone(), generator)
        })
    }

    /// A timestamp and watermark stage; `make` gives each subtask its
    /// timestamp function and watermark generator.
    fn timestamps<F, G>(mut self, make: impl Fn() -> (F, G) + Send + 'static) -> Stream<T>
    where
        F: FnMut(&T) -> i64 + Send + 'static,
        G: WatermarkGenerator<T> + 'static,
    {
        let op = self.graph.borrow_mut().add_operator("timestamps", false, self.vertex);
        let stage: StageMaker<T, T> = Box::new(move |_cx, next| {
            let (timestamp_of, generator) = make();
            Ok(Box::new(WatermarkStage::with_generator(timestamp_of, generator, next)) as Box<dyn Downstream<T>>)
        });
        let inner = self.take();
        Stream::new(
            self.graph.clone(),
            self.vertex,
            op,
            Box::new(ChainPending { inner, stage }),
        )
    }

    /// Marks the stream idle once no record has passed for `timeout`
    /// (Flink's `WatermarkStrategy::withIdleness`): the tasks after it then
    /// take their event time from their other inputs instead of waiting for
    /// this subtask's watermark, so one quiet partition or source subtask
    /// does not stop every window. The next record makes the stream active
    /// again; a record that is then behind the event time the others moved
    /// on to is late. Put it after the timestamp assigner of the stream.
    pub fn with_idleness(mut self, timeout: std::time::Duration) -> Stream<T> {
        let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        let op = self.graph.borrow_mut().add_operator("idleness", false, self.vertex);
        let stage: StageMaker<T, T> =
            Box::new(move |_cx, next| Ok(Box::new(IdlenessStage::new(timeout_ms, next)) as Box<dyn Downstream<T>>));
        let inner = self.take();
        Stream::new(
            self.graph.clone(),
            self.vertex,
            op,
            Box::new(ChainPending { inner, stage }),
        )
    }

    /// Sees every record and passes it on.
    pub fn inspect<F: FnMut(&T) + Clone + Send + 'static>(self, f: F) -> Stream<T> {
        self.operator("inspect", move || Inspect(f.clone()))
    }

    fn exchange<R: Router<T> + 'static>(
        self,
        kind: &'static str,
        router: impl Fn() -> R + Send + 'static,
    ) -> (Rc<RefCell<GraphInner>>, usize, Arc<Edge<T>>) {
        let graph = self.graph.clone();
        let (to, edge) = {
            let mut g = graph.borrow_mut();
            let to = g.add_vertex(false);
            let edge = Edge::new(self.vertex, to, kind);
            g.edges.push(edge.clone());
            (to, edge)
        };
        self.finish_with(channel_tail(edge.clone(), router));
        (graph, to, edge)
    }

    /// Partitions by key: each key's records go to the subtask owning the
    /// key's key group. Starts a new vertex.
    pub fn key_by<K: StateKey, F: Fn(&T) -> K + Clone + Send + 'static>(self, key_of: F) -> KeyedStream<T, K, F> {
        let max_parallelism = self.graph.borrow().max_parallelism;
        let kf = key_of.clone();
        let (graph, to, edge) = self.exchange("key_by", move || KeyRouter {
            key_of: kf.clone(),
            max_parallelism,
            scratch: Vec::new(),
        });
        let op = graph.borrow_mut().add_operator("key_by", false, to);
        KeyedStream {
            stream: Stream::new(graph, to, op, Box::new(InputPending { edges: vec![edge] })),
            key_of,
            allowed_lateness_ms: 0,
            _k: PhantomData,
        }
    }

    /// Spreads records round-robin over a new vertex (to change parallelism).
    pub fn rebalance(self) -> Stream<T> {
        let (graph, to, edge) = self.exchange("rebalance", || RoundRobin(0));
        let op = graph.borrow_mut().add_operator("rebalance", false, to);
        Stream::new(graph, to, op, Box::new(InputPending { edges: vec![edge] }))
    }

    /// Merges two streams of one type into a new vertex.
    pub fn union(self, other: Stream<T>) -> Stream<T> {
        let (graph, to, edge) = self.exchange("union", || RoundRobin(0));
        let other_edge = Edge::new(other.vertex, to, "union");
        graph.borrow_mut().edges.push(other_edge.clone());
        other.finish_with(channel_tail(other_edge.clone(), || RoundRobin(0)));
        let op = graph.borrow_mut().add_operator("union", false, to);
        Stream::new(
            graph,
            to,
            op,
            Box::new(InputPending {
                edges: vec![edge, other_edge],
            }),
        )
    }

    /// Connects two streams for a two-input operator (Flink's `connect`):
    /// records of `self` become [`Either::Left`], of `other`
    /// [`Either::Right`], merged into one stream. Follow it with `key_by` on
    /// the join key and a join ([`weir_operators::InnerJoin`],
    /// [`weir_operators::WindowJoin`], [`weir_operators::IntervalJoin`]) or any
    /// keyed process that matches on the side.
    pub fn connect<U: Send + 'static>(self, other: Stream<U>) -> Stream<Either<T, U>> {
        self.map(Either::Left).union(other.map(Either::Right))
    }

    /// Ends the stream in a sink; `factory` creates each subtask's sink.
    pub fn sink<S: Sink<T>, F: Fn(ConnectorContext) -> Result<S> + Send + 'static>(
        self,
        name: &str,
        factory: F,
    ) -> SinkRef {
        let stateful = S::is_stateful();
        let (graph, vertex) = (self.graph.clone(), self.vertex);
        let op = {
            let mut g = graph.borrow_mut();
            g.sinks += 1;
            let op = g.add_operator(name, stateful, vertex);
            g.operators[op].adopts_state = S::ADOPTS_STATE;
            op
        };
        let name = name.to_string();
        self.finish_with(Box::new(move |cx| {
            let (env, subtask) = (cx.env, cx.subtask);
            let uid = if stateful { Some(env.uid(op)?) } else { None };
            let (restored, adopted) = match &uid {
                Some(u) => (
                    env.restored_bytes(u, subtask)?,
                    env.adopted(u, subtask, env.parallelism[vertex])?,
                ),
                None => (None, Vec::new()),
            };
            let ctx = ConnectorContext {
                job: env.job.clone(),
                subtask,
                parallelism: env.parallelism[vertex],
                uid: uid.clone().unwrap_or_else(|| name.clone()),
                restored,
                incarnation: env.state().store.incarnation().to_string(),
                checkpoint_request: cx.checkpoint_request.clone(),
                restored_all: Vec::new(),
                adopted,
                backlog: cx.stats.backlog.clone(),
            };
            let sink = factory(ctx)?;
            let task = format!("{name}[{subtask}]");
            Ok(Box::new(SinkTail {
                sink,
                store: env.state().store.clone(),
                uid,
                name: name.clone(),
                subtask,
                stats: cx.stats.clone(),
                latency: metrics::histogram!("weir_latency_seconds", "sink" => task.clone()),
                commit_time: metrics::histogram!("weir_sink_commit_seconds", "sink" => task),
                _records: PhantomData,
            }) as Box<dyn Downstream<T>>)
        }));
        SinkRef { graph, op, vertex }
    }
}

/// A sink in the graph, to set its uid and parallelism.
pub struct SinkRef {
    graph: Rc<RefCell<GraphInner>>,
    op: usize,
    vertex: usize,
}

impl SinkRef {
    /// Sets the sink's uid (required for stateful sinks).
    pub fn uid(self, uid: &str) -> Self {
        self.graph.borrow_mut().operators[self.op].uid = Some(uid.to_string());
        self
    }
    /// Sets the parallelism of the vertex the sink is chained into.
    pub fn parallelism(self, parallelism: usize) -> Self {
        self.graph.borrow_mut().vertices[self.vertex].parallelism = parallelism;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::check_acyclic;

    #[test]
    fn a_cycle_is_rejected_naming_a_vertex_on_it() {
        let name = |v: usize| ["source", "a", "b", "sink"][v].to_string();
        assert!(check_acyclic(4, &[(0, 1), (1, 2), (2, 3)], name).is_ok());
        let err = check_acyclic(4, &[(0, 1), (1, 2), (2, 1), (2, 3)], name)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cycle through `a`") || err.contains("cycle through `b`"),
            "{err}"
        );
    }
}
