//! `adacompress serve` settings: one TOML file, then `ADACOMPRESS_SECTION__KEY` environment
//! overrides, then command-line flags. Every key has a default, so an empty file (or none)
//! is a valid configuration once an upstream is named.
//!
//! Errors name the key, the value and what was expected, and say where the value came from
//! (the file, the environment variable, the flag or the default), e.g.
//! `pair.target_agreement = 2 (from ADACOMPRESS_PAIR__TARGET_AGREEMENT): must be in 0..=1`; a
//! check between two keys names both origins (`agent.min_quality = 5 (the default;
//! agent.max_quality from ADACOMPRESS_AGENT__MAX_QUALITY)`). A variable naming an unknown
//! section or key is refused like an unknown key in the file (`ADACOMPRESS_*` names without
//! `__`, such as `ADACOMPRESS_ADMIN_TOKEN`, are not config keys and are left alone).
//!
//! The overlay is hand-written rather than `figment`'s because what it must do is small
//! and specific: every error, including the checks between keys made after deserializing
//! and the `--upstream` flag, says where its value came from (`Origins`, one map filled
//! while layering); the merged document goes through serde once with
//! `deny_unknown_fields`, so unknown keys are refused wherever they came from; and the
//! layering is one short loop in [`Config::load`].
//!
//! Upstreams are a table of protocol → URL (`[upstreams] google = "https://…"`), so the
//! environment can set them like any other key (`ADACOMPRESS_UPSTREAMS__GOOGLE=…`). The URL
//! `local` starts the built-in vision backend in the process, on loopback. One key of the
//! table is not a protocol: `default` ([`DEFAULT_UPSTREAM`]), where requests that match no
//! configured API go untouched; without it they get a 404.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::protocol::Protocol;

/// The `[upstreams]` key that is not a protocol: the upstream for requests no configured
/// API matches (`[upstreams] default = "http://…"`). Without it they get a 404.
pub const DEFAULT_UPSTREAM: &str = "default";

/// Environment variables with this prefix override config keys.
pub const ENV_PREFIX: &str = "ADACOMPRESS_";

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub proxy: ProxyConfig,
    /// Protocol name → upstream base URL (`https://vision.googleapis.com`) or `local`; and
    /// [`DEFAULT_UPSTREAM`] → the base URL for requests no configured API matches.
    pub upstreams: BTreeMap<String, String>,
    pub agent: AgentConfig,
    pub limits: LimitsConfig,
    pub estimator: EstimatorConfig,
    /// `[pair]`: how the live pair is learned (calibrated checkpoints).
    pub pair: crate::learn::pair::PairConfig,
    pub state: StateConfig,
    pub aws: AwsConfig,
    pub log: LogConfig,
    /// Retired keys the file or the environment still set ([`RETIRED_ESTIMATOR_KEYS`]),
    /// each with where it came from: ignored, and logged by `serve` as a warning.
    #[serde(skip)]
    pub ignored: Vec<String>,
}

/// `[proxy]`: listeners, body limit, timeouts, CPU pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Largest request body accepted; larger gets 413 naming this key.
    pub max_body_bytes: usize,
    /// Whole upstream exchange; beyond it the client gets 504.
    pub upstream_timeout_secs: f64,
    /// TCP/TLS connect to the upstream; failing it gives 502.
    pub connect_timeout_secs: f64,
    /// On SIGTERM, how long in-flight requests may take to finish.
    pub drain_secs: f64,
    /// Images compressed at the same time (0 = one per core).
    pub cpu_workers: usize,
    /// Images allowed to wait for a worker; beyond that the original goes through.
    pub cpu_queue: usize,
    /// A client must send a request's whole header within this time (also the idle time
    /// allowed between requests on a keep-alive connection); then the connection is closed.
    pub header_read_timeout_secs: f64,
    /// A client must send the whole body within this time; beyond it, 408.
    pub body_read_timeout_secs: f64,
    /// Open client connections on the proxy listener; beyond it a new connection gets
    /// 503 and is closed (the admin listener has its own, separate allowance).
    pub max_connections: usize,
    /// Request bodies held in memory at once, summed over all requests (each counted at its
    /// declared length, or at `max_body_bytes` when it declares none); a request that does
    /// not fit within a second gets 503. Bounds memory under many large concurrent uploads.
    pub max_inflight_body_bytes: usize,
    /// A file holding the bearer token the admin listener's mutating endpoints require
    /// (`ADACOMPRESS_ADMIN_TOKEN` in the environment wins). Without one, they are allowed
    /// only while `admin_listen` is a loopback address.
    pub admin_token_file: Option<PathBuf>,
    /// A PEM file of CA certificates trusted for `https://` upstreams besides the built-in
    /// (webpki) roots, for both the HTTP/1.1 and the gRPC (HTTP/2) client: a self-hosted
    /// KServe/Triton or gateway behind an internal CA. Read at start-up; a file that cannot
    /// be read or holds no usable certificate stops `serve` with an error naming this key.
    pub upstream_ca_file: Option<PathBuf>,
}

/// `[agent]`: which learned agent decides, and clamps on what it may pick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Shipped checkpoint used when the state directory has no learned one yet.
    pub checkpoint: PathBuf,
    /// Lowest JPEG quality the proxy will upload (imgproxy-style clamp).
    pub min_quality: u8,
    /// Highest JPEG quality; a forced quality is clamped too.
    pub max_quality: u8,
    /// A fixed action for every image instead of the agent (`"q85@768"`, `"q75"`): the
    /// baseline to compare with, and what an operator falls back to. `adacompress eval`
    /// names the best fixed pair of a workload.
    pub fixed: Option<String>,
}

