//! `adacompress replay`: the live pair learner ([`super::pair::LivePair`]) run over a table
//! of the cloud's answers instead of a live stream, so a change to its rules is measured
//! over many seeds in seconds rather than one 20-minute stream run per seed.
//!
//! The table (`scripts/pair_table.py` builds it from `scripts/margin_table.py`'s runs
//! through a real `serve`) holds, for every upload of a stream and every pair of a ladder,
//! the bytes that went up, whether the answer's top-1 agreed with the original's, and the
//! answer's top-1 margin. The replay makes the calls `serve` makes, in its order, with the
//! real learner and the real re-ask window:
//!
//! 1. [`LivePair::plan_audit`] with the served pair's bytes and a uniform draw from the
//!    audit seed (as `serve`'s `pair.audit_seed`);
//! 2. the re-ask: the served answer's margin under the window's quantile sends the
//!    original up too ([`crate::learn::reask`]), and the client gets its answer;
//! 3. [`LivePair::observe_margin`] with that margin;
//! 4. when planned, [`LivePair::record_audit`] with the served pair's and the candidates'
//!    answers from the table, and the bytes the audit uploads (none for the reference when
//!    the original already went up).
//!
//! What it leaves out: the learner chooses among the table's pairs only (a ladder of ~7,
//! not the 41 of `serve`), so an audit's candidates differ from a stream run's; audits land
//! at once rather than a few uploads later; per-image deviations are off.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

use super::pair::{AuditResult, LivePair, PairConfig, Served, wilson};
use super::reask::below;
use crate::action::Action;
use crate::agent::{Checkpoint, CheckpointError, Policy};
use crate::report::{self, Chart, PALETTE, ReportError, Series};

/// Uploads per agreement window (the stream benchmark's).
pub const WINDOW: usize = 100;

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read the answer table {path}: {reason}")]
    Table { path: PathBuf, reason: String },
    #[error(
        "the answer table {path} has no upload answered at every pair it names \
         ({pairs} pairs, {uploads} uploads)"
    )]
    Empty {
        path: PathBuf,
        pairs: usize,
        uploads: usize,
    },
    #[error("--deployments {asked}: the answer table holds {held}, each to be named once")]
    Deployments { asked: String, held: String },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(
        "{path} is not a calibrated agent (the live pair needs its bits per pixel and fallback)"
    )]
    NotCalibrated { path: PathBuf },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Report(#[from] ReportError),
}

/// What `adacompress replay` was asked for (its command-line arguments too).
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayOptions {
    /// Answer table (`scripts/pair_table.py`).
    #[arg(long, default_value = "docs/bench/pair-table.csv")]
    pub table: PathBuf,
    /// Calibrated agent: the prior's bits per pixel and the first default.
    #[arg(long, default_value = "models/agent-calibrated.json")]
    pub agent: PathBuf,
    /// Config whose `[pair]` settings are replayed (then `ADACOMPRESS_PAIR__*` variables).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Seeds replayed (the audit draws), from `--first-seed`.
    #[arg(long, default_value_t = 40)]
    pub seeds: u64,
    #[arg(long, default_value_t = 1)]
    pub first_seed: u64,
    /// Each seed also shuffles the uploads within each deployment.
    #[arg(long)]
    pub shuffle: bool,
    /// Position in each deployment where its late part starts.
    #[arg(long, default_value_t = 750)]
    pub late_from: u32,
    /// The deployments in the order replayed (comma-separated; default the table's). E.g.
    /// `night,day-uploads,day-samples`: a proxy started in the scenery its prior knows
    /// least.
    #[arg(long, value_delimiter = ',')]
    pub deployments: Vec<String>,
    /// Logs the learner's events (step-ups, drifts, alarms, probes) with the upload they
    /// came at, as `serve` would (RUST_LOG picks the level); best with `--seeds 1`.
    #[arg(long)]
    pub trace: bool,
    /// Writes PREFIX.json, .csv, .md and .svg.
    #[arg(long, default_value = "docs/bench/pair-replay")]
    pub out: PathBuf,
}

/// One pair's answer to one upload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Answer {
    pub bytes: u64,
    pub agree: bool,
    pub margin: Option<f64>,
}

/// One upload, answered at every pair of the table.
#[derive(Debug, Clone)]
pub struct Upload {
    pub deployment: usize,
    pub index: u32,
    pub width: u32,
    pub height: u32,
    pub original: u64,
    /// By action (the table's order).
    pub answers: Vec<Answer>,
}

/// The answer table.
#[derive(Debug, Clone)]
pub struct Table {
    /// In stream order.
    pub deployments: Vec<String>,
    pub actions: Vec<Action>,
    /// In stream order.
    pub uploads: Vec<Upload>,
    /// Uploads dropped because some pair had no answer for them.
    pub dropped: usize,
}

