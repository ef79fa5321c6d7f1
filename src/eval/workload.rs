//! The calibrated agent against every fixed (max side, quality) pair and the per-image
//! oracle, on one workload's label table ([`crate::learn::table`]).
//!
//! * **Fixed pair**: one action applied to every photo.
//! * **Best fixed pair**: the fixed pair with the fewest bytes whose top-1 agreement on
//!   *these* photos reaches the target — chosen in hindsight on the evaluated photos
//!   themselves, so it is a stronger baseline than any operator could configure.
//! * **Oracle**: per photo, the action with the fewest bytes whose answer agrees (keep
//!   always agrees) — the floor no policy that sees only the image can beat.
//!
//! Size ratios are ratios of totals (Σ uploaded / Σ original), so large photos weigh
//! what they weigh on the wire.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::action::ActionSet;
use crate::agent::{Policy, QHead};
use crate::learn::table::{Row, Table};
use std::path::Path;

use crate::report::{self, Chart, PALETTE, ReportError, Series};

/// One policy's totals.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyRow {
    pub policy: String,
    pub bytes_mean: f64,
    /// Σ uploaded / Σ original.
    pub size_ratio: f64,
    /// Σ uploaded / Σ uploaded by the best fixed pair (when there is one).
    pub vs_best_fixed: Option<f64>,
    pub top1_agreement: f64,
    /// The paper's agreement@5.
    pub topk_agreement: f64,
}

/// One photo, for the CSV.
#[derive(Debug, Clone, Serialize)]
pub struct PhotoRow {
    pub name: String,
    pub source: String,
    pub width: u32,
    pub height: u32,
    pub original_bytes: usize,
    pub reference_top1: Option<String>,
    pub oracle_action: String,
    pub oracle_bytes: usize,
    pub best_fixed_bytes: Option<usize>,
    pub best_fixed_agrees: Option<bool>,
    pub agent_action: Option<String>,
    pub agent_bytes: Option<usize>,
    pub agent_agrees: Option<bool>,
}

/// Whether the targets hold on this workload.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// Agent's top-1 agreement ≥ target.
    pub agreement_met: bool,
    /// Agent's bytes ≤ 0.7 × the best fixed pair's.
    pub bytes_target_met: bool,
    /// Moonshot: ≤ 0.5 × the best fixed pair's.
    pub moonshot_met: bool,
    /// At least as good as the best fixed pair in bytes *and* agreement.
    pub dominates_best_fixed: bool,
}

/// The report of one workload.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadReport {
    pub workload: String,
    pub photos: usize,
    pub sources: Vec<String>,
    pub service: String,
    pub target_top1_agreement: f64,
    pub original_bytes_mean: f64,
    pub fixed: Vec<PolicyRow>,
    pub best_fixed: Option<PolicyRow>,
    pub oracle: PolicyRow,
    pub agent: Option<PolicyRow>,
    /// How often the agent chose each action.
    pub agent_actions: BTreeMap<String, usize>,
    /// Photos where no action cleared the threshold and the fallback pair went up.
    pub agent_fallbacks: usize,
    pub verdict: Option<Verdict>,
    /// The agent's rows per source (cross-source view).
    pub agent_by_source: Vec<(String, PolicyRow, Option<PolicyRow>)>,
    pub per_photo: Vec<PhotoRow>,
}

/// The agent's choice for every row (index into the action set) and whether it fell back.
pub fn agent_choices(table: &Table, head: &QHead, policy: &Policy) -> Vec<(usize, bool)> {
    table
        .rows
        .iter()
        .map(|r| policy.decide_explained(&head.predict(&r.state), &r.state, &table.actions))
        .collect()
}

fn totals(name: &str, rows: &[&Row], pick: impl Fn(usize, &Row) -> usize) -> PolicyRow {
    let n = rows.len().max(1) as f64;
    let (mut bytes, mut top1, mut topk, mut orig) = (0f64, 0usize, 0usize, 0f64);
    for (i, r) in rows.iter().enumerate() {
        let a = pick(i, r);
        bytes += r.bytes[a] as f64;
        top1 += usize::from(r.agree[a]);
        topk += usize::from(r.agree_k[a]);
        orig += r.original_bytes as f64;
    }
    PolicyRow {
        policy: name.to_string(),
        bytes_mean: bytes / n,
        size_ratio: bytes / orig.max(1.0),
        vs_best_fixed: None,
        top1_agreement: top1 as f64 / n,
        topk_agreement: topk as f64 / n,
    }
}

