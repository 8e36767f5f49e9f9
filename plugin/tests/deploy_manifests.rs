//! The manifests under plugin/deploy/ agree with each other and with the
//! plugin: what CloudNativePG's operator looks for on the Service, the TLS
//! Secrets the certificates make and the Deployment mounts where its
//! arguments say, the kustomization, and the examples, whose parameters go
//! through the plugin's own settings code and whose Clusters go through the
//! real sidecar injection with CloudNativePG 1.30-shaped Pods and Jobs
//! (tests/fixtures/). No Kubernetes runs here; `kubectl kustomize` renders
//! the base when kubectl is installed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use pitr_cnpg::lifecycle::{patch, Injection, CA_PATH, DEFAULT_CA_KEY, SIDECAR_NAME};
use pitr_cnpg::proto::lifecycle::operator_operation_type::Type as OpType;
use pitr_cnpg::settings::{for_archive, for_restore, param, Cluster, Params, SidecarEnv};
use pitr_cnpg::PLUGIN_NAME;
use serde::Deserialize;
use serde_json::{json, Value};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Every document of a (multi-document) YAML file, as JSON.
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .enumerate()
        .map(|(i, d)| {
            Value::deserialize(d)
                .unwrap_or_else(|e| panic!("{}: document {}: {e}", path.display(), i + 1))
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// The documents of every file in `sub` (base or examples).
fn all(sub: &str) -> Vec<Value> {
    yaml_files(&deploy_dir().join(sub))
        .iter()
        .flat_map(|p| documents(p))
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(docs, kind);
    assert_eq!(found.len(), 1, "exactly one {kind}");
    found[0]
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {ptr} in {v}"))
}

fn by_name<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {list}"))
}

fn container(deployment: &Value) -> &Value {
    let containers = &deployment["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers.as_array().unwrap().len(), 1, "{containers}");
    &containers[0]
}

/// The value of `--name=V` or `--name V` in the container's args.
fn arg<'a>(container: &'a Value, name: &str) -> &'a str {
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let flag = format!("--{name}");
    for (i, a) in args.iter().enumerate() {
        if let Some(v) = a.strip_prefix(&format!("{flag}=")) {
            return v;
        }
        if *a == flag {
            return args
                .get(i + 1)
                .unwrap_or_else(|| panic!("{flag} without value"));
        }
    }
    panic!("no {flag} in {args:?}")
}

#[test]
fn every_manifest_is_a_kubernetes_object() {
    let files = yaml_files(&deploy_dir());
    assert!(files.len() >= 9, "{files:?}");
    for f in &files {
        let docs = documents(f);
        assert!(!docs.is_empty(), "{}", f.display());
        for d in docs {
            let api = d["apiVersion"].as_str().unwrap_or_default();
            assert!(!api.is_empty(), "{}: no apiVersion: {d}", f.display());
            assert!(d["kind"].is_string(), "{}: no kind: {d}", f.display());
            if d["kind"] != "Kustomization" {
                assert!(
                    d.pointer("/metadata/name").is_some(),
                    "{}: no name",
                    f.display()
                );
            }
        }
    }
}

