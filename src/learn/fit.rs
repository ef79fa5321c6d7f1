//! Fitting the calibrated agent on a label table ([`super::table`]).
//!
//! 1. **Probabilities.** The head (a small MLP over the compact state) is trained by
//!    least squares against every action's 0/1 agreement — the Brier score, a proper
//!    scoring rule, so its outputs estimate probabilities.
//! 2. **Held-out predictions.** Folds are the photos' *sources* when there are at least
//!    three (leave one source out: each photo is predicted by a head that never saw a
//!    photo from its source, which is what a new workload looks like), else four folds
//!    by a hash of the file name.
//! 3. **The fallback** is the best fixed pair on the training photos: the fewest bytes
//!    among pairs whose conformal bound (below) meets the target. When the head is not
//!    sure of any action, the agent sends that — never worse than fixed by design.
//! 4. **The threshold, by conformal risk control** (Angelopoulos et al., 2022): with n
//!    held-out photos and the disagreement rate R̂(τ) of the policy at threshold τ, take
//!    the smallest τ with (n·R̃(τ) + 1) / (n + 1) ≤ 1 − target, where R̃ is R̂ made
//!    non-increasing in τ (the largest R̂ at any τ' ≥ τ). For exchangeable photos this
//!    bounds the expected disagreement on a new photo by 1 − target. A one-sided 95 %
//!    Wilson lower bound of the held-out agreement is reported beside it.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use sha2::{Digest, Sha256};

use super::table::{Row, Table};
use crate::action::{Action, ActionSet};
use crate::agent::{AdamConfig, Policy, QHead, cheapest_above, expected_bytes, monotone, state};

/// How the head is fitted.
#[derive(Debug, Clone)]
pub struct FitConfig {
    /// Hidden layer widths.
    pub hidden: Vec<usize>,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    pub seed: u64,
    /// Top-1 agreement to hold (e.g. 0.97).
    pub target: f64,
}

impl Default for FitConfig {
    fn default() -> Self {
        FitConfig {
            hidden: vec![32, 32],
            epochs: 120,
            batch: 256,
            lr: 0.003,
            seed: 0,
            target: 0.97,
        }
    }
}

/// The held-out result of one threshold.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Candidate {
    pub threshold: f32,
    /// Held-out top-1 agreement.
    pub agreement: f64,
    /// Conformal bound on the expected disagreement: (n·R̃ + 1) / (n + 1).
    pub risk_bound: f64,
    /// Σ uploaded / Σ original bytes.
    pub size_ratio: f64,
    /// Σ uploaded / Σ bytes of the fallback pair.
    pub vs_fallback: f64,
}

/// Held-out result per source at the chosen threshold.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SourceResult {
    pub source: String,
    pub photos: usize,
    pub agreement: f64,
    pub size_ratio: f64,
    pub vs_fallback: f64,
}

/// The fitted agent and how it was chosen.
#[derive(Debug, Clone)]
pub struct Fitted {
    pub head: QHead,
    pub policy: Policy,
    pub fallback: Action,
    /// Held-out agreement of the fallback pair on the training photos.
    pub fallback_agreement: f64,
    pub chosen: Candidate,
    /// One-sided 95 % Wilson lower bound of the held-out agreement at the chosen threshold.
    pub agreement_lower_95: f64,
    pub curve: Vec<Candidate>,
    pub by_source: Vec<SourceResult>,
    /// How the folds were made: `source` or `hash`.
    pub folds: String,
}

