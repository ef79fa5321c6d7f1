//! Training and evaluation against the real local backend on loopback.

mod common;

use std::process::Command;
use std::time::Duration;

use adacompress::action::ActionSet;
use adacompress::agent::Policy;
use adacompress::client::{CachedService, HttpService};
use adacompress::learn::photos_env::PhotoEnv;
use adacompress::learn::trainer::{self, Algorithm, TrainConfig};
use adacompress::learn::tune;
use adacompress::learn::{Accuracy, EnvSpec, Reference};
use adacompress::model::ImageModel;
use adacompress::photos::{self, Split};
use adacompress::protocol::Protocol;
use adacompress::store::Store;

/// A trained greedy policy earns more reward on photos it never saw than the
/// uniformly random policy does (the paper's reward, w = 1, top-1 agreement).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_beats_random_policy_on_held_out_photos() {
    let (url, _state, _stop) = common::spawn_backend().await;
    let store = Store::in_memory().unwrap();
    let svc = HttpService::new(Protocol::GoogleVision, &url, Duration::from_secs(30)).unwrap();
    let cached = CachedService::new(&svc, &store);
    let backbone = ImageModel::load(&common::lite0(), 128).unwrap();
    let dir = common::photos("objects");
    let train_paths = photos::select(&dir, Split::Train, 50).unwrap();
    let test_paths = photos::select(&dir, Split::Test, 50).unwrap();
    assert!(train_paths.iter().all(|p| !test_paths.contains(p)));
    let set = ActionSet::paper();
    let prep = |paths: Vec<std::path::PathBuf>| {
        let set = set.clone();
        let (backbone, cached) = (&backbone, &cached);
        async move {
            let spec = EnvSpec {
                actions: set,
                accuracy: Accuracy::Top1,
                reference: Reference::Original,
                augment: 0,
            };
            PhotoEnv::prepare(&paths, Some(backbone), cached, spec, |_, _| {})
                .await
                .unwrap()
        }
    };
    let train_env = prep(train_paths).await;
    let test_env = prep(test_paths).await;
    let mut cfg = TrainConfig::new(Algorithm::Bandit);
    cfg.epochs = 25;
    let trained = trainer::train(&train_env, set.len(), &cfg, |_, _| {})
        .await
        .unwrap();
    let greedy = trainer::greedy_reward(&test_env, &trained.head, 1.0)
        .await
        .unwrap();
    let random = trainer::random_reward(&test_env, set.len(), 1.0)
        .await
        .unwrap();
    eprintln!("held-out reward: greedy {greedy:.3}, random {random:.3}");
    assert!(greedy > random + 0.1, "greedy {greedy} vs random {random}");

    // --target-agreement: the tuned threshold reaches the target in cross-validation,
    // and asking for more agreement never buys it with fewer bytes.
    let mut cfg = TrainConfig::new(Algorithm::Bandit);
    cfg.epochs = 8;
    cfg.size_weight = 0.0;
    cfg.full_feedback = true;
    let choice = tune::choose_threshold(&train_env, &cfg, 0.9, |_, _| {})
        .await
        .unwrap();
    let last = choice.candidates.last().unwrap();
    assert!(
        choice.chosen.agreement >= 0.9 || choice.chosen.threshold == last.threshold,
        "{:?}",
        choice.chosen
    );
    let first = &choice.candidates[0];
    assert!(first.size_ratio <= last.size_ratio, "{first:?} vs {last:?}");
    assert!(first.agreement <= last.agreement, "{first:?} vs {last:?}");
    assert!(matches!(choice.policy, Policy::CheapestSafe { .. }));
}