impl Table {
    /// Reads a table CSV with the columns `deployment, index, width, height,
    /// original_bytes, pair, bytes, agree, margin` (margin may be empty). Deployments come
    /// in the order they first appear; uploads in index order within each.
    pub fn read(path: &Path) -> Result<Table, ReplayError> {
        let err = |reason: String| ReplayError::Table {
            path: path.to_path_buf(),
            reason,
        };
        let mut reader = csv::Reader::from_path(path).map_err(|e| err(e.to_string()))?;
        let headers = reader.headers().map_err(|e| err(e.to_string()))?.clone();
        let col = |name: &str| {
            headers
                .iter()
                .position(|h| h == name)
                .ok_or_else(|| err(format!("no column `{name}`")))
        };
        let [dep, idx, w, h, orig, pair, bytes, agree, margin] = [
            "deployment",
            "index",
            "width",
            "height",
            "original_bytes",
            "pair",
            "bytes",
            "agree",
            "margin",
        ]
        .map(col);
        let (dep, idx, w, h, orig, pair, bytes, agree, margin) =
            (dep?, idx?, w?, h?, orig?, pair?, bytes?, agree?, margin?);
        let mut deployments: Vec<String> = Vec::new();
        let mut actions: Vec<Action> = Vec::new();
        // (deployment, index) -> (width, height, original, answers by action)
        type Row = (u32, u32, u64, BTreeMap<usize, Answer>);
        let mut rows: BTreeMap<(usize, u32), Row> = BTreeMap::new();
        for (line, record) in reader.records().enumerate() {
            let r = record.map_err(|e| err(e.to_string()))?;
            let field = |i: usize| r.get(i).unwrap_or("");
            let bad = |what: &str| err(format!("row {}: bad {what}", line + 2));
            let num = |i: usize, what: &str| field(i).parse::<u64>().map_err(|_| bad(what));
            let name = field(dep).to_string();
            let d = match deployments.iter().position(|x| *x == name) {
                Some(d) => d,
                None => {
                    deployments.push(name);
                    deployments.len() - 1
                }
            };
            let action = Action::parse(field(pair)).ok_or_else(|| bad("pair"))?;
            let a = match actions.iter().position(|x| *x == action) {
                Some(a) => a,
                None => {
                    actions.push(action);
                    actions.len() - 1
                }
            };
            let index = u32::try_from(num(idx, "index")?).map_err(|_| bad("index"))?;
            let width = u32::try_from(num(w, "width")?).map_err(|_| bad("width"))?;
            let height = u32::try_from(num(h, "height")?).map_err(|_| bad("height"))?;
            let answer = Answer {
                bytes: num(bytes, "bytes")?,
                agree: match field(agree) {
                    "1" | "true" => true,
                    "0" | "false" => false,
                    _ => return Err(bad("agree")),
                },
                margin: match field(margin) {
                    "" => None,
                    m => Some(m.parse::<f64>().map_err(|_| bad("margin"))?),
                },
            };
            let original = num(orig, "original_bytes")?;
            rows.entry((d, index))
                .or_insert_with(|| (width, height, original, BTreeMap::new()))
                .3
                .insert(a, answer);
        }
        let total = rows.len();
        let uploads: Vec<Upload> = rows
            .into_iter()
            .filter_map(
                |((deployment, index), (width, height, original, answers))| {
                    (answers.len() == actions.len()).then(|| Upload {
                        deployment,
                        index,
                        width,
                        height,
                        original,
                        answers: answers.into_values().collect(),
                    })
                },
            )
            .collect();
        if uploads.is_empty() {
            return Err(ReplayError::Empty {
                path: path.to_path_buf(),
                pairs: actions.len(),
                uploads: total,
            });
        }
        Ok(Table {
            dropped: total - uploads.len(),
            deployments,
            actions,
            uploads,
        })
    }
}

/// What happened to one upload in a replay.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    /// The upload (an index into [`Table::uploads`]).
    pub upload: usize,
    pub deployment: usize,
    /// Position within its deployment (0 = first).
    pub position: usize,
    pub action: usize,
    pub original: u64,
    /// Bytes sent at the served pair.
    pub uploaded: u64,
    /// The original re-sent because the answer was unsure.
    pub reasked: u64,
    /// The audit's bytes.
    pub estimation: u64,
    /// The client's answer agreed with the original's.
    pub agree: bool,
}

