//! Running a job from the command line: until it ends or a signal stops it,
//! with a progress line or a periodic status table, and its JSON summary.

use std::time::Duration;
use weir::JobConfig;

/// What the progress line of a bounded run counts.
pub(crate) enum ProgressOf {
    /// No progress line (endless runs).
    Nothing,
    /// A Kafka source's counters: records consumed of the offsets to consume.
    Kafka(std::sync::Arc<weir::connectors::kafka::source::Progress>),
    /// Records read by the source tasks, of this many.
    Records(u64),
}

/// Prints `done/total records, rate, ETA` to stderr every 500 ms while it
/// lives; nothing when stderr is not a terminal.
fn progress_reporter(of: ProgressOf, controller: weir::JobController) -> Option<ProgressGuard> {
    use std::io::IsTerminal;
    use std::sync::atomic::Ordering::Relaxed;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let counts: Box<dyn Fn() -> (u64, u64) + Send> = match of {
        ProgressOf::Nothing => return None,
        ProgressOf::Kafka(p) => Box::new(move || (p.done.load(Relaxed), p.total.load(Relaxed))),
        ProgressOf::Records(total) => Box::new(move || {
            let status = controller.status();
            let done = status.tasks.iter().filter(|t| t.is_source).map(|t| t.records_in).sum();
            (done, total)
        }),
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let started = std::time::Instant::now();
    let thread = std::thread::spawn(move || {
        while !flag.load(Relaxed) {
            std::thread::sleep(Duration::from_millis(500));
            let (done, total) = counts();
            let rate = done as f64 / started.elapsed().as_secs_f64().max(0.001);
            if total > 0 {
                let eta = (total.saturating_sub(done)) as f64 / rate.max(1.0);
                eprint!(
                    "\r{done}/{total} records ({:.0}%), {rate:.0}/s, ETA {eta:.0} s   ",
                    100.0 * done as f64 / total as f64
                );
            } else {
                eprint!("\r{done} records, {rate:.0}/s   ");
            }
        }
        eprintln!();
    });
    Some(ProgressGuard {
        stop,
        thread: Some(thread),
    })
}

/// Stops its reporter thread when dropped.
pub(crate) struct ProgressGuard {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ProgressGuard {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `job` until it ends. The first SIGINT (Ctrl-C) or SIGTERM stops it
/// with a final checkpoint (sources stop at a barrier, sinks commit); a second
/// one cancels it.
pub(crate) fn run_until_signalled(
    job: weir::Job,
    config: JobConfig,
    watch: crate::common::Watch,
    progress: ProgressOf,
) -> weir::Result<(weir::JobSummary, weir::JobStatus)> {
    let crate::common::Watch {
        status_every,
        ui,
        ui_linger,
    } = watch;
    let handle = job.start(config)?;
    let controller = handle.controller();
    let ui = match ui {
        Some((addr, options)) => {
            let server = controller.serve_ui(addr, options)?;
            eprintln!("web UI: {}", server.url());
            Some(server)
        }
        None => None,
    };
    // The progress line and the status table would garble each other.
    let progress = progress_reporter(
        if status_every.is_some() {
            ProgressOf::Nothing
        } else {
            progress
        },
        handle.controller(),
    );
    let status_printer = status_every.filter(|s| *s > 0).map(|secs| {
        let controller = handle.controller();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut next = std::time::Instant::now() + Duration::from_secs(secs);
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if std::time::Instant::now() >= next {
                    next += Duration::from_secs(secs);
                    eprintln!("{}", controller.status());
                }
            }
        });
        ProgressGuard {
            stop,
            thread: Some(thread),
        }
    });
    let final_status = handle.controller();
    std::thread::Builder::new()
        .name("weir-signals".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
                else {
                    return;
                };
                let mut stops = 0;
                loop {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                    stops += 1;
                    if stops == 1 {
                        eprintln!("stopping with a final checkpoint (again to cancel)");
                        controller.stop();
                    } else {
                        eprintln!("cancelling");
                        controller.cancel();
                    }
                }
            });
        })
        .map_err(|e| weir::WeirError::io("cannot spawn signal thread", "weir-signals", e))?;
    let summary = handle.join();
    drop(status_printer);
    drop(progress);
    if let (Some(server), false) = (&ui, ui_linger.is_zero()) {
        eprintln!(
            "the job ended; the web UI at {} shows its final state for {} s",
            server.url(),
            ui_linger.as_secs()
        );
        std::thread::sleep(ui_linger);
    }
    drop(ui);
    Ok((summary?, final_status.status()))
}

/// One JSON line about a finished run: the summary and every task's counters.
pub(crate) fn summary_json(summary: &weir::JobSummary, status: &weir::JobStatus, extra: serde_json::Value) -> String {
    let mut line = serde_json::json!({
        "job": summary.job,
        "elapsed_s": summary.elapsed.as_secs_f64(),
        "restored_from": summary.restored_from,
        "checkpoints_completed": summary.checkpoints_completed,
        "last_checkpoint": summary.last_checkpoint,
        "timers_kept": summary.timers_kept,
        "checkpoint_ms": summary.checkpoint_durations.iter().map(|d| d.as_secs_f64() * 1000.0).collect::<Vec<_>>(),
        "checkpoint_uploads": summary.checkpoint_uploads,
        "tasks": status.tasks,
    });
    if let (Some(line), serde_json::Value::Object(extra)) = (line.as_object_mut(), extra) {
        line.extend(extra);
    }
    line.to_string()
}
