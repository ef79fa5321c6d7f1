//! `adacompress bench`: per-photo CPU cost of each stage of the request path, on
//! one thread, as medians of repeated runs, beside the decode + encode floor
//! measured in the same run. Writes Markdown, CSV and JSON.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::action::PAPER_QUALITIES;
use crate::agent::{AdamConfig, Agent, PAPER_HIDDEN, QHead};
use crate::codec::{self, EncoderMode, Limits};
use crate::model::ImageModel;
use crate::report::ReportError;

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Codec {
        path: PathBuf,
        source: codec::CodecError,
    },
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error(transparent)]
    Checkpoint(#[from] crate::agent::CheckpointError),
    #[error(transparent)]
    Photos(#[from] crate::photos::PhotoError),
    #[error(transparent)]
    Report(#[from] ReportError),
    /// A flag out of range; the message names it.
    #[error("{0}")]
    Usage(String),
}

/// Everything `adacompress bench` was asked (one field per flag of `adacompress bench --help`).
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Photos to time (folders are searched for the request-path comparison).
    pub photos: Vec<PathBuf>,
    /// Backbone ONNX model and the input sides to time.
    pub backbone: PathBuf,
    pub sides: Vec<u32>,
    /// Timed runs per stage (after one warm-up).
    pub runs: usize,
    /// Output path prefix.
    pub out: PathBuf,
    /// Compare this agent's request path with the fixed pair's instead.
    pub agent: Option<PathBuf>,
    /// The fixed pair, e.g. `q85@768`.
    pub fixed: String,
}

/// `adacompress bench`: times, prints the Markdown table and writes PREFIX.md/.csv/.json.
pub fn command(opts: BenchOptions) -> Result<(), BenchError> {
    if opts.runs < 2 {
        return Err(BenchError::Usage(format!(
            "--runs must be at least 2, not {}",
            opts.runs
        )));
    }
    if let Some(agent_path) = &opts.agent {
        return command_paths(&opts, agent_path);
    }
    let mut bar = crate::progress::Progress::new("bench", opts.photos.len() as u64);
    let rows = run(
        &opts.photos,
        &opts.backbone,
        &opts.sides,
        opts.runs,
        |d, t| bar.set(d as u64, t as u64),
    )?;
    bar.finish();
    let md = markdown(&rows);
    print!("{md}");
    write_stages(&opts.out, &rows, &md)?;
    Ok(())
}

/// `adacompress bench --agent`: the agent's request path against the fixed pair's.
fn command_paths(opts: &BenchOptions, agent_path: &Path) -> Result<(), BenchError> {
    let agent = Agent::load(agent_path, None)?;
    let fixed = crate::action::Action::parse(&opts.fixed).ok_or_else(|| {
        BenchError::Usage(format!(
            "--fixed must be an action like q85@768, not `{}`",
            opts.fixed
        ))
    })?;
    let photos_list = crate::photos::expand(&opts.photos)?;
    let mut bar = crate::progress::Progress::new("bench paths", photos_list.len() as u64);
    let rows = paths(&photos_list, &agent, &fixed, opts.runs, |d, t| {
        bar.set(d as u64, t as u64)
    })?;
    bar.finish();
    let md = paths_markdown(
        &rows,
        &opts.fixed,
        &agent_path.display().to_string(),
        opts.runs,
    );
    print!("{md}");
    write_paths(&opts.out, &rows, &md)?;
    Ok(())
}

/// One measured stage.
#[derive(Debug, Clone, Serialize)]
pub struct StageTiming {
    pub photo: String,
    pub stage: String,
    pub median_ms: f64,
    pub p10_ms: f64,
    pub p90_ms: f64,
    pub runs: usize,
    /// Output bytes, for encode stages.
    pub bytes: Option<usize>,
}

/// Times `f` `runs` times after one warm-up; returns sorted milliseconds.
fn time_runs<T>(runs: usize, mut f: impl FnMut() -> T) -> Vec<f64> {
    std::hint::black_box(f());
    let mut v: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

fn stat(photo: &str, stage: &str, v: &[f64], bytes: Option<usize>) -> StageTiming {
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    StageTiming {
        photo: photo.to_string(),
        stage: stage.to_string(),
        median_ms: at(0.5),
        p10_ms: at(0.1),
        p90_ms: at(0.9),
        runs: v.len(),
        bytes,
    }
}

/// Measures every stage for each photo. `sides` are backbone input sides.
pub fn run(
    photos: &[PathBuf],
    backbone: &Path,
    sides: &[u32],
    runs: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<StageTiming>, BenchError> {
    let mut out = Vec::new();
    let models: Vec<ImageModel> = sides
        .iter()
        .map(|&s| ImageModel::load(backbone, s))
        .collect::<Result<_, _>>()?;
    let mut rng = rand::rng();
    let mut dims = vec![crate::agent::STATE_DIM];
    dims.extend(PAPER_HIDDEN);
    dims.push(11);
    let head = QHead::new(&dims, AdamConfig::default(), &mut rng);
    for (n, path) in photos.iter().enumerate() {
        let name = path
            .file_name()
            .map_or_else(String::new, |f| f.to_string_lossy().into_owned());
        let bytes = std::fs::read(path).map_err(|source| BenchError::Read {
            path: path.clone(),
            source,
        })?;
        let codec_err = |source| BenchError::Codec {
            path: path.clone(),
            source,
        };
        let decoded = codec::decode(&bytes, &Limits::default()).map_err(codec_err)?;
        let (w, h) = decoded.image.dimensions();
        let label = format!("{name} ({w}×{h})");
        let limits = Limits::default();
        out.push(stat(
            &label,
            "decode",
            &time_runs(runs, || codec::decode(&bytes, &limits)),
            None,
        ));
        for m in &models {
            let s = m.side();
            out.push(stat(
                &label,
                &format!("resize+crop to {s}"),
                &time_runs(runs, || codec::square_crop(&decoded.image, s)),
                None,
            ));
            let square = codec::square_crop(&decoded.image, s);
            out.push(stat(
                &label,
                &format!("backbone lite0 @{s}"),
                &time_runs(runs, || m.run_square(&square)),
                None,
            ));
        }
        let features = models[0].run(&decoded.image)?.features;
        out.push(stat(
            &label,
            "q-head",
            &time_runs(runs, || head.predict(&features)),
            None,
        ));
        for mode in EncoderMode::ALL {
            for q in PAPER_QUALITIES {
                let sample = codec::encode_jpeg(&decoded.image, q, mode).map_err(codec_err)?;
                out.push(stat(
                    &label,
                    &format!("encode {} q{q}", mode.name()),
                    &time_runs(runs, || codec::encode_jpeg(&decoded.image, q, mode)),
                    Some(sample.len()),
                ));
            }
        }
        let floor = time_runs(runs, || {
            codec::decode(&bytes, &limits)
                .ok()
                .map(|d| codec::encode_jpeg(&d.image, 75, EncoderMode::default()))
        });
        out.push(stat(&label, "floor: decode + encode q75", &floor, None));
        progress(n + 1, photos.len());
    }
    Ok(out)
}

/// Markdown table of the timings.
pub fn markdown(rows: &[StageTiming]) -> String {
    let mut s = String::from(
        "| photo | stage | median ms | p10 | p90 | runs | bytes |\n|---|---|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {:.2} | {:.2} | {:.2} | {} | {} |\n",
            r.photo,
            r.stage,
            r.median_ms,
            r.p10_ms,
            r.p90_ms,
            r.runs,
            r.bytes.map_or(String::new(), |b| b.to_string())
        ));
    }
    s
}

/// One photo's CPU time on the request path: the fixed-pair proxy against the agent.
#[derive(Debug, Clone, Serialize)]
pub struct PathTiming {
    pub photo: String,
    pub width: u32,
    pub height: u32,
    pub original_bytes: usize,
    /// Header check + (DCT-scaled) decode + resize + encode of the fixed pair, median ms.
    pub fixed_ms: f64,
    /// The same for the agent's choice, plus its state (scaled decode + backbone) and head.
    pub agent_ms: f64,
    /// What the agent chose.
    pub agent_action: String,
}

/// The agent's whole path against the fixed-pair proxy's, per photo, medians of `runs`
/// after one warm-up, on the calling thread. Photos that do not decode are skipped.
pub fn paths(
    photos: &[PathBuf],
    agent: &crate::agent::Agent,
    fixed: &crate::action::Action,
    runs: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<PathTiming>, BenchError> {
    use crate::action::Source;
    let limits = Limits::default();
    let encoder = agent.actions.encoder;
    let mut out = Vec::with_capacity(photos.len());
    for (n, path) in photos.iter().enumerate() {
        let bytes = std::fs::read(path).map_err(|source| BenchError::Read {
            path: path.clone(),
            source,
        })?;
        let Ok(probe) = Source::new(&bytes, &limits) else {
            continue;
        };
        let (width, height) = (probe.width, probe.height);
        let fixed_run = || {
            let mut src = Source::new(&bytes, &limits).ok()?;
            src.apply(fixed, encoder).ok().map(|a| a.bytes.len())
        };
        let agent_run = || {
            let mut src = Source::new(&bytes, &limits).ok()?;
            let state = agent.observe(&mut src).ok()?;
            let a = agent.actions.actions[agent.decide(&state)];
            src.apply(&a, encoder).ok().map(|x| (x.bytes.len(), a))
        };
        let Some((_, chosen)) = agent_run() else {
            continue;
        };
        let f = time_runs(runs, fixed_run);
        let a = time_runs(runs, agent_run);
        out.push(PathTiming {
            photo: path.display().to_string(),
            width,
            height,
            original_bytes: bytes.len(),
            fixed_ms: f[f.len() / 2],
            agent_ms: a[a.len() / 2],
            agent_action: chosen.name(),
        });
        progress(n + 1, photos.len());
    }
    Ok(out)
}

/// Markdown summary of [`paths`]: totals, the ratio and the largest photos.
pub fn paths_markdown(rows: &[PathTiming], fixed: &str, agent: &str, runs: usize) -> String {
    let fixed_total: f64 = rows.iter().map(|r| r.fixed_ms).sum();
    let agent_total: f64 = rows.iter().map(|r| r.agent_ms).sum();
    let ratio = agent_total / fixed_total.max(1e-9);
    let mut s = format!(
        "CPU per image on the request path, one thread, median of {runs} runs per photo after a warm-up, {} photos.\n\n\
         | path | total ms | mean ms/photo |\n|---|---:|---:|\n\
         | fixed-pair proxy (`{fixed}`: header, DCT-scaled decode, resize, encode) | {fixed_total:.0} | {:.2} |\n\
         | agent (`{agent}`: + scaled decode and backbone for its state, head, its own action) | {agent_total:.0} | {:.2} |\n\n\
         Agent / fixed: **{ratio:.2}×** (target ≤ 1.5×: {}).\n",
        rows.len(),
        fixed_total / rows.len().max(1) as f64,
        agent_total / rows.len().max(1) as f64,
        if ratio <= 1.5 {
            "met".to_string()
        } else {
            format!("missed by {:.2}×", ratio / 1.5)
        }
    );
    let mut big: Vec<&PathTiming> = rows.iter().collect();
    big.sort_by_key(|r| std::cmp::Reverse(u64::from(r.width) * u64::from(r.height)));
    s.push_str("\nLargest photos:\n\n| photo | size | fixed ms | agent ms | agent's action |\n|---|---|---:|---:|---|\n");
    for r in big.iter().take(5) {
        s.push_str(&format!(
            "| {} | {}×{} | {:.1} | {:.1} | {} |\n",
            r.photo, r.width, r.height, r.fixed_ms, r.agent_ms, r.agent_action
        ));
    }
    s
}

/// Writes `PREFIX.json` (the rows), `PREFIX.csv` and `PREFIX.md`.
fn write_report<T: Serialize>(
    prefix: &Path,
    rows: &[T],
    header: &[&str],
    csv_rows: &[Vec<String>],
    md: &str,
) -> Result<(), ReportError> {
    let with_ext = |ext: &str| PathBuf::from(format!("{}.{ext}", prefix.display()));
    crate::report::write_json(&with_ext("json"), &rows)?;
    crate::report::write_csv(&with_ext("csv"), header, csv_rows)?;
    std::fs::write(with_ext("md"), md).map_err(|e| ReportError::Write {
        path: with_ext("md"),
        reason: e.to_string(),
    })
}

/// Writes `PREFIX.json`, `PREFIX.csv` and `PREFIX.md` for the stage timings.
pub fn write_stages(prefix: &Path, rows: &[StageTiming], md: &str) -> Result<(), ReportError> {
    let csv_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.photo.clone(),
                r.stage.clone(),
                format!("{:.3}", r.median_ms),
                format!("{:.3}", r.p10_ms),
                format!("{:.3}", r.p90_ms),
                r.runs.to_string(),
                r.bytes.map_or(String::new(), |b| b.to_string()),
            ]
        })
        .collect();
    let header = [
        "photo",
        "stage",
        "median_ms",
        "p10_ms",
        "p90_ms",
        "runs",
        "bytes",
    ];
    write_report(prefix, rows, &header, &csv_rows, md)
}

/// Writes `PREFIX.json`, `PREFIX.csv` and `PREFIX.md` for the path comparison.
pub fn write_paths(prefix: &Path, rows: &[PathTiming], md: &str) -> Result<(), ReportError> {
    let csv_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.photo.clone(),
                r.width.to_string(),
                r.height.to_string(),
                r.original_bytes.to_string(),
                format!("{:.3}", r.fixed_ms),
                format!("{:.3}", r.agent_ms),
                r.agent_action.clone(),
            ]
        })
        .collect();
    let header = [
        "photo",
        "width",
        "height",
        "original_bytes",
        "fixed_ms",
        "agent_ms",
        "agent_action",
    ];
    write_report(prefix, rows, &header, &csv_rows, md)
}
