//! The estimate → retrain → recover loop, live: the demo's scenery change through a real
//! proxy and backend, then a restart on the same state folder.

mod common;

use adacompress::config::Config;
use adacompress::demo::{self, DemoConfig};
use adacompress::learn::online::Online;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agreement_drops_after_the_change_retraining_recovers_it_and_survives_a_restart() {
    let state = temp_dir("drift-state");
    let cfg = DemoConfig {
        photos: root().join("data/photos"),
        checkpoint: root().join("models/agent.json"),
        state_dir: state.clone(),
        day: 230,
        night: 300,
        window: 20,
        base: Config::default(),
        warmup: true,
        progress: false,
    };
    let r = demo::run(cfg).await.expect("demo runs");
    eprintln!("{}", demo::table(&r));
    let day = &r.spans[0];
    // Retraining started after the change, and the agent came back to inference.
    let detect = r
        .photos_to_detect
        .expect("retraining started after the change");
    let recover = r.photos_to_recover.expect("the agent recovered");
    assert!(recover > detect);
    assert!(
        recover <= 300,
        "recovered within 300 photos of the change: {recover}"
    );
    // Agreement dropped before retraining...
    let before = &r.spans[1];
    assert_eq!(before.name, "night, before retraining");
    assert!(
        before.agreement < day.agreement,
        "night {} !< day {}",
        before.agreement,
        day.agreement
    );
    // ... and is back to at least 95 % of the day's afterwards.
    let ratio = r.recovered_ratio.expect("ratio after recovery");
    assert!(ratio >= 0.95, "recovered to {ratio} of the day's agreement");
    // Estimation stayed cheap in the steady day state.
    assert!(day.estimation_share < 0.10, "{}", day.estimation_share);
    assert!(r.agent_version_end > 2, "new heads were swapped in");

    // A restart finds the retrained agent, the memory and the estimator where they were.
    let online = Online::open(
        &root().join("models/agent.json"),
        &state,
        Config::default().estimator,
        1,
    )
    .expect("reopen");
    let st = online.status();
    assert_eq!(st.version, r.agent_version_end);
    assert!(st.memory > 0, "the memory buffer survived");
    assert!(st.estimates > 0, "the estimator survived");
    assert_eq!(st.retrains as usize, r.recover_events.len());
    assert!(st.checkpoint.is_some_and(|p| p.starts_with(&state)));
    online.shutdown();
}