impl AgentConfig {
    /// The configured fixed action, if any (validated at load).
    pub fn fixed_action(&self) -> Option<crate::action::Action> {
        self.fixed.as_deref().and_then(crate::action::Action::parse)
    }
}

/// `[limits]`: decode guards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest image (width × height) decoded, checked from the header.
    pub max_pixels: u64,
    /// Largest long side : short side ratio of an image the proxy decodes.
    pub max_aspect: u32,
    /// Most scans a JPEG may have (progressive scan bombs), counted before decoding.
    pub max_scans: u32,
    /// Wall-clock budget of one JPEG decode in ms; a slower decode is cut off and the
    /// image goes up as sent, counted as `decode_timeout`.
    pub max_decode_ms: u32,
    /// Images compressed per request, besides each API's own documented maximum; a request
    /// with more goes up as sent (the cloud answers it), counted as `too_many_images`.
    pub max_images_per_request: usize,
    /// How long an image may wait for a CPU worker before it goes up as sent.
    pub worker_wait_secs: f64,
    /// Largest upstream answer relayed; a larger one gets 502 in the API's error shape.
    pub max_answer_bytes: usize,
    /// `X-AdaCompress-Action` lists at most this many images, then summarises.
    pub max_header_images: usize,
    /// Most JSON values parsed from one body (request or answer); more: `too_complex`.
    pub max_json_values: usize,
    /// Most fields parsed from one form body (Baidu); more: `too_complex`.
    pub max_form_fields: usize,
    /// Most KServe `BYTES` elements parsed from one request; more: `too_complex`.
    pub max_tensor_elements: usize,
}

/// `[estimator]`: the live pair's audits (uploads of the original and candidate pairs
/// beside a sample of images, off the request path, see [`crate::learn::pair`]).
///
/// The keys of the paper's inference → estimate → retrain loop, which `serve` no longer
/// runs, are [`RETIRED_ESTIMATOR_KEYS`]: still accepted, with a warning, and ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EstimatorConfig {
    /// Audit at all (`false`: the live pair stays at the shipped prior).
    pub enabled: bool,
    /// How an audited answer is compared with the original's.
    pub accuracy: crate::learn::Accuracy,
}

impl Default for EstimatorConfig {
    fn default() -> Self {
        EstimatorConfig {
            enabled: true,
            accuracy: crate::learn::Accuracy::Top1,
        }
    }
}

/// `[estimator]` keys only the Q-head agent's online loop used (removed from `serve`, issue
/// 15). A config that still sets one loads: the key is dropped and named in
/// [`Config::ignored`], which `serve` logs as a warning.
pub const RETIRED_ESTIMATOR_KEYS: &[&str] = &[
    "p_est_initial",
    "p_est_min",
    "p_est_max",
    "window",
    "accuracy_threshold",
    "recovered_accuracy",
    "reward_threshold",
    "size_weight",
    "slope_gain",
    "budget_bytes_per_minute",
    "explore_images",
    "learn_every",
    "memory",
    "batch",
    "steps_per_learn",
    "target_agreement",
    "retrain_probes",
    "retrain_serves",
];

/// `[state]`: where learned state lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// Holds `state.sqlite` (the live pair).
    pub dir: PathBuf,
}

/// `[aws]`: the proxy's own credentials for re-signing Rekognition requests. Prefer the
/// standard `AWS_*` environment variables or a mounted secret; never commit keys.
///
/// The secret key and session token are `secrecy::SecretString`s from the moment they are
/// read (exposed only where the signing identity is built, `proxy::resign_from_config`);
/// the key id is not secret but is hidden in `Debug` all the same. Not `Serialize`: a
/// config is never written back out with its secrets.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsConfig {
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<SecretString>,
    pub session_token: Option<SecretString>,
    /// Which Rekognition requests the proxy signs with its own identity: `"any"` (a
    /// pod-local sidecar: whoever reaches the listener is the app) or `"verified"` (only
    /// requests whose client signature verifies). `None`: not set, so `"any"` while every
    /// listener is on loopback and a refusal to start otherwise ([`Config::check_resign`]).
    pub resign: Option<ResignPolicy>,
    /// Under `"verified"`, the client keys accepted besides the proxy's own.
    pub clients: Vec<AwsClientKey>,
}

/// `aws.resign`: the trust model of Rekognition re-signing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ResignPolicy {
    /// Every Rekognition request is re-signed with the proxy's credentials.
    Any,
    /// Only requests whose SigV4 signature (made for the proxy) verifies against a known
    /// key; the rest get Rekognition's 403 and never go up.
    Verified,
}

impl ResignPolicy {
    /// The value as written in the config.
    pub fn name(self) -> &'static str {
        match self {
            ResignPolicy::Any => "any",
            ResignPolicy::Verified => "verified",
        }
    }
}

/// One `[[aws.clients]]` entry: a key a client may sign its requests to the proxy with.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsClientKey {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
}

impl PartialEq for AwsClientKey {
    fn eq(&self, other: &Self) -> bool {
        self.access_key_id == other.access_key_id
            && self.secret_access_key.expose_secret() == other.secret_access_key.expose_secret()
    }
}

impl fmt::Debug for AwsClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsClientKey")
            .field("access_key_id", &"***")
            .field("secret_access_key", &"***")
            .finish()
    }
}

impl PartialEq for AwsConfig {
    fn eq(&self, other: &Self) -> bool {
        let same = |a: &Option<SecretString>, b: &Option<SecretString>| match (a, b) {
            (Some(a), Some(b)) => a.expose_secret() == b.expose_secret(),
            (None, None) => true,
            _ => false,
        };
        self.region == other.region
            && self.access_key_id == other.access_key_id
            && same(&self.secret_access_key, &other.secret_access_key)
            && same(&self.session_token, &other.session_token)
            && self.resign == other.resign
            && self.clients == other.clients
    }
}

