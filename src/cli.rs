//! The command line: argument definitions and the code behind each subcommand.
//! `main.rs` only parses and dispatches here.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::action::{self, ActionSet};
use crate::agent::checkpoint::BackboneInfo;
use crate::agent::{
    Agent, Checkpoint, CheckpointError, DEFAULT_AGENT_SIDE, Policy, StateKind, TrainingStats,
};
use crate::backend::{self, Backend, BackendConfig};
use crate::client::{CachedService, HttpService, ServiceError, VisionService};
use crate::codec::{CodecError, Limits};
use crate::eval;
use crate::learn::photos_env::{EnvError, EnvSpec, PhotoEnv};
use crate::learn::trainer::{self, Algorithm, TrainConfig};
use crate::learn::tune;
use crate::learn::{Accuracy, Reference};
use crate::model::{ImageModel, ModelError};
use crate::photos::{self, PhotoError, Split};
use crate::progress::Progress;
use crate::protocol::Protocol;
use crate::report::{self, Chart, PALETTE, ReportError, Series};
use crate::store::{Store, StoreError};

/// adacompress: adaptive JPEG compression in front of cloud vision APIs.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the local vision backend: a real ONNX classifier behind cloud wire formats.
    Backend(BackendArgs),
    /// Train an agent against a vision service.
    Train(TrainArgs),
    /// Compare the agent, every fixed quality and the oracle on held-out photos.
    Eval(EvalArgs),
    /// Compress one image with the agent.
    Compress(CompressArgs),
    /// Time each stage of the request path per photo (run it on a release build).
    Bench(BenchArgs),
    /// Run the upload proxy daemon.
    Serve(ServeArgs),
    /// The whole system live on embedded defaults: backend + proxy in-process, sample photos
    /// through the proxy, a scenery change, estimate → retrain → recovery.
    Demo(DemoArgs),
    /// Exit 0 if a URL answers 200 (container HEALTHCHECK; slim images have no curl).
    Healthcheck(HealthcheckArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML config file (see config/adacompress.toml); without it, defaults + environment.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Proxy listener (overrides proxy.listen).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// Admin listener for /metrics, /healthz, /readyz, /agent (overrides proxy.admin_listen).
    #[arg(long)]
    pub admin_listen: Option<std::net::SocketAddr>,
    /// PROTOCOL=URL, repeatable (e.g. google=https://vision.googleapis.com, google=local).
    #[arg(long)]
    pub upstream: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Sample photos (objects/, street/, indoor/), from scripts/fetch_photos.sh.
    #[arg(long, default_value = "data/photos")]
    pub photos: PathBuf,
    /// The shipped agent.
    #[arg(long, default_value = "models/agent.json")]
    pub agent: PathBuf,
    /// Learned state folder; a fresh temporary one when not given.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Photos before the scenery change.
    #[arg(long, default_value_t = 230)]
    pub day: usize,
    /// Photos after it (darkened, noisy: night).
    #[arg(long, default_value_t = 300)]
    pub night: usize,
    /// Rolling window for the plot.
    #[arg(long, default_value_t = 20)]
    pub window: usize,
    /// Writes the figures here as JSON, with .csv and .svg beside it.
    #[arg(long, default_value = "eval-out/demo.json")]
    pub json: PathBuf,
    /// Proxy config to start from (estimator settings); listeners and upstreams are the demo's.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Do not start by learning the built-in backend on the day photos.
    #[arg(long)]
    pub no_warmup: bool,
}

/// `adacompress demo`.
pub async fn run_demo(args: DemoArgs) -> Result<(), CliError> {
    let base = crate::config::Config::load(args.config.as_deref(), std::env::vars())
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let fresh = args.state_dir.is_none();
    let state_dir = args.state_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("adacompress-demo-{}", std::process::id()))
    });
    if fresh {
        let _ = std::fs::remove_dir_all(&state_dir);
    }
    let cfg = crate::demo::DemoConfig {
        photos: args.photos,
        checkpoint: args.agent,
        state_dir: state_dir.clone(),
        day: args.day,
        night: args.night,
        window: args.window,
        base,
        warmup: !args.no_warmup,
        progress: true,
    };
    let report = crate::demo::run(cfg).await.map_err(CliError::Usage)?;
    print!("{}", crate::demo::table(&report));
    crate::demo::write_files(&report, &args.json, args.window)?;
    eprintln!(
        "wrote {} (+ .csv, .svg); learned state in {}",
        args.json.display(),
        state_dir.display()
    );
    Ok(())
}

