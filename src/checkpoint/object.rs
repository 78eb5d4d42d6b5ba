//! The checkpoint store's backend on an object store: `s3://bucket/prefix`
//! (AWS S3 or any S3-compatible server) or `az://container/prefix` (Azure
//! Blob Storage), through the `object_store` crate.
//!
//! Credentials, region and endpoint come from the standard environment
//! variables: `AWS_*` for S3 (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_REGION`, `AWS_ENDPOINT_URL`/`AWS_ENDPOINT`, `AWS_ALLOW_HTTP`),
//! `AZURE_*` for Azure (`AZURE_STORAGE_ACCOUNT_NAME`,
//! `AZURE_STORAGE_ACCOUNT_KEY`, ...); they are never printed (only the bucket
//! and prefix are). Requests are retried
//! (8 times, 30 s in all) before a call fails; the driver's checkpoint
//! timeout bounds every store operation on top of that.
//!
//! The backend is blocking: it runs its own small tokio runtime, so the
//! checkpoint threads that call it need none, and a library user's own
//! runtime is never blocked (a call from inside one runs on a scoped thread).

use super::backend::{join, Backend};
use super::transfer::{is_own_option, UploadBounds};
use crate::config::StoreOptions;
use crate::error::{Result, WeirError};
use futures::stream::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Files up to this size are put in one request; larger ones in parts. An
/// SST of RocksDB's default target size (64 MiB, which a compaction output
/// overshoots by up to a block or so) is one request (requests are billed;
/// parts would cost ten); only large flushes go in parts.
const SINGLE_PUT_MAX: u64 = 72 << 20;
/// The part size of a multipart upload.
const PART_BYTES: usize = 8 << 20;
/// Parts of one file in flight at once.
const PARTS_IN_FLIGHT: usize = 4;
/// The marker object that reserves a checkpoint id (object stores have no
/// directories to create).
const RESERVED: &str = "RESERVED";

/// A job's checkpoint store under a bucket prefix.
pub(crate) struct ObjectBackend {
    store: Arc<dyn ObjectStore>,
    /// `s3://bucket/prefix/job`, for messages.
    url: String,
    /// `prefix/job` inside the bucket.
    root: String,
    /// Files at once and bytes a second, for every upload of the job.
    bounds: UploadBounds,
    runtime: OwnRuntime,
}

impl std::fmt::Debug for ObjectBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the store's own Debug: it would show credentials.
        f.debug_struct("ObjectBackend").field("url", &self.url).finish()
    }
}

/// The URL schemes an object store backend serves: S3 (and any
/// S3-compatible server) and Azure Blob Storage.
pub(crate) fn is_object_url(location: &str) -> bool {
    ["s3://", "s3a://", "az://", "azure://"]
        .iter()
        .any(|scheme| location.starts_with(scheme))
}