/// `train` and `eval` as a user runs them: files written, JSON fields present and
/// consistent with each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_train_then_eval_writes_the_promised_files() {
    let (url, _state, _stop) = common::spawn_backend().await;
    let out = common::temp_dir("cli");
    let exe = env!("CARGO_BIN_EXE_adacompress");
    let photos = common::photos("objects");
    let agent = out.join("agent.json");
    let cache = out.join("answers.sqlite");
    let status = Command::new(exe)
        .current_dir(common::root())
        .args([
            "train",
            "--algorithm",
            "bandit",
            "--upstream",
            &url,
            "--protocol",
            "google",
            "--epochs",
            "5",
            "--side",
            "128",
            "--limit",
            "24",
        ])
        .arg("--photos")
        .arg(&photos)
        .arg("--out")
        .arg(&agent)
        .arg("--cache")
        .arg(&cache)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        agent.exists()
            && out.join("agent.curve.csv").exists()
            && out.join("agent.curve.svg").exists()
    );
    let curve = std::fs::read_to_string(out.join("agent.curve.csv")).unwrap();
    assert_eq!(curve.lines().count(), 1 + 24 * 5, "one row per step");

    let json = out.join("eval.json");
    let output = Command::new(exe)
        .current_dir(common::root())
        .args(["eval", "--upstream", &url, "--limit", "12"])
        .arg("--photos")
        .arg(&photos)
        .arg("--agent")
        .arg(&agent)
        .arg("--cache")
        .arg(&cache)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        table.contains("oracle") && table.contains("agent") && table.contains("q75"),
        "{table}"
    );

    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["photos"], 12);
    assert_eq!(v["reference"], "original");
    let fixed = v["fixed"].as_array().unwrap();
    let names: Vec<&str> = fixed
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "q5", "q15", "q25", "q35", "q45", "q55", "q65", "q75", "q85", "q95"
        ]
    );
    for r in fixed {
        for key in [
            "quality",
            "bytes_mean",
            "size_ratio_original",
            "size_ratio_q75",
            "top1_agreement",
            "topk_agreement",
        ] {
            assert!(r[key].is_number(), "fixed.{key} missing in {r}");
        }
        assert!(r["max_side"].is_null());
    }
    let bytes: Vec<f64> = fixed
        .iter()
        .map(|r| r["bytes_mean"].as_f64().unwrap())
        .collect();
    assert!(
        bytes.windows(2).all(|w| w[0] <= w[1]),
        "bytes must not fall with quality: {bytes:?}"
    );
    let q75 = &fixed[7];
    assert!((q75["size_ratio_q75"].as_f64().unwrap() - 1.0).abs() < 1e-9);
    // The oracle agrees everywhere (it may keep the original) and never costs more than the original.
    assert_eq!(v["oracle"]["top1_agreement"], 1.0);
    assert!(
        v["oracle"]["bytes_mean"].as_f64().unwrap() <= v["original_bytes_mean"].as_f64().unwrap()
    );
    let agent_row = &v["agent"];
    for key in [
        "bytes_mean",
        "size_ratio_original",
        "size_ratio_q75",
        "top1_agreement",
        "topk_agreement",
    ] {
        assert!(agent_row[key].is_number(), "agent.{key} missing");
    }
    let chosen: u64 = agent_row["actions"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(chosen, 12);
    assert!(
        out.join("eval.svg").exists()
            && out.join("eval-summary.csv").exists()
            && out.join("eval-photos.csv").exists()
    );
    let _ = std::fs::remove_dir_all(&out);
}

