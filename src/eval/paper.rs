//! Evaluation: every fixed quality, the agent and the per-image oracle on the same
//! photos, in bytes and agreement.
//!
//! Sizes follow the proxy's rule (a re-encode that is not smaller uploads the
//! original). Size ratios are ratios of totals: Σ uploaded / Σ reference bytes.
//! The oracle picks, per image, the smallest of the paper's ten qualities (or the
//! original) whose answer agrees at top-1 — the floor no policy that sees only the
//! image can beat.

use std::collections::BTreeMap;

use std::path::Path;

use serde::Serialize;

use crate::report::{self, ReportError};

use crate::action::{Action, PAPER_QUALITIES};
use crate::agent::Agent;
use crate::client::VisionService;
use crate::learn::photos_env::{EnvError, Observation, PhotoEnv};
use crate::learn::reward::Accuracy;

/// Bytes and agreement of one policy over the evaluated photos.
#[derive(Debug, Clone, Serialize)]
pub struct Metrics {
    pub bytes_mean: f64,
    pub size_ratio_original: f64,
    pub size_ratio_q75: f64,
    pub top1_agreement: f64,
    pub topk_agreement: f64,
}

/// One fixed action's row.
#[derive(Debug, Clone, Serialize)]
pub struct FixedRow {
    pub action: String,
    pub quality: Option<u8>,
    pub max_side: Option<u32>,
    #[serde(flatten)]
    pub metrics: Metrics,
}

/// The oracle's row.
pub type OracleRow = Metrics;

/// The agent's row.
#[derive(Debug, Clone, Serialize)]
pub struct AgentRow {
    #[serde(flatten)]
    pub metrics: Metrics,
    /// How often each action was chosen.
    pub actions: BTreeMap<String, usize>,
    /// The checkpoint's action set.
    pub action_set: String,
    /// Agent bytes / bytes of the best fixed quality reaching the target agreement.
    pub bytes_vs_best_fixed: Option<f64>,
}

/// The smallest fixed quality reaching the target agreement.
#[derive(Debug, Clone, Serialize)]
pub struct BestFixed {
    pub target_top1_agreement: f64,
    pub action: Option<String>,
    pub bytes_mean: Option<f64>,
}

/// Per-photo record (for the CSV).
#[derive(Debug, Clone, Serialize)]
pub struct PhotoRow {
    pub name: String,
    pub original_bytes: usize,
    pub q75_bytes: usize,
    pub reference_top1: Option<String>,
    pub oracle_action: String,
    pub oracle_bytes: usize,
    pub agent_action: Option<String>,
    pub agent_bytes: Option<usize>,
    pub agent_top1_agrees: Option<bool>,
}

/// The eval report; its JSON form is a stable interface.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub photos: usize,
    pub reference: String,
    pub service: String,
    pub original_bytes_mean: f64,
    pub q75_bytes_mean: f64,
    pub fixed: Vec<FixedRow>,
    pub oracle: OracleRow,
    pub best_fixed: BestFixed,
    /// Fixed rows for the agent's actions beyond the paper's ten (downscales).
    pub fixed_extra: Vec<FixedRow>,
    /// The oracle restricted to the agent's action set (its own floor).
    pub oracle_agent_actions: Option<OracleRow>,
    pub agent: Option<AgentRow>,
    /// Requests the service answered during this eval (cache misses).
    pub service_requests: u64,
    pub per_photo: Vec<PhotoRow>,
}

/// Accumulates bytes and agreements over photos.
#[derive(Default)]
struct Tally {
    bytes: f64,
    top1: usize,
    topk: usize,
}

impl Tally {
    fn add<S: VisionService + ?Sized>(
        &mut self,
        env: &PhotoEnv<'_, S>,
        i: usize,
        obs: &Observation,
    ) {
        self.bytes += obs.bytes as f64;
        self.top1 += usize::from(env.agrees_with(i, obs, Accuracy::Top1));
        self.topk += usize::from(env.agrees_with(i, obs, Accuracy::Topk));
    }
}

