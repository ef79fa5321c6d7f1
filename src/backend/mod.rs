//! The local vision backend: a real ImageNet classifier (EfficientNet-Lite ONNX in
//! tract) behind the cloud wire formats, so tests, benchmarks and new users need
//! no cloud account.
//!
//! `adacompress backend --model models/efficientnet-lite0.onnx --listen 127.0.0.1:8081`
//! answers every API of [`crate::protocol`] on its real path:
//!
//! | API | route |
//! |---|---|
//! | Google Vision | `POST /v1/images:annotate` (batches of up to 16 images; features by name or number, `?$alt=json;enum-encoding=int`) |
//! | Rekognition | `POST /` with `X-Amz-Target: RekognitionService.DetectLabels` |
//! | Baidu | `POST /rest/2.0/image-classify/v2/advanced_general` |
//! | Face++ | `POST /imagepp/beta/detectsceneandobject`, `POST /facepp/v3/detect` (faces) |
//! | Azure | `POST /computervision/imageanalysis:analyze` (`api-version` 2023-10-01, the SDK's, or 2024-02-01) |
//! | KServe / Triton | `POST /v2/models/{model}[/versions/{version}]/infer` (batches); `GET /v2/health/live`, `/v2/health/ready`, `/v2`, `/v2/models/{model}[/versions/{version}][/ready]` |
//! | TorchServe | `POST /predictions/{model}[/{version}]`; `GET /ping` |
//! | Google Vision gRPC | `/google.cloud.vision.v1.ImageAnnotator/BatchAnnotateImages` ([`grpc`]) |
//! | KServe / Triton gRPC | `/inference.GRPCInferenceService/` `ModelInfer`, `ServerLive`, `ServerReady`, `ServerMetadata`, `ModelReady`, `ModelMetadata` ([`grpc`]) |
//!
//! One port serves HTTP/1.1 and HTTP/2 cleartext (h2c with prior knowledge, what gRPC
//! insecure channels speak): the REST routes answer on either, the gRPC methods on HTTP/2.
//!
//! The classifier answers every model name. Face++ detect needs a face detector
//! ([`DetectFaces`], given with [`BackendConfig::with_faces`]); without one it answers
//! 503 in Face++'s error shape, naming what is missing.
//!
//! With [`BackendConfig::aws_verify`] set (`adacompress backend --aws-verify`), the
//! Rekognition route checks each request's SigV4 signature as AWS does and answers
//! 403 `InvalidSignatureException` when it does not verify ([`crate::sigv4`]).
//!
//! Classification is CPU-bound and runs on the blocking pool, at most
//! `concurrency` images at a time; at most `queue` more requests wait for a slot,
//! and beyond that the backend answers 429 at once, in the API's own throttling
//! shape ([`Protocol::render_throttled`]), instead of queueing without bound
//! (clients retry with backoff).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::codec::{self, Limits};
use crate::model::{ClassNames, ImageModel, ModelError};
use crate::protocol::{
    Answer, BackendImage, ImageProblem, Label, Protocol, ProtocolError, Task, kserve, torchserve,
};
use crate::sigv4::Verifier;

pub mod faces;
pub mod grpc;

pub use faces::DetectFaces;

/// Backend settings.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// ONNX classifier (EfficientNet-Lite with `logits` and `features` outputs).
    pub model: PathBuf,
    /// `imagenet_classes.txt`, index-aligned with the logits.
    pub classes: PathBuf,
    /// Square input side; `None` picks the variant's native side from the file name.
    pub side: Option<u32>,
    /// Images classified at the same time.
    pub concurrency: usize,
    /// Requests allowed to wait for a slot before 429.
    pub queue: usize,
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Per-image decode limits.
    pub limits: Limits,
    /// Check SigV4 signatures on the Rekognition route against this key and region
    /// (403 when they do not verify); `None` accepts any request, signed or not.
    pub aws_verify: Option<Verifier>,
    /// The face detector behind Face++ `detect`; `None` answers 503 there.
    pub faces: Option<Arc<dyn DetectFaces>>,
}

impl BackendConfig {
    /// Defaults for `model`: classes next to it, one slot per core, a queue of 64.
    pub fn new(model: PathBuf) -> BackendConfig {
        // Next to the model if there is a list there, else the committed one.
        let classes = model
            .parent()
            .map(|d| d.join("imagenet_classes.txt"))
            .filter(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("models/imagenet_classes.txt"));
        BackendConfig {
            model,
            classes,
            side: None,
            concurrency: std::thread::available_parallelism().map_or(2, |n| n.get()),
            queue: 64,
            max_body_bytes: 64 * 1024 * 1024,
            limits: Limits::default(),
            aws_verify: None,
            faces: None,
        }
    }