/// Trains a head on `rows` (every action's agreement is a target).
pub fn train_head(rows: &[&Row], actions: &ActionSet, cfg: &FitConfig, seed: u64) -> QHead {
    let dim = rows.first().map_or(state::COMPACT_DIM, |r| r.state.len());
    let mut dims = vec![dim];
    dims.extend(&cfg.hidden);
    dims.push(actions.len());
    let mut rng = StdRng::seed_from_u64(seed);
    let adam = AdamConfig {
        lr: cfg.lr,
        ..AdamConfig::default()
    };
    let mut head = QHead::new(&dims, adam, &mut rng);
    let mut x = ndarray::Array2::<f32>::zeros((rows.len(), dim));
    for (i, r) in rows.iter().enumerate() {
        x.row_mut(i)
            .assign(&ndarray::ArrayView1::from(&r.state[..]));
    }
    head.fit_standardisation(x.view());
    let mut pairs: Vec<(usize, usize)> = (0..rows.len())
        .flat_map(|i| (0..actions.len()).map(move |a| (i, a)))
        .collect();
    let batch = cfg.batch.max(1);
    let mut bx = ndarray::Array2::<f32>::zeros((batch, dim));
    for _ in 0..cfg.epochs {
        pairs.shuffle(&mut rng);
        for chunk in pairs.chunks(batch) {
            if chunk.len() < batch / 4 {
                continue;
            }
            let mut xb = bx.slice_mut(ndarray::s![..chunk.len(), ..]);
            let mut acts = Vec::with_capacity(chunk.len());
            let mut targets = Vec::with_capacity(chunk.len());
            for (k, &(i, a)) in chunk.iter().enumerate() {
                xb.row_mut(k).assign(&x.row(i));
                acts.push(a);
                targets.push(f32::from(u8::from(rows[i].agree[a])));
            }
            head.train_step(bx.slice(ndarray::s![..chunk.len(), ..]), &acts, &targets);
        }
    }
    head
}

/// Median bits per output pixel of every action over `rows` (where its upload was not
/// the original); 8 where it always was.
pub fn bits_per_pixel(rows: &[&Row], actions: &ActionSet) -> Vec<f32> {
    actions
        .actions
        .iter()
        .enumerate()
        .map(|(a, action)| {
            let mut v: Vec<f64> = rows
                .iter()
                .filter(|r| r.bytes[a] < r.original_bytes)
                .map(|r| r.bytes[a] as f64 * 8.0 / action.output_pixels(r.width, r.height))
                .collect();
            if v.is_empty() {
                return 8.0;
            }
            v.sort_by(f64::total_cmp);
            v[v.len() / 2] as f32
        })
        .collect()
}

/// The conformal bound (n·risk + 1) / (n + 1) on the expected disagreement.
pub fn risk_bound(n: usize, risk: f64) -> f64 {
    (n as f64 * risk + 1.0) / (n as f64 + 1.0)
}

/// One-sided Wilson lower bound (z = 1.645, 95 %) of a proportion.
pub fn wilson_lower(successes: usize, n: usize) -> f64 {
    if n == 0 {
        return 0.0;
    }
    let (p, n, z) = (successes as f64 / n as f64, n as f64, 1.645f64);
    let denom = 1.0 + z * z / n;
    let centre = p + z * z / (2.0 * n);
    let margin = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    ((centre - margin) / denom).max(0.0)
}

/// The fixed pair with the fewest bytes over `rows` whose conformal bound meets `target`
/// (keep when none does), and its agreement.
pub fn best_fixed(rows: &[&Row], actions: &ActionSet, target: f64) -> (usize, f64) {
    let n = rows.len();
    let keep = actions.index_of(&Action::KEEP).unwrap_or(0);
    (0..actions.len())
        .filter(|&a| actions.actions[a] != Action::KEEP)
        .map(|a| {
            let agree = rows.iter().filter(|r| r.agree[a]).count();
            let bytes: usize = rows.iter().map(|r| r.bytes[a]).sum();
            (a, agree as f64 / n.max(1) as f64, bytes)
        })
        .filter(|&(_, agreement, _)| risk_bound(n, 1.0 - agreement) <= 1.0 - target)
        .min_by_key(|&(_, _, bytes)| bytes)
        .map_or((keep, 1.0), |(a, agreement, _)| (a, agreement))
}

fn hash_fold(name: &str, folds: usize) -> usize {
    let h = Sha256::digest(format!("fold:{name}").as_bytes());
    usize::from(h[0]) % folds.max(1)
}

