//! The proxy's learner: the live agent, the [`Estimator`], the replay memory in SQLite, and a
//! learning thread that fine-tunes a copy of the head and swaps it in.
//!
//! The request path only ever takes a read lock for an `Arc` clone of the live head
//! ([`Online::decide`]); learning happens on its own thread on a copy, and the swap is one
//! pointer store under a write lock, so requests never wait for training.
//!
//! What one estimate teaches. Quality is monotone enough that one comparison says more than
//! one bit: if the upload at quality q agreed with the original, every higher quality (at the
//! same size) is taken to agree too; if it disagreed, every lower one is taken to disagree.
//! Keeping the original always agrees. These implied labels train the head's other outputs
//! as well (a cheap stand-in for the full feedback offline training has).
//!
//! After each learning call the cheapest-safe threshold is re-tuned on the memory: the
//! smallest threshold whose choices, where the memory implies their outcome, agree at least
//! `target_agreement` of the time.
//!
//! State survives restarts: the memory rows and the estimator (as JSON) live in
//! `state.sqlite`; each new head is written as `checkpoints/agent-v{N}.json` (the newest
//! one is loaded at start-up, the shipped checkpoint otherwise).
//!
//! Checkpoints are written durably (temp file, `fsync`, rename, `fsync` of the folder). A
//! learned checkpoint that does not load (truncated by a power loss, not JSON, wrong shape)
//! is skipped with a warning and moved aside as `agent-v{N}.json.corrupt`; the newest one that
//! loads is used, and the shipped checkpoint only when none does. Pruning deletes only
//! checkpoints superseded by [`KEEP_CHECKPOINTS`] newer valid ones, and never the live one.
//!
//! Owned background work. The learning thread is fed by a bounded queue of
//! [`LEARN_QUEUE`] jobs; when it is full, [`Online::record`] does not wait: the learning call
//! is dropped and counted ([`Status::learn_jobs_dropped`], `adacompress_learn_jobs_dropped_total`).
//! A dropped call loses nothing for good: the rows are in the memory, and the next learning
//! call trains on the whole memory again. The thread's handle is kept; [`Online::shutdown`]
//! closes the queue, waits up to [`LEARNER_JOIN_WAIT`] for the thread to finish the queued
//! calls and end, and logs and leaves it behind if it does not (a learner stuck in training
//! does not hang shutdown), then flushes the store.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ndarray::Array2;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::action::{Action, ActionSet, Source};
use crate::agent::checkpoint::BackboneInfo;
use crate::agent::{Checkpoint, CheckpointError, Policy, QHead, StateError, TrainingStats};
use crate::codec::EncoderMode;
use crate::learn::estimator::EstimatorConfig;
use crate::learn::estimator::{Estimator, Event, Mode, Sample};
use crate::learn::pair::{AuditPlan, AuditResult, LivePair, PairConfig, PairStatus, Served};
use crate::model::{ImageModel, ModelError};
use crate::store::{MemoryRow, Store, StoreError};

/// Key of the estimator's JSON in the `kv` table.
const KV_ESTIMATOR: &str = "estimator";
/// Key of the live pair's JSON in the `kv` table.
const KV_LIVE_PAIR: &str = "live_pair";
/// Valid checkpoints kept in `checkpoints/` (older ones are deleted).
pub const KEEP_CHECKPOINTS: usize = 5;
/// Learning calls that may wait for the learning thread. One call trains on the whole
/// memory, so a few queued ones are plenty; when the queue is full a new call is dropped
/// (counted in [`Status::learn_jobs_dropped`]) rather than making a request wait.
pub const LEARN_QUEUE: usize = 4;
/// How long [`Online::shutdown`] waits for the learning thread to finish its queued calls
/// and end before leaving it behind.
pub const LEARNER_JOIN_WAIT: Duration = Duration::from_secs(10);

/// Errors opening the learner.
#[derive(Debug, thiserror::Error)]
pub enum OnlineError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("cannot start the learning thread: {0}")]
    Thread(std::io::Error),
}

/// The head and policy requests are decided with, and their version.
#[derive(Debug, Clone)]
pub struct LiveHead {
    pub head: QHead,
    pub policy: Policy,
    pub version: u64,
}

/// What the agent decided for one image.
#[derive(Debug, Clone)]
pub struct Decision {
    pub features: Arc<[f32]>,
    /// The policy's own choice.
    pub greedy: usize,
    /// The action to upload (differs from `greedy` when exploring).
    pub action: usize,
    pub version: u64,
}

/// How one estimate went, for one image.
#[derive(Debug, Clone)]
pub struct Observed {
    pub features: Arc<[f32]>,
    pub action: usize,
    pub greedy: bool,
    pub agree: bool,
    pub size_ratio: f32,
}

/// A snapshot for `GET /agent` and the metrics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    pub state: &'static str,
    pub version: u64,
    pub p_est: f64,
    pub recent_accuracy: Option<f64>,
    pub retrain_accuracy: Option<f64>,
    pub epsilon: f64,
    pub memory: usize,
    pub estimates: u64,
    pub retrains: u64,
    pub state_seconds: f64,
    pub threshold: Option<f32>,
    /// The checkpoint file the live head was loaded from or last saved to (the shipped one
    /// until the first learned head is saved). Always names a file that existed when it
    /// was loaded or written: pruning never deletes it.
    pub checkpoint: Option<PathBuf>,
    /// Learned checkpoints found unusable (corrupt or unreadable) since start-up; see
    /// [`Online::skipped_checkpoints`].
    pub skipped_checkpoints: usize,
    /// Learning calls dropped since start-up because [`LEARN_QUEUE`] calls were already
    /// waiting.
    pub learn_jobs_dropped: u64,
    /// The live pair (calibrated checkpoints): what is served, each pair's bounds, and the
    /// estimation bytes.
    pub pair: Option<PairStatus>,
}

