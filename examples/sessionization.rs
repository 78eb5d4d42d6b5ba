//! Sessionization with a side output: page views per user grouped into
//! sessions (views less than 30 s apart), counted; views that arrive after
//! their session closed go to a sink of their own instead of being dropped.
//!
//! ```text
//! views (in memory, out of order) -> assign_timestamps_and_watermarks(5 s)
//!     -> key_by(user) -> session_aggregate(gap 30 s, Count)
//!     -> split: sessions -> "sessions" sink | late views -> "late" sink
//! ```
//!
//! ```sh
//! cargo run --example sessionization
//! ```
//!
//! The run is bounded and drains at the end (`JobConfig::drain_at_end`): the
//! sessions still open fire before the final checkpoint.

use std::sync::{Arc, Mutex};
use weir::connectors::collect::CollectSink;
use weir::connectors::memory::ElementSource;
use weir::operators::{aggregators::Count, Either, Windowed};
use weir::{JobBuilder, JobConfig};

/// A page view: who, and when (ms).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct View {
    user: String,
    at_ms: i64,
}

fn view(user: &str, at_s: i64) -> View {
    View {
        user: user.into(),
        at_ms: at_s * 1000,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    weir::logging::init_from_env("warn");
    // ann: three sessions (0-40 s, 120 s, 230 s); bob: 10-40 s and 200 s, and
    // a view at 50 s that arrives after everyone reached 200 s: the session
    // it belongs to (10-70 s) has closed, so it is late.
    let views = vec![
        view("ann", 0),
        view("bob", 10),
        view("ann", 20),
        view("bob", 15),
        view("ann", 40),
        view("bob", 40),
        view("ann", 120),
        view("bob", 200),
        view("bob", 50),
        view("ann", 230),
    ];
    let (sessions, late) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
    let job = JobBuilder::new("sessionization");
    let (results, late_views) = job
        .source("views", ElementSource::factory(views))
        .uid("views")
        .assign_timestamps_and_watermarks(|v: &View| v.at_ms, 5_000)
        .key_by(|v: &View| v.user.clone())
        .session_aggregate("sessions", 30_000, |v: &View| v.at_ms, Count)
        .uid("sessions")
        .split(|(user, w): (String, Windowed<u64, View>)| match w {
            Windowed::Result { window, value } => Either::Left((user, window.start / 1000, window.end / 1000, value)),
            Windowed::Late(v) => Either::Right(v),
        });
    results.sink("sessions", CollectSink::factory(sessions.clone()));
    late_views.sink("late", CollectSink::factory(late.clone()));
    let dir = tempfile::tempdir()?;
    let config = JobConfig {
        drain_at_end: true,
        ..JobConfig::with_checkpoint_dir(dir.path())
    };
    job.build()?.run(config)?;

    let mut sessions = sessions.lock().map_err(|_| "poisoned")?.clone();
    sessions.sort();
    for (user, start, end, views) in sessions {
        println!("session {user} {start}s-{end}s: {views} views");
    }
    for v in late.lock().map_err(|_| "poisoned")?.iter() {
        println!("late view {} at {}s", v.user, v.at_ms / 1000);
    }
    Ok(())
}
