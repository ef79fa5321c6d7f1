//! Step 3 of the request path: find the images, let the agent pick, re-encode — on a bounded
//! blocking pool, failing open to the original bytes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;

use super::{Metrics, Passthrough, ProxyState};
use crate::action::{Action, Source};
use crate::agent::StateError;
use crate::codec::{self, CodecError, Limits};
use crate::learn::online::{Decision, Online};
use crate::learn::pair::{AuditPlan, Served};
use crate::protocol::{ImageSlot, Protocol, ProtocolError, ProxyRequest, Rewritten, SlotImage};

/// What [`compress_request`] needs of a wire format: find the images of a request and put
/// re-encoded ones back, plus the API's per-request limits. Every HTTP [`Protocol`] is
/// one; a transport that carries the same APIs differently (gRPC) is another.
pub trait ImageWire {
    /// The request's images, in order.
    fn extract_images(&self, req: &ProxyRequest<'_>) -> Result<Vec<ImageSlot>, ProtocolError>;
    /// The request with the images at these slot indices replaced.
    fn replace_images(
        &self,
        req: &ProxyRequest<'_>,
        replacements: &[(usize, Vec<u8>)],
    ) -> Result<Rewritten, ProtocolError>;
    /// The API's largest image, in bytes (`None`: no limit).
    fn max_image_bytes(&self) -> Option<usize>;
    /// The API's most images per request (`None`: no limit).
    fn max_images(&self) -> Option<usize>;
}

impl ImageWire for Protocol {
    fn extract_images(&self, req: &ProxyRequest<'_>) -> Result<Vec<ImageSlot>, ProtocolError> {
        Protocol::extract_images(*self, req)
    }
    fn replace_images(
        &self,
        req: &ProxyRequest<'_>,
        replacements: &[(usize, Vec<u8>)],
    ) -> Result<Rewritten, ProtocolError> {
        Protocol::replace_images(*self, req, replacements)
    }
    fn max_image_bytes(&self) -> Option<usize> {
        Protocol::max_image_bytes(*self)
    }
    fn max_images(&self) -> Option<usize> {
        Protocol::max_images(*self)
    }
}

/// What happened to one image of a request.
#[derive(Debug, Clone)]
pub struct SlotResult {
    /// The slot's index (see [`crate::protocol::ImageSlot::index`]).
    pub index: usize,
    /// Bytes as the client sent them.
    pub original_len: usize,
    /// Bytes uploaded on the request path.
    pub uploaded_len: usize,
    /// What was done, for `X-AdaCompress-Action`: `q35`, `q75@512`, `keep`, `forced:q50`,
    /// `original:not_smaller`, …
    pub action: String,
    /// The agent's decision, when it made one.
    pub decision: Option<Decision>,
    /// Index (in the agent's action set) of the action whose bytes the upload holds.
    pub applied: Option<usize>,
    /// The bytes uploaded for this slot are a re-encode (not the original).
    pub compressed: bool,
    /// The live pair chose to audit this image (see [`crate::learn::pair`]).
    pub audit: Option<Audit>,
}

impl SlotResult {
    /// The image went up at the live pair's own action: decided, not deviated, and not
    /// left as sent. Only such answers say something about the pair.
    pub fn at_live_pair(&self) -> bool {
        self.decision
            .as_ref()
            .is_some_and(|d| !d.deviated && self.applied == Some(d.action))
    }
}

/// An audit the live pair planned for one image, with the image's size.
#[derive(Debug, Clone)]
pub struct Audit {
    pub plan: AuditPlan,
    pub width: u32,
    pub height: u32,
}

/// What step 3 produced for a request.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The new body; `None` = forward the original byte for byte.
    pub body: Option<Bytes>,
    /// Headers that change with the body.
    pub set_headers: Vec<(String, String)>,
    pub slots: Vec<SlotResult>,
    pub bytes_saved: usize,
    /// Why the whole request went as sent, if it did before any image was looked at.
    pub reason: Option<Passthrough>,
}

impl Outcome {
    /// The whole request goes as sent, for `reason` (counted).
    pub fn passthrough(metrics: &Metrics, reason: Passthrough) -> Outcome {
        metrics.passthrough(reason);
        Outcome {
            reason: Some(reason),
            ..Outcome::default()
        }
    }

