//! `adacompress demo`: the whole system live on embedded defaults, in one process.
//!
//! The built-in vision backend (EfficientNet-Lite0) and the proxy start on free loopback
//! ports with a fresh state folder. A client sends the sample photos through the proxy in
//! Google Vision format ("day"), then a scenery change: the same kind of photos darkened and
//! noisy, as a camera at night would take them ("night"). The proxy sees only its own
//! estimates; the demo also asks the backend directly for every original's answer, so the
//! report's agreement is the truth, not the proxy's estimate of it.
//!
//! Out come a table, a JSON report, a CSV per image and a plot of agreement and bytes over
//! time (the paper's Fig. 10).

use std::path::{Path, PathBuf};
use std::time::Instant;

use image::RgbImage;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

use crate::codec::{self, EncoderMode, Limits};
use crate::config::Config;
use crate::photos;
use crate::progress::Progress;
use crate::protocol::Protocol;
use crate::proxy::server;
use crate::report::{self, Chart, PALETTE, Series};

/// Demo settings.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// `data/photos` (with objects/, street/, indoor/).
    pub photos: PathBuf,
    /// The shipped agent.
    pub checkpoint: PathBuf,
    /// Learned state (fresh if it does not exist).
    pub state_dir: PathBuf,
    /// Photos before the scenery change.
    pub day: usize,
    /// Photos after it.
    pub night: usize,
    /// Window for the rolling agreement.
    pub window: usize,
    /// Proxy settings to start from (listeners and upstreams are set by the demo).
    pub base: Config,
    /// Start by retraining on the day photos: the shipped agent was trained against another
    /// service (EfficientNet-Lite2), and a new deployment first learns the one it faces.
    pub warmup: bool,
    /// Show a progress bar / log lines.
    pub progress: bool,
}

/// Everything `adacompress demo` was asked (one field per flag of `adacompress demo --help`).
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub photos: PathBuf,
    /// The shipped agent.
    pub agent: PathBuf,
    /// Learned state folder; a fresh temporary one when `None`.
    pub state_dir: Option<PathBuf>,
    pub day: usize,
    pub night: usize,
    pub window: usize,
    /// The figures as JSON, with .csv and .svg beside it.
    pub json: PathBuf,
    /// Proxy config to start from.
    pub config: Option<PathBuf>,
    pub warmup: bool,
}

/// Why `adacompress demo` failed. Each message already carries its cause.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0}")]
    Config(crate::config::ConfigError),
    #[error("{0}")]
    Run(String),
    #[error(transparent)]
    Report(#[from] report::ReportError),
}

/// `adacompress demo`: runs it, prints the table, writes the figures.
pub async fn command(opts: DemoOptions) -> Result<(), DemoError> {
    let base = Config::load(opts.config.as_deref(), std::env::vars()).map_err(DemoError::Config)?;
    let fresh = opts.state_dir.is_none();
    let state_dir = opts.state_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("adacompress-demo-{}", std::process::id()))
    });
    if fresh {
        let _ = std::fs::remove_dir_all(&state_dir);
    }
    let cfg = DemoConfig {
        photos: opts.photos,
        checkpoint: opts.agent,
        state_dir: state_dir.clone(),
        day: opts.day,
        night: opts.night,
        window: opts.window,
        base,
        warmup: opts.warmup,
        progress: true,
    };
    let report = run(cfg).await.map_err(DemoError::Run)?;
    print!("{}", table(&report));
    write_files(&report, &opts.json, opts.window)?;
    eprintln!(
        "wrote {} (+ .csv, .svg); learned state in {}",
        opts.json.display(),
        state_dir.display()
    );
    Ok(())
}

/// One photo's trip.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub i: usize,
    pub phase: &'static str,
    pub photo: String,
    pub original_bytes: usize,
    pub uploaded_bytes: usize,
    pub q75_bytes: usize,
    pub action: String,
    pub agree: bool,
    pub state: String,
    pub version: u64,
    pub p_est: f64,
    /// Estimation bytes uploaded so far (cumulative).
    pub estimation_bytes: u64,
}

/// Figures for one span of photos.
#[derive(Debug, Clone, Serialize)]
pub struct Span {
    pub name: String,
    pub photos: usize,
    pub agreement: f64,
    /// Uploaded bytes (request path) / original bytes.
    pub bytes_vs_original: f64,
    /// Uploaded bytes / the same photos at Q75.
    pub bytes_vs_q75: f64,
    /// Estimation bytes / request-path bytes over the span.
    pub estimation_share: f64,
}