/// The calibrated agent as a user trains and evaluates it: a compact-state checkpoint with
/// a conformal threshold and a fallback pair, then a workload report whose numbers hang
/// together (the oracle agrees everywhere and is never beaten on bytes, the best fixed
/// pair reaches the target, the agent's actions come from its set).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_calibrated_train_then_workload_eval() {
    let (url, _state, _stop) = common::spawn_backend().await;
    let out = common::temp_dir("calibrated");
    let exe = env!("CARGO_BIN_EXE_adacompress");
    let photos = common::root().join("data/photos");
    let agent = out.join("agent.json");
    let cache = out.join("answers.sqlite");
    let run = Command::new(exe)
        .current_dir(common::root())
        .args([
            "train",
            "--upstream",
            &url,
            "--epochs",
            "40",
            "--side",
            "128",
            "--limit",
            "20",
            "--sources",
            "objects,street",
        ])
        .arg("--photos")
        .arg(&photos)
        .arg("--out")
        .arg(&agent)
        .arg("--cache")
        .arg(&cache)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("held out by hash"), "{stderr}");
    let ckpt: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&agent).unwrap()).unwrap();
    assert_eq!(ckpt["state"], "compact");
    assert_eq!(ckpt["action_set"]["name"], "uploads");
    assert_eq!(ckpt["policy"]["kind"], "calibrated");
    let n_actions = ckpt["action_set"]["actions"].as_array().unwrap().len();
    assert_eq!(
        ckpt["policy"]["bits_per_pixel"].as_array().unwrap().len(),
        n_actions
    );
    let fit: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("agent.fit.json")).unwrap())
            .unwrap();
    assert!(fit["chosen"]["risk_bound"].as_f64().unwrap() <= 1.0);
    assert!(out.join("agent.threshold.csv").exists() && out.join("agent.threshold.svg").exists());

    let json = out.join("eval.json");
    let run = Command::new(exe)
        .current_dir(common::root())
        .args([
            "eval",
            "--upstream",
            &url,
            "--limit",
            "12",
            "--sources",
            "objects,street",
        ])
        .arg("--photos")
        .arg(&photos)
        .arg("--agent")
        .arg(&agent)
        .arg("--cache")
        .arg(&cache)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["photos"], 12);
    let fixed = v["fixed"].as_array().unwrap();
    assert_eq!(fixed.len(), n_actions);
    assert_eq!(v["oracle"]["top1_agreement"], 1.0);
    let oracle_bytes = v["oracle"]["bytes_mean"].as_f64().unwrap();
    for f in fixed {
        assert!(
            f["bytes_mean"].as_f64().unwrap() >= oracle_bytes - 1e-9,
            "{f}"
        );
    }
    // Full-size re-encodes: bytes never fall as quality rises.
    let full: Vec<f64> = fixed
        .iter()
        .filter(|f| {
            let p = f["policy"].as_str().unwrap();
            p.starts_with('q') && !p.contains('@')
        })
        .map(|f| f["bytes_mean"].as_f64().unwrap())
        .collect();
    assert_eq!(full.len(), 5);
    assert!(full.windows(2).all(|w| w[0] <= w[1]), "{full:?}");
    let best = &v["best_fixed"];
    assert!(best["top1_agreement"].as_f64().unwrap() >= 0.97);
    assert!((best["vs_best_fixed"].as_f64().unwrap() - 1.0).abs() < 1e-9);
    let chosen: u64 = v["agent_actions"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(chosen, 12);
    for key in ["agreement_met", "bytes_target_met", "dominates_best_fixed"] {
        assert!(v["verdict"][key].is_boolean(), "verdict.{key}");
    }
    let workload = v["workload"].as_str().unwrap();
    for f in ["summary.csv", "photos.csv", "table.csv", "table.json"] {
        assert!(
            out.join(format!("{workload}-{f}")).exists(),
            "{workload}-{f}"
        );
    }

    // `compress` with the calibrated agent: a valid JPEG no larger than the original.
    let input = photos.join("street/0.jpg");
    let output = out.join("street-0.jpg");
    let run = Command::new(exe)
        .current_dir(common::root())
        .arg("compress")
        .arg(&input)
        .arg(&output)
        .arg("--agent")
        .arg(&agent)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let written = std::fs::read(&output).unwrap();
    assert!(written.len() <= std::fs::read(&input).unwrap().len());
    assert!(adacompress::codec::decode(&written, &Default::default()).is_ok());
    let _ = std::fs::remove_dir_all(&out);
}

/// `compress` with the shipped agent: a valid, upright JPEG no larger than the
/// original, and a line saying what was done.
#[test]
fn cli_compress_with_the_shipped_agent() {
    let out = common::temp_dir("compress");
    let exe = env!("CARGO_BIN_EXE_adacompress");
    for (set, name) in [("objects", "3.jpg"), ("street", "0.jpg")] {
        let input = common::photos(set).join(name);
        let output = out.join(format!("{set}-{name}"));
        let run = Command::new(exe)
            .current_dir(common::root())
            .arg("compress")
            .arg(&input)
            .arg(&output)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let line = String::from_utf8_lossy(&run.stdout);
        assert!(line.contains("action") && line.contains("bytes"), "{line}");
        let original = std::fs::read(&input).unwrap();
        let written = std::fs::read(&output).unwrap();
        assert!(written.len() <= original.len());
        let a = adacompress::codec::decode(&original, &Default::default()).unwrap();
        let b = adacompress::codec::decode(&written, &Default::default()).unwrap();
        if line.contains('@') {
            // A downscale action: smaller, same aspect (within rounding).
            assert!(b.image.width() <= a.image.width() && b.image.height() <= a.image.height());
        } else {
            assert_eq!(a.image.dimensions(), b.image.dimensions());
        }
    }
    // A missing input names the file.
    let run = Command::new(exe)
        .current_dir(common::root())
        .args(["compress", "no-such.jpg", "x.jpg"])
        .output()
        .unwrap();
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("no-such.jpg"));
    let _ = std::fs::remove_dir_all(&out);
}
