//! The web UI of a running job: a page (HTML, JavaScript and SVG embedded in
//! the binary; no build step) and the JSON API it reads, served by the job's
//! own process. A layer above the runtime: it reads the job through a
//! [`JobController`] (status, graph, history, config) and sends it control
//! requests, nothing per record.
//!
//! - [`JobController::serve_ui`]: serve on an address from a thread of its
//!   own (the CLI's `--ui-addr`).
//! - [`router`]: the same as an axum `Router`, for a service that mounts it
//!   under a path of its own (the page uses relative URLs).
//!
//! # API (stable field names, documented in the README)
//! `GET api/status` ([`crate::JobStatus`]), `GET api/graph`
//! ([`crate::JobGraph`]), `GET api/checkpoints`, `GET api/history`
//! ([`crate::RateSample`]s), `GET api/config` (secrets redacted). Control,
//! off unless [`UiOptions::allow_control`]: `POST api/control/checkpoint`,
//! `.../stop`, `.../cancel`, each with the header `X-Weir-Control: 1`.
//!
//! # Control without cross-site request forgery
//! A page on another site can make a browser send a POST here, but it cannot
//! add a custom header without a CORS preflight, which this server never
//! answers; so a control request must carry `X-Weir-Control`, and one whose
//! `Origin` (or `Sec-Fetch-Site`) says it comes from another site is refused
//! as well. GET requests never change anything.

use crate::config::{is_secret_setting, REDACTED};
use crate::distributed::MemberHandle;
use crate::error::{Result, WeirError};
use crate::runtime::JobController;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::net::SocketAddr;
use std::sync::Arc;

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("page.js");
const STYLE: &str = include_str!("page.css");

/// The header a control request must carry (a cross-site form cannot set it).
pub const CONTROL_HEADER: &str = "x-weir-control";

/// How the UI is served.
#[derive(Debug, Clone, Default)]
pub struct UiOptions {
    /// Serve the control endpoints (trigger a checkpoint, stop, cancel).
    /// Off by default: the UI only reads.
    pub allow_control: bool,
    /// More settings to show under `extra` in `api/config` (the CLI's
    /// arguments, connector settings); values under keys that name a secret
    /// are redacted, at any depth.
    pub extra_config: Option<serde_json::Value>,
}

struct Ui {
    controller: JobController,
    options: UiOptions,
}

/// The UI's routes (`/`, `/page.js`, `/page.css`, `/api/...`) for
/// `controller`'s job, to serve or to mount with `Router::nest`.
pub fn router(controller: JobController, options: UiOptions) -> Router {
    let ui = Arc::new(Ui { controller, options });
    Router::new()
        .route("/", get(page))
        .route(
            "/page.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route("/page.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
        .route("/api/status", get(status))
        .route("/api/graph", get(graph))
        .route("/api/checkpoints", get(checkpoints))
        .route("/api/history", get(history))
        .route("/api/config", get(config))
        .route("/api/control/{action}", post(control))
        .with_state(ui)
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "no-cache")],
        body,
    )
        .into_response()
}

async fn page() -> Response {
    html(PAGE)
}

/// A page with a policy: only this server's own script and style, no
/// framing by other sites.
fn html(body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Only this server's own script and style; no framing by other sites.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
            ),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn status(State(ui): State<Arc<Ui>>) -> Response {
    Json(ui.controller.status()).into_response()
}

async fn graph(State(ui): State<Arc<Ui>>) -> Response {
    Json(ui.controller.graph().clone()).into_response()
}

async fn checkpoints(State(ui): State<Arc<Ui>>) -> Response {
    let status = ui.controller.status();
    Json(serde_json::json!({
        "restored_from": status.restored_from,
        "completed": status.checkpoints.completed,
        "aborted": status.checkpoints.aborted,
        "in_flight": status.checkpoints.in_flight,
        "last": status.checkpoints.last,
        "history": status.checkpoints.history,
    }))
    .into_response()
}

async fn history(State(ui): State<Arc<Ui>>) -> Response {
    Json(ui.controller.history()).into_response()
}

