//! Step 6, off the request path: audit the live pair.
//!
//! The client got one answer; for an image the live pair chose to audit
//! ([`Online::plan_audit`], on the request path) the estimate uploads the original request
//! (the reference; not when the request already went up as sent) and each candidate pair
//! in place of that image, and compares every answer, the served one included, with the
//! reference's ([`crate::learn::pair`]). Every served answer also hands its top-1 margin to
//! the live pair (free drift detection, no upload).
//!
//! Extra uploads are bounded: at most [`super::MAX_ESTIMATES_IN_FLIGHT`] at once, and the
//! live pair's byte credit; skipped ones are counted, never queued. The tasks live in a
//! `JoinSet` owned by [`ProxyState`]: shutdown waits for them within `proxy.drain_secs`
//! (the same deadline as the requests) and aborts what is left.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method};

use super::compress::{ImageWire, Outcome};
use super::grpc::GrpcWire;
use super::{ProxyState, UpstreamAnswer, send_upstream, upstream_headers};
use crate::learn::online::Online;
use crate::learn::reask::top1_margin;
use crate::learn::reward::answers_agree;
use crate::protocol::{Answer, Protocol, ProtocolError, ProxyRequest};

/// A forwarded request, kept for its estimate.
#[derive(Debug)]
pub struct Pending {
    pub protocol: Protocol,
    /// A gRPC call ([`super::grpc`]): its images are in a protobuf message, it goes up over
    /// HTTP/2 and its answers are protobuf too.
    pub grpc: bool,
    pub method: Method,
    pub url: String,
    pub client_headers: HeaderMap,
    pub path_and_query: String,
    pub original_body: Bytes,
    /// The answer to the upload as compressed (the client's, unless it was re-asked).
    pub served: UpstreamAnswer,
    /// The client's request went up as sent (no slot re-encoded on the request path).
    pub served_original: bool,
    /// The answer to the request sent again as sent, when the cloud was unsure of `served`
    /// (stage 4b, `proxy::reask`); the client got this one.
    pub reasked: Option<UpstreamAnswer>,
    pub outcome: Outcome,
    pub request_id: String,
}

/// Watches the served answer's margins and audits `p` if the request path planned it.
pub fn maybe_estimate(s: Arc<ProxyState>, online: Arc<Online>, p: Pending) {
    // The served answer is parsed once, for the margin watch and the audit.
    let served = parse_for(&p, &p.served);
    watch_margin(&online, &p, &served);
    audit(s, online, p, served);
}

/// Hands the top-1 margin of the served answer, for each image that went up at the live
/// pair, to the learner (the answer is already here: no upload).
fn watch_margin(online: &Online, p: &Pending, served: &Answers) {
    let Ok(answers) = served else {
        return;
    };
    // Deviated images went up smaller than the pair: their margins are not the pair's.
    for slot in p.outcome.slots.iter().filter(|x| x.at_live_pair()) {
        if let Some(Ok(answer)) = answers.get(slot.index)
            && let Some(margin) = top1_margin(answer)
        {
            online.observe_margin(margin);
        }
    }
}

