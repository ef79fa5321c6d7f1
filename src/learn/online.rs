//! The proxy's agent: the calibrated checkpoint's head and the live pair
//! ([`crate::learn::pair`]), with the live pair's state in SQLite.
//!
//! Every image goes up at the live pair: the cheapest (max side, quality) pair whose lower
//! confidence bound on agreement, over this deployment's audits, clears the target, else the
//! shipped prior. The head runs only where the calibrated policy may deviate from the pair
//! ([`Online::decide`]), and its choice is taken only when cheaper. Audits (off the request
//! path, [`crate::proxy::estimate`]) teach the live pair; the head itself is never retrained
//! online.
//!
//! Only a calibrated checkpoint is served: any other ([`OnlineError::NotCalibrated`]) is
//! refused at start-up. The paper's Q-head agents stay an offline matter (`train`, `eval`).
//!
//! State survives restarts: the live pair (its audits, what it serves, its credit) is kept
//! as JSON in `state.sqlite` and written after every audit.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::action::{ActionSet, Source};
use crate::agent::{Checkpoint, CheckpointError, Policy, QHead, StateError};
use crate::codec::EncoderMode;
use crate::learn::Accuracy;
use crate::learn::pair::{AuditPlan, AuditResult, LivePair, PairConfig, PairStatus, Served};
use crate::model::{ImageModel, ModelError};
use crate::store::{Store, StoreError};

/// Key of the live pair's JSON in the `kv` table.
const KV_LIVE_PAIR: &str = "live_pair";

/// Errors opening the agent.
#[derive(Debug, thiserror::Error)]
pub enum OnlineError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The checkpoint is not a calibrated one (a paper's Q-head agent, for `train`/`eval`).
    #[error(
        "agent.checkpoint = {}: not a calibrated checkpoint (its policy is {policy}); serve runs only the calibrated live-pair agent: set agent.checkpoint to models/agent-calibrated.json (or a checkpoint `adacompress train` fitted as calibrated), or set agent.fixed (e.g. \"q85@768\") to send every image at one fixed pair",
        path.display()
    )]
    NotCalibrated { path: PathBuf, policy: &'static str },
}

/// The head and policy requests are decided with, and the checkpoint's version.
#[derive(Debug, Clone)]
pub struct LiveHead {
    pub head: QHead,
    pub policy: Policy,
    pub version: u64,
}

/// What the agent decided for one image.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The action to upload.
    pub action: usize,
    pub version: u64,
    /// The image's deviation candidate and its predicted agreement, when the head ran
    /// (only while the deviation gate is on).
    pub deviation: Option<(usize, f32)>,
    /// The image goes up at that candidate instead of the live pair.
    pub deviated: bool,
}

/// A snapshot for `GET /agent` and the metrics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    /// `estimate` while audits are in flight, else `inference`.
    pub state: &'static str,
    pub version: u64,
    pub threshold: Option<f32>,
    /// The checkpoint file the head was loaded from.
    pub checkpoint: PathBuf,
    /// The live pair: what is served, each pair's bounds, and the estimation bytes.
    pub pair: PairStatus,
}

/// The live agent.
pub struct Online {
    backbone: ImageModel,
    /// Which state the head reads (from the checkpoint).
    state_kind: crate::agent::StateKind,
    pub actions: ActionSet,
    pub encoder: EncoderMode,
    live: Arc<LiveHead>,
    checkpoint: PathBuf,
    rng: Mutex<StdRng>,
    store: Store,
    accuracy: Accuracy,
    in_flight: AtomicUsize,
    /// The live pair learner, whose pair every image goes up at.
    pair: Mutex<LivePair>,
}

impl std::fmt::Debug for Online {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Online")
            .field("actions", &self.actions.name)
            .field("checkpoint", &self.checkpoint)
            .finish_non_exhaustive()
    }
}

