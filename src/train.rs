//! `adacompress train` for the calibrated agent: label table → fit → checkpoint and
//! reports. (The paper's DQN and the bandit still train through
//! [`crate::learn::trainer`].)

use std::path::{Path, PathBuf};

use crate::action::ActionSet;
use crate::agent::checkpoint::BackboneInfo;
use crate::agent::{AdamConfig, Checkpoint, CheckpointError, Policy, StateKind, TrainingStats};
use crate::client::{CachedService, OpenError, ServiceSpec, VisionService};
use crate::codec::Limits;
use crate::learn::fit::{self, FitConfig, Fitted};
use crate::learn::photos_env::{self, EnvError, EnvSpec};
use crate::learn::table::{Spec, Table, TableError};
use crate::learn::trainer::{self, Algorithm, TrainConfig};
use crate::learn::{Accuracy, Reference, tune};
use crate::model::{ImageModel, ModelError};
use crate::photos::{PhotoError, Selection, Split};
use crate::progress::Progress;
use crate::report::{self, Chart, PALETTE, ReportError, Series};
use crate::store::StoreError;

/// Why training failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Table(#[from] TableError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Photos(#[from] PhotoError),
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A flag out of range or a combination that cannot work; the message names the flag.
    #[error("{0}")]
    Usage(String),
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

/// Everything `adacompress train` was asked (one field per flag of
/// `adacompress train --help`, which gives each flag's meaning and default).
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub service: ServiceSpec,
    pub photos: Selection,
    /// Checkpoint path; the curves go beside it.
    pub out: PathBuf,
    pub algorithm: Method,
    pub accuracy: Accuracy,
    pub reference: Reference,
    /// Weight of the size in the reward `acc − w·size/size_ref`.
    pub size_weight: f32,
    /// The top-1 agreement to aim for instead of a size weight.
    pub target_agreement: Option<f64>,
    pub feedback: Feedback,
    /// Random variants per training photo.
    pub augment: usize,
    /// Passes over the training photos; default per method.
    pub epochs: Option<usize>,
    /// Built-in action set name; default per method.
    pub actions: Option<String>,
    /// Backbone ONNX model and its input side.
    pub backbone: PathBuf,
    pub side: u32,
    pub seed: u64,
}

/// What to train on and where to write.
pub struct TrainJob<'a> {
    pub paths: &'a [PathBuf],
    /// Folder the photo names in reports are relative to.
    pub root: &'a Path,
    pub backbone: &'a ImageModel,
    /// The backbone file as the checkpoint should name it (relative to the checkpoint).
    pub backbone_file: PathBuf,
    pub actions: ActionSet,
    pub fit: FitConfig,
    pub out: &'a Path,
    pub seed: u64,
    /// Training variants per large photo (longest side ≥ [`AUGMENT_MIN_LONG`]).
    pub augment: usize,
}