#[test]
fn the_service_is_what_the_operator_looks_for() {
    let base = all("base");
    let svc = one(&base, "Service");
    let dep = one(&base, "Deployment");
    assert_eq!(svc["metadata"]["labels"]["cnpg.io/pluginName"], PLUGIN_NAME);
    let ann = &svc["metadata"]["annotations"];
    for a in [
        "cnpg.io/pluginClientSecret",
        "cnpg.io/pluginServerSecret",
        "cnpg.io/pluginPort",
    ] {
        assert!(
            ann[a].is_string(),
            "annotation {a} (a string) missing: {ann}"
        );
    }

    // pluginPort -> the Service port -> its targetPort -> the container
    // port -> the port in --listen.
    let port: u64 = s(ann, "/cnpg.io~1pluginPort").parse().unwrap();
    let ports = svc["spec"]["ports"].as_array().unwrap();
    let sp = ports
        .iter()
        .find(|p| p["port"] == port)
        .unwrap_or_else(|| panic!("no Service port {port}: {ports:?}"));
    let c = container(dep);
    let cports = c["ports"].as_array().unwrap();
    let cp = match &sp["targetPort"] {
        Value::String(name) => cports.iter().find(|p| p["name"] == *name),
        Value::Number(n) => cports
            .iter()
            .find(|p| p["containerPort"].as_u64() == n.as_u64()),
        Value::Null => cports.iter().find(|p| p["containerPort"] == port),
        other => panic!("targetPort {other}"),
    }
    .unwrap_or_else(|| panic!("targetPort {} is no container port", sp["targetPort"]));
    let listen = arg(c, "listen");
    let listen_port: u64 = listen.rsplit_once(':').unwrap().1.parse().unwrap();
    assert_eq!(cp["containerPort"], listen_port, "--listen={listen}");
    assert_eq!(c["args"][0], "operator");

    // The Service selects the Deployment's Pods, and so does the Deployment.
    let template_labels = dep["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .unwrap();
    for (selector, what) in [
        (&svc["spec"]["selector"], "Service selector"),
        (
            &dep["spec"]["selector"]["matchLabels"],
            "Deployment selector",
        ),
    ] {
        let sel = selector.as_object().unwrap();
        assert!(!sel.is_empty(), "{what} empty");
        for (k, v) in sel {
            assert_eq!(template_labels.get(k), Some(v), "{what} {k}={v}");
        }
    }
}

#[test]
fn the_tls_secrets_are_the_certificates_and_are_mounted_where_the_args_say() {
    let base = all("base");
    let svc = one(&base, "Service");
    let dep = one(&base, "Deployment");
    let certs = of_kind(&base, "Certificate");
    assert_eq!(certs.len(), 2);
    let issuers: BTreeSet<&str> = of_kind(&base, "Issuer")
        .iter()
        .map(|i| s(i, "/metadata/name"))
        .collect();
    let by_usage = |usage: &str| {
        let found: Vec<&&Value> = certs
            .iter()
            .filter(|c| {
                c["spec"]["usages"]
                    .as_array()
                    .is_some_and(|u| u.iter().any(|x| x == usage))
            })
            .collect();
        assert_eq!(found.len(), 1, "one Certificate with usage {usage}");
        *found[0]
    };
    let server = by_usage("server auth");
    let client = by_usage("client auth");
    for c in [server, client] {
        assert_eq!(c["spec"]["issuerRef"]["kind"], "Issuer");
        assert!(issuers.contains(s(c, "/spec/issuerRef/name")), "{c}");
    }
    let server_secret = s(server, "/spec/secretName");
    let client_secret = s(client, "/spec/secretName");
    let ann = &svc["metadata"]["annotations"];
    assert_eq!(s(ann, "/cnpg.io~1pluginServerSecret"), server_secret);
    assert_eq!(s(ann, "/cnpg.io~1pluginClientSecret"), client_secret);
    // The operator checks the server name against the Service's name.
    let svc_name = s(svc, "/metadata/name");
    assert!(
        server["spec"]["dnsNames"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == svc_name),
        "server certificate dnsNames must contain {svc_name}"
    );

    // Mounted exactly at the paths the args name.
    let pod = &dep["spec"]["template"]["spec"];
    let c = container(dep);
    let mount_dir = |secret: &str| -> String {
        let volumes: Vec<&Value> = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["secret"]["secretName"] == secret)
            .collect();
        assert_eq!(volumes.len(), 1, "one volume of Secret {secret}");
        let v = volumes[0];
        if let Some(items) = v["secret"]["items"].as_array() {
            assert!(items.iter().any(|i| i["key"] == "tls.crt"), "{v}");
        }
        let mount = by_name(&c["volumeMounts"], s(v, "/name"));
        assert_eq!(mount["readOnly"], true, "{mount}");
        s(mount, "/mountPath").trim_end_matches('/').to_string()
    };
    let sdir = mount_dir(server_secret);
    let cdir = mount_dir(client_secret);
    assert_eq!(arg(c, "server-cert"), format!("{sdir}/tls.crt"));
    assert_eq!(arg(c, "server-key"), format!("{sdir}/tls.key"));
    assert_eq!(arg(c, "client-ca"), format!("{cdir}/tls.crt"));
    // Only those two Secrets, nothing else, is mounted.
    assert_eq!(pod["volumes"].as_array().unwrap().len(), 2);
    assert_eq!(c["volumeMounts"].as_array().unwrap().len(), 2);
}