/// The demo's report (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    pub spans: Vec<Span>,
    /// Photos after the change until the retrained agent was back in inference.
    pub photos_to_recover: Option<usize>,
    /// Photos after the change until retraining started.
    pub photos_to_detect: Option<usize>,
    /// Rolling agreement after recovery over the day's agreement.
    pub recovered_ratio: Option<f64>,
    pub retrain_events: Vec<usize>,
    pub recover_events: Vec<usize>,
    pub agent_version_end: u64,
    pub estimation_uploads: u64,
    pub seconds: f64,
    pub steps: Vec<Step>,
}

/// A photo to send: name, JPEG bytes, phase.
struct Shot {
    name: String,
    bytes: Vec<u8>,
    phase: &'static str,
}

/// Darkens and adds sensor noise: a night shot of the same scene, saved by the camera at q90.
pub fn night_version(image: &RgbImage, seed: u64) -> RgbImage {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let gain = rng.random_range(0.18f32..0.30);
    let mut out = image.clone();
    for p in out.pixels_mut() {
        let noise: f32 = rng.random_range(-10.0f32..10.0);
        for c in 0..3 {
            let lin = (f32::from(p.0[c]) / 255.0).powf(2.2) * gain;
            let v = lin.powf(1.0 / 2.2) * 255.0 + noise;
            p.0[c] = v.clamp(0.0, 255.0) as u8;
        }
    }
    out
}

fn load_shots(dir: &Path, day: usize, night: usize) -> Result<Vec<Shot>, String> {
    let mut all = Vec::new();
    for set in ["objects", "street", "indoor"] {
        let sub = dir.join(set);
        let list = photos::list(&sub).map_err(|e| e.to_string())?;
        all.extend(
            list.into_iter()
                .map(|p| (format!("{set}/{}", display(&p)), p)),
        );
    }
    if all.is_empty() {
        return Err(format!(
            "no photos under {}: run scripts/fetch_photos.sh",
            dir.display()
        ));
    }
    // A fixed shuffle: the same run every time.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for i in (1..all.len()).rev() {
        let j = rng.random_range(0..=i);
        all.swap(i, j);
    }
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let mut shots = Vec::with_capacity(day + night);
    for k in 0..day {
        let (name, path) = &all[k % all.len()];
        shots.push(Shot {
            name: name.clone(),
            bytes: read(path)?,
            phase: "day",
        });
    }
    for k in 0..night {
        let (name, path) = &all[(k + day) % all.len()];
        let bytes = read(path)?;
        let decoded = codec::decode(&bytes, &Limits::default()).map_err(|e| e.to_string())?;
        let dark = night_version(&decoded.image, k as u64);
        let bytes =
            codec::encode_jpeg(&dark, 90, EncoderMode::Fastest).map_err(|e| e.to_string())?;
        shots.push(Shot {
            name: format!("night/{name}"),
            bytes,
            phase: "night",
        });
    }
    Ok(shots)
}

fn display(p: &Path) -> String {
    p.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().to_string())
}