/// Runs the learner over `order` (indices into `table.uploads`).
pub fn replay(
    table: &Table,
    order: &[usize],
    cfg: &PairConfig,
    bits_per_pixel: Vec<f32>,
    default: usize,
    seed: u64,
) -> Vec<Step> {
    let mut pair = LivePair::new(cfg.clone(), table.actions.clone(), bits_per_pixel, default);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut position = vec![0usize; table.deployments.len()];
    let mut steps = Vec::with_capacity(order.len());
    for &u in order {
        let Some(up) = table.uploads.get(u) else {
            continue;
        };
        // The learner's events (step-ups, alarms) name the upload with `--trace`.
        let _upload = tracing::info_span!(
            "upload",
            deployment = %table.deployments[up.deployment],
            position = position[up.deployment],
        )
        .entered();
        let s = pair.served();
        let Some(&answer) = up.answers.get(s) else {
            continue;
        };
        let keep = table.actions[s].quality.is_none();
        // The re-encode was not smaller: the original went up (its answer is the reference).
        let sent_original = keep || answer.bytes >= up.original;
        let plan = pair.plan_audit(
            Served {
                width: up.width,
                height: up.height,
                original_bytes: up.original as usize,
                uploaded_bytes: answer.bytes as usize,
                action: Some(s),
                deviation: None,
                deviated: false,
            },
            rng.random::<f64>(),
        );
        let threshold = pair.reask_threshold();
        let reasked = !sent_original && below(answer.margin.map(|m| m as f32), threshold);
        if let Some(m) = answer.margin {
            pair.observe_margin(m);
        }
        let mut estimation = 0;
        if let Some(plan) = plan {
            if !sent_original && !reasked {
                estimation += up.original;
            }
            let mut results = vec![AuditResult {
                action: plan.served,
                agree: sent_original || answer.agree,
                margin: answer.margin,
                size_ratio: None,
                deviation: false,
            }];
            for &c in &plan.candidates {
                let Some(x) = up.answers.get(c) else {
                    continue;
                };
                let not_smaller = x.bytes >= up.original;
                if !not_smaller {
                    estimation += x.bytes;
                }
                results.push(AuditResult {
                    action: c,
                    agree: not_smaller || x.agree,
                    margin: if not_smaller { None } else { x.margin },
                    size_ratio: Some(x.bytes as f64 / up.original.max(1) as f64),
                    deviation: false,
                });
            }
            pair.record_audit(
                &plan,
                &results,
                estimation,
                up.width,
                up.height,
                up.original as usize,
            );
        }
        let p = &mut position[up.deployment];
        steps.push(Step {
            upload: u,
            deployment: up.deployment,
            position: *p,
            action: s,
            original: up.original,
            uploaded: answer.bytes,
            reasked: if reasked { up.original } else { 0 },
            estimation,
            agree: sent_original || reasked || answer.agree,
        });
        *p += 1;
    }
    steps
}

/// A fixed pair's record over some uploads.
#[derive(Debug, Clone, Serialize)]
pub struct FixedPair {
    pub pair: String,
    pub agreement: f64,
    /// One-sided 95 % Wilson lower bound of the agreement.
    pub lower: f64,
    pub bytes: u64,
}

/// The best pair in hindsight (cheapest reaching the target) and the certified one
/// (cheapest whose lower bound clears it) over the uploads `which` selects.
fn references(
    table: &Table,
    target: f64,
    ups: &[&Upload],
) -> (Option<FixedPair>, Option<FixedPair>) {
    let mut pairs: Vec<FixedPair> = (0..table.actions.len())
        .map(|a| {
            let ok = ups.iter().filter(|u| u.answers[a].agree).count();
            FixedPair {
                pair: table.actions[a].name(),
                agreement: ok as f64 / ups.len().max(1) as f64,
                lower: wilson(ok, ups.len(), 1.645).0,
                bytes: ups.iter().map(|u| u.answers[a].bytes).sum(),
            }
        })
        .collect();
    pairs.sort_by_key(|p| p.bytes);
    let best = pairs.iter().find(|p| p.agreement >= target).cloned();
    let certified = pairs.iter().find(|p| p.lower >= target).cloned();
    (best, certified)
}

/// Uploads in each deployment's first part: what a fresh proxy, or one that has just seen
/// the scenery change, costs before it has learned (a short trial sees only this).
pub const FIRST: usize = 200;

