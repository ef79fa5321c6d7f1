//! Per-image deviations below the live pair, on only while the deployment's own audits
//! show they keep the target (issue 15, item 3).
//!
//! The calibrated model predicts, for one image, each action's probability of agreeing with
//! the original ([`crate::agent::monotone`]). The image's *deviation candidate* is the
//! cheapest action cheaper than the served pair whose predicted agreement is at least
//! `deviation_floor`. The proxy sends the candidate instead of the served pair when its
//! predicted agreement is at least the gate's threshold τ; otherwise the served pair.
//!
//! τ is tuned from audits, not fixed offline. An audit of an image that has a candidate
//! also uploads the candidate, and the gate records (predicted, agreed). The threshold is
//! found by fixed-sequence testing (Learn-then-Test, Angelopoulos et al. 2021): the
//! records are sorted by prediction, most confident first, and walked down; every prefix
//! with at least `deviation_min_audits` records, and at least as many as could pass at all
//! (88 at 97 % and z = 1.645), is tested (its one-sided Wilson lower bound at
//! `confidence_z` must clear `target_agreement`), and the walk stops at the first failure.
//! (The thresholds tested are the records' own predictions, not a grid fixed in advance:
//! an approximation of the method.) τ is the prediction of the last record of the longest prefix that passed; no
//! prefix passed means no deviations. Stopping at the first failure is what keeps the
//! choice of τ from picking a lucky threshold among many.
//!
//! Why the bound speaks for what is sent: the rule in service (send the candidate when
//! its prediction is ≥ τ) is the rule the records were drawn under, so the records with
//! prediction ≥ τ are a uniform sample of the images that deviate. The other images go up
//! at the served pair, certified on its own, so the mixture clears the target as well.
//! The window slides (`window` records), so a deviation that stops paying (a new camera,
//! night) fails its test within a few dozen audits and switches itself off; a drift of
//! the live pair clears the records at once.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::pair::wilson;

/// The gate: recent (predicted, agreed) records of audited deviation candidates, and the
/// threshold they support.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeviationGate {
    /// (image number, predicted agreement, agreed), oldest first.
    records: VecDeque<(u64, f32, bool)>,
    /// Predictions at or above this deviate; `None`: off.
    threshold: Option<f32>,
    /// Images sent at their candidate instead of the served pair.
    deviated: u64,
    /// Times the gate went from off to on, and from on to off.
    switched_on: u64,
    switched_off: u64,
}

/// How the gate tests (from `[pair]`).
#[derive(Debug, Clone, Copy)]
pub struct GateRule {
    pub target: f64,
    pub z: f64,
    pub min_audits: usize,
    pub window: usize,
}

/// A snapshot for `GET /agent` and the metrics.
#[derive(Debug, Clone, Serialize)]
pub struct DeviationStatus {
    pub threshold: Option<f32>,
    pub records: usize,
    pub agreed: usize,
    pub deviated: u64,
    pub switched_on: u64,
    pub switched_off: u64,
}

/// The deviation candidate of one image: among the first `n` actions, the cheapest whose
/// `cost` is below the served pair's and whose prediction is at least `floor`, with its
/// prediction.
pub fn candidate(
    p: &[f32],
    n: usize,
    cost: impl Fn(usize) -> f64,
    served: usize,
    floor: f32,
) -> Option<(usize, f32)> {
    let n = n.min(p.len());
    if served >= n {
        return None;
    }
    let limit = cost(served);
    (0..n)
        .filter(|&a| a != served && p[a] >= floor)
        .map(|a| (a, cost(a)))
        .filter(|&(_, c)| c < limit)
        .min_by(|x, y| x.1.total_cmp(&y.1))
        .map(|(a, _)| (a, p[a]))
}

impl DeviationGate {
    /// Whether an image whose candidate has prediction `p` is sent at the candidate.
    pub fn deviates(&self, p: f32) -> bool {
        self.threshold.is_some_and(|t| p >= t)
    }

