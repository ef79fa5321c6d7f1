//! Agreement and reward: how good an upload's answer was, and what it cost.

use serde::{Deserialize, Serialize};

use crate::protocol::Answer;
use crate::store::Outcome;

/// How a compressed image's answer is compared with the reference answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Accuracy {
    /// The two top-1 labels are equal (this project's default: strict).
    Top1,
    /// The reference's top-1 label is among the compressed answer's top 5 (the paper's).
    Topk,
}

/// k of agreement@k.
pub const TOP_K: usize = 5;

impl Accuracy {
    /// Stable name.
    pub fn name(self) -> &'static str {
        match self {
            Accuracy::Top1 => "top1",
            Accuracy::Topk => "topk",
        }
    }
}

/// Whether `candidate` agrees with `reference` under `accuracy`.
///
/// An empty or refused answer on either side is a failure: skipping such images
/// (as the paper's code did) flatters low qualities.
pub fn agrees(reference: &Outcome, candidate: &Outcome, accuracy: Accuracy) -> bool {
    let (Some(r), Some(c)) = (reference.answer(), candidate.answer()) else {
        return false;
    };
    answers_agree(r, c, accuracy)
}

/// IoU at which two detected regions count as the same (DESIGN §3).
pub const MIN_IOU: f32 = 0.5;

/// Whether answer `c` agrees with reference answer `r`: for detection answers (regions),
/// same count and every box matched at IoU ≥ 0.5 whatever `accuracy` says; for labels, the
/// top-1 or agreement@k rule. An empty reference or candidate is a failure.
pub fn answers_agree(r: &Answer, c: &Answer, accuracy: Accuracy) -> bool {
    if !r.regions.is_empty() || !c.regions.is_empty() {
        return r.regions_match(c, MIN_IOU);
    }
    let Some(top) = r.top1() else {
        return false;
    };
    match accuracy {
        Accuracy::Top1 => c.top1() == Some(top),
        Accuracy::Topk => c.top_k_contains(top, TOP_K),
    }
}

/// The paper's reward, `acc − w · size / size_ref`.
pub fn reward(agree: bool, bytes: usize, reference_bytes: usize, size_weight: f32) -> f32 {
    let ratio = bytes as f32 / reference_bytes.max(1) as f32;
    f32::from(u8::from(agree)) - size_weight * ratio
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Label, Region};

    fn answer(names: &[&str]) -> Outcome {
        Outcome::Answer(Answer::new(
            names
                .iter()
                .enumerate()
                .map(|(i, n)| Label {
                    name: n.to_string(),
                    score: 1.0 - i as f32 * 0.1,
                })
                .collect(),
        ))
    }

    #[test]
    fn detections_agree_by_count_and_iou() {
        let face = |left: f32| Region {
            left,
            top: 10.0,
            width: 40.0,
            height: 40.0,
            score: 0.9,
        };
        let r = Answer::detections(vec![face(0.0), face(100.0)]);
        // Shifted by 5 px: IoU = 35*40 / (2*1600 - 35*40) = 0.64.
        let close = Answer::detections(vec![face(105.0), face(5.0)]);
        assert!(answers_agree(&r, &close, Accuracy::Top1));
        // Shifted by 20 px: IoU = 20/60 = 0.33.
        let far = Answer::detections(vec![face(20.0), face(100.0)]);
        assert!(!answers_agree(&r, &far, Accuracy::Top1));
        let fewer = Answer::detections(vec![face(0.0)]);
        assert!(!answers_agree(&r, &fewer, Accuracy::Top1));
        // Both boxes of the candidate on one reference face do not count twice.
        let doubled = Answer::detections(vec![face(0.0), face(1.0)]);
        assert!(!answers_agree(&r, &doubled, Accuracy::Top1));
        assert!(!answers_agree(
            &Answer::default(),
            &Answer::default(),
            Accuracy::Top1
        ));
    }

    #[test]
    fn agreement_rules() {
        let r = answer(&["flamingo", "spoonbill"]);
        assert!(agrees(&r, &answer(&["flamingo"]), Accuracy::Top1));
        assert!(!agrees(
            &r,
            &answer(&["spoonbill", "flamingo"]),
            Accuracy::Top1
        ));
        assert!(agrees(
            &r,
            &answer(&["spoonbill", "flamingo"]),
            Accuracy::Topk
        ));
        assert!(!agrees(
            &r,
            &answer(&["a", "b", "c", "d", "e", "flamingo"]),
            Accuracy::Topk
        ));
        // Empty and refused answers never agree, on either side.
        assert!(!agrees(&r, &answer(&[]), Accuracy::Topk));
        assert!(!agrees(&answer(&[]), &answer(&[]), Accuracy::Top1));
        assert!(!agrees(
            &r,
            &Outcome::Rejected("bad".into()),
            Accuracy::Top1
        ));
    }

    #[test]
    fn reward_is_accuracy_minus_weighted_size() {
        assert!((reward(true, 50, 100, 1.0) - 0.5).abs() < 1e-6);
        assert!((reward(false, 50, 100, 1.0) + 0.5).abs() < 1e-6);
        assert!((reward(true, 50, 100, 0.2) - 0.9).abs() < 1e-6);
    }
}
