//! Sidecar injection: the RFC 6902 patch LifecycleHook answers, applied
//! with a JSON Patch library to Pod and Job JSON shaped like those
//! CloudNativePG 1.30 creates (fixtures/).

use pitr_cnpg::lifecycle::{capabilities, Injection, LifecycleService};
use pitr_cnpg::proto::lifecycle::operator_lifecycle_server::OperatorLifecycle;
use pitr_cnpg::proto::lifecycle::operator_operation_type::Type as OpType;
use pitr_cnpg::proto::lifecycle::{OperatorLifecycleRequest, OperatorOperationType};
use serde_json::{json, Value};
use tonic::Request;

const IMAGE: &str = "registry.example/pitr-cnpg:0.1.0";

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

fn service() -> LifecycleService {
    LifecycleService {
        injection: Injection {
            image: IMAGE.into(),
        },
    }
}

/// The json_patch bytes LifecycleHook answers.
async fn hook(op: OpType, cluster: &Value, object: &[u8]) -> Result<Vec<u8>, tonic::Status> {
    let req = OperatorLifecycleRequest {
        operation_type: Some(OperatorOperationType { r#type: op as i32 }),
        cluster_definition: serde_json::to_vec(cluster).unwrap(),
        object_definition: object.to_vec(),
    };
    service()
        .lifecycle_hook(Request::new(req))
        .await
        .map(|r| r.into_inner().json_patch)
}

fn apply(object: &Value, patch_bytes: &[u8]) -> Value {
    let patch: json_patch::Patch = serde_json::from_slice(patch_bytes).unwrap();
    let mut doc = object.clone();
    json_patch::patch(&mut doc, &patch).unwrap();
    doc
}

fn by_name<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {list}"))
}

fn expected_probe_and_security() -> (Value, Value) {
    (
        json!({
            "exec": {"command": ["/usr/local/bin/pitr-cnpg", "healthcheck", "unix"]},
            "periodSeconds": 1, "failureThreshold": 30, "timeoutSeconds": 5
        }),
        json!({
            "allowPrivilegeEscalation": false,
            "runAsNonRoot": true,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}
        }),
    )
}