#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// URL to GET.
    #[arg(long, default_value = "http://127.0.0.1:9090/healthz")]
    pub url: String,
    /// Seconds to wait.
    #[arg(long, default_value_t = 3.0)]
    pub timeout: f64,
}

/// The configuration `serve` runs with: file, then environment, then flags.
pub fn serve_config(args: &ServeArgs) -> Result<crate::config::Config, CliError> {
    let mut cfg = crate::config::Config::load(args.config.as_deref(), std::env::vars())
        .map_err(|e| CliError::Usage(e.to_string()))?;
    if let Some(a) = args.listen {
        cfg.proxy.listen = a;
    }
    if let Some(a) = args.admin_listen {
        cfg.proxy.admin_listen = a;
    }
    for u in &args.upstream {
        cfg.add_upstream_flag(u)
            .map_err(|e| CliError::Usage(e.to_string()))?;
    }
    cfg.check_resign()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(cfg)
}

/// `adacompress serve`: runs until SIGTERM/SIGINT, then drains and exits 0.
pub async fn run_serve(cfg: crate::config::Config) -> Result<(), CliError> {
    let resign =
        crate::proxy::resign_from_config(&cfg).map_err(|e| CliError::Usage(e.to_string()))?;
    let server = crate::proxy::server::start(cfg, resign)
        .await
        .map_err(|e| CliError::Usage(e.to_string()))?;
    shutdown_signal().await;
    tracing::info!("shutdown signal received; draining");
    server.shutdown().await;
    Ok(())
}

/// `adacompress healthcheck`.
pub async fn run_healthcheck(args: HealthcheckArgs) -> Result<(), CliError> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs_f64(args.timeout))
        .build()
        .map_err(|e| CliError::Io(e.to_string()))?;
    let resp = client
        .get(&args.url)
        .send()
        .await
        .map_err(|e| CliError::Io(format!("{}: {e}", args.url)))?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(CliError::Io(format!(
            "{} answered {}",
            args.url,
            resp.status()
        )))
    }
}

