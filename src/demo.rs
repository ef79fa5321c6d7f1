//! `adacompress demo`: the whole system live on embedded defaults, in one process.
//!
//! The built-in vision backend (EfficientNet-Lite0) and the proxy start on free loopback
//! ports with a fresh state folder; the proxy runs the shipped calibrated agent, so every
//! image goes up at the *live pair* ([`crate::learn::pair`]). A client sends phone-like
//! uploads made from the sample photos (random crops, 768–1,536 px, saved at quality
//! 88–95) through the proxy in Google Vision format ("day"), then a scenery change: the same
//! kind of uploads darkened and noisy, as a camera at night would take them ("night").
//!
//! What to watch: during the day the proxy serves the shipped prior while its audits (the
//! original and cheaper candidate pairs, uploaded off the request path) certify a cheaper
//! pair; after the change the answers' confidence falls or audits fail, the live pair steps
//! up at once and learns again. The proxy sees only its own audits; the demo also asks the
//! backend directly for every original's answer, so the report's agreement is the truth,
//! not the proxy's estimate of it.
//!
//! Out come a table, a JSON report, a CSV per image and a plot of agreement, bytes and the
//! pair's changes over time (after the paper's Fig. 10).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use image::RgbImage;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

use crate::codec::{self, EncoderMode, Limits};
use crate::config::Config;
use crate::learn::pair::PairStatus;
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
    /// The shipped agent (a calibrated checkpoint: the demo shows the live pair).
    pub checkpoint: PathBuf,
    /// Learned state (fresh if it does not exist).
    pub state_dir: PathBuf,
    /// Uploads before the scenery change.
    pub day: usize,
    /// Uploads after it.
    pub night: usize,
    /// Window for the rolling agreement.
    pub window: usize,
    /// Proxy settings to start from (listeners, upstreams, agent and state folder are set
    /// by the demo; the `[pair]` section is used as given).
    pub base: Config,
    /// Learn faster than the shipped `[pair]` settings (see [`FAST_LEARNING`]), so the loop
    /// shows within a few hundred uploads.
    pub fast: bool,
    /// Show a progress bar / log lines.
    pub progress: bool,
}

/// The demo's learning settings unless `--shipped-learning`: (`target_agreement`,
/// `learn_share`, `max_audit_rate`), with the learning phase lasting the whole run
/// (`learn_images` = the uploads, `learn_audits` = 0).
///
/// - The target is 90 % top-1 agreement, not the shipped 97 %: the sample photos are hard
///   for Lite0's top-1 (even `q95@960` changes about 4.5 % of its answers on them), so at
///   97 % no pair but the original would ever be certified and nothing would happen.
/// - Audits may spend 4× the served bytes and cover every upload, so a pair is certified
///   within a couple of hundred uploads. The shipped settings (`learn_share = 1` for the
///   first 600 uploads, 8 % after) take several hundred; the stream benchmark measures them.
pub const FAST_LEARNING: (f64, f64, f64) = (0.90, 4.0, 1.0);

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
    /// Keep the config's `[pair]` learning settings instead of [`FAST_LEARNING`].
    pub shipped_learning: bool,
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
        fast: !opts.shipped_learning,
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

/// One upload's trip.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub i: usize,
    pub phase: &'static str,
    pub photo: String,
    pub original_bytes: usize,
    pub uploaded_bytes: usize,
    /// `X-AdaCompress-Action`: the pair applied (`q95@960`, `…:original:not_smaller`).
    pub action: String,
    pub agree: bool,
    /// The pair served after this upload (its audits may have changed it).
    pub pair: String,
    /// That pair's lower bound clears the target.
    pub certified: bool,
    /// That pair's expected size ratio on this traffic.
    pub pair_cost: f64,
    /// Audits done so far (cumulative).
    pub audits: u64,
    /// Drift step-ups so far: failed audits, margin alarms, uncertified defaults found short.
    pub drifts: u64,
    pub margin_alarms: u64,
    pub default_stepups: u64,
    /// Estimation bytes uploaded so far (cumulative).
    pub estimation_bytes: u64,
}

/// Figures for one span of uploads.
#[derive(Debug, Clone, Serialize)]
pub struct Span {
    pub name: String,
    pub photos: usize,
    pub agreement: f64,
    /// Uploaded bytes (request path) / original bytes.
    pub bytes_vs_original: f64,
    /// Estimation bytes / request-path bytes over the span.
    pub estimation_share: f64,
    /// The pairs applied, most used first, with their counts.
    pub pairs: Vec<(String, usize)>,
}