    /// These settings with `faces` as the face detector behind Face++ `detect`.
    pub fn with_faces(mut self, faces: Arc<dyn DetectFaces>) -> BackendConfig {
        self.faces = Some(faces);
        self
    }
}

/// The native input side of an EfficientNet-Lite variant, from its file name.
pub fn native_side(model: &std::path::Path) -> u32 {
    let name = model
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if name.contains("lite4") {
        300
    } else if name.contains("lite3") {
        280
    } else if name.contains("lite2") {
        260
    } else if name.contains("lite1") {
        240
    } else {
        224
    }
}

/// A classifier: model + class names.
#[derive(Debug, Clone)]
pub struct Classifier {
    pub model: ImageModel,
    pub classes: ClassNames,
}

impl Classifier {
    /// Loads the model at its side and the class names.
    pub fn load(
        model: &std::path::Path,
        classes: &std::path::Path,
        side: u32,
    ) -> Result<Classifier, ModelError> {
        Ok(Classifier {
            model: ImageModel::load(model, side)?,
            classes: ClassNames::load(classes)?,
        })
    }

    /// Decodes and classifies one encoded image: the top `k` labels.
    pub fn classify(
        &self,
        bytes: &[u8],
        limits: &Limits,
        k: usize,
    ) -> Result<Answer, ImageProblem> {
        let decoded =
            codec::decode(bytes, limits).map_err(|e| ImageProblem::Undecodable(e.to_string()))?;
        let out = self
            .model
            .run(&decoded.image)
            .map_err(|e| ImageProblem::Internal(e.to_string()))?;
        Ok(Answer::new(
            self.classes
                .top_k(&out.logits, k)
                .into_iter()
                .map(|(name, score)| Label { name, score })
                .collect(),
        ))
    }
}

/// Shared state of a running backend.
#[derive(Debug)]
pub struct Backend {
    classifier: Classifier,
    limits: Limits,
    /// Slots for classification work.
    run: Arc<Semaphore>,
    /// Slots for requests in the building (running + waiting).
    admit: Arc<Semaphore>,
    max_body_bytes: usize,
    /// Requests answered, any outcome.
    requests: AtomicU64,
    /// Images classified.
    images: AtomicU64,
    /// Requests refused with 429.
    throttled: AtomicU64,
    /// Signature check for Rekognition requests, when enabled.
    aws_verify: Option<Verifier>,
    /// Rekognition requests whose signature verified (tests prove re-signing with it).
    signatures_verified: AtomicU64,
    /// The face detector behind Face++ `detect`, if one is loaded.
    faces: Option<Arc<dyn DetectFaces>>,
}

impl Backend {
    /// Loads the model and builds the state.
    pub fn load(cfg: &BackendConfig) -> Result<Backend, ModelError> {
        let side = cfg.side.unwrap_or_else(|| native_side(&cfg.model));
        let classifier = Classifier::load(&cfg.model, &cfg.classes, side)?;
        Ok(Backend::new(classifier, cfg))
    }

    /// Builds the state around an already loaded classifier.
    pub fn new(classifier: Classifier, cfg: &BackendConfig) -> Backend {
        let concurrency = cfg.concurrency.max(1);
        Backend {
            classifier,
            limits: cfg.limits,
            run: Arc::new(Semaphore::new(concurrency)),
            admit: Arc::new(Semaphore::new(concurrency + cfg.queue)),
            max_body_bytes: cfg.max_body_bytes,
            requests: AtomicU64::new(0),
            images: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            aws_verify: cfg.aws_verify.clone(),
            signatures_verified: AtomicU64::new(0),
            faces: cfg.faces.clone(),
        }
    }

    /// This backend with `faces` as the face detector behind Face++ `detect`.
    pub fn with_faces(mut self, faces: Arc<dyn DetectFaces>) -> Backend {
        self.faces = Some(faces);
        self
    }

    /// Whether Face++ `detect` has a face detector to run.
    pub fn has_face_detector(&self) -> bool {
        self.faces.is_some()
    }

    /// Images classified since start.
    pub fn images_classified(&self) -> u64 {
        self.images.load(Ordering::Relaxed)
    }