fn oracle_action(r: &Row) -> usize {
    (0..r.bytes.len())
        .filter(|&a| r.agree[a])
        .min_by_key(|&a| r.bytes[a])
        .unwrap_or(0)
}

/// Best fixed pair over `rows` in hindsight: fewest bytes with top-1 ≥ `target`.
fn best_fixed_index(rows: &[&Row], actions: &ActionSet, target: f64) -> Option<usize> {
    (0..actions.len())
        .map(|a| (a, totals("", rows, |_, _| a)))
        .filter(|(_, t)| t.top1_agreement >= target)
        .min_by(|x, y| x.1.bytes_mean.total_cmp(&y.1.bytes_mean))
        .map(|(a, _)| a)
}

/// Evaluates `agent` (head + policy), every fixed pair and the oracle on `table`.
pub fn evaluate(
    workload: &str,
    table: &Table,
    agent: Option<(&QHead, &Policy)>,
    target: f64,
) -> WorkloadReport {
    let actions = &table.actions;
    let rows: Vec<&Row> = table.rows.iter().collect();
    let n = rows.len();
    let best = best_fixed_index(&rows, actions, target);
    let with_vs = |mut p: PolicyRow, base: Option<f64>| {
        p.vs_best_fixed = base.map(|b| p.bytes_mean / b.max(1e-9));
        p
    };
    let best_row = best.map(|a| totals(&actions.actions[a].name(), &rows, |_, _| a));
    let base = best_row.as_ref().map(|b| b.bytes_mean);
    let fixed: Vec<PolicyRow> = (0..actions.len())
        .map(|a| with_vs(totals(&actions.actions[a].name(), &rows, |_, _| a), base))
        .collect();
    let oracle = with_vs(totals("oracle", &rows, |_, r| oracle_action(r)), base);
    let choices = agent.map(|(head, policy)| agent_choices(table, head, policy));
    let agent_row = choices
        .as_ref()
        .map(|c| with_vs(totals("agent", &rows, |i, _| c[i].0), base));
    let mut agent_actions = BTreeMap::new();
    if let Some(c) = &choices {
        for (a, _) in c {
            *agent_actions
                .entry(actions.actions[*a].name())
                .or_insert(0usize) += 1;
        }
    }
    let verdict = agent_row.as_ref().map(|a| {
        let ratio = a.vs_best_fixed.unwrap_or(f64::INFINITY);
        let best_agree = best_row.as_ref().map_or(1.0, |b| b.top1_agreement);
        Verdict {
            agreement_met: a.top1_agreement >= target,
            bytes_target_met: ratio <= 0.7,
            moonshot_met: ratio <= 0.5,
            dominates_best_fixed: ratio <= 1.0 && a.top1_agreement >= best_agree,
        }
    });
    let mut agent_by_source = Vec::new();
    if let Some(c) = &choices {
        for s in table.sources() {
            let idx: Vec<usize> = (0..n).filter(|&i| rows[i].source == s).collect();
            let sub: Vec<&Row> = idx.iter().map(|&i| rows[i]).collect();
            let sb = best_fixed_index(&sub, actions, target);
            let sbest = sb.map(|a| totals(&actions.actions[a].name(), &sub, |_, _| a));
            let sbase = sbest.as_ref().map(|b| b.bytes_mean);
            let ag = with_vs(totals("agent", &sub, |k, _| c[idx[k]].0), sbase);
            agent_by_source.push((s, ag, sbest));
        }
    }
    let per_photo = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let o = oracle_action(r);
            PhotoRow {
                name: r.name.clone(),
                source: r.source.clone(),
                width: r.width,
                height: r.height,
                original_bytes: r.original_bytes,
                reference_top1: r.reference_top1.clone(),
                oracle_action: actions.actions[o].name(),
                oracle_bytes: r.bytes[o],
                best_fixed_bytes: best.map(|a| r.bytes[a]),
                best_fixed_agrees: best.map(|a| r.agree[a]),
                agent_action: choices.as_ref().map(|c| actions.actions[c[i].0].name()),
                agent_bytes: choices.as_ref().map(|c| r.bytes[c[i].0]),
                agent_agrees: choices.as_ref().map(|c| r.agree[c[i].0]),
            }
        })
        .collect();
    WorkloadReport {
        workload: workload.to_string(),
        photos: n,
        sources: table.sources(),
        service: table.service.clone(),
        target_top1_agreement: target,
        original_bytes_mean: rows.iter().map(|r| r.original_bytes as f64).sum::<f64>()
            / n.max(1) as f64,
        fixed,
        best_fixed: best_row.map(|b| with_vs(b, base)),
        oracle,
        agent_fallbacks: choices
            .as_ref()
            .map_or(0, |c| c.iter().filter(|x| x.1).count()),
        agent: agent_row,
        agent_actions,
        verdict,
        agent_by_source,
        per_photo,
    }
}

