//! The deployment files cannot drift from the code: every Kubernetes manifest validates against
//! the Kubernetes schemas (`kubernetes-validate --strict`), and the Deployment, the Dockerfile
//! and the compose file name binaries that exist, settings `sandboxd` accepts (checked by
//! `sandboxd check-config` with exactly their arguments and environment) and one port
//! throughout.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("deploy/kubernetes"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

/// Every YAML document of `files`, as JSON (PyYAML comes with kubernetes-validate).
fn yaml_documents(files: &[PathBuf]) -> Vec<Value> {
    let script = "import sys, json, yaml\nprint(json.dumps([d for f in sys.argv[1:] for d in yaml.safe_load_all(open(f)) if d]))";
    let output = Command::new("python3").args(["-c", script]).args(files).output().unwrap();
    assert!(output.status.success(), "PyYAML: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice::<Vec<Value>>(&output.stdout).unwrap()
}

fn of_kind<'a>(documents: &'a [Value], kind: &str) -> &'a Value {
    documents.iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("no {kind} manifest"))
}

/// Runs `sandboxd check-config` with `args` (a `serve` command line) and only `env` for
/// SANDBOXD_* settings.
fn check_config(source: &str, args: &[String], env: &BTreeMap<String, String>) {
    let output = run_check_config(source, args, env);
    assert!(
        output.status.success(),
        "{source}: sandboxd refuses its settings {env:?} {args:?}:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The same settings with one unknown key are refused, so the check above could fail.
    let mut drifted = env.clone();
    drifted.insert("SANDBOXD_SERVER__NO_SUCH_SETTING".into(), "1".into());
    let refused = run_check_config(source, args, &drifted);
    assert!(!refused.status.success(), "{source}: an unknown setting must be refused");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no_such_setting"));
}

fn run_check_config(
    source: &str,
    args: &[String],
    env: &BTreeMap<String, String>,
) -> std::process::Output {
    assert_eq!(args.first().map(String::as_str), Some("serve"), "{source}: runs `sandboxd serve`");
    let mut command = Command::new(env!("CARGO_BIN_EXE_sandboxd"));
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("SANDBOXD_")) {
        command.env_remove(name);
    }
    command
        .current_dir(std::env::temp_dir())
        .arg("check-config")
        .args(&args[1..])
        .envs(env)
        .output()
        .unwrap()
}

/// The templates directory of a container holds the shipped templates (the image copies
/// deploy/templates there; the ConfigMap carries the same files): point it at them here.
fn with_shipped_templates(mut env: BTreeMap<String, String>) -> BTreeMap<String, String> {
    let shipped = root().join("deploy/templates").display().to_string();
    env.insert("SANDBOXD_TEMPLATES__DIR".into(), shipped);
    env
}