/// Runs the evaluation on every photo of `env` (whose features must come from the
/// agent's backbone when an agent is given).
pub async fn evaluate<S: VisionService + ?Sized>(
    env: &PhotoEnv<'_, S>,
    agent: Option<&Agent>,
    target_agreement: f64,
    mut progress: impl FnMut(usize, usize),
) -> Result<EvalReport, EnvError> {
    let n = env.photos.len();
    let nf = n.max(1) as f64;
    let original_total: f64 = env.photos.iter().map(|p| p.original.len() as f64).sum();
    let q75_total: f64 = env.photos.iter().map(|p| p.q75_bytes as f64).sum();
    let paper_actions: Vec<Action> = PAPER_QUALITIES
        .iter()
        .map(|&q| Action::quality(q))
        .collect();
    let extra_actions: Vec<Action> = agent
        .map(|a| {
            a.actions
                .actions
                .iter()
                .filter(|x| x.quality.is_some() && !paper_actions.contains(x))
                .copied()
                .collect()
        })
        .unwrap_or_default();
    let fixed_actions: Vec<Action> = paper_actions
        .iter()
        .chain(&extra_actions)
        .copied()
        .collect();
    let mut fixed_tallies: Vec<Tally> = fixed_actions.iter().map(|_| Tally::default()).collect();
    let mut oracle_set = Tally::default();
    let mut oracle = Tally::default();
    let mut agent_tally = Tally::default();
    let mut agent_actions: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_photo = Vec::with_capacity(n);

    for i in 0..n {
        let photo = &env.photos[i];
        // Oracle candidates: the original first, replaced by any smaller agreeing quality.
        let keep = env.observe(i, &Action::KEEP).await?;
        let mut best = (Action::KEEP, keep.clone());
        let mut best_in_set = (Action::KEEP, keep.clone());
        for (a, tally) in fixed_actions.iter().zip(fixed_tallies.iter_mut()) {
            let obs = env.observe(i, a).await?;
            tally.add(env, i, &obs);
            let agrees = env.agrees_with(i, &obs, Accuracy::Top1);
            if agrees
                && obs.bytes < best_in_set.1.bytes
                && agent.is_some_and(|ag| ag.actions.index_of(a).is_some())
            {
                best_in_set = (*a, obs.clone());
            }
            if agrees && obs.bytes < best.1.bytes && a.max_side.is_none() {
                best = (*a, obs);
            }
        }
        oracle.add(env, i, &best.1);
        oracle_set.add(env, i, &best_in_set.1);
        let mut row = PhotoRow {
            name: photo.name.clone(),
            original_bytes: photo.original.len(),
            q75_bytes: photo.q75_bytes,
            reference_top1: photo
                .reference
                .answer()
                .and_then(|a| a.top1())
                .map(str::to_string),
            oracle_action: best.0.name(),
            oracle_bytes: best.1.bytes,
            agent_action: None,
            agent_bytes: None,
            agent_top1_agrees: None,
        };
        if let Some(agent) = agent {
            let a = agent.actions.actions[agent.decide(&photo.features)];
            let obs = env.observe(i, &a).await?;
            agent_tally.add(env, i, &obs);
            *agent_actions.entry(a.name()).or_default() += 1;
            row.agent_action = Some(a.name());
            row.agent_bytes = Some(obs.bytes);
            row.agent_top1_agrees = Some(env.agrees_with(i, &obs, Accuracy::Top1));
        }
        per_photo.push(row);
        progress(i + 1, n);
    }

    let metrics = |t: &Tally| {
        let ratio = |base: f64| if base > 0.0 { t.bytes / base } else { 0.0 };
        Metrics {
            bytes_mean: t.bytes / nf,
            size_ratio_original: ratio(original_total),
            size_ratio_q75: ratio(q75_total),
            top1_agreement: t.top1 as f64 / nf,
            topk_agreement: t.topk as f64 / nf,
        }
    };
    let mut fixed: Vec<FixedRow> = fixed_actions
        .iter()
        .zip(&fixed_tallies)
        .map(|(a, t)| FixedRow {
            action: a.name(),
            quality: a.quality,
            max_side: a.max_side,
            metrics: metrics(t),
        })
        .collect();
    let fixed_extra = fixed.split_off(paper_actions.len());
    let best_fixed_row = fixed
        .iter()
        .filter(|r| r.metrics.top1_agreement >= target_agreement)
        .min_by(|a, b| a.metrics.bytes_mean.total_cmp(&b.metrics.bytes_mean));
    // The original itself always reaches any target (reference = original).
    let best_fixed = BestFixed {
        target_top1_agreement: target_agreement,
        action: Some(best_fixed_row.map_or("keep".to_string(), |r| r.action.clone())),
        bytes_mean: Some(best_fixed_row.map_or(original_total / nf, |r| r.metrics.bytes_mean)),
    };
    let oracle_agent_actions = agent.map(|_| metrics(&oracle_set));
    let agent = agent.map(|agent| {
        let m = metrics(&agent_tally);
        AgentRow {
            bytes_vs_best_fixed: best_fixed.bytes_mean.map(|b| m.bytes_mean / b),
            metrics: m,
            actions: agent_actions,
            action_set: agent.actions.name.clone(),
        }
    });
    Ok(EvalReport {
        photos: n,
        reference: env.reference.name().to_string(),
        service: String::new(),
        original_bytes_mean: original_total / nf,
        q75_bytes_mean: q75_total / nf,
        fixed,
        oracle: metrics(&oracle),
        best_fixed,
        fixed_extra,
        oracle_agent_actions,
        agent,
        service_requests: env.service_requests(),
        per_photo,
    })
}