impl WorkloadReport {
    /// Writes the JSON report (when `json` is given) and, in `out_dir`, the summary,
    /// per-photo and every-photo×action CSV files, the table as JSON and the plot.
    pub fn write(
        &self,
        out_dir: &Path,
        json: Option<&Path>,
        table: &Table,
    ) -> Result<(), ReportError> {
        let w = &self.workload;
        if let Some(json) = json {
            report::write_json(json, self)?;
        }
        report::write_csv(
            &out_dir.join(format!("{w}-summary.csv")),
            &[
                "workload",
                "kind",
                "policy",
                "bytes_mean",
                "size_ratio",
                "vs_best_fixed",
                "top1_agreement",
                "topk_agreement",
            ],
            &self.csv_rows(),
        )?;
        let photo_rows: Vec<Vec<String>> = self
            .per_photo
            .iter()
            .map(|p| {
                let opt = |v: Option<String>| v.unwrap_or_default();
                vec![
                    p.name.clone(),
                    p.source.clone(),
                    p.width.to_string(),
                    p.height.to_string(),
                    p.original_bytes.to_string(),
                    opt(p.reference_top1.clone()),
                    p.oracle_action.clone(),
                    p.oracle_bytes.to_string(),
                    opt(p.best_fixed_bytes.map(|b| b.to_string())),
                    opt(p.best_fixed_agrees.map(|b| b.to_string())),
                    opt(p.agent_action.clone()),
                    opt(p.agent_bytes.map(|b| b.to_string())),
                    opt(p.agent_agrees.map(|b| b.to_string())),
                ]
            })
            .collect();
        report::write_csv(
            &out_dir.join(format!("{w}-photos.csv")),
            &[
                "photo",
                "source",
                "width",
                "height",
                "original_bytes",
                "reference_top1",
                "oracle_action",
                "oracle_bytes",
                "best_fixed_bytes",
                "best_fixed_agrees",
                "agent_action",
                "agent_bytes",
                "agent_agrees",
            ],
            &photo_rows,
        )?;
        report::plot_svg(
            &out_dir.join(format!("{w}.svg")),
            &self.chart(&table.actions),
        )?;
        report::write_json(&out_dir.join(format!("{w}-table.json")), &table.rows)?;
        // Every photo × action, for anyone who wants to try another policy on the same answers.
        let cells: Vec<Vec<String>> = table
            .rows
            .iter()
            .flat_map(|r| {
                table
                    .actions
                    .actions
                    .iter()
                    .enumerate()
                    .map(move |(a, action)| {
                        vec![
                            r.name.clone(),
                            r.source.clone(),
                            action.name(),
                            r.bytes[a].to_string(),
                            r.original_bytes.to_string(),
                            u8::from(r.agree[a]).to_string(),
                            u8::from(r.agree_k[a]).to_string(),
                        ]
                    })
            })
            .collect();
        report::write_csv(
            &out_dir.join(format!("{w}-table.csv")),
            &[
                "photo",
                "source",
                "action",
                "bytes",
                "original_bytes",
                "top1_agrees",
                "topk_agrees",
            ],
            &cells,
        )?;
        Ok(())
    }
    /// A plain-text summary for the terminal.
    pub fn table(&self) -> String {
        let mut s = format!(
            "workload {}: {} photos from {} ({}), original {:.0} KB mean, against {}\n",
            self.workload,
            self.photos,
            self.sources.len(),
            self.sources.join(", "),
            self.original_bytes_mean / 1000.0,
            self.service
        );
        s.push_str(&format!(
            "{:<14} {:>10} {:>9} {:>10} {:>7} {:>7}\n",
            "policy", "KB/photo", "vs orig", "vs best", "top-1", "agr@5"
        ));
        let mut show: Vec<&PolicyRow> = Vec::new();
        if let Some(b) = &self.best_fixed {
            show.push(b);
        }
        show.push(&self.oracle);
        if let Some(a) = &self.agent {
            show.push(a);
        }
        for (k, p) in show.iter().enumerate() {
            let label = if k == 0 && self.best_fixed.is_some() {
                format!("best {}", p.policy)
            } else {
                p.policy.clone()
            };
            s.push_str(&format!(
                "{:<14} {:>10.1} {:>9.3} {:>10} {:>6.1}% {:>6.1}%\n",
                label,
                p.bytes_mean / 1000.0,
                p.size_ratio,
                p.vs_best_fixed.map_or("–".into(), |v| format!("{v:.3}")),
                p.top1_agreement * 100.0,
                p.topk_agreement * 100.0
            ));
        }
        if self.agent.is_some() {
            let hist: Vec<String> = self
                .agent_actions
                .iter()
                .map(|(k, v)| format!("{k}:{v}"))
                .collect();
            s.push_str(&format!(
                "agent actions ({} fell back): {}\n",
                self.agent_fallbacks,
                hist.join(" ")
            ));
        }
        if let Some(v) = &self.verdict {
            s.push_str(&format!(
                "targets: agreement ≥ {:.0}% {}; bytes ≤ 0.7× best fixed {}; moonshot ≤ 0.5× {}; at least as good as best fixed {}\n",
                self.target_top1_agreement * 100.0,
                met(v.agreement_met),
                met(v.bytes_target_met),
                met(v.moonshot_met),
                met(v.dominates_best_fixed)
            ));
        }
        s
    }