impl fmt::Debug for AwsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsConfig")
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id.as_ref().map(|_| "***"))
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "***"),
            )
            .field("session_token", &self.session_token.as_ref().map(|_| "***"))
            .field("resign", &self.resign)
            .field("clients", &self.clients)
            .finish()
    }
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `json` (one object per line) or `text`.
    pub format: String,
    /// A tracing filter, e.g. `info` or `adacompress=debug`.
    pub level: String,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            max_body_bytes: 20 * 1024 * 1024,
            upstream_timeout_secs: 30.0,
            connect_timeout_secs: 5.0,
            drain_secs: 20.0,
            cpu_workers: 0,
            cpu_queue: 16,
            header_read_timeout_secs: 10.0,
            body_read_timeout_secs: 30.0,
            max_connections: 512,
            max_inflight_body_bytes: 256 * 1024 * 1024,
            admin_token_file: None,
            upstream_ca_file: None,
        }
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            checkpoint: PathBuf::from("models/agent-calibrated.json"),
            min_quality: 5,
            max_quality: 95,
            fixed: None,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let codec = crate::codec::Limits::default();
        LimitsConfig {
            max_pixels: codec.max_pixels,
            max_aspect: codec.max_aspect,
            max_scans: codec.max_scans,
            max_decode_ms: codec.max_decode_ms,
            max_images_per_request: 16,
            worker_wait_secs: 1.0,
            max_answer_bytes: 32 * 1024 * 1024,
            max_header_images: 32,
            max_json_values: crate::protocol::MAX_JSON_VALUES,
            max_form_fields: crate::protocol::MAX_FORM_FIELDS,
            max_tensor_elements: crate::protocol::kserve::MAX_ELEMENTS,
        }
    }
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            dir: PathBuf::from("state"),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: "json".to_owned(),
            level: "info".to_owned(),
        }
    }
}

/// A configuration problem; the message names the key and the value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("{key} = {value} ({origin}): {message}")]
    Invalid {
        key: String,
        value: String,
        origin: String,
        message: String,
    },
}

/// Where each key's value came from, for error messages: an environment variable (or a
/// flag), the file, or the default.
#[derive(Debug, Default, Clone)]
struct Origins {
    /// `section.key` → `from ADACOMPRESS_SECTION__KEY` (or `from --upstream`).
    set: BTreeMap<String, String>,
    /// The file's name and the `section.key`s it sets (a section that is not a table
    /// counts as its own key), when there is a file.
    file: Option<(String, BTreeSet<String>)>,
}

impl Origins {
    fn in_file(&self, key: &str) -> Option<String> {
        let (name, keys) = self.file.as_ref()?;
        let section = key.split('.').next().unwrap_or(key);
        (keys.contains(key) || keys.contains(section)).then(|| format!("from {name}"))
    }

    /// Where `key`'s value came from.
    fn of(&self, key: &str) -> String {
        self.set
            .get(key)
            .cloned()
            .or_else(|| self.in_file(key))
            .unwrap_or_else(|| "the default".to_owned())
    }

    /// Where `key`'s value came from, and `other`'s when it differs: for checks between
    /// two keys (`min_quality` ≤ `max_quality`), which either of them may have broken.
    fn of_pair(&self, key: &str, other: &str) -> String {
        let (a, b) = (self.of(key), self.of(other));
        if a == b {
            a
        } else {
            format!("{a}; {other} {b}")
        }
    }

    /// Where a value that failed to deserialize at `path` came from. Never the default
    /// (defaults deserialize): the variable or the file that set the key, else every
    /// variable under `path` (an error about a whole section), else the file.
    fn of_parse(&self, path: &str) -> String {
        if let Some(o) = self.set.get(path).cloned().or_else(|| self.in_file(path)) {
            return o;
        }
        let under: Vec<&str> = self
            .set
            .iter()
            .filter(|(k, _)| path == "." || k.starts_with(&format!("{path}.")))
            .map(|(_, o)| o.as_str())
            .collect();
        match (&self.file, under.is_empty()) {
            (_, false) => under.join(", "),
            (Some((name, _)), true) => format!("from {name}"),
            (None, true) => "from the environment".to_owned(),
        }
    }
}

/// An upstream the proxy forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub protocol: Protocol,
    /// Base URL without a trailing slash, or `local`.
    pub url: String,
}

impl Config {
    /// `aws.resign` as it applies: the configured policy, else `"any"`.
    pub fn resign_policy(&self) -> ResignPolicy {
        self.aws.resign.unwrap_or(ResignPolicy::Any)
    }

    /// Refuses an implicit `aws.resign = "any"` when a Rekognition upstream is configured
    /// and a listener (`proxy.listen` or `proxy.admin_listen`) is not on loopback: whoever
    /// reaches such a listener would sign with the proxy's AWS identity. Checked once the
    /// flags are applied (they may move a listener).
    pub fn check_resign(&self) -> Result<(), ConfigError> {
        let p = &self.proxy;
        let exposed = [p.listen, p.admin_listen]
            .into_iter()
            .find(|a| !a.ip().is_loopback());
        let rekognition = self
            .upstream_list()
            .iter()
            .any(|u| u.protocol == Protocol::Rekognition);
        match (self.aws.resign, exposed) {
            (None, Some(addr)) if rekognition => Err(ConfigError::Invalid {
                key: "aws.resign".to_owned(),
                value: "\"any\"".to_owned(),
                origin: "the default".to_owned(),
                message: format!(
                    "a listener is on {addr}, not loopback: anyone who reaches it would sign \
                     Rekognition requests with the proxy's AWS identity; set aws.resign = \
                     \"verified\" (clients must sign for the proxy), or aws.resign = \"any\" \
                     explicitly (ADACOMPRESS_AWS__RESIGN=any) if only the app can reach it"
                ),
            }),
            _ => Ok(()),
        }
    }

