//! The deployment files stay consistent with the program and with each other: every YAML
//! under deploy/ parses, the Kubernetes objects have what an operator relies on (probes on
//! the admin port, the state volume, non-root), the ConfigMap's TOML has the plan's sections
//! and no secrets, the dashboard and the alerts use only metric names the proxy exports,
//! and the Dockerfile builds with the same command as a local build. No docker, kubectl or
//! network needed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml::Value;

/// Every series name the daemon exports, read from where it registers them
/// (`src/proxy/metrics.rs`: each `registry.register("NAME", …, m.FIELD.clone())` and the
/// field's type; a registry with empty label families does not print them, so its text
/// cannot be used): counters as `NAME_total`, histograms as `NAME`, `NAME_bucket`,
/// `NAME_count`, `NAME_sum`, gauges as `NAME`.
fn exported_series() -> BTreeSet<String> {
    let src = read(&root().join("src/proxy/metrics.rs"));
    let struct_body = src
        .split("pub struct Metrics {")
        .nth(1)
        .and_then(|rest| rest.split("\n}").next())
        .expect("pub struct Metrics");
    let field_type = |field: &str| -> Option<String> {
        struct_body.lines().find_map(|l| {
            let l = l.trim().strip_prefix("pub ")?;
            let (name, ty) = l.split_once(':')?;
            (name.trim() == field).then(|| ty.trim().trim_end_matches(',').to_owned())
        })
    };
    let mut out = BTreeSet::new();
    for call in src.split("registry.register(").skip(1) {
        let name = call
            .split('"')
            .nth(1)
            .expect("a metric name literal")
            .to_owned();
        let field = call
            .lines()
            .find_map(|l| l.trim().strip_prefix("m.")?.strip_suffix(".clone(),"))
            .expect("m.FIELD.clone(),");
        let ty = field_type(field).unwrap_or_else(|| panic!("field {field} of {name}"));
        if ty.contains("Histogram") {
            for suffix in ["", "_bucket", "_count", "_sum"] {
                out.insert(format!("{name}{suffix}"));
            }
        } else if ty.contains("Counter") {
            out.insert(format!("{name}_total"));
        } else {
            out.insert(name);
        }
    }
    assert!(out.len() > 30, "the daemon's metrics: {out:?}");
    // The registry's own text agrees where it prints a metric at all.
    let text = adacompress::proxy::metrics::Metrics::new().render();
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split_whitespace().nth(2).unwrap_or_default();
        assert!(
            out.contains(name) || out.contains(&format!("{name}_total")),
            "{name} is registered but was not found in the source"
        );
    }
    out
}

/// Sections of the plan's config file. Upstreams are `[upstreams]` (protocol = URL) in the
/// config the daemon reads; the plan's first draft had `[[upstream]]`: either counts.
const PLAN_SECTIONS: &[&str] = &[
    "proxy",
    "agent",
    "limits",
    "estimator",
    "state",
    "aws",
    "log",
];

const ADMIN_PORT: i64 = 9090;
const STATE_DIR: &str = "/var/lib/adacompress";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every file under `dir` whose name ends with one of `exts`, sorted.
fn files(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if exts
                .iter()
                .any(|e| path.to_string_lossy().ends_with(&format!(".{e}")))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// All documents of a (multi-document) YAML file; empty documents skipped.
fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = read(path);
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

fn k8s_docs() -> Vec<(PathBuf, Value)> {
    files(&root().join("deploy/kubernetes"), &["yaml", "yml"])
        .into_iter()
        .flat_map(|p| yaml_docs(&p).into_iter().map(move |d| (p.clone(), d)))
        .collect()
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(v, path)?.as_str()
}

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn seq<'a>(v: &'a Value, path: &[&str]) -> Vec<&'a Value> {
    at(v, path)
        .and_then(Value::as_sequence)
        .map(|s| s.iter().collect())
        .unwrap_or_default()
}