/// A live-pair audit of the first audited image of `p`: upload the original request (the
/// reference) and each candidate pair in place of that image, and compare every answer,
/// the served one included, with the reference's. Runs off the request path within the
/// same bounds as estimates (in-flight cap; the byte credit was reserved when planned).
fn audit(s: Arc<ProxyState>, online: Arc<Online>, p: Pending, served: Answers) {
    let Some((slot_index, original_len, mut plan)) = p.outcome.slots.iter().find_map(|x| {
        x.audit
            .as_ref()
            .map(|a| (x.index, x.original_len, a.clone()))
    }) else {
        return;
    };
    let reserved = original_len as f64;
    if !s.cfg.estimator.enabled {
        online.refund_audit(reserved);
        return;
    }
    let Ok(permit) = s.estimation_slots().try_acquire_owned() else {
        online.refund_audit(reserved);
        skipped(&s, "busy");
        return;
    };
    let guard = online.estimate_guard();
    let state = s.clone();
    state.spawn_estimate(async move {
        let _permit = permit;
        let _guard = guard;
        let Some(original) = slot_bytes(&p, slot_index) else {
            return;
        };
        // Encode the candidates on a worker of the compression pool (none free: no audit).
        let Ok(worker) = s.pool().0.try_acquire_owned() else {
            online.refund_audit(reserved);
            skipped(&s, "busy");
            return;
        };
        let limits = s.limits;
        let encoder = online.encoder;
        let actions: Vec<(usize, crate::action::Action)> = plan
            .plan
            .candidates
            .iter()
            .filter_map(|&a| online.actions.actions.get(a).map(|x| (a, *x)))
            .collect();
        let bytes = original.clone();
        let (explore, known) = (
            plan.plan.explore && !plan.plan.deviated,
            plan.plan.deviation,
        );
        let learner = online.clone();
        let (encoded, deviation) = tokio::task::spawn_blocking(move || {
            let _worker = worker;
            let mut source = crate::action::Source::new(&bytes, &limits).ok()?;
            let mut encoded: Vec<(usize, crate::action::Applied, bool)> = actions
                .into_iter()
                .filter_map(|(a, action)| {
                    source.apply(&action, encoder).ok().map(|x| (a, x, false))
                })
                .collect();
            // The image's deviation candidate (the head runs here, off the request path,
            // when the request path did not run it), uploaded for the deviation gate.
            let deviation = match known {
                Some(d) => Some(d),
                None if explore => learner.deviation_candidate(&mut source).ok().flatten(),
                None => None,
            };
            if explore
                && let Some((a, _)) = deviation
                && let Some(action) = learner.actions.actions.get(a)
                && let Ok(x) = source.apply(action, encoder)
            {
                encoded.push((a, x, true));
            }
            Some((encoded, deviation))
        })
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
        plan.plan.deviation = deviation;
        // The request went up as sent: the client's answer is the reference, no upload.
        let (reference, mut spent) = if p.served_original {
            (p.served.clone(), 0u64)
        } else if let Some(reasked) = &p.reasked {
            // The request was re-asked as sent on the request path: its answer is the
            // reference, no upload.
            (reasked.clone(), 0u64)
        } else {
            match upload(&s, &p, &[], original.len()).await {
                Some(a) => (a, original.len() as u64),
                None => return,
            }
        };
        let reference = match parse_for(&p, &reference) {
            Ok(list) => match list.into_iter().nth(slot_index) {
                Some(Ok(a)) => a,
                _ => return,
            },
            Err(_) => return,
        };
        let accuracy = online.accuracy();
        // Whether an answer's slot agrees with the reference, and its top-1 margin.
        let judge = |answers: Answers| match answers {
            Ok(list) => match list.get(slot_index) {
                Some(Ok(c)) => (answers_agree(&reference, c, accuracy), top1_margin(c)),
                _ => (false, None),
            },
            Err(_) => (false, None),
        };
        let (served_agrees, served_margin) = judge(served);
        // A deviated image's free answer is its candidate's (for the gate only).
        let mut results = vec![crate::learn::pair::AuditResult {
            action: match plan.plan.deviation {
                Some((a, _)) if plan.plan.deviated => a,
                _ => plan.plan.served,
            },
            agree: served_agrees,
            margin: served_margin,
            size_ratio: None,
            deviation: plan.plan.deviated,
        }];
        for (a, applied, deviation) in encoded {
            let ratio = applied.bytes.len() as f64 / original.len().max(1) as f64;
            let (agree, margin) = if applied.original {
                // The pair leaves this image as sent: its answer is the reference's.
                (true, None)
            } else {
                let len = applied.bytes.len();
                spent += len as u64;
                let Some(answer) = upload(&s, &p, &[(slot_index, applied.bytes)], len).await else {
                    continue;
                };
                judge(parse_for(&p, &answer))
            };
            results.push(crate::learn::pair::AuditResult {
                action: a,
                agree,
                margin,
                size_ratio: Some(ratio),
                deviation,
            });
        }
        online.record_audit(
            &plan.plan,
            &results,
            spent,
            (plan.width, plan.height, original.len()),
        );
        tracing::debug!(
            id = %p.request_id,
            audited = results.len(),
            served_agrees,
            reasked = p.reasked.is_some(),
            "audited"
        );
    });
}

