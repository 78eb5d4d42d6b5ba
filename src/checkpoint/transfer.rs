//! weir's own bounds on what an object-store checkpoint puts on the
//! network: how many files go up at once and how many bytes a second, for
//! the whole job in this process (every subtask's snapshot shares them; each
//! shard job of a distributed member has its own), so that a large
//! checkpoint does not take a link the job's Kafka traffic needs.
//!
//! Settings (in `[checkpoint]` / [`crate::JobConfig::checkpoint_store_options`],
//! beside the store's keys):
//! - `upload_concurrency`: files uploaded at once (default 8, at most
//!   1024); each file up to 72 MiB is held in memory while it goes up.
//! - `upload_bytes_per_s`: average upload rate (default unbounded), as
//!   bytes (`50000000`) or with a unit (`50MB`, `48MiB`, `1GB`).

use crate::config::StoreOptions;
use crate::error::{Result, WeirError};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, SemaphorePermit};

/// The store option naming the files uploaded at once.
pub(crate) const UPLOAD_CONCURRENCY: &str = "upload_concurrency";
/// The store option naming the upload rate bound.
pub(crate) const UPLOAD_BYTES_PER_S: &str = "upload_bytes_per_s";
/// Files uploaded at once unless `upload_concurrency` says otherwise.
const DEFAULT_UPLOAD_CONCURRENCY: usize = 8;
/// The most files `upload_concurrency` may ask for at once.
const MAX_UPLOAD_CONCURRENCY: usize = 1024;

/// The job-wide upload bounds of one object store.
#[derive(Debug)]
pub(crate) struct UploadBounds {
    files: Semaphore,
    rate: Option<RateLimit>,
}

impl UploadBounds {
    /// The bounds `options` set; every other key is left for the S3 client.
    ///
    /// # Errors
    /// [`WeirError::Config`] naming `checkpoint.<key>` for a value that is
    /// not a positive number (of bytes per second).
    pub(crate) fn from_options(options: &StoreOptions) -> Result<Self> {
        let concurrency = match options.0.get(UPLOAD_CONCURRENCY) {
            None => DEFAULT_UPLOAD_CONCURRENCY,
            Some(v) => v
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_UPLOAD_CONCURRENCY).contains(n))
                .ok_or_else(|| {
                    bad(
                        UPLOAD_CONCURRENCY,
                        format!("`{v}` is not a number of files from 1 to {MAX_UPLOAD_CONCURRENCY}"),
                    )
                })?,
        };
        let rate = match options.0.get(UPLOAD_BYTES_PER_S) {
            None => None,
            Some(v) => Some(RateLimit::new(parse_bytes(v).filter(|b| *b > 0).ok_or_else(|| {
                bad(
                    UPLOAD_BYTES_PER_S,
                    format!("`{v}` is not a rate in bytes per second (like 50000000, 50MB or 48MiB)"),
                )
            })?)),
        };
        Ok(UploadBounds {
            files: Semaphore::new(concurrency),
            rate,
        })
    }

    /// Waits for a file's turn to upload; the turn ends when the permit drops.
    pub(crate) async fn file_turn(&self) -> SemaphorePermit<'_> {
        // The semaphore is never closed, so acquiring cannot fail.
        loop {
            if let Ok(permit) = self.files.acquire().await {
                return permit;
            }
        }
    }

    /// Waits until `bytes` more may go out under the rate bound. The
    /// reservation is given back unless [`Sending::sent`] says they went.
    pub(crate) async fn send(&self, bytes: u64) -> Sending<'_> {
        if let Some(rate) = &self.rate {
            let at = rate.reserve(bytes, Instant::now());
            let sending = Sending {
                rate: Some(rate),
                bytes,
            };
            tokio::time::sleep_until(at.into()).await;
            return sending;
        }
        Sending { rate: None, bytes }
    }
}

/// Bytes reserved under the rate bound; dropped without [`Sending::sent`]
/// (the put failed or was abandoned) they are given back, so the next
/// checkpoint does not wait for bytes that never went out.
pub(crate) struct Sending<'a> {
    rate: Option<&'a RateLimit>,
    bytes: u64,
}

impl Sending<'_> {
    /// The bytes went out: the reservation stands.
    pub(crate) fn sent(mut self) {
        self.rate = None;
    }
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        if let Some(rate) = self.rate {
            rate.give_back(self.bytes);
        }
    }
}

/// Whether `key` is one of weir's own store options (not an S3 setting).
pub(crate) fn is_own_option(key: &str) -> bool {
    key == UPLOAD_CONCURRENCY || key == UPLOAD_BYTES_PER_S
}

fn bad(key: &str, message: String) -> WeirError {
    WeirError::Config {
        key: format!("checkpoint.{key}"),
        message,
    }
}