/// Runs the demo.
pub async fn run(cfg: DemoConfig) -> Result<DemoReport, String> {
    let started = Instant::now();
    let shots = {
        let (dir, day, night) = (cfg.photos.clone(), cfg.day, cfg.night);
        tokio::task::spawn_blocking(move || load_shots(&dir, day, night))
            .await
            .map_err(|e| e.to_string())??
    };
    let mut pc = cfg.base.clone();
    pc.proxy.listen = ([127, 0, 0, 1], 0).into();
    pc.proxy.admin_listen = ([127, 0, 0, 1], 0).into();
    pc.agent.checkpoint = cfg.checkpoint.clone();
    pc.state.dir = cfg.state_dir.clone();
    pc.upstreams.clear();
    pc.upstreams.insert("google".into(), "local".into());
    let proxy = server::start(pc, None).await.map_err(|e| e.to_string())?;
    let backend = proxy
        .local_backend
        .clone()
        .ok_or("the built-in backend did not start")?;
    let http = reqwest::Client::new();
    let url = format!("http://{}/v1/images:annotate", proxy.proxy_addr);
    let online = proxy.state.online.clone().ok_or("the proxy has no agent")?;
    if cfg.warmup {
        online.force_retrain();
    }
    let mut progress = cfg
        .progress
        .then(|| Progress::new("demo", shots.len() as u64));
    let mut steps = Vec::with_capacity(shots.len());
    for (i, shot) in shots.iter().enumerate() {
        let req = Protocol::GoogleVision.client_request(&shot.bytes, 5);
        let mut b = http.post(&url).body(req.body);
        for (k, v) in &req.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        let resp = b.send().await.map_err(|e| format!("proxy: {e}"))?;
        let saved: usize = resp
            .headers()
            .get("x-adacompress-bytes-saved")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let action = resp
            .headers()
            .get("x-adacompress-action")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| format!("proxy: {e}"))?;
        let served = Protocol::GoogleVision.parse_answer(status, &body).ok();
        // The truth: the backend's answer for the original, asked directly (not billed).
        let (truth, q75) = {
            let backend = backend.clone();
            let bytes = shot.bytes.clone();
            tokio::task::spawn_blocking(move || {
                let limits = Limits::default();
                let truth = backend.classifier().classify(&bytes, &limits, 5).ok();
                let q75 = codec::decode(&bytes, &limits)
                    .ok()
                    .and_then(|d| codec::encode_jpeg(&d.image, 75, EncoderMode::FastOptimized).ok())
                    .map_or(bytes.len(), |b| b.len().min(bytes.len()));
                (truth, q75)
            })
            .await
            .map_err(|e| e.to_string())?
        };
        let agree = match (&truth, &served) {
            (Some(t), Some(s)) => {
                crate::learn::reward::answers_agree(t, s, crate::learn::Accuracy::Top1)
            }
            _ => false,
        };
        // Let the estimate of this photo land before the next one (a steady client).
        while online.learning() > 0 || online.status().state == "estimate" {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        let st = online.status();
        steps.push(Step {
            i,
            phase: shot.phase,
            photo: shot.name.clone(),
            original_bytes: shot.bytes.len(),
            uploaded_bytes: shot.bytes.len() - saved.min(shot.bytes.len()),
            q75_bytes: q75,
            action,
            agree,
            state: st.state.to_owned(),
            version: st.version,
            p_est: st.p_est,
            estimation_bytes: proxy.state.metrics.estimation_bytes.get(),
        });
        if let Some(p) = progress.as_mut() {
            p.set(i as u64 + 1, shots.len() as u64);
        }
    }
    if let Some(p) = progress {
        p.finish();
    }
    // Let the last estimates land.
    for _ in 0..200 {
        if online.status().state != "estimate" && online.learning() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let uploads = proxy.state.metrics.estimation_uploads.get();
    let version = online.status().version;
    proxy.shutdown().await;
    Ok(summarise(
        steps, cfg.day, cfg.window, uploads, version, started,
    ))
}

fn span(name: &str, steps: &[Step], est_before: u64) -> Span {
    let n = steps.len().max(1) as f64;
    let up: usize = steps.iter().map(|s| s.uploaded_bytes).sum();
    let orig: usize = steps.iter().map(|s| s.original_bytes).sum();
    let q75: usize = steps.iter().map(|s| s.q75_bytes).sum();
    let est = steps.last().map_or(0, |s| s.estimation_bytes) - est_before;
    Span {
        name: name.to_owned(),
        photos: steps.len(),
        agreement: steps.iter().filter(|s| s.agree).count() as f64 / n,
        bytes_vs_original: up as f64 / orig.max(1) as f64,
        bytes_vs_q75: up as f64 / q75.max(1) as f64,
        estimation_share: est as f64 / up.max(1) as f64,
    }
}

fn summarise(
    steps: Vec<Step>,
    day: usize,
    window: usize,
    uploads: u64,
    version: u64,
    started: Instant,
) -> DemoReport {
    let est_at = |i: usize| {
        if i == 0 {
            0
        } else {
            steps[i - 1].estimation_bytes
        }
    };
    let mut retrain_events = Vec::new();
    let mut recover_events = Vec::new();
    for w in steps.windows(2) {
        if w[1].state == "retrain" && w[0].state != "retrain" {
            retrain_events.push(w[1].i);
        }
        if w[0].state == "retrain" && w[1].state != "retrain" {
            recover_events.push(w[1].i);
        }
    }
    let detect = retrain_events.iter().find(|&&i| i >= day).copied();
    let recover = detect.and_then(|d| recover_events.iter().find(|&&i| i > d).copied());
    let mut spans = vec![span("day", &steps[..day.min(steps.len())], 0)];
    if let (Some(d), Some(r)) = (detect, recover) {
        spans.push(span(
            "night, before retraining",
            &steps[day..d],
            est_at(day),
        ));
        spans.push(span("night, retraining", &steps[d..r], est_at(d)));
        spans.push(span("night, after recovery", &steps[r..], est_at(r)));
    } else if steps.len() > day {
        spans.push(span("night", &steps[day..], est_at(day)));
    }
    // Steady state of the day: after the first `window` photos.
    let day_agreement = spans[0].agreement;
    let recovered_ratio = recover.map(|r| {
        let after = &steps[r..];
        let tail = &after[after.len().saturating_sub(window.max(after.len() / 2))..];
        let a = tail.iter().filter(|s| s.agree).count() as f64 / tail.len().max(1) as f64;
        a / day_agreement.max(1e-9)
    });
    DemoReport {
        spans,
        photos_to_recover: recover.map(|r| r - day),
        photos_to_detect: detect.map(|d| d - day),
        recovered_ratio,
        retrain_events,
        recover_events,
        agent_version_end: version,
        estimation_uploads: uploads,
        seconds: started.elapsed().as_secs_f64(),
        steps,
    }
}

/// The table people read.
pub fn table(r: &DemoReport) -> String {
    let mut out = format!(
        "{:<28} {:>6} {:>10} {:>12} {:>9} {:>11}\n",
        "span", "photos", "agreement", "bytes/orig", "bytes/Q75", "estimation"
    );
    for s in &r.spans {
        out.push_str(&format!(
            "{:<28} {:>6} {:>9.1}% {:>11.2}× {:>8.2}× {:>10.1}%\n",
            s.name,
            s.photos,
            100.0 * s.agreement,
            s.bytes_vs_original,
            s.bytes_vs_q75,
            100.0 * s.estimation_share
        ));
    }
    out.push_str(&format!(
        "retraining started at photo {:?}, back to inference at {:?}; detection took {:?} and recovery {:?} photos after the change; agreement after recovery = {} of the day's; {} estimation uploads; agent v{} at the end; {:.0} s\n",
        r.retrain_events,
        r.recover_events,
        r.photos_to_detect,
        r.photos_to_recover,
        r.recovered_ratio.map_or("n/a".to_owned(), |x| format!("{:.0}%", 100.0 * x)),
        r.estimation_uploads,
        r.agent_version_end,
        r.seconds
    ));
    out
}

/// Writes the CSV and the plot beside `json`.
pub fn write_files(r: &DemoReport, json: &Path, window: usize) -> Result<(), report::ReportError> {
    report::write_json(json, r)?;
    let rows: Vec<Vec<String>> = r
        .steps
        .iter()
        .map(|s| {
            vec![
                s.i.to_string(),
                s.phase.to_owned(),
                s.photo.clone(),
                s.original_bytes.to_string(),
                s.uploaded_bytes.to_string(),
                s.q75_bytes.to_string(),
                s.action.clone(),
                s.agree.to_string(),
                s.state.clone(),
                s.version.to_string(),
                format!("{:.3}", s.p_est),
                s.estimation_bytes.to_string(),
            ]
        })
        .collect();
    report::write_csv(
        &json.with_extension("csv"),
        &[
            "i",
            "phase",
            "photo",
            "original_bytes",
            "uploaded_bytes",
            "q75_bytes",
            "action",
            "agree",
            "state",
            "version",
            "p_est",
            "estimation_bytes_cumulative",
        ],
        &rows,
    )?;
    let w = window.max(1);
    let rolling = |f: &dyn Fn(&Step) -> f64| -> Vec<(f64, f64)> {
        (0..r.steps.len())
            .map(|i| {
                let lo = i.saturating_sub(w - 1);
                let slice = &r.steps[lo..=i];
                let v = slice.iter().map(f).sum::<f64>() / slice.len() as f64;
                (i as f64, v)
            })
            .collect()
    };
    let retrain: Vec<(f64, f64)> = r
        .steps
        .iter()
        .map(|s| {
            (
                s.i as f64,
                if s.state == "retrain" { 0.05 } else { f64::NAN },
            )
        })
        .filter(|p| !p.1.is_nan())
        .collect();
    let chart = Chart {
        title: format!(
            "Scenery change at photo {}: agreement and bytes (rolling {w})",
            r.spans.first().map_or(0, |s| s.photos)
        ),
        x_label: "photo".into(),
        y_label: "agreement / bytes ratio".into(),
        series: vec![
            Series {
                name: "top-1 agreement".into(),
                points: rolling(&|s| f64::from(u8::from(s.agree))),
                labels: Vec::new(),
                line: true,
                color: PALETTE[0],
            },
            Series {
                name: "uploaded / original bytes".into(),
                points: rolling(&|s| s.uploaded_bytes as f64 / s.original_bytes.max(1) as f64),
                labels: Vec::new(),
                line: true,
                color: PALETTE[1],
            },
            Series {
                name: "retraining".into(),
                points: retrain,
                labels: Vec::new(),
                line: false,
                color: PALETTE[3],
            },
        ],
        y_range: Some((0.0, 1.05)),
    };
    report::plot_svg(&json.with_extension("svg"), &chart)
}