    /// Requests answered since start.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Rekognition requests whose SigV4 signature verified since start (0 when
    /// verification is off).
    pub fn signatures_verified(&self) -> u64 {
        self.signatures_verified.load(Ordering::Relaxed)
    }

    /// The classifier.
    pub fn classifier(&self) -> &Classifier {
        &self.classifier
    }
}

/// The backend's router.
pub fn app(state: Arc<Backend>) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route(
            crate::protocol::google::PATH,
            serve_as(Protocol::GoogleVision),
        )
        .route("/", serve_as(Protocol::Rekognition))
        .route(crate::protocol::baidu::PATH, serve_as(Protocol::Baidu))
        .route(
            crate::protocol::facepp::SCENE_PATH,
            serve_as(Protocol::FacePlusPlus),
        )
        .route(
            crate::protocol::facepp::DETECT_PATH,
            serve_as(Protocol::FacePlusPlus),
        )
        .route(crate::protocol::azure::PATH, serve_as(Protocol::Azure))
        .route("/v2/models/{model}/infer", serve_as(Protocol::KServe))
        .route(
            "/v2/models/{model}/versions/{version}/infer",
            serve_as(Protocol::KServe),
        )
        .route("/predictions/{model}", serve_as(Protocol::TorchServe))
        .route(
            "/predictions/{model}/{version}",
            serve_as(Protocol::TorchServe),
        )
        .route("/v2/health/live", get(|| async { kserve::render_live() }))
        .route("/v2/health/ready", get(|| async { kserve::render_ready() }))
        .route("/v2", get(|| async { kserve::render_server_metadata() }))
        .route(
            "/v2/models/{model}",
            get(|Path(model): Path<String>| async move {
                kserve::render_model_metadata(&model, None)
            }),
        )
        .route(
            "/v2/models/{model}/versions/{version}",
            get(
                |Path((model, version)): Path<(String, String)>| async move {
                    kserve::render_model_metadata(&model, Some(&version))
                },
            ),
        )
        .route(
            "/v2/models/{model}/ready",
            get(|Path(model): Path<String>| async move { kserve::render_model_ready(&model) }),
        )
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(
                |Path((model, _)): Path<(String, String)>| async move {
                    kserve::render_model_ready(&model)
                },
            ),
        )
        .route("/ping", get(|| async { torchserve::render_ping() }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .merge(grpc::routes())
        .fallback(grpc::fallback)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Serves `state` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: Arc<Backend>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Why `adacompress backend` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{0}")]
    Io(String),
    /// A flag that cannot work; the message names it.
    #[error("{0}")]
    Usage(String),
}

/// `adacompress backend`'s flags.
#[derive(Debug, clap::Args)]
pub struct BackendOptions {
    /// ONNX classifier (e.g. models/efficientnet-lite0.onnx).
    #[arg(long, default_value = "models/efficientnet-lite0.onnx")]
    pub model: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub listen: String,
    /// Class names; default: imagenet_classes.txt next to the model.
    #[arg(long)]
    pub classes: Option<PathBuf>,
    /// Input side; default: the variant's native side (224/240/260 for lite0/1/2).
    #[arg(long)]
    pub side: Option<u32>,
    /// Images classified at once; default: one per core.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Requests that may wait for a slot before the backend answers 429.
    #[arg(long, default_value_t = 64)]
    pub queue: usize,
    /// Check SigV4 signatures on the Rekognition route (403 when they do not verify),
    /// against the key in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (/ AWS_SESSION_TOKEN)
    /// and the region in AWS_REGION.
    #[arg(long)]
    pub aws_verify: bool,
}

/// `adacompress backend`: [`run`] with the flags' settings.
pub async fn command(o: BackendOptions) -> Result<(), RunError> {
    let mut cfg = BackendConfig::new(o.model);
    if let Some(c) = o.classes {
        cfg.classes = c;
    }
    if let Some(c) = o.concurrency {
        cfg.concurrency = c;
    }
    (cfg.side, cfg.queue) = (o.side, o.queue);
    run(cfg, o.aws_verify, &o.listen).await
}

/// `adacompress backend`: loads `cfg` (with SigV4 checks on the Rekognition route when
/// `aws_verify`, BlazeFace for Face++ detect when its model sits beside the
/// classifier) and serves it on `listen` until SIGINT/SIGTERM.
pub async fn run(mut cfg: BackendConfig, aws_verify: bool, listen: &str) -> Result<(), RunError> {
    if aws_verify {
        let verifier = crate::sigv4::Verifier::from_env()
            .map_err(|e| RunError::Usage(format!("--aws-verify: {e}")))?;
        tracing::info!(
            region = %verifier.region,
            "checking SigV4 signatures on the Rekognition route"
        );
        cfg.aws_verify = Some(verifier);
    }
    let faces_path = cfg.model.with_file_name("blazeface-front-128.onnx");
    if faces_path.exists() {
        cfg.faces = Some(Arc::new(faces::FaceDetector::load(&faces_path)?));
    }
    let state = Arc::new(Backend::load(&cfg)?);
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| RunError::Io(format!("cannot listen on {listen} (--listen): {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| RunError::Io(e.to_string()))?;
    tracing::info!(
        %addr,
        model = %cfg.model.display(),
        side = state.classifier().model.side(),
        "local vision backend listening (google: POST /v1/images:annotate, rekognition: POST /)"
    );
    serve(listener, state, crate::shutdown::signal())
        .await
        .map_err(|e| RunError::Io(e.to_string()))
}

/// Starts a backend on a free loopback port in this process; for tests, benchmarks
/// and the demo. Returns the address; the server stops when `shutdown` resolves.
pub async fn spawn_local(
    state: Arc<Backend>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let handle = tokio::spawn(serve(listener, state, shutdown));
    Ok((addr, handle))
}

/// The built-in backend running in this process: what `--upstream local[:MODEL]`
/// (train, eval) and `upstreams.X = "local"` (serve, demo) start. It stops when dropped.
pub struct LocalBackend {
    pub addr: SocketAddr,
    pub state: Arc<Backend>,
    /// A stable id for answer caches: the model's file name and hash (not the port, so
    /// cached answers survive restarts).
    pub id: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl LocalBackend {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Why the built-in backend did not start.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("cannot load the built-in backend's model {path}: {source}")]
    Model {
        path: std::path::PathBuf,
        source: crate::model::ModelError,
    },
    #[error("cannot start the built-in backend: {0}")]
    Io(#[from] std::io::Error),
}

/// Loads `model` (and BlazeFace for Face++ detect when `blazeface-front-128.onnx` sits
/// beside it) off the async threads and serves every API on a free loopback port.
pub async fn start_local(model: &std::path::Path) -> Result<LocalBackend, LocalError> {
    let mut cfg = BackendConfig::new(model.to_path_buf());
    let faces = model.with_file_name("blazeface-front-128.onnx");
    let path = model.to_path_buf();
    let state = tokio::task::spawn_blocking(move || {
        if faces.exists() {
            match faces::FaceDetector::load(&faces) {
                Ok(d) => cfg.faces = Some(Arc::new(d)),
                Err(e) => tracing::warn!(error = %e, "no face detector for Face++ detect"),
            }
        }
        Backend::load(&cfg)
    })
    .await
    .map_err(|e| LocalError::Io(std::io::Error::other(e.to_string())))?
    .map_err(|source| LocalError::Model {
        path: path.clone(),
        source,
    })?;
    let state = Arc::new(state);
    let id = format!(
        "local:{}#{}",
        path.file_name()
            .map_or_else(String::new, |f| f.to_string_lossy().into_owned()),
        &state.classifier().model.sha256()[..12]
    );
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (addr, _) = spawn_local(state.clone(), async move {
        let _ = rx.await;
    })
    .await?;
    tracing::info!(%addr, model = %path.display(), "built-in vision backend started");
    Ok(LocalBackend {
        addr,
        state,
        id,
        _stop: tx,
    })
}

/// The `POST` route of one API.
fn serve_as(protocol: Protocol) -> MethodRouter<Arc<Backend>> {
    post(
        move |State(s): State<Arc<Backend>>, uri: Uri, headers: HeaderMap, body: Bytes| {
            handle(protocol, s, uri, headers, body)
        },
    )
}

async fn handle(
    protocol: Protocol,
    s: Arc<Backend>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    s.requests.fetch_add(1, Ordering::Relaxed);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    if protocol == Protocol::Rekognition
        && let Some(verifier) = &s.aws_verify
    {
        let checked = verifier.verify("POST", path, &headers, &body, std::time::SystemTime::now());
        if let Err(e) = checked {
            tracing::debug!(error = %e, "rekognition request rejected: signature");
            return invalid_signature(&e.to_string());
        }
        s.signatures_verified.fetch_add(1, Ordering::Relaxed);
    }
    let request = match protocol.parse_backend_request(path, &headers, &body) {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%protocol, error = %e, "bad request");
            return protocol.render_backend_error(&e).into_response();
        }
    };
    let task = request.task();
    if task == Task::Faces && s.faces.is_none() {
        let err = ProtocolError::Unavailable {
            reason: "no face detector is loaded in this backend, so Face++ detect cannot \
                     be served"
                .to_owned(),
        };
        return protocol.render_backend_error(&err).into_response();
    }
    match s.classify_all(task, request.images).await {
        Ok(results) => protocol
            .render_backend_response(&request.reply, results)
            .into_response(),
        Err(Refused::Throttled) => throttled(protocol),
        Err(Refused::Failed(e)) => {
            tracing::error!(%protocol, error = %e, "classification task failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
        }
    }
}

/// Why [`Backend::classify_all`] has no results.
#[derive(Debug)]
pub(crate) enum Refused {
    /// The queue is full (429, gRPC `RESOURCE_EXHAUSTED`); counted in the metrics.
    Throttled,
    /// The blocking task failed (panicked or was cancelled); the string says why.
    Failed(String),
}

impl Backend {
    /// Runs `task` on every image of a request, in order, on the blocking pool, behind the
    /// admission queue and the classification slots: the one path every REST route and
    /// gRPC method takes to the model.
    pub(crate) async fn classify_all(
        self: &Arc<Self>,
        task: Task,
        images: Vec<Result<BackendImage, ImageProblem>>,
    ) -> Result<Vec<Result<Answer, ImageProblem>>, Refused> {
        let Ok(_admitted) = self.admit.clone().try_acquire_owned() else {
            self.throttled.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::Throttled);
        };
        let Ok(_slot) = self.run.clone().acquire_owned().await else {
            return Err(Refused::Throttled);
        };
        let worker = self.clone();
        tokio::task::spawn_blocking(move || {
            images
                .into_iter()
                .map(|img| {
                    let img = img?;
                    let answer = match task {
                        Task::Labels => img.limit(worker.classifier.classify(
                            &img.bytes,
                            &worker.limits,
                            img.max_labels.max(1),
                        )?),
                        Task::Faces => worker.detect_faces(&img.bytes)?,
                    };
                    worker.images.fetch_add(1, Ordering::Relaxed);
                    Ok(answer)
                })
                .collect::<Vec<Result<Answer, ImageProblem>>>()
        })
        .await
        .map_err(|e| Refused::Failed(e.to_string()))
    }
}

/// 403 as AWS answers a request whose signature does not verify.
fn invalid_signature(message: &str) -> Response {
    let kind = "InvalidSignatureException";
    (
        StatusCode::FORBIDDEN,
        [
            ("content-type", crate::protocol::rekognition::CONTENT_TYPE),
            ("x-amzn-errortype", kind),
        ],
        serde_json::json!({"__type": kind, "Message": message}).to_string(),
    )
        .into_response()
}

impl Backend {
    /// Decodes one image and runs the face detector on it (which the caller checked is there).
    fn detect_faces(&self, bytes: &[u8]) -> Result<Answer, ImageProblem> {
        let detector = self
            .faces
            .as_ref()
            .ok_or_else(|| ImageProblem::Internal("no face detector is loaded".to_owned()))?;
        let decoded = codec::decode(bytes, &self.limits)
            .map_err(|e| ImageProblem::Undecodable(e.to_string()))?;
        let regions = detector
            .detect(&decoded.image)
            .map_err(ImageProblem::Internal)?;
        Ok(Answer::detections(regions))
    }
}

/// 429 in the API's own shape, with `retry-after`.
fn throttled(protocol: Protocol) -> Response {
    let mut response = protocol.render_throttled().into_response();
    response
        .headers_mut()
        .insert("retry-after", axum::http::HeaderValue::from_static("1"));
    response
}

async fn metrics(State(s): State<Arc<Backend>>) -> String {
    format!(
        "# HELP adacompress_backend_requests_total Requests answered by the local backend.\n\
         # TYPE adacompress_backend_requests_total counter\n\
         adacompress_backend_requests_total {}\n\
         # HELP adacompress_backend_images_total Images classified by the local backend.\n\
         # TYPE adacompress_backend_images_total counter\n\
         adacompress_backend_images_total {}\n\
         # HELP adacompress_backend_throttled_total Requests refused with 429 because the backend was saturated.\n\
         # TYPE adacompress_backend_throttled_total counter\n\
         adacompress_backend_throttled_total {}\n",
        s.requests(),
        s.images_classified(),
        s.throttled.load(Ordering::Relaxed)
    )
}
