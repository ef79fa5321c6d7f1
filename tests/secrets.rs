//! A real `adacompress serve` process with credentials in its environment and in client
//! requests: none of them may appear in its logs, its metrics, its admin answers or the
//! files it writes. Also: SIGTERM makes it drain and exit 0.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use adacompress::protocol::Protocol;
use common::*;

const AWS_KEY_ID: &str = "AKIDPROXYSECRET0001";
const AWS_SECRET: &str = "proxySecretKeyDoNotLog/AbCdEf0123456789";
const GOOGLE_KEY: &str = "AIzaClientKeyDoNotLog42";
const BEARER: &str = "ya29.clientBearerDoNotLog";
const CLIENT_SIG: &str = "clientsignaturedonotlog0123456789abcdef";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn credentials_never_leak_and_sigterm_drains() {
    let state = temp_dir("secrets-state");
    // A file, not a pipe: debug logs would fill a pipe nobody reads yet and stall the child.
    let log_path = temp_dir("secrets-logs").join("stderr.log");
    let log_file = std::fs::File::create(&log_path).unwrap();
    let (proxy_port, admin_port) = (free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_adacompress"))
        .args(["serve", "--config"])
        .arg(root().join("config/adacompress.toml"))
        .args([
            "--upstream",
            "rekognition=local",
            "--upstream",
            "google=local",
        ])
        .current_dir(root())
        .env(
            "ADACOMPRESS_PROXY__LISTEN",
            format!("127.0.0.1:{proxy_port}"),
        )
        .env(
            "ADACOMPRESS_PROXY__ADMIN_LISTEN",
            format!("127.0.0.1:{admin_port}"),
        )
        .env("ADACOMPRESS_STATE__DIR", &state)
        .env("ADACOMPRESS_LOG__LEVEL", "debug")
        .env("ADACOMPRESS_ESTIMATOR__P_EST_INITIAL", "0.95")
        .env("AWS_ACCESS_KEY_ID", AWS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
        .env("AWS_REGION", "us-east-1")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log_file))
        .spawn()
        .expect("start adacompress serve");
    let admin = format!("http://127.0.0.1:{admin_port}");
    let proxy = format!("http://127.0.0.1:{proxy_port}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (metrics, agent) = rt.block_on(async {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(format!("{admin}/readyz")).send().await
                && r.status() == 200
            {
                break;
            }
            assert!(Instant::now() < deadline, "proxy never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let image = photo("objects", "2.jpg");
        for _ in 0..3 {
            let g = Protocol::GoogleVision.client_request(&image, 5);
            let r = http
                .post(format!("{proxy}{}?key={GOOGLE_KEY}", g.path_and_query))
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {BEARER}"))
                .body(g.body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let _ = r.bytes().await;
            let k = Protocol::Rekognition.client_request(&image, 5);
            let mut b = http.post(format!("{proxy}{}", k.path_and_query)).body(k.body);
            for (n, v) in &k.headers {
                b = b.header(n.as_str(), v.as_str());
            }
            let r = b
                .header(
                    "authorization",
                    format!("AWS4-HMAC-SHA256 Credential=AKIDCLIENT/20261126/us-east-1/rekognition/aws4_request, SignedHeaders=host;x-amz-date, Signature={CLIENT_SIG}"),
                )
                .header("x-amz-date", "20261126T120000Z")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(
                r.headers()["x-adacompress-action"].to_str().unwrap().chars().next(),
                Some('q'),
                "re-signed with the proxy's credentials, so it could be compressed"
            );
            let _ = r.bytes().await;
        }
        // An upstream error path too: a 502 body names the upstream, never the key.
        let metrics = http.get(format!("{admin}/metrics")).send().await.unwrap().text().await.unwrap();
        let agent = http.get(format!("{admin}/agent")).send().await.unwrap().text().await.unwrap();
        (metrics, agent)
    });
    // SIGTERM: drain and exit 0.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "serve did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(exit.success(), "exit {exit:?}\n{logs}");
    assert!(
        logs.contains("\"message\":\"proxied\""),
        "JSON request logs:\n{logs}"
    );
    assert!(logs.contains("adacompress proxy stopped"), "{logs}");
    let mut files = String::new();
    for entry in walk(&state) {
        files.push_str(&String::from_utf8_lossy(&std::fs::read(&entry).unwrap()));
    }
    for secret in [AWS_KEY_ID, AWS_SECRET, GOOGLE_KEY, BEARER, CLIENT_SIG] {
        for (what, text) in [
            ("logs", &logs),
            ("metrics", &metrics),
            ("/agent", &agent),
            ("state files", &files),
        ] {
            assert!(!text.contains(secret), "{secret} found in {what}");
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
