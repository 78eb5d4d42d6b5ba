//! Scale-out on Kafka: `weir run kafka-count --distributed` members share
//! the job's shards through the consumer group `weir-<job>`, one shard job
//! per topic partition with its checkpoints on the S3 test server. The
//! read_committed output must equal a failure-free run's: every index once,
//! per key counts 1..n.
//!
//! - Through a repartition topic (input not partitioned by key): members A
//!   and B start, C joins, A is SIGKILLed and restarted, B is paused
//!   (SIGSTOP) past its session timeout while the others take its shards,
//!   wakes as a zombie and is fenced, then leaves (SIGTERM). The input
//!   stops, A and C leave, and a lone `--bounded` member drains the rest
//!   through both stages and ends by itself.
//! - Input partitioned by key (no hop): A and B start, A is SIGKILLed, C
//!   joins (its web UI shows its shards), B leaves, A comes back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/broker.rs"]
mod broker;
mod common;
#[path = "support/kafka_data.rs"]
mod kafka_data;
#[path = "support/nexmark_ref.rs"]
mod nexmark_ref;
#[path = "support/s3.rs"]
mod s3;

use broker::Broker;
use common::{compare, publish_summary, wait_for_exit, WEIR};
use kafka_data::{expected, input, input_by_key, output, output_so_far};
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 6;
/// At least this many input records.
const RECORDS: u64 = 150_000;