#[test]
fn the_kustomization_lists_the_files_and_sets_the_image_once() {
    let dir = deploy_dir().join("base");
    let kz = documents(&dir.join("kustomization.yaml")).remove(0);
    let listed: BTreeSet<String> = kz["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let present: BTreeSet<String> = yaml_files(&dir)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|n| n != "kustomization.yaml")
        .collect();
    assert_eq!(listed, present, "kustomization resources vs files in base/");

    let base = all("base");
    let dep = one(&base, "Deployment");
    let c = container(dep);
    let images = kz["images"].as_array().unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0]["name"], c["name"].clone());
    assert_eq!(
        images[0]["name"],
        c["image"].clone(),
        "images: names the container's image"
    );
    let env = by_name(&c["env"], "SIDECAR_IMAGE");
    assert!(!s(env, "/value").is_empty());

    // The replacement copies that container's image into SIDECAR_IMAGE.
    let r = by_name_replacement(&kz);
    assert_eq!(r["source"]["kind"], "Deployment");
    assert_eq!(r["source"]["name"], dep["metadata"]["name"]);
    let container_path = format!("spec.template.spec.containers.[name={}]", s(c, "/name"));
    assert_eq!(
        r["source"]["fieldPath"],
        format!("{container_path}.image").as_str()
    );
    let target = &r["targets"][0];
    assert_eq!(target["select"]["kind"], "Deployment");
    assert_eq!(target["select"]["name"], dep["metadata"]["name"]);
    assert_eq!(
        target["fieldPaths"],
        json!([format!("{container_path}.env.[name=SIDECAR_IMAGE].value")])
    );
}

fn by_name_replacement(kz: &Value) -> &Value {
    let r = kz["replacements"].as_array().expect("replacements");
    assert_eq!(r.len(), 1);
    &r[0]
}

/// With kubectl installed, the real render: the image and SIDECAR_IMAGE
/// are both `newName:newTag`, and everything lands in one namespace.
#[test]
fn kubectl_kustomize_renders_the_image_into_sidecar_image() {
    let dir = deploy_dir().join("base");
    let out = match std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            eprintln!("kubectl is not installed ({e}): render not checked");
            return;
        }
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .collect();
    let kz = documents(&dir.join("kustomization.yaml")).remove(0);
    let image = format!(
        "{}:{}",
        s(&kz, "/images/0/newName"),
        s(&kz, "/images/0/newTag")
    );
    let dep = one(&docs, "Deployment");
    let c = container(dep);
    assert_eq!(c["image"], image.as_str());
    assert_eq!(by_name(&c["env"], "SIDECAR_IMAGE")["value"], image.as_str());
    for d in &docs {
        assert_eq!(
            d["metadata"]["namespace"], kz["namespace"],
            "{}",
            d["metadata"]
        );
    }
    assert_eq!(docs.len(), 5, "Issuer, 2 Certificates, Deployment, Service");
}

// ---- examples ----

