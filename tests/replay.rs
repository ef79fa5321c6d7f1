//! `adacompress replay` on the committed answer table (`docs/bench/pair-table.csv`: every
//! upload of the stream benchmark's traffic at seven pairs, answered by Lite2 through a
//! real `serve`): the table reads whole, a replay is a pure function of its seed, every
//! upload is counted once, and the shipped learner's behaviour on it stays where the notes
//! say (`docs/bench/notes.md`, session 24).

mod common;

use adacompress::learn::pair::PairConfig;
use adacompress::learn::replay::{self, Table};

use common::*;

fn table() -> Table {
    Table::read(&root().join("docs/bench/pair-table.csv")).expect("the committed table reads")
}

fn prior(t: &Table) -> (Vec<f32>, usize) {
    replay::prior(t, &root().join("models/agent-calibrated.json")).expect("the shipped agent")
}

#[test]
fn the_table_holds_every_stream_upload_at_every_pair() {
    let t = table();
    assert_eq!(t.deployments, ["day-uploads", "day-samples", "night"]);
    assert_eq!(t.actions.len(), 7, "{:?}", t.actions);
    assert_eq!((t.uploads.len(), t.dropped), (4500, 0));
    // keep is the reference: it always agrees, and sends the original.
    let keep = t
        .actions
        .iter()
        .position(|a| a.quality.is_none())
        .expect("keep is in the table");
    assert!(
        t.uploads
            .iter()
            .all(|u| u.answers[keep].agree && u.answers[keep].bytes == u.original)
    );
}

#[test]
fn a_replay_is_a_function_of_its_seed_and_counts_every_upload_once() {
    let t = table();
    let (bpp, default) = prior(&t);
    let cfg = PairConfig::default();
    let order: Vec<usize> = (0..t.uploads.len()).collect();
    let a = replay::replay(&t, &order, &cfg, bpp.clone(), default, 5);
    let b = replay::replay(&t, &order, &cfg, bpp.clone(), default, 5);
    let c = replay::replay(&t, &order, &cfg, bpp, default, 6);
    let key = |s: &[replay::Step]| -> Vec<(usize, u64)> {
        s.iter().map(|x| (x.action, x.estimation)).collect()
    };
    assert_eq!(key(&a), key(&b));
    assert_ne!(key(&a), key(&c), "another seed audits other uploads");
    assert_eq!(a.len(), 4500);
    let mut seen = vec![false; t.uploads.len()];
    for s in &a {
        assert!(!seen[s.upload], "upload {} counted twice", s.upload);
        seen[s.upload] = true;
        // Whatever was served, the bytes are the table's for that pair.
        assert_eq!(s.uploaded, t.uploads[s.upload].answers[s.action].bytes);
    }
}

#[test]
fn the_shipped_learner_keeps_the_client_above_the_target_on_the_stream_s_answers() {
    let t = table();
    let (bpp, default) = prior(&t);
    let seeds: Vec<u64> = (1..=20).collect();
    let r = replay::run(
        &t,
        &PairConfig::default(),
        &bpp,
        default,
        &seeds,
        false,
        750,
    );
    for s in &r.spreads {
        // What the client gets (re-asks included) clears the target on the median seed of
        // every deployment's late part, and no seed falls far under it.
        assert!(s.agreement.p50 >= 0.97, "{s:?}");
        assert!(s.agreement.p10 >= 0.95, "{s:?}");
        // The late estimation share stays near the budget on the median seed.
        assert!(s.estimation_share.p50 <= 0.10, "{s:?}");
    }
    // The live pair is at most 1.3x the best fixed pair in hindsight in most seeds: by day
    // in 98-100 % of 200 seeds, at night in 76 % (85 % of these 20; docs/bench/notes.md,
    // session 25; night was 48 % before re-asks counted in the default check, 19 % before
    // session 24).
    let by = |name: &str| {
        r.spreads
            .iter()
            .find(|s| s.deployment == name)
            .map(|s| s.met)
    };
    assert!(
        by("day-uploads").is_some_and(|m| m >= 0.9),
        "{:?}",
        r.spreads
    );
    assert!(
        by("day-samples").is_some_and(|m| m >= 0.9),
        "{:?}",
        r.spreads
    );
    assert!(by("night").is_some_and(|m| m >= 0.7), "{:?}", r.spreads);
}
