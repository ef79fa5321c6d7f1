//! Accepting client connections with bounds that hold against slow and numerous clients:
//! a cap on open connections (beyond it a new one gets `503` and is closed), a deadline
//! on each request's header (which also bounds how long a keep-alive connection may sit
//! idle), and a graceful drain on shutdown. The body deadline lives in the handler
//! (`proxy.body_read_timeout_secs`), where a `408` can name it.
//!
//! `axum::serve` has none of these knobs, so connections are served with hyper-util's
//! connection builder, as axum's `serve-with-hyper` example does. It speaks HTTP/1.1 and
//! HTTP/2 on the same port (cleartext HTTP/2 by prior knowledge, as gRPC's insecure
//! channels connect), chosen from the connection's first bytes. HTTP/2 has its own
//! bounds: at most [`MAX_H2_STREAMS`] requests at once per connection, a header list of
//! at most [`MAX_H2_HEADER_LIST`] bytes, and a keep-alive ping every header deadline that
//! must be answered within one more (a peer that stops answering is dropped). hyper also
//! bounds streams reset before they are accepted (the "rapid reset" flood).

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::Metrics;

/// The bounds one listener enforces.
#[derive(Debug, Clone, Copy)]
pub struct ConnPolicy {
    /// Open connections at once.
    pub max_connections: usize,
    /// Whole request header, and idle time between keep-alive requests.
    pub header_read_timeout: Duration,
}

/// Requests in flight at once on one HTTP/2 connection.
pub const MAX_H2_STREAMS: u32 = 64;
/// Largest HTTP/2 header list a client may send, in bytes (HTTP/1's default is similar).
pub const MAX_H2_HEADER_LIST: u32 = 64 * 1024;

/// Refusals being written at once; beyond this a surplus connection is simply closed.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;

/// The answer a connection over the cap gets before it is closed: a 503 naming the limit and
/// its value, in the proxy's neutral JSON shape (the request, so its API, is not read yet),
/// with `X-AdaCompress-Error` like the proxy's other errors.
fn refusal(max_connections: usize) -> Vec<u8> {
    let body = serde_json::json!({
        "error": {
            "code": 503,
            "status": "Service Unavailable",
            "reason": "too_many_connections",
            "message": format!(
                "too many open connections: proxy.max_connections is {max_connections}"
            ),
            "source": "adacompress-proxy",
        }
    })
    .to_string();
    let mut answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nx-adacompress-error: too_many_connections\r\nconnection: close\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(body.as_bytes());
    answer
}

/// Decrements the open-connection gauge however a connection ends.
struct Open(Option<Arc<Metrics>>);

impl Drop for Open {
    fn drop(&mut self) {
        if let Some(m) = &self.0 {
            m.connections.dec();
        }
    }
}

/// Serves `app` on `listener` until `stop` turns true, then lets open connections finish
/// their current request (the caller bounds how long it waits). `metrics`, when given,
/// counts open, refused and timed-out connections.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    policy: ConnPolicy,
    metrics: Option<Arc<Metrics>>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let open = Arc::new(Semaphore::new(policy.max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
    let refusal: Arc<[u8]> = refusal(policy.max_connections).into();
    let mut tasks = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors (EMFILE) or a connection reset before accept:
                // back off briefly instead of spinning, and keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            if let Some(m) = &metrics {
                m.refused_connections.inc();
            }
            if let Ok(writing) = refusing.clone().try_acquire_owned() {
                let refusal = refusal.clone();
                tasks.spawn(async move {
                    let _writing = writing;
                    refuse(stream, refusal).await;
                });
            }
            continue;
        };
        let app = app.clone();
        let metrics = metrics.clone();
        let mut stop = stop.clone();
        tasks.spawn(async move {
            let _permit = permit;
            if let Some(m) = &metrics {
                m.connections.inc();
            }
            let _open = Open(metrics.clone());
            let _ = stream.set_nodelay(true);
            // hyper-util reads the first bytes to tell HTTP/2 from HTTP/1 with no deadline of
            // its own, so a client that sends nothing (or half the HTTP/2 preface) would hold
            // the connection forever: it gets the header deadline here.
            if !tokio::time::timeout(policy.header_read_timeout, version_known(&stream))
                .await
                .unwrap_or(false)
            {
                if let Some(m) = &metrics {
                    m.slow_clients
                        .get_or_create(&super::metrics::KindLabel { kind: "header" })
                        .inc();
                }
                tracing::debug!("client sent no request in time; closed");
                return;
            }
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(policy.header_read_timeout)
                .keep_alive(true);
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_concurrent_streams(MAX_H2_STREAMS)
                .max_header_list_size(MAX_H2_HEADER_LIST)
                .keep_alive_interval(policy.header_read_timeout)
                .keep_alive_timeout(policy.header_read_timeout);
            let conn =
                builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
            let mut conn = std::pin::pin!(conn);
            let finished = tokio::select! {
                r = conn.as_mut() => Some(r),
                _ = stop.wait_for(|s| *s) => None,
            };
            let result = match finished {
                Some(result) => result,
                None => {
                    conn.as_mut().graceful_shutdown();
                    conn.as_mut().await
                }
            };
            if let Err(e) = result {
                let timed_out = e
                    .downcast_ref::<hyper::Error>()
                    .is_some_and(hyper::Error::is_timeout);
                if timed_out {
                    if let Some(m) = &metrics {
                        m.slow_clients
                            .get_or_create(&super::metrics::KindLabel { kind: "header" })
                            .inc();
                    }
                    tracing::debug!("client did not send a request header in time; closed");
                } else {
                    tracing::debug!(error = %e, "client connection ended with an error");
                }
            }
        });
    }
    drop(listener);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// The HTTP/2 client preface; anything else is HTTP/1.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Waits (peeking, nothing consumed) until the first bytes tell HTTP/2 from HTTP/1: the
/// whole preface, or a byte that differs from it. `false` when the client hung up first.
async fn version_known(stream: &TcpStream) -> bool {
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut seen = 0;
    loop {
        match stream.peek(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => {
                if n == H2_PREFACE.len() || buf[..n] != H2_PREFACE[..n] {
                    return true;
                }
                if n == seen {
                    // Nothing new since the last peek: wait for more without spinning.
                    let _ = stream.readable().await;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                seen = n;
            }
        }
    }
}

/// Tells a connection over the cap why it is closed (within a second), then closes it.
async fn refuse(mut stream: TcpStream, answer: Arc<[u8]>) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(&answer).await?;
        stream.shutdown().await
    })
    .await;
}

/// Raises this process's open-file limit to its hard limit (Linux starts many services at
/// 1,024), so that `proxy.max_connections` plus the upstream connections fit; returns the
/// limit now in force, if it can be read.
pub fn raise_fd_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return None;
            }
            if lim.rlim_cur < lim.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: lim.rlim_max,
                    rlim_max: lim.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    lim = raised;
                }
            }
        }
        Some(lim.rlim_cur)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_one_well_formed_answer() {
        let answer = refusal(512);
        let text = std::str::from_utf8(&answer).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(len, body.len());
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], 503);
        assert_eq!(json["error"]["reason"], "too_many_connections");
        assert!(body.contains("proxy.max_connections is 512"), "{body}");
    }
}
