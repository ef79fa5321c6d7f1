//! Step 6, off the request path: upload the other version of a request and compare answers.
//!
//! The client got one answer; the estimate fetches the other one:
//!
//! - the client's images were re-encoded → upload the **original** request (the reference);
//! - the client's originals went up while retraining → upload the **explored re-encodes**;
//! - the agent kept the original (or the re-encode was not smaller) → nothing to upload:
//!   the answer is the reference's, an agreement by definition.
//!
//! Each image with an agent decision becomes one [`Observed`] for the learner. Extra uploads
//! are bounded: at most [`super::MAX_ESTIMATES_IN_FLIGHT`] at once and
//! `estimator.budget_bytes_per_minute`; skipped ones are counted, never queued.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method};

use super::compress::Outcome;
use super::{ProxyState, UpstreamAnswer, send_upstream, upstream_headers};
use crate::learn::online::{Observed, Online};
use crate::learn::reward::answers_agree;
use crate::protocol::{Answer, Protocol, ProtocolError, ProxyRequest};

/// A forwarded request, kept for its estimate.
#[derive(Debug)]
pub struct Pending {
    pub protocol: Protocol,
    pub method: Method,
    pub url: String,
    pub client_headers: HeaderMap,
    pub path_and_query: String,
    pub original_body: Bytes,
    /// The answer the client got.
    pub served: UpstreamAnswer,
    /// The client's request went up as sent (no slot re-encoded on the request path).
    pub served_original: bool,
    pub outcome: Outcome,
    pub request_id: String,
}

/// Which way round the comparison goes.
enum Other {
    /// Upload the original; the served answer is the candidate.
    Original,
    /// Upload these re-encodes; the served answer is the reference.
    Explored(Vec<(usize, Vec<u8>)>),
    /// Nothing to upload.
    Nothing,
}

/// Draws whether to estimate `p` and, if so, spawns the estimate.
pub fn maybe_estimate(s: Arc<ProxyState>, online: Arc<Online>, p: Pending) {
    if !s.cfg.estimator.enabled || !online.draw_estimate() {
        return;
    }
    let alts: Vec<(usize, Vec<u8>)> = p
        .outcome
        .slots
        .iter()
        .filter_map(|slot| slot.alt.clone().map(|a| (slot.index, a)))
        .collect();
    let other = if !p.served_original {
        Other::Original
    } else if !alts.is_empty() {
        Other::Explored(alts)
    } else {
        Other::Nothing
    };
    let extra: usize = match &other {
        Other::Original => p.outcome.slots.iter().map(|x| x.original_len).sum(),
        Other::Explored(alts) => alts.iter().map(|(_, b)| b.len()).sum(),
        Other::Nothing => 0,
    };
    if matches!(other, Other::Nothing) {
        record(&online, &p, None);
        return;
    }
    let Ok(permit) = s.estimation_slots().try_acquire_owned() else {
        skipped(&s, "busy");
        return;
    };
    if !online.try_spend(extra as u64) {
        skipped(&s, "budget");
        return;
    }
    let guard = online.estimate_guard();
    tokio::spawn(async move {
        let _permit = permit;
        let _guard = guard;
        let (body, set_headers) = match &other {
            Other::Original => (p.original_body.clone(), Vec::new()),
            Other::Explored(alts) => {
                let view = ProxyRequest {
                    path_and_query: &p.path_and_query,
                    headers: &p.client_headers,
                    body: &p.original_body,
                };
                match p.protocol.replace_images(&view, alts) {
                    Ok(r) => (Bytes::from(r.body), r.headers),
                    Err(e) => {
                        tracing::warn!(id = %p.request_id, error = %e, "estimate: cannot build the explored request");
                        skipped(&s, "error");
                        return;
                    }
                }
            }
            Other::Nothing => return,
        };
        let mut headers = upstream_headers(&p.client_headers, &set_headers);
        if p.protocol == Protocol::Rekognition {
            let Some(resign) = &s.resign else {
                skipped(&s, "error");
                return;
            };
            if let Err(e) = resign(&p.url, &mut headers, &body) {
                tracing::warn!(id = %p.request_id, error = %e, "estimate: re-signing failed");
                skipped(&s, "error");
                return;
            }
        }
        s.metrics.estimation_uploads.inc();
        s.metrics.estimation_bytes.inc_by(extra as u64);
        let answer = match send_upstream(&s.http, p.method.clone(), &p.url, headers, body).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(id = %p.request_id, error = ?e, "estimate: upstream failed");
                skipped(&s, "error");
                return;
            }
        };
        let other_answers = parse(p.protocol, &answer);
        let served_answers = parse(p.protocol, &p.served);
        let (reference, candidate) = match other {
            Other::Original => (other_answers, served_answers),
            _ => (served_answers, other_answers),
        };
        record(&online, &p, Some((&reference, &candidate)));
    });
}

type Answers = Result<Vec<Result<Answer, ProtocolError>>, ProtocolError>;

fn parse(protocol: Protocol, a: &UpstreamAnswer) -> Answers {
    protocol.parse_answers(a.status.as_u16(), &a.body)
}

fn skipped(s: &ProxyState, reason: &'static str) {
    s.metrics
        .estimation_skipped
        .get_or_create(&super::metrics::ReasonLabel { reason })
        .inc();
}

/// Turns the compared answers into observations and hands them to the learner.
fn record(online: &Online, p: &Pending, answers: Option<(&Answers, &Answers)>) {
    let accuracy = online.accuracy();
    let mut observed = Vec::new();
    for slot in &p.outcome.slots {
        let Some(decision) = &slot.decision else {
            continue;
        };
        let action = slot.applied.unwrap_or(decision.action);
        let greedy = decision.action == decision.greedy;
        let (uploaded, size_ratio) = match (&slot.alt, slot.compressed) {
            (Some(alt), _) => (true, alt.len() as f32 / slot.original_len.max(1) as f32),
            (None, true) => (
                true,
                slot.uploaded_len as f32 / slot.original_len.max(1) as f32,
            ),
            (None, false) => (false, 1.0),
        };
        let agree = if !uploaded {
            // The original went up for this image: its answer is the reference.
            true
        } else {
            let Some((reference, candidate)) = answers else {
                continue;
            };
            let r = match reference {
                Ok(list) => match list.get(slot.index) {
                    Some(Ok(a)) => a,
                    // No usable reference (upstream error): nothing to learn from.
                    _ => continue,
                },
                Err(_) => continue,
            };
            match candidate {
                Ok(list) => match list.get(slot.index) {
                    Some(Ok(c)) => answers_agree(r, c, accuracy),
                    _ => false,
                },
                Err(_) => false,
            }
        };
        observed.push(Observed {
            features: decision.features.clone(),
            action,
            greedy,
            agree,
            size_ratio,
        });
    }
    if observed.is_empty() {
        return;
    }
    let events = online.record(&observed);
    tracing::debug!(id = %p.request_id, images = observed.len(), ?events, "estimated");
}
