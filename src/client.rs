//! Vision clients: send one image to a cloud vision service, get parsed labels back.
//!
//! [`VisionService`] is what training and eval talk to; [`HttpService`] implements
//! it for every wire format in [`crate::protocol`]. [`CachedService`] puts the
//! SQLite answer cache ([`crate::store`]) in front, so each (image, action) is
//! asked once, ever. Transient failures (connection errors, timeouts, HTTP 5xx,
//! throttling in any API's shape) are retried with backoff; a refusal (HTTP 4xx, or
//! Baidu's error inside an HTTP 200) or an empty answer is a result — it counts as
//! a failure to agree — never a skip.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::protocol::{Protocol, ProtocolError};
use crate::store::{CachedAnswer, Outcome, Store, StoreError};

/// Why a service call produced no outcome.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("cannot reach {url}: {reason}")]
    Transport { url: String, reason: String },
    #[error("{url} answered HTTP {status} after {attempts} attempts")]
    Unavailable {
        url: String,
        status: u16,
        attempts: u32,
    },
    #[error("cannot understand the answer from {url}: {source}")]
    Parse { url: String, source: ProtocolError },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why the service a command names could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error("{0}")]
    Io(String),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where an offline command's vision service is and how to talk to it (`--upstream`,
/// `--protocol`, `--service-id`, `--cache`, `--timeout`).
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    /// Base URL, or `local` / `local:MODEL.onnx` for the built-in backend in-process.
    pub upstream: String,
    /// Wire format.
    pub protocol: Protocol,
    /// Cache key for the answers; default `protocol@upstream`.
    pub service_id: Option<String>,
    /// SQLite answer cache.
    pub cache: std::path::PathBuf,
    /// Per-request timeout in seconds.
    pub timeout: u64,
}

impl ServiceSpec {
    /// The service `upstream` names and its answer cache; `local[:MODEL]` starts the
    /// built-in backend in this process (stopped when the returned guard is dropped),
    /// identified in the answer cache by its model's file name and hash.
    pub async fn open(
        &self,
    ) -> Result<(HttpService, Store, Option<crate::backend::LocalBackend>), OpenError> {
        let (url, default_id, local) = if self.upstream == "local"
            || self.upstream.starts_with("local:")
        {
            let model = self.upstream.strip_prefix("local:").map_or_else(
                || std::path::PathBuf::from("models/efficientnet-lite0.onnx"),
                std::path::PathBuf::from,
            );
            let local = crate::backend::start_local(&model)
                .await
                .map_err(|e| match e {
                    crate::backend::LocalError::Model { source, .. } => OpenError::Model(source),
                    crate::backend::LocalError::Io(e) => {
                        OpenError::Io(format!("cannot start the local backend: {e}"))
                    }
                })?;
            eprintln!(
                "started the local vision backend ({}) on {}",
                model.display(),
                local.addr
            );
            let id = format!("{}@{}", self.protocol, local.id);
            (local.url(), Some(id), Some(local))
        } else {
            (self.upstream.clone(), None, None)
        };
        let mut http = HttpService::new(self.protocol, &url, Duration::from_secs(self.timeout))?;
        if let Some(id) = self.service_id.as_ref().or(default_id.as_ref()) {
            http = http.with_id(id);
        }
        let store = Store::open(&self.cache)?;
        Ok((http, store, local))
    }
}

/// A boxed future, so the trait stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A vision service that labels one image.
pub trait VisionService: Send + Sync {
    /// Stable identity, used as the cache key (protocol and base URL).
    fn id(&self) -> &str;
    /// Sends `image` and returns the service's verdict.
    fn annotate<'a>(&'a self, image: &'a [u8]) -> BoxFuture<'a, Result<Outcome, ServiceError>>;
}

/// A service reached over HTTP with one of the supported wire formats.
#[derive(Debug, Clone)]
pub struct HttpService {
    /// Base URL without trailing slash, e.g. `http://127.0.0.1:8081`.
    base: String,
    protocol: Protocol,
    http: reqwest::Client,
    /// `protocol@base`.
    id: String,
    /// Labels to ask for.
    max_labels: usize,
    /// Attempts per image for transient failures.
    attempts: u32,
}