    /// `X-AdaCompress-Action`: one entry per image, or `original:REASON`; beyond
    /// `max_images` entries, the first `max_images` and then `+N more` (plain ASCII, as
    /// header values must be), so the header stays readable whatever a request carries.
    pub fn action_header(&self, max_images: usize) -> String {
        if let Some(r) = self.reason {
            return format!("original:{}", r.as_str());
        }
        let mut out = self
            .slots
            .iter()
            .take(max_images)
            .map(|s| s.action.as_str())
            .collect::<Vec<_>>()
            .join(",");
        if self.slots.len() > max_images {
            out.push_str(&format!(",+{} more", self.slots.len() - max_images));
        }
        out
    }

    /// Whether the agent decided anything (only then is there something to estimate).
    pub fn has_decisions(&self) -> bool {
        self.slots.iter().any(|s| s.decision.is_some())
    }
}

/// Compresses every inline image of a request.
pub async fn compress_request(
    s: &Arc<ProxyState>,
    protocol: &(impl ImageWire + Sync),
    req: &ProxyRequest<'_>,
    forced: Option<u8>,
) -> Outcome {
    let slots = match protocol.extract_images(req) {
        Ok(slots) => slots,
        Err(e @ ProtocolError::TooComplex { .. }) => {
            tracing::debug!(error = %e, "request too complex to parse; forwarding as sent");
            return Outcome::passthrough(&s.metrics, Passthrough::TooComplex);
        }
        Err(e) => {
            tracing::debug!(error = %e, "request not understood; forwarding as sent");
            return Outcome::passthrough(&s.metrics, Passthrough::Unparsable);
        }
    };
    let inline: Vec<(usize, Vec<u8>)> = slots
        .iter()
        .filter_map(|slot| match &slot.image {
            SlotImage::Inline(bytes) => Some((slot.index, bytes.clone())),
            SlotImage::Remote(_) | SlotImage::Unusable(_) => None,
        })
        .collect();
    let remote = slots
        .iter()
        .filter(|slot| matches!(slot.image, SlotImage::Remote(_)))
        .count();
    for _ in 0..remote {
        s.metrics.passthrough(Passthrough::RemoteImage);
    }
    if inline.is_empty() {
        if remote > 0 {
            return Outcome {
                reason: Some(Passthrough::RemoteImage),
                ..Outcome::default()
            };
        }
        return Outcome::passthrough(&s.metrics, Passthrough::NoImage);
    }
    let max_images = protocol
        .max_images()
        .map_or(s.cfg.limits.max_images_per_request, |m| {
            m.min(s.cfg.limits.max_images_per_request)
        });
    if inline.len() > max_images {
        tracing::debug!(
            images = inline.len(),
            max_images,
            "more images than allowed per request; forwarding as sent"
        );
        return Outcome::passthrough(&s.metrics, Passthrough::TooManyImages);
    }
    let fixed = s.cfg.agent.fixed_action();
    if s.online.is_none() && forced.is_none() && fixed.is_none() {
        return Outcome::passthrough(&s.metrics, Passthrough::NoAgent);
    }
    // The permits travel into the blocking job and are released when *it* ends, not when
    // the request future is dropped: a client that hangs up cannot free a worker whose
    // thread is still busy, so at most `cpu_workers` jobs ever run.
    let (run, admit) = s.pool();
    let Ok(admitted) = admit.try_acquire_owned() else {
        return Outcome::passthrough(&s.metrics, Passthrough::Saturated);
    };
    let wait = Duration::from_secs_f64(s.cfg.limits.worker_wait_secs);
    let slot_permit = match tokio::time::timeout(wait, run.acquire_owned()).await {
        Ok(Ok(p)) => p,
        Ok(Err(_)) => return Outcome::passthrough(&s.metrics, Passthrough::Saturated),
        Err(_) => return Outcome::passthrough(&s.metrics, Passthrough::WorkerWait),
    };
    let abandoned = Arc::new(AtomicBool::new(false));
    let _hang_up = HangUp(abandoned.clone());
    let job = Job {
        online: s.online.clone(),
        metrics: s.metrics.clone(),
        limits: s.limits,
        forced,
        fixed,
        max_image_bytes: protocol.max_image_bytes(),
        min_q: s.cfg.agent.min_quality,
        max_q: s.cfg.agent.max_quality,
        abandoned,
    };
    let results = tokio::task::spawn_blocking(move || {
        let _permits = (admitted, slot_permit);
        job.metrics.busy_workers.inc();
        let out = inline
            .into_iter()
            .map(|(index, bytes)| job.one(index, &bytes))
            .collect::<Vec<(SlotResult, Option<Vec<u8>>)>>();
        job.metrics.busy_workers.dec();
        out
    })
    .await;
    let results = match results {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "compression task failed; forwarding the original");
            return Outcome::passthrough(&s.metrics, Passthrough::Error);
        }
    };
    let mut replacements = Vec::new();
    let mut out_slots = Vec::new();
    let mut saved = 0usize;
    for (slot, upload) in results {
        if let Some(bytes) = upload {
            saved += slot.original_len.saturating_sub(bytes.len());
            replacements.push((slot.index, bytes));
        }
        out_slots.push(slot);
    }
    if replacements.is_empty() {
        return Outcome {
            slots: out_slots,
            ..Outcome::default()
        };
    }
    match protocol.replace_images(req, &replacements) {
        Ok(rewritten) => Outcome {
            body: Some(Bytes::from(rewritten.body)),
            set_headers: rewritten.headers,
            slots: out_slots,
            bytes_saved: saved,
            reason: None,
        },
        Err(e) => {
            tracing::warn!(error = %e, "could not put the images back; forwarding the original");
            s.metrics.passthrough(Passthrough::Error);
            for slot in &mut out_slots {
                slot.uploaded_len = slot.original_len;
                slot.compressed = false;
                slot.action = "original:error".into();
            }
            Outcome {
                slots: out_slots,
                ..Outcome::default()
            }
        }
    }
}