    /// Reads `path` (if given), applies `ADACOMPRESS_*` variables from `env`, and validates.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let file_name = path.map_or("defaults".to_owned(), |p| p.display().to_string());
        let mut doc: toml::Table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::Parse {
                        origin: file_name.clone(),
                        message: e.to_string(),
                    })?
            }
            None => toml::Table::new(),
        };
        let mut origins = Origins {
            set: BTreeMap::new(),
            file: path.map(|_| {
                let keys = doc
                    .iter()
                    .flat_map(|(section, value)| match value.as_table() {
                        Some(t) => t.keys().map(|k| format!("{section}.{k}")).collect(),
                        None => vec![section.clone()],
                    });
                (file_name.clone(), keys.collect())
            }),
        };
        for (name, value) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let Some((section, key)) = rest.split_once("__") else {
                continue;
            };
            let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
            let table = doc
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let Some(table) = table.as_table_mut() else {
                return Err(ConfigError::Parse {
                    origin: format!("from {name}"),
                    message: format!("`{section}` is not a table in {file_name}"),
                });
            };
            table.insert(key.clone(), env_value(&value));
            origins
                .set
                .insert(format!("{section}.{key}"), format!("from {name}"));
        }
        let mut ignored = Vec::new();
        if let Some(estimator) = doc.get_mut("estimator").and_then(|v| v.as_table_mut()) {
            for key in RETIRED_ESTIMATOR_KEYS {
                if estimator.remove(*key).is_some() {
                    let key = format!("estimator.{key}");
                    let origin = origins.of(&key);
                    ignored.push(format!("{key} ({origin})"));
                }
            }
        }
        let mut config: Config = serde_path_to_error::deserialize(toml::Value::Table(doc))
            .map_err(|e: serde_path_to_error::Error<toml::de::Error>| {
                let key = e.path().to_string();
                let origin = origins.of_parse(&key);
                ConfigError::Parse {
                    origin,
                    message: format!("{key}: {}", e.inner().message()),
                }
            })?;
        config.validate(&origins)?;
        config.ignored = ignored;
        Ok(config)
    }

    fn validate(&self, origins: &Origins) -> Result<(), ConfigError> {
        let bad = |key: &str, value: String, message: &str| ConfigError::Invalid {
            key: key.to_owned(),
            value,
            origin: origins.of(key),
            message: message.to_owned(),
        };
        // A check between two keys: either may be the one that was set.
        let bad_pair =
            |key: &str, value: String, other: &str, message: &str| ConfigError::Invalid {
                key: key.to_owned(),
                value,
                origin: origins.of_pair(key, other),
                message: message.to_owned(),
            };
        let pc = &self.pair;
        for (key, v) in [
            ("pair.target_agreement", pc.target_agreement),
            ("pair.max_audit_rate", pc.max_audit_rate),
            ("pair.budget_share", pc.budget_share),
            ("pair.reask_rate", pc.reask_rate),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(bad(key, v.to_string(), "must be in 0..=1"));
            }
        }
        if !(0.0..=10.0).contains(&pc.learn_share) {
            return Err(bad(
                "pair.learn_share",
                pc.learn_share.to_string(),
                "must be in 0..=10",
            ));
        }
        if !(0.0..=100.0).contains(&pc.margin_alarm_sigmas) {
            return Err(bad(
                "pair.margin_alarm_sigmas",
                pc.margin_alarm_sigmas.to_string(),
                "must be in 0..=100 (0 = off)",
            ));
        }
        for (key, z) in [
            ("pair.confidence_z", pc.confidence_z),
            ("pair.check_z", pc.check_z),
            ("pair.hold_z", pc.hold_z),
        ] {
            if !(0.0..=5.0).contains(&z) {
                return Err(bad(key, z.to_string(), "must be in 0..=5"));
            }
        }
        for (key, v) in [
            ("pair.window", pc.window),
            ("pair.drift_window", pc.drift_window),
            ("pair.drift_failures", pc.drift_failures),
            ("pair.check_min_audits", pc.check_min_audits),
        ] {
            if v == 0 {
                return Err(bad(key, "0".into(), "must be at least 1"));
            }
        }
        let a = &self.agent;
        for (key, q) in [
            ("agent.min_quality", a.min_quality),
            ("agent.max_quality", a.max_quality),
        ] {
            if !(1..=100).contains(&q) {
                return Err(bad(key, q.to_string(), "must be in 1..=100"));
            }
        }
        if let Some(f) = &a.fixed
            && crate::action::Action::parse(f).is_none()
        {
            return Err(bad(
                "agent.fixed",
                f.clone(),
                "must be an action like \"q85@768\" (quality 1–100 at a longest side) or \"q75\"",
            ));
        }
        if a.min_quality > a.max_quality {
            return Err(bad_pair(
                "agent.min_quality",
                a.min_quality.to_string(),
                "agent.max_quality",
                &format!("must not exceed agent.max_quality = {}", a.max_quality),
            ));
        }
        let p = &self.proxy;
        if p.max_body_bytes == 0 {
            return Err(bad("proxy.max_body_bytes", "0".into(), "must be positive"));
        }
        for (key, v) in [
            ("proxy.upstream_timeout_secs", p.upstream_timeout_secs),
            ("proxy.connect_timeout_secs", p.connect_timeout_secs),
            ("proxy.drain_secs", p.drain_secs),
            ("proxy.header_read_timeout_secs", p.header_read_timeout_secs),
            ("proxy.body_read_timeout_secs", p.body_read_timeout_secs),
            ("limits.worker_wait_secs", self.limits.worker_wait_secs),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(bad(
                    key,
                    v.to_string(),
                    "must be a positive number of seconds",
                ));
            }
        }
        let l = &self.limits;
        for (key, v) in [
            ("limits.max_pixels", l.max_pixels),
            ("limits.max_aspect", u64::from(l.max_aspect)),
            ("limits.max_scans", u64::from(l.max_scans)),
            ("limits.max_decode_ms", u64::from(l.max_decode_ms)),
            (
                "limits.max_images_per_request",
                l.max_images_per_request as u64,
            ),
            ("limits.max_answer_bytes", l.max_answer_bytes as u64),
            ("limits.max_header_images", l.max_header_images as u64),
            ("limits.max_json_values", l.max_json_values as u64),
            ("limits.max_form_fields", l.max_form_fields as u64),
            ("limits.max_tensor_elements", l.max_tensor_elements as u64),
            ("proxy.max_connections", p.max_connections as u64),
        ] {
            if v == 0 {
                return Err(bad(key, "0".into(), "must be positive"));
            }
        }
        if p.max_inflight_body_bytes < p.max_body_bytes {
            return Err(bad_pair(
                "proxy.max_inflight_body_bytes",
                p.max_inflight_body_bytes.to_string(),
                "proxy.max_body_bytes",
                &format!(
                    "must be at least proxy.max_body_bytes = {}",
                    p.max_body_bytes
                ),
            ));
        }
        if !matches!(self.log.format.as_str(), "json" | "text") {
            return Err(bad(
                "log.format",
                self.log.format.clone(),
                "must be json or text",
            ));
        }
        self.upstream_list_checked(origins)?;
        Ok(())
    }

    fn upstream_list_checked(&self, origins: &Origins) -> Result<Vec<Upstream>, ConfigError> {
        self.default_upstream_checked(origins)?;
        self.upstreams
            .iter()
            .filter(|(name, _)| name.as_str() != DEFAULT_UPSTREAM)
            .map(|(name, url)| {
                let key = format!("upstreams.{name}");
                let bad = |message: String| ConfigError::Invalid {
                    key: key.clone(),
                    value: url.clone(),
                    origin: origins.of(&key),
                    message,
                };
                let protocol: Protocol = name.parse().map_err(|e| bad(format!("{e}")))?;
                let url = url.trim_end_matches('/').to_owned();
                if url != "local" && !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(bad(
                        "must be an http:// or https:// base URL, or `local`".to_owned()
                    ));
                }
                Ok(Upstream { protocol, url })
            })
            .collect()
    }

    fn default_upstream_checked(&self, origins: &Origins) -> Result<Option<String>, ConfigError> {
        let Some(url) = self.upstreams.get(DEFAULT_UPSTREAM) else {
            return Ok(None);
        };
        let key = format!("upstreams.{DEFAULT_UPSTREAM}");
        let base = url.trim_end_matches('/');
        let host = base
            .strip_prefix("http://")
            .or_else(|| base.strip_prefix("https://"));
        if host.is_none_or(str::is_empty) {
            return Err(ConfigError::Invalid {
                origin: origins.of(&key),
                key,
                value: url.clone(),
                message: "must be an http:// or https:// base URL (requests no configured API \
                          matches go there untouched; `local` speaks only the APIs)"
                    .to_owned(),
            });
        }
        Ok(Some(base.to_owned()))
    }

    /// The upstreams in a stable order (by protocol name); `default` is not among them
    /// ([`Config::default_upstream`]).
    pub fn upstream_list(&self) -> Vec<Upstream> {
        self.upstream_list_checked(&Origins::default())
            .unwrap_or_default()
    }

    /// `[upstreams].default`, without a trailing slash: where requests that match no
    /// configured API go untouched (`None`: they get a 404).
    pub fn default_upstream(&self) -> Option<String> {
        self.default_upstream_checked(&Origins::default())
            .ok()
            .flatten()
    }

    /// Sets an upstream from a `PROTOCOL=URL` flag.
    pub fn add_upstream_flag(&mut self, flag: &str) -> Result<(), ConfigError> {
        let Some((name, url)) = flag.split_once('=') else {
            return Err(ConfigError::Invalid {
                key: "--upstream".into(),
                value: flag.to_owned(),
                origin: "from the command line".into(),
                message: "expected PROTOCOL=URL, e.g. google=https://vision.googleapis.com or google=local".into(),
            });
        };
        self.upstreams.insert(name.to_owned(), url.to_owned());
        let origins = Origins {
            set: BTreeMap::from([(format!("upstreams.{name}"), "from --upstream".to_owned())]),
            file: None,
        };
        self.upstream_list_checked(&origins).map(|_| ())
    }

    /// The decode limits.
    pub fn codec_limits(&self) -> crate::codec::Limits {
        crate::codec::Limits {
            max_bytes: self.proxy.max_body_bytes,
            max_pixels: self.limits.max_pixels,
            max_aspect: self.limits.max_aspect,
            max_scans: self.limits.max_scans,
            max_decode_ms: self.limits.max_decode_ms,
        }
    }

    /// The parsers' limits ([`crate::protocol::set_parse_limits`]).
    pub fn parse_limits(&self) -> crate::protocol::ParseLimits {
        crate::protocol::ParseLimits {
            max_json_values: self.limits.max_json_values,
            max_form_fields: self.limits.max_form_fields,
            max_tensor_elements: self.limits.max_tensor_elements,
        }
    }
}