impl ObjectBackend {
    /// The store of `job` under `url` (`s3://bucket/prefix`).
    ///
    /// # Errors
    /// [`WeirError::Config`] naming the URL when it is not a bucket URL or
    /// the S3 settings in the environment are incomplete.
    pub(crate) fn open(url: &str, job: &str, options: &StoreOptions) -> Result<Self> {
        let bad = |message: String| WeirError::Config {
            key: "checkpoint_dir".into(),
            message,
        };
        // Only the redacted form of the URL is ever shown.
        let url = &crate::config::redact_url(url);
        let (scheme, rest) = url
            .split_once("://")
            .filter(|(scheme, _)| is_object_url(&format!("{scheme}://")))
            .ok_or_else(|| bad(format!("`{url}` is not an s3:// or az:// URL")))?;
        if rest.contains(crate::config::REDACTED) {
            return Err(bad(format!(
                "`{url}`: credentials or a query in the URL are not supported (they would be shown in \
                 messages): give them in the environment (AWS_*, AZURE_*) or in [checkpoint]"
            )));
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad(format!(
                "`{url}` names no bucket (expected {scheme}://bucket/prefix)"
            )));
        }
        let bounds = UploadBounds::from_options(options)?;
        let settings = options.0.iter().filter(|(key, _)| !is_own_option(key));
        // A bad setting keeps its own key; the client's refusal names the URL.
        let cannot = |e: WeirError| match e {
            WeirError::Config { key, message } if key == "checkpoint_dir" => {
                bad(format!("cannot use `{url}`: {message}"))
            }
            other => other,
        };
        let (store, scheme): (Arc<dyn ObjectStore>, &str) = if scheme.starts_with("s3") {
            (Arc::new(s3_client(bucket, settings).map_err(cannot)?), "s3")
        } else {
            (Arc::new(azure_client(bucket, settings).map_err(cannot)?), "az")
        };
        let root = join(prefix.trim_matches('/'), job);
        Ok(ObjectBackend {
            store,
            url: format!("{scheme}://{bucket}/{root}"),
            root,
            bounds,
            runtime: OwnRuntime::new()?,
        })
    }

    fn key(&self, rel: &str) -> ObjectPath {
        ObjectPath::from(join(&self.root, rel).as_str())
    }

    fn url_of(&self, rel: &str) -> String {
        join(&self.url, rel)
    }

    fn error(&self, action: &str, rel: &str, e: impl std::fmt::Display) -> WeirError {
        WeirError::Checkpoint {
            path: PathBuf::from(self.url_of(rel)),
            message: format!("{action}: {e}"),
        }
    }

    /// Uploads one local file, computing its CRC-32 on the way, in its turn
    /// among the job's uploads and paced by its rate bound.
    async fn upload(&self, src: &Path, rel: &str) -> Result<(u64, u32)> {
        let _turn = self.bounds.file_turn().await;
        crate::failpoint::hit("store-put-file");
        let key = self.key(rel);
        let mut file = std::fs::File::open(src).map_err(|e| WeirError::io("cannot read state file", src, e))?;
        let len = file
            .metadata()
            .map_err(|e| WeirError::io("cannot read state file", src, e))?
            .len();
        let mut hasher = crc32fast::Hasher::new();
        if len <= SINGLE_PUT_MAX {
            let mut bytes = Vec::with_capacity(len as usize);
            file.read_to_end(&mut bytes)
                .map_err(|e| WeirError::io("cannot read state file", src, e))?;
            hasher.update(&bytes);
            let size = bytes.len() as u64;
            let sending = self.bounds.send(size).await;
            self.store
                .put(&key, PutPayload::from(bytes))
                .await
                .map_err(|e| self.error("cannot upload", rel, e))?;
            sending.sent();
            return Ok((size, hasher.finalize()));
        }
        let upload = self
            .store
            .put_multipart(&key)
            .await
            .map_err(|e| self.error("cannot start upload", rel, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut buf = vec![0u8; PART_BYTES];
        let mut size = 0u64;
        loop {
            let n = match file.read(&mut buf) {
                Ok(n) => n,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(WeirError::io("cannot read state file", src, e));
                }
            };
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
            if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                let _ = writer.abort().await;
                return Err(self.error("cannot upload", rel, e));
            }
            // A part handed to the writer counts as sent (its retries are the client's).
            self.bounds.send(n as u64).await.sent();
            writer.write(&buf[..n]);
        }
        writer.finish().await.map_err(|e| self.error("cannot upload", rel, e))?;
        Ok((size, hasher.finalize()))
    }
}

/// Retries and timeouts of every client: ours first, so the environment and
/// the options may override them (`with_client_options` would replace them all).
fn retry_and_timeouts() -> (object_store::RetryConfig, object_store::ClientOptions) {
    let retry = object_store::RetryConfig {
        max_retries: 8,
        retry_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let client = object_store::ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(60));
    (retry, client)
}

/// The environment variables whose names start with `prefix`, lower-cased
/// (the client's config keys), with their values.
fn env_settings(prefix: &str) -> impl Iterator<Item = (String, String)> + '_ {
    std::env::vars_os().filter_map(move |(key, value)| {
        let (key, value) = (key.into_string().ok()?, value.into_string().ok()?);
        key.starts_with(prefix).then(|| (key.to_ascii_lowercase(), value))
    })
}

/// A `[checkpoint]` key the client does not know, named in the error.
fn unknown_setting(key: &str, known: &str) -> WeirError {
    WeirError::Config {
        key: format!("checkpoint.{key}"),
        message: format!("not a setting of this store ({known}) nor upload_concurrency / upload_bytes_per_s"),
    }
}

