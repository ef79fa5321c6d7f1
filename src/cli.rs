//! The command line: clap's argument definitions and the dispatch from each
//! subcommand to the library module that owns its work and its reports. Nothing in
//! the library imports this module; `main.rs` parses, sets up logging and calls [`run`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::agent::DEFAULT_AGENT_SIDE;
use crate::client::ServiceSpec;
use crate::learn::{Accuracy, Reference};
use crate::photos::{self, Selection, Split};
use crate::protocol::Protocol;
use crate::train::{Feedback, Method};

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
    Backend(crate::backend::BackendOptions),
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
    /// Replay the live pair learner over a table of the cloud's answers, over many seeds.
    Replay(crate::learn::replay::ReplayOptions),
    /// The whole system on embedded defaults: backend + proxy, day then night uploads, live pair.
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
    /// The shipped agent (a calibrated checkpoint: the demo shows the live pair).
    #[arg(long, default_value = "models/agent-calibrated.json")]
    pub agent: PathBuf,
    /// Learned state folder; a fresh temporary one when not given.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Phone-like uploads (made from the sample photos) before the scenery change.
    #[arg(long, default_value_t = 300)]
    pub day: usize,
    /// Uploads after it (darkened, noisy: night).
    #[arg(long, default_value_t = 400)]
    pub night: usize,
    /// Rolling window for the plot.
    #[arg(long, default_value_t = 20)]
    pub window: usize,
    /// Writes the figures here as JSON, with .csv and .svg beside it.
    #[arg(long, default_value = "eval-out/demo.json")]
    pub json: PathBuf,
    /// Proxy config to start from (its `[pair]` settings); listeners, upstreams, agent and
    /// state folder are the demo's.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Learn at the config's `[pair]` settings (slower: hundreds of uploads before a pair is
    /// certified) instead of the demo's faster ones.
    #[arg(long)]
    pub shipped_learning: bool,
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

/// A command's failure, as the module that owns the command reports it.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Backend(#[from] crate::backend::RunError),
    #[error(transparent)]
    Train(#[from] crate::train::TrainError),
    #[error(transparent)]
    Eval(#[from] crate::eval::EvalError),
    #[error(transparent)]
    Compress(#[from] crate::compress_file::CompressError),
    #[error(transparent)]
    Bench(#[from] crate::bench::BenchError),
    #[error(transparent)]
    Serve(#[from] crate::proxy::server::RunError),
    #[error(transparent)]
    Demo(#[from] crate::demo::DemoError),
    #[error(transparent)]
    Replay(#[from] crate::learn::replay::ReplayError),
    #[error(transparent)]
    Healthcheck(#[from] crate::proxy::admin::HealthcheckError),
}

/// The configuration `serve` runs with: file, then environment, then flags.
pub fn serve_config(a: &ServeArgs) -> Result<crate::config::Config, CliError> {
    let server = crate::proxy::server::serve_config;
    Ok(server(
        a.config.as_deref(),
        a.listen,
        a.admin_listen,
        &a.upstream,
    )?)
}

/// Runs `command`; `serve` with `serve_config`, which `main` built first for logging.
pub async fn run(command: Command, serve: Option<crate::config::Config>) -> Result<(), CliError> {
    match command {
        Command::Backend(a) => crate::backend::command(a).await?,
        Command::Train(a) => crate::train::command(a.into()).await?,
        Command::Eval(a) => crate::eval::command(a.into()).await?,
        Command::Compress(a) => crate::compress_file::run(&a.input, &a.output, &a.agent)?,
        Command::Bench(a) => crate::bench::command(a.into())?,
        Command::Serve(a) => {
            let cfg = match serve {
                Some(cfg) => cfg,
                None => serve_config(&a)?,
            };
            crate::proxy::server::run(cfg).await?;
        }
        Command::Healthcheck(a) => crate::proxy::admin::healthcheck(&a.url, a.timeout).await?,
        Command::Demo(a) => crate::demo::command(a.into()).await?,
        Command::Replay(a) => crate::learn::replay::command(a)?,
    }
    Ok(())
}

impl From<ServiceArgs> for ServiceSpec {
    fn from(a: ServiceArgs) -> ServiceSpec {
        ServiceSpec {
            upstream: a.upstream,
            protocol: a.protocol,
            service_id: a.service_id,
            cache: a.cache,
            timeout: a.timeout,
        }
    }
}

impl From<PhotoArgs> for Selection {
    fn from(a: PhotoArgs) -> Selection {
        Selection {
            dir: a.photos,
            test_percent: a.test_percent,
            limit: a.limit,
            sources: a.sources,
            exclude_sources: a.exclude_sources,
        }
    }
}

impl From<TrainArgs> for crate::train::TrainOptions {
    fn from(a: TrainArgs) -> Self {
        crate::train::TrainOptions {
            service: a.service.into(),
            photos: a.photos.into(),
            out: a.out,
            algorithm: a.algorithm,
            accuracy: a.accuracy,
            reference: a.reference,
            size_weight: a.size_weight,
            target_agreement: a.target_agreement,
            feedback: a.feedback,
            augment: a.augment,
            epochs: a.epochs,
            actions: a.actions,
            backbone: a.backbone,
            side: a.side,
            seed: a.seed,
        }
    }
}

impl From<EvalArgs> for crate::eval::EvalOptions {
    fn from(a: EvalArgs) -> Self {
        crate::eval::EvalOptions {
            service: a.service.into(),
            photos: a.photos.into(),
            agent: a.agent,
            split: a.split,
            reference: a.reference,
            target_agreement: a.target_agreement,
            json: a.json,
            out_dir: a.out_dir,
            workload: a.workload,
            actions: a.actions,
        }
    }
}

impl From<BenchArgs> for crate::bench::BenchOptions {
    fn from(a: BenchArgs) -> Self {
        crate::bench::BenchOptions {
            photos: a.photos,
            backbone: a.backbone,
            sides: a.sides,
            runs: a.runs,
            out: a.out,
            agent: a.agent,
            fixed: a.fixed,
        }
    }
}

impl From<DemoArgs> for crate::demo::DemoOptions {
    fn from(a: DemoArgs) -> Self {
        crate::demo::DemoOptions {
            photos: a.photos,
            agent: a.agent,
            state_dir: a.state_dir,
            day: a.day,
            night: a.night,
            window: a.window,
            json: a.json,
            config: a.config,
            shipped_learning: a.shipped_learning,
        }
    }
}