/// Marks a request's compression job abandoned when the request future is dropped
/// (the client hung up): the job skips the images it has not started.
struct HangUp(Arc<AtomicBool>);

impl Drop for HangUp {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Everything one blocking compression job needs.
struct Job {
    online: Option<Arc<Online>>,
    metrics: Arc<Metrics>,
    limits: Limits,
    forced: Option<u8>,
    /// `agent.fixed`: one action for every image instead of the agent.
    fixed: Option<Action>,
    /// The API's documented per-image size limit ([`Protocol::max_image_bytes`]).
    max_image_bytes: Option<usize>,
    min_q: u8,
    max_q: u8,
    /// Set when the request is gone (see [`HangUp`]); read between images.
    abandoned: Arc<AtomicBool>,
}

impl Job {
    /// The encoder mode the agent's action set was trained with (the default without one).
    fn encoder(&self) -> codec::EncoderMode {
        self.online
            .as_ref()
            .map_or(codec::EncoderMode::default(), |o| o.encoder)
    }

    /// One image: the slot's record and the bytes to upload instead (None = original).
    fn one(&self, index: usize, bytes: &[u8]) -> (SlotResult, Option<Vec<u8>>) {
        let mut slot = SlotResult {
            index,
            original_len: bytes.len(),
            uploaded_len: bytes.len(),
            action: String::new(),
            decision: None,
            applied: None,
            compressed: false,
            audit: None,
        };
        let pass = |mut slot: SlotResult, reason: Passthrough| {
            self.metrics.passthrough(reason);
            slot.action = format!("original:{}", reason.as_str());
            (slot, None)
        };
        if self.abandoned.load(Ordering::Relaxed) {
            return pass(slot, Passthrough::Abandoned);
        }
        let t = Instant::now();
        // The header only: limits are checked before any pixel is decoded; the agent
        // and the action then decode at the DCT scale each needs.
        let mut source = match Source::new(bytes, &self.limits) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "image not decoded; forwarding the original");
                return pass(slot, Passthrough::of_codec(&e));
            }
        };
        self.metrics.stage("decode", t.elapsed().as_secs_f64());
        let (mut action, encoder, mut label) = if let Some(q) = self.forced {
            let q = q.clamp(self.min_q, self.max_q);
            (
                Action {
                    max_side: None,
                    quality: Some(q),
                },
                self.encoder(),
                format!("forced:q{q}"),
            )
        } else if let Some(mut action) = self.fixed {
            if let Some(q) = action.quality {
                action.quality = Some(q.clamp(self.min_q, self.max_q));
            }
            (action, self.encoder(), format!("fixed:{action}"))
        } else {
            let Some(online) = &self.online else {
                return pass(slot, Passthrough::NoAgent);
            };
            let t = Instant::now();
            let decision = match online.decide(&mut source) {
                Ok(d) => d,
                Err(StateError::Codec(e)) => {
                    tracing::debug!(error = %e, "image not decoded; forwarding the original");
                    return pass(slot, Passthrough::of_codec(&e));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "agent failed; forwarding the original");
                    return pass(slot, Passthrough::Error);
                }
            };
            self.metrics.stage("infer", t.elapsed().as_secs_f64());
            let mut action = online.actions.actions[decision.action];
            if let Some(q) = action.quality {
                action.quality = Some(q.clamp(self.min_q, self.max_q));
            }
            slot.applied = online.actions.index_of(&action);
            slot.decision = Some(decision);
            (action, online.encoder, action.name())
        };
        let t = Instant::now();
        let mut applied = match source.apply(&action, encoder) {
            Ok(a) => a,
            Err(e @ CodecError::Encode(_)) => {
                tracing::warn!(error = %e, "encoding failed; forwarding the original");
                return pass(slot, Passthrough::Error);
            }
            Err(e) => {
                tracing::debug!(error = %e, "image not decoded; forwarding the original");
                return pass(slot, Passthrough::of_codec(&e));
            }
        };
        // Over the API's documented size limit the cloud would refuse the image: make it
        // fit by the smallest step down that does, rather than send it to be refused.
        let mut fitted = false;
        if let Some(limit) = self.max_image_bytes
            && applied.bytes.len() > limit
        {
            match fit_to_limit(&mut source, encoder, limit) {
                Some((step, bytes)) => {
                    self.metrics.fitted_to_limit.inc();
                    label = format!("{label}+fit:{step}");
                    action = step;
                    applied = crate::action::Applied {
                        bytes,
                        original: false,
                    };
                    fitted = true;
                }
                None => tracing::debug!(limit, "no step fits the API's size limit"),
            }
        }
        if action.quality.is_some() {
            self.metrics.stage("encode", t.elapsed().as_secs_f64());
        }
        let uploaded_len = if applied.original {
            slot.original_len
        } else {
            applied.bytes.len()
        };
        if !fitted && let (Some(online), Some(decision)) = (&self.online, &slot.decision) {
            slot.audit = online
                .plan_audit(Served {
                    width: source.width,
                    height: source.height,
                    original_bytes: slot.original_len,
                    uploaded_bytes: uploaded_len,
                    action: slot.applied,
                    deviation: decision.deviation,
                    deviated: decision.deviated,
                })
                .map(|plan| Audit {
                    plan,
                    width: source.width,
                    height: source.height,
                });
        }
        if applied.original {
            self.metrics.chosen_quality.observe(100.0);
            if action.quality.is_some() {
                self.metrics.passthrough(Passthrough::NotSmaller);
                slot.action = format!("{label}:original:not_smaller");
            } else {
                slot.action = label;
            }
            return (slot, None);
        }
        self.metrics
            .chosen_quality
            .observe(f64::from(action.quality.unwrap_or(100)));
        slot.action = label;
        slot.uploaded_len = applied.bytes.len();
        slot.compressed = true;
        (slot, Some(applied.bytes))
    }
}

/// The steps tried, most faithful first, when an upload is over its API's size limit.
const FIT_LADDER: [(Option<u32>, u8); 12] = [
    (None, 95),
    (None, 85),
    (Some(4096), 85),
    (Some(3072), 85),
    (Some(2048), 85),
    (Some(2048), 75),
    (Some(1600), 75),
    (Some(1280), 75),
    (Some(1024), 75),
    (Some(768), 75),
    (Some(512), 70),
    (Some(384), 60),
];

/// The first step of [`FIT_LADDER`] whose upload is at most `limit` bytes.
fn fit_to_limit(
    source: &mut Source<'_>,
    encoder: codec::EncoderMode,
    limit: usize,
) -> Option<(Action, Vec<u8>)> {
    FIT_LADDER.iter().find_map(|&(max_side, q)| {
        let step = Action {
            max_side,
            quality: Some(q),
        };
        match source.apply(&step, encoder) {
            Ok(a) if !a.original && a.bytes.len() <= limit => {
                Some((step.effective(source.long_side()), a.bytes))
            }
            _ => None,
        }
    })
}