/// A learned checkpoint that was passed over, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SkippedCheckpoint {
    /// Where it was found.
    pub path: PathBuf,
    /// Why it could not be used.
    pub reason: String,
    /// Where it was moved for inspection; `None` when left in place (not corrupt but
    /// unreadable, e.g. permissions, or the move failed).
    pub moved_to: Option<PathBuf>,
}

/// Size and modification time of a checkpoint file once validated, so pruning does not
/// re-read files that have not changed.
type FileStamp = (u64, Option<SystemTime>);

fn file_stamp(path: &Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()))
}

struct Inner {
    estimator: Estimator,
    memory: Vec<MemoryRow>,
    rng: StdRng,
    mode_since: Instant,
    budget_window: Instant,
    budget_spent: u64,
    /// The file the live head came from (see [`Status::checkpoint`]).
    last_checkpoint: PathBuf,
}

enum Job {
    Learn(Vec<MemoryRow>),
}

/// The live agent and everything that teaches it.
pub struct Online {
    backbone: ImageModel,
    /// Which state the head reads (from the checkpoint).
    state_kind: crate::agent::StateKind,
    pub actions: ActionSet,
    pub encoder: EncoderMode,
    backbone_info: BackboneInfo,
    adam: crate::agent::AdamConfig,
    training: TrainingStats,
    live: RwLock<Arc<LiveHead>>,
    inner: Mutex<Inner>,
    store: Store,
    cfg: EstimatorConfig,
    checkpoint_dir: PathBuf,
    /// The learning thread's queue ([`LEARN_QUEUE`] long); `None` once shut down.
    jobs: Mutex<Option<mpsc::SyncSender<Job>>>,
    /// The learning thread; taken when it is joined at shutdown.
    learner: Mutex<Option<JoinHandle<()>>>,
    learning: AtomicUsize,
    /// Learning calls dropped because the queue was full.
    jobs_dropped: AtomicU64,
    in_flight: AtomicUsize,
    /// Learned checkpoint files known to load, by path (touched at open and by the
    /// learning thread only).
    validated: Mutex<HashMap<PathBuf, FileStamp>>,
    /// Learned checkpoints passed over since start-up.
    skipped: Mutex<Vec<SkippedCheckpoint>>,
    /// The live pair learner: present for a calibrated checkpoint, whose images go up at
    /// the pair learned live ([`crate::learn::pair`]) instead of the Q-head's estimate →
    /// retrain loop.
    pair: Option<Mutex<LivePair>>,
}

impl std::fmt::Debug for Online {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Online")
            .field("actions", &self.actions.name)
            .field("checkpoint_dir", &self.checkpoint_dir)
            .finish_non_exhaustive()
    }
}

impl Online {
    /// Opens the learner: the newest checkpoint in `state_dir/checkpoints` (else `shipped`),
    /// the memory and estimator from `state_dir/state.sqlite`, and starts the learning
    /// thread.
    pub fn open(
        shipped: &Path,
        state_dir: &Path,
        cfg: EstimatorConfig,
        seed: u64,
    ) -> Result<Arc<Online>, OnlineError> {
        Online::open_with(shipped, state_dir, cfg, PairConfig::default(), seed)
    }