/// An environment value as TOML: numbers and booleans as such, anything else as a string.
fn env_value(raw: &str) -> toml::Value {
    if let Ok(i) = raw.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    if let Ok(f) = raw.parse::<f64>()
        && raw.chars().any(|c| c.is_ascii_digit())
    {
        return toml::Value::Float(f);
    }
    match raw {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(raw.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_example_file_parses_and_has_the_paper_values() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/adacompress.toml");
        let c = Config::load(Some(&path), Vec::new()).unwrap();
        assert!(c.estimator.enabled);
        assert!(c.ignored.is_empty(), "{:?}", c.ignored);
        assert_eq!(
            c.agent.checkpoint,
            Path::new("models/agent-calibrated.json")
        );
        assert_eq!(c.proxy.admin_listen.port(), 9090);
        assert_eq!(c.upstream_list().len(), 1);
    }

    #[test]
    fn retired_estimator_keys_still_load_and_are_named_as_ignored() {
        // A config written for the Q-head agent's retraining loop (gone from serve).
        let dir = std::env::temp_dir().join(format!("adacompress-retired-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("old.toml");
        std::fs::write(
            &path,
            "[estimator]\nenabled = false\np_est_min = 0.04\nmemory = 2000\nretrain_serves = \"original\"\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&path),
            env(&[("ADACOMPRESS_ESTIMATOR__LEARN_EVERY", "5")]),
        )
        .unwrap();
        assert!(!c.estimator.enabled);
        assert_eq!(
            c.ignored,
            vec![
                format!("estimator.p_est_min (from {})", path.display()),
                "estimator.learn_every (from ADACOMPRESS_ESTIMATOR__LEARN_EVERY)".to_owned(),
                format!("estimator.memory (from {})", path.display()),
                format!("estimator.retrain_serves (from {})", path.display()),
            ]
        );
        // Only retired keys: a misspelt one is still refused.
        let err = Config::load(None, env(&[("ADACOMPRESS_ESTIMATOR__P_EST_MINN", "0.1")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("p_est_minn"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn upstream_ca_file_can_come_from_the_environment() {
        assert_eq!(Config::default().proxy.upstream_ca_file, None);
        let c = Config::load(
            None,
            env(&[(
                "ADACOMPRESS_PROXY__UPSTREAM_CA_FILE",
                "/etc/adacompress/internal-ca.pem",
            )]),
        )
        .unwrap();
        assert_eq!(
            c.proxy.upstream_ca_file.as_deref(),
            Some(Path::new("/etc/adacompress/internal-ca.pem"))
        );
    }

    #[test]
    fn environment_overrides_file_and_errors_name_the_variable() {
        let c = Config::load(
            None,
            env(&[
                ("ADACOMPRESS_PAIR__TARGET_AGREEMENT", "0.9"),
                ("ADACOMPRESS_PROXY__LISTEN", "0.0.0.0:8081"),
                ("ADACOMPRESS_UPSTREAMS__GOOGLE", "http://127.0.0.1:9000/"),
                ("ADACOMPRESS_ESTIMATOR__ENABLED", "false"),
                ("OTHER_VAR", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.pair.target_agreement, 0.9);
        assert!(!c.estimator.enabled);
        assert_eq!(c.proxy.listen.port(), 8081);
        assert_eq!(c.upstream_list()[0].url, "http://127.0.0.1:9000");

        let err = Config::load(None, env(&[("ADACOMPRESS_PAIR__TARGET_AGREEMENT", "2")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("pair.target_agreement"), "{err}");
        assert!(err.contains("ADACOMPRESS_PAIR__TARGET_AGREEMENT"), "{err}");
        assert!(err.contains("0..=1"), "{err}");

        let err = Config::load(None, env(&[("ADACOMPRESS_PROXY__LISTEN", "nowhere")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("proxy.listen"), "{err}");
        assert!(err.contains("ADACOMPRESS_PROXY__LISTEN"), "{err}");
    }

    #[test]
    fn upstreams_default_is_a_url_for_unrouted_requests_not_a_protocol() {
        assert!(
            Protocol::ALL.iter().all(|p| p.name() != DEFAULT_UPSTREAM),
            "`default` must not clash with a protocol name"
        );
        let c = Config::load(
            None,
            env(&[
                ("ADACOMPRESS_UPSTREAMS__GOOGLE", "local"),
                ("ADACOMPRESS_UPSTREAMS__DEFAULT", "http://127.0.0.1:9001/"),
            ]),
        )
        .unwrap();
        assert_eq!(
            c.default_upstream().as_deref(),
            Some("http://127.0.0.1:9001")
        );
        let protocols: Vec<Protocol> = c.upstream_list().iter().map(|u| u.protocol).collect();
        assert_eq!(protocols, vec![Protocol::GoogleVision]);
        assert_eq!(Config::default().default_upstream(), None);
        for bad in ["local", "ftp://x", "http://", "x"] {
            let err = Config::load(None, env(&[("ADACOMPRESS_UPSTREAMS__DEFAULT", bad)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("upstreams.default = {bad}")), "{err}");
            assert!(err.contains("ADACOMPRESS_UPSTREAMS__DEFAULT"), "{err}");
            assert!(err.contains("http:// or https://"), "{err}");
        }
        let mut c = Config::default();
        c.add_upstream_flag("default=https://example.com/").unwrap();
        assert_eq!(c.default_upstream().as_deref(), Some("https://example.com"));
        assert!(c.upstream_list().is_empty());
        let err = c
            .add_upstream_flag("default=local")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("upstreams.default = local (from --upstream)"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_and_bad_upstreams_are_named() {
        let dir = std::env::temp_dir().join(format!("adacompress-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, "[proxy]\nlisten_port = 1\n").unwrap();
        let err = Config::load(Some(&path), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen_port"), "{err}");
        assert!(err.contains("c.toml"), "{err}");

        std::fs::write(&path, "[upstreams]\nfoo = \"http://x\"\n").unwrap();
        let err = Config::load(Some(&path), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("upstreams.foo"), "{err}");

        std::fs::write(&path, "[upstreams]\ngoogle = \"ftp://x\"\n").unwrap();
        let err = Config::load(Some(&path), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("upstreams.google = ftp://x"), "{err}");

        let mut c = Config::default();
        assert!(c.add_upstream_flag("google").is_err());
        c.add_upstream_flag("rekognition=local").unwrap();
        assert_eq!(c.upstream_list()[0].protocol, Protocol::Rekognition);
    }

    /// Issue 8: "an environment error is reported as coming from defaults". Every way a
    /// value can be wrong, with and without a file: the error must name the variable (or
    /// flag, or file) that set it, and never call a value that was set "the default".
    #[test]
    fn every_error_names_where_its_value_came_from() {
        let dir = std::env::temp_dir().join(format!("adacompress-origin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("o.toml");
        std::fs::write(
            &file,
            "[proxy]\nmax_body_bytes = 1000\n[log]\nlevel = \"debug\"\n",
        )
        .unwrap();
        let not_table = dir.join("flat.toml");
        std::fs::write(&not_table, "upstreams = \"http://x\"\n").unwrap();
        let err = |path: Option<&Path>, pairs: &[(&str, &str)]| {
            Config::load(path, env(pairs)).unwrap_err().to_string()
        };
        /// The file, the variables, what the message must contain, what it must not.
        type Case<'a> = (
            Option<&'a Path>,
            Vec<(&'a str, &'a str)>,
            Vec<&'a str>,
            Vec<&'a str>,
        );
        let cases: Vec<Case> = vec![
            // A bad value, no file: a type error, a range error, a bad upstream.
            (
                None,
                vec![("ADACOMPRESS_PROXY__LISTEN", "nowhere")],
                vec!["proxy.listen", "from ADACOMPRESS_PROXY__LISTEN"],
                vec!["default"],
            ),
            (
                None,
                vec![("ADACOMPRESS_PAIR__TARGET_AGREEMENT", "2")],
                vec!["pair.target_agreement = 2 (from ADACOMPRESS_PAIR__TARGET_AGREEMENT)"],
                vec!["default"],
            ),
            (
                None,
                vec![("ADACOMPRESS_UPSTREAMS__GOOGLE", "ftp://x")],
                vec!["upstreams.google = ftp://x (from ADACOMPRESS_UPSTREAMS__GOOGLE)"],
                vec!["default"],
            ),
            (
                None,
                vec![("ADACOMPRESS_UPSTREAMS__NOPE", "http://x")],
                vec!["upstreams.nope", "from ADACOMPRESS_UPSTREAMS__NOPE"],
                vec!["default"],
            ),
            // The same with a file that sets other keys: the variable, not the file.
            (
                Some(&file),
                vec![("ADACOMPRESS_PROXY__LISTEN", "nowhere")],
                vec!["from ADACOMPRESS_PROXY__LISTEN"],
                vec!["o.toml", "default"],
            ),
            (
                Some(&file),
                vec![("ADACOMPRESS_PAIR__TARGET_AGREEMENT", "2")],
                vec!["from ADACOMPRESS_PAIR__TARGET_AGREEMENT"],
                vec!["o.toml", "default"],
            ),
            // A variable overriding a key the file sets.
            (
                Some(&file),
                vec![("ADACOMPRESS_PROXY__MAX_BODY_BYTES", "0")],
                vec!["proxy.max_body_bytes = 0 (from ADACOMPRESS_PROXY__MAX_BODY_BYTES)"],
                vec!["o.toml"],
            ),
            // A variable for an unknown key, in a known section and in an unknown one.
            (
                None,
                vec![("ADACOMPRESS_PROXY__LISTEN_PORT", "1")],
                vec!["listen_port", "from ADACOMPRESS_PROXY__LISTEN_PORT"],
                vec!["default"],
            ),
            (
                Some(&file),
                vec![("ADACOMPRESS_PROXY__LISTEN_PORT", "1")],
                vec!["listen_port", "from ADACOMPRESS_PROXY__LISTEN_PORT"],
                vec!["o.toml", "default"],
            ),
            (
                None,
                vec![("ADACOMPRESS_PROXYY__LISTEN", "x")],
                vec!["proxyy", "from ADACOMPRESS_PROXYY__LISTEN"],
                vec!["default"],
            ),
            (
                Some(&file),
                vec![("ADACOMPRESS_PROXYY__LISTEN", "x")],
                vec!["proxyy", "from ADACOMPRESS_PROXYY__LISTEN"],
                vec!["o.toml", "default"],
            ),
            (
                None,
                vec![("ADACOMPRESS___LISTEN", "x")],
                vec!["from ADACOMPRESS___LISTEN"],
                vec!["default"],
            ),
            // A variable whose section the file sets to something that is not a table.
            (
                Some(&not_table),
                vec![("ADACOMPRESS_UPSTREAMS__GOOGLE", "local")],
                vec![
                    "from ADACOMPRESS_UPSTREAMS__GOOGLE",
                    "`upstreams` is not a table in",
                    "flat.toml",
                ],
                vec!["default"],
            ),
            // …and the file alone with that section: the file.
            (
                Some(&not_table),
                vec![],
                vec!["upstreams", "from", "flat.toml"],
                vec!["default"],
            ),
            // Checks between two keys: the one a variable set is named, whichever it is.
            (
                None,
                vec![("ADACOMPRESS_PROXY__MAX_BODY_BYTES", "300000000")],
                vec![
                    "proxy.max_inflight_body_bytes = 268435456 (the default; proxy.max_body_bytes from ADACOMPRESS_PROXY__MAX_BODY_BYTES)",
                ],
                vec![],
            ),
            (
                Some(&file),
                vec![("ADACOMPRESS_PROXY__MAX_INFLIGHT_BODY_BYTES", "10")],
                vec![
                    "proxy.max_inflight_body_bytes = 10 (from ADACOMPRESS_PROXY__MAX_INFLIGHT_BODY_BYTES; proxy.max_body_bytes from",
                    "o.toml",
                ],
                vec![],
            ),
            (
                None,
                vec![("ADACOMPRESS_AGENT__MAX_QUALITY", "3")],
                vec![
                    "agent.min_quality = 5 (the default; agent.max_quality from ADACOMPRESS_AGENT__MAX_QUALITY)",
                ],
                vec![],
            ),
            (
                None,
                vec![
                    ("ADACOMPRESS_AGENT__MAX_QUALITY", "3"),
                    ("ADACOMPRESS_AGENT__MIN_QUALITY", "4"),
                ],
                vec![
                    "agent.min_quality = 4 (from ADACOMPRESS_AGENT__MIN_QUALITY; agent.max_quality from ADACOMPRESS_AGENT__MAX_QUALITY)",
                ],
                vec!["default"],
            ),
        ];
        for (path, pairs, wanted, unwanted) in cases {
            let e = err(path, &pairs);
            for w in wanted {
                assert!(e.contains(w), "{pairs:?} {path:?}: want {w:?} in {e}");
            }
            for u in unwanted {
                assert!(!e.contains(u), "{pairs:?} {path:?}: {u:?} in {e}");
            }
        }
        // A file's own bad value is the file's.
        std::fs::write(&file, "[proxy]\nmax_body_bytes = 0\n").unwrap();
        let e = err(Some(&file), &[]);
        assert!(
            e.contains("proxy.max_body_bytes = 0 (from") && e.contains("o.toml"),
            "{e}"
        );

        // Flags: `--upstream` with a bad value, a bad protocol, no `=`.
        let mut c = Config::load(Some(&file), Vec::new()).unwrap_or_default();
        for (flag, wanted) in [
            (
                "google=ftp://x",
                "upstreams.google = ftp://x (from --upstream)",
            ),
            (
                "nope=http://x",
                "upstreams.nope = http://x (from --upstream)",
            ),
            ("google", "--upstream = google (from the command line)"),
        ] {
            let e = c.add_upstream_flag(flag).unwrap_err().to_string();
            assert!(e.contains(wanted), "{flag}: {e}");
            c.upstreams.clear();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn aws_resign_implicit_any_is_refused_on_a_non_loopback_listener() {
        let base = [
            ("ADACOMPRESS_UPSTREAMS__REKOGNITION", "http://127.0.0.1:1"),
            ("ADACOMPRESS_PROXY__ADMIN_LISTEN", "0.0.0.0:9090"),
        ];
        let implicit = Config::load(None, env(&base)).unwrap();
        assert_eq!(implicit.resign_policy(), ResignPolicy::Any);
        let err = implicit.check_resign().unwrap_err().to_string();
        assert!(
            err.contains("aws.resign") && err.contains("0.0.0.0:9090"),
            "{err}"
        );

        for value in ["any", "verified"] {
            let mut vars = base.to_vec();
            vars.push(("ADACOMPRESS_AWS__RESIGN", value));
            let explicit = Config::load(None, env(&vars)).unwrap();
            assert_eq!(explicit.resign_policy().name(), value);
            explicit.check_resign().unwrap();
        }

        let mut vars = base.to_vec();
        vars.push(("ADACOMPRESS_AWS__RESIGN", "sometimes"));
        let err = Config::load(None, env(&vars)).unwrap_err().to_string();
        assert!(
            err.contains("aws.resign") && err.contains("ADACOMPRESS_AWS__RESIGN"),
            "{err}"
        );

        // Loopback listeners: implicit "any" is fine.
        let local = Config::load(None, env(&base[..1])).unwrap();
        local.check_resign().unwrap();
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let c = Config {
            aws: AwsConfig {
                access_key_id: Some("AKIDEXAMPLE".into()),
                secret_access_key: Some("wJalrXUtnFEMI/K7MDENG".into()),
                session_token: Some("IQoJb3JpZ2luX2VjEXAMPLETOKEN".into()),
                region: Some("eu-west-1".into()),
                resign: Some(ResignPolicy::Verified),
                clients: vec![AwsClientKey {
                    access_key_id: "AKIDEXAMPLE".into(),
                    secret_access_key: "wJalrXUtnFEMI/client".into(),
                }],
            },
            ..Config::default()
        };
        for shown in [
            format!("{c:?}"),
            format!("{:?}", c.aws),
            format!("{:#?}", c),
        ] {
            assert!(!shown.contains("wJalrXUtnFEMI"), "{shown}");
            assert!(!shown.contains("AKIDEXAMPLE"), "{shown}");
            assert!(!shown.contains("IQoJb3JpZ2luX2Vj"), "{shown}");
            assert!(shown.contains("eu-west-1"), "{shown}");
        }
    }
}