impl EvalReport {
    /// Writes the JSON report (when `json` is given) and, in `out_dir`, the summary and
    /// per-photo CSV files and the plot.
    pub fn write(&self, out_dir: &Path, json: Option<&Path>) -> Result<(), ReportError> {
        if let Some(json) = json {
            report::write_json(json, self)?;
        }
        report::write_csv(
            &out_dir.join("eval-summary.csv"),
            &[
                "policy",
                "bytes_mean",
                "size_ratio_original",
                "size_ratio_q75",
                "top1_agreement",
                "topk_agreement",
            ],
            &self.csv_rows(),
        )?;
        let photo_rows: Vec<Vec<String>> = self
            .per_photo
            .iter()
            .map(|p| {
                vec![
                    p.name.clone(),
                    p.original_bytes.to_string(),
                    p.q75_bytes.to_string(),
                    p.reference_top1.clone().unwrap_or_default(),
                    p.oracle_action.clone(),
                    p.oracle_bytes.to_string(),
                    p.agent_action.clone().unwrap_or_default(),
                    p.agent_bytes.map(|b| b.to_string()).unwrap_or_default(),
                    p.agent_top1_agrees
                        .map(|b| b.to_string())
                        .unwrap_or_default(),
                ]
            })
            .collect();
        report::write_csv(
            &out_dir.join("eval-photos.csv"),
            &[
                "photo",
                "original_bytes",
                "q75_bytes",
                "reference_top1",
                "oracle_action",
                "oracle_bytes",
                "agent_action",
                "agent_bytes",
                "agent_top1_agrees",
            ],
            &photo_rows,
        )?;
        let plot = out_dir.join("eval.svg");
        report::plot_svg(&plot, &self.chart())?;
        Ok(())
    }
    /// Every policy's metrics in display order: fixed, extra fixed, oracle(s), agent.
    pub fn policies(&self) -> Vec<(String, &Metrics)> {
        let mut out: Vec<(String, &Metrics)> = self
            .fixed
            .iter()
            .chain(&self.fixed_extra)
            .map(|r| (r.action.clone(), &r.metrics))
            .collect();
        out.push(("oracle".into(), &self.oracle));
        if let Some(o) = self
            .oracle_agent_actions
            .as_ref()
            .filter(|_| !self.fixed_extra.is_empty())
        {
            out.push(("oracle/set".into(), o));
        }
        if let Some(a) = &self.agent {
            out.push(("agent".into(), &a.metrics));
        }
        out
    }

