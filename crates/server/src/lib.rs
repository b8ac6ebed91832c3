//! The self-hosted attentive-sync server (`attentive-sync serve`): runs activations on their
//! schedules, and offers a REST API (`/api/v1`, OpenAPI at `/api/openapi.json`), a web
//! dashboard (`/`) and Prometheus metrics (`/metrics`). Runs go through
//! `runner::run::run` and dry runs through `runner::plan::plan`, the pipelines the CLI uses.
//!
//! A frontend crate: it depends on `runner` (wiring) and the adapters' types, never the
//! other way round. See `docs/SERVER.md`.

use crate::error::ErrorCode;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use axum::Router;
use runner::Project;
use tokio::sync::watch;

pub mod alerting;
pub mod api;
pub mod auth;
pub mod dashboard;
pub mod error;
pub mod metrics;
pub mod runs;
pub mod scheduler;
pub mod state;
pub mod tls;
pub mod views;

pub use auth::ServerToken;
pub use error::{ApiError, Error};
pub use state::{App, Settings};

/// What `serve` needs.
#[derive(Debug)]
pub struct ServeOptions {
    pub project: Project,
    pub listen: SocketAddr,
    pub token: ServerToken,
    pub settings: Settings,
}

/// Every route of the server, and the OpenAPI document of its API.
pub fn router(app: &Arc<App>) -> (Router, utoipa::openapi::OpenApi) {
    let (api, doc) = api::routers(app);
    let doc_json: Arc<str> =
        Arc::from(serde_json::to_string(&doc).unwrap_or_else(|_| "{}".to_owned()));
    let router = Router::new()
        .merge(api)
        .merge(dashboard::router(app))
        .route(
            "/api/openapi.json",
            get(move || {
                let json = doc_json.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        json.to_string(),
                    )
                }
            }),
        )
        .fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                ErrorCode::NotFound,
                "no such route; see /api/openapi.json",
            )
        })
        .layer(axum::middleware::from_fn(log_request))
        .with_state(app.clone());
    (router, doc)
}

/// One debug line per request (method, path without the query, status, time).
async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(req).await;
    tracing::debug!(
        %method,
        %path,
        status = response.status().as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "http"
    );
    response
}

/// Marks runs a killed process left `running` as `interrupted`, for each activation whose
/// lock is free (a run of another process is left alone), and seeds the "last success"
/// metric from the run history.
fn recover(app: &App) -> Result<(), Error> {
    let path = app.project.state_path.clone();
    let store_err = |source| Error::Store {
        path: path.clone(),
        source,
    };
    let mut store = state_store::StateStore::open(&app.project.state_path).map_err(store_err)?;
    let holder = format!(
        "attentive-sync serve pid {} (start-up check)",
        std::process::id()
    );
    for name in app.project.activations.keys() {
        match store.try_lock(name, &holder) {
            Ok(lock) => {
                let n = store.mark_interrupted_runs(name).map_err(store_err)?;
                if n > 0 {
                    tracing::warn!(activation = %name, runs = n, "runs left running by a process that ended are now marked interrupted");
                }
                drop(lock);
            }
            Err(state_store::Error::Locked { holder, .. }) => {
                tracing::info!(activation = %name, %holder, "the activation is being run by another process");
            }
            Err(e) => return Err(store_err(e)),
        }
        let last = store
            .runs(Some(name), 100)
            .map_err(store_err)?
            .into_iter()
            .find(|r| {
                matches!(
                    r.status,
                    state_store::RunStatus::Succeeded
                        | state_store::RunStatus::Partial
                        | state_store::RunStatus::Pending
                )
            })
            .and_then(|r| r.finished_at)
            .and_then(|f| chrono::DateTime::parse_from_rfc3339(&f).ok());
        if let Some(t) = last {
            app.metrics
                .set_last_success(name, t.with_timezone(&chrono::Utc));
        }
    }
    Ok(())
}

/// Serves until SIGTERM or Ctrl-C, then stops gracefully: no new run starts, the runs going
/// on are asked to stop (in-flight writes finish and are committed; they end `interrupted`,
/// and their next run sends the rest), and the server exits once they have ended (or after
/// `shutdown_timeout`, or at a second signal). `on_listening` gets the bound address (useful
/// with port 0).
pub async fn serve(
    opts: ServeOptions,
    on_listening: impl FnOnce(SocketAddr) + Send,
) -> Result<(), Error> {
    let app = Arc::new(App::new(opts.project, opts.token, opts.settings));
    let recover_app = app.clone();
    tokio::task::spawn_blocking(move || recover(&recover_app))
        .await
        .map_err(|e| Error::Serve(std::io::Error::other(e.to_string())))??;
    let (router, _) = router(&app);
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: opts.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Bind {
        addr: opts.listen,
        source,
    })?;
    let acceptor = app.settings.tls.as_ref().map(tls::acceptor).transpose()?;
    if !addr.ip().is_loopback() && acceptor.is_none() {
        tracing::warn!(
            %addr,
            "listening beyond this machine without TLS: the server token and the dashboard travel in clear; put a TLS-terminating reverse proxy in front (docs/SERVER.md), or listen on 127.0.0.1"
        );
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut schedules = scheduler::spawn(&app, &stop_rx);
    schedules.push(scheduler::spawn_settler(&app, &stop_rx));
    schedules.push(alerting::spawn_notifier(&app, &stop_rx));
    tracing::info!(
        %addr,
        activations = app.project.activations.len(),
        scheduled = schedules.len() - 2,
        "serving"
    );
    on_listening(addr);

    let mut signals = Signals::new();
    let exit_now = serve_connections(&app, listener, acceptor, router, &mut signals, stop_tx).await;
    if exit_now {
        tracing::error!("exiting at once");
    }
    for s in schedules {
        s.abort();
    }
    tracing::info!("stopped");
    Ok(())
}