    /// [`Online::open`] with the live pair's settings.
    pub fn open_with(
        shipped: &Path,
        state_dir: &Path,
        cfg: EstimatorConfig,
        pair_cfg: PairConfig,
        seed: u64,
    ) -> Result<Arc<Online>, OnlineError> {
        let checkpoint_dir = state_dir.join("checkpoints");
        remove_stale_temp_files(&checkpoint_dir);
        let shipped_ckpt = Checkpoint::read(shipped)?;
        let mut validated = HashMap::new();
        let (found, skipped) = newest_valid_checkpoint(&checkpoint_dir, &mut validated);
        let (path, ckpt) = match found {
            Some(found) => found,
            None => {
                if !skipped.is_empty() {
                    tracing::warn!(
                        skipped = skipped.len(),
                        shipped = %shipped.display(),
                        "no learned checkpoint loads; using the shipped one"
                    );
                }
                (shipped.to_path_buf(), shipped_ckpt.clone())
            }
        };
        // The backbone always comes from the shipped checkpoint's folder (models/), checked
        // against the hash the loaded checkpoint names.
        let backbone_path = shipped_ckpt.resolve_backbone(shipped);
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
        let estimator = match store.get_kv(KV_ESTIMATOR)? {
            Some(json) => match serde_json::from_str::<Estimator>(&json) {
                Ok(saved) => Estimator::restore(saved, cfg.clone()),
                Err(e) => {
                    tracing::warn!(error = %e, "stored estimator state unreadable; starting fresh");
                    Estimator::new(cfg.clone())
                }
            },
            None => Estimator::new(cfg.clone()),
        };
        let memory = store.load_memory()?;
        let pair = match &ckpt.policy {
            Policy::Calibrated {
                fallback,
                bits_per_pixel,
                ..
            } => {
                let actions = &ckpt.action_set.actions;
                let fresh = || {
                    LivePair::new(
                        pair_cfg.clone(),
                        actions.clone(),
                        bits_per_pixel.clone(),
                        *fallback,
                    )
                };
                let live = match store.get_kv(KV_LIVE_PAIR)? {
                    Some(json) => match serde_json::from_str::<LivePair>(&json) {
                        Ok(saved) => LivePair::restore(saved, pair_cfg.clone(), actions)
                            .unwrap_or_else(|| {
                                tracing::warn!(
                                    "stored live pair is for other actions; starting fresh"
                                );
                                fresh()
                            }),
                        Err(e) => {
                            tracing::warn!(error = %e, "stored live pair unreadable; starting fresh");
                            fresh()
                        }
                    },
                    None => fresh(),
                };
                tracing::info!(served = %actions[live.served()], "live pair");
                Some(Mutex::new(live))
            }
            Policy::Greedy | Policy::CheapestSafe { .. } => None,
        };
        tracing::info!(
            checkpoint = %path.display(),
            version = ckpt.version,
            skipped = skipped.len(),
            memory = memory.len(),
            state = ?estimator.mode,
            "agent loaded"
        );
        let live = LiveHead {
            head,
            policy: ckpt.policy.clone(),
            version: ckpt.version,
        };
        let online = Arc::new(Online {
            backbone,
            state_kind: ckpt.state,
            encoder: ckpt.action_set.encoder,
            actions: ckpt.action_set.clone(),
            backbone_info: ckpt.backbone.clone(),
            adam: ckpt.adam,
            training: ckpt.training.clone(),
            live: RwLock::new(Arc::new(live)),
            inner: Mutex::new(Inner {
                estimator,
                memory,
                rng: StdRng::seed_from_u64(seed),
                mode_since: Instant::now(),
                budget_window: Instant::now(),
                budget_spent: 0,
                last_checkpoint: path,
            }),
            store,
            cfg,
            checkpoint_dir,
            jobs: Mutex::new(None),
            learner: Mutex::new(None),
            learning: AtomicUsize::new(0),
            jobs_dropped: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            validated: Mutex::new(validated),
            skipped: Mutex::new(skipped),
            pair,
        });
        let (tx, rx) = mpsc::sync_channel::<Job>(LEARN_QUEUE);
        let weak = Arc::downgrade(&online);
        let handle = std::thread::Builder::new()
            .name("adacompress-learner".into())
            .spawn(move || learner_loop(weak, rx))
            .map_err(OnlineError::Thread)?;
        *online.learner.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        *online.jobs.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        Ok(online)
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn skipped(&self) -> std::sync::MutexGuard<'_, Vec<SkippedCheckpoint>> {
        self.skipped.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Learned checkpoints passed over since start-up (corrupt ones moved aside), oldest
    /// first.
    pub fn skipped_checkpoints(&self) -> Vec<SkippedCheckpoint> {
        self.skipped().clone()
    }

    /// The live head (an `Arc` clone; never blocks on training).
    pub fn live(&self) -> Arc<LiveHead> {
        self.live.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The backbone's input side.
    pub fn side(&self) -> u32 {
        self.backbone.side()
    }

    /// Decides for an upload; explores with the estimator's current ε. CPU-bound: call it
    /// from a blocking thread.
    pub fn decide(&self, source: &mut Source<'_>) -> Result<Decision, StateError> {
        if let Some(pair) = &self.pair {
            return self.decide_pair(pair, source);
        }
        let features: Arc<[f32]> =
            crate::agent::state::observe(&self.backbone, self.state_kind, source)?.into();
        let live = self.live();
        let q = live.head.predict(&features);
        let greedy = live.policy.decide(&q, &features, &self.actions);
        let action = {
            let mut inner = self.inner();
            let eps = inner.estimator.epsilon();
            if eps > 0.0 && inner.rng.random::<f64>() < eps {
                inner.rng.random_range(0..self.actions.len())
            } else {
                greedy
            }
        };
        Ok(Decision {
            features,
            greedy,
            action,
            version: live.version,
        })
    }

    /// The live pair's decision. Where the calibrated policy can never deviate from its
    /// fallback (threshold above 1), the backbone is not run at all; otherwise the policy's
    /// own choice is taken only when it is cheaper than the live pair.
    fn decide_pair(
        &self,
        pair: &Mutex<LivePair>,
        source: &mut Source<'_>,
    ) -> Result<Decision, StateError> {
        let live = self.live();
        let pair = || pair.lock().unwrap_or_else(|e| e.into_inner());
        let served = pair().served();
        let deviates =
            matches!(live.policy, Policy::Calibrated { threshold, .. } if threshold <= 1.0);
        if !deviates {
            return Ok(Decision {
                features: Arc::from(Vec::new()),
                greedy: served,
                action: served,
                version: live.version,
            });
        }
        let features: Arc<[f32]> =
            crate::agent::state::observe(&self.backbone, self.state_kind, source)?.into();
        let q = live.head.predict(&features);
        let (choice, fallback) = live.policy.decide_explained(&q, &features, &self.actions);
        // Costs are looked up only here, after the backbone: the common path (no deviation
        // possible) takes the lock once, for the served index.
        let cheaper = {
            let p = pair();
            choice < self.actions.len() && p.cost(choice) < p.cost(served)
        };
        let action = if !fallback && cheaper { choice } else { served };
        Ok(Decision {
            features,
            greedy: action,
            action,
            version: live.version,
        })
    }

    /// Whether images go up at the live pair (a calibrated checkpoint).
    pub fn pair_mode(&self) -> bool {
        self.pair.is_some()
    }

    /// Counts one image served by the live pair and decides whether to audit it (a
    /// uniform draw against the audit rate, paid from the estimation credit).
    pub fn plan_audit(&self, served: Served) -> Option<AuditPlan> {
        let pair = self.pair.as_ref()?;
        let xi = self.inner().rng.random::<f64>();
        pair.lock()
            .unwrap_or_else(|e| e.into_inner())
            .plan_audit(served, xi)
    }

    /// Records an audit's outcome and persists the live pair.
    pub fn record_audit(
        &self,
        plan: &AuditPlan,
        results: &[AuditResult],
        estimation_bytes: u64,
        image: (u32, u32, usize),
    ) {
        let Some(pair) = &self.pair else {
            return;
        };
        let json = {
            let mut p = pair.lock().unwrap_or_else(|e| e.into_inner());
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
        match json {
            Ok(json) => {
                if let Err(e) = self.store.put_kv(KV_LIVE_PAIR, &json) {
                    tracing::error!(error = %e, "cannot persist the live pair");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot serialise the live pair"),
        }
    }

    /// Counts the top-1 margin of the cloud's answer to an image served at the live pair
    /// (free drift detection; see [`crate::learn::pair`]).
    pub fn observe_margin(&self, margin: f64) {
        if let Some(pair) = &self.pair {
            let json = {
                let mut p = pair.lock().unwrap_or_else(|e| e.into_inner());
                if !p.observe_margin(margin) {
                    return;
                }
                serde_json::to_string(&*p)
            };
            if let Ok(json) = json
                && let Err(e) = self.store.put_kv(KV_LIVE_PAIR, &json)
            {
                tracing::error!(error = %e, "cannot persist the live pair");
            }
        }
    }

    /// Gives back estimation credit an audit reserved but could not spend.
    pub fn refund_audit(&self, bytes: f64) {
        if let Some(pair) = &self.pair {
            pair.lock().unwrap_or_else(|e| e.into_inner()).refund(bytes);
        }
    }

    /// The live pair's snapshot (calibrated checkpoints only).
    pub fn pair_status(&self) -> Option<PairStatus> {
        self.pair
            .as_ref()
            .map(|p| p.lock().unwrap_or_else(|e| e.into_inner()).status())
    }

    /// How answers are compared (`estimator.accuracy`).
    pub fn accuracy(&self) -> crate::learn::Accuracy {
        self.cfg.accuracy
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.inner().estimator.mode
    }

    /// Draws whether this request is estimated.
    pub fn draw_estimate(&self) -> bool {
        let mut inner = self.inner();
        let xi = inner.rng.random::<f64>();
        inner.estimator.should_estimate(xi)
    }

    /// Reserves `bytes` of the per-minute estimation budget; `false` when it would exceed it.
    pub fn try_spend(&self, bytes: u64) -> bool {
        let cap = self.cfg.budget_bytes_per_minute;
        if cap == 0 {
            return true;
        }
        let mut inner = self.inner();
        if inner.budget_window.elapsed() >= Duration::from_secs(60) {
            inner.budget_window = Instant::now();
            inner.budget_spent = 0;
        }
        if inner.budget_spent + bytes > cap {
            return false;
        }
        inner.budget_spent += bytes;
        true
    }

    /// Counts an estimate in flight (for the `estimate` state); drop the guard when done.
    pub fn estimate_guard(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Records compared answers (one per image of a request): updates the estimator,
    /// appends to the memory, persists, and schedules learning.
    pub fn record(&self, observed: &[Observed]) -> Vec<Event> {
        let mut all = Vec::new();
        let mut learn_batch = None;
        {
            let mut inner = self.inner();
            for o in observed {
                let sample = Sample {
                    agree: o.agree,
                    reward: f64::from(u8::from(o.agree))
                        - self.cfg.size_weight * f64::from(o.size_ratio),
                    greedy: o.greedy,
                };
                let events = inner.estimator.record(sample);
                for e in &events {
                    match e {
                        Event::EnteredRetrain => {
                            tracing::warn!(
                                accuracy = ?inner.estimator.recent_accuracy(),
                                "agreement fell below the threshold; retraining"
                            );
                            inner.memory.clear();
                            inner.mode_since = Instant::now();
                            if let Err(e) = self.store.clear_memory() {
                                tracing::error!(error = %e, "cannot clear the stored memory");
                            }
                        }
                        Event::Recovered => {
                            tracing::info!(
                                accuracy = ?inner.estimator.recent_accuracy(),
                                "agent recovered; back to inference"
                            );
                            inner.mode_since = Instant::now();
                        }
                        Event::Learn => {}
                    }
                }
                self.push_row(&mut inner, o);
                if events.contains(&Event::Learn) || events.contains(&Event::Recovered) {
                    learn_batch = Some(inner.memory.clone());
                }
                all.extend(events);
            }
            match serde_json::to_string(&inner.estimator) {
                Ok(json) => {
                    if let Err(e) = self.store.put_kv(KV_ESTIMATOR, &json) {
                        tracing::error!(error = %e, "cannot persist the estimator");
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot serialise the estimator"),
            }
        }
        if let Some(rows) = learn_batch {
            self.schedule(rows);
        }
        all
    }

    /// Adds observations to the memory without moving the state machine (extra probes).
    pub fn remember(&self, observed: &[Observed]) {
        let mut inner = self.inner();
        for o in observed {
            self.push_row(&mut inner, o);
        }
    }

    /// Appends one observation to the memory (bounded) and to the store.
    fn push_row(&self, inner: &mut Inner, o: &Observed) {
        let row = MemoryRow {
            features: o.features.to_vec(),
            action: o.action,
            agree: o.agree,
            size_ratio: o.size_ratio,
        };
        if let Err(e) = self.store.push_memory(&row, self.cfg.memory) {
            tracing::error!(error = %e, "cannot persist a memory row");
        }
        inner.memory.push(row);
        let excess = inner.memory.len().saturating_sub(self.cfg.memory);
        inner.memory.drain(..excess);
    }

    /// Forces retraining now (admin `POST /agent/retrain`). The replay memory is kept:
    /// forgetting it is a separate, explicit act ([`Online::clear_memory`]).
    pub fn force_retrain(&self) -> bool {
        let mut inner = self.inner();
        let entered = !inner.estimator.force_retrain().is_empty();
        if entered {
            inner.mode_since = Instant::now();
        }
        entered
    }

    /// Forgets the replay memory, in RAM and in the store (admin `DELETE /agent/memory`);
    /// returns how many rows were dropped.
    pub fn clear_memory(&self) -> usize {
        let mut inner = self.inner();
        let dropped = inner.memory.len();
        inner.memory.clear();
        if let Err(e) = self.store.clear_memory() {
            tracing::error!(error = %e, "cannot clear the stored memory");
        }
        dropped
    }

    /// Queues a learning call without waiting: when [`LEARN_QUEUE`] calls are already
    /// waiting, this one is dropped and counted.
    fn schedule(&self, rows: Vec<MemoryRow>) {
        if let Some(tx) = self.jobs.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            self.learning.fetch_add(1, Ordering::SeqCst);
            match tx.try_send(Job::Learn(rows)) {
                Ok(()) => {}
                Err(mpsc::TrySendError::Full(_)) => {
                    self.learning.fetch_sub(1, Ordering::SeqCst);
                    let dropped = self.jobs_dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    // Counted in the status and the metrics; one log line per drop would
                    // flood the log exactly when the learner is behind.
                    tracing::debug!(
                        queue = LEARN_QUEUE,
                        dropped,
                        "the learning queue is full; dropping a learning call"
                    );
                }
                Err(mpsc::TrySendError::Disconnected(_)) => {
                    self.learning.fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
    }

    /// Learning calls queued or running.
    pub fn learning(&self) -> usize {
        self.learning.load(Ordering::SeqCst)
    }

    /// Learning calls dropped since start-up because the queue was full.
    pub fn learn_jobs_dropped(&self) -> u64 {
        self.jobs_dropped.load(Ordering::Relaxed)
    }

    /// Stops the learning thread after the queued calls (waiting at most
    /// [`LEARNER_JOIN_WAIT`]) and flushes the store.
    pub fn shutdown(&self) {
        self.shutdown_within(LEARNER_JOIN_WAIT);
    }

    /// [`Online::shutdown`] with a given wait; returns whether the learning thread ended.
    fn shutdown_within(&self, wait: Duration) -> bool {
        // Closing the queue ends the thread once it has run what was queued.
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
        let handle = self
            .learner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let ended = match handle {
            None => true,
            Some(handle) => {
                let deadline = Instant::now() + wait;
                while !handle.is_finished() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                if handle.is_finished() {
                    if handle.join().is_err() {
                        tracing::error!("the learning thread panicked");
                    }
                    true
                } else {
                    tracing::warn!(
                        wait_secs = wait.as_secs_f64(),
                        queued_or_running = self.learning(),
                        "the learning thread did not finish in time; leaving it behind"
                    );
                    false
                }
            }
        };
        if let Err(e) = self.store.checkpoint_wal() {
            tracing::error!(error = %e, "cannot flush the state database");
        }
        ended
    }

    /// A snapshot of the state.
    pub fn status(&self) -> Status {
        let live = self.live();
        let inner = self.inner();
        let e = &inner.estimator;
        Status {
            state: e.reported_state(self.in_flight.load(Ordering::Relaxed)),
            version: live.version,
            p_est: e.p_est,
            recent_accuracy: e.recent_accuracy(),
            retrain_accuracy: e.retrain_accuracy(),
            epsilon: e.epsilon(),
            memory: inner.memory.len(),
            estimates: e.estimates,
            retrains: e.retrains,
            state_seconds: inner.mode_since.elapsed().as_secs_f64(),
            threshold: match &live.policy {
                Policy::CheapestSafe { threshold, .. } | Policy::Calibrated { threshold, .. } => {
                    Some(*threshold)
                }
                Policy::Greedy => None,
            },
            checkpoint: Some(inner.last_checkpoint.clone()),
            skipped_checkpoints: self.skipped().len(),
            learn_jobs_dropped: self.learn_jobs_dropped(),
            pair: self.pair_status(),
        }
    }

    /// One learning call on `rows`: fine-tune a copy, re-tune the threshold, swap, persist.
    fn learn(&self, rows: &[MemoryRow]) {
        if rows.is_empty() {
            return;
        }
        let current = self.live();
        let mut head = current.head.clone();
        let samples = implied_samples(rows, &self.actions);
        if samples.is_empty() {
            return;
        }
        let dim = rows[0].features.len();
        let mut rng = StdRng::seed_from_u64(current.version.wrapping_add(rows.len() as u64));
        let batch = self.cfg.batch.min(samples.len()).max(1);
        for _ in 0..self.cfg.steps_per_learn.max(1) {
            let picks = rand::seq::index::sample(&mut rng, samples.len(), batch);
            let mut x = Array2::<f32>::zeros((batch, dim));
            let mut actions = Vec::with_capacity(batch);
            let mut targets = Vec::with_capacity(batch);
            for (r, i) in picks.into_iter().enumerate() {
                let (row, action, target) = samples[i];
                x.row_mut(r)
                    .assign(&ndarray::ArrayView1::from(&rows[row].features[..]));
                actions.push(action);
                targets.push(target);
            }
            head.train_step(x.view(), &actions, &targets);
        }
        let policy = match &current.policy {
            Policy::CheapestSafe { threshold, costs } => Policy::CheapestSafe {
                threshold: retune_threshold(
                    &head,
                    costs,
                    rows,
                    &self.actions,
                    self.cfg.target_agreement,
                )
                .unwrap_or(*threshold),
                costs: costs.clone(),
            },
            // The calibrated threshold keeps its offline conformal setting; the head
            // learns the new workload's probabilities under it.
            other @ (Policy::Greedy | Policy::Calibrated { .. }) => other.clone(),
        };
        let version = current.version + 1;
        let next = LiveHead {
            head,
            policy,
            version,
        };
        let path = self.write_checkpoint(&next);
        *self.live.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        if let Some(p) = path {
            self.inner().last_checkpoint = p;
        }
        tracing::info!(version, memory = rows.len(), "new head swapped in");
    }

    fn write_checkpoint(&self, live: &LiveHead) -> Option<PathBuf> {
        let mut training = self.training.clone();
        training.algorithm = "online".into();
        training.steps = live.head.steps();
        let mut ckpt = Checkpoint::new(
            live.version,
            &live.head,
            self.adam,
            self.actions.clone(),
            self.backbone_info.clone(),
            training,
        );
        ckpt.policy = live.policy.clone();
        let path = self
            .checkpoint_dir
            .join(format!("agent-v{}.json", live.version));
        if let Err(e) = ckpt.write(&path) {
            tracing::error!(error = %e, "cannot write a checkpoint");
            return None;
        }
        // Neither the file just written (about to go live) nor the one live now is deleted.
        let live_now = self.inner().last_checkpoint.clone();
        let skipped = {
            let mut validated = self.validated.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(stamp) = file_stamp(&path) {
                validated.insert(path.clone(), stamp);
            }
            prune_checkpoints(
                &self.checkpoint_dir,
                KEEP_CHECKPOINTS,
                &[&path, &live_now],
                &mut validated,
            )
        };
        self.skipped().extend(skipped);
        Some(path)
    }
}

/// Decrements the in-flight estimate count when dropped.
pub struct InFlight(Arc<Online>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

fn learner_loop(online: Weak<Online>, rx: mpsc::Receiver<Job>) {
    while let Ok(job) = rx.recv() {
        let Some(online) = online.upgrade() else {
            return;
        };
        match job {
            Job::Learn(rows) => {
                let result =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| online.learn(&rows)));
                if result.is_err() {
                    tracing::error!("a learning call panicked; the live head is unchanged");
                }
            }
        }
        online.learning.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The (row, action, target) triples one memory implies: the observed action, and by
/// monotonicity in quality the actions it vouches for (see the module doc).
pub fn implied_samples(rows: &[MemoryRow], actions: &ActionSet) -> Vec<(usize, usize, f32)> {
    let mut out = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let Some(taken) = actions.actions.get(row.action) else {
            continue;
        };
        out.push((i, row.action, f32::from(u8::from(row.agree))));
        for (j, other) in actions.actions.iter().enumerate() {
            if j == row.action {
                continue;
            }
            if let Some(target) = implied(taken, row.agree, other) {
                out.push((i, j, target));
            }
        }
    }
    out
}

/// What `taken` agreeing (or not) says about `other`, if anything.
fn implied(taken: &Action, agree: bool, other: &Action) -> Option<f32> {
    if *other == Action::KEEP {
        return Some(1.0);
    }
    let (Some(tq), Some(oq)) = (taken.quality, other.quality) else {
        return None;
    };
    if taken.max_side != other.max_side {
        return None;
    }
    match (agree, oq >= tq) {
        (true, true) => Some(1.0),
        (false, false) => Some(0.0),
        _ => None,
    }
}

/// The smallest threshold whose cheapest-safe choices agree at least `target` of the time
/// where the memory implies their outcome; `None` when the memory says too little.
fn retune_threshold(
    head: &QHead,
    costs: &[f32],
    rows: &[MemoryRow],
    actions: &ActionSet,
    target: f64,
) -> Option<f32> {
    let q: Vec<Vec<f32>> = rows.iter().map(|r| head.predict(&r.features)).collect();
    let mut t = 0.3f32;
    while t <= 1.6 {
        let policy = Policy::CheapestSafe {
            threshold: t,
            costs: costs.to_vec(),
        };
        let (mut known, mut agree) = (0usize, 0usize);
        for (row, q) in rows.iter().zip(&q) {
            let chosen = policy.decide(q, &row.features, actions);
            let outcome = if chosen == row.action {
                Some(row.agree)
            } else {
                match (actions.actions.get(row.action), actions.actions.get(chosen)) {
                    (Some(taken), Some(other)) => implied(taken, row.agree, other).map(|v| v > 0.5),
                    _ => None,
                }
            };
            if let Some(a) = outcome {
                known += 1;
                agree += usize::from(a);
            }
        }
        if known * 2 >= rows.len() && known >= 5 && agree as f64 >= target * known as f64 {
            return Some(t);
        }
        t += 0.025;
    }
    None
}

/// Why a learned checkpoint file cannot be used.
enum Unusable {
    /// The content is bad: it is moved aside.
    Corrupt(String),
    /// It could not be read, or does not match its name: it is left in place.
    Other(String),
}

/// Reads a learned checkpoint and checks that it holds the version its name says.
fn read_learned(version: u64, path: &Path) -> Result<Checkpoint, Unusable> {
    let ckpt = Checkpoint::read(path).map_err(|e| {
        if e.is_corrupt() {
            Unusable::Corrupt(e.to_string())
        } else {
            Unusable::Other(e.to_string())
        }
    })?;
    if ckpt.version != version {
        return Err(Unusable::Other(format!(
            "the file name says version {version} but it holds version {}",
            ckpt.version
        )));
    }
    Ok(ckpt)
}

/// Logs a skipped checkpoint and, when corrupt, moves it aside.
fn skip_checkpoint(path: &Path, why: Unusable) -> SkippedCheckpoint {
    let (reason, moved_to) = match why {
        Unusable::Corrupt(reason) => match crate::agent::checkpoint::move_aside(path) {
            Ok(to) => (reason, Some(to)),
            Err(e) => {
                tracing::error!(
                    file = %path.display(),
                    error = %e,
                    "cannot move a corrupt checkpoint aside; leaving it in place"
                );
                (reason, None)
            }
        },
        Unusable::Other(reason) => (reason, None),
    };
    match &moved_to {
        Some(to) => tracing::warn!(
            file = %path.display(),
            moved_to = %to.display(),
            %reason,
            "skipping a corrupt checkpoint"
        ),
        None => tracing::warn!(
            file = %path.display(),
            %reason,
            "skipping an unusable checkpoint"
        ),
    }
    SkippedCheckpoint {
        path: path.to_path_buf(),
        reason,
        moved_to,
    }
}

/// The newest learned checkpoint in `dir` that loads, and the newer ones passed over
/// (corrupt ones are moved aside). Records the loaded file in `validated`.
fn newest_valid_checkpoint(
    dir: &Path,
    validated: &mut HashMap<PathBuf, FileStamp>,
) -> (Option<(PathBuf, Checkpoint)>, Vec<SkippedCheckpoint>) {
    let mut all = checkpoints(dir);
    all.sort_by_key(|(v, _)| std::cmp::Reverse(*v));
    let mut skipped = Vec::new();
    for (version, path) in all {
        match read_learned(version, &path) {
            Ok(ckpt) => {
                if let Some(stamp) = file_stamp(&path) {
                    validated.insert(path.clone(), stamp);
                }
                return (Some((path, ckpt)), skipped);
            }
            Err(why) => skipped.push(skip_checkpoint(&path, why)),
        }
    }
    (None, skipped)
}

/// The `agent-v{N}.json` files in `dir` with their versions, in no order.
pub fn checkpoints(dir: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let v = name
                .strip_prefix("agent-v")?
                .strip_suffix(".json")?
                .parse::<u64>()
                .ok()?;
            Some((v, e.path()))
        })
        .collect()
}

/// Removes `agent-v*.json.tmp` files a crash left mid-write (never renamed, so never a
/// checkpoint).
fn remove_stale_temp_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with("agent-v") && name.ends_with(".json.tmp") {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::info!(file = %entry.path().display(), "removed a half-written checkpoint")
                }
                Err(e) => tracing::warn!(
                    file = %entry.path().display(),
                    error = %e,
                    "cannot remove a half-written checkpoint"
                ),
            }
        }
    }
}

/// Deletes the checkpoints in `dir` superseded by `keep` newer *valid* ones. Newer files that
/// do not load are never counted as superseding anything: corrupt ones are moved aside,
/// unreadable ones left in place. Files in `protect` are never touched. `validated` caches
/// which files were found to load (keyed by size and modification time). Returns the files
/// passed over.
fn prune_checkpoints(
    dir: &Path,
    keep: usize,
    protect: &[&Path],
    validated: &mut HashMap<PathBuf, FileStamp>,
) -> Vec<SkippedCheckpoint> {
    let mut all = checkpoints(dir);
    all.sort_by_key(|(v, _)| std::cmp::Reverse(*v));
    let mut valid = 0usize;
    let mut skipped = Vec::new();
    for (version, path) in all {
        let protected = protect.contains(&path.as_path());
        if valid >= keep {
            if protected {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    validated.remove(&path);
                }
                Err(e) => tracing::warn!(
                    file = %path.display(),
                    error = %e,
                    "cannot delete an old checkpoint"
                ),
            }
            continue;
        }
        let stamp = file_stamp(&path);
        let known = stamp.is_some() && validated.get(&path) == stamp.as_ref();
        let check = if known {
            Ok(())
        } else {
            read_learned(version, &path).map(|_| ())
        };
        match check {
            Ok(()) => {
                if let Some(stamp) = stamp {
                    validated.insert(path, stamp);
                }
                valid += 1;
            }
            Err(why) => {
                validated.remove(&path);
                if !protected {
                    skipped.push(skip_checkpoint(&path, why));
                }
            }
        }
    }
    skipped
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_comparison_implies_labels_for_other_qualities() {
        let set = ActionSet::paper();
        let q45 = set
            .index_of(&Action {
                max_side: None,
                quality: Some(45),
            })
            .unwrap();
        let row = |agree| MemoryRow {
            features: vec![0.0],
            action: q45,
            agree,
            size_ratio: 0.4,
        };
        let agreed = implied_samples(&[row(true)], &set);
        // q45 itself, keep, and q55..q95: 1 + 1 + 5, all agreeing.
        assert_eq!(agreed.len(), 7);
        assert!(agreed.iter().all(|&(_, _, t)| t == 1.0));
        let failed = implied_samples(&[row(false)], &set);
        // q45 itself as 0, q5..q35 as 0, keep as 1.
        assert_eq!(failed.len(), 1 + 4 + 1);
        let keep = set.index_of(&Action::KEEP).unwrap();
        for (_, a, t) in failed {
            assert_eq!(t == 1.0, a == keep);
        }
    }

    /// A fresh folder for one test.
    fn test_dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("adacompress-online-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Writes a small valid learned checkpoint `agent-v{version}.json` into `dir`.
    fn write_small(dir: &Path, version: u64) -> PathBuf {
        let set = ActionSet::paper();
        let mut rng = StdRng::seed_from_u64(version);
        let adam = crate::agent::AdamConfig::default();
        let head = QHead::new(&[8, 4, set.len()], adam, &mut rng);
        let info = BackboneInfo {
            file: "efficientnet-lite0.onnx".into(),
            sha256: "ab".repeat(32),
            side: 160,
        };
        let ckpt = Checkpoint::new(version, &head, adam, set, info, TrainingStats::default());
        let path = dir.join(format!("agent-v{version}.json"));
        ckpt.write(&path).unwrap();
        path
    }

    fn versions(dir: &Path) -> Vec<u64> {
        let mut v: Vec<u64> = checkpoints(dir).into_iter().map(|(v, _)| v).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn pruning_keeps_what_no_newer_valid_checkpoint_superseded() {
        let dir = test_dir("prune");
        for v in 1..=8 {
            write_small(&dir, v);
        }
        // A corrupt file newer than every valid one (a torn write) supersedes nothing.
        std::fs::write(dir.join("agent-v9.json"), b"{\"format\": \"adacom").unwrap();
        let live = dir.join("agent-v1.json");
        let mut validated = HashMap::new();
        let skipped = prune_checkpoints(&dir, 5, &[&live], &mut validated);
        // v4..v8 are the five newest valid; v1 is live; v2 and v3 were superseded.
        assert_eq!(versions(&dir), vec![1, 4, 5, 6, 7, 8]);
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].path, dir.join("agent-v9.json"));
        assert_eq!(
            skipped[0].moved_to.as_deref(),
            Some(dir.join("agent-v9.json.corrupt").as_path())
        );
        assert!(dir.join("agent-v9.json.corrupt").is_file());

        // A valid file that goes bad later is noticed despite the cache, moved aside, and
        // no longer counts: the older ones it would have superseded stay.
        let v8 = dir.join("agent-v8.json");
        let bytes = std::fs::read(&v8).unwrap();
        std::fs::write(&v8, &bytes[..bytes.len() / 2]).unwrap();
        let skipped = prune_checkpoints(&dir, 3, &[&live], &mut validated);
        assert_eq!(skipped.len(), 1);
        assert!(dir.join("agent-v8.json.corrupt").is_file());
        assert_eq!(versions(&dir), vec![1, 5, 6, 7]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn pruning_with_fewer_valid_than_kept_deletes_nothing() {
        let dir = test_dir("prune-few");
        for v in 1..=3 {
            write_small(&dir, v);
        }
        for v in 4..=30 {
            std::fs::write(dir.join(format!("agent-v{v}.json")), b"").unwrap();
        }
        let mut validated = HashMap::new();
        let skipped = prune_checkpoints(&dir, 5, &[], &mut validated);
        assert_eq!(versions(&dir), vec![1, 2, 3]);
        assert_eq!(skipped.len(), 27);
        assert!(
            skipped
                .iter()
                .all(|s| s.moved_to.as_ref().is_some_and(|p| p.is_file()))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn newest_valid_checkpoint_skips_corrupt_and_misnamed_files() {
        let dir = test_dir("newest");
        for v in 1..=2 {
            write_small(&dir, v);
        }
        // v3 is corrupt: moved aside. v4 holds version 1: skipped but left in place.
        std::fs::write(dir.join("agent-v3.json"), [0xffu8, 0x00, 0x7b]).unwrap();
        std::fs::copy(dir.join("agent-v1.json"), dir.join("agent-v4.json")).unwrap();
        let mut validated = HashMap::new();
        let (found, skipped) = newest_valid_checkpoint(&dir, &mut validated);
        let (path, ckpt) = found.unwrap();
        assert_eq!((path.clone(), ckpt.version), (dir.join("agent-v2.json"), 2));
        assert!(validated.contains_key(&path));
        assert_eq!(skipped.len(), 2);
        assert_eq!(skipped[0].path, dir.join("agent-v4.json"));
        assert!(skipped[0].moved_to.is_none());
        assert!(dir.join("agent-v4.json").is_file());
        assert_eq!(skipped[1].path, dir.join("agent-v3.json"));
        assert!(dir.join("agent-v3.json.corrupt").is_file());

        // Nothing loads: nothing found, every corrupt file kept aside.
        let empty = test_dir("newest-none");
        std::fs::write(empty.join("agent-v7.json"), b"").unwrap();
        let (found, skipped) = newest_valid_checkpoint(&empty, &mut HashMap::new());
        assert!(found.is_none());
        assert_eq!(skipped.len(), 1);
        assert!(empty.join("agent-v7.json.corrupt").is_file());
        // A missing folder is no learned state at all.
        let (found, skipped) = newest_valid_checkpoint(&empty.join("missing"), &mut HashMap::new());
        assert!(found.is_none() && skipped.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&empty);
    }

    /// A learner on the shipped checkpoint, state in `dir`, learning cheaply.
    fn open_in(dir: &Path) -> Arc<Online> {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/agent.json");
        let cfg = EstimatorConfig {
            batch: 8,
            steps_per_learn: 2,
            ..EstimatorConfig::default()
        };
        Online::open(&shipped, dir, cfg, 7).unwrap()
    }

    /// Memory rows the live head can learn on.
    fn rows_for(online: &Online) -> Vec<MemoryRow> {
        let dim = online.live().head.dims()[0];
        (0..8)
            .map(|i| MemoryRow {
                features: (0..dim).map(|j| ((i + j) % 7) as f32 * 0.1).collect(),
                action: 3,
                agree: i % 2 == 0,
                size_ratio: 0.3,
            })
            .collect()
    }

    #[test]
    fn a_full_learning_queue_drops_and_counts_instead_of_blocking() {
        let dir = test_dir("queue");
        let online = open_in(&dir);
        let rows = rows_for(&online);
        let before = online.live().version;
        // While the live head is write-locked, a learning call blocks at its first read:
        // at most one call leaves the queue.
        let hold = online.live.write().unwrap();
        let calls = LEARN_QUEUE + 3;
        let (done_tx, done_rx) = mpsc::channel();
        let (o, r) = (online.clone(), rows.clone());
        std::thread::spawn(move || {
            for _ in 0..calls {
                o.schedule(r.clone());
            }
            let _ = done_tx.send(());
        });
        let returned = done_rx.recv_timeout(Duration::from_secs(10)).is_ok();
        let dropped = online.learn_jobs_dropped();
        let queued = online.learning();
        drop(hold);
        assert!(returned, "schedule blocked on a full queue");
        let (least, most) = (
            (calls - LEARN_QUEUE - 1) as u64,
            (calls - LEARN_QUEUE) as u64,
        );
        assert!((least..=most).contains(&dropped), "dropped {dropped}");
        assert_eq!(queued as u64 + dropped, calls as u64);
        assert_eq!(online.status().learn_jobs_dropped, dropped);
        // The queued calls (and the one taken, if any) still run before the thread ends.
        assert!(online.shutdown_within(Duration::from_secs(120)));
        assert_eq!(online.learning(), 0);
        assert_eq!(online.live().version, before + queued as u64);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn shutdown_joins_the_learner_and_a_stuck_one_does_not_hang_it() {
        let dir = test_dir("join");
        let online = open_in(&dir);
        online.schedule(rows_for(&online));
        assert!(online.shutdown_within(Duration::from_secs(120)));
        assert!(
            online.learner.lock().unwrap().is_none(),
            "the thread was joined"
        );
        assert!(online.jobs.lock().unwrap().is_none());
        assert_eq!(online.learning(), 0);
        // After shutdown nothing is queued any more.
        online.schedule(rows_for(&online));
        assert_eq!((online.learning(), online.learn_jobs_dropped()), (0, 0));
        let _ = std::fs::remove_dir_all(&dir);

        // A learner that cannot finish (blocked on the live head) is left behind after the
        // wait, not waited for.
        let dir = test_dir("join-stuck");
        let online = open_in(&dir);
        let rows = rows_for(&online);
        let hold = online.live.write().unwrap();
        online.schedule(rows);
        let started = Instant::now();
        let ended = online.shutdown_within(Duration::from_millis(300));
        let waited = started.elapsed();
        drop(hold);
        assert!(!ended);
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