    /// A plain-text table for the terminal.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{} photos, reference = {}, original {:.1} KB, Q75 {:.1} KB (mean)\n",
            self.photos,
            self.reference,
            self.original_bytes_mean / 1000.0,
            self.q75_bytes_mean / 1000.0
        );
        s.push_str(&format!(
            "{:<10} {:>9} {:>8} {:>8} {:>7} {:>7}\n",
            "policy", "KB/photo", "vs orig", "vs Q75", "top-1", "agr@5"
        ));
        for (name, m) in self.policies() {
            s.push_str(&format!(
                "{:<10} {:>9.1} {:>8.3} {:>8.3} {:>6.1}% {:>6.1}%\n",
                name,
                m.bytes_mean / 1000.0,
                m.size_ratio_original,
                m.size_ratio_q75,
                m.top1_agreement * 100.0,
                m.topk_agreement * 100.0
            ));
        }
        if let (Some(name), Some(bytes)) = (&self.best_fixed.action, self.best_fixed.bytes_mean) {
            s.push_str(&format!(
                "best fixed at ≥ {:.0}% top-1: {name} ({:.1} KB)",
                self.best_fixed.target_top1_agreement * 100.0,
                bytes / 1000.0
            ));
            if let Some(a) = &self.agent {
                s.push_str(&format!(
                    "; agent uses {:.2}× its bytes at {:.1}% top-1",
                    a.bytes_vs_best_fixed.unwrap_or(f64::NAN),
                    a.metrics.top1_agreement * 100.0
                ));
            }
            s.push('\n');
        }
        if let Some(a) = &self.agent {
            let hist: Vec<String> = a.actions.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            s.push_str(&format!("agent actions: {}\n", hist.join(" ")));
        }
        s
    }

    /// Rows for the summary CSV.
    pub fn csv_rows(&self) -> Vec<Vec<String>> {
        self.policies()
            .into_iter()
            .map(|(name, m)| {
                vec![
                    name,
                    format!("{:.1}", m.bytes_mean),
                    format!("{:.4}", m.size_ratio_original),
                    format!("{:.4}", m.size_ratio_q75),
                    format!("{:.4}", m.top1_agreement),
                    format!("{:.4}", m.topk_agreement),
                ]
            })
            .collect()
    }

    /// The bytes-vs-agreement chart: fixed curve (top-1 and agreement@5), oracle, agent.
    pub fn chart(&self) -> crate::report::Chart {
        use crate::report::{Chart, PALETTE, Series};
        let kb = |b: f64| b / 1000.0;
        let mut series = vec![
            Series {
                name: "fixed quality, top-1".into(),
                points: self
                    .fixed
                    .iter()
                    .map(|r| (kb(r.metrics.bytes_mean), r.metrics.top1_agreement * 100.0))
                    .collect(),
                labels: self.fixed.iter().map(|r| r.action.clone()).collect(),
                line: true,
                color: PALETTE[0],
            },
            Series {
                name: "fixed quality, agreement@5".into(),
                points: self
                    .fixed
                    .iter()
                    .map(|r| (kb(r.metrics.bytes_mean), r.metrics.topk_agreement * 100.0))
                    .collect(),
                labels: vec![],
                line: true,
                color: PALETTE[5],
            },
            Series {
                name: "oracle (top-1)".into(),
                points: vec![(
                    kb(self.oracle.bytes_mean),
                    self.oracle.top1_agreement * 100.0,
                )],
                labels: vec![],
                line: false,
                color: PALETTE[2],
            },
            Series {
                name: "original".into(),
                points: vec![(kb(self.original_bytes_mean), 100.0)],
                labels: vec![],
                line: false,
                color: PALETTE[4],
            },
        ];
        let mut sides: Vec<u32> = self.fixed_extra.iter().filter_map(|r| r.max_side).collect();
        sides.sort_unstable();
        sides.dedup();
        for (n, side) in sides.iter().enumerate() {
            let rows: Vec<&FixedRow> = self
                .fixed_extra
                .iter()
                .filter(|r| r.max_side == Some(*side))
                .collect();
            series.push(Series {
                name: format!("fixed quality at ≤ {side} px, top-1"),
                points: rows
                    .iter()
                    .map(|r| (kb(r.metrics.bytes_mean), r.metrics.top1_agreement * 100.0))
                    .collect(),
                labels: vec![],
                line: true,
                color: PALETTE[(3 + n) % PALETTE.len()],
            });
        }
        if let Some(a) = &self.agent {
            series.push(Series {
                name: "agent (top-1)".into(),
                points: vec![(kb(a.metrics.bytes_mean), a.metrics.top1_agreement * 100.0)],
                labels: vec![],
                line: false,
                color: PALETTE[1],
            });
        }
        let lowest = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(100.0f64, f64::min);
        Chart {
            title: format!(
                "Bytes vs agreement, {} photos ({})",
                self.photos, self.service
            ),
            x_label: "mean upload per photo (KB)".into(),
            y_label: "agreement with the reference (%)".into(),
            series,
            y_range: Some(((lowest - 5.0).max(0.0), 101.0)),
        }
    }
}
