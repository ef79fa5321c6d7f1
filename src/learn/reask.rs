//! Re-asking when the cloud is unsure: which answers to images sent at the live pair are
//! unsure enough that the proxy also sends the original and gives the client *that* answer.
//!
//! The cloud's answer to an image sent at the pair is free, and its top-1 margin (top-1
//! score minus top-2) predicts whether it matches the answer to the original: AUC
//! 0.87–0.91 on the stream traffic at `q95@1280`, `q95@960` and `q85@960`
//! (`docs/bench/notes.md`). So the images whose margin is among the lowest `rate` of the
//! recent answers at the served pair go up a second time as sent. On that traffic, 5 %
//! re-asked lifted `q95@1280` from 96.8–97.7 % to 98.3–98.5 % agreement for 3–6 % more bytes.
//!
//! A rate and not a fixed margin: scores are on each API's own scale and margins move with
//! the scenery (night photos are answered less confidently), while a rate bounds the extra
//! calls and bytes an operator pays. The window holds the margins of one served pair only:
//! when the pair changes it starts again, and until it holds [`MIN_SERVED_MARGINS`] nothing
//! is re-asked. That minimum is small on purpose: a fresh proxy serves its prior's pair
//! uncertified, and its first photos are the ones a short trial judges it by (with 40, the
//! first pass over 51 new photos re-asked none, `docs/bench/notes.md`, session 27). On a
//! few margins the quantile errs towards re-asking more (with 10 margins, 2 in 11 answers
//! are re-asked at a rate of 0.1), which costs bytes and not answers.

use std::collections::VecDeque;

use crate::protocol::Answer;

/// Margins the quantile is taken over (the most recent ones at the served pair).
pub const WINDOW: usize = 400;
/// Audited margins needed before a pair's audits are counted with re-asks (a few dozen
/// audits never certify on re-asks alone).
pub const MIN_MARGINS: usize = 40;
/// Margins of the served pair needed before anything is re-asked.
pub const MIN_SERVED_MARGINS: usize = 10;

/// The top-1 margin of an answer: its best label's score minus the second's (0 when there
/// is only one); `None` without labels (detection answers), which are never re-asked.
pub fn top1_margin(answer: &Answer) -> Option<f64> {
    let score = |i: usize| answer.labels.get(i).map_or(0.0, |l| f64::from(l.score));
    (!answer.labels.is_empty()).then(|| score(0) - score(1))
}

/// The margin under which the lowest `rate` of `margins` fall: their `rate` quantile;
/// `None` (re-ask nothing) with fewer than [`MIN_MARGINS`] or when `rate` re-asks none.
/// The live pair uses it on each pair's audited margins to count what a client would get
/// ([`crate::learn::pair`]), the request path on the served pair's recent margins.
pub fn quantile_threshold(margins: impl Iterator<Item = f64>, rate: f64) -> Option<f64> {
    quantile_over(margins, rate, MIN_MARGINS)
}

/// [`quantile_threshold`] over at least `min` margins.
fn quantile_over(margins: impl Iterator<Item = f64>, rate: f64, min: usize) -> Option<f64> {
    if rate.is_nan() || rate <= 0.0 {
        return None;
    }
    let mut v: Vec<f64> = margins.filter(|m| m.is_finite()).collect();
    let n = v.len();
    if n < min.max(1) {
        return None;
    }
    let k = ((rate.min(1.0) * n as f64).floor() as usize).min(n - 1);
    if k == 0 {
        return None;
    }
    let (_, kth, _) = v.select_nth_unstable_by(k, f64::total_cmp);
    Some(*kth)
}

/// Whether an answer with `margin` is re-asked under `threshold` (never without either).
pub fn below(margin: Option<f32>, threshold: Option<f64>) -> bool {
    margin.zip(threshold).is_some_and(|(m, t)| f64::from(m) < t)
}

