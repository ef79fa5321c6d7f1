//! Evaluation: how many bytes a policy uploads and how often the service's answer
//! stays the same, against every fixed setting and the per-image oracle.
//!
//! * [`workload`]: the calibrated agent on a label table (keep + every max side ×
//!   quality), per workload and per source; what `adacompress eval` reports.
//! * [`paper`]: the paper's setting (keep + ten qualities at full size) over a photo
//!   environment, for the DQN/bandit agents.

pub mod paper;
pub mod workload;

pub use paper::*;