impl HttpService {
    /// A client for `protocol` at `base_url`, with a per-request `timeout`.
    pub fn new(
        protocol: Protocol,
        base_url: &str,
        timeout: Duration,
    ) -> Result<HttpService, ServiceError> {
        let base = base_url.trim_end_matches('/').to_string();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| ServiceError::Transport {
                url: base.clone(),
                reason: e.to_string(),
            })?;
        Ok(HttpService {
            id: format!("{protocol}@{base}"),
            base,
            protocol,
            http,
            max_labels: 10,
            attempts: 4,
        })
    }

    /// Overrides the cache identity (e.g. when another model answers at the same URL).
    pub fn with_id(mut self, id: &str) -> HttpService {
        self.id = id.to_string();
        self
    }

    async fn annotate_once(&self, image: &[u8]) -> Result<Result<Outcome, u16>, ServiceError> {
        let req = self.protocol.client_request(image, self.max_labels);
        let url = format!("{}{}", self.base, req.path_and_query);
        let mut builder = self.http.post(&url).body(req.body);
        for (k, v) in &req.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        let resp = builder.send().await.map_err(|e| ServiceError::Transport {
            url: url.clone(),
            reason: error_chain(&e),
        })?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| ServiceError::Transport {
            url: url.clone(),
            reason: error_chain(&e),
        })?;
        if status >= 500 || status == 429 {
            return Ok(Err(status));
        }
        match self.protocol.parse_answer(status, &body) {
            Ok(answer) => Ok(Ok(Outcome::Answer(answer))),
            // "Slow down" in the API's own shape, whatever the status (Baidu: 200, Face++: 403).
            Err(e) if e.is_throttling() => Ok(Err(status)),
            Err(e) if (400..500).contains(&status) => Ok(Ok(Outcome::Rejected(e.to_string()))),
            // An error in the API's shape inside a 2xx (Baidu) is a refusal all the same.
            Err(e @ ProtocolError::Service { .. }) => Ok(Ok(Outcome::Rejected(e.to_string()))),
            Err(source) => Err(ServiceError::Parse { url, source }),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

impl VisionService for HttpService {
    fn id(&self) -> &str {
        &self.id
    }

    fn annotate<'a>(&'a self, image: &'a [u8]) -> BoxFuture<'a, Result<Outcome, ServiceError>> {
        Box::pin(async move {
            let mut delay = Duration::from_millis(200);
            let mut last = 0;
            for attempt in 1..=self.attempts {
                match self.annotate_once(image).await {
                    Ok(Ok(outcome)) => return Ok(outcome),
                    Ok(Err(status)) => last = status,
                    Err(e @ ServiceError::Transport { .. }) if attempt < self.attempts => {
                        tracing::warn!(service = %self.id, attempt, error = %e, "retrying");
                    }
                    Err(e) => return Err(e),
                }
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(ServiceError::Unavailable {
                url: self.base.clone(),
                status: last,
                attempts: self.attempts,
            })
        })
    }
}

/// A service with the SQLite answer cache in front.
pub struct CachedService<'s, S: VisionService + ?Sized> {
    inner: &'s S,
    store: &'s Store,
    /// Requests that reached the service (cache misses).
    requests: AtomicU64,
}

impl<'s, S: VisionService + ?Sized> CachedService<'s, S> {
    /// Wraps `inner` with `store`.
    pub fn new(inner: &'s S, store: &'s Store) -> Self {
        CachedService {
            inner,
            store,
            requests: AtomicU64::new(0),
        }
    }

    /// The wrapped service's id.
    pub fn id(&self) -> &str {
        self.inner.id()
    }

    /// Requests sent to the service so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The cached answer for (image, action), if any — no request made.
    pub fn cached(
        &self,
        image_sha: &str,
        action: &str,
    ) -> Result<Option<CachedAnswer>, ServiceError> {
        Ok(self.store.get_answer(self.inner.id(), image_sha, action)?)
    }

    /// Records an answer known without asking (e.g. an action whose upload is the
    /// original bytes shares the original's answer).
    pub fn remember(
        &self,
        image_sha: &str,
        action: &str,
        answer: &CachedAnswer,
    ) -> Result<(), ServiceError> {
        Ok(self
            .store
            .put_answer(self.inner.id(), image_sha, action, answer)?)
    }

    /// The answer for `bytes`, uploaded as `action` of the image `image_sha`:
    /// from the cache, or asked once and stored.
    pub async fn answer(
        &self,
        image_sha: &str,
        action: &str,
        bytes: &[u8],
    ) -> Result<CachedAnswer, ServiceError> {
        if let Some(hit) = self.cached(image_sha, action)? {
            return Ok(hit);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let outcome = self.inner.annotate(bytes).await?;
        let cached = CachedAnswer {
            bytes: bytes.len(),
            outcome,
        };
        self.store
            .put_answer(self.inner.id(), image_sha, action, &cached)?;
        Ok(cached)
    }
}
