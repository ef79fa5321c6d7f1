//! The live pair's loop, live: the demo's phone-like uploads through a real proxy (the
//! shipped calibrated agent) and backend (Lite0), a scenery change to night, then a restart
//! on the same state folder.

mod common;

use adacompress::action::Action;
use adacompress::config::Config;
use adacompress::demo::{self, DemoConfig, FAST_LEARNING};
use adacompress::learn::online::Online;
use adacompress::learn::pair::PairConfig;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cheaper_pair_is_certified_by_day_night_steps_it_up_and_a_restart_keeps_it() {
    let state = temp_dir("drift-state");
    let (day, night) = (200, 150);
    let cfg = DemoConfig {
        photos: root().join("data/photos"),
        checkpoint: root().join("models/agent-calibrated.json"),
        state_dir: state.clone(),
        day,
        night,
        window: 20,
        base: Config::default(),
        fast: true,
        progress: false,
    };
    let r = demo::run(cfg).await.expect("demo runs");
    eprintln!("{}", demo::table(&r));
    let first = &r.steps[0];
    let day_span = &r.spans[0];

    // By day the audits certified a pair cheaper than the shipped prior, and it was served.
    let certified = r
        .changes
        .iter()
        .find(|c| c.i < day && c.why == "certified")
        .expect("a cheaper pair was certified by day");
    assert_eq!(certified.from, first.pair, "it replaced the prior");
    let before_change = &r.steps[day - 1];
    assert!(
        before_change.pair_cost < first.pair_cost,
        "the pair served at the change ({}, {:.3}) is cheaper than the prior ({}, {:.3})",
        before_change.pair,
        before_change.pair_cost,
        first.pair,
        first.pair_cost
    );
    assert!(
        day_span.bytes_vs_original < 0.8,
        "the day went up compressed: {:.2}",
        day_span.bytes_vs_original
    );

    // After the change the live pair stepped up (failed audits, a margin alarm or a
    // default found short) to a more faithful, dearer pair.
    let detect = r
        .photos_to_detect
        .expect("the live pair stepped up at night");
    let step_up = &r.steps[day + detect];
    let (from, to) = (
        Action::parse(&before_change.pair).expect("a pair name"),
        Action::parse(&step_up.pair).expect("a pair name"),
    );
    let side = |a: &Action| a.max_side.unwrap_or(u32::MAX);
    assert!(
        to != from
            && side(&to) >= side(&from)
            && to.quality.unwrap_or(100) >= from.quality.unwrap_or(100),
        "stepped up from {from} to {to}"
    );
    assert!(
        step_up.drifts + step_up.margin_alarms + step_up.default_stepups
            > before_change.drifts + before_change.margin_alarms + before_change.default_stepups
    );
    // Agreement after the step-up is back near the day's.
    let ratio = r.recovered_ratio.expect("ratio after the step-up");
    assert!(
        ratio >= 0.9,
        "agreement after the step-up = {ratio} of the day's"
    );

    // A restart finds the live pair where it was: same pair, same evidence.
    let end = r
        .pair_end
        .clone()
        .expect("the live pair's status at the end");
    let mut pcfg = PairConfig::default();
    (pcfg.target_agreement, pcfg.learn_share, pcfg.max_audit_rate) = FAST_LEARNING;
    pcfg.learn_images = (day + night) as u64;
    let online = Online::open(
        &root().join("models/agent-calibrated.json"),
        &state,
        Config::default().estimator.accuracy,
        pcfg,
        1,
    )
    .expect("reopen");
    let back = online.pair_status();
    assert_eq!(back.served, end.served);
    assert_eq!(back.audits, end.audits);
    assert_eq!(back.drifts, end.drifts);
    assert!(back.audits > 0 && back.drifts >= 1);
    online.shutdown();
}
