//! Embedding a continuous job in an HTTP service (axum on tokio): the job
//! runs on its own threads, the service keeps a `JobController` to trigger
//! checkpoints and to stop it gracefully.
//!
//! ```text
//! generator (endless, --rate/s) -> key_by(key % 1000) -> reduce: running sum in RocksDB -> counting sink
//! ```
//!
//! ```sh
//! cargo run --example axum_service [-- --addr 127.0.0.1:3000 --checkpoint-dir DIR]
//! curl localhost:3000/                      # job info
//! curl localhost:3000/status                # live status: per task records, rates, backpressure, latency
//! curl -X POST localhost:3000/checkpoint    # a checkpoint now
//! curl -X POST localhost:3000/stop          # final checkpoint, then the process exits
//! ```
//!
//! Ctrl-C also stops gracefully (a second one cancels at once). `POST /stop`
//! returns at once; the job then takes a final checkpoint (the sources stop
//! at its barrier, the sinks commit), the server shuts down and the process
//! prints the `JobSummary` and exits. With `--checkpoint-dir` a restarted
//! service resumes from that final checkpoint. `--exit-after-ms N` stops the
//! job by itself after N ms (for unattended runs and tests).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir::connectors::collect::{CountingSink, SinkStats};
use weir::connectors::generator::{Generator, W1Event};
use weir::{Job, JobBuilder, JobConfig, JobController};

#[derive(Parser)]
struct Args {
    /// Address of the HTTP server (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:3000")]
    addr: SocketAddr,
    /// Checkpoints go here (a restart resumes from them); default: a temporary directory.
    #[arg(long)]
    checkpoint_dir: Option<PathBuf>,
    /// Periodic checkpoints every MS (0: only on demand and the final one).
    #[arg(long, default_value_t = 10_000)]
    checkpoint_interval_ms: u64,
    /// Records per second generated.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Stop the job gracefully after this many ms.
    #[arg(long)]
    exit_after_ms: Option<u64>,
}

/// What the HTTP handlers share.
struct App {
    job: String,
    started: Instant,
    /// Cloneable and cheap: sends requests to the job's coordinator thread.
    controller: JobController,
    records: Arc<SinkStats>,
    checkpoints_requested: AtomicU64,
}

type Shared = Arc<App>;

fn build_job(records: Arc<SinkStats>, rate: u64) -> weir::Result<Job> {
    let job = JobBuilder::new("axum-service").default_parallelism(2);
    job.source("generator", Generator::w1_factory(None, Some(rate))) // None: endless
        .uid("generator")
        .map(|e: W1Event| (e.key % 1000, e.value))
        .key_by(|r: &(u64, u64)| r.0)
        .reduce("sum", |a, b| (a.0, a.1 + b.1))
        .uid("sum")
        .sink("count", CountingSink::factory_with(records));
    job.build()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging();
    let args = Args::parse();
    let scratch = tempfile::tempdir()?;
    let checkpoint_dir = args.checkpoint_dir.unwrap_or_else(|| scratch.path().to_path_buf());
    // Bind first: a taken port should fail before the job runs.
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    let records = Arc::new(SinkStats::default());
    let job = build_job(records.clone(), args.rate)?;
    let config = JobConfig {
        checkpoint_interval: (args.checkpoint_interval_ms > 0)
            .then(|| Duration::from_millis(args.checkpoint_interval_ms)),
        ..JobConfig::with_checkpoint_dir(&checkpoint_dir)
    };

    // `Job::start` opens RocksDB, restores and spawns the task threads: keep
    // it off the async worker threads. `JobHandle::wait` is the async join.
    let name = job.name().to_string();
    let handle = tokio::task::spawn_blocking(move || job.start(config)).await??;
    let controller = handle.controller();
    let finished = tokio::spawn(handle.wait());

    // Ctrl-C stops gracefully; a second Ctrl-C cancels without a final checkpoint.
    let on_signal = controller.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("stopping: final checkpoint (Ctrl-C again to cancel)");
            on_signal.stop();
        }
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.cancel();
        }
    });
    if let Some(ms) = args.exit_after_ms {
        let on_timeout = controller.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            on_timeout.stop();
        });
    }

    let app = Arc::new(App {
        job: name,
        started: Instant::now(),
        controller,
        records: records.clone(),
        checkpoints_requested: AtomicU64::new(0),
    });
    let router = Router::new()
        .route("/", get(info))
        .route("/checkpoint", post(checkpoint))
        .route("/stop", post(stop))
        .route("/status", get(status))
        .with_state(app);
    println!("serving http://{}", listener.local_addr()?);

    // Serve until the job has ended (POST /stop, Ctrl-C, --exit-after-ms, or a failure).
    let (job_ended, server_stop) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = server_stop.await;
            })
            .await
    });
    let summary = finished.await?;
    let _ = job_ended.send(());
    server.await??;

    let summary = summary?; // the job's own error, if it failed
    println!(
        "job stopped: {} records, {} checkpoints completed, last checkpoint {:?}, ran {:.1?}",
        records.records.load(Ordering::Relaxed),
        summary.checkpoints_completed,
        summary.last_checkpoint,
        summary.elapsed
    );
    Ok(())
}

/// `GET /`: what runs and how far it got.
async fn info(State(app): State<Shared>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "job": app.job,
        "uptime_ms": app.started.elapsed().as_millis() as u64,
        "records_out": app.records.records.load(Ordering::Relaxed),
        "checkpoints_requested": app.checkpoints_requested.load(Ordering::Relaxed),
        "endpoints": ["GET /", "GET /status", "POST /checkpoint", "POST /stop"],
    }))
}

/// `GET /status`: the job's live status, as JSON (`weir::JobStatus`): per
/// task records in/out and rates, backpressure, watermark, latency at the
/// sink; the checkpoint in flight and the last complete one.
async fn status(State(app): State<Shared>) -> Json<weir::JobStatus> {
    Json(app.controller.status())
}

/// `POST /checkpoint`: asks for a checkpoint now (after the one in flight, if any).
async fn checkpoint(State(app): State<Shared>) -> (StatusCode, &'static str) {
    app.controller.trigger_checkpoint();
    app.checkpoints_requested.fetch_add(1, Ordering::Relaxed);
    (StatusCode::ACCEPTED, "checkpoint requested\n")
}

/// `POST /stop`: a final checkpoint, then the job ends and the process exits.
async fn stop(State(app): State<Shared>) -> (StatusCode, &'static str) {
    app.controller.stop();
    (StatusCode::ACCEPTED, "stopping: final checkpoint, then exit\n")
}

/// Logs to stderr; `WEIR_LOG=info` shows checkpoints and more.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG").unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