/// A change of the served pair, and why.
#[derive(Debug, Clone, Serialize)]
pub struct PairChange {
    /// The upload after which it changed.
    pub i: usize,
    pub from: String,
    pub to: String,
    /// `certified` (audits cleared a cheaper pair), `bound fell` (the served pair's bound
    /// fell below the target: back to a dearer certified pair or the default), `drift` (the
    /// served pair failed its recent audits), `margin alarm` (the answers' confidence moved),
    /// `default short` (the uncertified default's own audits put it below the target).
    pub why: &'static str,
}

/// The demo's report (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    pub spans: Vec<Span>,
    pub changes: Vec<PairChange>,
    /// Uploads after the change until the live pair stepped up (drift, margin alarm or a
    /// default found short).
    pub photos_to_detect: Option<usize>,
    /// Upload at which a pair was first certified.
    pub first_certified: Option<usize>,
    /// Agreement after the step-up over the day's agreement.
    pub recovered_ratio: Option<f64>,
    /// The live pair at the end, as `GET /agent` shows it.
    pub pair_end: Option<PairStatus>,
    pub estimation_uploads: u64,
    pub seconds: f64,
    pub steps: Vec<Step>,
}

/// An upload to send: name, JPEG bytes, phase.
struct Shot {
    name: String,
    bytes: Vec<u8>,
    phase: &'static str,
}

