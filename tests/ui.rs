//! The web UI, in real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, installed by .ci/run) driven over WebDriver, and its
//! JSON API over plain HTTP.
//!
//! - A bounded job (generator -> key_by -> running count in RocksDB ->
//!   rebalance -> a deliberately slow operator -> sink): the page shows every
//!   vertex with its parallelism, rates that move, backpressure on the slow
//!   operator's upstream, a checkpoint in the history, a subtask table on
//!   click, and the progress bar at 100 % when the run ends. Screenshot kept.
//! - A job that fails: the page shows the error and the failing task.
//! - The API: every endpoint's JSON, secrets redacted, control refused
//!   without `allow_control`, with a wrong method, without the header and
//!   from another site; allowed, it triggers a checkpoint.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fantoccini::{Client, ClientBuilder, Locator};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use weir::connectors::collect::CountingSink;
use weir::connectors::generator::{Generator, W1Event};
use weir::operators::OperatorError;
use weir::ui::UiOptions;
use weir::{JobBuilder, JobConfig};

/// The bounded job of the browser test: `records` records, a slow operator
/// (5 ms every 100 records: at most ~20 000 records/s) behind the keyed count.
fn slow_job(records: u64) -> weir::Job {
    let job = JobBuilder::new("ui-demo").default_parallelism(2);
    job.source("generator", Generator::w1_factory(Some(records), None))
        .uid("generator")
        .map(|e: W1Event| (e.key, 1u64))
        .key_by(|p: &(u64, u64)| p.0)
        .reduce("count", |a: &(u64, u64), b: &(u64, u64)| (a.0, a.1 + b.1))
        .uid("count")
        .rebalance()
        .map({
            let mut seen = 0u64;
            move |p: (u64, u64)| {
                seen += 1;
                if seen % 100 == 0 {
                    std::thread::sleep(Duration::from_millis(5));
                }
                p
            }
        })
        .parallelism(1)
        .sink("sink", CountingSink::factory());
    job.build().unwrap()
}

fn config(dir: &std::path::Path) -> JobConfig {
    JobConfig {
        checkpoint_interval: Some(Duration::from_millis(500)),
        ..JobConfig::with_checkpoint_dir(dir)
    }
}

/// One HTTP/1.1 request; returns the status code and the body.
fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let code = answer.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    // Chunked bodies: the JSON is one chunk between its size line and the end.
    let body = if answer.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body.split_once("\r\n")
            .map_or("", |(_, rest)| rest)
            .rsplitn(2, "\r\n0\r\n")
            .last()
            .unwrap_or("")
    } else {
        body
    };
    (code, body.trim().to_string())
}

fn json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let (code, body) = http(addr, "GET", path, &[]);
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// chromedriver on a free port, stopped (by its PID) when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names
        .iter()
        .flat_map(|n| std::env::split_paths(&path).map(move |d| d.join(n)))
        .find(|p| p.is_file())
}

fn chromedriver() -> Driver {
    let binary = std::env::var_os("WEIR_CHROMEDRIVER")
        .map(PathBuf::from)
        .or_else(|| which(&["chromedriver"]))
        .expect("chromedriver not found: install Debian's chromium and chromium-driver (.ci/run does), or set WEIR_CHROMEDRIVER");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(binary)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "chromedriver did not listen on port {port} within 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

async fn browser(driver: &Driver) -> Client {
    let chromium = std::env::var_os("WEIR_CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| which(&["chromium", "chromium-browser", "google-chrome"]))
        .expect("chromium not found: install Debian's chromium (.ci/run does), or set WEIR_CHROMIUM");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,2200"],
        }),
    );
    ClientBuilder::rustls()
        .unwrap()
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("cannot start a Chromium session through chromedriver")
}

/// Polls `check` (an async read of the page) until it returns `Some`, at most `secs`.
async fn wait_for<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "the page did not show {what} within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn text(c: &Client, css: &str) -> Option<String> {
    c.find(Locator::Css(css)).await.ok()?.text().await.ok()
}

async fn attr(c: &Client, css: &str, name: &str) -> Option<String> {
    c.find(Locator::Css(css)).await.ok()?.attr(name).await.ok()?
}

