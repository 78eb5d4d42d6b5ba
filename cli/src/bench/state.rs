//! `weir bench rescale` and `weir bench upload`: what moving keyed state
//! costs. Both build keyed state with one W1 record per key (the key is the
//! record's index, so `--keys` keys hold state) and only a final checkpoint:
//! an 8-byte value per key for `rescale`, 1 KiB of incompressible bytes for
//! `upload` (1 M keys: 1 GiB).
//!
//! - `rescale`: the state built at the first `--parallelism`, then restored
//!   at the second (no new records): the restore time (fetch, open, rebuild
//!   by key group) and the whole second run.
//! - `upload`: the state built at p = 1 with its checkpoint on an object
//!   store (`--checkpoint-dir s3://...`): the final checkpoint's upload
//!   rate against a plain parallel client putting the same SST files.

use super::{json_line, BenchArgs};
use anyhow::Context;
use futures::stream::{StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir::connectors::collect::CountingSink;
use weir::connectors::generator::{Generator, W1Event};
use weir::JobConfig;
use weir_operators::{KeyedContext, KeyedProcess, OperatorError};

/// Value bytes per key of `rescale` (a running sum's size).
const RESCALE_VALUE_BYTES: usize = 8;
/// Value bytes per key of `upload`.
const UPLOAD_VALUE_BYTES: usize = 1024;
/// Files the plain client puts at once (more requests than weir's default 8 file turns).
const PLAIN_IN_FLIGHT: usize = 16;

/// Keeps `bytes` pseudo-random bytes per key (incompressible, as
/// serialized or encrypted state is), emits nothing.
#[derive(Clone)]
struct Fill {
    bytes: usize,
}

impl KeyedProcess<u64, W1Event, ()> for Fill {
    type State = Vec<u8>;
    fn process(
        &mut self,
        key: &u64,
        state: &mut Option<Vec<u8>>,
        _e: W1Event,
        _ctx: &mut KeyedContext<'_, ()>,
    ) -> Result<(), OperatorError> {
        let mut x = *key ^ 0x9E37_79B9_7F4A_7C15;
        let value = state.get_or_insert_with(Vec::new);
        value.clear();
        while value.len() < self.bytes {
            // splitmix64
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            value.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        value.truncate(self.bytes);
        Ok(())
    }
}

/// Builds (or, restoring, rebuilds at `p`) the state: `keys` W1 records
/// keyed by their index, `bytes` of value each.
fn state_run(keys: u64, bytes: usize, p: usize, config: JobConfig) -> anyhow::Result<weir::JobSummary> {
    let job = weir::JobBuilder::new("w1").default_parallelism(p);
    job.source("generator", Generator::w1_factory_keys(Some(keys), None, keys))
        .uid("generator")
        .key_by(|e: &W1Event| e.index)
        .process("fill", Fill { bytes })
        .uid("fill")
        .sink("sink", CountingSink::factory());
    Ok(job.build()?.run(config)?)
}

fn config(dir: &Path, local: &Path, restore: bool) -> JobConfig {
    JobConfig {
        checkpoint_interval: None,
        restore,
        local_state_dir: Some(local.to_path_buf()),
        ..JobConfig::with_checkpoint_dir(dir)
    }
}

/// `weir bench rescale --keys N --parallelism FROM,TO`.
pub(super) fn rescale(args: &BenchArgs) -> anyhow::Result<()> {
    let (from, to) = match args.parallelism.as_slice() {
        [from, to] if *from >= 1 && *to >= 1 => (*from, *to),
        _ => anyhow::bail!("`weir bench rescale` needs --parallelism FROM,TO (two values >= 1, e.g. 2,3)"),
    };
    let scratch = tempfile::tempdir().context("cannot create a temporary directory")?;
    let dir = args
        .checkpoint_dir
        .clone()
        .unwrap_or_else(|| scratch.path().join("checkpoints"));
    let local = scratch.path().join("local");
    let built = state_run(args.keys, RESCALE_VALUE_BYTES, from, config(&dir, &local, false))?;
    let build_ckpt = built.checkpoint_durations.last().copied().unwrap_or_default();
    let rescaled = state_run(args.keys, RESCALE_VALUE_BYTES, to, config(&dir, &local, true))?;
    anyhow::ensure!(
        rescaled.restored_from == built.last_checkpoint,
        "the second run did not restore the first one's final checkpoint"
    );
    let final_ckpt = rescaled.checkpoint_durations.last().copied().unwrap_or_default();
    let bytes = weir::checkpoint::CheckpointStore::open_existing(&dir, "w1")?
        .read_manifest(weir_operators::CheckpointId(
            built.last_checkpoint.context("no final checkpoint")?,
        ))?
        .state_bytes();
    json_line(serde_json::json!({
        "bench": "rescale", "keys": args.keys, "value_bytes": RESCALE_VALUE_BYTES, "from": from, "to": to,
        "store": store_kind(&dir), "state_bytes": bytes,
        "build_s": built.elapsed.as_secs_f64(), "build_final_checkpoint_s": build_ckpt.as_secs_f64(),
        "restore_s": rescaled.restore_time.as_secs_f64(), "rescaled_run_s": rescaled.elapsed.as_secs_f64(),
        "rescaled_final_checkpoint_s": final_ckpt.as_secs_f64(),
    }));
    if !args.json {
        println!(
            "rescale {from} -> {to}, {} keys ({} MiB of state in the checkpoint): state restored and rebuilt by key group in \
             {:.2} s; the whole run {:.2} s (final checkpoint {:.2} s)",
            args.keys,
            bytes >> 20,
            rescaled.restore_time.as_secs_f64(),
            rescaled.elapsed.as_secs_f64(),
            final_ckpt.as_secs_f64()
        );
    }
    Ok(())
}

/// `weir bench takeover --keys N --checkpoint-dir s3://bucket/prefix`: the
/// state of one shard (a W1 job of `keys` keys of 1 KiB, p = 1) is checkpointed by
/// one member, then restored by another that prefetched it
/// (`weir::distributed::prefetch_job`, what `--prefetch-interval-ms` does
/// in the background) and by one that did not: the takeover's restore time
/// each way, and what the prefetch downloaded ahead.
pub(super) fn takeover(args: &BenchArgs) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir().context("cannot create a temporary directory")?;
    let dir = args
        .checkpoint_dir
        .clone()
        .unwrap_or_else(|| scratch.path().join("checkpoints"));
    let owner = scratch.path().join("owner");
    state_run(args.keys, UPLOAD_VALUE_BYTES, 1, config(&dir, &owner, false))?;
    // The member that prefetched: the files are on its disk before the takeover.
    let prefetching = scratch.path().join("prefetching");
    let started = std::time::Instant::now();
    let (files, bytes) = weir::distributed::prefetch_job(&config(&dir, &prefetching, true), "w1")?;
    let prefetch_s = started.elapsed().as_secs_f64();
    let with = state_run(args.keys, UPLOAD_VALUE_BYTES, 1, config(&dir, &prefetching, true))?;
    // A member that did not: everything downloaded at the takeover.
    let cold = scratch.path().join("cold");
    let without = state_run(args.keys, UPLOAD_VALUE_BYTES, 1, config(&dir, &cold, true))?;
    json_line(serde_json::json!({
        "bench": "takeover", "keys": args.keys, "value_bytes": UPLOAD_VALUE_BYTES, "store": store_kind(&dir),
        "state_bytes": bytes, "prefetched_files": files, "prefetch_s": prefetch_s,
        "restore_with_prefetch_s": with.restore_time.as_secs_f64(),
        "restore_without_prefetch_s": without.restore_time.as_secs_f64(),
    }));
    if !args.json {
        println!(
            "takeover of {} MiB of state: restored in {:.2} s after a prefetch ({files} file(s) in {prefetch_s:.2} s ahead), {:.2} s without",
            bytes >> 20,
            with.restore_time.as_secs_f64(),
            without.restore_time.as_secs_f64()
        );
    }
    Ok(())
}

/// `weir bench upload --keys N --checkpoint-dir s3://bucket/prefix`.
pub(super) fn upload(args: &BenchArgs) -> anyhow::Result<()> {
    let url = args
        .checkpoint_dir
        .as_ref()
        .and_then(|d| d.to_str())
        .filter(|d| d.starts_with("s3://"))
        .context("`weir bench upload` needs --checkpoint-dir s3://bucket/prefix (with the AWS_* variables)")?
        .trim_end_matches('/')
        .to_string();
    let run = format!("{}", std::process::id());
    let scratch = tempfile::tempdir().context("cannot create a temporary directory")?;
    let local = scratch.path().join("local");
    let dir = PathBuf::from(format!("{url}/weir-{run}"));
    let mut config = config(&dir, &local, false);
    if args.cache_entries > 0 {
        config.state_cache_entries = args.cache_entries;
    }
    if args.write_buffer_mb > 0 {
        config.state_write_buffer_bytes = args.write_buffer_mb << 20;
    }
    let built = state_run(args.keys, UPLOAD_VALUE_BYTES, 1, config)?;
    let weir = built
        .checkpoint_uploads
        .last()
        .copied()
        .context("the run completed no checkpoint")?;
    let weir_mb_s = weir.bytes_uploaded as f64 / weir.upload_seconds.max(1e-9) / 1e6;

    let plain = plain_upload(&url, &format!("weir-{run}"), &format!("plain-{run}"))?;
    let mb_s = |bytes: u64, s: f64| bytes as f64 / s.max(1e-9) / 1e6;
    let (single, multipart) = (mb_s(plain.bytes, plain.single_s), mb_s(plain.bytes, plain.multipart_s));
    let ratio = |x: f64| (weir_mb_s / x * 100.0).round() / 100.0;
    json_line(serde_json::json!({
        "bench": "upload", "keys": args.keys, "store": "s3",
        "weir_files": weir.files_uploaded, "weir_bytes": weir.bytes_uploaded, "weir_s": weir.upload_seconds,
        "weir_mb_per_s": weir_mb_s.round(),
        "plain_objects": plain.objects, "plain_bytes": plain.bytes,
        "plain_single_put_s": plain.single_s, "plain_single_put_mb_per_s": single.round(),
        "plain_multipart_s": plain.multipart_s, "plain_multipart_mb_per_s": multipart.round(),
        "weir_to_plain_single_put": ratio(single), "weir_to_plain_multipart": ratio(multipart),
    }));
    if !args.json {
        println!(
            "upload of {} MiB of state ({} files): weir {weir_mb_s:.0} MB/s; the same {} objects from a plain client: \
             {single:.0} MB/s in whole puts ({PLAIN_IN_FLIGHT} in flight), {multipart:.0} MB/s in weir's multipart \
             pattern; weir = {:.0} % / {:.0} % of them",
            weir.bytes_uploaded >> 20,
            weir.files_uploaded,
            plain.objects,
            weir_mb_s / single * 100.0,
            weir_mb_s / multipart * 100.0
        );
    }
    Ok(())
}

fn store_kind(dir: &Path) -> &'static str {
    if dir.to_str().is_some_and(|d| d.starts_with("s3://")) {
        "s3"
    } else {
        "local"
    }
}