/// `adacompress_*` names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("adacompress_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

/// The metric names in `expr`, each checked to be one the daemon exports.
fn assert_exported(what: &str, expr: &str, exported: &BTreeSet<String>) -> Vec<String> {
    let names = metric_names(expr);
    assert!(
        !names.is_empty(),
        "{what}: no adacompress metric in `{expr}`"
    );
    for n in &names {
        assert!(
            exported.contains(n),
            "{what}: `{n}` is not a metric the daemon exports (expr `{expr}`)"
        );
    }
    names
}

fn configmap_toml() -> String {
    let docs = yaml_docs(&root().join("deploy/kubernetes/configmap.yaml"));
    let cm = docs
        .iter()
        .find(|d| str_at(d, &["kind"]) == Some("ConfigMap"))
        .expect("configmap.yaml has a ConfigMap");
    assert_eq!(
        str_at(cm, &["metadata", "name"]),
        Some("adacompress-config")
    );
    str_at(cm, &["data", "adacompress.toml"])
        .expect("ConfigMap data has adacompress.toml")
        .to_owned()
}

fn configmap_config() -> toml::Table {
    configmap_toml()
        .parse::<toml::Table>()
        .unwrap_or_else(|e| panic!("ConfigMap adacompress.toml: {e}"))
}

#[test]
fn every_yaml_under_deploy_parses() {
    let all = files(&root().join("deploy"), &["yaml", "yml"]);
    assert!(all.len() >= 7, "{all:?}");
    for path in all {
        assert!(!yaml_docs(&path).is_empty(), "{}: empty", path.display());
    }
}

#[test]
fn kubernetes_objects_are_complete() {
    let docs = k8s_docs();
    let mut kinds = BTreeMap::<String, usize>::new();
    for (path, doc) in &docs {
        let p = path.display();
        let api = str_at(doc, &["apiVersion"]).unwrap_or_else(|| panic!("{p}: no apiVersion"));
        let kind = str_at(doc, &["kind"]).unwrap_or_else(|| panic!("{p}: no kind"));
        *kinds.entry(kind.to_owned()).or_default() += 1;
        if kind == "Kustomization" {
            assert!(api.starts_with("kustomize.config.k8s.io/"), "{p}");
            continue;
        }
        let name = str_at(doc, &["metadata", "name"]);
        assert!(
            name.is_some_and(|n| !n.is_empty()),
            "{p}: {kind} without metadata.name"
        );
    }
    for kind in [
        "Deployment",
        "Service",
        "ConfigMap",
        "PersistentVolumeClaim",
        "Kustomization",
    ] {
        assert!(
            kinds.contains_key(kind),
            "no {kind} in deploy/kubernetes: {kinds:?}"
        );
    }
    assert_eq!(kinds["Deployment"], 2, "standalone + sidecar: {kinds:?}");
}

/// The adacompress container of a pod spec (a regular or a native-sidecar init container).
fn adacompress_container(pod: &Value) -> &Value {
    seq(pod, &["containers"])
        .into_iter()
        .chain(seq(pod, &["initContainers"]))
        .find(|c| str_at(c, &["image"]).is_some_and(|i| i.starts_with("adacompress")))
        .expect("a container running the adacompress image")
}

/// A probe's port as a number, resolving a port name through the container's ports.
fn probe_port(container: &Value, probe: &str) -> i64 {
    let port = at(container, &[probe, "httpGet", "port"])
        .unwrap_or_else(|| panic!("{probe} is not an httpGet probe"));
    if let Some(n) = port.as_i64() {
        return n;
    }
    let name = port.as_str().expect("port is a number or a name");
    seq(container, &["ports"])
        .into_iter()
        .find(|p| str_at(p, &["name"]) == Some(name))
        .and_then(|p| at(p, &["containerPort"])?.as_i64())
        .unwrap_or_else(|| panic!("{probe}: no container port named {name}"))
}

