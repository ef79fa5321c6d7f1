//! Durable learned state: a corrupt newest checkpoint (what a power loss after an un-fsynced
//! rename leaves) falls back to the newest valid one, is moved aside rather than deleted,
//! and pruning never deletes what a newer valid checkpoint did not supersede.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use adacompress::agent::Checkpoint;
use adacompress::learn::estimator::EstimatorConfig;
use adacompress::learn::online::{KEEP_CHECKPOINTS, Observed, Online};

use common::*;

/// The Q-head agent, whose learned checkpoints these tests write and load.
fn shipped() -> PathBuf {
    qhead_agent()
}

/// Learns on every estimate, cheaply, so each `save` writes one checkpoint.
fn cfg() -> EstimatorConfig {
    EstimatorConfig {
        learn_every: 1,
        batch: 8,
        steps_per_learn: 2,
        ..EstimatorConfig::default()
    }
}

fn open(state: &Path) -> Arc<Online> {
    Online::open(&shipped(), state, cfg(), 7).expect("open the learner")
}

fn ckpt_dir(state: &Path) -> PathBuf {
    state.join("checkpoints")
}

fn ckpt_path(state: &Path, version: u64) -> PathBuf {
    ckpt_dir(state).join(format!("agent-v{version}.json"))
}

/// Writes learned checkpoints with these versions (the shipped head, renumbered).
fn write_learned(state: &Path, versions: impl IntoIterator<Item = u64>) {
    let base = Checkpoint::read(&shipped()).expect("shipped checkpoint");
    for v in versions {
        let mut c = base.clone();
        c.version = v;
        c.write(&ckpt_path(state, v))
            .expect("write a learned checkpoint");
    }
}