/// The Secrets of examples/secrets.yaml: name -> key -> value (stringData
/// values; keys of `data` with an empty value).
fn example_secrets() -> BTreeMap<String, BTreeMap<String, String>> {
    let docs = documents(&deploy_dir().join("examples/secrets.yaml"));
    let mut out = BTreeMap::new();
    for d in of_kind(&docs, "Secret") {
        let mut keys = BTreeMap::new();
        for (k, v) in d["stringData"].as_object().into_iter().flatten() {
            keys.insert(k.clone(), v.as_str().unwrap().to_string());
        }
        for k in d["data"].as_object().into_iter().flatten().map(|(k, _)| k) {
            keys.entry(k.clone()).or_default();
        }
        out.insert(s(d, "/metadata/name").to_string(), keys);
    }
    out
}

/// A Cluster as CloudNativePG sends it: apiVersion/kind set, in a namespace.
fn as_sent(cluster: &Value) -> Value {
    let mut c = cluster.clone();
    c["apiVersion"] = json!("postgresql.cnpg.io/v1");
    c["kind"] = json!("Cluster");
    if c.pointer("/metadata/namespace").is_none() {
        c["metadata"]["namespace"] = json!("db");
    }
    c
}

fn example_clusters() -> Vec<Value> {
    let docs = all("examples");
    let clusters: Vec<Value> = of_kind(&docs, "Cluster").into_iter().cloned().collect();
    assert_eq!(
        clusters.len(),
        3,
        "cluster-rgw, recovery-to-time, replica-cluster"
    );
    clusters
}

/// Every `parameters` map of this plugin in the Cluster, with where it is.
fn plugin_param_maps(cluster: &Value) -> Vec<(String, &Value)> {
    let mut out = Vec::new();
    for p in cluster["spec"]["plugins"].as_array().into_iter().flatten() {
        out.push(("spec.plugins".to_string(), &p["parameters"]));
    }
    for e in cluster["spec"]["externalClusters"]
        .as_array()
        .into_iter()
        .flatten()
    {
        out.push((
            format!("externalClusters[{}]", s(e, "/name")),
            &e["plugin"]["parameters"],
        ));
    }
    out
}

/// The sidecar's environment as the kubelet makes it from the parameters:
/// `envFrom` the credentials Secret, PITR_CA_BUNDLE when caSecret is set.
fn sidecar_env(params: &Params, pod: &str) -> SidecarEnv {
    let secrets = example_secrets();
    let creds = params
        .get(param::CREDENTIALS_SECRET)
        .map(|n| secrets[n].clone())
        .unwrap_or_default();
    SidecarEnv {
        pod_name: Some(pod.into()),
        s3_bucket: creds.get("S3_BUCKET").cloned(),
        s3_path: creds.get("S3_PATH").cloned(),
        s3_endpoint: creds.get("S3_ENDPOINT").cloned(),
        s3_region: creds.get("S3_REGION").cloned(),
        ca_bundle: params.get(param::CA_SECRET).map(|_| {
            format!(
                "{CA_PATH}/{}",
                params.get(param::CA_KEY).unwrap_or(DEFAULT_CA_KEY)
            )
            .into()
        }),
        ..Default::default()
    }
}

