//! OperatorLifecycle: inject the sidecar into the instance Pods of Clusters
//! that enable this plugin, and into recovery Jobs whose recovery source
//! uses it. The answer is an RFC 6902 JSON Patch against exactly the object
//! CloudNativePG sent, built from ordered JSON values only, so the same
//! input gives the same bytes (EVALUATE compares them to decide whether a
//! running Pod has drifted). Empty bytes mean "no change".

use serde_json::{json, Value};
use tonic::{Request, Response, Status};

use crate::proto::lifecycle::operator_lifecycle_server::OperatorLifecycle;
use crate::proto::lifecycle::operator_operation_type::Type as OpType;
use crate::proto::lifecycle::{
    OperatorLifecycleCapabilities, OperatorLifecycleCapabilitiesRequest,
    OperatorLifecycleCapabilitiesResponse, OperatorLifecycleRequest, OperatorLifecycleResponse,
    OperatorOperationType,
};
use crate::settings::{param, Cluster, Params, SettingsError};

/// The injected container's name.
pub const SIDECAR_NAME: &str = "pitr-cnpg";
/// Where the image puts the binary (the startup probe runs it).
pub const SIDECAR_BINARY: &str = "/usr/local/bin/pitr-cnpg";
/// The shared emptyDir holding the plugin socket.
pub const PLUGINS_VOLUME: &str = "plugins";
pub const PLUGINS_PATH: &str = "/plugins";
/// The Secret volume with the S3 endpoint's CA (parameter `caSecret`).
pub const CA_VOLUME: &str = "pitr-ca";
pub const CA_PATH: &str = "/pitr-ca";
pub const DEFAULT_CA_KEY: &str = "ca.crt";
/// The job-role label values whose Jobs get the restore sidecar.
pub const RECOVERY_JOB_ROLES: [&str; 2] = ["full-recovery", "snapshot-recovery"];

type Result<T> = std::result::Result<T, SettingsError>;

/// What the operator-side plugin was started with.
#[derive(Debug, Clone)]
pub struct Injection {
    /// The sidecar's image (`SIDECAR_IMAGE`).
    pub image: String,
}

/// What this plugin hooks: Pods on CREATE and EVALUATE, Jobs on CREATE.
pub fn capabilities() -> Vec<OperatorLifecycleCapabilities> {
    let ops = |types: &[OpType]| {
        types
            .iter()
            .map(|t| OperatorOperationType { r#type: *t as i32 })
            .collect()
    };
    vec![
        OperatorLifecycleCapabilities {
            group: String::new(),
            kind: "Pod".into(),
            operation_types: ops(&[OpType::Create, OpType::Evaluate]),
        },
        OperatorLifecycleCapabilities {
            group: "batch".into(),
            kind: "Job".into(),
            operation_types: ops(&[OpType::Create]),
        },
    ]
}

/// The patch for one hook call: `None` when nothing is to change.
pub fn patch(
    op: OpType,
    cluster: &[u8],
    object: &[u8],
    injection: &Injection,
) -> Result<Option<Value>> {
    let cluster = Cluster::parse(cluster)?;
    let object: Value = serde_json::from_slice(object).map_err(|e| {
        SettingsError(format!(
            "the object sent to LifecycleHook is not valid JSON: {e}"
        ))
    })?;
    let api_version = object.get("apiVersion").and_then(Value::as_str);
    let kind = object.get("kind").and_then(Value::as_str);
    match (api_version, kind) {
        (Some("v1"), Some("Pod")) if matches!(op, OpType::Create | OpType::Evaluate) => {
            if !cluster.plugin_enabled() {
                return Ok(None);
            }
            let params = cluster.own_params()?;
            let target = Target {
                spec_ptr: "/spec",
                main_container: "postgres",
                args: "instance",
            };
            target.inject(&object, &cluster, &params, injection)
        }
        (Some("batch/v1"), Some("Job")) if op == OpType::Create => {
            let Some(role) = job_role(&object) else {
                return Ok(None);
            };
            if !RECOVERY_JOB_ROLES.contains(&role) {
                return Ok(None);
            }
            let Some(params) = cluster
                .recovery_source()
                .and_then(|src| cluster.external_params(src))
            else {
                return Ok(None);
            };
            let target = Target {
                spec_ptr: "/spec/template/spec",
                main_container: role,
                args: "restore",
            };
            target.inject(&object, &cluster, &params?, injection)
        }
        _ => Ok(None),
    }
}

/// The value of the Job's label whose key ends in `/jobRole`.
fn job_role(job: &Value) -> Option<&str> {
    let labels = |ptr: &str| job.pointer(ptr).and_then(Value::as_object);
    [
        labels("/metadata/labels"),
        labels("/spec/template/metadata/labels"),
    ]
    .into_iter()
    .flatten()
    .flat_map(|m| m.iter())
    .find(|(k, _)| k.ends_with("/jobRole"))
    .and_then(|(_, v)| v.as_str())
}

/// Where in the object the pod spec is, and what to inject.
struct Target<'a> {
    spec_ptr: &'a str,
    main_container: &'a str,
    args: &'a str,
}

fn named<'v>(list: Option<&'v Value>, name: &str) -> Option<(usize, &'v Value)> {
    list.and_then(Value::as_array)?
        .iter()
        .enumerate()
        .find(|(_, v)| v.get("name").and_then(Value::as_str) == Some(name))
}