async fn config(State(ui): State<Arc<Ui>>) -> Response {
    Json(serde_json::json!({
        "job": ui.controller.graph().job,
        "config": ui.controller.config(),
        "extra": ui.options.extra_config.clone().map(redact),
        "control": ui.options.allow_control,
    }))
    .into_response()
}

/// Replaces the values of secret-named keys, at any depth.
pub fn redact(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let v = if is_secret_setting(&k) && !v.is_null() {
                        REDACTED.into()
                    } else {
                        redact(v)
                    };
                    (k, v)
                })
                .collect(),
        ),
        serde_json::Value::Array(items) => serde_json::Value::Array(items.into_iter().map(redact).collect()),
        other => other,
    }
}

fn refuse(code: StatusCode, why: &str) -> Response {
    (code, Json(serde_json::json!({ "error": why }))).into_response()
}

/// Whether a request comes from a page of another site.
fn cross_site(headers: &HeaderMap) -> bool {
    let text = |h: &HeaderValue| h.to_str().unwrap_or("").to_string();
    if let Some(site) = headers.get("sec-fetch-site").map(text) {
        if site != "same-origin" && site != "none" {
            return true;
        }
    }
    match (
        headers.get(header::ORIGIN).map(text),
        headers.get(header::HOST).map(text),
    ) {
        (Some(origin), Some(host)) => {
            let origin_host = origin.split("://").nth(1).unwrap_or("");
            origin == "null" || origin_host != host
        }
        (Some(_), None) => true,
        _ => false,
    }
}

async fn control(
    State(ui): State<Arc<Ui>>,
    axum::extract::Path(action): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    if !ui.options.allow_control {
        return refuse(
            StatusCode::FORBIDDEN,
            "control is off: start the job with --ui-allow-control (UiOptions::allow_control)",
        );
    }
    if headers.get(CONTROL_HEADER).is_none() {
        return refuse(
            StatusCode::FORBIDDEN,
            "a control request needs the header X-Weir-Control: 1 (cross-site requests cannot set it)",
        );
    }
    if cross_site(&headers) {
        return refuse(StatusCode::FORBIDDEN, "a control request from another site is refused");
    }
    match action.as_str() {
        "checkpoint" => ui.controller.trigger_checkpoint(),
        "stop" => ui.controller.stop(),
        "cancel" => ui.controller.cancel(),
        other => {
            return refuse(
                StatusCode::NOT_FOUND,
                &format!("no control action `{other}`: checkpoint, stop or cancel"),
            )
        }
    }
    tracing::info!("web UI: {action} requested");
    Json(serde_json::json!({ "requested": action })).into_response()
}