/// One learning call through the public path (retrain mode, one estimate), waited for.
fn save(online: &Online) -> u64 {
    let before = online.live().version;
    online.force_retrain();
    let dim = online.live().head.dims()[0];
    let features: Arc<[f32]> = (0..dim).map(|i| (i % 7) as f32 * 0.1).collect();
    online.record(&[Observed {
        features,
        action: 3,
        greedy: false,
        agree: true,
        size_ratio: 0.3,
    }]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while online.learning() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let after = online.live().version;
    assert_eq!(after, before + 1, "one new head was swapped in");
    after
}

/// Versions of the checkpoints in the folder that load, ascending.
fn valid_versions(state: &Path) -> Vec<u64> {
    let mut out: Vec<u64> = adacompress::learn::online::checkpoints(&ckpt_dir(state))
        .into_iter()
        .filter_map(|(v, path)| {
            Checkpoint::read(&path).ok().map(|c| {
                assert_eq!(c.version, v);
                v
            })
        })
        .collect();
    out.sort_unstable();
    out
}

/// What `/agent` reports as the active checkpoint: it must exist.
fn active(online: &Online) -> PathBuf {
    let path = online.status().checkpoint.expect("an active checkpoint");
    assert!(
        path.is_file(),
        "/agent names {}, which does not exist",
        path.display()
    );
    path
}

/// Corrupts the newest of v10..v12, reopens, and checks the fall-back and the pruning.
fn newest_corrupt_falls_back(tag: &str, corrupt: impl FnOnce(&Path)) {
    let state = temp_dir(tag);
    write_learned(&state, 10..=12);
    let newest = ckpt_path(&state, 12);
    corrupt(&newest);
    let bad_bytes = std::fs::read(&newest).expect("corrupt file");

    let online = open(&state);
    // The previous valid version, not the shipped one (version 2).
    assert_eq!(online.live().version, 11);
    assert_eq!(active(&online), ckpt_path(&state, 11));
    let st = online.status();
    assert_eq!(st.skipped_checkpoints, 1);
    let skipped = online.skipped_checkpoints();
    assert_eq!(skipped[0].path, newest);
    let aside = skipped[0].moved_to.clone().expect("moved aside");
    assert_eq!(aside, ckpt_dir(&state).join("agent-v12.json.corrupt"));
    assert_eq!(std::fs::read(&aside).expect("kept aside"), bad_bytes);

    // The next save writes v12 afresh and prunes nothing valid.
    assert_eq!(save(&online), 12);
    assert_eq!(active(&online), ckpt_path(&state, 12));
    assert_eq!(valid_versions(&state), vec![10, 11, 12]);

    // Many saves later: the newest KEEP valid ones are kept, the live one always exists,
    // and the corrupt copy is still there for an operator.
    for _ in 0..(KEEP_CHECKPOINTS + 3) {
        let v = save(&online);
        assert_eq!(active(&online), ckpt_path(&state, v));
    }
    let last = online.live().version;
    let want: Vec<u64> = (last + 1 - KEEP_CHECKPOINTS as u64..=last).collect();
    assert_eq!(valid_versions(&state), want);
    assert!(aside.is_file());
    online.shutdown();
    drop(online);

    // A restart loads the newest saved head.
    let again = open(&state);
    assert_eq!(again.live().version, last);
    assert_eq!(again.status().skipped_checkpoints, 0);
    again.shutdown();
    drop(again);
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
// Q-head path: goes when serve drops the Q-head agent (issue 15 item 1).
fn truncated_newest_checkpoint_falls_back_to_the_previous_valid_one() {
    newest_corrupt_falls_back("durability-truncated", |p| {
        let bytes = std::fs::read(p).expect("checkpoint");
        std::fs::write(p, &bytes[..bytes.len() / 3]).expect("truncate");
    });
}

#[test]
// Q-head path: goes when serve drops the Q-head agent (issue 15 item 1).
fn garbage_newest_checkpoint_falls_back_to_the_previous_valid_one() {
    newest_corrupt_falls_back("durability-garbage", |p| {
        let garbage: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(p, garbage).expect("garbage");
    });
}

#[test]
// Q-head path: goes when serve drops the Q-head agent (issue 15 item 1).
fn empty_newest_checkpoint_falls_back_to_the_previous_valid_one() {
    // What ext4 typically leaves after a power loss: the rename, but no data.
    newest_corrupt_falls_back("durability-empty", |p| {
        std::fs::write(p, b"").expect("empty");
    });
}

#[test]
// Q-head path: goes when serve drops the Q-head agent (issue 15 item 1).
fn every_checkpoint_corrupt_loads_the_shipped_one_and_keeps_the_files_aside() {
    let state = temp_dir("durability-all-corrupt");
    write_learned(&state, [10, 11]);
    let v10 = ckpt_path(&state, 10);
    let v11 = ckpt_path(&state, 11);
    std::fs::write(&v10, b"{\"format\": \"adacompress-agent/1\", \"vers").expect("truncate");
    std::fs::write(&v11, [0u8, 159, 146, 150, 255]).expect("garbage");
    // A half-written temp file from a crash mid-write is not a checkpoint.
    std::fs::write(ckpt_dir(&state).join("agent-v12.json.tmp"), b"{").expect("temp");

    let online = open(&state);
    let shipped_version = Checkpoint::read(&shipped()).expect("shipped").version;
    assert_eq!(online.live().version, shipped_version);
    assert_eq!(active(&online), shipped());
    assert_eq!(online.status().skipped_checkpoints, 2);
    let aside: Vec<PathBuf> = online
        .skipped_checkpoints()
        .into_iter()
        .map(|s| s.moved_to.expect("moved aside"))
        .collect();
    assert_eq!(
        aside,
        vec![
            ckpt_dir(&state).join("agent-v11.json.corrupt"),
            ckpt_dir(&state).join("agent-v10.json.corrupt"),
        ]
    );
    assert!(aside.iter().all(|p| p.is_file()));
    assert!(!v10.exists() && !v11.exists());
    assert!(!ckpt_dir(&state).join("agent-v12.json.tmp").exists());

    // Learning goes on from the shipped head; the corrupt files stay aside.
    let v = save(&online);
    assert_eq!(v, shipped_version + 1);
    assert_eq!(active(&online), ckpt_path(&state, v));
    assert_eq!(valid_versions(&state), vec![v]);
    assert!(aside.iter().all(|p| p.is_file()));
    online.shutdown();
    drop(online);
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
// Q-head path: goes when serve drops the Q-head agent (issue 15 item 1).
fn a_saved_checkpoint_is_complete_json_that_loads_back_identically() {
    let state = temp_dir("durability-save");
    let online = open(&state);
    let v = save(&online);
    let path = active(&online);
    assert_eq!(path, ckpt_path(&state, v));
    let text = std::fs::read_to_string(&path).expect("saved checkpoint");
    let json: serde_json::Value = serde_json::from_str(&text).expect("complete JSON");
    assert_eq!(json["version"], v);
    let back = Checkpoint::read(&path).expect("loads");
    let live = online.live();
    assert_eq!(back.version, live.version);
    assert_eq!(back.policy, live.policy);
    assert_eq!(
        back.head().expect("head").parameters(),
        live.head.parameters()
    );
    // Re-serialising what was read gives the same bytes.
    assert_eq!(serde_json::to_string_pretty(&back).expect("json"), text);
    // No temp file is left behind.
    let names: Vec<String> = std::fs::read_dir(ckpt_dir(&state))
        .expect("checkpoint folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(names, vec![format!("agent-v{v}.json")]);
    let params = live.head.parameters();
    online.shutdown();
    drop(online);

    // A restart serves the very same head.
    let again = open(&state);
    assert_eq!(again.live().version, v);
    assert_eq!(again.live().head.parameters(), params);
    again.shutdown();
    drop(again);
    let _ = std::fs::remove_dir_all(&state);
}