fn listen_port(source: &str, args: &[String]) -> u16 {
    let at =
        args.iter().position(|a| a == "--listen").unwrap_or_else(|| panic!("{source}: --listen"));
    args[at + 1].rsplit(':').next().unwrap().parse().unwrap()
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

fn binaries() -> Vec<String> {
    let cargo = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    cargo
        .split("[[bin]]")
        .skip(1)
        .filter_map(|section| section.lines().find_map(|l| l.strip_prefix("name = ")))
        .map(|name| name.trim_matches('"').to_string())
        .collect()
}

#[test]
fn every_manifest_validates_against_the_kubernetes_schemas() {
    let output =
        Command::new("kubernetes-validate").arg("--strict").args(manifests()).output().expect(
            "kubernetes-validate runs (pip install kubernetes-validate; scripts/test does)",
        );
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{text}");
    assert_eq!(text.matches(" passed for resource ").count(), manifests().len(), "{text}");
}

#[test]
fn the_deployment_matches_the_code() {
    let documents = yaml_documents(&manifests());
    let deployment = of_kind(&documents, "Deployment");
    let spec = &deployment["spec"];
    assert!(spec["replicas"].as_u64().unwrap() >= 2, "at least 2 replicas");
    let pod_labels = &spec["template"]["metadata"]["labels"];
    let pdb = of_kind(&documents, "PodDisruptionBudget");
    for (key, value) in pdb["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&pod_labels[key], value, "the PodDisruptionBudget selects the pods");
    }
    let container = &spec["template"]["spec"]["containers"][0];
    let args = strings(&container["args"]);
    let port = container["ports"][0]["containerPort"].as_u64().unwrap() as u16;
    assert_eq!(listen_port("deployment", &args), port, "the container port is the listen port");
    assert_eq!(
        container["readinessProbe"]["grpc"]["port"].as_u64(),
        Some(port.into()),
        "gRPC health readiness"
    );
    assert!(container["livenessProbe"].is_object(), "a liveness probe");
    assert!(
        container["resources"]["requests"].is_object()
            && container["resources"]["limits"].is_object()
    );
    assert_eq!(spec["template"]["spec"]["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    let service = of_kind(&documents, "Service");
    let service_port = &service["spec"]["ports"][0];
    assert_eq!(
        service_port["targetPort"], container["ports"][0]["name"],
        "the Service targets the gRPC port"
    );

    // Secrets come from the Secret (with the keys the example has), templates from the ConfigMap.
    let secret = of_kind(&documents, "Secret");
    let mut env = BTreeMap::new();
    for variable in container["env"].as_array().unwrap() {
        let name = variable["name"].as_str().unwrap().to_string();
        let value = match &variable["valueFrom"]["secretKeyRef"] {
            Value::Object(reference) => {
                assert_eq!(reference["name"], secret["metadata"]["name"], "{name} from the Secret");
                let key = reference["key"].as_str().unwrap();
                secret["stringData"][key]
                    .as_str()
                    .unwrap_or_else(|| panic!("the Secret has no {key}"))
                    .to_string()
            }
            _ => variable["value"].as_str().unwrap().to_string(),
        };
        env.insert(name, value);
    }
    // The metrics listener: its port is declared and is the one Prometheus is told to scrape.
    let metrics_port = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|port| port["name"] == "metrics")
        .and_then(|port| port["containerPort"].as_u64())
        .expect("a metrics container port");
    let listen = env.get("SANDBOXD_METRICS__LISTEN").expect("the metrics listener is on");
    assert!(
        listen.ends_with(&format!(":{metrics_port}")),
        "metrics listen {listen} vs port {metrics_port}"
    );
    let annotations = &spec["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], metrics_port.to_string());
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    let configmap = of_kind(&documents, "ConfigMap");
    let volume = &spec["template"]["spec"]["volumes"][0];
    assert_eq!(
        volume["configMap"]["name"], configmap["metadata"]["name"],
        "templates from the ConfigMap"
    );
    for entry in std::fs::read_dir(root().join("deploy/templates")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(
            configmap["data"][name].as_str(),
            Some(std::fs::read_to_string(&path).unwrap().as_str()),
            "the ConfigMap carries deploy/templates/{name} as it is"
        );
    }
    let mount = &spec["template"]["spec"]["containers"][0]["volumeMounts"][0]["mountPath"];
    assert_eq!(
        env.get("SANDBOXD_TEMPLATES__DIR").map(String::as_str),
        mount.as_str(),
        "templates dir is the mount"
    );
    check_config("deployment", &args, &with_shipped_templates(env));
}

#[test]
fn the_dockerfile_and_compose_file_match_the_code() {
    let dockerfile = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    let instruction = |name: &str| -> Vec<String> {
        dockerfile
            .lines()
            .filter_map(|line| line.strip_prefix(&format!("{name} ")))
            .map(str::to_string)
            .collect()
    };
    let bins = binaries();
    let entrypoint: Vec<String> = serde_json::from_str(&instruction("ENTRYPOINT")[0]).unwrap();
    assert!(bins.contains(&entrypoint[0]), "ENTRYPOINT {entrypoint:?} is one of {bins:?}");
    for built in
        dockerfile.split_whitespace().filter_map(|word| word.strip_prefix("target/release/"))
    {
        assert!(
            bins.contains(&built.to_string()),
            "the image copies target/release/{built}, not a binary"
        );
    }
    let cmd: Vec<String> = serde_json::from_str(&instruction("CMD")[0]).unwrap();
    let port = listen_port("Dockerfile", &cmd);
    assert_eq!(instruction("EXPOSE"), [port.to_string()], "EXPOSE is the listen port");
    let env: BTreeMap<String, String> = instruction("ENV")
        .iter()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    assert!(env.contains_key("SANDBOXD_TEMPLATES__DIR"), "the image points at its templates");
    check_config("Dockerfile", &cmd, &with_shipped_templates(env.clone()));
    let image_env = env;

    let compose = yaml_documents(&[root().join("deploy/compose.yaml")]);
    let service = &compose[0]["services"]["sandboxd"];
    // The compose service runs the image, so it has the image's environment beneath its own.
    let mut env = image_env;
    for (name, value) in service["environment"].as_object().unwrap() {
        env.insert(name.clone(), value.as_str().unwrap().to_string());
    }
    check_config("compose.yaml", &cmd, &with_shipped_templates(env));
    let published = strings(&service["ports"]);
    assert!(
        published.iter().all(|mapping| mapping.ends_with(&format!(":{port}"))),
        "compose publishes the listen port: {published:?}"
    );
}
