//! The proxy's Prometheus metrics (names and labels as DESIGN §7 and `deploy/` expect).
//!
//! Base units, `_total` counters (the client library appends the suffix), histograms with
//! explicit buckets. Label values are bounded sets (protocol names, status codes, stage
//! and reason names): nothing a client controls becomes a label.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolStatus {
    pub protocol: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabel {
    pub protocol: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    pub stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

/// An action of the agent's action set (`q85@768`, `keep`): a bounded set from the checkpoint.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabel {
    pub action: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0,
        10.0, 30.0,
    ])
}

/// Every metric the proxy exports.
#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<ProtocolStatus, Counter>,
    pub request_duration: Family<ProtocolLabel, Histogram, fn() -> Histogram>,
    pub stage_duration: Family<StageLabel, Histogram, fn() -> Histogram>,
    pub bytes_in: Family<ProtocolLabel, Counter>,
    pub bytes_out: Family<ProtocolLabel, Counter>,
    pub chosen_quality: Histogram,
    pub passthrough: Family<ReasonLabel, Counter>,
    pub upstream_errors: Family<KindLabel, Counter>,
    pub unrouted: Family<ReasonLabel, Counter>,
    pub estimation_uploads: Counter,
    pub estimation_bytes: Counter,
    pub fitted_to_limit: Counter,
    pub estimation_skipped: Family<ReasonLabel, Counter>,
    /// Requests sent a second time as sent because the cloud was unsure of the answer at
    /// the live pair, by outcome (`answered`: the client got the original's answer).
    pub reasks: Family<OutcomeLabel, Counter>,
    /// Image bytes of those second uploads (also in `image_bytes_out`).
    pub reask_bytes: Counter,
    pub agent_state: Family<StateLabel, Gauge>,
    pub agent_version: Gauge,
    pub pair_served: Family<ActionLabel, Gauge>,
    pub pair_lower: Family<ActionLabel, FloatGauge>,
    pub pair_upper: Family<ActionLabel, FloatGauge>,
    pub pair_audited: Family<ActionLabel, Gauge>,
    pub pair_certified: Gauge,
    pub pair_audits: Counter,
    pub pair_drifts: Counter,
    pub pair_default_stepups: Counter,
    pub pair_margin_alarms: Counter,
    pub pair_probes: Counter,
    pub pair_deviations: Counter,
    pub pair_trials_failed: Counter,
    pub pair_relearns: Counter,
    pub pair_deviation_threshold: FloatGauge,
    pub pair_target: FloatGauge,
    pub pair_estimation_share: FloatGauge,
    pub inflight: Gauge,
    pub busy_workers: Gauge,
    pub connections: Gauge,
    pub refused_connections: Counter,
    pub slow_clients: Family<KindLabel, Counter>,
    pub ready: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Why an image, or a whole request, went up as the client sent it: the one list of
/// reasons, each counted in `adacompress_passthrough_total{reason}` and named in
/// `X-AdaCompress-Action` as `original:REASON`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passthrough {
    /// The path matches no API the proxy knows, and `[upstreams].default` takes it.
    UnknownPath,
    /// A request of a known API that the proxy does not compress (another Rekognition
    /// operation, KServe/Triton or TorchServe health and metadata): its API's upstream gets it.
    OtherOperation,
    /// `X-AdaCompress-Bypass: 1`.
    Bypass,
    /// A signed Rekognition body, and no credentials to re-sign a changed one.
    NoCredentials,
    /// The body does not parse as the API it claims to speak.
    Unparsable,
    /// The image is a URL the cloud fetches itself.
    RemoteImage,
    /// The request carries no image.
    NoImage,
    /// No agent is loaded and nothing is forced or fixed.
    NoAgent,
    /// Every worker busy and the queue (`proxy.cpu_queue`) full.
    Saturated,
    /// No worker within `limits.worker_wait_secs`.
    WorkerWait,
    /// More images than the API's maximum or `limits.max_images_per_request`.
    TooManyImages,
    /// More values (JSON values, form fields, KServe elements) than the parsers build a
    /// structure for (the body would cost many times its size in memory).
    TooComplex,
    /// Over `proxy.max_body_bytes` or `limits.max_pixels`.
    TooLarge,
    /// Long side over `limits.max_aspect` × short side.
    TooThin,
    /// More JPEG scans than `limits.max_scans`.
    TooManyScans,
    /// The JPEG decode ran past `limits.max_decode_ms`.
    DecodeTimeout,
    /// The image does not decode.
    DecodeError,
    /// The re-encode was not smaller than the original.
    NotSmaller,
    /// The client hung up before its images were compressed.
    Abandoned,
    /// Anything else that went wrong (logged with details).
    Error,
}