/// An S3 client of `bucket` over the `AWS_*` variables and `settings`.
fn s3_client<'a>(
    bucket: &str,
    settings: impl Iterator<Item = (&'a String, &'a String)>,
) -> Result<object_store::aws::AmazonS3> {
    let (retry, client) = retry_and_timeouts();
    let mut builder = AmazonS3Builder::new().with_retry(retry).with_client_options(client);
    for (key, value) in env_settings("AWS_") {
        if let Ok(parsed) = key.parse::<AmazonS3ConfigKey>() {
            builder = builder.with_config(parsed, value);
        }
    }
    for (key, value) in settings {
        let parsed: AmazonS3ConfigKey = key.parse().map_err(|_| {
            unknown_setting(
                key,
                "endpoint, region, access_key_id, secret_access_key, session_token, allow_http, ...",
            )
        })?;
        builder = builder.with_config(parsed, value);
    }
    builder.with_bucket_name(bucket).build().map_err(|e| WeirError::Config {
        key: "checkpoint_dir".into(),
        message: e.to_string(),
    })
}

/// An Azure Blob Storage client of `container` over the `AZURE_*` variables
/// (`AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`, a SAS or
/// service principal; `AZURE_STORAGE_USE_EMULATOR=true` with
/// `AZURITE_BLOB_STORAGE_URL` for the Azurite emulator) and `settings`.
fn azure_client<'a>(
    container: &str,
    settings: impl Iterator<Item = (&'a String, &'a String)>,
) -> Result<object_store::azure::MicrosoftAzure> {
    let (retry, client) = retry_and_timeouts();
    let mut builder = MicrosoftAzureBuilder::new()
        .with_retry(retry)
        .with_client_options(client);
    for (key, value) in env_settings("AZURE_") {
        if let Ok(parsed) = key.parse::<AzureConfigKey>() {
            builder = builder.with_config(parsed, value);
        }
    }
    // A managed identity's endpoint on App Service, Functions, Container Apps.
    if let Ok(endpoint) = std::env::var("IDENTITY_ENDPOINT") {
        builder = builder.with_config(AzureConfigKey::MsiEndpoint, endpoint);
    }
    for (key, value) in settings {
        let parsed: AzureConfigKey = key
            .parse()
            .map_err(|_| unknown_setting(key, "account_name, access_key, sas_key, endpoint, use_emulator, ..."))?;
        builder = builder.with_config(parsed, value);
    }
    builder
        .with_container_name(container)
        .build()
        .map_err(|e| WeirError::Config {
            key: "checkpoint_dir".into(),
            message: e.to_string(),
        })
}

impl Backend for ObjectBackend {
    fn location(&self, rel: &str) -> PathBuf {
        PathBuf::from(self.url_of(rel))
    }

    fn local_root(&self) -> Option<&Path> {
        None
    }

    fn put_file(&self, src: &Path, rel: &str) -> Result<(u64, u32)> {
        self.runtime.block_on(self.upload(src, rel))
    }

    fn put_files(&self, files: &[(PathBuf, String)]) -> Result<Vec<(u64, u32)>> {
        self.runtime.block_on(
            // As many as there are: the job-wide turns in `upload` bound them.
            futures::stream::iter(files.iter().map(|(src, rel)| self.upload(src, rel)))
                .buffered(files.len().max(1))
                .try_collect(),
        )
    }

    fn sync(&self, _rel_dir: &str) -> Result<()> {
        Ok(())
    }

    fn put(&self, rel: &str, bytes: &[u8]) -> Result<()> {
        let payload = PutPayload::from(bytes.to_vec());
        self.runtime
            .block_on(self.store.put(&self.key(rel), payload))
            .map(|_| ())
            .map_err(|e| self.error("cannot write", rel, e))
    }