#[test]
fn example_clusters_name_the_plugin_and_only_known_parameters() {
    let secrets = example_secrets();
    for cluster in example_clusters() {
        let name = s(&cluster, "/metadata/name").to_string();
        for p in cluster["spec"]["plugins"].as_array().into_iter().flatten() {
            assert_eq!(p["name"], PLUGIN_NAME, "{name}: spec.plugins");
        }
        for e in cluster["spec"]["externalClusters"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert_eq!(e["plugin"]["name"], PLUGIN_NAME, "{name}: externalClusters");
        }
        let maps = plugin_param_maps(&cluster);
        assert!(!maps.is_empty(), "{name} uses the plugin nowhere");
        for (at, params) in maps {
            // The plugin's own parsing: an unknown name fails here.
            let p = Params::from_json(Some(params), &at).unwrap_or_else(|e| panic!("{name}: {e}"));
            for key in params.as_object().unwrap().keys() {
                assert!(param::ALL.contains(&key.as_str()), "{name}: {at}: {key}");
            }
            if let Some(secret) = p.get(param::CREDENTIALS_SECRET) {
                assert!(
                    secrets.contains_key(secret),
                    "{name}: {at}: Secret {secret}"
                );
            }
            if let Some(secret) = p.get(param::CA_SECRET) {
                let key = p.get(param::CA_KEY).unwrap_or(DEFAULT_CA_KEY);
                let keys = secrets
                    .get(secret)
                    .unwrap_or_else(|| panic!("{name}: {at}: no Secret {secret}"));
                assert!(
                    keys.contains_key(key),
                    "{name}: {at}: no key {key} in {secret}"
                );
            }
        }
        for src in [
            cluster.pointer("/spec/bootstrap/recovery/source"),
            cluster.pointer("/spec/replica/source"),
        ]
        .into_iter()
        .flatten()
        {
            let src = src.as_str().unwrap();
            by_name(&cluster["spec"]["externalClusters"], src);
        }
    }
}

/// The examples' settings, resolved by the plugin's settings code with the
/// environment the kubelet gives the sidecar from secrets.yaml.
#[test]
fn example_settings_resolve_to_the_example_store() {
    let secrets = example_secrets();
    let s3 = &secrets["cnpg-backup-s3"];
    let expected_repo = format!("s3://{}/{}", s3["S3_BUCKET"], s3["S3_PATH"]);
    let mut servers = BTreeMap::new();
    for cluster in example_clusters() {
        let sent = as_sent(&cluster);
        let c = Cluster::parse(&serde_json::to_vec(&sent).unwrap()).unwrap();
        let name = c.name().to_string();
        let pod = format!("{name}-1");
        if c.plugin_enabled() {
            let env = sidecar_env(&c.own_params().unwrap(), &pod);
            let w = for_archive(&c, &env).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(w.repo.location.to_string(), expected_repo, "{name}");
            assert_eq!(
                w.repo.endpoint_url.as_deref(),
                Some(s3["S3_ENDPOINT"].as_str())
            );
            assert!(w.repo.ca_file.is_some(), "{name}: the RGW CA");
            servers.insert(name.clone(), w.repo.server_name.clone());
        }
        // The archive a bootstrapping pod (no primary yet) and a designated
        // primary read.
        for (status, source) in [
            (json!({}), c.recovery_source()),
            (json!({"currentPrimary": pod}), c.replica_source()),
        ] {
            let Some(source) = source else { continue };
            let mut v = sent.clone();
            v["status"] = status;
            let c = Cluster::parse(&serde_json::to_vec(&v).unwrap()).unwrap();
            let params = c.external_params(source).unwrap().unwrap();
            let w = for_restore(&c, &sidecar_env(&params, &pod))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(w.repo.location.to_string(), expected_repo, "{name}");
            assert_eq!(
                w.repo.server_name, "pg-main",
                "{name} reads pg-main's history"
            );
        }
    }
    // Every Cluster archives under a server name of its own.
    assert_eq!(
        servers,
        BTreeMap::from([
            ("pg-main".to_string(), "pg-main".to_string()),
            ("pg-replica".to_string(), "pg-replica".to_string()),
            ("pg-restored".to_string(), "pg-restored".to_string()),
        ])
    );
}