#[test]
fn deployments_probe_the_admin_port_keep_state_and_run_unprivileged() {
    let drain_secs = configmap_config()["proxy"]["drain_secs"]
        .as_float()
        .expect("proxy.drain_secs");
    let deployments: Vec<_> = k8s_docs()
        .into_iter()
        .filter(|(_, d)| str_at(d, &["kind"]) == Some("Deployment"))
        .collect();
    for (path, dep) in &deployments {
        let what = format!(
            "{} {}",
            path.display(),
            str_at(dep, &["metadata", "name"]).unwrap()
        );
        let template = at(dep, &["spec", "template"]).expect("pod template");
        let pod = at(template, &["spec"]).expect("pod spec");
        let c = adacompress_container(pod);

        assert_eq!(
            str_at(c, &["livenessProbe", "httpGet", "path"]),
            Some("/healthz"),
            "{what}"
        );
        assert_eq!(
            str_at(c, &["readinessProbe", "httpGet", "path"]),
            Some("/readyz"),
            "{what}"
        );
        assert_eq!(probe_port(c, "livenessProbe"), ADMIN_PORT, "{what}");
        assert_eq!(probe_port(c, "readinessProbe"), ADMIN_PORT, "{what}");

        // The state volume is mounted where the image keeps learned state, from a volume
        // the pod defines.
        let mount = seq(c, &["volumeMounts"])
            .into_iter()
            .find(|m| str_at(m, &["mountPath"]) == Some(STATE_DIR))
            .unwrap_or_else(|| panic!("{what}: nothing mounted at {STATE_DIR}"));
        let vol_name = str_at(mount, &["name"]).unwrap();
        assert!(
            seq(pod, &["volumes"])
                .iter()
                .any(|v| str_at(v, &["name"]) == Some(vol_name)),
            "{what}: volume {vol_name} not defined"
        );
        // The config comes from the ConfigMap, at the path the image's CMD reads.
        let config_mount = seq(c, &["volumeMounts"])
            .into_iter()
            .find(|m| str_at(m, &["mountPath"]) == Some("/etc/adacompress"))
            .unwrap_or_else(|| panic!("{what}: config not mounted at /etc/adacompress"));
        let config_vol = seq(pod, &["volumes"])
            .into_iter()
            .find(|v| str_at(v, &["name"]) == str_at(config_mount, &["name"]))
            .unwrap();
        assert_eq!(
            str_at(config_vol, &["configMap", "name"]),
            Some("adacompress-config"),
            "{what}"
        );

        let non_root = |sc: Option<&Value>| {
            sc.and_then(|s| s.get("runAsNonRoot"))
                .and_then(Value::as_bool)
        };
        assert!(
            non_root(c.get("securityContext"))
                .or(non_root(pod.get("securityContext")))
                .unwrap_or(false),
            "{what}: runAsNonRoot"
        );
        assert_eq!(
            at(c, &["securityContext", "readOnlyRootFilesystem"]).and_then(Value::as_bool),
            Some(true),
            "{what}"
        );
        assert!(
            at(c, &["resources", "requests"]).is_some(),
            "{what}: resources"
        );

        // SIGTERM drains for drain_secs; the kubelet must not kill the pod before.
        let grace = at(pod, &["terminationGracePeriodSeconds"])
            .and_then(Value::as_i64)
            .unwrap_or(30);
        assert!(
            grace as f64 > drain_secs,
            "{what}: terminationGracePeriodSeconds {grace} <= drain_secs {drain_secs}"
        );

        let annotations = at(template, &["metadata", "annotations"]).expect("pod annotations");
        assert_eq!(str_at(annotations, &["prometheus.io/scrape"]), Some("true"));
        assert_eq!(
            str_at(annotations, &["prometheus.io/port"]),
            Some(ADMIN_PORT.to_string().as_str())
        );
        assert!(
            str_at(annotations, &["checksum/config"]).is_some(),
            "{what}"
        );

        // AWS keys only ever from a Secret.
        for container in seq(pod, &["containers"])
            .into_iter()
            .chain(seq(pod, &["initContainers"]))
        {
            for env in seq(container, &["env"]) {
                let name = str_at(env, &["name"]).unwrap_or_default();
                if name.starts_with("AWS_") && !name.starts_with("AWS_ENDPOINT_URL") {
                    assert!(
                        env.get("value").is_none(),
                        "{what}: {name} has a literal value"
                    );
                    assert!(
                        at(env, &["valueFrom", "secretKeyRef", "name"]).is_some(),
                        "{what}: {name} must come from a Secret"
                    );
                }
            }
        }
    }
    assert_eq!(deployments.len(), 2);
}