/// An `add` of `items` to the array at `ptr`: the array itself if absent,
/// else each item at its end.
fn add_all(ops: &mut Vec<Value>, ptr: &str, present: bool, items: Vec<Value>) {
    if items.is_empty() {
        return;
    }
    if present {
        for item in items {
            ops.push(json!({"op": "add", "path": format!("{ptr}/-"), "value": item}));
        }
    } else {
        ops.push(json!({"op": "add", "path": ptr, "value": items}));
    }
}

/// `name=value` replacing an entry of the same name, or appended.
fn set_env(env: &mut Vec<Value>, name: &str, value: &str) {
    let entry = json!({"name": name, "value": value});
    match env
        .iter_mut()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
    {
        Some(slot) => *slot = entry,
        None => env.push(entry),
    }
}

fn dns_name(params: &Params, name: &str) -> Result<Option<String>> {
    let Some(v) = params.get(name) else {
        return Ok(None);
    };
    let ok = v.len() <= 253
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !v.starts_with(['-', '.'])
        && !v.ends_with(['-', '.']);
    if ok {
        Ok(Some(v.to_string()))
    } else {
        Err(SettingsError(format!(
            "parameter {name} = '{v}' is not a Secret name (lowercase letters, digits, '-', '.')"
        )))
    }
}

fn resources(params: &Params) -> Result<Option<Value>> {
    let quantity = |name: &str| -> Result<Option<Value>> {
        let Some(v) = params.get(name) else {
            return Ok(None);
        };
        let ok = v.starts_with(|c: char| c.is_ascii_digit())
            && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '.');
        if ok {
            Ok(Some(Value::String(v.into())))
        } else {
            Err(SettingsError(format!(
                "parameter {name} = '{v}' is not a Kubernetes quantity (e.g. 100m, 256Mi)"
            )))
        }
    };
    let pair = |cpu: &str, memory: &str| -> Result<serde_json::Map<String, Value>> {
        let mut m = serde_json::Map::new();
        if let Some(v) = quantity(cpu)? {
            m.insert("cpu".into(), v);
        }
        if let Some(v) = quantity(memory)? {
            m.insert("memory".into(), v);
        }
        Ok(m)
    };
    let requests = pair(param::CPU_REQUEST, param::MEMORY_REQUEST)?;
    let limits = pair(param::CPU_LIMIT, param::MEMORY_LIMIT)?;
    let mut out = serde_json::Map::new();
    if !limits.is_empty() {
        out.insert("limits".into(), Value::Object(limits));
    }
    if !requests.is_empty() {
        out.insert("requests".into(), Value::Object(requests));
    }
    Ok((!out.is_empty()).then_some(Value::Object(out)))
}

