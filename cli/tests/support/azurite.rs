//! An Azure Blob Storage emulator for integration tests: Azurite on
//! 127.0.0.1 (free port), installed and run by `scripts/azurite.sh`, with
//! one container, [`CONTAINER`]. [`Azurite::shared`] is the one server of a
//! test binary; tests use prefixes of their own. It dies with the test
//! binary (`PR_SET_PDEATHSIG`).
//!
//! Include it with `#[path = "support/azurite.rs"] mod azurite;`.
#![allow(dead_code)]

// Each server module has its own copy (a test binary may include both).
#[allow(clippy::duplicate_mod)]
#[path = "server.rs"]
mod server;

use server::{free_port, on_lasting_thread, repo_root, spawn_dying_with_us};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The container every test's prefix lives in.
pub const CONTAINER: &str = "weir-test";

/// A running Azurite blob service.
pub struct Azurite {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    _child: Child,
}

fn script(args: &[&str]) -> std::process::Output {
    Command::new("bash")
        .arg("scripts/azurite.sh")
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("cannot run scripts/azurite.sh")
}

impl Azurite {
    /// The server of this test binary, started on first use.
    pub fn shared() -> &'static Azurite {
        static SHARED: OnceLock<Azurite> = OnceLock::new();
        SHARED.get_or_init(|| on_lasting_thread("test-binary-azurite", Azurite::start))
    }

    fn start() -> Azurite {
        let out = script(&["install"]);
        assert!(
            out.status.success(),
            "scripts/azurite.sh install failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let mut cmd = Command::new("bash");
        cmd.args(["scripts/azurite.sh", "run", &port.to_string()])
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = spawn_dying_with_us(&mut cmd, "Azurite");
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "Azurite on port {port} did not start in 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let out = script(&["container", &port.to_string(), CONTAINER]);
        assert!(
            out.status.success(),
            "creating container {CONTAINER} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Azurite {
            endpoint: format!("http://127.0.0.1:{port}"),
            _child: child,
        }
    }

    /// The environment a job needs to reach this emulator (its well-known
    /// development account).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AZURE_STORAGE_USE_EMULATOR", "true".into()),
            ("AZURITE_BLOB_STORAGE_URL", self.endpoint.clone()),
        ]
    }

    /// `az://CONTAINER/<prefix>`, a checkpoint dir of a test's own.
    pub fn url(prefix: &str) -> String {
        format!("az://{CONTAINER}/{prefix}")
    }
}