/// One deployment's part (all of it, its late uploads, or its first [`FIRST`]) in one
/// seed's replay.
#[derive(Debug, Clone, Serialize)]
pub struct Part {
    pub deployment: String,
    pub late: bool,
    pub first: bool,
    pub uploads: usize,
    pub seed: u64,
    /// Everything that went up (served, re-asked, audits) over the originals.
    pub vs_original: f64,
    /// Over the best pair in hindsight's bytes on the same uploads.
    pub vs_best: Option<f64>,
    pub vs_certified: Option<f64>,
    pub agreement: f64,
    /// Audit bytes over served + re-asked bytes.
    pub estimation_share: f64,
    /// Re-asked bytes over served + re-asked bytes.
    pub reask_share: f64,
    /// The lowest agreement of a 100-upload window.
    pub min_window: f64,
    /// The pair served most, and how many pairs were served.
    pub main_pair: String,
    pub pairs_served: usize,
    /// vs_best ≤ 1.3 at ≥ the target.
    pub meets: bool,
}

/// The part of deployment `d` at positions `range`, compared with the fixed pairs on the
/// same uploads.
fn part(
    table: &Table,
    steps: &[Step],
    d: usize,
    range: std::ops::Range<usize>,
    target: f64,
    seed: u64,
) -> Part {
    let s: Vec<&Step> = steps
        .iter()
        .filter(|x| x.deployment == d && range.contains(&x.position))
        .collect();
    let ups: Vec<&Upload> = s.iter().map(|x| &table.uploads[x.upload]).collect();
    let refs = references(table, target, &ups);
    let sent: u64 = s.iter().map(|x| x.uploaded + x.reasked).sum();
    let estimation: u64 = s.iter().map(|x| x.estimation).sum();
    let total = sent + estimation;
    let original: u64 = s.iter().map(|x| x.original).sum();
    let agreement = s.iter().filter(|x| x.agree).count() as f64 / s.len().max(1) as f64;
    let min_window = s
        .chunks(WINDOW)
        .filter(|w| w.len() == WINDOW)
        .map(|w| w.iter().filter(|x| x.agree).count() as f64 / WINDOW as f64)
        .fold(1.0, f64::min);
    let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
    for x in &s {
        *counts.entry(x.action).or_default() += 1;
    }
    let main = counts.iter().max_by_key(|(_, n)| **n).map(|(a, _)| *a);
    let vs = |p: &Option<FixedPair>| p.as_ref().map(|p| total as f64 / p.bytes.max(1) as f64);
    let vs_best = vs(&refs.0);
    Part {
        deployment: table.deployments[d].clone(),
        late: range.start > 0,
        first: range.start == 0 && range.end == FIRST,
        uploads: s.len(),
        seed,
        vs_original: total as f64 / original.max(1) as f64,
        vs_best,
        vs_certified: vs(&refs.1),
        agreement,
        estimation_share: estimation as f64 / sent.max(1) as f64,
        reask_share: s.iter().map(|x| x.reasked).sum::<u64>() as f64 / sent.max(1) as f64,
        min_window,
        main_pair: main.map_or_else(String::new, |a| table.actions[a].name()),
        pairs_served: counts.len(),
        meets: vs_best.is_some_and(|v| v <= 1.3) && agreement >= target,
    }
}

/// Per deployment, over the seeds: the spread of the late part.
#[derive(Debug, Clone, Serialize)]
pub struct Spread {
    pub deployment: String,
    pub best: Option<FixedPair>,
    pub certified: Option<FixedPair>,
    pub seeds: usize,
    /// Share of seeds whose late part meets ≤ 1.3× the best pair at ≥ the target.
    pub met: f64,
    /// Share whose late estimation share is ≤ 10 %.
    pub estimation_met: f64,
    pub vs_best: Quantiles,
    pub agreement: Quantiles,
    pub estimation_share: Quantiles,
    pub min_window_all: Quantiles,
    /// The first [`FIRST`] uploads: everything sent over the originals, agreement, and
    /// the estimation share.
    pub first_vs_original: Quantiles,
    pub first_agreement: Quantiles,
    pub first_estimation_share: Quantiles,
}

/// 10th, 50th and 90th percentiles.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Quantiles {
    pub p10: f64,
    pub p50: f64,
    pub p90: f64,
}

