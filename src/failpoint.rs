//! Failpoints for crash tests: named places in the runtime where a test can
//! make the process sleep or kill itself with SIGKILL.
//!
//! Set `WEIR_FAILPOINTS="name=action;name=action"` where action is
//! `sleep(MS)`, `kill` or `kill(PERCENT)` (kill with that probability).
//! Unset (the normal case), [`hit`] costs one relaxed atomic load.
//!
//! Names: `snapshot-async` (background part of a task snapshot),
//! `manifest-written` (after the manifest, before `LATEST` and before any
//! task hears the checkpoint is complete), `before-notify` (after `LATEST`),
//! `kafka-before-commit` / `kafka-after-commit` (around an exactly-once
//! sink's transaction commit), `restored` (every task made from the restored
//! checkpoint, sinks' pending output re-committed, no thread started yet),
//! `store-put-file` (before each state file is put into the checkpoint
//! store: kills mid-upload), `before-manifest` (every state file stored, the
//! manifest not yet created), `restore-fetch` (before each state file of a
//! restore is fetched from the store).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy)]
enum Action {
    Sleep(u64),
    Kill(u64),
}

fn table() -> &'static HashMap<String, Action> {
    static TABLE: OnceLock<HashMap<String, Action>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut map = HashMap::new();
        let Ok(spec) = std::env::var("WEIR_FAILPOINTS") else {
            return map;
        };
        for item in spec.split(';').filter(|s| !s.trim().is_empty()) {
            let Some((name, action)) = item.split_once('=') else {
                continue;
            };
            let arg = |a: &str| {
                a.split_once('(')
                    .and_then(|(_, r)| r.strip_suffix(')'))
                    .and_then(|n| n.parse().ok())
            };
            let action = match action.trim() {
                "kill" => Action::Kill(100),
                a if a.starts_with("kill(") => Action::Kill(arg(a).unwrap_or(100)),
                a if a.starts_with("sleep(") => Action::Sleep(arg(a).unwrap_or(0)),
                _ => continue,
            };
            map.insert(name.trim().to_string(), action);
        }
        map
    })
}

fn random_percent() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut x = STATE.load(Ordering::Relaxed);
    if x == 0 {
        x = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id());
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    STATE.store(x, Ordering::Relaxed);
    x % 100
}

/// Runs the action configured for failpoint `name`, if any.
pub fn hit(name: &str) {
    let t = table();
    if t.is_empty() {
        return;
    }
    match t.get(name) {
        Some(Action::Sleep(ms)) => std::thread::sleep(std::time::Duration::from_millis(*ms)),
        Some(Action::Kill(pct)) if random_percent() < *pct => {
            eprintln!("failpoint {name}: SIGKILL");
            // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
        _ => {}
    }
}
