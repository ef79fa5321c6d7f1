//! The admin listener (default `127.0.0.1:9090`, apart from the proxy port):
//!
//! | path | answer |
//! |---|---|
//! | `GET /metrics` | Prometheus text |
//! | `GET /healthz` | 200 while the process serves (liveness; checks no upstream) |
//! | `GET /readyz` | 200 when the agent is loaded and the proxy is not draining, else 503 |
//! | `GET /agent` | JSON: state, version, p_est, recent agreement, memory, threshold |
//! | `POST /agent/retrain` | enters retraining now; 202 with the new state |

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::ProxyState;

/// The admin router.
pub fn app(state: Arc<ProxyState>) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/agent", get(agent))
        .route("/agent/retrain", post(retrain))
        .with_state(state)
}

/// Copies the learner's state into the gauges.
pub fn refresh(s: &ProxyState) {
    let m = &s.metrics;
    m.ready.set(i64::from(s.is_ready()));
    let Some(online) = &s.online else {
        return;
    };
    let st = online.status();
    m.p_est.set(st.p_est);
    if let Some(acc) = st.recent_accuracy {
        m.estimated_accuracy.set(acc);
    }
    for state in ["inference", "estimate", "retrain"] {
        m.agent_state
            .get_or_create(&super::metrics::StateLabel { state })
            .set(i64::from(state == st.state));
    }
    m.agent_state_seconds.set(st.state_seconds);
    m.agent_version.set(st.version as i64);
    let done = st.retrains;
    let seen = m.retrains.get();
    if done > seen {
        m.retrains.inc_by(done - seen);
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

async fn readyz(State(s): State<Arc<ProxyState>>) -> Response {
    if s.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
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

async fn retrain(State(s): State<Arc<ProxyState>>) -> Response {
    match &s.online {
        Some(online) => {
            let entered = online.force_retrain();
            tracing::info!(entered, "retraining requested on the admin port");
            (StatusCode::ACCEPTED, Json(online.status())).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({"error": "no agent is loaded"})),
        )
            .into_response(),
    }
}