impl Target<'_> {
    fn inject(
        &self,
        object: &Value,
        cluster: &Cluster,
        params: &Params,
        injection: &Injection,
    ) -> Result<Option<Value>> {
        let spec = object
            .pointer(self.spec_ptr)
            .ok_or_else(|| SettingsError(format!("the object has no {}", self.spec_ptr)))?;
        if named(spec.get("initContainers"), SIDECAR_NAME).is_some()
            || named(spec.get("containers"), SIDECAR_NAME).is_some()
        {
            return Ok(None); // already injected
        }
        let (main_index, main) =
            named(spec.get("containers"), self.main_container).ok_or_else(|| {
                SettingsError(format!(
                    "the object has no container named '{}' to put the {SIDECAR_NAME} sidecar \
                     beside",
                    self.main_container
                ))
            })?;

        let credentials = dns_name(params, param::CREDENTIALS_SECRET)?;
        let ca_secret = dns_name(params, param::CA_SECRET)?;
        let ca_key = params.get(param::CA_KEY).unwrap_or(DEFAULT_CA_KEY);
        if ca_key.contains('/') || ca_key == "." || ca_key == ".." {
            return Err(SettingsError(format!(
                "parameter {} = '{ca_key}' is not a Secret key",
                param::CA_KEY
            )));
        }
        let resources = resources(params)?;

        // The sidecar sees what PostgreSQL sees: its env and volumes.
        let mut env: Vec<Value> = main
            .get("env")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        set_env(&mut env, "NAMESPACE", cluster.namespace());
        set_env(&mut env, "CLUSTER_NAME", cluster.name());
        if ca_secret.is_some() {
            set_env(&mut env, "PITR_CA_BUNDLE", &format!("{CA_PATH}/{ca_key}"));
        }
        let main_mounts = main.get("volumeMounts").and_then(Value::as_array);
        let main_has_plugins = main_mounts
            .into_iter()
            .flatten()
            .any(|m| m.get("mountPath").and_then(Value::as_str) == Some(PLUGINS_PATH));
        let plugins_mount = json!({"name": PLUGINS_VOLUME, "mountPath": PLUGINS_PATH});
        let mut mounts: Vec<Value> = main_mounts.cloned().unwrap_or_default();
        if !main_has_plugins {
            mounts.push(plugins_mount.clone());
        }
        if ca_secret.is_some() {
            mounts.push(json!({"name": CA_VOLUME, "mountPath": CA_PATH, "readOnly": true}));
        }

        let mut sidecar = json!({
            "name": SIDECAR_NAME,
            "image": injection.image,
            "args": [self.args],
            "env": env,
            "volumeMounts": mounts,
            "restartPolicy": "Always",
            "startupProbe": {
                "exec": {"command": [SIDECAR_BINARY, "healthcheck", "unix"]},
                "periodSeconds": 1,
                "failureThreshold": 30,
                "timeoutSeconds": 5
            },
            "securityContext": {
                "allowPrivilegeEscalation": false,
                "runAsNonRoot": true,
                "readOnlyRootFilesystem": true,
                "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"}
            }
        });
        if let Some(policy) = cluster
            .json()
            .pointer("/spec/imagePullPolicy")
            .and_then(Value::as_str)
        {
            sidecar["imagePullPolicy"] = json!(policy);
        }
        if let Some(secret) = &credentials {
            sidecar["envFrom"] = json!([{"secretRef": {"name": secret}}]);
        }
        if let Some(r) = resources {
            sidecar["resources"] = r;
        }

        let ptr = self.spec_ptr;
        let mut ops = Vec::new();
        let mut volumes = Vec::new();
        if named(spec.get("volumes"), PLUGINS_VOLUME).is_none() {
            volumes.push(json!({"name": PLUGINS_VOLUME, "emptyDir": {}}));
        }
        if let Some(secret) = &ca_secret {
            if named(spec.get("volumes"), CA_VOLUME).is_none() {
                volumes.push(json!({"name": CA_VOLUME, "secret": {
                    "secretName": secret,
                    "items": [{"key": ca_key, "path": ca_key}]
                }}));
            }
        }
        add_all(
            &mut ops,
            &format!("{ptr}/volumes"),
            spec.get("volumes").is_some(),
            volumes,
        );
        if !main_has_plugins {
            add_all(
                &mut ops,
                &format!("{ptr}/containers/{main_index}/volumeMounts"),
                main_mounts.is_some(),
                vec![plugins_mount],
            );
        }
        add_all(
            &mut ops,
            &format!("{ptr}/initContainers"),
            spec.get("initContainers").is_some(),
            vec![sidecar],
        );
        Ok(Some(Value::Array(ops)))
    }
}

pub struct LifecycleService {
    pub injection: Injection,
}

#[tonic::async_trait]
impl OperatorLifecycle for LifecycleService {
    async fn get_capabilities(
        &self,
        _: Request<OperatorLifecycleCapabilitiesRequest>,
    ) -> std::result::Result<Response<OperatorLifecycleCapabilitiesResponse>, Status> {
        Ok(Response::new(OperatorLifecycleCapabilitiesResponse {
            lifecycle_capabilities: capabilities(),
        }))
    }

    async fn lifecycle_hook(
        &self,
        request: Request<OperatorLifecycleRequest>,
    ) -> std::result::Result<Response<OperatorLifecycleResponse>, Status> {
        let req = request.into_inner();
        let op = req
            .operation_type
            .and_then(|o| OpType::try_from(o.r#type).ok())
            .unwrap_or(OpType::Unspecified);
        let json_patch = match patch(
            op,
            &req.cluster_definition,
            &req.object_definition,
            &self.injection,
        ) {
            Ok(Some(p)) => serde_json::to_vec(&p).expect("a JSON value serialises"),
            Ok(None) => Vec::new(),
            Err(e) => return Err(Status::invalid_argument(e.0)),
        };
        Ok(Response::new(OperatorLifecycleResponse { json_patch }))
    }
}
