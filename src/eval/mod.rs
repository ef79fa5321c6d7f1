//! Evaluation: how many bytes a policy uploads and how often the service's answer
//! stays the same, against every fixed setting and the per-image oracle.
//!
//! * [`workload`]: the calibrated agent on a label table (keep + every max side ×
//!   quality), per workload and per source; what `adacompress eval` reports.
//! * [`paper`]: the paper's setting (keep + ten qualities at full size) over a photo
//!   environment, for the DQN/bandit agents.
//!
//! [`command`] is `adacompress eval`: it picks one of the two, runs it and writes the
//! reports.

pub mod paper;
pub mod workload;

pub use paper::*;

use std::path::{Path, PathBuf};

use crate::action::ActionSet;
use crate::agent::{Agent, CheckpointError, StateKind};
use crate::client::{CachedService, OpenError};
use crate::codec::Limits;
use crate::learn::photos_env::{self, EnvError, EnvSpec};
use crate::learn::table::TableError;
use crate::learn::{Accuracy, Reference};
use crate::photos::{PhotoError, Selection, Split};
use crate::progress::Progress;
use crate::report::ReportError;

/// Why `adacompress eval` failed.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Photos(#[from] PhotoError),
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error(transparent)]
    Table(#[from] TableError),
    #[error(transparent)]
    Report(#[from] ReportError),
}

/// Everything `adacompress eval` was asked (one field per flag of `adacompress eval --help`).
#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub service: crate::client::ServiceSpec,
    pub photos: Selection,
    /// Agent checkpoint; without it only fixed settings and the oracle.
    pub agent: Option<PathBuf>,
    pub split: Split,
    pub reference: Reference,
    /// Agreement the "best fixed" setting must reach.
    pub target_agreement: f64,
    /// JSON report.
    pub json: Option<PathBuf>,
    /// Folder for the CSV files and the plot.
    pub out_dir: Option<PathBuf>,
    /// Name of the workload in reports.
    pub workload: Option<String>,
    /// Without an agent: the action set to report.
    pub actions: String,
}

impl EvalOptions {
    /// `out_dir`, else the folder of `json`, else `eval-out`.
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

/// `adacompress eval`.
pub async fn command(opts: EvalOptions) -> Result<(), EvalError> {
    let agent = match &opts.agent {
        Some(p) => Some(Agent::load(p, None)?),
        None => None,
    };
    let compact = agent
        .as_ref()
        .map_or(opts.actions == "uploads", |a| a.state == StateKind::Compact);
    if compact {
        return command_workload(opts, agent).await;
    }
    // Without an agent no features are needed.
    let backbone = agent.as_ref().map(|a| &a.backbone);
    let actions = agent
        .as_ref()
        .map_or_else(ActionSet::paper, |a| a.actions.clone());
    let (http, store, _local) = opts.service.open().await?;
    let service = CachedService::new(&http, &store);
    let paths = opts.photos.select(opts.split)?;
    eprintln!(
        "evaluating on {} photos ({:?} split) against {}",
        paths.len(),
        opts.split,
        service.id()
    );
    let spec = EnvSpec {
        actions,
        accuracy: Accuracy::Top1,
        reference: opts.reference,
        augment: 0,
    };
    let env = photos_env::prepare(&paths, backbone, &service, spec).await?;
    let mut bar = Progress::new("eval", env.photos.len() as u64);
    let mut rep = evaluate(&env, agent.as_ref(), opts.target_agreement, |d, t| {
        bar.set(d as u64, t as u64)
    })
    .await?;
    bar.finish();
    rep.service = service.id().to_string();
    println!("{}", rep.table());
    let out_dir = opts.out_dir();
    rep.write(&out_dir, opts.json.as_deref())?;
    eprintln!(
        "wrote {}eval-summary.csv, eval-photos.csv and eval.svg in {}; the service answered {} requests",
        opts.json
            .as_ref()
            .map_or(String::new(), |j| format!("{}, ", j.display())),
        out_dir.display(),
        rep.service_requests
    );
    Ok(())
}

/// `adacompress eval` for a calibrated agent (or `--actions uploads`): the label table
/// of the selected photos, every fixed pair, the oracle and the agent.
async fn command_workload(opts: EvalOptions, agent: Option<Agent>) -> Result<(), EvalError> {
    let actions = match &agent {
        Some(a) => a.actions.clone(),
        None => ActionSet::uploads(),
    };
    let (http, store, _local) = opts.service.open().await?;
    let service = CachedService::new(&http, &store);
    let paths = opts.photos.select(opts.split)?;
    let workload = opts
        .workload
        .clone()
        .unwrap_or_else(|| crate::learn::photos_env::display_name(&opts.photos.dir));
    eprintln!(
        "evaluating on {} photos ({:?} split, workload {workload}) against {}",
        paths.len(),
        opts.split,
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
        crate::learn::table::Table::build(&paths, &opts.photos.dir, &spec, &service, |d, t| {
            bar.set(d as u64, t as u64)
        })
        .await?;
    bar.finish();
    let rep = workload::evaluate(
        &workload,
        &table,
        agent.as_ref().map(|a| (&a.head, &a.policy)),
        opts.target_agreement,
    );
    println!("{}", rep.table());
    let out_dir = opts.out_dir();
    rep.write(&out_dir, opts.json.as_deref(), &table)?;
    eprintln!(
        "wrote {workload}-summary.csv, {workload}-photos.csv and {workload}.svg in {}; the service answered {} new requests",
        out_dir.display(),
        table.requests
    );
    Ok(())
}