fn quantiles(mut v: Vec<f64>) -> Quantiles {
    v.retain(|x| x.is_finite());
    v.sort_by(f64::total_cmp);
    let at = |q: f64| {
        if v.is_empty() {
            return f64::NAN;
        }
        v[((q * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)]
    };
    Quantiles {
        p10: at(0.1),
        p50: at(0.5),
        p90: at(0.9),
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub table: String,
    pub pairs: Vec<String>,
    pub uploads: usize,
    pub dropped: usize,
    pub late_from: u32,
    pub shuffle: bool,
    pub seeds: Vec<u64>,
    pub config: PairConfig,
    pub spreads: Vec<Spread>,
    /// Share of seeds meeting the target on every deployment with estimation ≤ 10 %.
    pub all_met: f64,
    pub parts: Vec<Part>,
}

/// Replays `seeds` and summarizes them.
pub fn run(
    table: &Table,
    cfg: &PairConfig,
    bits_per_pixel: &[f32],
    default: usize,
    seeds: &[u64],
    shuffle: bool,
    late_from: u32,
) -> Report {
    let target = cfg.target_agreement;
    let late = late_from as usize;
    // The fixed pairs over each deployment's late uploads in the table's order.
    let refs: Vec<_> = (0..table.deployments.len())
        .map(|d| {
            let ups: Vec<&Upload> = table.uploads.iter().filter(|u| u.deployment == d).collect();
            references(table, target, &ups[late.min(ups.len())..])
        })
        .collect();
    let mut progress = crate::progress::Progress::new("replay", seeds.len() as u64);
    let mut parts = Vec::new();
    for (i, &seed) in seeds.iter().enumerate() {
        let mut order: Vec<usize> = (0..table.uploads.len()).collect();
        if shuffle {
            let mut rng = StdRng::seed_from_u64(seed ^ 0x5bd1_e995);
            // Within each deployment only: the scenery changes where the stream's does.
            let mut start = 0;
            while start < order.len() {
                let d = table.uploads[order[start]].deployment;
                let end = (start..order.len())
                    .find(|&j| table.uploads[order[j]].deployment != d)
                    .unwrap_or(order.len());
                order[start..end].shuffle(&mut rng);
                start = end;
            }
        }
        let steps = replay(table, &order, cfg, bits_per_pixel.to_vec(), default, seed);
        for d in 0..table.deployments.len() {
            parts.push(part(table, &steps, d, 0..usize::MAX, target, seed));
            parts.push(part(
                table,
                &steps,
                d,
                late.max(1)..usize::MAX,
                target,
                seed,
            ));
            parts.push(part(table, &steps, d, 0..FIRST, target, seed));
        }
        progress.set(i as u64 + 1, seeds.len() as u64);
    }
    progress.finish();
    let spreads: Vec<Spread> = table
        .deployments
        .iter()
        .zip(&refs)
        .map(|(name, (best, certified))| {
            let late: Vec<&Part> = parts
                .iter()
                .filter(|p| p.late && p.deployment == *name)
                .collect();
            let all: Vec<&Part> = parts
                .iter()
                .filter(|p| !p.late && !p.first && p.deployment == *name)
                .collect();
            let first: Vec<&Part> = parts
                .iter()
                .filter(|p| p.first && p.deployment == *name)
                .collect();
            let n = late.len().max(1) as f64;
            Spread {
                deployment: name.clone(),
                best: best.clone(),
                certified: certified.clone(),
                seeds: late.len(),
                met: late.iter().filter(|p| p.meets).count() as f64 / n,
                estimation_met: late.iter().filter(|p| p.estimation_share <= 0.10).count() as f64
                    / n,
                vs_best: quantiles(late.iter().filter_map(|p| p.vs_best).collect()),
                agreement: quantiles(late.iter().map(|p| p.agreement).collect()),
                estimation_share: quantiles(late.iter().map(|p| p.estimation_share).collect()),
                min_window_all: quantiles(all.iter().map(|p| p.min_window).collect()),
                first_vs_original: quantiles(first.iter().map(|p| p.vs_original).collect()),
                first_agreement: quantiles(first.iter().map(|p| p.agreement).collect()),
                first_estimation_share: quantiles(
                    first.iter().map(|p| p.estimation_share).collect(),
                ),
            }
        })
        .collect();
    let all_met = seeds
        .iter()
        .filter(|&&s| {
            parts
                .iter()
                .filter(|p| p.late && p.seed == s)
                .all(|p| p.meets && p.estimation_share <= 0.10)
        })
        .count() as f64
        / seeds.len().max(1) as f64;
    Report {
        table: String::new(),
        pairs: table.actions.iter().map(|a| a.name()).collect(),
        uploads: table.uploads.len(),
        dropped: table.dropped,
        late_from,
        shuffle,
        seeds: seeds.to_vec(),
        config: cfg.clone(),
        spreads,
        all_met,
        parts,
    }
}

/// The prior a calibrated agent gives the table's pairs: their bits per pixel, and the
/// default (the agent's fallback pair when the table has it, else the table's first pair).
pub fn prior(table: &Table, agent: &Path) -> Result<(Vec<f32>, usize), ReplayError> {
    let ckpt = Checkpoint::read(agent)?;
    let Policy::Calibrated {
        fallback,
        bits_per_pixel,
        ..
    } = &ckpt.policy
    else {
        return Err(ReplayError::NotCalibrated {
            path: agent.to_path_buf(),
        });
    };
    let set = &ckpt.action_set;
    let bpp: Vec<f32> = table
        .actions
        .iter()
        .map(|a| {
            set.index_of(a)
                .and_then(|i| bits_per_pixel.get(i).copied())
                .unwrap_or(8.0)
        })
        .collect();
    let fallback = set.actions.get(*fallback).copied();
    let default = fallback
        .and_then(|f| table.actions.iter().position(|a| *a == f))
        .unwrap_or(0);
    Ok((bpp, default))
}

impl Table {
    /// The same answers with the deployments in the order `names` (each of the table's
    /// named once).
    pub fn reordered(mut self, names: &[String]) -> Result<Table, ReplayError> {
        let mut sorted = names.to_vec();
        sorted.sort();
        let mut held = self.deployments.clone();
        held.sort();
        if sorted != held {
            return Err(ReplayError::Deployments {
                asked: names.join(","),
                held: self.deployments.join(","),
            });
        }
        let new_index = |d: usize| {
            names
                .iter()
                .position(|n| *n == self.deployments[d])
                .unwrap_or(d)
        };
        let map: Vec<usize> = (0..self.deployments.len()).map(new_index).collect();
        for u in &mut self.uploads {
            u.deployment = map[u.deployment];
        }
        // Stable: index order within each deployment stays.
        self.uploads.sort_by_key(|u| u.deployment);
        self.deployments = names.to_vec();
        Ok(self)
    }
}

/// `adacompress replay`.
pub fn command(o: ReplayOptions) -> Result<(), ReplayError> {
    let mut table = Table::read(&o.table)?;
    if !o.deployments.is_empty() {
        table = table.reordered(&o.deployments)?;
    }
    let (bpp, default) = prior(&table, &o.agent)?;
    let cfg = crate::config::Config::load(o.config.as_deref(), std::env::vars())?.pair;
    let seeds: Vec<u64> = (o.first_seed..o.first_seed.saturating_add(o.seeds)).collect();
    // The learner logs every step-up and alarm as `serve` would; replayed thousands of
    // times over they are noise on this terminal, and the report holds what they tell.
    let go = || run(&table, &cfg, &bpp, default, &seeds, o.shuffle, o.late_from);
    let mut report = if o.trace {
        go()
    } else {
        tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), go)
    };
    report.table = o.table.display().to_string();
    write(&o.out, &report)?;
    println!("{}", markdown(&report));
    Ok(())
}

