//! Agreement and reward: how good an upload's answer was, and what it cost.

use serde::{Deserialize, Serialize};

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
    use crate::protocol::{Answer, Label};

    fn answer(names: &[&str]) -> Outcome {
        Outcome::Answer(Answer {
            labels: names
                .iter()
                .enumerate()
                .map(|(i, n)| Label {
                    name: n.to_string(),
                    score: 1.0 - i as f32 * 0.1,
                })
                .collect(),
        })
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