impl Passthrough {
    /// The label value and the header word.
    pub fn as_str(self) -> &'static str {
        match self {
            Passthrough::UnknownPath => "unknown_path",
            Passthrough::OtherOperation => "other_operation",
            Passthrough::Bypass => "bypass",
            Passthrough::NoCredentials => "no_credentials",
            Passthrough::Unparsable => "unparsable",
            Passthrough::RemoteImage => "remote_image",
            Passthrough::NoImage => "no_image",
            Passthrough::NoAgent => "no_agent",
            Passthrough::Saturated => "saturated",
            Passthrough::WorkerWait => "worker_wait",
            Passthrough::TooManyImages => "too_many_images",
            Passthrough::TooComplex => "too_complex",
            Passthrough::TooLarge => "too_large",
            Passthrough::TooThin => "too_thin",
            Passthrough::TooManyScans => "too_many_scans",
            Passthrough::DecodeTimeout => "decode_timeout",
            Passthrough::DecodeError => "decode_error",
            Passthrough::NotSmaller => "not_smaller",
            Passthrough::Abandoned => "abandoned",
            Passthrough::Error => "error",
        }
    }

    /// Why an image that did not decode went up as sent.
    pub fn of_codec(e: &crate::codec::CodecError) -> Passthrough {
        use crate::codec::CodecError as E;
        match e {
            E::TooManyBytes { .. } | E::TooManyPixels { .. } => Passthrough::TooLarge,
            E::TooThin { .. } => Passthrough::TooThin,
            E::TooManyScans { .. } => Passthrough::TooManyScans,
            E::DecodeTimeout { .. } => Passthrough::DecodeTimeout,
            E::UnknownFormat(_) | E::Empty | E::Corrupt { .. } => Passthrough::DecodeError,
            E::Encode(_) => Passthrough::Error,
        }
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            stage_duration: Family::new_with_constructor(latency_histogram),
            bytes_in: Family::default(),
            bytes_out: Family::default(),
            chosen_quality: Histogram::new([
                5.0, 15.0, 25.0, 35.0, 45.0, 55.0, 65.0, 75.0, 85.0, 95.0, 100.0,
            ]),
            passthrough: Family::default(),
            upstream_errors: Family::default(),
            unrouted: Family::default(),
            estimation_uploads: Counter::default(),
            estimation_bytes: Counter::default(),
            fitted_to_limit: Counter::default(),
            estimation_skipped: Family::default(),
            reasks: Family::default(),
            reask_bytes: Counter::default(),
            agent_state: Family::default(),
            agent_version: Gauge::default(),
            pair_served: Family::default(),
            pair_lower: Family::default(),
            pair_upper: Family::default(),
            pair_audited: Family::default(),
            pair_certified: Gauge::default(),
            pair_audits: Counter::default(),
            pair_drifts: Counter::default(),
            pair_default_stepups: Counter::default(),
            pair_margin_alarms: Counter::default(),
            pair_probes: Counter::default(),
            pair_deviations: Counter::default(),
            pair_trials_failed: Counter::default(),
            pair_relearns: Counter::default(),
            pair_deviation_threshold: FloatGauge::default(),
            pair_target: FloatGauge::default(),
            pair_estimation_share: FloatGauge::default(),
            inflight: Gauge::default(),
            busy_workers: Gauge::default(),
            connections: Gauge::default(),
            refused_connections: Counter::default(),
            slow_clients: Family::default(),
            ready: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "adacompress_requests",
            "Proxied requests by protocol (or `other`) and the status returned to the client.",
            m.requests.clone(),
        );
        registry.register(
            "adacompress_request_duration_seconds",
            "Time from receiving a request to answering it.",
            m.request_duration.clone(),
        );
        registry.register(
            "adacompress_stage_duration_seconds",
            "Time per stage: decode, infer (agent), encode, upstream.",
            m.stage_duration.clone(),
        );
        registry.register(
            "adacompress_image_bytes_in",
            "Bytes of the images as clients sent them.",
            m.bytes_in.clone(),
        );
        registry.register(
            "adacompress_image_bytes_out",
            "Bytes of the images as uploaded on the request path (estimation uploads excluded).",
            m.bytes_out.clone(),
        );
        registry.register(
            "adacompress_chosen_quality",
            "JPEG quality uploaded per image; 100 = the original was kept.",
            m.chosen_quality.clone(),
        );
        registry.register(
            "adacompress_passthrough",
            "Images uploaded as the client sent them, by reason.",
            m.passthrough.clone(),
        );
        registry.register(
            "adacompress_upstream_errors",
            "Upstream exchanges that failed: timeout (504), connect (502), other (502).",
            m.upstream_errors.clone(),
        );
        registry.register(
            "adacompress_unrouted_requests",
            "Requests the proxy answered itself, never forwarded: unknown_path (no configured API \
             matches and no [upstreams].default, 404), no_upstream_for_api (the API has no upstream, \
             404), method_not_allowed (CONNECT, TRACE: 405).",
            m.unrouted.clone(),
        );
        registry.register(
            "adacompress_fitted_to_limit",
            "Images made smaller than chosen because they exceeded the API's documented size limit.",
            m.fitted_to_limit.clone(),
        );
        registry.register(
            "adacompress_estimation_uploads",
            "Extra uploads made to estimate the agent's agreement (off the request path).",
            m.estimation_uploads.clone(),
        );
        registry.register(
            "adacompress_estimation_bytes",
            "Image bytes of the extra estimation uploads.",
            m.estimation_bytes.clone(),
        );
        registry.register(
            "adacompress_estimation_skipped",
            "Audits skipped: busy (no estimation slot or CPU worker free) or error.",
            m.estimation_skipped.clone(),
        );
        registry.register(
            "adacompress_reasks",
            "Requests also sent as sent because the cloud's answer at the live pair was unsure (pair.reask_rate), by outcome: answered (the client got the original's answer), upstream_status or upstream_error (the client got the first answer).",
            m.reasks.clone(),
        );
        registry.register(
            "adacompress_reask_bytes",
            "Image bytes of the re-asked originals (also counted in adacompress_image_bytes_out).",
            m.reask_bytes.clone(),
        );
        registry.register(
            "adacompress_agent_state",
            "1 for the agent's current state (inference; estimate while audits are in flight).",
            m.agent_state.clone(),
        );
        registry.register(
            "adacompress_agent_version",
            "Version of the loaded agent checkpoint.",
            m.agent_version.clone(),
        );
        registry.register(
            "adacompress_pair_served",
            "1 for the (max side, quality) pair every image goes up at now (the live pair).",
            m.pair_served.clone(),
        );
        registry.register(
            "adacompress_pair_lower_bound",
            "One-sided lower confidence bound on each audited pair's top-1 agreement with the original.",
            m.pair_lower.clone(),
        );
        registry.register(
            "adacompress_pair_upper_bound",
            "One-sided upper confidence bound on each audited pair's top-1 agreement (below the target: ruled out).",
            m.pair_upper.clone(),
        );
        registry.register(
            "adacompress_pair_window_audits",
            "Audits of each pair in the current window.",
            m.pair_audited.clone(),
        );
        registry.register(
            "adacompress_pair_certified",
            "1 when the served pair's lower bound clears pair.target_agreement (0: the default is served).",
            m.pair_certified.clone(),
        );
        registry.register(
            "adacompress_pair_audits",
            "Audits made (the original and candidate pairs uploaded beside an image).",
            m.pair_audits.clone(),
        );
        registry.register(
            "adacompress_pair_drifts",
            "Times the served pair's agreement dropped and the learner stepped up and re-learned.",
            m.pair_drifts.clone(),
        );
        registry.register(
            "adacompress_pair_default_stepups",
            "Times the uncertified default's own audits put it below pair.target_agreement and it stepped up.",
            m.pair_default_stepups.clone(),
        );
        registry.register(
            "adacompress_pair_margin_alarms",
            "Times a shift of the cloud's top-1 margins (before any audit failed) made the learner re-learn.",
            m.pair_margin_alarms.clone(),
        );
        registry.register(
            "adacompress_pair_probes",
            "Times a stepped-up default stepped back down to be checked again on fresh audits (pair.probe_images).",
            m.pair_probes.clone(),
        );
        registry.register(
            "adacompress_pair_deviations",
            "Images sent at their deviation candidate (a pair cheaper than the served one) because the audits back the head's prediction for it.",
            m.pair_deviations.clone(),
        );
        registry.register(
            "adacompress_pair_trials_failed",
            "Probes whose pair failed its trial (pair.probe_trial_audits) and stepped back up.",
            m.pair_trials_failed.clone(),
        );
        registry.register(
            "adacompress_pair_relearns",
            "Operator relearns (POST /agent/relearn on the admin port).",
            m.pair_relearns.clone(),
        );
        registry.register(
            "adacompress_pair_deviation_threshold",
            "The head's predicted agreement an image's candidate needs to deviate (tuned from audits; 2 = deviations off).",
            m.pair_deviation_threshold.clone(),
        );
        registry.register(
            "adacompress_pair_target_agreement",
            "pair.target_agreement: the top-1 agreement a pair must be certified for (compare with the bounds).",
            m.pair_target.clone(),
        );
        registry.register(
            "adacompress_pair_estimation_share",
            "Estimation bytes over the bytes served since start-up.",
            m.pair_estimation_share.clone(),
        );
        registry.register(
            "adacompress_inflight_requests",
            "Requests being handled.",
            m.inflight.clone(),
        );
        registry.register(
            "adacompress_busy_workers",
            "Compression jobs running on the CPU pool (including ones whose client hung up).",
            m.busy_workers.clone(),
        );
        registry.register(
            "adacompress_client_connections",
            "Open client connections on the proxy listener.",
            m.connections.clone(),
        );
        registry.register(
            "adacompress_refused_connections",
            "Client connections refused with 503 because proxy.max_connections were open.",
            m.refused_connections.clone(),
        );
        registry.register(
            "adacompress_slow_clients",
            "Clients cut off: header (proxy.header_read_timeout_secs) or body (proxy.body_read_timeout_secs).",
            m.slow_clients.clone(),
        );
        registry.register(
            "adacompress_ready",
            "1 when the agent is loaded and the proxy is not draining.",
            m.ready.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Counts an image (or a whole request) that went up as sent.
    pub fn passthrough(&self, reason: Passthrough) {
        self.passthrough
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Counts a request answered by the proxy itself because it goes nowhere
    /// (`unknown_path`, `no_upstream_for_api`, `method_not_allowed`).
    pub fn unrouted(&self, reason: &'static str) {
        self.unrouted.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Records a stage duration.
    pub fn stage(&self, stage: &'static str, seconds: f64) {
        self.stage_duration
            .get_or_create(&StageLabel { stage })
            .observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_the_documented_names() {
        let m = Metrics::new();
        m.requests
            .get_or_create(&ProtocolStatus {
                protocol: "google".into(),
                status: 200,
            })
            .inc();
        m.passthrough(Passthrough::Bypass);
        m.unrouted("unknown_path");
        m.stage("decode", 0.003);
        m.chosen_quality.observe(35.0);
        m.pair_target.set(0.97);
        let text = m.render();
        for name in [
            "adacompress_requests_total{protocol=\"google\",status=\"200\"} 1",
            "adacompress_passthrough_total{reason=\"bypass\"} 1",
            "adacompress_unrouted_requests_total{reason=\"unknown_path\"} 1",
            "adacompress_stage_duration_seconds_bucket{le=\"0.005\",stage=\"decode\"} 1",
            "adacompress_chosen_quality_bucket{le=\"35.0\"} 1",
            "adacompress_pair_target_agreement 0.97",
            "adacompress_estimation_bytes_total 0",
            "adacompress_ready 0",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }
}
