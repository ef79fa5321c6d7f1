//! The admin listener (default `127.0.0.1:9090`, apart from the proxy port):
//!
//! | path | answer |
//! |---|---|
//! | `GET /metrics` | Prometheus text |
//! | `GET /healthz` | 200 while the process serves (liveness; checks no upstream) |
//! | `GET /readyz` | 200 when the agent is loaded and the proxy is not draining, else 503; JSON `{"ready", "rekognition": {"forwardable", "resign", "reason"}}` (the latter with a Rekognition upstream) |
//! | `GET /agent` | JSON: state, version, threshold, checkpoint; `pair`: the live pair served, whether it is certified, every audited pair's bounds and cost, audits, drifts and the estimation bytes |
//! | `POST /agent/relearn` | the live pair forgets this deployment's audits and learns again from the pair it serves now (a known change: a new camera, a new site); 202 with the new state |
//!
//! The mutating endpoint (`POST`) needs `Authorization: Bearer TOKEN` when a token is
//! configured (`ADACOMPRESS_ADMIN_TOKEN`, or the file `proxy.admin_token_file`,
//! [`AdminToken`]); without one it is refused unless `proxy.admin_listen` is a loopback
//! address.

use std::path::Path;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use super::ProxyState;

/// The environment variable holding the admin token (wins over `proxy.admin_token_file`).
pub const ADMIN_TOKEN_ENV: &str = "ADACOMPRESS_ADMIN_TOKEN";

/// The admin bearer token: a [`SecretString`] (never printed, zeroed on drop), exposed
/// only to be compared, in constant time.
#[derive(Clone)]
pub struct AdminToken(SecretString);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(***)")
    }
}

impl AdminToken {
    /// A token from the environment value or the file's first line; `Ok(None)` when
    /// neither is set. An empty token is an error (it would let anyone in).
    pub fn load(env: Option<String>, file: Option<&Path>) -> Result<Option<AdminToken>, String> {
        let (raw, from) = match (env, file) {
            (Some(v), _) => (v, ADMIN_TOKEN_ENV.to_owned()),
            (None, Some(path)) => (
                std::fs::read_to_string(path)
                    .map_err(|e| format!("proxy.admin_token_file = {}: {e}", path.display()))?,
                format!("proxy.admin_token_file = {}", path.display()),
            ),
            (None, None) => return Ok(None),
        };
        // The whole value (a file may hold more than the token) is zeroed when dropped.
        let raw = SecretString::from(raw);
        let token = raw.expose_secret().lines().next().unwrap_or("").trim();
        if token.is_empty() {
            return Err(format!("the admin token from {from} is empty"));
        }
        Ok(Some(AdminToken(SecretString::from(token))))
    }

    /// Whether `presented` is this token (constant time in the token's content).
    pub fn matches(&self, presented: &str) -> bool {
        self.0
            .expose_secret()
            .as_bytes()
            .ct_eq(presented.as_bytes())
            .into()
    }
}

/// Why a mutating request may not go through (`None`: it may).
fn refusal(s: &ProxyState, headers: &HeaderMap) -> Option<Response> {
    let refuse = |status: StatusCode, message: &str| {
        Some((status, Json(serde_json::json!({ "error": message }))).into_response())
    };
    match &s.admin_token {
        Some(token) => {
            let presented = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            if token.matches(presented.trim()) {
                None
            } else {
                refuse(
                    StatusCode::UNAUTHORIZED,
                    "send Authorization: Bearer <the admin token> (ADACOMPRESS_ADMIN_TOKEN or proxy.admin_token_file)",
                )
            }
        }
        None if s.cfg.proxy.admin_listen.ip().is_loopback() => None,
        None => refuse(
            StatusCode::FORBIDDEN,
            "the admin listener is not on loopback and no admin token is configured: set ADACOMPRESS_ADMIN_TOKEN or proxy.admin_token_file",
        ),
    }
}

/// The admin router.
pub fn app(state: Arc<ProxyState>) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/agent", get(agent))
        .route("/agent/relearn", post(relearn))
        .with_state(state)
}

/// `POST /agent/relearn`: the live pair forgets its audits and starts a learning phase.
async fn relearn(State(s): State<Arc<ProxyState>>, headers: HeaderMap) -> Response {
    if let Some(refused) = refusal(&s, &headers) {
        return refused;
    }
    match &s.online {
        Some(online) => {
            online.relearn();
            tracing::info!("relearning requested on the admin port");
            (StatusCode::ACCEPTED, Json(online.status())).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({"error": "no agent is loaded (agent.fixed is set)"})),
        )
            .into_response(),
    }
}