    /// Rows for the summary CSV (every fixed pair, best fixed, oracle, agent).
    pub fn csv_rows(&self) -> Vec<Vec<String>> {
        let mut all: Vec<(&str, &PolicyRow)> = self.fixed.iter().map(|p| ("fixed", p)).collect();
        if let Some(b) = &self.best_fixed {
            all.push(("best_fixed", b));
        }
        all.push(("oracle", &self.oracle));
        if let Some(a) = &self.agent {
            all.push(("agent", a));
        }
        all.into_iter()
            .map(|(kind, p)| {
                vec![
                    self.workload.clone(),
                    kind.to_string(),
                    p.policy.clone(),
                    format!("{:.1}", p.bytes_mean),
                    format!("{:.5}", p.size_ratio),
                    p.vs_best_fixed.map_or(String::new(), |v| format!("{v:.4}")),
                    format!("{:.4}", p.top1_agreement),
                    format!("{:.4}", p.topk_agreement),
                ]
            })
            .collect()
    }

    /// Bytes (vs original) against agreement: one line per max side across qualities,
    /// the oracle, the best fixed pair and the agent.
    pub fn chart(&self, actions: &ActionSet) -> Chart {
        let mut sides: Vec<Option<u32>> = actions
            .actions
            .iter()
            .filter(|a| a.quality.is_some())
            .map(|a| a.max_side)
            .collect();
        sides.dedup();
        let mut series = Vec::new();
        for (n, side) in sides.iter().enumerate() {
            let pts: Vec<(f64, f64)> = actions
                .actions
                .iter()
                .zip(&self.fixed)
                .filter(|(a, _)| a.quality.is_some() && a.max_side == *side)
                .map(|(_, p)| (p.size_ratio * 100.0, p.top1_agreement * 100.0))
                .collect();
            series.push(Series {
                name: match side {
                    Some(s) => format!("fixed, ≤ {s} px"),
                    None => "fixed, full size".into(),
                },
                points: pts,
                labels: vec![],
                line: true,
                color: PALETTE[n % PALETTE.len()],
            });
        }
        let point = |name: &str, p: &PolicyRow, color| Series {
            name: name.into(),
            points: vec![(p.size_ratio * 100.0, p.top1_agreement * 100.0)],
            labels: vec![name.into()],
            line: false,
            color,
        };
        series.push(point("oracle", &self.oracle, PALETTE[2]));
        if let Some(b) = &self.best_fixed {
            series.push(point(&format!("best fixed ({})", b.policy), b, PALETTE[5]));
        }
        if let Some(a) = &self.agent {
            series.push(point("agent", a, PALETTE[1]));
        }
        let lowest = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(100.0f64, f64::min);
        Chart {
            title: format!(
                "{}: bytes vs top-1 agreement, {} photos",
                self.workload, self.photos
            ),
            x_label: "uploaded bytes, % of the originals".into(),
            y_label: "top-1 agreement with the original's answer (%)".into(),
            series,
            y_range: Some(((lowest - 2.0).max(0.0).max(50.0), 100.5)),
        }
    }
}

fn met(b: bool) -> &'static str {
    if b { "met" } else { "MISSED" }
}