/// Accepts connections until the first signal (each one served by hyper with a header-read
/// timeout, which also closes idle keep-alive connections, and at most
/// `settings.max_connections` at once: one more is closed at once), then stops: no new run
/// starts, runs going on stop (up to `shutdown_timeout`), and open connections get
/// `shutdown_grace` to finish their requests. A second signal skips the waiting; returns
/// whether one came.
async fn serve_connections(
    app: &Arc<App>,
    listener: tokio::net::TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    router: axum::Router,
    signals: &mut Signals,
    stop_tx: watch::Sender<bool>,
) -> bool {
    let settings = &app.settings;
    let router = router
        .layer(axum::middleware::from_fn_with_state(
            settings.request_timeout,
            request_timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(settings.allowed_hosts.clone()),
            check_host,
        ));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let limit = Arc::new(tokio::sync::Semaphore::new(settings.max_connections.max(1)));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Some(settings.header_timeout))
        .keep_alive(true);
    let first = loop {
        tokio::select! {
            signal = signals.next() => break signal,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors, or a connection reset before it was taken:
                        // wait a moment rather than spin.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, limit = settings.max_connections, "connection limit reached: a new connection was closed");
                    drop(stream);
                    continue;
                };
                // Handlers see the client's address (`client_address`).
                let service = hyper_util::service::TowerToHyperService::new(
                    tower::ServiceExt::map_request(
                        router.clone(),
                        move |mut r: axum::http::Request<hyper::body::Incoming>| {
                        r.extensions_mut()
                            .insert(axum::extract::ConnectInfo(peer));
                        r
                    },
                    ),
                );
                let (watcher, http) = (graceful.watcher(), http.clone());
                let (acceptor, handshake) = (acceptor.clone(), settings.header_timeout);
                tokio::spawn(async move {
                    let _slot = permit;
                    let result = match acceptor {
                        None => {
                            watcher
                                .watch(http.serve_connection(
                                    hyper_util::rt::TokioIo::new(stream),
                                    service,
                                ))
                                .await
                        }
                        Some(acceptor) => {
                            // The handshake is bounded like the request headers.
                            let tls = match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                                Ok(Ok(tls)) => tls,
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "TLS handshake timed out");
                                    return;
                                }
                            };
                            watcher
                                .watch(http.serve_connection(
                                    hyper_util::rt::TokioIo::new(tls),
                                    service,
                                ))
                                .await
                        }
                    };
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
        }
    };
    drop(listener);
    tracing::warn!(
        signal = first,
        "stopping: no new run starts; runs going on commit what is in flight and end interrupted (signal again to exit at once)"
    );
    app.begin_shutdown();
    let _ = stop_tx.send(true);
    let timeout = settings.shutdown_timeout;
    tokio::select! {
        () = app.runs.idle() => tracing::info!("every run has stopped"),
        () = tokio::time::sleep(timeout) => tracing::error!(?timeout, "runs did not stop in time; exiting anyway"),
        s = signals.next() => {
            tracing::error!(signal = s, "second signal");
            return true;
        }
    }
    let grace = settings.shutdown_grace;
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("every connection has closed"),
        () = tokio::time::sleep(grace) => tracing::warn!(?grace, "connections still open after the grace period are dropped"),
        s = signals.next() => {
            tracing::error!(signal = s, "second signal");
            return true;
        }
    }
    false
}

/// Refuses requests whose `Host` is not one of `--allowed-hosts` (421 `host_not_allowed`).
async fn check_host(
    axum::extract::State(allowed): axum::extract::State<Arc<Vec<String>>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let host = request
        .headers()
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok());
    if tls::host_allowed(&allowed, host) {
        return next.run(request).await;
    }
    tracing::warn!(
        host = host.unwrap_or(""),
        "request for a host not in --allowed-hosts refused"
    );
    ApiError::new(
        axum::http::StatusCode::MISDIRECTED_REQUEST,
        ErrorCode::HostNotAllowed,
        "this server does not answer for that host name (see --allowed-hosts)",
    )
    .into_response()
}

/// The address of the client that sent `request`, when the server knows it.
pub fn client_address(request: &Request) -> Option<std::net::IpAddr> {
    request
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|axum::extract::ConnectInfo(a)| a.ip())
}

/// Answers 503 `request_timeout` when a handler takes longer than the request timeout (a
/// response that has started, like a CSV download, is not cut).
async fn request_timeout(
    axum::extract::State(limit): axum::extract::State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::RequestTimeout,
            format!("the request took longer than {} s", limit.as_secs_f64()),
        )
        .into_response(),
    }
}

/// SIGTERM and SIGINT (Ctrl-C).
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Signals {
        #[cfg(unix)]
        {
            let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .map_err(|e| tracing::error!(error = %e, "cannot listen for SIGTERM"))
                .ok();
            Signals { term }
        }
        #[cfg(not(unix))]
        {
            Signals {}
        }
    }

    /// The next signal's name.
    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            let term = async {
                match self.term.as_mut() {
                    Some(t) => {
                        t.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = term => "SIGTERM",
                r = tokio::signal::ctrl_c() => {
                    if r.is_err() { std::future::pending::<()>().await; }
                    "SIGINT"
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}

#[cfg(test)]
mod tests;