/// Darkens and adds sensor noise: a night shot of the same scene.
pub fn night_version(image: &RgbImage, seed: u64) -> RgbImage {
    let mut rng = StdRng::seed_from_u64(seed);
    let gain = rng.random_range(0.06f32..0.14);
    let mut out = image.clone();
    for p in out.pixels_mut() {
        let noise: f32 = rng.random_range(-24.0f32..24.0);
        for c in 0..3 {
            let lin = (f32::from(p.0[c]) / 255.0).powf(2.2) * gain;
            let v = lin.powf(1.0 / 2.2) * 255.0 + noise;
            p.0[c] = v.clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// A phone-like upload of `image`: a random crop of 75–100 % of each side, resized to a
/// longest side of 768–1,536 px, saved at quality 88–95 (night: darkened and noisy first,
/// saved at 90).
pub fn phone_upload(image: &RgbImage, night: bool, seed: u64) -> Result<Vec<u8>, String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let (w, h) = image.dimensions();
    let cw = ((w as f32) * rng.random_range(0.75f32..=1.0)).max(1.0) as u32;
    let ch = ((h as f32) * rng.random_range(0.75f32..=1.0)).max(1.0) as u32;
    let x = rng.random_range(0..=w - cw.min(w));
    let y = rng.random_range(0..=h - ch.min(h));
    let crop = image::imageops::crop_imm(image, x, y, cw.min(w), ch.min(h)).to_image();
    let long = rng.random_range(768u32..=1536);
    let (cw, ch) = crop.dimensions();
    let (nw, nh) = if cw >= ch {
        (
            long,
            (u64::from(long) * u64::from(ch) / u64::from(cw).max(1)).max(1) as u32,
        )
    } else {
        (
            (u64::from(long) * u64::from(cw) / u64::from(ch).max(1)).max(1) as u32,
            long,
        )
    };
    let mut big = image::imageops::resize(&crop, nw, nh, image::imageops::FilterType::Triangle);
    let quality = if night {
        big = night_version(&big, seed);
        90
    } else {
        [88u8, 90, 92, 95][rng.random_range(0..4usize)]
    };
    codec::encode_jpeg(&big, quality, EncoderMode::Fastest).map_err(|e| e.to_string())
}

/// The sample photos, in a fixed shuffle.
fn list_photos(dir: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let mut all = Vec::new();
    for set in ["objects", "street", "indoor"] {
        let list = photos::list(&dir.join(set)).map_err(|e| e.to_string())?;
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
    let mut rng = StdRng::seed_from_u64(7);
    for i in (1..all.len()).rev() {
        let j = rng.random_range(0..=i);
        all.swap(i, j);
    }
    Ok(all)
}

/// Makes the uploads on a thread of their own, a few ahead of the client (making one costs
/// about as much as the proxy's work on it, so they overlap).
fn make_shots(
    all: Vec<(String, PathBuf)>,
    day: usize,
    night: usize,
) -> mpsc::Receiver<Result<Shot, String>> {
    let (tx, rx) = mpsc::sync_channel(4);
    std::thread::spawn(move || {
        for k in 0..day + night {
            let (name, path) = &all[k % all.len()];
            let is_night = k >= day;
            let shot = std::fs::read(path)
                .map_err(|e| format!("{}: {e}", path.display()))
                .and_then(|b| codec::decode(&b, &Limits::default()).map_err(|e| e.to_string()))
                .and_then(|d| phone_upload(&d.image, is_night, k as u64))
                .map(|bytes| Shot {
                    name: if is_night {
                        format!("night/{name}#{k}")
                    } else {
                        format!("{name}#{k}")
                    },
                    bytes,
                    phase: if is_night { "night" } else { "day" },
                });
            if tx.send(shot).is_err() {
                return;
            }
        }
    });
    rx
}

fn display(p: &Path) -> String {
    p.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().to_string())
}

/// Runs the demo.
pub async fn run(cfg: DemoConfig) -> Result<DemoReport, String> {
    let started = Instant::now();
    let all = {
        let dir = cfg.photos.clone();
        tokio::task::spawn_blocking(move || list_photos(&dir))
            .await
            .map_err(|e| e.to_string())??
    };
    let total = cfg.day + cfg.night;
    let shots = make_shots(all, cfg.day, cfg.night);
    let mut pc = cfg.base.clone();
    pc.proxy.listen = ([127, 0, 0, 1], 0).into();
    pc.proxy.admin_listen = ([127, 0, 0, 1], 0).into();
    pc.agent.checkpoint = cfg.checkpoint.clone();
    pc.agent.fixed = None;
    pc.state.dir = cfg.state_dir.clone();
    pc.upstreams.clear();
    pc.upstreams.insert("google".into(), "local".into());
    if cfg.fast {
        (
            pc.pair.target_agreement,
            pc.pair.learn_share,
            pc.pair.max_audit_rate,
        ) = FAST_LEARNING;
        // The learning phase lasts the whole run, however many audits a pair already has.
        (pc.pair.learn_images, pc.pair.learn_audits) = (total as u64, 0);
    }
    let proxy = server::start(pc, None).await.map_err(|e| e.to_string())?;
    let backend = proxy
        .local_backend
        .clone()
        .ok_or("the built-in backend did not start")?;
    let http = reqwest::Client::new();
    let url = format!("http://{}/v1/images:annotate", proxy.proxy_addr);
    let online = proxy.state.online.clone().ok_or("the proxy has no agent")?;
    let mut progress = cfg.progress.then(|| Progress::new("demo", total as u64));
    let mut steps = Vec::with_capacity(total);
    for i in 0..total {
        let shot = {
            let rx = &shots;
            tokio::task::block_in_place(|| rx.recv())
                .map_err(|_| "the upload maker stopped".to_owned())??
        };
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
        let truth = {
            let backend = backend.clone();
            let bytes = shot.bytes.clone();
            tokio::task::spawn_blocking(move || {
                backend
                    .classifier()
                    .classify(&bytes, &Limits::default(), 5)
                    .ok()
            })
            .await
            .map_err(|e| e.to_string())?
        };
        let agree = match (&truth, &served) {
            (Some(t), Some(s)) => crate::learn::reward::answers_agree(t, s, online.accuracy()),
            _ => false,
        };
        // Let this upload's audit land before the next upload (a steady client).
        while online.status().state == "estimate" {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        let pair = online.pair_status();
        let pair_cost = pair
            .pairs
            .iter()
            .find(|p| p.action == pair.served)
            .map_or(1.0, |p| p.cost);
        steps.push(Step {
            i,
            phase: shot.phase,
            photo: shot.name,
            original_bytes: shot.bytes.len(),
            uploaded_bytes: shot.bytes.len() - saved.min(shot.bytes.len()),
            action,
            agree,
            pair: pair.served,
            certified: pair.certified,
            pair_cost,
            audits: pair.audits,
            drifts: pair.drifts,
            margin_alarms: pair.margin_alarms,
            default_stepups: pair.default_stepups,
            estimation_bytes: proxy.state.metrics.estimation_bytes.get(),
        });
        if let Some(p) = progress.as_mut() {
            p.set(i as u64 + 1, total as u64);
        }
    }
    if let Some(p) = progress {
        p.finish();
    }
    let uploads = proxy.state.metrics.estimation_uploads.get();
    let pair_end = Some(online.pair_status());
    proxy.shutdown().await;
    Ok(summarise(
        steps, cfg.day, cfg.window, uploads, pair_end, started,
    ))
}

fn span(name: &str, steps: &[Step], est_before: u64) -> Span {
    let n = steps.len().max(1) as f64;
    let up: usize = steps.iter().map(|s| s.uploaded_bytes).sum();
    let orig: usize = steps.iter().map(|s| s.original_bytes).sum();
    let est = steps
        .last()
        .map_or(0, |s| s.estimation_bytes.saturating_sub(est_before));
    let mut pairs: Vec<(String, usize)> = Vec::new();
    for s in steps {
        match pairs.iter_mut().find(|(a, _)| *a == s.action) {
            Some(p) => p.1 += 1,
            None => pairs.push((s.action.clone(), 1)),
        }
    }
    pairs.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Span {
        name: name.to_owned(),
        photos: steps.len(),
        agreement: steps.iter().filter(|s| s.agree).count() as f64 / n,
        bytes_vs_original: up as f64 / orig.max(1) as f64,
        estimation_share: est as f64 / up.max(1) as f64,
        pairs,
    }
}

/// The served pair's changes, each with the counter that moved.
fn changes(steps: &[Step]) -> Vec<PairChange> {
    steps
        .windows(2)
        .filter(|w| w[0].pair != w[1].pair)
        .map(|w| {
            let why = if w[1].margin_alarms > w[0].margin_alarms {
                "margin alarm"
            } else if w[1].default_stepups > w[0].default_stepups {
                "default short"
            } else if w[1].drifts > w[0].drifts {
                "drift"
            } else if w[1].pair_cost < w[0].pair_cost {
                "certified"
            } else {
                "bound fell"
            };
            PairChange {
                i: w[1].i,
                from: w[0].pair.clone(),
                to: w[1].pair.clone(),
                why,
            }
        })
        .collect()
}

fn summarise(
    steps: Vec<Step>,
    day: usize,
    window: usize,
    uploads: u64,
    pair_end: Option<PairStatus>,
    started: Instant,
) -> DemoReport {
    let est_at = |i: usize| {
        if i == 0 {
            0
        } else {
            steps[i - 1].estimation_bytes
        }
    };
    let changes = changes(&steps);
    let detect = changes
        .iter()
        .find(|c| c.i >= day && !matches!(c.why, "certified" | "bound fell"))
        .map(|c| c.i);
    let first_certified = steps.iter().find(|s| s.certified).map(|s| s.i);
    let day_end = day.min(steps.len());
    let mut spans = vec![span("day", &steps[..day_end], 0)];
    match detect {
        Some(d) if steps.len() > day => {
            spans.push(span(
                "night, before the step-up",
                &steps[day..d],
                est_at(day),
            ));
            spans.push(span("night, after the step-up", &steps[d..], est_at(d)));
        }
        _ if steps.len() > day => spans.push(span("night", &steps[day..], est_at(day))),
        _ => {}
    }
    let day_agreement = spans[0].agreement;
    let recovered_ratio = detect.map(|d| {
        let after = &steps[d..];
        let tail = &after[after.len().saturating_sub(window.max(after.len() / 2))..];
        let a = tail.iter().filter(|s| s.agree).count() as f64 / tail.len().max(1) as f64;
        a / day_agreement.max(1e-9)
    });
    DemoReport {
        spans,
        photos_to_detect: detect.map(|d| d - day),
        first_certified,
        recovered_ratio,
        changes,
        pair_end,
        estimation_uploads: uploads,
        seconds: started.elapsed().as_secs_f64(),
        steps,
    }
}

/// The table people read.
pub fn table(r: &DemoReport) -> String {
    let mut out = format!(
        "{:<28} {:>6} {:>10} {:>12} {:>11}  pairs applied\n",
        "span", "photos", "agreement", "bytes/orig", "estimation"
    );
    for s in &r.spans {
        let pairs = s
            .pairs
            .iter()
            .take(3)
            .map(|(a, n)| format!("{a} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        out.push_str(&format!(
            "{:<28} {:>6} {:>9.1}% {:>11.2}× {:>10.1}%  {}\n",
            s.name,
            s.photos,
            100.0 * s.agreement,
            s.bytes_vs_original,
            100.0 * s.estimation_share,
            pairs
        ));
    }
    for c in &r.changes {
        out.push_str(&format!(
            "after upload {:>4}: {} → {} ({})\n",
            c.i, c.from, c.to, c.why
        ));
    }
    out.push_str(&format!(
        "first pair certified at upload {}; step-up {} uploads after the change; agreement after it = {} of the day's; {} estimation uploads; {:.0} s\n",
        r.first_certified
            .map_or("(none)".to_owned(), |i| i.to_string()),
        r.photos_to_detect
            .map_or("(none)".to_owned(), |i| i.to_string()),
        r.recovered_ratio
            .map_or("n/a".to_owned(), |x| format!("{:.0}%", 100.0 * x)),
        r.estimation_uploads,
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
                s.action.clone(),
                s.agree.to_string(),
                s.pair.clone(),
                s.certified.to_string(),
                s.audits.to_string(),
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
            "action",
            "agree",
            "pair_after",
            "certified",
            "audits_cumulative",
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
    let (marks, labels): (Vec<(f64, f64)>, Vec<String>) = r
        .changes
        .iter()
        .map(|c| ((c.i as f64, 0.05), format!("{} ({})", c.to, c.why)))
        .unzip();
    let chart = Chart {
        title: format!(
            "Scenery change at upload {}: agreement and bytes (rolling {w}), live pair changes",
            r.spans.first().map_or(0, |s| s.photos)
        ),
        x_label: "upload".into(),
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
                name: "live pair changed".into(),
                points: marks,
                labels,
                line: false,
                color: PALETTE[3],
            },
        ],
        y_range: Some((0.0, 1.05)),
    };
    report::plot_svg(&json.with_extension("svg"), &chart)
}