/// A UI being served; stops serving when dropped.
pub struct UiServer {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UiServer {
    /// The address it listens on (the port chosen when asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/`, the page.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

impl Drop for UiServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl JobController {
    /// Serves the web UI of this job on `addr` (e.g. `127.0.0.1:8080`;
    /// port 0 picks a free one, see [`UiServer::addr`]) from a thread and a
    /// small tokio runtime of its own, until the returned server is dropped:
    /// it keeps showing the job's final state after the job ends.
    ///
    /// # Errors
    /// [`WeirError::Config`] (key `ui_addr`) when the address cannot be bound.
    pub fn serve_ui(&self, addr: SocketAddr, options: UiOptions) -> Result<UiServer> {
        let server = serve(router(self.clone(), options), addr)?;
        tracing::info!("web UI of job {} on {}", self.graph().job, server.url());
        Ok(server)
    }
}

impl MemberHandle {
    /// Serves the web UI of this member of a distributed job on `addr`: a
    /// page listing its shards, and each shard job's own UI under
    /// `shard/<shard job>/` while the member runs it (see [`member_router`]).
    ///
    /// # Errors
    /// [`WeirError::Config`] (key `ui_addr`) when the address cannot be bound.
    pub fn serve_ui(&self, addr: SocketAddr, options: UiOptions) -> Result<UiServer> {
        let server = serve(member_router(self.clone(), options), addr)?;
        tracing::info!("web UI of member {} on {}", self.status().member_id, server.url());
        Ok(server)
    }
}

struct MemberUi {
    member: MemberHandle,
    options: UiOptions,
}

/// The routes of a member's UI: `/` (its shards, linking to theirs),
/// `api/member` ([`crate::distributed::MemberStatus`]) and, for each shard
/// it runs, the shard job's whole UI under `shard/<shard job>/`.
pub fn member_router(member: MemberHandle, options: UiOptions) -> Router {
    let ui = Arc::new(MemberUi { member, options });
    Router::new()
        .route("/", get(|| async { html(MEMBER_PAGE) }))
        .route(
            "/member.js",
            get(|| async { asset("text/javascript; charset=utf-8", MEMBER_SCRIPT) }),
        )
        .route("/page.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
        .route("/api/member", get(member_status))
        .route("/api/ready", get(member_ready))
        .route("/shard/{job}/", axum::routing::any(shard_page))
        .route("/shard/{job}/{*rest}", axum::routing::any(shard_route))
        .with_state(ui)
}

const MEMBER_PAGE: &str = include_str!("member.html");
const MEMBER_SCRIPT: &str = include_str!("member.js");

async fn member_status(State(ui): State<Arc<MemberUi>>) -> Response {
    Json(ui.member.status()).into_response()
}

/// 200 when the member is ready ([`MemberHandle::readiness`]), else 503
/// saying why: a Kubernetes readiness probe.
async fn member_ready(State(ui): State<Arc<MemberUi>>) -> Response {
    match ui.member.readiness() {
        Ok(()) => Json(serde_json::json!({ "ready": true })).into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "ready": false, "why": why })),
        )
            .into_response(),
    }
}

async fn shard_page(
    State(ui): State<Arc<MemberUi>>,
    axum::extract::Path(job): axum::extract::Path<String>,
    request: axum::extract::Request,
) -> Response {
    dispatch(&ui, &job, "", request).await
}

async fn shard_route(
    State(ui): State<Arc<MemberUi>>,
    axum::extract::Path((job, rest)): axum::extract::Path<(String, String)>,
    request: axum::extract::Request,
) -> Response {
    dispatch(&ui, &job, &rest, request).await
}

/// Hands a request under `shard/<shard job>/` to that shard job's router.
async fn dispatch(ui: &MemberUi, job: &str, rest: &str, mut request: axum::extract::Request) -> Response {
    use tower::ServiceExt;
    let Some(controller) = ui.member.shard_controller(job) else {
        return refuse(
            StatusCode::NOT_FOUND,
            &format!("this member does not run shard job {job} now (shards move between members): see its page"),
        );
    };
    let query = request.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
    match format!("/{rest}{query}").parse() {
        Ok(uri) => *request.uri_mut() = uri,
        Err(_) => return refuse(StatusCode::BAD_REQUEST, "not a valid path"),
    }
    match router(controller, ui.options.clone()).oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// Serves `app` on `addr` from a thread with a current-thread runtime.
fn serve(app: Router, addr: SocketAddr) -> Result<UiServer> {
    let bad = |e: std::io::Error| WeirError::Config {
        key: "ui_addr".into(),
        message: format!("cannot serve the web UI on {addr}: {e}"),
    };
    let listener = std::net::TcpListener::bind(addr).map_err(bad)?;
    listener.set_nonblocking(true).map_err(bad)?;
    let bound = listener.local_addr().map_err(bad)?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| WeirError::io("cannot start the web UI's runtime", "weir-ui", e))?;
    let thread = std::thread::Builder::new()
        .name("weir-ui".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!("web UI on {bound}: {e}");
                        return;
                    }
                };
                let served = axum::serve(listener, app).with_graceful_shutdown(async {
                    let _ = rx.await;
                });
                if let Err(e) = served.await {
                    tracing::error!("web UI on {bound}: {e}");
                }
            })
        })
        .map_err(|e| WeirError::io("cannot spawn the web UI's thread", "weir-ui", e))?;
    Ok(UiServer {
        addr: bound,
        shutdown: Some(tx),
        thread: Some(thread),
    })
}