#[test]
fn the_scheduled_backup_targets_an_example_cluster_through_the_plugin() {
    let docs = all("examples");
    let clusters: BTreeSet<&str> = of_kind(&docs, "Cluster")
        .iter()
        .map(|c| s(c, "/metadata/name"))
        .collect();
    let sb = one(&docs, "ScheduledBackup");
    assert!(clusters.contains(s(sb, "/spec/cluster/name")), "{sb}");
    assert_eq!(sb["spec"]["method"], "plugin");
    assert_eq!(sb["spec"]["pluginConfiguration"]["name"], PLUGIN_NAME);
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

/// The patched object, by the real lifecycle code and a JSON Patch library.
fn injected(cluster: &Value, object: &Value, op: OpType) -> Option<Value> {
    let injection = Injection {
        image: "registry.example.com/pitr/pitr-cnpg:0.1.0".into(),
    };
    let ops = patch(
        op,
        &serde_json::to_vec(cluster).unwrap(),
        &serde_json::to_vec(object).unwrap(),
        &injection,
    )
    .unwrap_or_else(|e| panic!("{}: {e}", cluster["metadata"]["name"]))?;
    let ops: json_patch::Patch = serde_json::from_value(ops).unwrap();
    let mut doc = object.clone();
    json_patch::patch(&mut doc, &ops).unwrap();
    Some(doc)
}

/// The sidecar got the credentials Secret and the CA Secret of `params`.
fn assert_sidecar_uses(spec: &Value, params: &Params, what: &str) {
    let sidecar = by_name(&spec["initContainers"], SIDECAR_NAME);
    assert_eq!(sidecar["restartPolicy"], "Always", "{what}");
    let creds = params.get(param::CREDENTIALS_SECRET).unwrap();
    assert_eq!(
        sidecar["envFrom"],
        json!([{"secretRef": {"name": creds}}]),
        "{what}"
    );
    let ca = params.get(param::CA_SECRET).unwrap();
    let key = params.get(param::CA_KEY).unwrap_or(DEFAULT_CA_KEY);
    let volume = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["secret"]["secretName"] == ca)
        .unwrap_or_else(|| panic!("{what}: no volume of Secret {ca}"));
    let mount = by_name(&sidecar["volumeMounts"], s(volume, "/name"));
    assert_eq!(mount["readOnly"], true);
    let bundle = format!("{}/{key}", s(mount, "/mountPath"));
    assert_eq!(
        by_name(&sidecar["env"], "PITR_CA_BUNDLE")["value"],
        bundle.as_str(),
        "{what}"
    );
    assert!(
        volume["secret"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["key"] == key),
        "{what}"
    );
    // And PostgreSQL shares the plugin socket directory.
    let postgres_or_job = spec["containers"][0]["volumeMounts"].as_array().unwrap();
    assert!(postgres_or_job.iter().any(|m| m["mountPath"] == "/plugins"));
}

#[test]
fn example_clusters_drive_the_sidecar_injection() {
    let pod = fixture("pod.json");
    let job = fixture("job.json");
    for cluster in example_clusters() {
        let sent = as_sent(&cluster);
        let c = Cluster::parse(&serde_json::to_vec(&sent).unwrap()).unwrap();
        let name = c.name().to_string();
        // Every example's Pods get the sidecar with their own entry's Secrets.
        let out = injected(&sent, &pod, OpType::Create)
            .unwrap_or_else(|| panic!("{name}: the Pod got no sidecar"));
        assert_sidecar_uses(&out["spec"], &c.own_params().unwrap(), &name);
        // EVALUATE gives the same Pod (no endless rolling).
        assert_eq!(injected(&sent, &pod, OpType::Evaluate), Some(out));

        // A Cluster bootstrapped from a recovery source: its recovery Job
        // gets the restore sidecar with the source's Secrets.
        match c.recovery_source() {
            Some(src) => {
                let out = injected(&sent, &job, OpType::Create)
                    .unwrap_or_else(|| panic!("{name}: the recovery Job got no sidecar"));
                let spec = &out["spec"]["template"]["spec"];
                assert_sidecar_uses(spec, &c.external_params(src).unwrap().unwrap(), &name);
                assert_eq!(
                    by_name(&spec["initContainers"], SIDECAR_NAME)["args"],
                    json!(["restore"])
                );
            }
            None => assert_eq!(injected(&sent, &job, OpType::Create), None, "{name}"),
        }
    }
}
