//! The parsers' limits come from `[limits]` (`max_json_values`, `max_form_fields`,
//! `max_tensor_elements`): set process-wide when the proxy starts, so this file runs one
//! test in a process of its own, against a real `serve` and the real local backend.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_parse_limits_hold_for_requests() {
    let (backend, _b, _stop) = spawn_backend().await;
    let p = proxy_to(&backend, "parse-limits-state", |cfg| {
        cfg.limits.max_tensor_elements = 8;
        cfg.limits.max_json_values = 200;
        cfg.limits.max_form_fields = 20;
    })
    .await;
    let base = format!("http://{}", p.proxy_addr);
    let http = reqwest::Client::new();
    let action = |r: &reqwest::Response| {
        r.headers()
            .get("x-adacompress-action")
            .map(|v| v.to_str().unwrap().to_owned())
    };

    // KServe: 8 empty elements are read (and are no images), 9 are too many.
    for (n, too_complex) in [(8usize, false), (9, true)] {
        let (headers, body) = kserve_empty_elements(n);
        let mut req = http.post(format!("{base}/v2/models/classifier/infer"));
        for (k, v) in &headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let r = req.body(body).send().await.unwrap();
        let got = action(&r);
        assert_eq!(
            got.as_deref() == Some("original:too_complex"),
            too_complex,
            "{n} elements: {got:?}"
        );
    }

    // Google: a body of over 200 JSON values goes up as sent.
    let many: Vec<serde_json::Value> = (0..150).map(|_| serde_json::json!({})).collect();
    let body = serde_json::json!({"requests": many, "x": many}).to_string();
    let r = http
        .post(format!("{base}/v1/images:annotate"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(action(&r).as_deref(), Some("original:too_complex"));

    // Baidu: 21 form fields are too many, 20 are not.
    for (n, too_complex) in [(20usize, false), (21, true)] {
        let body = vec!["a=1"; n].join("&");
        let r = http
            .post(format!(
                "{base}/rest/2.0/image-classify/v2/advanced_general?access_token=x"
            ))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        let got = action(&r);
        assert_eq!(
            got.as_deref() == Some("original:too_complex"),
            too_complex,
            "{n} fields: {got:?}"
        );
    }
    let metrics = metrics_of(&p).await;
    assert!(
        metrics.contains("adacompress_passthrough_total{reason=\"too_complex\"} 3"),
        "{metrics}"
    );
    p.shutdown().await;
}