/// Fits the calibrated agent on every row of `table` (see the module doc).
pub fn fit(table: &Table, cfg: &FitConfig, mut progress: impl FnMut(usize, usize)) -> Fitted {
    let actions = &table.actions;
    // Thresholds, the fallback and every reported figure come from whole photos only;
    // training variants only teach the heads.
    let all: Vec<&Row> = table.rows.iter().collect();
    let rows: Vec<&Row> = table.rows.iter().filter(|r| !r.augmented).collect();
    let sources = table.sources();
    let by_source = sources.len() >= 3;
    let (folds, fold_kind) = if by_source {
        (sources.len(), "source")
    } else {
        (4, "hash")
    };
    // A variant (`name#augK`) always shares its photo's fold.
    let fold_of_row = |r: &Row| {
        if by_source {
            sources.iter().position(|s| *s == r.source).unwrap_or(0)
        } else {
            hash_fold(r.name.split('#').next().unwrap_or(&r.name), folds)
        }
    };
    let fold_of: Vec<usize> = rows.iter().map(|r| fold_of_row(r)).collect();
    let (fallback, fallback_agreement) = best_fixed(&rows, actions, cfg.target);
    // Held-out predictions, made monotone, and expected bytes, per row.
    let mut held_out: Vec<(Vec<f32>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); rows.len()];
    for fold in 0..folds {
        let fit_rows: Vec<&Row> = all
            .iter()
            .filter(|r| fold_of_row(r) != fold)
            .copied()
            .collect();
        if fit_rows.is_empty() {
            continue;
        }
        let head = train_head(
            &fit_rows,
            actions,
            cfg,
            cfg.seed.wrapping_add(fold as u64 + 1),
        );
        let bpp = bits_per_pixel(&fit_rows, actions);
        for (i, r) in rows.iter().enumerate().filter(|&(i, _)| fold_of[i] == fold) {
            let g = state::geometry(&r.state);
            let q = head.predict(&r.state);
            held_out[i] = match g {
                Some(g) => (
                    monotone(&q, actions, g.long),
                    expected_bytes(actions, &bpp, &g),
                ),
                None => (
                    vec![f32::NEG_INFINITY; actions.len()],
                    vec![0.0; actions.len()],
                ),
            };
        }
        progress(fold + 1, folds + 1);
    }
    // Evaluate every threshold on the held-out predictions.
    let n = rows.len();
    let original_total: f64 = rows.iter().map(|r| r.original_bytes as f64).sum();
    let fallback_total: f64 = rows.iter().map(|r| r.bytes[fallback] as f64).sum();
    let choose = |i: usize, t: f32| {
        let (p, e) = &held_out[i];
        cheapest_above(p, e, t, actions).unwrap_or(fallback)
    };
    let grid: Vec<f32> = (0..=440).map(|k| k as f32 * 0.0025).collect();
    let mut curve: Vec<Candidate> = grid
        .iter()
        .map(|&t| {
            let (mut agree, mut bytes) = (0usize, 0f64);
            for (i, r) in rows.iter().enumerate() {
                let a = choose(i, t);
                agree += usize::from(r.agree[a]);
                bytes += r.bytes[a] as f64;
            }
            Candidate {
                threshold: t,
                agreement: agree as f64 / n.max(1) as f64,
                risk_bound: 0.0,
                size_ratio: bytes / original_total.max(1.0),
                vs_fallback: bytes / fallback_total.max(1.0),
            }
        })
        .collect();
    // R̃(τ): the largest held-out risk at any τ' ≥ τ.
    let mut worst = 0f64;
    for c in curve.iter_mut().rev() {
        worst = worst.max(1.0 - c.agreement);
        c.risk_bound = risk_bound(n, worst);
    }
    let chosen = curve
        .iter()
        .find(|c| c.risk_bound <= 1.0 - cfg.target)
        .cloned()
        .unwrap_or_else(|| {
            // No threshold is safe enough: always the fallback.
            let agreement = fallback_agreement;
            Candidate {
                threshold: 2.0,
                agreement,
                risk_bound: risk_bound(n, 1.0 - agreement),
                size_ratio: fallback_total / original_total.max(1.0),
                vs_fallback: 1.0,
            }
        });
    let agree_n = rows
        .iter()
        .enumerate()
        .filter(|&(i, r)| r.agree[choose(i, chosen.threshold)])
        .count();
    let by_source = sources
        .iter()
        .map(|s| {
            let idx: Vec<usize> = (0..n).filter(|&i| rows[i].source == *s).collect();
            let agree = idx
                .iter()
                .filter(|&&i| rows[i].agree[choose(i, chosen.threshold)])
                .count();
            let bytes: f64 = idx
                .iter()
                .map(|&i| rows[i].bytes[choose(i, chosen.threshold)] as f64)
                .sum();
            let orig: f64 = idx.iter().map(|&i| rows[i].original_bytes as f64).sum();
            let fb: f64 = idx.iter().map(|&i| rows[i].bytes[fallback] as f64).sum();
            SourceResult {
                source: s.clone(),
                photos: idx.len(),
                agreement: agree as f64 / idx.len().max(1) as f64,
                size_ratio: bytes / orig.max(1.0),
                vs_fallback: bytes / fb.max(1.0),
            }
        })
        .collect();
    let head = train_head(&all, actions, cfg, cfg.seed);
    progress(folds + 1, folds + 1);
    Fitted {
        policy: Policy::Calibrated {
            threshold: chosen.threshold,
            fallback,
            bits_per_pixel: bits_per_pixel(&all, actions),
        },
        head,
        fallback: actions.actions[fallback],
        fallback_agreement,
        agreement_lower_95: wilson_lower(agree_n, n),
        chosen,
        curve,
        by_source,
        folds: fold_kind.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conformal_bound_and_wilson_bound() {
        // 300 photos, 2 % disagreement: (6 + 1) / 301.
        assert!((risk_bound(300, 0.02) - 7.0 / 301.0).abs() < 1e-12);
        let lb = wilson_lower(97, 100);
        assert!(lb > 0.92 && lb < 0.97, "{lb}");
        assert_eq!(wilson_lower(0, 0), 0.0);
    }

    fn row(source: &str, i: usize, state: Vec<f32>, agree: Vec<bool>, bytes: Vec<usize>) -> Row {
        Row {
            name: format!("{source}/{i}.jpg"),
            source: source.into(),
            sha: format!("{i}"),
            original_bytes: 1_000_000,
            width: 4000,
            height: 3000,
            state,
            reference_top1: None,
            bytes,
            agree_k: agree.clone(),
            agree,
            augmented: false,
        }
    }

    /// A synthetic workload where the backbone's confidence decides robustness: a
    /// confident photo survives every action, an unsure one only sides ≥ 768.
    fn synthetic(sources: &[&str], per_source: usize) -> Table {
        let actions = ActionSet::uploads();
        let mut rows = Vec::new();
        for (s, source) in sources.iter().enumerate() {
            for i in 0..per_source {
                let confident = (i + s) % 3 != 0;
                let mut st = vec![0f32; state::COMPACT_DIM];
                st[state::idx::LN_LONG] = 4000f32.ln();
                st[state::idx::LN_SHORT] = 3000f32.ln();
                st[state::idx::LN_BYTES] = 1e6f32.ln();
                st[state::idx::P1] = if confident { 0.9 } else { 0.3 } + (i % 7) as f32 * 0.01;
                st[state::idx::QUALITY] = 0.9;
                let agree: Vec<bool> = actions
                    .actions
                    .iter()
                    .map(|a| confident || a.max_side.is_none_or(|side| side >= 768))
                    .collect();
                let bytes: Vec<usize> = actions
                    .actions
                    .iter()
                    .map(|a| match a.quality {
                        None => 1_000_000,
                        Some(q) => {
                            (a.output_pixels(4000, 3000) * f64::from(q) / 400.0).min(1e6) as usize
                        }
                    })
                    .collect();
                rows.push(row(source, i, st, agree, bytes));
            }
        }
        Table {
            actions,
            rows,
            service: "synthetic".into(),
            requests: 0,
        }
    }

    #[test]
    fn fit_learns_who_is_robust_and_holds_the_target() {
        let table = synthetic(&["a", "b", "c"], 60);
        let cfg = FitConfig {
            epochs: 60,
            ..FitConfig::default()
        };
        let fitted = fit(&table, &cfg, |_, _| {});
        assert_eq!(fitted.folds, "source");
        // The fallback is the cheapest pair every photo survives: 768 px at q30.
        assert_eq!(
            fitted.fallback,
            Action {
                max_side: Some(768),
                quality: Some(30)
            }
        );
        // Held out by source, the agent keeps the target and sends far fewer bytes.
        assert!(fitted.chosen.agreement >= 0.97, "{:?}", fitted.chosen);
        assert!(fitted.chosen.vs_fallback < 0.6, "{:?}", fitted.chosen);
        for s in &fitted.by_source {
            assert!(s.agreement >= 0.95, "{s:?}");
        }
    }
}