/// The recent margins of the answers at the served pair.
#[derive(Debug, Clone, Default)]
pub struct MarginWindow {
    pair: Option<usize>,
    margins: VecDeque<f64>,
}

impl MarginWindow {
    /// Counts the margin of an answer to an image sent at `pair`, the pair served now.
    pub fn observe(&mut self, pair: usize, margin: f64) {
        if !margin.is_finite() {
            return;
        }
        if self.pair != Some(pair) {
            self.margins.clear();
            self.pair = Some(pair);
        }
        if self.margins.len() == WINDOW {
            self.margins.pop_front();
        }
        self.margins.push_back(margin);
    }

    /// The margin under which an answer at `pair` is re-asked: the `rate` quantile of the
    /// window; `None` (re-ask nothing) while the window holds another pair's margins or
    /// fewer than [`MIN_SERVED_MARGINS`], or when `rate` re-asks none of them.
    pub fn threshold(&self, pair: usize, rate: f64) -> Option<f64> {
        if self.pair != Some(pair) {
            return None;
        }
        quantile_over(self.margins.iter().copied(), rate, MIN_SERVED_MARGINS)
    }

    /// Whether the margins held are `pair`'s.
    pub fn holds(&self, pair: usize) -> bool {
        self.pair == Some(pair)
    }

    /// Margins held.
    pub fn len(&self) -> usize {
        self.margins.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.margins.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Label;

    fn answer(scores: &[f32]) -> Answer {
        Answer {
            labels: scores
                .iter()
                .enumerate()
                .map(|(i, &score)| Label {
                    name: format!("l{i}"),
                    score,
                })
                .collect(),
            regions: Vec::new(),
        }
    }

    #[test]
    fn the_margin_is_top1_minus_top2() {
        let m = top1_margin(&answer(&[0.6, 0.25, 0.1])).unwrap_or(-1.0);
        assert!((m - 0.35).abs() < 1e-6, "{m}");
        let one = top1_margin(&answer(&[0.4])).unwrap_or(-1.0);
        assert!((one - 0.4).abs() < 1e-6, "{one}");
        assert_eq!(top1_margin(&answer(&[])), None);
    }

    #[test]
    fn the_threshold_re_asks_the_lowest_rate_of_the_window() {
        let mut w = MarginWindow::default();
        // 0.000, 0.001, ..., 0.399 in a shuffled order
        for i in 0..WINDOW {
            w.observe(3, ((i * 157) % WINDOW) as f64 / 1000.0);
        }
        let t = w.threshold(3, 0.05).unwrap_or(f64::NAN);
        let below = w.margins.iter().filter(|&&m| m < t).count();
        assert_eq!(below, 20, "5 % of 400 re-asked, threshold {t}");
        let t10 = w.threshold(3, 0.10).unwrap_or(f64::NAN);
        assert!(t10 > t, "{t10} vs {t}");
        // another pair, or no rate: nothing
        assert_eq!(w.threshold(4, 0.05), None);
        assert_eq!(w.threshold(3, 0.0), None);
        assert_eq!(w.threshold(3, f64::NAN), None);
    }

    #[test]
    fn nothing_is_re_asked_before_the_window_fills_and_a_new_pair_starts_over() {
        let mut w = MarginWindow::default();
        for i in 0..MIN_SERVED_MARGINS - 1 {
            w.observe(1, i as f64);
        }
        assert_eq!(w.threshold(1, 0.5), None);
        w.observe(1, 100.0);
        assert!(w.threshold(1, 0.5).is_some());
        // audits need more before they are counted with re-asks
        assert_eq!(quantile_threshold(w.margins.iter().copied(), 0.5), None);
        w.observe(2, 0.5);
        assert_eq!(w.len(), 1);
        assert_eq!(w.threshold(2, 0.5), None);
        // never more than the window, and NaN is not a margin
        for _ in 0..2 * WINDOW {
            w.observe(2, 0.1);
        }
        w.observe(2, f64::NAN);
        assert_eq!(w.len(), WINDOW);
    }
}
