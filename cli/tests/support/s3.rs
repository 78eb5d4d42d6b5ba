//! An S3-compatible server for integration tests: moto on 127.0.0.1 (free
//! port), installed and run by `scripts/s3.sh`, with one bucket,
//! [`BUCKET`]. [`S3Server::shared`] is the one server of a test binary;
//! tests use prefixes of their own. It dies with the test binary
//! (`PR_SET_PDEATHSIG`).
//!
//! [`CutProxy`] stands between a job and the server: [`CutProxy::cut`]
//! closes every connection and refuses new ones (a network cut-off),
//! [`CutProxy::restore`] lets them through again.
//!
//! Include it with `#[path = "support/s3.rs"] mod s3;`.
#![allow(dead_code)]

// Each server module has its own copy (a test binary may include both).
#[allow(clippy::duplicate_mod)]
#[path = "server.rs"]
mod server;

use server::{free_port, on_lasting_thread, repo_root, spawn_dying_with_us};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The bucket every test's prefix lives in.
pub const BUCKET: &str = "weir-test";

/// A running moto server.
pub struct S3Server {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    _child: Child,
}

/// One raw HTTP request with an empty body; returns the status line.
fn http(port: u16, method: &str, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer.lines().next().unwrap_or_default().to_string())
}

impl S3Server {
    /// The server of this test binary, started on first use.
    pub fn shared() -> &'static S3Server {
        static SHARED: OnceLock<S3Server> = OnceLock::new();
        SHARED.get_or_init(|| on_lasting_thread("test-binary-s3", S3Server::start))
    }

    fn start() -> S3Server {
        let out = Command::new("bash")
            .args(["scripts/s3.sh", "install"])
            .current_dir(repo_root())
            .output()
            .expect("cannot run scripts/s3.sh");
        assert!(
            out.status.success(),
            "scripts/s3.sh install failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let mut cmd = Command::new("bash");
        cmd.args(["scripts/s3.sh", "run", &port.to_string()])
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = spawn_dying_with_us(&mut cmd, "the S3 server");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match http(port, "PUT", &format!("/{BUCKET}")) {
                Ok(status) if status.contains(" 200") => break,
                Ok(status) => panic!("creating bucket {BUCKET} answered {status}"),
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
                Err(e) => panic!("the S3 server on port {port} did not start in 60 s: {e}"),
            }
        }
        S3Server {
            endpoint: format!("http://127.0.0.1:{port}"),
            _child: child,
        }
    }

    /// The environment a job needs to reach this server at `endpoint`.
    pub fn env_for(endpoint: &str) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", endpoint.to_string()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "weir-test-key".into()),
            ("AWS_SECRET_ACCESS_KEY", "weir-test-secret".into()),
        ]
    }

    /// The environment a job needs to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        Self::env_for(&self.endpoint)
    }

    /// Sets [`S3Server::env`] in this process (for library calls).
    pub fn set_env(&self) {
        for (k, v) in self.env() {
            std::env::set_var(k, v);
        }
    }

    /// `s3://BUCKET/<prefix>`, a checkpoint dir of a test's own.
    pub fn url(prefix: &str) -> String {
        format!("s3://{BUCKET}/{prefix}")
    }
}

/// A TCP proxy to the S3 server that a test can cut off.
pub struct CutProxy {
    /// `http://127.0.0.1:PORT` of the proxy.
    pub endpoint: String,
    down: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    /// Connections accepted while up.
    pub accepted: Arc<AtomicUsize>,
}

impl CutProxy {
    /// A proxy in front of `server`.
    pub fn to(server: &S3Server) -> CutProxy {
        let upstream = server
            .endpoint
            .strip_prefix("http://")
            .expect("an http endpoint")
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind the proxy");
        let port = listener.local_addr().expect("the proxy's address").port();
        let down = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (d, o, a) = (down.clone(), open.clone(), accepted.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if d.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                a.fetch_add(1, Ordering::SeqCst);
                {
                    let mut open = o.lock().unwrap();
                    open.push(client.try_clone().unwrap());
                    open.push(server.try_clone().unwrap());
                }
                let pump = |mut from: TcpStream, mut to: TcpStream| {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                };
                pump(client.try_clone().unwrap(), server.try_clone().unwrap());
                pump(server, client);
            }
        });
        CutProxy {
            endpoint: format!("http://127.0.0.1:{port}"),
            down,
            open,
            accepted,
        }
    }

    /// Cuts every connection and refuses new ones until [`CutProxy::restore`].
    pub fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}