/// `adacompress train`: trains the agent `opts.algorithm` names and writes the
/// checkpoint, its learning curve and (for a target agreement) the threshold curve.
pub async fn command(opts: TrainOptions) -> Result<(), TrainError> {
    let algorithm = match opts.algorithm {
        Method::Calibrated => return command_calibrated(opts).await,
        Method::Bandit => Algorithm::Bandit,
        Method::DqnPaper => Algorithm::DqnPaper,
    };
    let set_name = opts.actions.clone().unwrap_or_else(|| "paper".into());
    let actions = ActionSet::builtin(&set_name).ok_or_else(|| {
        TrainError::Usage(format!(
            "--actions must be `paper`, `scaled` or `uploads`, not `{set_name}`"
        ))
    })?;
    let backbone = ImageModel::load(&opts.backbone, opts.side)?;
    let (http, store, _local) = opts.service.open().await?;
    let service = CachedService::new(&http, &store);
    let paths = opts.photos.select(Split::Train)?;
    eprintln!(
        "training on {} photos from {} against {} ({} actions, {})",
        paths.len(),
        opts.photos.dir.display(),
        service.id(),
        actions.len(),
        algorithm.name()
    );
    let spec = EnvSpec {
        actions: actions.clone(),
        accuracy: opts.accuracy,
        reference: opts.reference,
        augment: opts.augment,
    };
    let env = photos_env::prepare(&paths, Some(&backbone), &service, spec).await?;

    let mut cfg = TrainConfig::new(algorithm);
    cfg.epochs = opts.epochs.unwrap_or(30);
    cfg.seed = opts.seed;
    cfg.size_weight = opts.size_weight;
    cfg.full_feedback = opts.feedback == Feedback::Full;
    if cfg.full_feedback && algorithm == Algorithm::DqnPaper {
        return Err(TrainError::Usage(
            "--feedback full needs --algorithm bandit (the DQN's stale targets are per taken action)".into(),
        ));
    }
    let mut policy = Policy::Greedy;
    if let Some(target) = opts.target_agreement {
        if !(0.0..=1.0).contains(&target) {
            return Err(TrainError::Usage(format!(
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
        let path = opts.out.with_extension("threshold.csv");
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

    let backbone_file = relative_to(&opts.backbone, opts.out.parent().unwrap_or(Path::new(".")));
    let previous = Checkpoint::read(&opts.out).map(|c| c.version).unwrap_or(0);
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
            accuracy: opts.accuracy.name().into(),
            reference: opts.reference.name().into(),
            size_weight: cfg.size_weight,
            images: env.photos.len(),
            steps: trained.learn_calls,
            final_train_reward: train_reward,
            service_requests: service.requests(),
            seed: opts.seed,
        },
    );
    let ckpt = Checkpoint { policy, ..ckpt };
    ckpt.write(&opts.out)?;
    let curve_csv = opts.out.with_extension("curve.csv");
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
    let curve_svg = opts.out.with_extension("curve.svg");
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
        opts.out.display(),
        ckpt.version,
        curve_csv.display(),
        curve_svg.display(),
        service.requests(),
        store.answer_count(service.id())?,
        opts.service.cache.display()
    );
    Ok(())
}

/// `adacompress train --algorithm calibrated` (the default).
async fn command_calibrated(opts: TrainOptions) -> Result<(), TrainError> {
    let set_name = opts.actions.clone().unwrap_or_else(|| "uploads".into());
    let actions = ActionSet::builtin(&set_name).ok_or_else(|| {
        TrainError::Usage(format!(
            "--actions must be `paper`, `scaled` or `uploads`, not `{set_name}`"
        ))
    })?;
    let target = opts.target_agreement.unwrap_or(0.97);
    if !(0.5..1.0).contains(&target) {
        return Err(TrainError::Usage(format!(
            "--target-agreement is a share between 0.5 and 1 (e.g. 0.97), not {target}"
        )));
    }
    let backbone = ImageModel::load(&opts.backbone, opts.side)?;
    let (http, store, _local) = opts.service.open().await?;
    let service = CachedService::new(&http, &store);
    let paths = opts.photos.select(Split::Train)?;
    eprintln!(
        "training the calibrated agent on {} photos from {} against {} ({} actions, target {:.1}% top-1)",
        paths.len(),
        opts.photos.dir.display(),
        service.id(),
        actions.len(),
        target * 100.0
    );
    let fit = crate::learn::fit::FitConfig {
        epochs: opts
            .epochs
            .unwrap_or(crate::learn::fit::FitConfig::default().epochs),
        seed: opts.seed,
        target,
        ..crate::learn::fit::FitConfig::default()
    };
    run(
        TrainJob {
            paths: &paths,
            root: &opts.photos.dir,
            backbone: &backbone,
            backbone_file: relative_to(&opts.backbone, opts.out.parent().unwrap_or(Path::new("."))),
            actions,
            fit,
            out: &opts.out,
            seed: opts.seed,
            augment: opts.augment,
        },
        &service,
    )
    .await?;
    Ok(())
}

/// `path` relative to `base` when it lies inside it; else as given (absolute when possible).
fn relative_to(path: &Path, base: &Path) -> PathBuf {
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (p, b) = (abs(path), abs(base));
    p.strip_prefix(&b).map(Path::to_path_buf).unwrap_or(p)
}

/// Photos at least this large get training variants: large genuine photos are the
/// scarce ones, and a crop of one is still a phone-sized photo.
pub const AUGMENT_MIN_LONG: u32 = 1600;

/// Builds the table, fits, writes the checkpoint (`out`), the threshold curve
/// (`out.threshold.csv`, `.svg`) and the fit summary (`out.fit.json`).
pub async fn run<S: VisionService + ?Sized>(
    job: TrainJob<'_>,
    service: &CachedService<'_, S>,
) -> Result<Fitted, TrainError> {
    let spec = Spec {
        actions: &job.actions,
        state: Some((job.backbone, StateKind::Compact)),
        limits: Limits::default(),
        augment: job.augment,
        augment_min_long: AUGMENT_MIN_LONG,
    };
    let mut bar = Progress::new("label table", job.paths.len() as u64);
    let table = Table::build(job.paths, job.root, &spec, service, |d, t| {
        bar.set(d as u64, t as u64)
    })
    .await?;
    bar.finish();
    eprintln!(
        "label table: {} photos (+{} training variants) × {} actions from {} sources ({}); the service answered {} new requests",
        table.rows.iter().filter(|r| !r.augmented).count(),
        table.rows.iter().filter(|r| r.augmented).count(),
        table.actions.len(),
        table.sources().len(),
        table.sources().join(", "),
        table.requests
    );
    let mut bar = Progress::new("fit", 1);
    let fitted = fit::fit(&table, &job.fit, |d, t| bar.set(d as u64, t as u64));
    bar.finish();
    let previous = Checkpoint::read(job.out).map(|c| c.version).unwrap_or(0);
    let ckpt = Checkpoint::new(
        previous + 1,
        &fitted.head,
        AdamConfig {
            lr: job.fit.lr,
            ..AdamConfig::default()
        },
        job.actions.clone(),
        BackboneInfo {
            file: job.backbone_file.clone(),
            sha256: job.backbone.sha256().to_string(),
            side: job.backbone.side(),
        },
        TrainingStats {
            algorithm: "calibrated".into(),
            service: service.id().to_string(),
            accuracy: "top1".into(),
            reference: "original".into(),
            size_weight: 0.0,
            images: table.rows.len(),
            steps: fitted.head.steps(),
            final_train_reward: fitted.chosen.agreement as f32,
            service_requests: service.requests(),
            seed: job.seed,
        },
    );
    let ckpt = Checkpoint {
        policy: fitted.policy.clone(),
        state: StateKind::Compact,
        ..ckpt
    };
    ckpt.write(job.out)?;
    write_reports(job.out, &fitted, job.fit.target)?;
    eprintln!(
        "held out by {} ({} photos): threshold {:.4}, agreement {:.1}% (95% lower bound {:.1}%, conformal risk bound {:.2}%), {:.3}× the original's bytes, {:.3}× the fallback pair {} ({:.1}% agreement)",
        fitted.folds,
        table.rows.iter().filter(|r| !r.augmented).count(),
        fitted.chosen.threshold,
        fitted.chosen.agreement * 100.0,
        fitted.agreement_lower_95 * 100.0,
        fitted.chosen.risk_bound * 100.0,
        fitted.chosen.size_ratio,
        fitted.chosen.vs_fallback,
        fitted.fallback,
        fitted.fallback_agreement * 100.0
    );
    for s in &fitted.by_source {
        eprintln!(
            "  source {:<14} {:>4} photos: agreement {:.1}%, {:.3}× original, {:.3}× fallback",
            s.source,
            s.photos,
            s.agreement * 100.0,
            s.size_ratio,
            s.vs_fallback
        );
    }
    eprintln!("wrote {} (version {})", job.out.display(), ckpt.version);
    Ok(fitted)
}

/// The fit's summary JSON and threshold curve (CSV and SVG) beside the checkpoint.
fn write_reports(out: &Path, fitted: &Fitted, target: f64) -> Result<(), ReportError> {
    #[derive(serde::Serialize)]
    struct Summary<'a> {
        target_top1_agreement: f64,
        folds: &'a str,
        fallback: String,
        fallback_agreement: f64,
        chosen: &'a fit::Candidate,
        agreement_lower_95: f64,
        by_source: &'a [fit::SourceResult],
    }
    report::write_json(
        &out.with_extension("fit.json"),
        &Summary {
            target_top1_agreement: target,
            folds: &fitted.folds,
            fallback: fitted.fallback.name(),
            fallback_agreement: fitted.fallback_agreement,
            chosen: &fitted.chosen,
            agreement_lower_95: fitted.agreement_lower_95,
            by_source: &fitted.by_source,
        },
    )?;
    let rows: Vec<Vec<String>> = fitted
        .curve
        .iter()
        .map(|c| {
            vec![
                format!("{:.4}", c.threshold),
                format!("{:.4}", c.agreement),
                format!("{:.5}", c.risk_bound),
                format!("{:.5}", c.size_ratio),
                format!("{:.4}", c.vs_fallback),
            ]
        })
        .collect();
    report::write_csv(
        &out.with_extension("threshold.csv"),
        &[
            "threshold",
            "heldout_agreement",
            "conformal_risk_bound",
            "size_ratio",
            "vs_fallback",
        ],
        &rows,
    )?;
    use crate::report::{Chart, PALETTE, Series};
    report::plot_svg(
        &out.with_extension("threshold.svg"),
        &Chart {
            title: format!(
                "Held-out agreement vs bytes by threshold (chosen {:.3})",
                fitted.chosen.threshold
            ),
            x_label: "uploaded bytes vs the fallback pair".into(),
            y_label: "held-out top-1 agreement (%)".into(),
            series: vec![
                Series {
                    name: "threshold sweep".into(),
                    points: fitted
                        .curve
                        .iter()
                        .map(|c| (c.vs_fallback, c.agreement * 100.0))
                        .collect(),
                    labels: vec![],
                    line: true,
                    color: PALETTE[0],
                },
                Series {
                    name: "chosen".into(),
                    points: vec![(fitted.chosen.vs_fallback, fitted.chosen.agreement * 100.0)],
                    labels: vec![format!("τ = {:.3}", fitted.chosen.threshold)],
                    line: false,
                    color: PALETTE[1],
                },
                Series {
                    name: format!("target {:.0}%", target * 100.0),
                    points: vec![(0.0, target * 100.0), (1.2, target * 100.0)],
                    labels: vec![],
                    line: true,
                    color: PALETTE[5],
                },
            ],
            y_range: None,
        },
    )
}
