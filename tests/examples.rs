//! Runs every example binary (`examples/*.rs`) and checks what it prints:
//! the examples are documentation, and these tests keep them true. The Kafka
//! examples run twice: on librdkafka's in-process mock cluster (their
//! default) and on Apache Kafka (`--brokers`, the exactly-once sink), which
//! must print the same; the service example uses a port on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../cli/tests/support/broker.rs"]
mod broker;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Longest any example may run here.
const DEADLINE: Duration = Duration::from_secs(60);

/// The binary of example `name`. `cargo test` builds the examples but
/// `cargo test --test examples` does not, so the first call builds them (a
/// no-op when they are current) into this test's own target directory.
fn example(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let exe = std::env::current_exe().unwrap(); // <target>/<profile>/deps/examples-<hash>
        let profile_dir = exe.parent().and_then(Path::parent).unwrap();
        let target_dir = profile_dir.parent().unwrap();
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .args(["build", "--examples", "--target-dir"])
            .arg(target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.ends_with("release") {
            cargo.arg("--release");
        }
        let out = cargo.output().unwrap();
        assert!(
            out.status.success(),
            "cargo build --examples failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        profile_dir.join("examples")
    });
    dir.join(name)
}

/// Waits for `child`, killing it after `DEADLINE`.
fn wait(child: &mut Child, name: &str) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("example {name} did not finish within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs example `name` to its end and returns its stdout; it must succeed.
fn run(name: &str, args: &[&str]) -> String {
    // Files, not pipes: nothing can block on a full pipe while we wait.
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = Command::new(example(name))
        .args(args)
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let status = wait(&mut child, name);
    let stdout = std::fs::read_to_string(&out_path).unwrap();
    let stderr = std::fs::read_to_string(&err_path).unwrap();
    assert!(
        status.success(),
        "example {name} failed ({status}):\n{stdout}\n{stderr}"
    );
    stdout
}

fn assert_lines(stdout: &str, expected: &[&str]) {
    for line in expected {
        assert!(stdout.lines().any(|l| l == *line), "missing `{line}` in:\n{stdout}");
    }
}

#[test]
fn kafka_word_count_prints_the_count_of_every_word() {
    check_word_count(&run("kafka_word_count", &[]));
}

#[test]
fn kafka_word_count_on_apache_kafka_prints_the_same_counts() {
    let broker = broker::Broker::shared();
    let stdout = run(
        "kafka_word_count",
        &[
            "--brokers",
            &broker.bootstrap,
            "--input",
            "wc-lines",
            "--output",
            "wc-counts",
        ],
    );
    check_word_count(&stdout);
}

fn check_word_count(stdout: &str) {
    assert_lines(stdout, &["22 output records"]);
    let counts: BTreeMap<&str, u64> = stdout
        .lines()
        .skip_while(|l| !l.ends_with("output records"))
        .skip(1)
        .map(|l| {
            let (word, count) = l.split_once(' ').unwrap();
            (word, count.parse().unwrap())
        })
        .collect();
    let mut expected: BTreeMap<&str, u64> = [("to", 3), ("be", 3), ("is", 2), ("the", 2)].into();
    for word in [
        "or", "not", "that", "question", "thine", "own", "self", "true", "brevity", "soul", "of", "wit",
    ] {
        expected.insert(word, 1);
    }
    assert_eq!(counts, expected, "{stdout}");
}

#[test]
fn windowed_aggregation_fires_every_window_and_reports_the_late_reading() {
    let stdout = run("windowed_aggregation", &[]);
    assert_lines(
        &stdout,
        &[
            "window 22:13:20-22:13:30  s1  count 4  mean 20.75  max 21.5",
            "window 22:13:20-22:13:30  s2  count 2  mean 18.50  max 19.0",
            "window 22:13:30-22:13:40  s1  count 2  mean 22.50  max 23.0",
            "window 22:13:30-22:13:40  s2  count 2  mean 19.25  max 20.0",
            "window 22:13:40-22:13:50  s1  count 1  mean 24.00  max 24.0",
            "window 22:13:40-22:13:50  s2  count 1  mean 21.00  max 21.0",
            "late     s1 reading at 22:13:25 (99.9 °C)",
        ],
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("window ")).count(),
        6,
        "{stdout}"
    );
}

#[test]
fn join_emits_each_matching_order_once() {
    let stdout = run("join", &[]);
    assert_lines(
        &stdout,
        &[
            "order 1001  Ada (London)  notebook  4.50",
            "order 1002  Grace (New York)  compiler  99.00",
            "order 1003  Ada (London)  pencils  1.20",
            "order 1004  Edsger (Amsterdam)  semaphore  25.00",
            "4 joined rows",
        ],
    );
    assert!(!stdout.contains("1005"), "order 1005 has no customer:\n{stdout}");
}

#[test]
fn nightly_batch_second_run_reads_only_new_records_and_continues_the_totals() {
    check_nightly_batch(&run("nightly_batch", &[]));
}

