//! What the test servers (moto, Azurite) share: the repository's scripts,
//! free ports, a child that dies with the test binary, and one server per
//! test binary started from a thread that lives as long as it.
//!
//! Included by the server modules with `#[path = "server.rs"] mod server;`.
#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};

/// The workspace root, where `scripts/` lives.
pub fn repo_root() -> &'static Path {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    if manifest.join("scripts").is_dir() {
        manifest
    } else {
        manifest.parent().expect("a member crate lives in the workspace")
    }
}

/// A port of 127.0.0.1 free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind 127.0.0.1:0 to pick a free port");
    listener.local_addr().expect("local_addr of a bound listener").port()
}

/// Spawns `cmd` so that it is SIGKILLed when the thread that spawned it ends
/// (`PR_SET_PDEATHSIG`): spawn from [`on_lasting_thread`].
pub fn spawn_dying_with_us(cmd: &mut Command, what: &str) -> Child {
    // SAFETY: prctl is async-signal-safe and touches no parent memory.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().unwrap_or_else(|e| panic!("cannot start {what}: {e}"))
}

/// Runs `start` on a thread that parks for the rest of the test binary, so
/// that a server it spawns lives (and dies) with the binary.
pub fn on_lasting_thread<T: Send + 'static>(name: &str, start: fn() -> T) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _ = tx.send(std::panic::catch_unwind(start));
            loop {
                std::thread::park();
            }
        })
        .expect("cannot spawn a server's thread");
    match rx.recv().expect("the server's thread answers") {
        Ok(server) => server,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
