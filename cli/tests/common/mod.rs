//! Helpers shared by the integration tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The `weir` binary built for these tests.
pub const WEIR: &str = env!("CARGO_BIN_EXE_weir");

/// One line of the demo job's output: `index,key,count,sum`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Line {
    pub index: u64,
    pub key: u64,
    pub count: u64,
}

/// Reads every committed part file (`part-*`, not hidden in-progress ones).
pub fn committed_lines(dir: &Path) -> Vec<Line> {
    let mut lines = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return lines;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("part-") {
            continue;
        }
        for l in std::fs::read_to_string(e.path()).unwrap().lines() {
            let f: Vec<u64> = l.split(',').map(|x| x.parse().unwrap()).collect();
            lines.push(Line {
                index: f[0],
                key: f[1],
                count: f[2],
            });
        }
    }
    lines
}

/// Compares a run's committed output with a failure-free run's:
/// returns (lost, duplicated) counted per record index and per (key, count).
pub fn compare(reference: &[Line], actual: &[Line]) -> (usize, usize) {
    let mut expected: HashMap<(u64, u64), i64> = HashMap::new();
    for l in reference {
        *expected.entry((l.key, l.count)).or_default() += 1;
    }
    let mut seen: HashMap<u64, i64> = HashMap::new();
    for l in actual {
        *seen.entry(l.index).or_default() += 1;
        *expected.entry((l.key, l.count)).or_default() -= 1;
    }
    let ref_indices: std::collections::HashSet<u64> = reference.iter().map(|l| l.index).collect();
    let lost_idx = ref_indices.iter().filter(|i| !seen.contains_key(i)).count();
    let dup_idx: i64 = seen.values().filter(|c| **c > 1).map(|c| c - 1).sum();
    let extra_idx = seen.keys().filter(|i| !ref_indices.contains(i)).count();
    let lost_state = expected.values().filter(|v| **v > 0).count();
    let dup_state = expected.values().filter(|v| **v < 0).count();
    (lost_idx + lost_state, dup_idx as usize + extra_idx + dup_state)
}

/// Writes a summary line where .ci/run prints it from.
pub fn publish_summary(name: &str, line: &str) {
    println!("{line}");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("weir-summaries");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(format!("{name}.txt")), format!("{line}\n"));
}

/// The random source of a kill loop: xorshift seeded from the clock, with the
/// seed kept for the summary line (a failing schedule can be replayed).
pub struct KillRng {
    /// The seed, printed in the proof's summary.
    pub seed: u64,
    state: u64,
}

impl KillRng {
    pub fn from_clock() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        KillRng { seed, state: seed | 1 }
    }

    /// A number in `0..bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state % bound
    }
}

/// How one run of a kill loop ended.
pub enum RunEnd {
    /// SIGKILLed: by its own failpoint (`by_failpoint`) or by the test.
    Killed { by_failpoint: bool },
    /// It exited by itself, which a kill loop's run must not do.
    Exited(std::process::ExitStatus),
}

/// Lets `child` run for `wait`, then SIGKILLs it (calling `before_kill` just
/// before, to look at what it was doing). A child that a failpoint killed
/// first, or that exited by itself, is reported as such.
pub fn kill_after(child: &mut std::process::Child, wait: std::time::Duration, before_kill: impl FnOnce()) -> RunEnd {
    use std::os::unix::process::ExitStatusExt;
    let deadline = std::time::Instant::now() + wait;
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return if status.signal() == Some(9) {
                RunEnd::Killed { by_failpoint: true }
            } else {
                RunEnd::Exited(status)
            };
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    before_kill();
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "the child was to die of SIGKILL");
    RunEnd::Killed { by_failpoint: false }
}

/// Waits for `child` to exit, failing the test after `timeout`.
pub fn wait_for_exit(
    child: &mut std::process::Child,
    timeout: std::time::Duration,
    what: &str,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not finish in {timeout:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Follows a child's log (stderr) on a thread: the newest triggered and
/// completed checkpoint ids as they happen, and the whole log when it ends.
pub fn follow(child: &mut Child) -> (Arc<AtomicU64>, Arc<AtomicU64>, std::thread::JoinHandle<String>) {
    let (triggered, complete) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (t, c) = (triggered.clone(), complete.clone());
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut log = String::new();
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let id = |word: &str| {
                line.split(word)
                    .next()
                    .and_then(|h| h.rsplit(' ').next())
                    .and_then(|n| n.parse::<u64>().ok())
            };
            if line.contains(" triggered") {
                if let Some(n) = id(" triggered") {
                    t.fetch_max(n, Ordering::SeqCst);
                }
            } else if line.contains(" complete") {
                if let Some(n) = id(" complete") {
                    c.fetch_max(n, Ordering::SeqCst);
                }
            }
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    (triggered, complete, reader)
}

/// Waits until the child followed by [`follow`] completed `n` checkpoints.
pub fn wait_for_checkpoints(complete: &AtomicU64, n: u64, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while complete.load(Ordering::SeqCst) < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} completed no {n} checkpoints in 60 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
