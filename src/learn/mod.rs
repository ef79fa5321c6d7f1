//! Learning: rewards from answers, the replay memory and the Q-head trainer, and
//! the photo environment that connects them to a real vision service.

pub mod augment;
pub mod deviation;
pub mod estimator;
pub mod fit;
pub mod online;
pub mod pair;
pub mod photos_env;
pub mod reward;
pub mod table;
pub mod trainer;
pub mod tune;

pub use photos_env::{EnvSpec, PhotoEnv, Reference};
pub use reward::{Accuracy, agrees, reward};
pub use trainer::{Algorithm, Environment, Feedback, TrainConfig, train};
