//! Starting and stopping `serve`: upstreams (including the in-process `local` backend), the
//! agent, both listeners, and the drain on shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{ProxyState, Resigner, Route, listener};
use crate::backend::{self, Backend};
use crate::config::Config;
use crate::learn::online::{Online, OnlineError};
use crate::model::ModelError;

/// Why `adacompress serve` did not run. Each message already carries its cause, so
/// none is chained.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Config(crate::config::ConfigError),
    #[error("{0}")]
    Resign(String),
    #[error("{0}")]
    Start(ServeError),
}

/// The configuration `serve` runs with: the file (or defaults), then the environment,
/// then the flags (`--listen`, `--admin-listen`, `--upstream PROTOCOL=URL`).
pub fn serve_config(
    file: Option<&std::path::Path>,
    listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
    upstreams: &[String],
) -> Result<Config, RunError> {
    let mut cfg = Config::load(file, std::env::vars()).map_err(RunError::Config)?;
    if let Some(a) = listen {
        cfg.proxy.listen = a;
    }
    if let Some(a) = admin_listen {
        cfg.proxy.admin_listen = a;
    }
    for u in upstreams {
        cfg.add_upstream_flag(u).map_err(RunError::Config)?;
    }
    cfg.check_resign().map_err(RunError::Config)?;
    Ok(cfg)
}

/// `adacompress serve`: runs until SIGTERM/SIGINT, then drains and returns.
pub async fn run(cfg: Config) -> Result<(), RunError> {
    let resign = super::resign_from_config(&cfg).map_err(RunError::Resign)?;
    let server = start(cfg, resign).await.map_err(RunError::Start)?;
    crate::shutdown::signal().await;
    tracing::info!("shutdown signal received; draining");
    server.shutdown().await;
    Ok(())
}

/// Why `serve` could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "no upstream configured for an API: set [upstreams] in the config file, ADACOMPRESS_UPSTREAMS__<PROTOCOL>=URL, or --upstream PROTOCOL=URL (URL may be `local`); [upstreams].default alone forwards nothing the proxy compresses"
    )]
    NoUpstream,
    /// The agent did not load. [`OnlineError::NotCalibrated`] names `agent.checkpoint`
    /// itself; the other errors get it here.
    #[error("{}", agent_error(path, state, source))]
    Agent {
        path: PathBuf,
        state: PathBuf,
        source: Box<OnlineError>,
    },
    #[error("upstream `local`: cannot load the built-in backend model {path}: {source}")]
    Backend { path: PathBuf, source: ModelError },
    #[error("cannot listen on {key} = {addr}: {source}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    AdminToken(String),
    /// `aws.resign` cannot be applied (no region or key to verify against).
    #[error("{0}")]
    Resign(String),
    /// The upstream HTTP clients (`proxy.upstream_ca_file`, or the TLS setup).
    #[error(transparent)]
    Clients(#[from] super::ClientError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn agent_error(path: &std::path::Path, state: &std::path::Path, source: &OnlineError) -> String {
    match source {
        OnlineError::NotCalibrated { .. } => source.to_string(),
        // The agent's own state, not the checkpoint, could not be read or written.
        OnlineError::Store(_) => {
            format!("state.dir = {} (state.sqlite): {source}", state.display())
        }
        _ => format!("agent.checkpoint = {}: {source}", path.display()),
    }
}

/// Open connections allowed on the admin listener (probes and scrapers need few).
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// A running proxy.
pub struct Server {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub state: Arc<ProxyState>,
    /// The in-process backend behind `local` upstreams, if any.
    pub local_backend: Option<Arc<Backend>>,
    stop: watch::Sender<bool>,
    proxy_task: JoinHandle<std::io::Result<()>>,
    admin_task: JoinHandle<std::io::Result<()>>,
    /// Stops the in-process backend when dropped.
    local: Option<backend::LocalBackend>,
}

/// The EfficientNet-Lite0 model next to the agent checkpoint (`models/`).
fn local_model(cfg: &Config) -> PathBuf {
    cfg.agent
        .checkpoint
        .parent()
        .map_or_else(|| PathBuf::from("models"), PathBuf::from)
        .join("efficientnet-lite0.onnx")
}