    /// Counts one image sent at its candidate.
    pub fn count_deviation(&mut self) {
        self.deviated += 1;
    }

    pub fn threshold(&self) -> Option<f32> {
        self.threshold
    }

    /// Records an audited candidate of image number `now` and re-tunes the threshold.
    pub fn record(&mut self, now: u64, predicted: f32, agreed: bool, rule: GateRule) {
        if !predicted.is_finite() {
            return;
        }
        self.records.push_back((now, predicted, agreed));
        while self.records.len() > rule.window.max(1) {
            self.records.pop_front();
        }
        self.retune(rule);
    }

    /// Drops records of images before `oldest`. Images sent at a small candidate earn
    /// little audit credit, so evidence may stop coming while the gate is on: old evidence
    /// expires, and without fresh evidence deviations stop.
    pub fn expire(&mut self, oldest: u64, rule: GateRule) {
        let before = self.records.len();
        while self.records.front().is_some_and(|r| r.0 < oldest) {
            self.records.pop_front();
        }
        if self.records.len() != before {
            self.retune(rule);
        }
    }

    /// Drops every record (the scenery changed): deviations stop until audits support them
    /// again.
    pub fn clear(&mut self) {
        self.records.clear();
        if self.threshold.take().is_some() {
            self.switched_off += 1;
        }
    }

    fn retune(&mut self, rule: GateRule) {
        // The smallest prefix that could pass at all (every record agreeing): testing
        // smaller ones would only stop the walk on a failure that says nothing.
        let first = (1..=rule.window.max(1))
            .find(|&n| wilson(n, n, rule.z).0 >= rule.target)
            .unwrap_or(usize::MAX)
            .max(rule.min_audits);
        let mut sorted: Vec<(f32, bool)> = self.records.iter().map(|r| (r.1, r.2)).collect();
        sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut agreed = 0usize;
        let mut found = None;
        let mut i = 0;
        while i < sorted.len() {
            // Records with the same prediction enter together: a threshold cannot split them.
            let p = sorted[i].0;
            while i < sorted.len() && sorted[i].0 == p {
                agreed += usize::from(sorted[i].1);
                i += 1;
            }
            if i < first {
                continue;
            }
            if wilson(agreed, i, rule.z).0 >= rule.target {
                found = Some(p);
            } else {
                break;
            }
        }
        match (self.threshold.is_some(), found.is_some()) {
            (false, true) => self.switched_on += 1,
            (true, false) => self.switched_off += 1,
            _ => {}
        }
        self.threshold = found;
    }