fn pct(x: f64) -> String {
    format!("{:.1} %", 100.0 * x)
}

fn times(x: f64) -> String {
    format!("{x:.2}×")
}

/// A spread as "p10 / p50 / p90".
fn q(q: Quantiles, f: fn(f64) -> String) -> String {
    format!("{} / {} / {}", f(q.p10), f(q.p50), f(q.p90))
}

/// The summary table.
pub fn markdown(r: &Report) -> String {
    let mut s = format!(
        "Replay of the live pair over {} ({} uploads, pairs {}; {} seeds{}); \
         late part = uploads {}+ of each deployment. Cells: 10th / 50th / 90th percentile \
         over the seeds.\n\n\
         | deployment | best pair (late) | certified | met (≤ 1.3× at ≥ target) | vs best | \
         agreement | estimation share | lowest 100-upload window (whole) |\n\
         |---|---|---|---:|---|---|---|---|\n",
        r.table,
        r.uploads,
        r.pairs.join(", "),
        r.seeds.len(),
        if r.shuffle { ", orders shuffled" } else { "" },
        r.late_from,
    );
    for x in &r.spreads {
        let name = |p: &Option<FixedPair>| {
            p.as_ref().map_or("none".to_string(), |p| {
                format!("{} ({})", p.pair, pct(p.agreement))
            })
        };
        s += &format!(
            "| {} | {} | {} | {} of seeds | {} | {} | {} | {} |\n",
            x.deployment,
            name(&x.best),
            name(&x.certified),
            pct(x.met),
            q(x.vs_best, times),
            q(x.agreement, pct),
            q(x.estimation_share, pct),
            q(x.min_window_all, pct),
        );
    }
    s += &format!(
        "\nSeeds meeting the target on every deployment, estimation ≤ 10 %: {}.\n\n\
         The first {FIRST} uploads of each deployment (a fresh proxy's, or the scenery change's, \
         before it has learned):\n\n\
         | deployment | everything sent vs original | agreement | estimation share |\n\
         |---|---|---|---|\n",
        pct(r.all_met)
    );
    for x in &r.spreads {
        s += &format!(
            "| {} | {} | {} | {} |\n",
            x.deployment,
            q(x.first_vs_original, times),
            q(x.first_agreement, pct),
            q(x.first_estimation_share, pct),
        );
    }
    s
}