/// Starts the proxy on the configured listeners (port 0 picks a free port).
pub async fn start(cfg: Config, resign: Option<Resigner>) -> Result<Server, ServeError> {
    // Process-wide: the adapters and the in-process backend parse with the same limits.
    crate::protocol::set_parse_limits(cfg.parse_limits());
    let upstreams = cfg.upstream_list();
    if upstreams.is_empty() {
        return Err(ServeError::NoUpstream);
    }
    let mut local: Option<backend::LocalBackend> = None;
    let mut routes = Vec::new();
    for up in upstreams {
        let base = if up.url == "local" {
            if local.is_none() {
                let model = local_model(&cfg);
                local = Some(backend::start_local(&model).await.map_err(|e| match e {
                    backend::LocalError::Model { path, source } => {
                        ServeError::Backend { path, source }
                    }
                    backend::LocalError::Io(e) => ServeError::Io(e),
                })?);
            }
            local.as_ref().map_or_else(String::new, |l| l.url())
        } else {
            up.url.clone()
        };
        routes.push(Route {
            protocol: up.protocol,
            base,
        });
    }
    for key in &cfg.ignored {
        tracing::warn!(
            key = %key,
            "ignored, no longer used: the Q-head agent's retraining loop is gone from serve; delete the key"
        );
    }
    let online = {
        let path = cfg.agent.checkpoint.clone();
        let state_dir = cfg.state.dir.clone();
        let accuracy = cfg.estimator.accuracy;
        let pcfg = cfg.pair.clone();
        let seed = pcfg.audit_seed;
        let p = path.clone();
        let opened =
            tokio::task::spawn_blocking(move || Online::open(&p, &state_dir, accuracy, pcfg, seed))
                .await
                .map_err(|e| ServeError::Io(std::io::Error::other(e.to_string())))?;
        match opened {
            Ok(online) => Some(online),
            // `agent.fixed` is the operator's override: it needs no agent.
            Err(e @ OnlineError::NotCalibrated { .. }) if cfg.agent.fixed.is_some() => {
                tracing::warn!(
                    error = %e,
                    "no agent loaded: every image goes up at agent.fixed"
                );
                None
            }
            Err(source) => {
                return Err(ServeError::Agent {
                    path,
                    state: cfg.state.dir.clone(),
                    source: Box::new(source),
                });
            }
        }
    };
    let admin_token = super::admin::AdminToken::load(
        std::env::var(super::admin::ADMIN_TOKEN_ENV)
            .ok()
            .filter(|v| !v.is_empty()),
        cfg.proxy.admin_token_file.as_deref(),
    )
    .map_err(ServeError::AdminToken)?;
    cfg.check_resign()
        .map_err(|e| ServeError::Resign(e.to_string()))?;
    let trust = super::trust::ClientTrust::from_config(&cfg).map_err(ServeError::Resign)?;
    if resign.is_none()
        && routes
            .iter()
            .any(|r| r.protocol == crate::protocol::Protocol::Rekognition)
    {
        tracing::warn!(
            "no AWS credentials (aws.access_key_id/aws.secret_access_key or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY): Rekognition requests cannot be forwarded: they cannot be re-signed for the upstream"
        );
    }
    let mut state = ProxyState::new(cfg.clone(), routes, online, resign)?;
    state.admin_token = admin_token;
    state.trust = trust;
    let state = Arc::new(state);
    let proxy_listener = TcpListener::bind(cfg.proxy.listen)
        .await
        .map_err(|source| ServeError::Bind {
            key: "proxy.listen",
            addr: cfg.proxy.listen,
            source,
        })?;
    let admin_listener = TcpListener::bind(cfg.proxy.admin_listen)
        .await
        .map_err(|source| ServeError::Bind {
            key: "proxy.admin_listen",
            addr: cfg.proxy.admin_listen,
            source,
        })?;
    let proxy_addr = proxy_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    let fd_limit = listener::raise_fd_limit();
    // Each proxied request holds a client and an upstream connection; leave room for the
    // admin listener, the store and the models.
    let needed = cfg.proxy.max_connections as u64 * 2 + 128;
    if let Some(fds) = fd_limit.filter(|&f| f < needed) {
        tracing::warn!(
            open_files = fds,
            needed,
            max_connections = cfg.proxy.max_connections,
            "the open-file limit is below what proxy.max_connections needs; lower it or raise `ulimit -n`"
        );
    }
    let header_read_timeout = Duration::from_secs_f64(cfg.proxy.header_read_timeout_secs);
    let (stop, _) = watch::channel(false);
    let proxy_task = tokio::spawn(listener::serve(
        proxy_listener,
        super::app(state.clone()),
        listener::ConnPolicy {
            max_connections: cfg.proxy.max_connections,
            header_read_timeout,
        },
        Some(state.metrics.clone()),
        stop.subscribe(),
    ));
    // The admin listener has its own allowance: a flood on the proxy port cannot take
    // /healthz or /metrics with it.
    let admin_task = tokio::spawn(listener::serve(
        admin_listener,
        super::admin::app(state.clone()),
        listener::ConnPolicy {
            max_connections: ADMIN_MAX_CONNECTIONS,
            header_read_timeout,
        },
        None,
        stop.subscribe(),
    ));
    state.set_ready(true);
    tracing::info!(
        %proxy_addr,
        %admin_addr,
        routes = ?state.routes,
        default_upstream = ?state.default_upstream.as_deref().map(super::redact_userinfo),
        "adacompress proxy ready"
    );
    Ok(Server {
        proxy_addr,
        admin_addr,
        state,
        local_backend: local.as_ref().map(|l| l.state.clone()),
        stop,
        proxy_task,
        admin_task,
        local,
    })
}

impl Server {
    /// Stops accepting, lets in-flight requests and then the estimates they started finish
    /// within `proxy.drain_secs` (one deadline for both; estimates still running after it
    /// are aborted), stops the learner after its queued work (waiting a bounded time),
    /// flushes the store. Returns whether the drain (requests and estimates) finished in
    /// time.
    pub async fn shutdown(self) -> bool {
        self.state.start_draining();
        let drain = Duration::from_secs_f64(self.state.cfg.proxy.drain_secs);
        let deadline = tokio::time::Instant::now() + drain;
        let _ = self.stop.send(true);
        let requests = tokio::time::timeout_at(deadline, self.proxy_task)
            .await
            .is_ok();
        if !requests {
            tracing::warn!(
                drain_secs = drain.as_secs_f64(),
                "in-flight requests did not finish within proxy.drain_secs"
            );
        }
        let estimates = self.state.drain_estimates(deadline).await;
        let drained = requests && estimates;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.admin_task).await;
        if let Some(online) = self.state.online.clone() {
            let _ = tokio::task::spawn_blocking(move || online.shutdown()).await;
        }
        drop(self.local);
        tracing::info!(drained, "adacompress proxy stopped");
        drained
    }
}
