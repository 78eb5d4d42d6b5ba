//! The command line: Prometheus metrics of a running job, and `--help`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

fn scrape(addr: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

#[test]
fn a_running_job_serves_prometheus_metrics() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(common::WEIR)
        .args([
            "run",
            "demo",
            "--records",
            "0",
            "--rate",
            "20000",
            "--checkpoint-interval-ms",
            "100",
            "--metrics-addr",
            &addr,
        ])
        .arg("--checkpoint-dir")
        .arg(dir.path().join("ck"))
        .arg("--output")
        .arg(dir.path().join("out"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Every family the issue asks for, once the job has checkpointed.
    let wanted = [
        "weir_task_records_in_total",
        "weir_task_records_out_total",
        "weir_task_backpressured_ms_total",
        "weir_task_output_queue_fill_ratio",
        "weir_latency_seconds",
        "weir_checkpoints_completed_total",
        "weir_checkpoint_duration_seconds",
        "weir_checkpoint_alignment_seconds",
        "weir_last_checkpoint_bytes",
        "weir_sink_commit_seconds",
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    let first = loop {
        if let Some(body) = scrape(&addr) {
            if wanted.iter().all(|w| body.contains(w)) {
                break Some(body);
            }
            last = body;
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let Some(first) = first else {
        child.kill().unwrap();
        child.wait().unwrap();
        let missing: Vec<_> = wanted.iter().filter(|w| !last.contains(*w)).collect();
        panic!("metrics {missing:?} never showed up; last scrape:\n{last}");
    };
    // The numbers move while the job runs.
    std::thread::sleep(Duration::from_millis(1500));
    let second = scrape(&addr).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    for name in ["weir_task_records_out_total", "weir_checkpoints_completed_total"] {
        let (a, b) = (sum_of(&first, name), sum_of(&second, name));
        assert!(b > a, "{name} did not grow: {a} then {b}\n{second}");
    }
    assert!(sum_of(&second, "weir_last_checkpoint_bytes") > 0.0);
}

/// The sum of every sample of metric `name` in a Prometheus text page.
fn sum_of(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn every_command_has_help_with_an_example() {
    for args in [
        vec!["run", "demo"],
        vec!["run", "kafka-count"],
        vec!["run", "nexmark"],
        vec!["run", "bench"],
        vec!["nexmark"],
        vec!["bench"],
        vec!["checkpoints", "list"],
        vec!["checkpoints", "show"],
        vec!["checkpoints", "gc"],
        vec!["offsets"],
    ] {
        let out = std::process::Command::new(common::WEIR)
            .args(&args)
            .arg("--help")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("Example:"), "{args:?}: {text}");
    }
}

#[test]
fn a_config_file_with_an_unknown_key_is_refused_naming_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("job.toml");
    std::fs::write(&file, "checkpoint_interval_ms = 100\nretained_checkpoint = 2\n").unwrap();
    let out = std::process::Command::new(common::WEIR)
        .args(["run", "demo", "--records", "10", "--config"])
        .arg(&file)
        .arg("--checkpoint-dir")
        .arg(dir.path().join("ck"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("retained_checkpoint") && err.contains("job.toml") && err.contains("line 2"),
        "{err}"
    );

    std::fs::write(&file, "retained_checkpoints = 1\n").unwrap();
    let out = std::process::Command::new(common::WEIR)
        .args(["run", "demo", "--records", "1000", "--config"])
        .arg(&file)
        .arg("--checkpoint-dir")
        .arg(dir.path().join("ck"))
        .arg("--output")
        .arg(dir.path().join("out"))
        .env("WEIR_CHECKPOINT_INTERVAL_MS", "0")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let store = weir::checkpoint::CheckpointStore::open(&dir.path().join("ck"), "demo").unwrap();
    assert_eq!(
        store.complete_ids().unwrap().len(),
        1,
        "retained_checkpoints = 1 from the file"
    );

    // The [kafka] table is checked the same way, before anything connects.
    std::fs::write(&file, "[kafka]\nbrokers = \"127.0.0.1:1\"\ndelivery = \"twice\"\n").unwrap();
    let out = std::process::Command::new(common::WEIR)
        .args(["run", "kafka-count", "--input", "in", "--output", "out", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("delivery") && err.contains("job.toml") && err.contains("line 3"),
        "{err}"
    );
}

#[test]
fn sigterm_stops_with_a_final_checkpoint_and_a_restart_continues_exactly() {
    let dir = tempfile::tempdir().unwrap();
    // Two endless runs, each stopped by SIGTERM: the second resumes from the
    // first one's final checkpoint.
    for run in 0..2 {
        let mut child = std::process::Command::new(common::WEIR)
            .args(["run", "demo", "--records", "0", "--rate", "20000"])
            .arg("--checkpoint-dir")
            .arg(dir.path().join("ck"))
            .arg("--output")
            .arg(dir.path().join("out"))
            .stderr(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "run {run} did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "run {run}: {status}");
    }
    let store = weir::checkpoint::CheckpointStore::open(&dir.path().join("ck"), "demo").unwrap();
    let manifest = store.restore_point().unwrap().unwrap();
    assert!(manifest.final_checkpoint, "the newest checkpoint is the final one");
    let generated: u64 = manifest.operators["generator"]
        .subtasks
        .iter()
        .map(|s| match s {
            weir::checkpoint::SubtaskState::Bytes { hex, .. } => {
                // 0x53, the number of splits, then (split, next k) pairs: 8 bytes each.
                let words: Vec<u64> = hex.as_bytes()[2..]
                    .chunks(16)
                    .map(|w| u64::from_str_radix(std::str::from_utf8(w).unwrap(), 16).unwrap())
                    .collect();
                words.iter().skip(2).step_by(2).sum::<u64>()
            }
            _ => panic!("generator state must be bytes"),
        })
        .sum();
    let lines = common::committed_lines(&dir.path().join("out"));
    assert!(generated > 0);
    // Every record generated before the last final barrier is committed once...
    assert_eq!(
        lines.len() as u64,
        generated,
        "every record before the final barrier is committed, once"
    );
    let indices: std::collections::HashSet<u64> = lines.iter().map(|l| l.index).collect();
    assert_eq!(indices.len(), lines.len(), "no record committed twice");
    // ...and the state went on across the restart: each key's counts are 1..=n.
    let mut counts: std::collections::HashMap<u64, Vec<u64>> = std::collections::HashMap::new();
    for l in &lines {
        counts.entry(l.key).or_default().push(l.count);
    }
    for (key, mut c) in counts {
        c.sort_unstable();
        assert!(
            c.iter().enumerate().all(|(i, n)| *n == i as u64 + 1),
            "key {key}: counts {c:?} are not 1..=n (state lost or doubled at the restart)"
        );
    }
}

#[test]
fn checkpoint_commands_print_what_the_snapshot_says() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    let out = std::process::Command::new(common::WEIR)
        .args([
            "run",
            "demo",
            "--records",
            "1000",
            "--parallelism",
            "2",
            "--checkpoint-interval-ms",
            "0",
        ])
        .arg("--checkpoint-dir")
        .arg(&ck)
        .arg("--output")
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let weir = |args: &[&str]| {
        let out = std::process::Command::new(common::WEIR).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let ck = ck.to_str().unwrap();
    let mut got = String::new();
    for args in [
        vec!["checkpoints", "show", ck, "--job", "demo"],
        vec!["checkpoints", "list", ck, "--job", "demo"],
        vec!["offsets", ck, "--job", "demo"],
    ] {
        got.push_str(&format!("$ weir {}\n", args.join(" ").replace(ck, "CK")));
        got.push_str(&weir(&args));
    }
    // What varies from run to run: SST sizes and creation times.
    let got = normalize(&got);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/checkpoint_commands.txt");
    if std::env::var("UPDATE_SNAPSHOTS").is_ok() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        got, want,
        "the output changed; if on purpose, run again with UPDATE_SNAPSHOTS=1"
    );
}

/// Replaces what differs between runs by `N`: sizes of RocksDB files
/// (`(8055 bytes)`) and of whole checkpoints, and creation times.
fn normalize(text: &str) -> String {
    let text: String = text
        .lines()
        .map(|l| match l.strip_prefix("chk-") {
            // chk-<id> \t <date> <time> UTC \t <n> operators \t <bytes> bytes [\t final]
            Some(rest) => {
                let f: Vec<&str> = rest.split('\t').collect();
                let date_ok = f[1].len() == 23 && f[1].ends_with(" UTC") && f[1].starts_with("20");
                assert!(date_ok, "not a UTC time: {}", f[1]);
                format!("chk-{}\tDATE\t{}\tN bytes\t{}\n", f[0], f[2], f[4..].join("\t"))
            }
            None => format!("{l}\n"),
        })
        .collect();
    let mut out = String::new();
    for line in text.lines() {
        let words: Vec<String> = line
            .split_inclusive(|c: char| c.is_whitespace() || c == '(')
            .map(|w| {
                let digits = w.trim_end().chars().take_while(char::is_ascii_digit).count();
                let rest = &w.trim_end()[digits..];
                let volatile = digits > 0 && rest.is_empty() && line.contains("SST (");
                if volatile {
                    format!("N{}", &w[w.trim_end().len()..])
                } else {
                    w.to_string()
                }
            })
            .collect();
        out.push_str(&words.concat());
        out.push('\n');
    }
    out
}

#[test]
fn looking_at_a_job_that_is_not_there_names_what_was_looked_for_and_what_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(common::WEIR)
            .args(args)
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap()
    };
    let root = dir.path().to_str().unwrap();
    let out = run(&[
        "run",
        "demo",
        "--records",
        "100",
        "--checkpoint-dir",
        root,
        "--output",
        &format!("{root}/out"),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for command in [
        vec!["checkpoints", "list", root, "--job", "dmeo"],
        vec!["checkpoints", "show", root, "--job", "dmeo"],
        vec!["checkpoints", "gc", root, "--job", "dmeo"],
        vec!["offsets", root, "--job", "dmeo"],
    ] {
        let out = run(&command);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{command:?} must fail");
        assert!(
            err.contains("job `dmeo`") && err.contains(root) && err.contains("job(s): demo"),
            "{command:?}: {err}"
        );
    }
    assert!(
        !dir.path().join("dmeo").exists(),
        "looking must not create the job's directory"
    );
    let out = run(&["checkpoints", "list", &format!("{root}/missing"), "--job", "demo"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

#[test]
fn checkpoints_list_json_and_gc() {
    let dir = tempfile::tempdir().unwrap();
    let run = |records: &str| {
        let out = std::process::Command::new(common::WEIR)
            .args(["run", "demo", "--records", records, "--checkpoint-interval-ms", "0"])
            .arg("--checkpoint-dir")
            .arg(dir.path().join("ck"))
            .arg("--output")
            .arg(dir.path().join("out"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    run("1000");
    run("2000");
    run("3000");
    let list = || {
        let out = std::process::Command::new(common::WEIR)
            .args(["checkpoints", "list"])
            .arg(dir.path().join("ck"))
            .args(["--job", "demo", "--json"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    let before = list();
    assert_eq!(before.len(), 3);
    assert!(before
        .iter()
        .all(|c| c["final"] == true && c["bytes"].as_u64().unwrap() > 0));
    let gc = std::process::Command::new(common::WEIR)
        .args(["checkpoints", "gc"])
        .arg(dir.path().join("ck"))
        .args(["--job", "demo", "--keep", "1"])
        .output()
        .unwrap();
    assert!(gc.status.success());
    let after = list();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["id"], before[2]["id"]);
    run("3000"); // the kept checkpoint restores
}

#[test]
fn bench_prints_one_json_line_per_run_and_plots_w2_latency() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::WEIR)
        .args(["bench", "w1", "w2", "w3", "q2", "--records", "20000", "--rate", "5000"])
        .args([
            "--duration-s",
            "2",
            "--warmup-s",
            "1",
            "--checkpoint-interval-ms",
            "300",
            "--json",
        ])
        .arg("--plot")
        .arg(dir.path().join("plots"))
        .env("WEIR_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let benches: Vec<&str> = lines.iter().map(|l| l["bench"].as_str().unwrap()).collect();
    assert_eq!(benches, ["W1", "W2", "W3", "nexmark"]);
    assert!(lines[0]["records_per_s"].as_f64().unwrap() > 0.0);
    let w2 = &lines[1];
    assert_eq!(w2["records"], 10_000, "rate x duration");
    let whole = &w2["latency_ms"]["whole"];
    assert_eq!(whole["count"], 10_000, "every W2 record has a latency");
    let (p50, p99, max) = (
        whole["p50_ms"].as_f64().unwrap(),
        whole["p99_ms"].as_f64().unwrap(),
        whole["max_ms"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{whole}");
    assert!(w2["latency_ms"]["after_warmup"]["count"].as_u64().unwrap() < 10_000);
    assert!(w2["checkpoints"].as_u64().unwrap() >= 2);
    assert_eq!(lines[3]["query"], "q2");
    let svg = std::fs::read_to_string(dir.path().join("plots/w2-p1-5000.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.matches("<polyline").count() == 3,
        "{svg}"
    );
}

#[test]
fn bench_rescale_restores_state_at_another_parallelism_and_needs_two_parallelisms() {
    let out = std::process::Command::new(common::WEIR)
        .args(["bench", "rescale", "--keys", "20000", "--parallelism", "2,3", "--json"])
        .env("WEIR_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (line["bench"].as_str(), line["from"].as_u64(), line["to"].as_u64()),
        (Some("rescale"), Some(2), Some(3))
    );
    assert!(line["state_bytes"].as_u64().unwrap() > 20_000 * 8 / 2, "{line}");
    let (restore, run) = (
        line["restore_s"].as_f64().unwrap(),
        line["rescaled_run_s"].as_f64().unwrap(),
    );
    assert!(0.0 < restore && restore <= run, "{line}");

    let refused = std::process::Command::new(common::WEIR)
        .args(["bench", "rescale", "--keys", "100", "--parallelism", "2"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("--parallelism FROM,TO"), "{err}");
}

#[test]
fn ui_addr_serves_the_page_and_api_while_the_job_runs_and_lingers_after_it() {
    use std::io::{BufRead, Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(common::WEIR)
        .args([
            "run",
            "demo",
            "--records",
            "100000",
            "--rate",
            "50000",
            "--ui-linger-s",
            "3",
        ])
        .args(["--ui-addr", "127.0.0.1:0", "--checkpoint-dir"])
        .arg(dir.path().join("ck"))
        .arg("--output")
        .arg(dir.path().join("out"))
        .env("WEIR_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let url = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("web UI: ").map(str::to_string))
        .expect("the URL is printed at start");
    let addr = url.trim_start_matches("http://").trim_end_matches('/').to_string();
    let get = |path: &str| {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        answer
    };
    let page = get("/");
    assert!(page.starts_with("HTTP/1.1 200") && page.contains("page.js"), "{page}");
    assert!(get("/api/status").contains("\"job\":\"demo\""));
    // The job ends (2 s at 50 000 records/s); the UI stays for --ui-linger-s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if get("/api/status").contains("\"state\":\"finished\"") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the UI never showed the end");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let status = child.wait().unwrap();
    assert!(status.success());

    let refused = std::process::Command::new(common::WEIR)
        .args([
            "run",
            "demo",
            "--records",
            "10",
            "--ui-addr",
            "192.0.2.1:80",
            "--checkpoint-dir",
        ])
        .arg(dir.path().join("ck2"))
        .arg("--output")
        .arg(dir.path().join("out2"))
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("ui_addr") && err.contains("192.0.2.1:80"), "{err}");
}

#[test]
fn the_distributed_table_of_a_config_file_is_read_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("job.toml");
    // An unknown key of [distributed] is refused naming it.
    std::fs::write(&file, "[distributed]\nenabled = true\nmember = \"a\"\n").unwrap();
    let out = std::process::Command::new(common::WEIR)
        .args(["nexmark", "--query", "q11", "--generator", "--events", "10", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("member") && err.contains("job.toml"), "{err}");
    // `enabled` makes the run distributed, as --distributed does: not for the generator.
    std::fs::write(&file, "[distributed]\nenabled = true\nsession_timeout_ms = 6000\n").unwrap();
    let out = std::process::Command::new(common::WEIR)
        .args(["nexmark", "--query", "q11", "--generator", "--events", "10", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--distributed is for Kafka runs"), "{err}");
}