/// `50000000`, `50MB`, `48MiB`, `1GB`, `512 KiB`: a number of bytes.
fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().ok()?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit.strip_suffix("/s").unwrap_or(&unit);
    let scale: u64 = match unit {
        "" | "b" => 1,
        "kb" | "k" => 1_000,
        "mb" | "m" => 1_000_000,
        "gb" | "g" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(scale)
}

/// A pacer: each reservation of n bytes starts when the ones before it have
/// had their time at the rate, so the average over any stretch of uploads
/// stays at or under the rate (one reservation may run ahead of it).
#[derive(Debug)]
struct RateLimit {
    bytes_per_s: u64,
    /// When the bytes reserved so far will have had their time.
    free_at: Mutex<Option<Instant>>,
}

impl RateLimit {
    fn new(bytes_per_s: u64) -> Self {
        RateLimit {
            bytes_per_s,
            free_at: Mutex::new(None),
        }
    }

    /// Reserves `bytes` and says when they may start going out.
    fn reserve(&self, bytes: u64, now: Instant) -> Instant {
        let mut free_at = match self.free_at.lock() {
            Ok(guard) => guard,
            // Only plain assignments happen under the lock: its value is whole.
            Err(poisoned) => poisoned.into_inner(),
        };
        let start = free_at.map_or(now, |t| t.max(now));
        *free_at = Some(start + self.time_of(bytes));
        start
    }

    /// Takes back a reservation of `bytes` that did not go out.
    fn give_back(&self, bytes: u64) {
        let mut free_at = match self.free_at.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(t) = *free_at {
            *free_at = Some(t.checked_sub(self.time_of(bytes)).unwrap_or(t));
        }
    }

    fn time_of(&self, bytes: u64) -> Duration {
        Duration::from_secs_f64(bytes as f64 / self.bytes_per_s as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(pairs: &[(&str, &str)]) -> StoreOptions {
        StoreOptions(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn byte_rates_read_with_and_without_units() {
        assert_eq!(parse_bytes("50000000"), Some(50_000_000));
        assert_eq!(parse_bytes("50MB"), Some(50_000_000));
        assert_eq!(parse_bytes("48 MiB"), Some(48 << 20));
        assert_eq!(parse_bytes("1GB/s"), Some(1_000_000_000));
        assert_eq!(parse_bytes("512kib"), Some(512 << 10));
        assert_eq!(parse_bytes("fast"), None);
        assert_eq!(parse_bytes("5 parsecs"), None);
        assert_eq!(parse_bytes("99999999999999GB"), None);
    }

    #[test]
    fn bad_values_are_refused_naming_the_key() {
        let e = UploadBounds::from_options(&options(&[(UPLOAD_BYTES_PER_S, "lots")])).unwrap_err();
        assert!(e.to_string().contains("checkpoint.upload_bytes_per_s"), "{e}");
        for bad in ["0", "18446744073709551615", "1025"] {
            let e = UploadBounds::from_options(&options(&[(UPLOAD_CONCURRENCY, bad)])).unwrap_err();
            assert!(e.to_string().contains("checkpoint.upload_concurrency"), "{e}");
        }
        let ok =
            UploadBounds::from_options(&options(&[(UPLOAD_CONCURRENCY, "2"), (UPLOAD_BYTES_PER_S, "1MB")])).unwrap();
        assert_eq!(ok.files.available_permits(), 2);
    }

    #[test]
    fn reservations_are_paced_at_the_rate() {
        let rate = RateLimit::new(1_000_000);
        let t0 = Instant::now();
        // The first goes at once; each later one after the bytes before it.
        assert_eq!(rate.reserve(500_000, t0), t0);
        assert_eq!(rate.reserve(250_000, t0), t0 + Duration::from_millis(500));
        assert_eq!(rate.reserve(1, t0), t0 + Duration::from_millis(750));
        // After a quiet spell nothing is owed: no burst is saved up either.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(rate.reserve(1_000_000, later), later);
        assert_eq!(rate.reserve(1, later), later + Duration::from_secs(1));
    }

    #[test]
    fn a_reservation_that_did_not_go_out_is_given_back() {
        let rate = RateLimit::new(1_000_000);
        let t0 = Instant::now();
        rate.reserve(500_000, t0);
        rate.give_back(500_000);
        // Nothing is owed any more: the next one goes at once.
        assert_eq!(rate.reserve(1, t0), t0);
    }

    #[test]
    fn uploads_under_a_bound_take_their_time() {
        let bounds = UploadBounds::from_options(&options(&[(UPLOAD_BYTES_PER_S, "4MB")])).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let t0 = Instant::now();
        runtime.block_on(async {
            for _ in 0..5 {
                bounds.send(200_000).await.sent();
            }
        });
        // 4 x 200 kB had to pass at 4 MB/s before the fifth: 200 ms.
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(195), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
    }
}
