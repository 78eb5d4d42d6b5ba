//! What a job looks like from outside while it runs: its graph (vertices
//! of chained operators and the exchanges between them) and its settings,
//! for the web UI and tools. Built once at start from the plan.

use super::plan::{OperatorInfo, Vertex};
use serde::Serialize;

/// The job graph: what [`crate::JobController::graph`] returns.
#[derive(Debug, Clone, Serialize)]
pub struct JobGraph {
    /// The job's name.
    pub job: String,
    /// Vertices in graph order (sources first).
    pub vertices: Vec<GraphVertex>,
    /// Exchanges between vertices.
    pub edges: Vec<GraphEdge>,
}

/// A chain of operators run by `parallelism` tasks.
#[derive(Debug, Clone, Serialize)]
pub struct GraphVertex {
    /// Its index (edges name vertices by it).
    pub id: usize,
    /// The chain's operator names joined by " -> " (the prefix of its task names).
    pub name: String,
    /// The operators chained in it, in order.
    pub operators: Vec<String>,
    /// How many tasks run it.
    pub parallelism: usize,
    /// It starts with a source.
    pub is_source: bool,
    /// Its tasks' names (`name[subtask]`), as in [`crate::JobStatus::tasks`].
    pub tasks: Vec<String>,
}

/// Records moving from every task of one vertex to tasks of another.
#[derive(Debug, Clone, Serialize)]
pub struct GraphEdge {
    /// The sending vertex.
    pub from: usize,
    /// The receiving vertex.
    pub to: usize,
    /// How records are routed: `key_by` (by key group), `rebalance`
    /// (round robin) or `union` (round robin into a merging vertex).
    pub kind: &'static str,
}

impl JobGraph {
    /// The graph of a planned job.
    pub(crate) fn of(
        job: &str,
        vertices: &[Vertex],
        edges: &[(usize, usize, &'static str)],
        operators: &[OperatorInfo],
    ) -> Self {
        JobGraph {
            job: job.to_string(),
            vertices: vertices
                .iter()
                .enumerate()
                .map(|(id, v)| GraphVertex {
                    id,
                    name: v.name.clone(),
                    operators: operators
                        .iter()
                        .filter(|o| o.vertex == id)
                        .map(|o| o.name.clone())
                        .collect(),
                    parallelism: v.parallelism,
                    is_source: v.is_source,
                    tasks: (0..v.parallelism).map(|s| format!("{}[{s}]", v.name)).collect(),
                })
                .collect(),
            edges: edges
                .iter()
                .map(|&(from, to, kind)| GraphEdge { from, to, kind })
                .collect(),
        }
    }
}