impl Online {
    /// Opens the agent: the calibrated checkpoint `checkpoint` (anything else is
    /// [`OnlineError::NotCalibrated`]), and the live pair from `state_dir/state.sqlite`.
    /// `accuracy` is how audited answers are compared (`estimator.accuracy`).
    pub fn open(
        checkpoint: &Path,
        state_dir: &Path,
        accuracy: Accuracy,
        pair_cfg: PairConfig,
        seed: u64,
    ) -> Result<Arc<Online>, OnlineError> {
        let ckpt = Checkpoint::read(checkpoint)?;
        let Policy::Calibrated {
            fallback,
            bits_per_pixel,
            ..
        } = &ckpt.policy
        else {
            return Err(OnlineError::NotCalibrated {
                path: checkpoint.to_path_buf(),
                policy: match ckpt.policy {
                    Policy::Greedy => "greedy",
                    _ => "cheapest-safe",
                },
            });
        };
        let backbone_path = ckpt.resolve_backbone(checkpoint);
        let backbone = ImageModel::load(&backbone_path, ckpt.backbone.side)?;
        if backbone.sha256() != ckpt.backbone.sha256 {
            return Err(CheckpointError::BackboneMismatch {
                expected: ckpt.backbone.sha256.clone(),
                found: backbone.sha256().to_string(),
                path: backbone_path,
            }
            .into());
        }
        let head = ckpt.head()?;
        let store = Store::open(&state_dir.join("state.sqlite"))?;
        let actions = &ckpt.action_set.actions;
        let fresh = || {
            LivePair::new(
                pair_cfg.clone(),
                actions.clone(),
                bits_per_pixel.clone(),
                *fallback,
            )
        };
        let pair = match store.get_kv(KV_LIVE_PAIR)? {
            Some(json) => match serde_json::from_str::<LivePair>(&json) {
                Ok(saved) => {
                    LivePair::restore(saved, pair_cfg.clone(), actions).unwrap_or_else(|| {
                        tracing::warn!("stored live pair is for other actions; starting fresh");
                        fresh()
                    })
                }
                Err(e) => {
                    tracing::warn!(error = %e, "stored live pair unreadable; starting fresh");
                    fresh()
                }
            },
            None => fresh(),
        };
        tracing::info!(
            checkpoint = %checkpoint.display(),
            version = ckpt.version,
            served = %actions[pair.served()],
            "agent loaded"
        );
        let live = LiveHead {
            head,
            policy: ckpt.policy.clone(),
            version: ckpt.version,
        };
        Ok(Arc::new(Online {
            backbone,
            state_kind: ckpt.state,
            encoder: ckpt.action_set.encoder,
            actions: ckpt.action_set.clone(),
            live: Arc::new(live),
            checkpoint: checkpoint.to_path_buf(),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            store,
            accuracy,
            in_flight: AtomicUsize::new(0),
            pair: Mutex::new(pair),
        }))
    }

    /// The head (an `Arc` clone).
    pub fn live(&self) -> Arc<LiveHead> {
        self.live.clone()
    }

    /// The backbone's input side.
    pub fn side(&self) -> u32 {
        self.backbone.side()
    }

    fn pair(&self) -> std::sync::MutexGuard<'_, LivePair> {
        self.pair.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides for an upload: the live pair, or the image's deviation candidate where the
    /// deviation gate ([`crate::learn::deviation`]) is on and the head predicts the
    /// candidate above its threshold. While the gate is off the head is not run at all (the
    /// auditor runs it on audited images only, [`Online::deviation_candidate`]). CPU-bound:
    /// call it from a blocking thread.
    pub fn decide(&self, source: &mut Source<'_>) -> Result<Decision, StateError> {
        let version = self.live.version;
        let (served, on) = {
            let p = self.pair();
            (p.served(), p.deviations_on())
        };
        if !on {
            return Ok(Decision {
                action: served,
                version,
                deviation: None,
                deviated: false,
            });
        }
        let deviation = self.deviation_candidate(source)?;
        let deviated = deviation.is_some_and(|(_, p)| self.pair().deviates(p));
        Ok(Decision {
            action: match deviation {
                Some((a, _)) if deviated => a,
                _ => served,
            },
            version,
            deviation,
            deviated,
        })
    }

    /// The image's deviation candidate and its predicted agreement: the head's per-action
    /// predictions (made monotone in side and quality), the cheapest pair below the live
    /// one predicted at least `pair.deviation_floor`. Runs the backbone; `None` when no pair
    /// qualifies or deviations are off.
    pub fn deviation_candidate(
        &self,
        source: &mut Source<'_>,
    ) -> Result<Option<(usize, f32)>, StateError> {
        if !self.pair().explores() {
            return Ok(None);
        }
        let features = crate::agent::state::observe(&self.backbone, self.state_kind, source)?;
        let Some(g) = crate::agent::state::geometry(&features) else {
            return Ok(None);
        };
        let q = self.live.head.predict(&features);
        let p = crate::agent::monotone(&q, &self.actions, g.long);
        Ok(self.pair().deviation_candidate(&p))
    }

