//! The README's quickstart job, kept compiling and tested here: a word count
//! with its state in RocksDB and a checkpoint every second.
//!
//! ```sh
//! cargo run --example first_job   # writes ./checkpoints
//! ```

use weir::connectors::memory::{ElementSource, PrintSink};
use weir::{JobBuilder, JobConfig};

fn main() -> Result<(), weir::WeirError> {
    let lines = vec!["to be or not to be".to_string(), "that is the question".to_string()];
    let job = JobBuilder::new("first-job");
    job.source("lines", ElementSource::factory(lines))
        .uid("lines")
        .flat_map(|line: String| line.split(' ').map(|w| (w.to_string(), 1u64)).collect::<Vec<_>>())
        .key_by(|(word, _): &(String, u64)| word.clone())
        .reduce("count", |a, b| (a.0.clone(), a.1 + b.1))
        .uid("count")
        .sink("print", PrintSink::factory());
    let summary = job.build()?.run(JobConfig::with_checkpoint_dir("checkpoints"))?;
    println!(
        "done: restored from checkpoint {:?}, last checkpoint {:?}",
        summary.restored_from, summary.last_checkpoint
    );
    Ok(())
}