    fn create(&self, rel: &str, bytes: &[u8]) -> Result<()> {
        let payload = PutPayload::from(bytes.to_vec());
        let opts = PutOptions::from(PutMode::Create);
        match self
            .runtime
            .block_on(self.store.put_opts(&self.key(rel), payload, opts))
        {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                // The client retries a put whose answer was lost: the object
                // may be this very put's. Every created object's bytes are
                // unique to its writer, so equal bytes mean it is ours.
                if self.get(rel)?.as_deref() == Some(bytes) {
                    return Ok(());
                }
                Err(WeirError::Fenced { what: self.url_of(rel) })
            }
            Err(e) => Err(self.error("cannot create", rel, e)),
        }
    }

    fn get(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        let key = self.key(rel);
        self.runtime.block_on(async {
            match self.store.get(&key).await {
                Ok(got) => got
                    .bytes()
                    .await
                    .map(|b| Some(b.to_vec()))
                    .map_err(|e| self.error("cannot read", rel, e)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.error("cannot read", rel, e)),
            }
        })
    }

    fn size(&self, rel: &str) -> Result<Option<u64>> {
        match self.runtime.block_on(self.store.head(&self.key(rel))) {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error("cannot look at", rel, e)),
        }
    }

    fn checksum(&self, _rel: &str) -> Result<Option<u32>> {
        Ok(None)
    }

    fn fetch(&self, rel: &str, dest: &Path) -> Result<Option<u32>> {
        let key = self.key(rel);
        self.runtime.block_on(async {
            let got = self
                .store
                .get(&key)
                .await
                .map_err(|e| self.error("cannot download", rel, e))?;
            let mut file = std::fs::File::create(dest).map_err(|e| WeirError::io("cannot create", dest, e))?;
            let mut hasher = crc32fast::Hasher::new();
            let mut chunks = got.into_stream();
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk.map_err(|e| self.error("cannot download", rel, e))?;
                hasher.update(&chunk);
                file.write_all(&chunk)
                    .map_err(|e| WeirError::io("cannot write", dest, e))?;
            }
            Ok(Some(hasher.finalize()))
        })
    }

    fn list(&self, rel_dir: &str) -> Result<Vec<String>> {
        let prefix = self.key(rel_dir);
        let listed = self
            .runtime
            .block_on(self.store.list_with_delimiter(Some(&prefix)))
            .map_err(|e| self.error("cannot list", rel_dir, e))?;
        let names = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .chain(
                listed
                    .objects
                    .iter()
                    .filter_map(|o| o.location.filename().map(str::to_string)),
            );
        Ok(names.collect())
    }

    fn list_files(&self, rel_dir: &str) -> Result<Vec<String>> {
        let prefix = self.key(rel_dir);
        let root = self.key("");
        let metas: Vec<object_store::ObjectMeta> = self
            .runtime
            .block_on(self.store.list(Some(&prefix)).try_collect())
            .map_err(|e| self.error("cannot list", rel_dir, e))?;
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let parts: Vec<String> = m
                    .location
                    .prefix_match(&root)?
                    .map(|p| p.as_ref().to_string())
                    .collect();
                Some(parts.join("/"))
            })
            .collect())
    }

    fn delete(&self, rel: &str) -> Result<()> {
        match self.runtime.block_on(self.store.delete(&self.key(rel))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("cannot delete", rel, e)),
        }
    }

    fn delete_dir(&self, rel_dir: &str) -> Result<()> {
        for rel in self.list_files(rel_dir)? {
            self.delete(&rel)?;
        }
        Ok(())
    }

    fn reserve(&self, rel_dir: &str) -> Result<()> {
        // A token of this writer's own (see `create`: equal bytes are ours).
        let token = super::local::random_id();
        match self.create(&join(rel_dir, RESERVED), token.as_bytes()) {
            Err(WeirError::Fenced { .. }) => Err(WeirError::Fenced {
                what: format!("checkpoint {}", self.url_of(rel_dir)),
            }),
            other => other,
        }
    }
}

/// A tokio runtime of the backend's own, shut down without waiting when
/// dropped (also from inside another runtime, where a plain drop panics).
struct OwnRuntime(std::mem::ManuallyDrop<tokio::runtime::Runtime>);

impl OwnRuntime {
    fn new() -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("weir-object-store")
            .enable_all()
            .build()
            .map_err(|e| WeirError::io("cannot start a runtime for", "the object store client", e))?;
        Ok(OwnRuntime(std::mem::ManuallyDrop::new(runtime)))
    }

    /// Runs `work` to completion on this runtime, from any thread.
    fn block_on<F: std::future::Future + Send>(&self, work: F) -> F::Output
    where
        F::Output: Send,
    {
        let runtime = &*self.0;
        if tokio::runtime::Handle::try_current().is_err() {
            return runtime.block_on(work);
        }
        // Inside a caller's runtime, blocking this thread in `block_on`
        // would panic: wait on a thread of our own instead.
        std::thread::scope(|scope| match scope.spawn(|| runtime.block_on(work)).join() {
            Ok(output) => output,
            Err(panic) => std::panic::resume_unwind(panic),
        })
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        // SAFETY: the runtime is taken once, here, and not used after.
        let runtime = unsafe { std::mem::ManuallyDrop::take(&mut self.0) };
        runtime.shutdown_background();
    }
}