/// Writes PREFIX.json, .csv (one row per seed and part), .md and .svg (each seed's late
/// part: bytes vs the best pair against agreement, per deployment).
pub fn write(prefix: &Path, r: &Report) -> Result<(), ReplayError> {
    let with = |ext: &str| prefix.with_extension(ext);
    report::write_json(&with("json"), r)?;
    let rows: Vec<Vec<String>> = r
        .parts
        .iter()
        .map(|p| {
            vec![
                p.seed.to_string(),
                p.deployment.clone(),
                if p.late {
                    "late".into()
                } else if p.first {
                    format!("first{FIRST}")
                } else {
                    "all".into()
                },
                p.uploads.to_string(),
                format!("{:.4}", p.vs_original),
                p.vs_best.map_or(String::new(), |v| format!("{v:.4}")),
                p.vs_certified.map_or(String::new(), |v| format!("{v:.4}")),
                format!("{:.4}", p.agreement),
                format!("{:.4}", p.estimation_share),
                format!("{:.4}", p.reask_share),
                format!("{:.2}", p.min_window),
                p.main_pair.clone(),
                p.pairs_served.to_string(),
                u8::from(p.meets).to_string(),
            ]
        })
        .collect();
    report::write_csv(
        &with("csv"),
        &[
            "seed",
            "deployment",
            "part",
            "uploads",
            "vs_original",
            "vs_best",
            "vs_certified",
            "agreement",
            "estimation_share",
            "reask_share",
            "min_window",
            "main_pair",
            "pairs_served",
            "meets",
        ],
        &rows,
    )?;
    std::fs::write(with("md"), markdown(r)).map_err(|e| {
        ReplayError::Report(ReportError::Write {
            path: with("md"),
            reason: e.to_string(),
        })
    })?;
    let series = r
        .spreads
        .iter()
        .enumerate()
        .map(|(i, d)| Series {
            name: d.deployment.clone(),
            points: r
                .parts
                .iter()
                .filter(|p| p.late && p.deployment == d.deployment)
                .filter_map(|p| p.vs_best.map(|v| (v, 100.0 * p.agreement)))
                .collect(),
            labels: Vec::new(),
            line: false,
            color: PALETTE[i % PALETTE.len()],
        })
        .collect();
    report::plot_svg(
        &with("svg"),
        &Chart {
            title: format!(
                "Live pair replayed, {} seeds: late part of each deployment",
                r.seeds.len()
            ),
            x_label: "bytes vs the best fixed pair in hindsight".into(),
            y_label: "top-1 agreement (%)".into(),
            series,
            y_range: None,
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A two-deployment table over three pairs: `q95@960` agrees on `good` of every 100
    /// uploads in the first deployment and `bad` in the second; `q95@1280` on 99 of 100.
    fn table(good: usize, bad: usize, n: u32) -> Table {
        let actions: Vec<Action> = ["keep", "q95@1280", "q95@960"]
            .iter()
            .filter_map(|s| Action::parse(s))
            .collect();
        let uploads = (0..2usize)
            .flat_map(|d| {
                (0..n).map(move |i| {
                    let share = if d == 0 { good } else { bad };
                    let ok960 = (i as usize * 37) % 100 < share;
                    let ok1280 = (i as usize * 37) % 100 < 99;
                    let spread = ((i as usize * 53) % 100) as f64 / 100.0;
                    let m = |ok: bool| Some(if ok { 0.3 + 0.4 * spread } else { 0.1 * spread });
                    Upload {
                        deployment: d,
                        index: i,
                        width: 2000,
                        height: 1500,
                        original: 1_000_000,
                        answers: vec![
                            Answer {
                                bytes: 1_000_000,
                                agree: true,
                                margin: Some(0.6),
                            },
                            Answer {
                                bytes: 500_000,
                                agree: ok1280,
                                margin: m(ok1280),
                            },
                            Answer {
                                bytes: 300_000,
                                agree: ok960,
                                margin: m(ok960),
                            },
                        ],
                    }
                })
            })
            .collect();
        Table {
            deployments: vec!["day".into(), "night".into()],
            actions,
            uploads,
            dropped: 0,
        }
    }

    #[test]
    fn the_replay_spends_within_the_budget_and_counts_every_byte() {
        let t = table(100, 100, 1500);
        // No re-asks here: every byte is the served pair's or an audit's.
        let cfg = PairConfig {
            reask_rate: 0.0,
            ..PairConfig::default()
        };
        let order: Vec<usize> = (0..t.uploads.len()).collect();
        let steps = replay(&t, &order, &cfg, vec![8.0, 2.0, 2.0], 2, 7);
        assert_eq!(steps.len(), 3000);
        // Every upload is counted once, at the pair the learner served.
        assert!(steps.iter().all(|s| s.uploaded > 0 && s.agree));
        let audited = steps.iter().filter(|s| s.estimation > 0).count();
        assert!(audited > 20, "audits {audited}");
        let r = run(&t, &cfg, &[8.0, 2.0, 2.0], 2, &[1, 2], false, 750);
        for s in &r.spreads {
            // q95@960 agrees everywhere: it is the best pair and the learner serves it.
            assert_eq!(s.best.as_ref().map(|b| b.pair.as_str()), Some("q95@960"));
            assert!(s.met > 0.99, "{s:?}");
            assert!(s.estimation_share.p90 <= 0.10, "{s:?}");
        }
    }

    #[test]
    fn deployments_replay_in_the_order_asked_and_each_has_its_first_part() {
        let t = table(100, 80, 300);
        let night_first = t
            .clone()
            .reordered(&["night".into(), "day".into()])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(night_first.deployments, ["night", "day"]);
        // Night's uploads come first, in index order, then the day's; none lost.
        assert_eq!(night_first.uploads.len(), t.uploads.len());
        assert!(night_first.uploads[..300].iter().all(|u| u.deployment == 0));
        assert!(
            night_first.uploads[..300]
                .windows(2)
                .all(|w| w[0].index < w[1].index)
        );
        let a = |t: &Table, d: &str| {
            t.uploads
                .iter()
                .filter(|u| t.deployments[u.deployment] == d)
                .filter(|u| u.answers[2].agree)
                .count()
        };
        assert_eq!(a(&night_first, "night"), a(&t, "night"));
        // A name missing, unknown or repeated is refused.
        for bad in [vec!["night"], vec!["night", "dusk"], vec!["night", "night"]] {
            let names: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
            assert!(t.clone().reordered(&names).is_err(), "{names:?}");
        }
        // Every seed reports each deployment's whole, late and first parts.
        let r = run(
            &night_first,
            &PairConfig::default(),
            &[8.0, 2.0, 2.0],
            2,
            &[1],
            false,
            150,
        );
        for d in ["night", "day"] {
            let of =
                |f: fn(&Part) -> bool| r.parts.iter().filter(|p| p.deployment == d && f(p)).count();
            assert_eq!(of(|p| p.first), 1);
            assert_eq!(of(|p| p.late), 1);
            assert_eq!(of(|p| !p.late && !p.first), 1);
            let first = r.parts.iter().find(|p| p.deployment == d && p.first);
            assert_eq!(first.map(|p| p.uploads), Some(FIRST));
        }
        // The parts come in the order replayed: the night's first.
        assert_eq!(
            r.parts
                .iter()
                .find(|p| p.first)
                .map(|p| p.deployment.as_str()),
            Some("night")
        );
    }

    #[test]
    fn a_pair_that_fails_at_night_is_left_and_the_client_stays_above_the_target() {
        // q95@960: 100 % by day, 80 % at night; q95@1280: 99 % everywhere.
        let t = table(100, 80, 1500);
        let cfg = PairConfig::default();
        let r = run(&t, &cfg, &[8.0, 2.0, 2.0], 2, &[3, 4, 5], false, 750);
        let night = &r.spreads[1];
        assert_eq!(
            night.best.as_ref().map(|b| b.pair.as_str()),
            Some("q95@1280")
        );
        assert!(night.agreement.p10 >= 0.97, "{night:?}");
        let late: Vec<&Part> = r
            .parts
            .iter()
            .filter(|p| p.late && p.deployment == "night")
            .collect();
        assert!(late.iter().all(|p| p.main_pair != "q95@960"), "{late:?}");
    }

    #[test]
    fn a_table_missing_an_answer_drops_that_upload_and_names_bad_rows() {
        let dir = std::env::temp_dir().join(format!("replay-table-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("t.csv");
        let head = "deployment,index,width,height,original_bytes,pair,bytes,agree,margin\n";
        let body = "day,0,800,600,1000,keep,1000,1,0.5\nday,0,800,600,1000,q95@640,400,0,\n\
                    day,1,800,600,1000,keep,1000,1,0.4\n";
        std::fs::write(&path, format!("{head}{body}")).unwrap_or_default();
        let t = Table::read(&path);
        assert!(t.is_ok(), "{t:?}");
        if let Ok(t) = t {
            assert_eq!((t.uploads.len(), t.dropped, t.actions.len()), (1, 1, 2));
            assert_eq!(t.uploads[0].answers[1].margin, None);
            assert!(!t.uploads[0].answers[1].agree);
        }
        std::fs::write(&path, format!("{head}day,0,800,600,1000,q95@x,4,1,\n")).unwrap_or_default();
        let e = Table::read(&path).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("row 2: bad pair"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
