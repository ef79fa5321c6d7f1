//! Learning: rewards from answers, the Q-head trainer, the calibrated fit, the live pair, and
//! the photo environment that connects them to a real vision service.

pub mod augment;
pub mod deviation;
pub mod fit;
pub mod online;
pub mod pair;
pub mod photos_env;
pub mod reask;
pub mod replay;
pub mod reward;
pub mod table;
pub mod trainer;
pub mod tune;

pub use photos_env::{EnvSpec, PhotoEnv, Reference};
pub use reward::{Accuracy, agrees, reward};
pub use trainer::{Algorithm, Environment, Feedback, TrainConfig, train};