#[test]
fn services_select_the_proxy_and_name_real_ports() {
    let docs = k8s_docs();
    let standalone = docs
        .iter()
        .map(|(_, d)| d)
        .find(|d| {
            str_at(d, &["kind"]) == Some("Deployment")
                && str_at(d, &["metadata", "name"]) == Some("adacompress")
        })
        .expect("the standalone Deployment `adacompress`");
    let labels = at(standalone, &["spec", "template", "metadata", "labels"]).unwrap();
    let container = adacompress_container(at(standalone, &["spec", "template", "spec"]).unwrap());
    let port_names: BTreeSet<&str> = seq(container, &["ports"])
        .into_iter()
        .filter_map(|p| str_at(p, &["name"]))
        .collect();
    let services: Vec<&Value> = docs
        .iter()
        .map(|(_, d)| d)
        .filter(|d| str_at(d, &["kind"]) == Some("Service"))
        .collect();
    assert_eq!(services.len(), 2, "proxy and admin Services");
    for svc in services {
        let name = str_at(svc, &["metadata", "name"]).unwrap();
        let selector = at(svc, &["spec", "selector"])
            .and_then(Value::as_mapping)
            .unwrap_or_else(|| panic!("{name}: no selector"));
        for (k, v) in selector {
            assert_eq!(
                labels.get(k.as_str().unwrap()),
                Some(v),
                "{name}: selector {k:?}"
            );
        }
        for port in seq(svc, &["spec", "ports"]) {
            let target = str_at(port, &["targetPort"]).expect("named targetPort");
            assert!(
                port_names.contains(target),
                "{name}: no container port {target}"
            );
        }
    }
}

#[test]
fn configmap_toml_has_the_plan_sections_and_no_secrets() {
    let cfg = configmap_config();
    for section in PLAN_SECTIONS {
        assert!(
            cfg.get(*section).is_some_and(toml::Value::is_table),
            "ConfigMap TOML lacks [{section}]"
        );
    }
    assert!(
        cfg.get("upstreams").is_some_and(toml::Value::is_table)
            || cfg.get("upstream").is_some_and(toml::Value::is_array),
        "ConfigMap TOML names no upstream"
    );
    for key in ["access_key_id", "secret_access_key", "session_token"] {
        assert!(
            cfg["aws"].get(key).is_none(),
            "aws.{key} in the ConfigMap: keys belong in the Secret"
        );
    }
    assert_eq!(cfg["state"]["dir"].as_str(), Some(STATE_DIR));
    assert_eq!(
        cfg["proxy"]["admin_listen"].as_str(),
        Some("0.0.0.0:9090"),
        "probes reach the admin port from outside the pod"
    );
    assert_eq!(
        cfg["agent"]["checkpoint"].as_str(),
        Some("/usr/share/adacompress/models/agent-calibrated.json")
    );
}