/// Uploads the client's request with `replacements` (none = the original as sent),
/// re-signing if the API needs it; counts it as an estimation upload of `image_bytes`.
async fn upload(
    s: &ProxyState,
    p: &Pending,
    replacements: &[(usize, Vec<u8>)],
    image_bytes: usize,
) -> Option<UpstreamAnswer> {
    let (body, set_headers) = if replacements.is_empty() {
        (p.original_body.clone(), Vec::new())
    } else {
        let view = ProxyRequest {
            path_and_query: &p.path_and_query,
            headers: &p.client_headers,
            body: &p.original_body,
        };
        match wire(p).replace_images(&view, replacements) {
            Ok(r) => (Bytes::from(r.body), r.headers),
            Err(e) => {
                tracing::warn!(id = %p.request_id, error = %e, "estimate: cannot build the request");
                skipped(s, "error");
                return None;
            }
        }
    };
    let mut headers = upstream_headers(&p.client_headers, &set_headers);
    if p.grpc {
        headers.insert("te", axum::http::HeaderValue::from_static("trailers"));
    }
    if p.protocol == Protocol::Rekognition {
        let Some(resign) = &s.resign else {
            skipped(s, "error");
            return None;
        };
        if let Err(e) = resign(&p.url, &mut headers, &body) {
            tracing::warn!(id = %p.request_id, error = %e, "estimate: re-signing failed");
            skipped(s, "error");
            return None;
        }
    }
    s.metrics.estimation_uploads.inc();
    s.metrics.estimation_bytes.inc_by(image_bytes as u64);
    let max_answer = s.cfg.limits.max_answer_bytes;
    let http = if p.grpc { &s.http2 } else { &s.http };
    match send_upstream(http, p.method.clone(), &p.url, headers, body, max_answer).await {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::warn!(id = %p.request_id, error = ?e, "estimate: upstream failed");
            skipped(s, "error");
            None
        }
    }
}

/// The client's bytes for one slot.
fn slot_bytes(p: &Pending, index: usize) -> Option<Vec<u8>> {
    let view = ProxyRequest {
        path_and_query: &p.path_and_query,
        headers: &p.client_headers,
        body: &p.original_body,
    };
    let slots = wire(p).extract_images(&view).ok()?;
    slots
        .into_iter()
        .find(|s| s.index == index)
        .and_then(|s| s.bytes().map(<[u8]>::to_vec))
}

type Answers = Result<Vec<Result<Answer, ProtocolError>>, ProtocolError>;

/// The wire format of `p`'s images: its API's REST body, or its gRPC message.
fn wire(p: &Pending) -> Box<dyn ImageWire + Send + Sync> {
    if p.grpc {
        Box::new(GrpcWire(p.protocol))
    } else {
        Box::new(p.protocol)
    }
}

/// The answers of `p`'s API in `a`, per image.
fn parse_for(p: &Pending, a: &UpstreamAnswer) -> Answers {
    answers_of(p.protocol, p.grpc, a)
}

/// The answers of `protocol` (over gRPC when `grpc`) in `a`, per image.
pub(super) fn answers_of(protocol: Protocol, grpc: bool, a: &UpstreamAnswer) -> Answers {
    if grpc {
        return super::grpc::parse_answers(protocol, &a.headers, &a.body, a.trailers.as_ref())
            .unwrap_or_else(|| {
                Err(ProtocolError::UnexpectedAnswer {
                    detail: format!("{} gRPC answers are not read", protocol.name()),
                })
            });
    }
    protocol.parse_answers(a.status.as_u16(), &a.body)
}

fn skipped(s: &ProxyState, reason: &'static str) {
    s.metrics
        .estimation_skipped
        .get_or_create(&super::metrics::ReasonLabel { reason })
        .inc();
}