    pub fn status(&self) -> DeviationStatus {
        DeviationStatus {
            threshold: self.threshold,
            records: self.records.len(),
            agreed: self.records.iter().filter(|r| r.2).count(),
            deviated: self.deviated,
            switched_on: self.switched_on,
            switched_off: self.switched_off,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    const RULE: GateRule = GateRule {
        target: 0.97,
        z: 1.645,
        min_audits: 40,
        window: 400,
    };

    #[test]
    fn the_candidate_is_the_cheapest_confident_action_below_the_served_pair() {
        let p = [1.0, 0.99, 0.95, 0.7];
        let costs = [1.0, 0.6, 0.3, 0.1];
        let cost = |a: usize| costs[a];
        assert_eq!(candidate(&p, 4, cost, 0, 0.9), Some((2, 0.95)));
        assert_eq!(candidate(&p, 4, cost, 0, 0.98), Some((1, 0.99)));
        // Nothing below the served pair is confident enough.
        assert_eq!(candidate(&p, 4, cost, 1, 0.98), None);
        // Never the served pair itself, never a dearer one.
        assert_eq!(candidate(&p, 4, cost, 2, 0.5), Some((3, 0.7)));
        assert_eq!(candidate(&p, 4, cost, 3, 0.0), None);
        assert_eq!(candidate(&p, 4, cost, 9, 0.0), None);
    }

    /// Images whose candidate agrees with probability `truth(p)`, p uniform in [0.98, 1]
    /// (candidates above a `deviation_floor` of 0.98).
    fn stream(seed: u64, n: usize, truth: impl Fn(f32) -> f64) -> Vec<(f32, bool)> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let p: f32 = rng.random_range(0.98..1.0);
                (p, rng.random::<f64>() < truth(p))
            })
            .collect()
    }

    #[test]
    fn a_calibrated_model_is_switched_on_and_what_deviates_keeps_the_target() {
        // The model is right: the candidate agrees with the predicted probability.
        let mut on = 0;
        for seed in 0..8 {
            let mut gate = DeviationGate::default();
            for (p, ok) in stream(seed, 400, |p| p as f64) {
                gate.record(0, p, ok, RULE);
            }
            let Some(t) = gate.threshold() else { continue };
            on += 1;
            // What would deviate on fresh images of the same kind keeps the target.
            let fresh = stream(seed + 100, 20_000, |p| p as f64);
            let sent: Vec<bool> = fresh.iter().filter(|r| r.0 >= t).map(|r| r.1).collect();
            let rate = sent.iter().filter(|&&a| a).count() as f64 / sent.len() as f64;
            assert!(
                rate >= 0.97,
                "seed {seed}: threshold {t} lets {rate} through"
            );
            assert!(
                t < 0.999,
                "seed {seed}: threshold {t} deviates almost never"
            );
        }
        assert!(on >= 6, "switched on for {on} of 8 calibrated streams");
    }

    #[test]
    fn an_overconfident_model_never_deviates() {
        // Predictions 0.98-1.0, truth 8 points lower: no prefix clears 97 %.
        for seed in 0..8 {
            let mut gate = DeviationGate::default();
            for (p, ok) in stream(seed, 400, |p| p as f64 - 0.08) {
                gate.record(0, p, ok, RULE);
                assert_eq!(gate.threshold(), None, "seed {seed}");
            }
        }
    }

    #[test]
    fn a_deviation_that_stops_paying_switches_itself_off() {
        let mut gate = DeviationGate::default();
        for (p, ok) in stream(1, 400, |_| 1.0) {
            gate.record(0, p, ok, RULE);
        }
        assert!(gate.threshold().is_some());
        // The scenery changes: the same confident predictions now agree 70 % of the time.
        let mut off_after = None;
        for (k, (p, ok)) in stream(2, 400, |_| 0.7).into_iter().enumerate() {
            gate.record(0, p, ok, RULE);
            if gate.threshold().is_none() {
                off_after = Some(k + 1);
                break;
            }
        }
        let k = off_after.expect("the gate never switched off");
        assert!(k <= 80, "switched off only after {k} failing audits");
        assert_eq!(gate.status().switched_off, 1);
        // A drift clears the records at once.
        let mut gate = DeviationGate::default();
        for (p, ok) in stream(3, 200, |_| 1.0) {
            gate.record(0, p, ok, RULE);
        }
        assert!(gate.deviates(1.0));
        gate.clear();
        assert!(!gate.deviates(1.0));
        assert_eq!(gate.status().records, 0);
    }

    #[test]
    fn evidence_expires_and_the_gate_with_it() {
        let mut gate = DeviationGate::default();
        for (k, (p, ok)) in stream(5, 200, |_| 1.0).into_iter().enumerate() {
            gate.record(k as u64, p, ok, RULE);
        }
        assert!(gate.threshold().is_some());
        gate.expire(100, RULE);
        assert_eq!(gate.status().records, 100);
        assert!(gate.threshold().is_some(), "100 clean records still pass");
        gate.expire(150, RULE);
        assert_eq!(gate.threshold(), None, "50 records cannot pass at 97 %");
    }

    #[test]
    fn too_few_records_never_switch_it_on() {
        let mut gate = DeviationGate::default();
        for _ in 0..RULE.min_audits - 1 {
            gate.record(0, 0.999, true, RULE);
        }
        assert_eq!(gate.threshold(), None);
    }
}