#[test]
fn kustomize_generates_the_same_configmap_from_existing_files() {
    let dir = root().join("deploy/kubernetes");
    let k = yaml_docs(&dir.join("kustomization.yaml"));
    let k = &k[0];
    let resources: Vec<&str> = seq(k, &["resources"])
        .into_iter()
        .filter_map(Value::as_str)
        .collect();
    for r in &resources {
        assert!(
            dir.join(r).is_file(),
            "kustomization resource {r} is missing"
        );
    }
    assert!(
        !resources.contains(&"configmap.yaml"),
        "the ConfigMap is generated; listing configmap.yaml too would define it twice"
    );
    let generator = seq(k, &["configMapGenerator"])
        .into_iter()
        .find(|g| str_at(g, &["name"]) == Some("adacompress-config"))
        .expect("a configMapGenerator for adacompress-config");
    let files: Vec<&str> = seq(generator, &["files"])
        .into_iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(files, ["adacompress.toml"]);
    assert_eq!(
        read(&dir.join("adacompress.toml")),
        configmap_toml(),
        "deploy/kubernetes/adacompress.toml and configmap.yaml's TOML differ"
    );
}

/// `section.key` of every assignment in a TOML file, commented-out ones included
/// (`# region = "…"` documents an optional key).
fn documented_keys(text: &str) -> BTreeSet<String> {
    let mut section = String::new();
    let mut keys = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(s) = line.strip_prefix('[') {
            section = s.trim_matches(|c| c == '[' || c == ']').to_owned();
            continue;
        }
        let assignment = line.trim_start_matches('#').trim();
        if let Some((key, _)) = assignment.split_once('=') {
            let key = key.trim();
            if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                keys.insert(format!("{section}.{key}"));
            }
        }
    }
    keys
}

#[test]
fn configmap_uses_only_keys_the_daemon_documents() {
    let reference = root().join("config/adacompress.toml");
    if !reference.is_file() {
        // The daemon's config file lands with `serve`; until then there is nothing to
        // compare against (the Dockerfile copies it too).
        eprintln!(
            "note: {} not there yet; key check skipped",
            reference.display()
        );
        return;
    }
    let known = documented_keys(&read(&reference));
    let cfg = configmap_config();
    for (section, table) in &cfg {
        let table = table.as_table().expect("sections only");
        for key in table.keys() {
            let full = format!("{section}.{key}");
            // Upstream names are free (one per protocol).
            if section == "upstreams" {
                continue;
            }
            assert!(
                known.contains(&full),
                "ConfigMap sets {full}, which config/adacompress.toml does not document"
            );
        }
    }
}

