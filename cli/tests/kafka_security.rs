//! weir against a secured Apache Kafka: a TLS listener and SASL/SCRAM-SHA-512
//! over TLS, with certificates this test makes (openssl) and a SCRAM
//! credential stored when the broker is formatted. `weir run kafka-count`
//! reaches it through `--kafka-property` flags and through the
//! `[kafka.properties]` table of a config file, exactly-once; a wrong
//! password and an untrusted certificate fail the job in bounded time with an
//! error naming the broker and the mechanism; no password is ever printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/broker.rs"]
mod broker;
mod common;
#[path = "support/kafka_data.rs"]
mod kafka_data;

use broker::{Broker, BrokerOptions, Secured};
use common::{compare, publish_summary, WEIR};
use kafka_data::{expected, input, output};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The secured broker of this binary (its tests use topics of their own).
fn broker() -> &'static Broker {
    static BROKER: OnceLock<Broker> = OnceLock::new();
    BROKER.get_or_init(|| {
        Broker::start_for_binary(BrokerOptions {
            secured: true,
            ..BrokerOptions::default()
        })
    })
}

fn secured() -> &'static Secured {
    broker().secured.as_ref().unwrap()
}

/// A bounded `kafka-count` run `<prefix>-in` -> `<prefix>-out` with `args`
/// (brokers and properties), the password in `KAFKA_PASSWORD`.
fn kafka_count(dir: &Path, prefix: &str, password: &str, args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let out = Command::new(WEIR)
        .args(["run", "kafka-count", "--bounded", "--parallelism", "2", "--job", prefix])
        .args(["--input", &format!("{prefix}-in"), "--output", &format!("{prefix}-out")])
        .arg("--checkpoint-dir")
        .arg(dir)
        .args(["--checkpoint-interval-ms", "200"])
        .args(args)
        .env("KAFKA_PASSWORD", password)
        .env("WEIR_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (out, started.elapsed())
}

/// What the CLI printed after `Error:` (the error and its causes), not the log.
fn error_of(printed: &str) -> String {
    printed
        .split_once("Error: ")
        .map(|(_, e)| e.to_string())
        .unwrap_or_default()
}

fn printed(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Input for `prefix`, produced through the plain-text listener.
fn prepare(prefix: &str, records: u64) {
    let broker = broker();
    broker.create_topic(&format!("{prefix}-in"), 2);
    broker.create_topic(&format!("{prefix}-out"), 2);
    broker.produce(&format!("{prefix}-in"), &input(0..records, 2));
}

#[test]
fn scram_over_tls_from_flags_and_tls_from_a_config_file_give_exactly_once_output() {
    let s = secured();
    let ca = s.ca.to_str().unwrap();
    let (user, password) = s.user;
    const RECORDS: u64 = 20_000;

    prepare("scram", RECORDS);
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        "--brokers",
        &s.sasl_ssl,
        "--kafka-property",
        "security.protocol=SASL_SSL",
        "--kafka-property",
        "sasl.mechanism=SCRAM-SHA-512",
        "--kafka-property",
        &format!("sasl.username={user}"),
        "--kafka-property",
        "sasl.password=${KAFKA_PASSWORD}",
        "--kafka-property",
        &format!("ssl.ca.location={ca}"),
    ];
    let (run, took) = kafka_count(dir.path(), "scram", password, &flags);
    let text = printed(&run);
    assert!(run.status.success(), "{text}");
    assert!(!text.contains(password), "the password was printed:\n{text}");
    let scram = output(broker(), "scram-out");
    assert_eq!(compare(&expected(RECORDS), &scram), (0, 0));
    assert_eq!(scram.len() as u64, RECORDS);

    // TLS only, set up in the config file's [kafka.properties] table.
    prepare("tls", RECORDS);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("job.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"{}\"\nproperties = {{ \"security.protocol\" = \"SSL\", \"ssl.ca.location\" = \"{ca}\" }}\n",
            s.ssl
        ),
    )
    .unwrap();
    let (run, _) = kafka_count(dir.path(), "tls", "", &["--config", config.to_str().unwrap()]);
    assert!(run.status.success(), "{}", printed(&run));
    let tls = output(broker(), "tls-out");
    assert_eq!(compare(&expected(RECORDS), &tls), (0, 0));
    publish_summary(
        "kafka_security",
        &format!(
            "kafka security: broker={} SASL_SSL/SCRAM-SHA-512 run {RECORDS} records in {took:.1?} lost=0 duplicated=0; \
             SSL run from [kafka.properties] lost=0 duplicated=0; password never printed",
            broker::broker_name()
        ),
    );
}

#[test]
fn a_wrong_password_fails_in_bounded_time_naming_the_broker_and_the_mechanism() {
    let s = secured();
    prepare("badpw", 100);
    let dir = tempfile::tempdir().unwrap();
    let wrong = "not-the-password-42";
    let (run, took) = kafka_count(
        dir.path(),
        "badpw",
        wrong,
        &[
            "--brokers",
            &s.sasl_ssl,
            "--kafka-property",
            "security.protocol=SASL_SSL",
            "--kafka-property",
            "sasl.mechanism=SCRAM-SHA-512",
            "--kafka-property",
            &format!("sasl.username={}", s.user.0),
            "--kafka-property",
            "sasl.password=${KAFKA_PASSWORD}",
            "--kafka-property",
            &format!("ssl.ca.location={}", s.ca.display()),
        ],
    );
    let text = assert_refused(&run, took, &[&s.sasl_ssl, "SCRAM-SHA-512"], "authentication");
    assert!(!text.contains(wrong), "the password was printed:\n{text}");
}

#[test]
fn an_untrusted_certificate_fails_in_bounded_time_naming_the_broker() {
    let s = secured();
    prepare("untrusted", 100);
    let dir = tempfile::tempdir().unwrap();
    let (run, took) = kafka_count(
        dir.path(),
        "untrusted",
        "",
        &[
            "--brokers",
            &s.ssl,
            "--kafka-property",
            "security.protocol=SSL",
            "--kafka-property",
            &format!("ssl.ca.location={}", s.untrusted_ca.display()),
        ],
    );
    assert_refused(&run, took, &[&s.ssl, "SSL"], "certificate");
}

/// The run failed at once with an error that names `names` (broker, mechanism)
/// and says the cluster refused the client for `cause`; returns what it printed.
fn assert_refused(run: &Output, took: Duration, names: &[&str], cause: &str) -> String {
    let text = printed(run);
    eprintln!("refused ({cause}) after {took:?}:\n{text}");
    assert!(!run.status.success(), "{text}");
    let error = error_of(&text);
    for name in names {
        assert!(error.contains(name), "the error names `{name}`:\n{text}");
    }
    assert!(
        error.contains("refused the client") && error.to_lowercase().contains(cause),
        "and says why ({cause}):\n{text}"
    );
    assert!(took < Duration::from_secs(15), "at once, not after a timeout: {took:?}");
    text
}