/// What the plain client measured.
struct Plain {
    objects: usize,
    bytes: u64,
    /// Seconds of whole-object puts, [`PLAIN_IN_FLIGHT`] at once.
    single_s: f64,
    /// Seconds of multipart puts in weir's pattern: 4 objects at once,
    /// parts of 8 MiB, 4 parts of each in flight (objects up to 64 MiB in
    /// one put).
    multipart_s: f64,
}

/// The plain client: fetches every object weir put under `from` (not
/// timed), then puts them again under `to`, twice (timed): whole objects
/// with [`PLAIN_IN_FLIGHT`] in flight, and in weir's multipart pattern.
fn plain_upload(url: &str, from: &str, to: &str) -> anyhow::Result<Plain> {
    let rest = url.trim_start_matches("s3://");
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let key = |under: &str, rel: &str| {
        object_store::path::Path::from(format!("{prefix}/{under}/{rel}").trim_start_matches('/'))
    };
    let store = Arc::new(
        object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()
            .context("cannot open the plain S3 client from the AWS_* variables")?,
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start a tokio runtime")?;
    let source = key(from, "");
    let payloads = runtime.block_on(async {
        let listed: Vec<_> = store.list(Some(&source)).try_collect().await?;
        let mut payloads = Vec::new();
        for meta in &listed {
            payloads.push(store.get(&meta.location).await?.bytes().await?);
        }
        Ok::<_, object_store::Error>(payloads)
    })?;
    let bytes = payloads.iter().map(|b| b.len() as u64).sum();

    let started = Instant::now();
    runtime.block_on(
        futures::stream::iter(payloads.iter().enumerate().map(|(i, bytes)| {
            let (store, key) = (store.clone(), key(to, &format!("single/{i:06}")));
            let bytes = bytes.clone();
            async move { store.put(&key, bytes.into()).await }
        }))
        .buffer_unordered(PLAIN_IN_FLIGHT)
        .try_collect::<Vec<_>>(),
    )?;
    let single_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    runtime.block_on(
        futures::stream::iter(payloads.iter().enumerate().map(|(i, bytes)| {
            let (store, key) = (store.clone(), key(to, &format!("multipart/{i:06}")));
            let bytes = bytes.clone();
            async move {
                if bytes.len() <= 64 << 20 {
                    return store.put(&key, bytes.into()).await.map(|_| ());
                }
                let upload = store.put_multipart(&key).await?;
                let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, 8 << 20);
                for chunk in bytes.chunks(8 << 20) {
                    writer.wait_for_capacity(4).await?;
                    writer.write(chunk);
                }
                writer.finish().await.map(|_| ())
            }
        }))
        .buffer_unordered(4)
        .try_collect::<Vec<_>>(),
    )?;
    let multipart_s = started.elapsed().as_secs_f64();
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(Plain {
        objects: payloads.len(),
        bytes,
        single_s,
        multipart_s,
    })
}