#[test]
fn dashboard_uses_only_metrics_the_daemon_exports() {
    let exported = exported_series();
    let path = root().join("deploy/grafana/adacompress-dashboard.json");
    let dash: serde_json::Value = serde_json::from_str(&read(&path)).expect("dashboard JSON");
    assert!(dash["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(dash["uid"].as_str().is_some_and(|t| !t.is_empty()));
    let schema = dash["schemaVersion"].as_i64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    let panels = dash["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut used = BTreeSet::new();
    for p in panels {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(
            ids.insert(p["id"].as_i64().expect("panel id")),
            "duplicate id: {title}"
        );
        for k in ["x", "y", "w", "h"] {
            assert!(p["gridPos"][k].is_i64(), "{title}: gridPos.{k}");
        }
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            let expr = t["expr"].as_str().expect("expr");
            used.extend(assert_exported(title, expr, &exported));
        }
    }
    for wanted in [
        "adacompress_requests_total",
        "adacompress_image_bytes_in_total",
        "adacompress_image_bytes_out_total",
        "adacompress_agent_state",
        "adacompress_agent_version",
        "adacompress_passthrough_total",
        "adacompress_stage_duration_seconds",
        "adacompress_estimation_bytes_total",
        "adacompress_upstream_errors_total",
        "adacompress_pair_served",
        "adacompress_pair_certified",
        "adacompress_pair_lower_bound",
        "adacompress_pair_target_agreement",
        "adacompress_pair_drifts_total",
        "adacompress_pair_estimation_share",
    ] {
        let shows = |u: &String| {
            u == wanted
                || ["_bucket", "_count", "_sum"]
                    .iter()
                    .any(|sfx| u.strip_suffix(sfx) == Some(wanted))
        };
        assert!(used.iter().any(shows), "no panel shows {wanted}");
    }
}

#[test]
fn alerts_use_exported_metrics_and_explain_themselves() {
    let exported = exported_series();
    let docs = yaml_docs(&root().join("deploy/prometheus/alerts.yaml"));
    let mut names = BTreeSet::new();
    for group in seq(&docs[0], &["groups"]) {
        assert!(str_at(group, &["name"]).is_some());
        for rule in seq(group, &["rules"]) {
            let name = str_at(rule, &["alert"]).expect("alert name");
            names.insert(name.to_owned());
            let expr = str_at(rule, &["expr"]).unwrap_or_else(|| panic!("{name}: no expr"));
            assert_exported(name, expr, &exported);
            assert!(str_at(rule, &["for"]).is_some(), "{name}: no `for`");
            for a in ["summary", "description"] {
                assert!(
                    str_at(rule, &["annotations", a]).is_some_and(|s| s.len() > 10),
                    "{name}: annotation {a}"
                );
            }
        }
    }
    let expected: BTreeSet<String> = [
        "AdaCompressFailOpenHigh",
        "AdaCompressUpstreamErrors",
        "AdaCompressDown",
        "AdaCompressPairDriftStorm",
        "AdaCompressPairUncertified",
        "AdaCompressPairKeepsOriginals",
    ]
    .map(String::from)
    .into();
    assert_eq!(names, expected);
}

/// The `cargo …` command in a line, up to a shell separator or line continuation.
fn cargo_command(line: &str) -> Option<String> {
    let start = line.find("cargo ")?;
    let cmd = &line[start..];
    let end = ["&&", "\\", ";", "|"]
        .iter()
        .filter_map(|s| cmd.find(s))
        .min()
        .unwrap_or(cmd.len());
    Some(cmd[..end].trim().to_owned())
}

/// The flags of a cargo command, before any `--` (program arguments).
fn cargo_flags(cmd: &str) -> BTreeSet<String> {
    cmd.split_whitespace()
        .take_while(|t| *t != "--")
        .filter(|t| t.starts_with("--"))
        .map(String::from)
        .collect()
}

#[test]
fn dockerfile_builds_like_the_readme_and_runs_unprivileged() {
    let dockerfile = read(&root().join("Dockerfile"));
    let builds: Vec<String> = dockerfile
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && l.contains("cargo build"))
        .filter_map(cargo_command)
        .collect();
    assert!(!builds.is_empty(), "no cargo build in the Dockerfile");

    let readme = read(&root().join("README.md"));
    let documented = readme
        .lines()
        .find(|l| l.trim_start().starts_with("cargo build --release --locked"))
        .and_then(cargo_command);
    match documented {
        Some(cmd) => {
            for b in &builds {
                assert_eq!(b, &cmd, "Dockerfile and README.md build differently");
            }
        }
        None => {
            // README.md documents no `cargo build` line yet: compare with the release
            // build scripts/quickstart.sh runs (same profile and flags).
            let quickstart = read(&root().join("scripts/quickstart.sh"));
            let cmd = quickstart
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .find_map(cargo_command)
                .expect("a cargo command in scripts/quickstart.sh");
            eprintln!(
                "note: README.md has no `cargo build --release --locked` line; compared with quickstart.sh's `{cmd}`"
            );
            for b in &builds {
                assert_eq!(
                    cargo_flags(b),
                    cargo_flags(&cmd),
                    "Dockerfile `{b}` vs quickstart `{cmd}`"
                );
            }
        }
    }
    for b in &builds {
        assert_eq!(b, "cargo build --release --locked");
    }

    let instructions: Vec<(String, String)> = dockerfile
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.starts_with(' '))
        .filter_map(|l| {
            let (i, rest) = l.split_once(' ')?;
            Some((i.to_owned(), rest.trim().to_owned()))
        })
        .filter(|(i, _)| i.chars().all(|c| c.is_ascii_uppercase()))
        .collect();
    let last = |name: &str| {
        instructions
            .iter()
            .rev()
            .find(|(i, _)| i == name)
            .map(|(_, rest)| rest.as_str())
    };
    let user = last("USER").expect("a USER instruction");
    let uid = user.split(':').next().unwrap_or_default();
    assert!(uid != "root" && uid != "0", "runs as root: USER {user}");
    assert_eq!(uid, "10001");
    let health = last("HEALTHCHECK").expect("a HEALTHCHECK");
    let health_full = dockerfile
        .split("HEALTHCHECK")
        .nth(1)
        .unwrap_or_default()
        .split("\n\n")
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(
        health_full.contains("\"adacompress\", \"healthcheck\"")
            && health_full.contains("http://127.0.0.1:9090/healthz"),
        "HEALTHCHECK {health} / {health_full}"
    );
    assert_eq!(last("FROM"), Some("debian:bookworm-slim"), "runtime stage");
    assert_eq!(last("EXPOSE"), Some("8080 9090"));
    assert_eq!(last("ENTRYPOINT"), Some("[\"adacompress\"]"));
    assert_eq!(
        last("CMD"),
        Some("[\"serve\", \"--config\", \"/etc/adacompress/adacompress.toml\"]")
    );
    assert_eq!(last("VOLUME"), Some(STATE_DIR));
    for needle in [
        "nasm",
        "/usr/local/bin/adacompress",
        "COPY models/ /usr/share/adacompress/models/",
        "COPY config/adacompress.toml /etc/adacompress/adacompress.toml",
        "ADACOMPRESS_PROXY__LISTEN=0.0.0.0:8080",
        "ADACOMPRESS_PROXY__ADMIN_LISTEN=0.0.0.0:9090",
        "ADACOMPRESS_STATE__DIR=/var/lib/adacompress",
        "ADACOMPRESS_AGENT__CHECKPOINT=/usr/share/adacompress/models/agent-calibrated.json",
    ] {
        assert!(dockerfile.contains(needle), "Dockerfile lacks `{needle}`");
    }

    let ignore = read(&root().join(".dockerignore"));
    let ignored: BTreeSet<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for must in ["target", "data", ".cache", "eval-out", ".git"] {
        assert!(ignored.contains(must), ".dockerignore lacks {must}");
    }
    for needed in ["src", "models", "config", "Cargo.toml", "Cargo.lock"] {
        assert!(
            !ignored.contains(needed),
            ".dockerignore drops {needed}, which the build needs"
        );
    }
}

#[test]
fn metric_name_extraction() {
    assert_eq!(
        metric_names("1 - sum(rate(adacompress_image_bytes_out_total{job=~\"$job\"}[5m])) / x"),
        ["adacompress_image_bytes_out_total"]
    );
    let exported = exported_series();
    for yes in [
        "adacompress_stage_duration_seconds_bucket",
        "adacompress_requests_total",
        "adacompress_pair_served",
        "adacompress_pair_margin_alarms_total",
    ] {
        assert!(exported.contains(yes), "{yes}");
    }
    for no in [
        "adacompress_requests_total_bucket",
        "adacompress_requests",
        "adacompress_bogus",
    ] {
        assert!(!exported.contains(no), "{no}");
    }
    assert_eq!(
        cargo_command("RUN cargo build --release --locked \\"),
        Some("cargo build --release --locked".to_owned())
    );
    assert_eq!(
        cargo_flags("cargo run --release --locked -- eval --photos x"),
        BTreeSet::from(["--release".to_owned(), "--locked".to_owned()])
    );
}
