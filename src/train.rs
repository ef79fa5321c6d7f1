//! `adacompress train` for the calibrated agent: label table → fit → checkpoint and
//! reports. (The paper's DQN and the bandit still train through
//! [`crate::learn::trainer`].)

use std::path::{Path, PathBuf};

use crate::action::ActionSet;
use crate::agent::checkpoint::BackboneInfo;
use crate::agent::{AdamConfig, Checkpoint, CheckpointError, StateKind, TrainingStats};
use crate::client::{CachedService, VisionService};
use crate::codec::Limits;
use crate::learn::fit::{self, FitConfig, Fitted};
use crate::learn::table::{Spec, Table, TableError};
use crate::model::ImageModel;
use crate::progress::Progress;
use crate::report::{self, ReportError};

/// Why training failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Table(#[from] TableError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Report(#[from] ReportError),
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