#[test]
fn nightly_batch_on_apache_kafka_prints_the_same_totals() {
    let broker = broker::Broker::shared();
    let dir = tempfile::tempdir().unwrap();
    let stdout = run(
        "nightly_batch",
        &[
            "--brokers",
            &broker.bootstrap,
            "--topic",
            "nightly-orders",
            "--checkpoint-dir",
            dir.path().to_str().unwrap(),
        ],
    );
    check_nightly_batch(&stdout);
}

fn check_nightly_batch(stdout: &str) {
    let (night1, night2) = stdout.split_once("night 2:").unwrap();
    assert_lines(
        night1,
        &[
            "  alice  orders 2  total 20.00",
            "  bob    orders 1  total 8.00",
            "  carol  orders 1  total 20.00",
        ],
    );
    assert!(
        night1.contains("restored from checkpoint None, read 4 records"),
        "{stdout}"
    );
    assert_lines(
        night2,
        &[
            "  alice  orders 3  total 30.00",
            "  bob    orders 2  total 12.00",
            "  dave   orders 1  total 15.00",
        ],
    );
    assert!(
        night2.contains("restored from checkpoint Some(") && night2.contains("read 3 records"),
        "the second run restores the first one's checkpoint and reads only night 2's 3 orders:\n{stdout}"
    );
    assert!(!night2.contains("carol"), "carol had no new orders:\n{stdout}");
}

/// One HTTP/1.0 request; returns the whole response.
fn http(addr: &str, method: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn axum_service_checkpoints_on_request_and_stops_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(example("axum_service"))
        .args([
            "--addr",
            "127.0.0.1:0",
            "--checkpoint-interval-ms",
            "0",
            "--rate",
            "2000",
        ])
        .args(["--exit-after-ms", "40000"]) // a backstop: the test stops it long before
        .arg("--checkpoint-dir")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The service prints the address it bound (port 0: a free one).
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let addr = first.trim().strip_prefix("serving http://").unwrap().to_string();

    let info = http(&addr, "GET", "/");
    assert!(info.starts_with("HTTP/1.0 200"), "{info}");
    assert!(info.contains(r#""job":"axum-service""#), "{info}");
    let checkpoint = http(&addr, "POST", "/checkpoint");
    assert!(checkpoint.starts_with("HTTP/1.0 202"), "{checkpoint}");
    // GET /status shows the requested checkpoint and records reaching the sink.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let response = http(&addr, "GET", "/status");
        assert!(response.starts_with("HTTP/1.0 200"), "{response}");
        let body = response.split("\r\n\r\n").nth(1).unwrap();
        let status: serde_json::Value = serde_json::from_str(body).unwrap();
        let completed = status["checkpoints"]["completed"].as_u64().unwrap();
        let sink_records: u64 = status["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["name"].as_str().unwrap().contains("sink") || t["output_queue"].is_null())
            .map(|t| t["records_out"].as_u64().unwrap())
            .sum();
        if completed >= 1 && sink_records > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "GET /status never showed the checkpoint and records: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let stop = http(&addr, "POST", "/stop");
    assert!(stop.starts_with("HTTP/1.0 202"), "{stop}");

    let status = wait(&mut child, "axum_service");
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(status.success(), "{status}: {rest}");
    // No periodic checkpoints: the requested one and the final one.
    assert!(rest.contains("2 checkpoints completed"), "{rest}");
}

#[test]
fn first_job_counts_words_and_a_second_run_has_nothing_left() {
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        let out = Command::new(example("first_job"))
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let first = run();
    for line in [
        r#"print[0]> ("to", 1)"#,
        r#"print[0]> ("to", 2)"#,
        r#"print[0]> ("be", 2)"#,
        r#"print[0]> ("question", 1)"#,
    ] {
        assert!(first.contains(line), "missing {line}:\n{first}");
    }
    assert_eq!(
        first.lines().filter(|l| l.starts_with("print[0]> ")).count(),
        10,
        "{first}"
    );
    assert!(
        first.contains("done: restored from checkpoint None, last checkpoint Some(1)"),
        "{first}"
    );
    // The second run restores the final checkpoint: nothing left to read.
    let second = run();
    assert!(!second.contains("print[0]>"), "{second}");
    assert!(second.contains("done: restored from checkpoint Some(1)"), "{second}");
}

#[test]
fn sessionization_counts_sessions_and_sends_the_late_view_to_its_own_sink() {
    let stdout = run("sessionization", &[]);
    assert_lines(
        &stdout,
        &[
            "session ann 0s-70s: 3 views",
            "session ann 120s-150s: 1 views",
            "session ann 230s-260s: 1 views",
            "session bob 10s-70s: 3 views",
            "session bob 200s-230s: 1 views",
            "late view bob at 50s",
        ],
    );
    assert_eq!(stdout.lines().count(), 6, "{stdout}");
}