/// A member process and its log so far.
struct Member {
    name: &'static str,
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Member {
    fn start(name: &'static str, broker: &Broker, server: &s3::S3Server, url: &str, local: &Path) -> Member {
        Self::start_with(name, broker, server, url, local, &[])
    }

    /// Sends `signal` to the member.
    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the PID of a child this test started and has not reaped.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    fn start_with(
        name: &'static str,
        broker: &Broker,
        server: &s3::S3Server,
        url: &str,
        local: &Path,
        extra: &[&str],
    ) -> Member {
        // The topics come from the prefix of the member's name: see `topics_of`.
        let topics = topics_of(name);
        let mut command = Command::new(WEIR);
        if name.starts_with('N') {
            command
                .args(["nexmark", "--query", "q11", "--distributed", "--member-id", name])
                .args(["--source-topic", "nx-in", "--sink-topic", "nx-out", "--job", "q11"])
                .args(["--repartition-partitions", "4"]);
        } else {
            command
                .args(["run", "kafka-count", "--distributed", "--member-id", name])
                .args(topics.2)
                .args(["--input", topics.0, "--output", topics.1]);
        }
        let mut child = command
            .args(["--session-timeout-ms", "6000", "--parallelism", "1"])
            .args(["--checkpoint-interval-ms", "300", "--brokers", &broker.bootstrap])
            .args(["--checkpoint-dir", url])
            .args(extra)
            .envs(server.env())
            .env("WEIR_LOCAL_STATE_DIR", local.join(name))
            .env("WEIR_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (stderr, into) = (child.stderr.take().unwrap(), log.clone());
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = into.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Member { name, child, log }
    }

    /// How many times it started a shard.
    fn takeovers(&self) -> usize {
        self.log.lock().unwrap().matches(" runs shard ").count()
    }

    fn wait_for_takeovers(&self, n: usize, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while self.takeovers() < n {
            assert!(
                Instant::now() < deadline,
                "member {} took over no {n} shard(s) in {secs} s:\n{}",
                self.name,
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn terminate(&mut self) -> String {
        self.signal(libc::SIGTERM);
        let status = wait_for_exit(&mut self.child, Duration::from_secs(60), self.name);
        let log = self.log.lock().unwrap().clone();
        assert!(status.success(), "member {} ended badly ({status}):\n{log}", self.name);
        log
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The whole answer (status line, headers, body) to `GET <base><path>`.
fn http_answer(base: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://").trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET /{path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
}

/// The body of `GET <base><path>` (base: `http://host:port/`).
fn http_get(base: &str, path: &str) -> String {
    let answer = http_answer(base, path);
    assert!(answer.starts_with("HTTP/1.1 200"), "GET /{path}: {answer}");
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    // A chunked JSON body is one chunk: its size line, the JSON, the end.
    if answer.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        let rest = body.split_once("\r\n").map_or("", |(_, r)| r);
        return rest.rsplitn(2, "\r\n0\r\n").last().unwrap_or("").trim().to_string();
    }
    body.to_string()
}

/// Input and output topics of a member and its extra flags: members `K*`
/// run the keyed-input test's job (no hop), `N*` Nexmark q11, the others
/// the repartition test's.
fn topics_of(name: &str) -> (&'static str, &'static str, &'static [&'static str]) {
    if name.starts_with('K') {
        ("d-in", "d-out", &["--input-partitioned-by-key"])
    } else {
        ("s-in", "s-out", &["--repartition-partitions", "4"])
    }
}

/// The tests of this binary run one at a time (each runs several members).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Produces input into `topic` until `stop` (at least `RECORDS`), partitioned
/// by key if `keyed`, else round-robin; returns how many.
fn feed(broker: &Broker, topic: &'static str, keyed: bool, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let b = broker.bootstrap.clone();
    std::thread::spawn(move || {
        let mut produced = 0;
        while produced < RECORDS || !stop.load(Ordering::Relaxed) {
            let batch = produced..produced + 5_000;
            let batch = if keyed {
                input_by_key(batch, PARTITIONS)
            } else {
                input(batch, PARTITIONS)
            };
            broker::produce_to(&b, topic, &batch);
            produced += 5_000;
            std::thread::sleep(Duration::from_millis(200));
        }
        produced
    })
}

/// Waits until `topic` holds `records` committed output lines.
fn wait_for_output(broker: &Broker, topic: &str, records: u64, members: &[&Member]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = output_so_far(broker, topic).len() as u64;
        if n >= records {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the members wrote {n} of {records} records in 120 s\n{}",
            members
                .iter()
                .map(|m| format!("{}:\n{}", m.name, m.log.lock().unwrap()))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn members_join_die_and_leave_while_the_output_stays_exact() {
    let _serial = serial();
    let broker = Broker::shared();
    let server = s3::S3Server::shared();
    broker.create_topic("d-in", PARTITIONS);
    broker.create_topic("d-out", PARTITIONS);
    let url = s3::S3Server::url(&format!("distributed-{}", std::process::id()));
    let local = tempfile::tempdir().unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let feeder = feed(broker, "d-in", true, stop.clone());

    let mut a = Member::start("KA", broker, server, &url, local.path());
    let mut b = Member::start("KB", broker, server, &url, local.path());
    a.wait_for_takeovers(1, 60);
    b.wait_for_takeovers(1, 60);
    std::thread::sleep(Duration::from_secs(2));
    // A dies: its shards move once the group misses it (session timeout).
    a.child.kill().unwrap();
    let _ = a.child.wait();
    let a_before = a.takeovers();
    let mut c = Member::start_with(
        "KC",
        broker,
        server,
        &url,
        local.path(),
        &[
            "--ui-addr",
            "127.0.0.1:0",
            "--status-every",
            "1",
            "--prefetch-interval-ms",
            "500",
        ],
    );
    c.wait_for_takeovers(1, 60);
    // C's web UI: its shards, and each shard job's own page and API under shard/<p>/.
    let ui = c
        .log
        .lock()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("web UI: ").map(str::to_string))
        .expect("the member prints its UI's URL");
    let member: serde_json::Value = serde_json::from_str(&http_get(&ui, "api/member")).unwrap();
    let shard = member["shards"][0]["shard"]
        .as_str()
        .expect("C lists a shard")
        .to_string();
    let partition = shard.rsplit('/').next().unwrap();
    let job = format!("kafka-count-p{partition}");
    assert_eq!(member["shards"][0]["job"], job.as_str(), "{member}");
    let status: serde_json::Value = serde_json::from_str(&http_get(&ui, &format!("shard/{job}/api/status"))).unwrap();
    assert_eq!(status["job"], job.as_str(), "{status}");
    assert!(http_get(&ui, &format!("shard/{job}/")).contains("page.js"));
    // The shard's page has its Kafka partition (position, end, lag) and the
    // checkpoint its exactly-once sink committed last.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status: serde_json::Value =
            serde_json::from_str(&http_get(&ui, &format!("shard/{job}/api/status"))).unwrap();
        let tasks = status["tasks"].as_array().unwrap();
        let lag = tasks
            .iter()
            .flat_map(|t| t["kafka_lag"].as_array().cloned().unwrap_or_default())
            .find(|l| l["topic"] == "d-in" && l["partition"].as_i64() == partition.parse::<i64>().ok());
        let committed = tasks.iter().find_map(|t| t["committed_checkpoint"].as_u64());
        if let (Some(lag), Some(_)) = (&lag, committed) {
            let (position, end) = (lag["position"].as_i64().unwrap(), lag["end"].as_i64().unwrap());
            assert!(end >= position && lag["lag"].as_i64() == Some(end - position), "{lag}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "shard {job}'s status never showed its partition's lag and a committed checkpoint: {status}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Its readiness probe answers 200 once its shards caught up.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !http_answer(&ui, "api/ready").starts_with("HTTP/1.1 200") {
        assert!(
            Instant::now() < deadline,
            "C never got ready: {}",
            http_answer(&ui, "api/ready")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // B leaves gracefully: final checkpoints, then its shards move.
    let b_log = b.terminate();
    let after_b = c.takeovers();
    c.wait_for_takeovers(after_b.max(PARTITIONS as usize / 2), 60);
    // A comes back: the group moves shards to it (C gives them up gracefully).
    let mut a2 = Member::start("KA", broker, server, &url, local.path());
    a2.wait_for_takeovers(1, 60);
    std::thread::sleep(Duration::from_secs(2));

    stop.store(true, Ordering::Relaxed);
    let records = feeder.join().unwrap();
    wait_for_output(broker, "d-out", records, &[&a2, &c]);
    let a_log = a2.terminate();
    let c_log = c.terminate();
    assert!(
        c_log.contains("member KC: ") && c_log.contains("  shard d-in/") && c_log.contains(" lag "),
        "--status-every prints the member's shards and their lag:\n{c_log}"
    );
    let out = output(broker, "d-out");
    let (lost, duplicated) = compare(&expected(records), &out);
    // C prefetched the shards it did not run: taking B's over, it found
    // state files on local disk instead of downloading them.
    let reused: u64 = c_log
        .lines()
        .filter(|l| l.contains("state restored in"))
        .filter_map(|l| {
            l.split(" fetched from the store, ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert!(c_log.contains("prefetched "), "member C prefetched nothing:\n{c_log}");
    let takeovers = a_before
        + b_log.matches(" runs shard ").count()
        + c_log.matches(" runs shard ").count()
        + a_log.matches(" runs shard ").count();
    let restored = [&b_log, &c_log, &a_log]
        .iter()
        .map(|l| l.matches("restored checkpoint Some(").count())
        .sum::<usize>();
    // "... restored checkpoint Some(n) in N ms": the takeover times.
    let mut takeover_ms: Vec<u64> = [&b_log, &c_log, &a_log]
        .iter()
        .flat_map(|l| l.lines())
        .filter(|l| l.contains(" runs shard "))
        .filter_map(|l| l.rsplit(" in ").next()?.strip_suffix(" ms")?.parse().ok())
        .collect();
    takeover_ms.sort_unstable();
    publish_summary(
        "distributed",
        &format!(
            "distributed: kafka-count members A, B, C over {PARTITIONS} shards (A SIGKILLed and back, C joined, B left) \
             takeovers={takeovers} (from a checkpoint: {restored}; state restored in {takeover_ms:?} ms) lost={lost} \
             duplicated={duplicated} store=s3 output={}; C (prefetching) reused {reused} prefetched file(s) at takeovers",
            out.len()
        ),
    );
    assert!(reused > 0, "C's takeovers reused no prefetched file:\n{c_log}");
    assert_eq!((lost, duplicated), (0, 0));
    assert_eq!(out.len() as u64, records);
    assert!(restored >= 3, "shards moved with their state: {restored}");
}

#[test]
fn members_scale_out_through_a_repartition_topic_under_kills_and_a_zombie_and_the_output_stays_exact() {
    let _serial = serial();
    let broker = Broker::shared();
    let server = s3::S3Server::shared();
    broker.create_topic("s-in", PARTITIONS);
    broker.create_topic("s-out", PARTITIONS);
    let url = s3::S3Server::url(&format!("scale-out-{}", std::process::id()));
    let local = tempfile::tempdir().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // Round-robin input: a key's records are in every partition.
    let feeder = feed(broker, "s-in", false, stop.clone());
    // 6 input shards ("parse") + 4 repartition shards ("count").
    let shards = PARTITIONS as usize + 4;

    let mut a = Member::start("A", broker, server, &url, local.path());
    let mut b = Member::start("B", broker, server, &url, local.path());
    a.wait_for_takeovers(1, 60);
    b.wait_for_takeovers(1, 60);
    std::thread::sleep(Duration::from_secs(2));
    // C joins: 3 members.
    let mut c = Member::start("C", broker, server, &url, local.path());
    c.wait_for_takeovers(shards / 4, 60);
    std::thread::sleep(Duration::from_secs(2));
    // A is killed and restarted (its shards come back to it or stay moved).
    let mut kills = 0;
    let mut a_logs = String::new();
    a.child.kill().unwrap();
    let _ = a.child.wait();
    kills += 1;
    a_logs.push_str(&a.log.lock().unwrap());
    let c_before = c.takeovers() + b.takeovers();
    let mut a = Member::start("A", broker, server, &url, local.path());
    a.wait_for_takeovers(1, 90);
    while c.takeovers() + b.takeovers() == c_before && a.takeovers() < shards / 3 {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    // B freezes past its session timeout (6 s): A and C take its shards; B
    // wakes as a zombie whose shard jobs must be fenced.
    let others_before = a.takeovers() + c.takeovers();
    b.signal(libc::SIGSTOP);
    // Past the session timeout (6 s) and the rebalance that follows.
    std::thread::sleep(Duration::from_secs(12));
    let deadline = Instant::now() + Duration::from_secs(60);
    while a.takeovers() + c.takeovers() == others_before {
        assert!(Instant::now() < deadline, "nobody took the paused member's shards");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    b.signal(libc::SIGCONT);
    std::thread::sleep(Duration::from_secs(6));
    // B leaves (or has ended on a fencing error): 2 members.
    let b_status = {
        b.signal(libc::SIGTERM);
        wait_for_exit(&mut b.child, Duration::from_secs(60), "the woken member").to_string()
    };
    let b_log = b.log.lock().unwrap().clone();
    std::thread::sleep(Duration::from_secs(2));

    // The input stops; A and C leave; a lone bounded member D drains what
    // is left through both stages and ends by itself.
    stop.store(true, Ordering::Relaxed);
    let records = feeder.join().unwrap();
    a_logs.push_str(&a.terminate());
    let c_log = c.terminate();
    let mut d = Member::start_with("D", broker, server, &url, local.path(), &["--bounded"]);
    let d_status = wait_for_exit(&mut d.child, Duration::from_secs(180), "the bounded member");
    let d_log = d.log.lock().unwrap().clone();
    if std::env::var("SCALE_OUT_LOG").is_ok() {
        eprintln!("--- A:\n{a_logs}\n--- B:\n{b_log}\n--- C:\n{c_log}\n--- D:\n{d_log}");
    }
    assert!(d_status.success(), "the bounded member failed:\n{d_log}");
    assert!(d_log.contains("every shard it holds finished"), "{d_log}");
    let out = output(broker, "s-out");
    let (lost, duplicated) = compare(&expected(records), &out);
    let takeovers = [&a_logs, &b_log, &c_log]
        .iter()
        .map(|l| l.matches(" runs shard ").count())
        .sum::<usize>();
    let d_shards = d_log.matches(" finished at checkpoint ").count();
    let fenced = b_log.matches("fenced").count();
    let hop = [&a_logs, &c_log]
        .iter()
        .any(|l| l.contains("weir-kafka-count-running-count-sum-repartition/"));
    publish_summary(
        "scale_out",
        &format!(
            "scale-out: members=2->3->2 kills={kills} zombies=1 takeovers={takeovers} lost={lost} duplicated={duplicated} \
             (kafka-count, {PARTITIONS} input + 4 repartition shards, store=s3; zombie B fenced: {fenced} message(s), \
             {b_status}; bounded drain by a lone member: {d_shards} shards finished; output={})",
            out.len()
        ),
    );
    assert!(hop, "the count stage read the repartition topic");
    assert!(fenced >= 1, "the woken member's shards were fenced:\n{b_log}");
    assert_eq!((lost, duplicated), (0, 0), "B:\n{b_log}");
    assert_eq!(out.len() as u64, records);
}

#[test]
fn nexmark_q11_members_through_a_repartition_topic_match_the_reference() {
    use nexmark_ref::{diff, expected, parse_rows, test_config};
    use weir_workloads::nexmark::generator::{nexmark_event, GeneratorConfig};
    use weir_workloads::nexmark::queries::Query;
    const EVENTS: u64 = 24_000;
    const NX_PARTITIONS: i32 = 3;
    let _serial = serial();
    let broker = Broker::shared();
    let server = s3::S3Server::shared();
    broker.create_topic("nx-in", NX_PARTITIONS);
    broker.create_topic("nx-out", 2);
    let url = s3::S3Server::url(&format!("nexmark-members-{}", std::process::id()));
    let local = tempfile::tempdir().unwrap();
    // Round-robin: a bidder's bids are in every partition. 50 events per
    // second of event time: 8 minutes, so that sessions close on the
    // watermarks while the members run, not only at the drain.
    let config = GeneratorConfig {
        event_time_rate: 50,
        ..test_config(EVENTS)
    };
    let events: Vec<_> = (0..EVENTS).map(|i| nexmark_event(i, &config)).collect();
    let records: Vec<broker::ToProduce> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (None, e.to_json().into_bytes(), i as i32 % NX_PARTITIONS))
        .collect();
    let quarter = records.len() / 4;
    broker.produce("nx-in", &records[..quarter]);

    let mut a = Member::start("NA", broker, server, &url, local.path());
    let mut b = Member::start("NB", broker, server, &url, local.path());
    a.wait_for_takeovers(1, 60);
    b.wait_for_takeovers(1, 60);
    broker.produce("nx-in", &records[quarter..2 * quarter]);
    std::thread::sleep(Duration::from_secs(3));
    // A dies mid-stream and comes back while the input grows.
    a.child.kill().unwrap();
    let _ = a.child.wait();
    let mut logs = a.log.lock().unwrap().clone();
    let mut a = Member::start("NA", broker, server, &url, local.path());
    broker.produce("nx-in", &records[2 * quarter..3 * quarter]);
    a.wait_for_takeovers(1, 90);
    std::thread::sleep(Duration::from_secs(3));
    // B freezes past its session (6 s) while the input grows: A takes its
    // shards; B wakes as a zombie and is fenced.
    let a_before = a.takeovers();
    b.signal(libc::SIGSTOP);
    broker.produce("nx-in", &records[3 * quarter..]);
    std::thread::sleep(Duration::from_secs(12));
    let deadline = Instant::now() + Duration::from_secs(60);
    while a.takeovers() == a_before {
        assert!(Instant::now() < deadline, "A took none of the paused member's shards");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    b.signal(libc::SIGCONT);
    std::thread::sleep(Duration::from_secs(4));
    logs.push_str(&a.terminate());
    b.signal(libc::SIGTERM);
    let b_status = wait_for_exit(&mut b.child, Duration::from_secs(60), "the woken member");
    let b_log = b.log.lock().unwrap().clone();
    let fenced = b_log.matches("fenced").count();
    logs.push_str(&b_log);
    // Sessions closed by event time that crossed the hop, before any drain.
    let before_drain = broker.consume_all("nx-out", true).len();
    // A lone bounded member drains the rest and fires the open sessions.
    let mut d = Member::start_with("ND", broker, server, &url, local.path(), &["--bounded", "--drain"]);
    let d_status = wait_for_exit(&mut d.child, Duration::from_secs(180), "the bounded member");
    let d_log = d.log.lock().unwrap().clone();
    assert!(d_status.success(), "the bounded member failed:\n{d_log}");
    let got = parse_rows(Query::Q11, broker.consume_all("nx-out", true).into_iter().map(|c| c.3));
    let want = expected(Query::Q11, &events);
    let (lost, duplicated) = diff(&want, &got);
    let takeovers = logs.matches(" runs shard ").count() + d_log.matches(" runs shard ").count();
    publish_summary(
        "scale_out_nexmark",
        &format!(
            "scale-out: nexmark q11 members=2 kills=1 zombies=1 takeovers={takeovers} lost={lost} duplicated={duplicated} \
             ({NX_PARTITIONS} input + 4 repartition shards, watermarks merged over the parse shards, zombie fenced: \
             {fenced} message(s), {b_status}; bounded drain by a lone member, store=s3; {} rows, {before_drain} of them \
             fired by watermarks before the drain)",
            got.len()
        ),
    );
    assert!(
        before_drain > 0,
        "no session closed on the watermarks that crossed the repartition topic"
    );
    assert_eq!(
        (lost, duplicated),
        (0, 0),
        "{} rows expected, {} read\n{d_log}",
        want.len(),
        got.len()
    );
}