    /// Forgets the deployment's audits and starts a learning phase from the pair served now
    /// (`POST /agent/relearn`), and persists that.
    pub fn relearn(&self) {
        let json = {
            let mut p = self.pair();
            p.relearn();
            serde_json::to_string(&*p)
        };
        self.persist(json);
    }

    /// Counts one image served by the live pair and decides whether to audit it (a
    /// uniform draw against the audit rate, paid from the estimation credit).
    pub fn plan_audit(&self, served: Served) -> Option<AuditPlan> {
        let xi = self
            .rng
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .random::<f64>();
        self.pair().plan_audit(served, xi)
    }

    /// Records an audit's outcome and persists the live pair.
    pub fn record_audit(
        &self,
        plan: &AuditPlan,
        results: &[AuditResult],
        estimation_bytes: u64,
        image: (u32, u32, usize),
    ) {
        let json = {
            let mut p = self.pair();
            let before = p.served();
            p.record_audit(plan, results, estimation_bytes, image.0, image.1, image.2);
            if p.served() != before {
                tracing::info!(
                    from = %self.actions.actions[before],
                    to = %self.actions.actions[p.served()],
                    "the live pair changed"
                );
            }
            serde_json::to_string(&*p)
        };
        self.persist(json);
    }

    /// Counts the top-1 margin of the cloud's answer to an image served at the live pair
    /// (free drift detection; see [`crate::learn::pair`]).
    pub fn observe_margin(&self, margin: f64) {
        let json = {
            let mut p = self.pair();
            if !p.observe_margin(margin) {
                return;
            }
            serde_json::to_string(&*p)
        };
        self.persist(json);
    }

    /// The margin under which an answer at the served pair is re-asked
    /// ([`crate::learn::reask`]); `None` = re-ask nothing.
    pub fn reask_threshold(&self) -> Option<f64> {
        self.pair().reask_threshold()
    }

    fn persist(&self, json: serde_json::Result<String>) {
        match json {
            Ok(json) => {
                if let Err(e) = self.store.put_kv(KV_LIVE_PAIR, &json) {
                    tracing::error!(error = %e, "cannot persist the live pair");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot serialise the live pair"),
        }
    }

    /// Gives back estimation credit an audit reserved but could not spend.
    pub fn refund_audit(&self, bytes: f64) {
        self.pair().refund(bytes);
    }

    /// The live pair's snapshot.
    pub fn pair_status(&self) -> PairStatus {
        self.pair().status()
    }

    /// How answers are compared (`estimator.accuracy`).
    pub fn accuracy(&self) -> Accuracy {
        self.accuracy
    }

    /// Counts an audit in flight (the `estimate` state); drop the guard when done.
    pub fn estimate_guard(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Flushes the store.
    pub fn shutdown(&self) {
        if let Err(e) = self.store.checkpoint_wal() {
            tracing::error!(error = %e, "cannot flush the state database");
        }
    }

    /// A snapshot of the state.
    pub fn status(&self) -> Status {
        let live = &self.live;
        Status {
            state: if self.in_flight.load(Ordering::Relaxed) > 0 {
                "estimate"
            } else {
                "inference"
            },
            version: live.version,
            threshold: match &live.policy {
                Policy::CheapestSafe { threshold, .. } | Policy::Calibrated { threshold, .. } => {
                    Some(*threshold)
                }
                Policy::Greedy => None,
            },
            checkpoint: self.checkpoint.clone(),
            pair: self.pair_status(),
        }
    }
}

/// Decrements the in-flight audit count when dropped.
pub struct InFlight(Arc<Online>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_q_head_checkpoint_is_refused_naming_the_key_and_the_way_out() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir =
            std::env::temp_dir().join(format!("adacompress-online-qhead-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = root.join("models/agent.json");
        let err = Online::open(&path, &dir, Accuracy::Top1, PairConfig::default(), 1).unwrap_err();
        assert!(matches!(err, OnlineError::NotCalibrated { .. }), "{err}");
        let text = err.to_string();
        for part in [
            "agent.checkpoint",
            path.to_string_lossy().as_ref(),
            "models/agent-calibrated.json",
            "agent.fixed",
        ] {
            assert!(text.contains(part), "{part} in {text}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
