//! Stage 4b: when the cloud is unsure of an image sent at the live pair, ask again with the
//! request as the client sent it, and answer the client with that.
//!
//! Which answers are unsure is the learner's call ([`crate::learn::reask`]): an image sent at
//! the live pair whose answer's top-1 margin is under the `pair.reask_rate` quantile of the
//! recent margins at that pair. The second request is the client's own (headers and body,
//! Rekognition re-signed as for the first); the client gets its answer, the live pair still
//! learns from the first (it is the pair's), and an audit of the same image takes the
//! second as its reference instead of uploading the original again ([`super::estimate`]).
//!
//! Never worse than not re-asking: when the second request fails or answers with an error,
//! the client gets the first answer. Counted in `adacompress_reasks_total{outcome}` and
//! `adacompress_reask_bytes_total` (the bytes are in `adacompress_image_bytes_out_total`
//! too), timed as `stage="reask"`.

use axum::body::Bytes;
use axum::http::HeaderValue;

use super::metrics::OutcomeLabel;
use super::{
    ProxyState, RequestCtx, Routed, Upload, UpstreamAnswer, send_upstream, upstream_headers,
};
use crate::learn::reask::top1_margin;

/// A request sent a second time as sent, and its answer when it was a success.
pub(super) struct Reasked {
    pub answer: Option<UpstreamAnswer>,
    /// Image bytes the second request carried.
    pub image_bytes: usize,
}

/// Sends the client's request again as sent when the answer to the compressed upload is
/// unsure; `None` when nothing was sent again (the answer is sure, nothing was compressed,
/// or the answer cannot be read).
pub(super) async fn maybe_reask(
    s: &ProxyState,
    ctx: &RequestCtx,
    routed: &Routed,
    body: &Bytes,
    upload: &Upload,
    answer: &UpstreamAnswer,
) -> Option<Reasked> {
    let online = s.online.as_ref()?;
    if upload.original || !answer.status.is_success() {
        return None;
    }
    let protocol = routed
        .protocol
        .or(routed.grpc.filter(|c| c.compress).map(|c| c.api))?;
    let at_pair: Vec<usize> = upload
        .outcome
        .slots
        .iter()
        .filter(|x| x.at_live_pair())
        .map(|x| x.index)
        .collect();
    if at_pair.is_empty() {
        return None;
    }
    let threshold = online.reask_threshold()?;
    let answers = super::estimate::answers_of(protocol, routed.grpc.is_some(), answer).ok()?;
    let unsure = at_pair.iter().any(|&i| {
        answers
            .get(i)
            .and_then(|a| a.as_ref().ok())
            .and_then(top1_margin)
            .is_some_and(|m| m < threshold)
    });
    if !unsure {
        return None;
    }
    let mut headers = upstream_headers(&ctx.parts.headers, &[]);
    if routed.grpc.is_some() {
        headers.insert("te", HeaderValue::from_static("trailers"));
    }
    if routed.rekognition
        && let Some(resign) = &s.resign
        && let Err(e) = resign(&upload.url, &mut headers, body)
    {
        tracing::warn!(id = %ctx.request_id, error = %e, "re-ask: re-signing failed");
        count(s, "upstream_error");
        return None;
    }
    let image_bytes: usize = upload.outcome.slots.iter().map(|x| x.original_len).sum();
    let http = if routed.grpc.is_some() {
        &s.http2
    } else {
        &s.http
    };
    let t = std::time::Instant::now();
    let second = send_upstream(
        http,
        ctx.parts.method.clone(),
        &upload.url,
        headers,
        body.clone(),
        s.cfg.limits.max_answer_bytes,
    )
    .await;
    s.metrics.stage("reask", t.elapsed().as_secs_f64());
    s.metrics.reask_bytes.inc_by(image_bytes as u64);
    match second {
        Ok(a) if a.status.is_success() => {
            count(s, "answered");
            tracing::debug!(id = %ctx.request_id, threshold, "re-asked as sent");
            Some(Reasked {
                answer: Some(a),
                image_bytes,
            })
        }
        Ok(a) => {
            tracing::warn!(id = %ctx.request_id, status = a.status.as_u16(), "re-ask: the upstream answered with an error; the client gets the first answer");
            count(s, "upstream_status");
            Some(Reasked {
                answer: None,
                image_bytes,
            })
        }
        Err(e) => {
            tracing::warn!(id = %ctx.request_id, error = ?e, "re-ask failed; the client gets the first answer");
            count(s, "upstream_error");
            Some(Reasked {
                answer: None,
                image_bytes,
            })
        }
    }
}

fn count(s: &ProxyState, outcome: &'static str) {
    s.metrics
        .reasks
        .get_or_create(&OutcomeLabel { outcome })
        .inc();
}