/// Prints a proof's summary line and leaves it where .ci/run prints it from.
fn publish_summary(name: &str, line: &str) {
    println!("{line}");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("weir-summaries");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(format!("{name}.txt")), format!("{line}\n"));
}

async fn screenshot(c: &Client, name: &str) -> PathBuf {
    let png = c.screenshot().await.unwrap();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, png).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_graph_rates_backpressure_checkpoints_and_progress_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let handle = slow_job(300_000).start(config(dir.path())).unwrap();
    let controller = handle.controller();
    let server = controller
        .serve_ui("127.0.0.1:0".parse().unwrap(), UiOptions::default())
        .unwrap();
    let graph = controller.graph().clone();
    let driver = chromedriver();
    let c = browser(&driver).await;
    c.goto(&server.url()).await.unwrap();

    // Every vertex, with its parallelism, as text.
    let shown = wait_for(20, "every vertex", || async {
        let n = c.find_all(Locator::Css("#graph .vertex")).await.ok()?.len();
        (n == graph.vertices.len()).then_some(n)
    })
    .await;
    for v in &graph.vertices {
        let p = text(&c, &format!("#vertex-{} .parallelism", v.id)).await.unwrap();
        assert!(
            p.contains(&format!("parallelism {}", v.parallelism)),
            "vertex {}: {p}",
            v.name
        );
    }

    // Rates move between two reads.
    let sink = graph.vertices.last().unwrap().id;
    let read = |c: &Client| {
        let c = c.clone();
        async move {
            attr(&c, &format!("#vertex-{sink}"), "data-records-in")
                .await
                .and_then(|v| v.parse::<f64>().ok())
        }
    };
    let first = wait_for(20, "the sink's records", || read(&c)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = read(&c).await.unwrap();
    assert!(
        second > first,
        "records at the sink did not move: {first} then {second}"
    );

    // The slow operator's upstream (the keyed count) shows backpressure.
    let keyed = graph.vertices.iter().find(|v| v.name.contains("count")).unwrap().id;
    let level = wait_for(30, "backpressure upstream of the slow operator", || async {
        let level = attr(&c, &format!("#vertex-{keyed}"), "data-backpressure").await?;
        (level == "high" || level == "low").then_some(level)
    })
    .await;

    // Progress counts the run's records.
    let progress = text(&c, "#progress-text").await.unwrap();
    assert!(progress.contains("of 300.0k records"), "{progress}");

    // A checkpoint in the history.
    let row = wait_for(30, "a completed checkpoint", || async {
        let t = text(&c, "#checkpoints tbody tr").await?;
        t.contains("completed").then_some(t)
    })
    .await;

    // A click shows the vertex's subtasks.
    c.find(Locator::Css(&format!("#vertex-{keyed}")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let rows = wait_for(10, "the subtask table", || async {
        let n = c.find_all(Locator::Css("#subtasks tbody tr")).await.ok()?.len();
        (n == graph.vertices[keyed].parallelism).then_some(n)
    })
    .await;
    let state = text(&c, "#subtasks tbody tr").await.unwrap();
    assert!(
        state.contains(" %"),
        "a keyed subtask shows its cache hit rate: {state}"
    );
    let mid_run = screenshot(&c, "ui-running.png").await;

    // The bounded run ends: progress 100 %, state finished, the page stays.
    let summary = tokio::task::spawn_blocking(move || handle.join())
        .await
        .unwrap()
        .unwrap();
    let progress = wait_for(20, "progress at 100 %", || async {
        let t = text(&c, "#progress-text").await?;
        t.starts_with("100.0 %").then_some(t)
    })
    .await;
    let state = wait_for(10, "the finished state", || async {
        let t = text(&c, "#state").await?;
        (t == "finished").then_some(t)
    })
    .await;
    let done = screenshot(&c, "ui-finished.png").await;
    publish_summary(
        "ui_browser",
        &format!(
        "ui: chromium showed {shown} vertices, sink records {first} -> {second}, backpressure {level} upstream of the \
         slow operator, checkpoint row `{row}`, {rows} subtasks on click, `{progress}`, state {state}; {} checkpoints; \
         screenshots {} {}",
        summary.checkpoints_completed,
        mid_run.display(),
        done.display()
    ),
    );
    c.close().await.unwrap();
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_shows_its_error_and_task_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let job = JobBuilder::new("ui-fails");
    job.source("generator", Generator::w1_factory(None, Some(20_000)))
        .uid("generator")
        .rebalance()
        .try_map(|e: W1Event| {
            if e.index == 5_000 {
                Err(OperatorError(format!("record {} is deliberately bad", e.index)))
            } else {
                Ok(e.key)
            }
        })
        .sink("sink", CountingSink::factory());
    let handle = job.build().unwrap().start(config(dir.path())).unwrap();
    let server = handle
        .controller()
        .serve_ui("127.0.0.1:0".parse().unwrap(), UiOptions::default())
        .unwrap();
    let failed = tokio::task::spawn_blocking(move || handle.join()).await.unwrap();
    let error = failed.expect_err("the job fails").to_string();
    let status = json(server.addr(), "/api/status");
    assert_eq!(status["state"], "failed", "{status}");
    assert!(
        status["error"].as_str().unwrap().contains("deliberately bad"),
        "{status}"
    );

    let driver = chromedriver();
    let c = browser(&driver).await;
    c.goto(&server.url()).await.unwrap();
    let shown = wait_for(20, "the failure", || async {
        let t = text(&c, "#failure").await?;
        t.contains("deliberately bad").then_some(t)
    })
    .await;
    assert!(shown.contains("in task "), "the failing task is named: {shown}");
    // The graph outlines the vertex of the failing task, not its upstream.
    let failed_vertex = wait_for(10, "the failed vertex outlined", || async {
        let flags = [
            attr(&c, "#vertex-0", "data-failed").await?,
            attr(&c, "#vertex-1", "data-failed").await?,
        ];
        (flags == ["false", "true"]).then_some(flags)
    })
    .await;
    assert_eq!(failed_vertex, ["false", "true"]);
    let shot = screenshot(&c, "ui-failed.png").await;
    publish_summary(
        "ui_failure",
        &format!(
            "ui: a failing job's page shows `{}` ({error}); screenshot {}",
            shown.replace('\n', " | "),
            shot.display()
        ),
    );
    c.close().await.unwrap();
}

#[test]
fn the_api_serves_json_redacts_secrets_and_guards_control() {
    let dir = tempfile::tempdir().unwrap();
    let job = JobBuilder::new("ui-api").default_parallelism(2);
    job.source("generator", Generator::w1_factory(None, Some(5_000)))
        .uid("generator")
        .key_by(|e: &W1Event| e.key)
        .reduce("sum", |a: &W1Event, b: &W1Event| W1Event {
            value: a.value + b.value,
            ..*b
        })
        .uid("sum")
        .sink("sink", CountingSink::factory());
    let handle = job
        .build()
        .unwrap()
        .start(JobConfig {
            checkpoint_interval: None,
            ..JobConfig::with_checkpoint_dir(dir.path())
        })
        .unwrap();
    let extra = serde_json::json!({"kafka": {"brokers": "b:9092", "sasl.password": "hunter2", "properties": [{"ssl.key.password": "k3y"}]}});
    let read_only = handle
        .controller()
        .serve_ui(
            "127.0.0.1:0".parse().unwrap(),
            UiOptions {
                allow_control: false,
                extra_config: Some(extra.clone()),
            },
        )
        .unwrap();
    let control = handle
        .controller()
        .serve_ui(
            "127.0.0.1:0".parse().unwrap(),
            UiOptions {
                allow_control: true,
                extra_config: None,
            },
        )
        .unwrap();
    let addr = read_only.addr();

    let (code, page) = http(addr, "GET", "/", &[]);
    assert_eq!(code, 200);
    assert!(page.contains("page.js") && page.contains("<svg id=\"graph\""));
    let status = json(addr, "/api/status");
    assert_eq!(
        (status["job"].as_str(), status["state"].as_str()),
        (Some("ui-api"), Some("running"))
    );
    let task = &status["tasks"][0];
    for field in [
        "name",
        "is_source",
        "records_in",
        "records_out",
        "records_in_per_sec",
        "records_out_per_sec",
        "backpressured_ms_per_sec",
        "output_queue",
        "watermark_ms",
        "last_alignment",
        "finished",
        "kafka_lag",
        "latency",
        "state_bytes",
        "state_cache_hit_rate",
    ] {
        assert!(task.get(field).is_some(), "tasks[0].{field} in {status}");
    }
    let graph = json(addr, "/api/graph");
    assert_eq!(
        graph["vertices"].as_array().unwrap().len(),
        2,
        "source, then count and sink chained: {graph}"
    );
    assert_eq!(graph["edges"][0]["kind"], "key_by", "{graph}");
    assert_eq!(graph["vertices"][1]["parallelism"], 2, "{graph}");
    let config = json(addr, "/api/config");
    let text = config.to_string();
    assert!(
        !text.contains("hunter2") && !text.contains("k3y"),
        "secrets shown: {text}"
    );
    assert_eq!(config["extra"]["kafka"]["sasl.password"], weir::REDACTED);
    assert_eq!(config["extra"]["kafka"]["brokers"], "b:9092");
    assert_eq!(config["control"], false);
    assert!(config["config"]["checkpoint_dir"].as_str().is_some());

    // Control: refused read-only, with GET, without the header, cross-site.
    let (code, body) = http(addr, "POST", "/api/control/checkpoint", &[("X-Weir-Control", "1")]);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("--ui-allow-control"), "{body}");
    let c = control.addr();
    assert_eq!(http(c, "GET", "/api/control/checkpoint", &[]).0, 405);
    assert_eq!(http(c, "POST", "/api/control/checkpoint", &[]).0, 403, "no header");
    let evil = [("X-Weir-Control", "1"), ("Origin", "http://evil.example")];
    assert_eq!(
        http(c, "POST", "/api/control/checkpoint", &evil).0,
        403,
        "another origin"
    );
    let fetch_site = [("X-Weir-Control", "1"), ("Sec-Fetch-Site", "cross-site")];
    assert_eq!(
        http(c, "POST", "/api/control/checkpoint", &fetch_site).0,
        403,
        "cross-site"
    );
    assert_eq!(
        http(c, "POST", "/api/control/explode", &[("X-Weir-Control", "1")]).0,
        404
    );

    // Allowed: a checkpoint is triggered (the job has no interval of its own).
    let own = format!("http://{c}");
    let (code, body) = http(
        c,
        "POST",
        "/api/control/checkpoint",
        &[("X-Weir-Control", "1"), ("Origin", &own)],
    );
    assert_eq!(code, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let checkpoints = loop {
        let c = json(addr, "/api/checkpoints");
        if c["completed"].as_u64().unwrap() >= 1 {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint after the control request: {c}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let record = &checkpoints["history"][0];
    for field in [
        "id",
        "status",
        "triggered_unix_ms",
        "duration",
        "alignment",
        "bytes",
        "upload",
        "final_checkpoint",
    ] {
        assert!(record.get(field).is_some(), "history[0].{field} in {checkpoints}");
    }
    assert_eq!(record["status"], "completed");
    std::thread::sleep(Duration::from_millis(2100));
    let history = json(addr, "/api/history");
    let sample = &history[0];
    assert!(sample["source_records_per_sec"].as_f64().unwrap() > 0.0, "{history}");
    assert!(
        sample.get("latency").is_some() && sample.get("uptime_s").is_some(),
        "{history}"
    );

    let (code, _) = http(c, "POST", "/api/control/stop", &[("X-Weir-Control", "1")]);
    assert_eq!(code, 200);
    let summary = handle.join().unwrap();
    assert!(summary.checkpoints_completed >= 2, "the stop took a final checkpoint");
    let status = json(addr, "/api/status");
    let sink = status["tasks"].as_array().unwrap().last().unwrap()["committed_checkpoint"].clone();
    assert_eq!(
        sink.as_u64(),
        summary.last_checkpoint,
        "the sink task committed the final checkpoint"
    );
    assert_eq!(
        json(addr, "/api/status")["state"],
        "finished",
        "the UI shows the end after it"
    );
}