/// Everything that can go wrong in a command, each with a message naming what to fix.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Photos(#[from] PhotoError),
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error(transparent)]
    Train(#[from] crate::train::TrainError),
    #[error(transparent)]
    Bench(#[from] crate::bench::BenchError),
    #[error(transparent)]
    Table(#[from] crate::learn::table::TableError),
    #[error("{path}: {source}")]
    Codec { path: PathBuf, source: CodecError },
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Usage(String),
}

#[derive(Debug, Args)]
pub struct BackendArgs {
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

/// Where the service is and how to talk to it.
#[derive(Debug, Args, Clone)]
pub struct ServiceArgs {
    /// Base URL of the vision service (e.g. http://127.0.0.1:8081), or `local` /
    /// `local:MODEL.onnx` to start the built-in backend in-process on loopback.
    #[arg(long, default_value = "local")]
    pub upstream: String,
    /// Wire format: google, rekognition, baidu, facepp, azure, kserve or torchserve.
    #[arg(long, default_value = "google")]
    pub protocol: Protocol,
    /// Cache key for the service's answers; default `protocol@upstream`. Change it
    /// when a different model answers at the same URL.
    #[arg(long)]
    pub service_id: Option<String>,
    /// SQLite answer cache.
    #[arg(long, default_value = "data/answers.sqlite")]
    pub cache: PathBuf,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
}

/// Which photos.
#[derive(Debug, Args, Clone)]
pub struct PhotoArgs {
    /// Folder of photos (searched recursively).
    #[arg(long)]
    pub photos: PathBuf,
    /// Percentage of photos (by hash of the file name) in the test split.
    #[arg(long, default_value_t = photos::DEFAULT_TEST_PERCENT)]
    pub test_percent: u8,
    /// Use at most this many photos (after the split), for quick runs.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Only photos from these sources (the folders they sit in), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub sources: Vec<String>,
    /// Leave out photos from these sources (e.g. the one held out for a cross-source test).
    #[arg(long, value_delimiter = ',')]
    pub exclude_sources: Vec<String>,
}

/// How `train` learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// Probability of agreement per action from the compact state, threshold by
    /// conformal risk control, fallback to the best fixed pair (the default).
    Calibrated,
    /// Contextual bandit on the paper's state (γ = 0).
    Bandit,
    /// The paper's DQN.
    DqnPaper,
}

/// Which rewards training learns from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Feedback {
    Bandit,
    Full,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub service: ServiceArgs,
    #[command(flatten)]
    pub photos: PhotoArgs,
    /// Where to write the checkpoint (the learning curve goes beside it).
    #[arg(long, default_value = "models/agent.json")]
    pub out: PathBuf,
    /// Learning rule.
    #[arg(long, value_enum, default_value = "calibrated")]
    pub algorithm: Method,
    /// Agreement rule in the reward.
    #[arg(long, value_enum, default_value = "top1")]
    pub accuracy: Accuracy,
    /// Reference answer: the original's (default) or Q75's (the paper's).
    #[arg(long, value_enum, default_value = "original")]
    pub reference: Reference,
    /// Weight `w` of the size in the reward `acc − w·size/size_ref` (paper: 1).
    /// Lower values buy agreement with bytes.
    #[arg(long, default_value_t = 1.0)]
    pub size_weight: f32,
    /// Instead of a size weight: the top-1 agreement to aim for (e.g. 0.97). The
    /// head then predicts each action's chance of agreeing, and the agent takes the
    /// cheapest action whose chance reaches a threshold tuned by cross-validation.
    #[arg(long)]
    pub target_agreement: Option<f64>,
    /// Which rewards to learn from: `bandit` (the taken action's only, as online)
    /// or `full` (every action's for each photo: more requests, better use of photos).
    #[arg(long, value_enum, default_value = "bandit")]
    pub feedback: Feedback,
    /// Random variants (crop, scale, exposure, camera quality) added per training photo.
    #[arg(long, default_value_t = 0)]
    pub augment: usize,
    /// Passes over the training photos (default: 30 for the bandit and DQN, 120 over
    /// every photo × action for the calibrated head).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Action set: uploads (keep + 8 sides × 5 qualities; calibrated's default), paper
    /// (keep + q5…q95; the bandit's and DQN's default) or scaled.
    #[arg(long)]
    pub actions: Option<String>,
    /// Backbone ONNX model for the agent's features.
    #[arg(long, default_value = "models/efficientnet-lite0.onnx")]
    pub backbone: PathBuf,
    /// Backbone input side.
    #[arg(long, default_value_t = DEFAULT_AGENT_SIDE)]
    pub side: u32,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub service: ServiceArgs,
    #[command(flatten)]
    pub photos: PhotoArgs,
    /// Agent checkpoint to evaluate; without it only fixed qualities and the oracle.
    #[arg(long)]
    pub agent: Option<PathBuf>,
    /// Which split to evaluate on.
    #[arg(long, value_enum, default_value = "test")]
    pub split: Split,
    /// Reference answer.
    #[arg(long, value_enum, default_value = "original")]
    pub reference: Reference,
    /// Agreement the "best fixed quality" must reach.
    #[arg(long, default_value_t = 0.97)]
    pub target_agreement: f64,
    /// JSON report (stable fields).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Folder for CSV files and the plot; default: next to --json, else `eval-out`.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Name of the workload in reports (default: the photo folder's name).
    #[arg(long)]
    pub workload: Option<String>,
    /// Without --agent: the action set whose fixed pairs and oracle to report
    /// (`uploads` reports every max side × quality; `paper` the paper's qualities).
    #[arg(long, default_value = "paper")]
    pub actions: String,
}

impl EvalArgs {
    /// `--out-dir`, else the folder of `--json`, else `eval-out`.
    fn out_dir(&self) -> PathBuf {
        self.out_dir.clone().unwrap_or_else(|| {
            self.json
                .as_ref()
                .and_then(|j| j.parent().map(Path::to_path_buf))
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or_else(|| PathBuf::from("eval-out"))
        })
    }
}

#[derive(Debug, Args)]
pub struct CompressArgs {
    /// Input image (JPEG, PNG or WebP).
    pub input: PathBuf,
    /// Output path.
    pub output: PathBuf,
    /// Agent checkpoint.
    #[arg(long, default_value = "models/agent.json")]
    pub agent: PathBuf,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Photos to time.
    #[arg(required = true)]
    pub photos: Vec<PathBuf>,
    /// Backbone ONNX model.
    #[arg(long, default_value = "models/efficientnet-lite0.onnx")]
    pub backbone: PathBuf,
    /// Backbone input sides to time (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "160,128,224")]
    pub sides: Vec<u32>,
    /// Timed runs per stage (after one warm-up).
    #[arg(long, default_value_t = 25)]
    pub runs: usize,
    /// Output path prefix: writes PREFIX.md, PREFIX.csv and PREFIX.json.
    #[arg(long, default_value = "docs/bench/timing")]
    pub out: PathBuf,
    /// Instead of the stage timings: the agent's whole request path (this checkpoint)
    /// against a fixed-pair proxy's (`--fixed`), per photo; folders are searched.
    #[arg(long)]
    pub agent: Option<PathBuf>,
    /// The fixed pair the agent's path is compared with.
    #[arg(long, default_value = "q85@768")]
    pub fixed: String,
}

/// `adacompress bench`.
pub fn run_bench(args: BenchArgs) -> Result<(), CliError> {
    if args.runs < 2 {
        return Err(CliError::Usage(format!(
            "--runs must be at least 2, not {}",
            args.runs
        )));
    }
    if let Some(agent_path) = &args.agent {
        return run_bench_paths(&args, agent_path);
    }
    let mut bar = Progress::new("bench", args.photos.len() as u64);
    let rows = crate::bench::run(
        &args.photos,
        &args.backbone,
        &args.sides,
        args.runs,
        |d, t| bar.set(d as u64, t as u64),
    )?;
    bar.finish();
    let md = crate::bench::markdown(&rows);
    print!("{md}");
    crate::bench::write_stages(&args.out, &rows, &md)?;
    Ok(())
}

/// `adacompress bench --agent`: the agent's request path against the fixed pair's.
fn run_bench_paths(args: &BenchArgs, agent_path: &Path) -> Result<(), CliError> {
    let agent = Agent::load(agent_path, None)?;
    let fixed = action::Action::parse(&args.fixed).ok_or_else(|| {
        CliError::Usage(format!(
            "--fixed must be an action like q85@768, not `{}`",
            args.fixed
        ))
    })?;
    let mut photos_list = Vec::new();
    for p in &args.photos {
        if p.is_dir() {
            photos_list.extend(photos::list(p)?);
        } else {
            photos_list.push(p.clone());
        }
    }
    let mut bar = Progress::new("bench paths", photos_list.len() as u64);
    let rows = crate::bench::paths(&photos_list, &agent, &fixed, args.runs, |d, t| {
        bar.set(d as u64, t as u64)
    })?;
    bar.finish();
    let md = crate::bench::paths_markdown(
        &rows,
        &args.fixed,
        &agent_path.display().to_string(),
        args.runs,
    );
    print!("{md}");
    crate::bench::write_paths(&args.out, &rows, &md)?;
    Ok(())
}

/// The service `--upstream` names; `local[:MODEL]` starts the built-in backend in this
/// process (stopped when the returned guard is dropped), identified in the answer cache
/// by its model's file name and hash.
async fn open_service(
    args: &ServiceArgs,
) -> Result<(HttpService, Store, Option<backend::LocalBackend>), CliError> {
    let (url, default_id, local) =
        if args.upstream == "local" || args.upstream.starts_with("local:") {
            let model = args.upstream.strip_prefix("local:").map_or_else(
                || PathBuf::from("models/efficientnet-lite0.onnx"),
                PathBuf::from,
            );
            let local = backend::start_local(&model).await.map_err(|e| match e {
                backend::LocalError::Model { source, .. } => CliError::Model(source),
                backend::LocalError::Io(e) => {
                    CliError::Io(format!("cannot start the local backend: {e}"))
                }
            })?;
            eprintln!(
                "started the local vision backend ({}) on {}",
                model.display(),
                local.addr
            );
            let id = format!("{}@{}", args.protocol, local.id);
            (local.url(), Some(id), Some(local))
        } else {
            (args.upstream.clone(), None, None)
        };
    let mut http = HttpService::new(args.protocol, &url, Duration::from_secs(args.timeout))?;
    if let Some(id) = args.service_id.as_ref().or(default_id.as_ref()) {
        http = http.with_id(id);
    }
    let store = Store::open(&args.cache)?;
    Ok((http, store, local))
}

fn select_photos(args: &PhotoArgs, split: Split) -> Result<Vec<PathBuf>, CliError> {
    let mut list = photos::select(&args.photos, split, args.test_percent)?;
    list.retain(|p| {
        let source = crate::learn::table::source_of(p, &args.photos);
        (args.sources.is_empty() || args.sources.contains(&source))
            && !args.exclude_sources.contains(&source)
    });
    if list.is_empty() {
        return Err(CliError::Usage(format!(
            "no photos under {} match --sources {:?} / --exclude-sources {:?}",
            args.photos.display(),
            args.sources,
            args.exclude_sources
        )));
    }
    if let Some(n) = args.limit {
        list.truncate(n);
    }
    Ok(list)
}

/// `adacompress backend`.
pub async fn run_backend(args: BackendArgs) -> Result<(), CliError> {
    let mut cfg = BackendConfig::new(args.model.clone());
    if let Some(c) = args.classes {
        cfg.classes = c;
    }
    cfg.side = args.side;
    if let Some(c) = args.concurrency {
        cfg.concurrency = c;
    }
    cfg.queue = args.queue;
    if args.aws_verify {
        let verifier = crate::sigv4::Verifier::from_env()
            .map_err(|e| CliError::Usage(format!("--aws-verify: {e}")))?;
        tracing::info!(
            region = %verifier.region,
            "checking SigV4 signatures on the Rekognition route"
        );
        cfg.aws_verify = Some(verifier);
    }
    // Face++ detect is served by BlazeFace when its model sits beside the classifier.
    let faces = args.model.with_file_name("blazeface-front-128.onnx");
    if faces.exists() {
        cfg.faces = Some(Arc::new(crate::backend::faces::FaceDetector::load(&faces)?));
    }
    let state = Arc::new(Backend::load(&cfg)?);
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| CliError::Io(format!("cannot listen on {} (--listen): {e}", args.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::Io(e.to_string()))?;
    tracing::info!(
        %addr,
        model = %args.model.display(),
        side = state.classifier().model.side(),
        "local vision backend listening (google: POST /v1/images:annotate, rekognition: POST /)"
    );
    backend::serve(listener, state, shutdown_signal())
        .await
        .map_err(|e| CliError::Io(e.to_string()))
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

/// `adacompress train`.
pub async fn run_train(args: TrainArgs) -> Result<(), CliError> {
    let algorithm = match args.algorithm {
        Method::Calibrated => return run_train_calibrated(args).await,
        Method::Bandit => Algorithm::Bandit,
        Method::DqnPaper => Algorithm::DqnPaper,
    };
    let set_name = args.actions.clone().unwrap_or_else(|| "paper".into());
    let actions = ActionSet::builtin(&set_name).ok_or_else(|| {
        CliError::Usage(format!(
            "--actions must be `paper`, `scaled` or `uploads`, not `{set_name}`"
        ))
    })?;
    let backbone = ImageModel::load(&args.backbone, args.side)?;
    let (http, store, _local) = open_service(&args.service).await?;
    let service = CachedService::new(&http, &store);
    let paths = select_photos(&args.photos, Split::Train)?;
    eprintln!(
        "training on {} photos from {} against {} ({} actions, {})",
        paths.len(),
        args.photos.photos.display(),
        service.id(),
        actions.len(),
        algorithm.name()
    );
    let spec = EnvSpec {
        actions: actions.clone(),
        accuracy: args.accuracy,
        reference: args.reference,
        augment: args.augment,
    };
    let env = prepare(&paths, Some(&backbone), &service, spec).await?;

    let mut cfg = TrainConfig::new(algorithm);
    cfg.epochs = args.epochs.unwrap_or(30);
    cfg.seed = args.seed;
    cfg.size_weight = args.size_weight;
    cfg.full_feedback = args.feedback == Feedback::Full;
    if cfg.full_feedback && algorithm == Algorithm::DqnPaper {
        return Err(CliError::Usage(
            "--feedback full needs --algorithm bandit (the DQN's stale targets are per taken action)".into(),
        ));
    }
    let mut policy = Policy::Greedy;
    if let Some(target) = args.target_agreement {
        if !(0.0..=1.0).contains(&target) {
            return Err(CliError::Usage(format!(
                "--target-agreement is a share between 0 and 1 (e.g. 0.97), not {target}"
            )));
        }
        // The head predicts agreement; the threshold trades it against bytes.
        cfg.size_weight = 0.0;
        let mut bar = Progress::new("threshold", tune::FOLDS as u64);
        let choice =
            tune::choose_threshold(&env, &cfg, target, |d, t| bar.set(d as u64, t as u64)).await?;
        bar.finish();
        let rows: Vec<Vec<String>> = choice
            .candidates
            .iter()
            .map(|c| {
                vec![
                    format!("{:.3}", c.threshold),
                    format!("{:.4}", c.agreement),
                    format!("{:.4}", c.size_ratio),
                ]
            })
            .collect();
        let path = args.out.with_extension("threshold.csv");
        report::write_csv(
            &path,
            &["threshold", "cv_agreement", "cv_size_ratio"],
            &rows,
        )?;
        eprintln!(
            "threshold {:.3}: cross-validated agreement {:.1}% at {:.3}× the original's bytes (target {:.1}%; curve in {})",
            choice.chosen.threshold,
            choice.chosen.agreement * 100.0,
            choice.chosen.size_ratio,
            target * 100.0,
            path.display()
        );
        policy = choice.policy;
    }

    let mut bar = Progress::new("train", (env.photos.len() * cfg.epochs) as u64);
    let trained = trainer::train(&env, actions.len(), &cfg, |d, t| bar.set(d, t)).await?;
    bar.finish();
    // The reward of the policy the checkpoint will actually use.
    let train_reward = trainer::policy_reward(&env, &trained.head, cfg.size_weight, |q, f| {
        policy.decide(q, f, &actions)
    })
    .await?;
    let random_reward = trainer::random_reward(&env, actions.len(), cfg.size_weight).await?;
    eprintln!(
        "mean reward on the training photos: agent {train_reward:.3}, random policy {random_reward:.3} (w = {})",
        cfg.size_weight
    );

    let backbone_file = relative_to(&args.backbone, args.out.parent().unwrap_or(Path::new(".")));
    let previous = Checkpoint::read(&args.out).map(|c| c.version).unwrap_or(0);
    let ckpt = Checkpoint::new(
        previous + 1,
        &trained.head,
        cfg.adam,
        actions,
        BackboneInfo {
            file: backbone_file,
            sha256: backbone.sha256().to_string(),
            side: backbone.side(),
        },
        TrainingStats {
            algorithm: algorithm.name().into(),
            service: service.id().to_string(),
            accuracy: args.accuracy.name().into(),
            reference: args.reference.name().into(),
            size_weight: cfg.size_weight,
            images: env.photos.len(),
            steps: trained.learn_calls,
            final_train_reward: train_reward,
            service_requests: service.requests(),
            seed: args.seed,
        },
    );
    let ckpt = Checkpoint { policy, ..ckpt };
    ckpt.write(&args.out)?;
    let curve_csv = args.out.with_extension("curve.csv");
    let rows: Vec<Vec<String>> = trained
        .curve
        .iter()
        .map(|p| {
            vec![
                p.step.to_string(),
                p.epoch.to_string(),
                format!("{:.4}", p.epsilon),
                p.action.to_string(),
                format!("{:.4}", p.reward),
                format!("{:.4}", p.reward_avg100),
                format!("{:.5}", p.loss),
            ]
        })
        .collect();
    report::write_csv(
        &curve_csv,
        &[
            "step",
            "epoch",
            "epsilon",
            "action",
            "reward",
            "reward_avg100",
            "loss",
        ],
        &rows,
    )?;
    let curve_svg = args.out.with_extension("curve.svg");
    report::plot_svg(
        &curve_svg,
        &Chart {
            title: format!(
                "Learning curve ({}, w = {})",
                algorithm.name(),
                cfg.size_weight
            ),
            x_label: "step".into(),
            y_label: "reward (mean of last 100 steps)".into(),
            series: vec![
                Series {
                    name: "reward, mean of last 100".into(),
                    // At most ~1000 points: the plot stays light, the CSV keeps every step.
                    points: trained
                        .curve
                        .iter()
                        .step_by(trained.curve.len().div_ceil(1000).max(1))
                        .map(|p| (p.step as f64, f64::from(p.reward_avg100)))
                        .collect(),
                    labels: vec![],
                    line: true,
                    color: PALETTE[0],
                },
                Series {
                    name: "random policy".into(),
                    points: vec![
                        (1.0, f64::from(random_reward)),
                        (trained.curve.len().max(2) as f64, f64::from(random_reward)),
                    ],
                    labels: vec![],
                    line: true,
                    color: PALETTE[5],
                },
            ],
            y_range: None,
        },
    )?;
    eprintln!(
        "wrote {} (version {}), {} and {}; the service answered {} requests ({} cached answers in {})",
        args.out.display(),
        ckpt.version,
        curve_csv.display(),
        curve_svg.display(),
        service.requests(),
        store.answer_count(service.id())?,
        args.service.cache.display()
    );
    Ok(())
}

/// `adacompress train --algorithm calibrated` (the default).
async fn run_train_calibrated(args: TrainArgs) -> Result<(), CliError> {
    let set_name = args.actions.clone().unwrap_or_else(|| "uploads".into());
    let actions = ActionSet::builtin(&set_name).ok_or_else(|| {
        CliError::Usage(format!(
            "--actions must be `paper`, `scaled` or `uploads`, not `{set_name}`"
        ))
    })?;
    let target = args.target_agreement.unwrap_or(0.97);
    if !(0.5..1.0).contains(&target) {
        return Err(CliError::Usage(format!(
            "--target-agreement is a share between 0.5 and 1 (e.g. 0.97), not {target}"
        )));
    }
    let backbone = ImageModel::load(&args.backbone, args.side)?;
    let (http, store, _local) = open_service(&args.service).await?;
    let service = CachedService::new(&http, &store);
    let paths = select_photos(&args.photos, Split::Train)?;
    eprintln!(
        "training the calibrated agent on {} photos from {} against {} ({} actions, target {:.1}% top-1)",
        paths.len(),
        args.photos.photos.display(),
        service.id(),
        actions.len(),
        target * 100.0
    );
    let fit = crate::learn::fit::FitConfig {
        epochs: args
            .epochs
            .unwrap_or(crate::learn::fit::FitConfig::default().epochs),
        seed: args.seed,
        target,
        ..crate::learn::fit::FitConfig::default()
    };
    crate::train::run(
        crate::train::TrainJob {
            paths: &paths,
            root: &args.photos.photos,
            backbone: &backbone,
            backbone_file: relative_to(&args.backbone, args.out.parent().unwrap_or(Path::new("."))),
            actions,
            fit,
            out: &args.out,
            seed: args.seed,
            augment: args.augment,
        },
        &service,
    )
    .await?;
    Ok(())
}

async fn prepare<'s, S: VisionService + ?Sized>(
    paths: &[PathBuf],
    backbone: Option<&ImageModel>,
    service: &'s CachedService<'s, S>,
    spec: EnvSpec,
) -> Result<PhotoEnv<'s, S>, CliError> {
    let mut bar = Progress::new("prepare", (paths.len() * (1 + spec.augment)) as u64);
    let env = PhotoEnv::prepare(paths, backbone, service, spec, |d, t| {
        bar.set(d as u64, t as u64)
    })
    .await?;
    bar.finish();
    Ok(env)
}

/// `path` relative to `base` when it lies inside it; else as given (absolute when possible).
fn relative_to(path: &Path, base: &Path) -> PathBuf {
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (p, b) = (abs(path), abs(base));
    p.strip_prefix(&b).map(Path::to_path_buf).unwrap_or(p)
}

/// `adacompress eval`.
pub async fn run_eval(args: EvalArgs) -> Result<(), CliError> {
    let agent = match &args.agent {
        Some(p) => Some(Agent::load(p, None)?),
        None => None,
    };
    let compact = agent
        .as_ref()
        .map_or(args.actions == "uploads", |a| a.state == StateKind::Compact);
    if compact {
        return run_eval_workload(args, agent).await;
    }
    // Without an agent no features are needed.
    let backbone = agent.as_ref().map(|a| &a.backbone);
    let actions = agent
        .as_ref()
        .map_or_else(ActionSet::paper, |a| a.actions.clone());
    let (http, store, _local) = open_service(&args.service).await?;
    let service = CachedService::new(&http, &store);
    let paths = select_photos(&args.photos, args.split)?;
    eprintln!(
        "evaluating on {} photos ({:?} split) against {}",
        paths.len(),
        args.split,
        service.id()
    );
    let spec = EnvSpec {
        actions,
        accuracy: Accuracy::Top1,
        reference: args.reference,
        augment: 0,
    };
    let env = prepare(&paths, backbone, &service, spec).await?;
    let mut bar = Progress::new("eval", env.photos.len() as u64);
    let mut rep = eval::evaluate(&env, agent.as_ref(), args.target_agreement, |d, t| {
        bar.set(d as u64, t as u64)
    })
    .await?;
    bar.finish();
    rep.service = service.id().to_string();
    println!("{}", rep.table());
    let out_dir = args.out_dir();
    rep.write(&out_dir, args.json.as_deref())?;
    eprintln!(
        "wrote {}eval-summary.csv, eval-photos.csv and eval.svg in {}; the service answered {} requests",
        args.json
            .as_ref()
            .map_or(String::new(), |j| format!("{}, ", j.display())),
        out_dir.display(),
        rep.service_requests
    );
    Ok(())
}

/// `adacompress eval` for a calibrated agent (or `--actions uploads`): the label table
/// of the selected photos, every fixed pair, the oracle and the agent.
async fn run_eval_workload(args: EvalArgs, agent: Option<Agent>) -> Result<(), CliError> {
    let actions = match &agent {
        Some(a) => a.actions.clone(),
        None => ActionSet::uploads(),
    };
    let (http, store, _local) = open_service(&args.service).await?;
    let service = CachedService::new(&http, &store);
    let paths = select_photos(&args.photos, args.split)?;
    let workload = args
        .workload
        .clone()
        .unwrap_or_else(|| crate::learn::photos_env::display_name(&args.photos.photos));
    eprintln!(
        "evaluating on {} photos ({:?} split, workload {workload}) against {}",
        paths.len(),
        args.split,
        service.id()
    );
    let spec = crate::learn::table::Spec {
        actions: &actions,
        state: agent.as_ref().map(|a| (&a.backbone, a.state)),
        limits: Limits::default(),
        augment: 0,
        augment_min_long: u32::MAX,
    };
    let mut bar = Progress::new("label table", paths.len() as u64);
    let table =
        crate::learn::table::Table::build(&paths, &args.photos.photos, &spec, &service, |d, t| {
            bar.set(d as u64, t as u64)
        })
        .await?;
    bar.finish();
    let rep = crate::eval::workload::evaluate(
        &workload,
        &table,
        agent.as_ref().map(|a| (&a.head, &a.policy)),
        args.target_agreement,
    );
    println!("{}", rep.table());
    let out_dir = args.out_dir();
    rep.write(&out_dir, args.json.as_deref(), &table)?;
    eprintln!(
        "wrote {workload}-summary.csv, {workload}-photos.csv and {workload}.svg in {}; the service answered {} new requests",
        out_dir.display(),
        table.requests
    );
    Ok(())
}

/// `adacompress compress`.
pub fn run_compress(args: CompressArgs) -> Result<(), CliError> {
    let agent = Agent::load(&args.agent, None)?;
    let original = std::fs::read(&args.input)
        .map_err(|e| CliError::Io(format!("cannot read {}: {e}", args.input.display())))?;
    let codec_err = |source| CliError::Codec {
        path: args.input.clone(),
        source,
    };
    let mut source = action::Source::new(&original, &Limits::default()).map_err(codec_err)?;
    let state = agent.observe(&mut source).map_err(|e| match e {
        crate::agent::StateError::Codec(source) => CliError::Codec {
            path: args.input.clone(),
            source,
        },
        crate::agent::StateError::Model(m) => CliError::Model(m),
    })?;
    let chosen = agent.actions.actions[agent.decide(&state)];
    let applied = source
        .apply(&chosen, agent.actions.encoder)
        .map_err(codec_err)?;
    std::fs::write(&args.output, &applied.bytes)
        .map_err(|e| CliError::Io(format!("cannot write {}: {e}", args.output.display())))?;
    println!(
        "{}: action {}{}, {} → {} bytes ({:.1}%)",
        args.input.display(),
        chosen,
        if applied.original && chosen.quality.is_some() {
            " (re-encode was not smaller: original kept)"
        } else {
            ""
        },
        original.len(),
        applied.bytes.len(),
        100.0 * applied.bytes.len() as f64 / original.len().max(1) as f64
    );
    Ok(())
}