#[tokio::test]
async fn a_pod_gets_the_native_sidecar() {
    let cluster = fixture("cluster.json");
    let pod = fixture("pod.json");
    let bytes = serde_json::to_vec(&pod).unwrap();
    let patch = hook(OpType::Create, &cluster, &bytes).await.unwrap();
    assert!(patch.starts_with(b"["), "an RFC 6902 array");
    let out = apply(&pod, &patch);

    let spec = &out["spec"];
    let init = spec["initContainers"].as_array().unwrap();
    assert_eq!(init.len(), 2);
    assert_eq!(
        init[0]["name"], "bootstrap-controller",
        "CNPG's own stays first"
    );
    let sidecar = &init[1];
    assert_eq!(sidecar["name"], "pitr-cnpg");
    assert_eq!(sidecar["image"], IMAGE);
    assert_eq!(sidecar["imagePullPolicy"], "IfNotPresent");
    assert_eq!(sidecar["args"], json!(["instance"]));
    assert_eq!(sidecar["restartPolicy"], "Always");
    let (probe, security) = expected_probe_and_security();
    assert_eq!(sidecar["startupProbe"], probe);
    assert_eq!(sidecar["securityContext"], security);
    assert_eq!(
        sidecar["resources"],
        json!({"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}})
    );
    assert_eq!(
        sidecar["envFrom"],
        json!([{"secretRef": {"name": "pg-main-s3"}}])
    );

    // The main container's env, NAMESPACE and CLUSTER_NAME set once, the CA path.
    let postgres = by_name(&pod["spec"]["containers"], "postgres");
    let mut env = postgres["env"].as_array().unwrap().clone();
    env.push(json!({"name": "PITR_CA_BUNDLE", "value": "/pitr-ca/ca.crt"}));
    assert_eq!(sidecar["env"], Value::Array(env));

    // Its volume mounts, the socket directory, the CA read-only.
    let mut mounts = postgres["volumeMounts"].as_array().unwrap().clone();
    mounts.push(json!({"name": "plugins", "mountPath": "/plugins"}));
    mounts.push(json!({"name": "pitr-ca", "mountPath": "/pitr-ca", "readOnly": true}));
    assert_eq!(sidecar["volumeMounts"], Value::Array(mounts));

    // The main container sees the socket directory too.
    let postgres_out = by_name(&spec["containers"], "postgres");
    let m = postgres_out["volumeMounts"].as_array().unwrap();
    assert_eq!(
        m.last().unwrap(),
        &json!({"name": "plugins", "mountPath": "/plugins"})
    );
    assert_eq!(
        m.len(),
        postgres["volumeMounts"].as_array().unwrap().len() + 1
    );
    assert_eq!(
        by_name(&spec["volumes"], "plugins"),
        &json!({"name": "plugins", "emptyDir": {}})
    );
    assert_eq!(
        by_name(&spec["volumes"], "pitr-ca"),
        &json!({"name": "pitr-ca", "secret": {"secretName": "rgw-ca",
            "items": [{"key": "ca.crt", "path": "ca.crt"}]}})
    );

    // Nothing else changed.
    let mut undo = out.clone();
    undo["spec"]["initContainers"].as_array_mut().unwrap().pop();
    let vols = undo["spec"]["volumes"].as_array_mut().unwrap();
    vols.retain(|v| v["name"] != "plugins" && v["name"] != "pitr-ca");
    undo["spec"]["containers"][0]["volumeMounts"]
        .as_array_mut()
        .unwrap()
        .pop();
    assert_eq!(undo, pod);
}

#[tokio::test]
async fn the_patch_is_deterministic_and_evaluate_matches_create() {
    let cluster = fixture("cluster.json");
    let pod = fixture("pod.json");
    let compact = serde_json::to_vec(&pod).unwrap();
    let pretty = serde_json::to_vec_pretty(&pod).unwrap();
    let first = hook(OpType::Create, &cluster, &compact).await.unwrap();
    for _ in 0..5 {
        assert_eq!(
            hook(OpType::Create, &cluster, &compact).await.unwrap(),
            first
        );
    }
    assert_eq!(
        hook(OpType::Evaluate, &cluster, &compact).await.unwrap(),
        first
    );
    assert_eq!(
        hook(OpType::Evaluate, &cluster, &pretty).await.unwrap(),
        first,
        "the same object, formatted otherwise"
    );
}

#[tokio::test]
async fn an_injected_pod_and_other_clusters_get_an_empty_patch() {
    let cluster = fixture("cluster.json");
    let pod = fixture("pod.json");
    let patch = hook(OpType::Create, &cluster, &serde_json::to_vec(&pod).unwrap())
        .await
        .unwrap();
    let injected = apply(&pod, &patch);
    let again = hook(
        OpType::Evaluate,
        &cluster,
        &serde_json::to_vec(&injected).unwrap(),
    )
    .await
    .unwrap();
    assert!(
        again.is_empty(),
        "already injected: {}",
        String::from_utf8_lossy(&again)
    );

    let pod_bytes = serde_json::to_vec(&pod).unwrap();
    let without = fixture("cluster-without-plugin.json");
    assert!(hook(OpType::Create, &without, &pod_bytes)
        .await
        .unwrap()
        .is_empty());
    let mut disabled = cluster.clone();
    disabled["spec"]["plugins"][0]["enabled"] = json!(false);
    assert!(hook(OpType::Create, &disabled, &pod_bytes)
        .await
        .unwrap()
        .is_empty());
    // Hooks the plugin did not declare change nothing.
    assert!(hook(OpType::Delete, &cluster, &pod_bytes)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_pod_without_volume_arrays_gets_them_created() {
    let mut cluster = fixture("cluster.json");
    cluster["spec"]["plugins"][0]["parameters"] = json!({"repository": "s3://backups/pg"});
    let mut pod = fixture("pod.json");
    let spec = pod["spec"].as_object_mut().unwrap();
    spec.remove("volumes");
    spec.remove("initContainers");
    pod["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("volumeMounts");
    let patch = hook(OpType::Create, &cluster, &serde_json::to_vec(&pod).unwrap())
        .await
        .unwrap();
    let out = apply(&pod, &patch);
    assert_eq!(
        out["spec"]["volumes"],
        json!([{"name": "plugins", "emptyDir": {}}])
    );
    assert_eq!(
        out["spec"]["containers"][0]["volumeMounts"],
        json!([{"name": "plugins", "mountPath": "/plugins"}])
    );
    let sidecar = &out["spec"]["initContainers"][0];
    assert_eq!(sidecar["name"], "pitr-cnpg");
    assert!(sidecar.get("envFrom").is_none() && sidecar.get("resources").is_none());
    assert_eq!(
        sidecar["volumeMounts"],
        json!([{"name": "plugins", "mountPath": "/plugins"}])
    );
}

#[tokio::test]
async fn a_recovery_job_gets_the_restore_sidecar() {
    let cluster = fixture("cluster-recovery.json");
    let job = fixture("job.json");
    let bytes = serde_json::to_vec(&job).unwrap();
    let patch = hook(OpType::Create, &cluster, &bytes).await.unwrap();
    let out = apply(&job, &patch);
    let spec = &out["spec"]["template"]["spec"];
    let sidecar = by_name(&spec["initContainers"], "pitr-cnpg");
    assert_eq!(sidecar["args"], json!(["restore"]));
    assert_eq!(sidecar["restartPolicy"], "Always");
    assert_eq!(
        sidecar["envFrom"],
        json!([{"secretRef": {"name": "pg-main-s3"}}])
    );
    let main = by_name(
        &job["spec"]["template"]["spec"]["containers"],
        "full-recovery",
    );
    assert_eq!(sidecar["env"], main["env"], "the job container's env");
    let mut mounts = main["volumeMounts"].as_array().unwrap().clone();
    mounts.push(json!({"name": "plugins", "mountPath": "/plugins"}));
    assert_eq!(sidecar["volumeMounts"], Value::Array(mounts));
    let main_out = by_name(&spec["containers"], "full-recovery");
    assert!(main_out["volumeMounts"]
        .as_array()
        .unwrap()
        .contains(&json!({"name": "plugins", "mountPath": "/plugins"})));
    assert!(by_name(&spec["volumes"], "plugins")["emptyDir"].is_object());
    let (probe, security) = expected_probe_and_security();
    assert_eq!(sidecar["startupProbe"], probe);
    assert_eq!(sidecar["securityContext"], security);

    // Same bytes again.
    assert_eq!(hook(OpType::Create, &cluster, &bytes).await.unwrap(), patch);
}

#[tokio::test]
async fn other_jobs_and_other_recovery_sources_are_left_alone() {
    let cluster = fixture("cluster-recovery.json");
    let job = fixture("job.json");
    let mut initdb = job.clone();
    initdb["metadata"]["labels"]["cnpg.io/jobRole"] = json!("initdb");
    initdb["spec"]["template"]["metadata"]["labels"]["cnpg.io/jobRole"] = json!("initdb");
    initdb["spec"]["template"]["spec"]["containers"][0]["name"] = json!("initdb");
    let b = serde_json::to_vec(&initdb).unwrap();
    assert!(hook(OpType::Create, &cluster, &b).await.unwrap().is_empty());

    let mut barman = cluster.clone();
    barman["spec"]["externalClusters"][0]["plugin"]["name"] =
        json!("barman-cloud.cloudnative-pg.io");
    let b = serde_json::to_vec(&job).unwrap();
    assert!(hook(OpType::Create, &barman, &b).await.unwrap().is_empty());
    // The Pod cluster (no recovery) does not touch recovery Jobs either.
    assert!(hook(OpType::Create, &fixture("cluster.json"), &b)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn bad_parameters_fail_the_hook_with_their_name() {
    let mut cluster = fixture("cluster.json");
    cluster["spec"]["plugins"][0]["parameters"]["credentialsSecret"] = json!("Not_A_Name");
    let pod = serde_json::to_vec(&fixture("pod.json")).unwrap();
    let e = hook(OpType::Create, &cluster, &pod).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("credentialsSecret"), "{}", e.message());
    let mut cluster = fixture("cluster.json");
    cluster["spec"]["plugins"][0]["parameters"]["memoryLimit"] = json!("lots");
    let e = hook(OpType::Create, &cluster, &pod).await.unwrap_err();
    assert!(e.message().contains("memoryLimit"), "{}", e.message());
}

#[test]
fn capabilities_are_pods_on_create_and_evaluate_and_jobs_on_create() {
    let caps = capabilities();
    let summary: Vec<(String, String, Vec<i32>)> = caps
        .into_iter()
        .map(|c| {
            (
                c.group,
                c.kind,
                c.operation_types.into_iter().map(|o| o.r#type).collect(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "".into(),
                "Pod".into(),
                vec![OpType::Create as i32, OpType::Evaluate as i32]
            ),
            ("batch".into(), "Job".into(), vec![OpType::Create as i32]),
        ]
    );
}