/// Copies the learner's state into the gauges.
pub fn refresh(s: &ProxyState) {
    let m = &s.metrics;
    m.ready.set(i64::from(s.is_ready()));
    let Some(online) = &s.online else {
        return;
    };
    let st = online.status();
    for state in ["inference", "estimate"] {
        m.agent_state
            .get_or_create(&super::metrics::StateLabel { state })
            .set(i64::from(state == st.state));
    }
    m.agent_version.set(st.version as i64);
    let pair = &st.pair;
    use super::metrics::ActionLabel;
    let label = |a: &str| ActionLabel {
        action: a.to_owned(),
    };
    for a in &online.actions.actions {
        let name = a.name();
        m.pair_served
            .get_or_create(&label(&name))
            .set(i64::from(name == pair.served));
    }
    // Every action is written each time: after a drift forgets the audits, a pair with
    // none left reads 0 audits and bounds (0, 1), not the old scenery's.
    for a in &online.actions.actions {
        let name = a.name();
        let (lower, upper, audits) = pair.pairs.iter().find(|b| b.action == name).map_or(
            // The original is the reference: exact, whatever was audited.
            if a.quality.is_none() {
                (1.0, 1.0, 0)
            } else {
                (0.0, 1.0, 0)
            },
            |b| (b.lower, b.upper, b.audits),
        );
        let l = label(&name);
        m.pair_lower.get_or_create(&l).set(lower);
        m.pair_upper.get_or_create(&l).set(upper);
        m.pair_audited.get_or_create(&l).set(audits as i64);
    }
    m.pair_certified.set(i64::from(pair.certified));
    m.pair_target.set(pair.target_agreement);
    m.pair_estimation_share.set(pair.estimation_share);
    m.pair_deviation_threshold
        .set(pair.deviation.threshold.map_or(2.0, f64::from));
    for (counter, total) in [
        (&m.pair_audits, pair.audits),
        (&m.pair_drifts, pair.drifts),
        (&m.pair_default_stepups, pair.default_stepups),
        (&m.pair_margin_alarms, pair.margin_alarms),
        (&m.pair_probes, pair.probes),
        (&m.pair_deviations, pair.deviation.deviated),
        (&m.pair_trials_failed, pair.trials_failed),
        (&m.pair_relearns, pair.relearns),
    ] {
        let seen = counter.get();
        if total > seen {
            counter.inc_by(total - seen);
        }
    }
}

async fn metrics(State(s): State<Arc<ProxyState>>) -> Response {
    refresh(&s);
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        s.metrics.render(),
    )
        .into_response()
}

/// 200 or 503, with JSON saying why and, when a Rekognition upstream is configured,
/// whether its requests can be forwarded (they cannot without AWS credentials to re-sign).
async fn readyz(State(s): State<Arc<ProxyState>>) -> Response {
    let ready = s.is_ready();
    let mut body = serde_json::json!({ "ready": ready });
    if s.routes
        .iter()
        .any(|r| r.protocol == crate::protocol::Protocol::Rekognition)
    {
        let forwardable = s.resign.is_some();
        body["rekognition"] = serde_json::json!({
            "forwardable": forwardable,
            "resign": s.trust.policy().name(),
            "reason": (!forwardable).then_some(
                "no AWS credentials: Rekognition requests cannot be re-signed for the upstream"
            ),
        });
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn agent(State(s): State<Arc<ProxyState>>) -> Response {
    match &s.online {
        Some(online) => Json(online.status()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({"error": "no agent is loaded; every image passes through"})),
        )
            .into_response(),
    }
}

/// Why `adacompress healthcheck` failed: the URL and what went wrong.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HealthcheckError(String);

/// `adacompress healthcheck`: Ok when `url` answers 2xx within `timeout_secs` (the
/// container HEALTHCHECK; slim images have no curl).
pub async fn healthcheck(url: &str, timeout_secs: f64) -> Result<(), HealthcheckError> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs_f64(timeout_secs))
        .build()
        .map_err(|e| HealthcheckError(e.to_string()))?;
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| HealthcheckError(format!("{url}: {e}")))?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(HealthcheckError(format!(
            "{url} answered {}",
            resp.status()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_comes_from_the_environment_first_and_is_never_printed() {
        let dir = std::env::temp_dir().join(format!("adacompress-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "from-file\n").unwrap();
        let t = AdminToken::load(Some("from-env".into()), Some(&file))
            .unwrap()
            .unwrap();
        assert!(t.matches("from-env") && !t.matches("from-file"));
        let t = AdminToken::load(None, Some(&file)).unwrap().unwrap();
        assert!(t.matches("from-file") && !t.matches("from-fil") && !t.matches(""));
        assert_eq!(format!("{t:?}"), "AdminToken(***)");
        assert!(AdminToken::load(None, None).unwrap().is_none());
        std::fs::write(&file, "  \n").unwrap();
        let err = AdminToken::load(None, Some(&file)).unwrap_err();
        assert!(err.contains("empty"), "{err}");
        let err = AdminToken::load(None, Some(&dir.join("missing"))).unwrap_err();
        assert!(err.contains("proxy.admin_token_file"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
