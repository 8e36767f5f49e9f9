//! `pitr-cnpg convert`: translate plugin-barman-cloud's `ObjectStore`
//! (`barmancloud.cnpg.io/v1`) and CloudNativePG's in-tree
//! `spec.backup.barmanObjectStore` into the `spec.plugins[]` (and
//! `externalClusters[]`) entries of pitr-cnpg, so a Cluster moves to pitr
//! without losing its history: same bucket, same prefix, same server name.
//!
//! Pure translation of the input: nothing is looked up (no Secret is read)
//! and nothing is decided here that pitr decides. Every field of a store's
//! configuration is either mapped to a parameter or reported with the
//! reason it is not; the parameters produced are checked with the plugin's
//! own settings code ([`Params::from_json`], [`resolve`]) and anything that
//! code refuses is reported too.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::settings::{param, resolve, Params, SidecarEnv};
use crate::PLUGIN_NAME;

/// The name plugin-barman-cloud registers (its `spec.plugins[].name`).
pub const BARMAN_PLUGIN_NAME: &str = "barman-cloud.cloudnative-pg.io";
/// plugin-barman-cloud's API group.
pub const OBJECT_STORE_GROUP: &str = "barmancloud.cnpg.io";
/// CloudNativePG's API group.
pub const CNPG_GROUP: &str = "postgresql.cnpg.io";

/// The input cannot be read: names the input and the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertError(pub String);

impl fmt::Display for ConvertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConvertError {}

/// The YAML documents of `text` (`---`-separated), as JSON values. Empty
/// documents are skipped; `input` names the file in errors.
pub fn parse_documents(text: &str, input: &str) -> Result<Vec<Value>, ConvertError> {
    let mut docs = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let v = Value::deserialize(doc).map_err(|e| {
            ConvertError(format!(
                "{input}: YAML document {} is not readable: {e}",
                i + 1
            ))
        })?;
        match v {
            Value::Null => {}
            Value::Object(_) => docs.push(v),
            other => {
                return Err(ConvertError(format!(
                    "{input}: YAML document {} is not a Kubernetes object (a mapping) but {}",
                    i + 1,
                    kind_of(&other)
                )))
            }
        }
    }
    Ok(docs)
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "empty",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Where an [`Item`]'s entry goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// An entry of the Cluster's `spec.plugins`.
    Plugins,
    /// The `plugin` block of the Cluster's `spec.externalClusters[]` entry
    /// of the same name (its other fields stay).
    ExternalClusters,
}

/// What a [`Note`] says about a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteKind {
    /// Mapped, with something to do or know.
    Note,
    /// Not mapped: no pitr-cnpg parameter carries it.
    NotMapped,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub kind: NoteKind,
    /// The input field, as a path (e.g. `ObjectStore minio-store:
    /// spec.configuration.wal.maxParallel`).
    pub field: String,
    pub text: String,
}

/// One converted entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// What it is for and where it goes.
    pub title: String,
    pub place: Place,
    /// The `spec.plugins[]` entry, or the `externalClusters[]` entry with
    /// its `name` and `plugin` block.
    pub entry: Value,
    pub notes: Vec<Note>,
}

impl Item {
    /// The entry's pitr-cnpg parameters.
    pub fn parameters(&self) -> Option<&Value> {
        match self.place {
            Place::Plugins => self.entry.get("parameters"),
            Place::ExternalClusters => self.entry.pointer("/plugin/parameters"),
        }
    }

    pub fn not_mapped(&self) -> impl Iterator<Item = &Note> {
        self.notes.iter().filter(|n| n.kind == NoteKind::NotMapped)
    }
}

/// The result of a conversion.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Conversion {
    pub items: Vec<Item>,
    /// Documents that are neither an ObjectStore nor a Cluster, and
    /// Clusters with nothing to convert.
    pub ignored: Vec<String>,
}

/// A store configuration being translated.
struct Translation {
    params: BTreeMap<String, String>,
    notes: Vec<Note>,
    /// The namespace and a name for a Secret the user may have to create.
    namespace: Option<String>,
    secret_hint: String,
}

impl Translation {
    fn new(namespace: Option<String>, secret_hint: String) -> Translation {
        Translation {
            params: BTreeMap::new(),
            notes: Vec::new(),
            namespace,
            secret_hint,
        }
    }

    fn set(&mut self, name: &str, value: impl Into<String>) {
        self.params.insert(name.to_string(), value.into());
    }

    fn note(&mut self, field: &str, text: impl Into<String>) {
        self.notes.push(Note {
            kind: NoteKind::Note,
            field: field.to_string(),
            text: text.into(),
        });
    }

    fn not_mapped(&mut self, field: &str, text: impl Into<String>) {
        self.notes.push(Note {
            kind: NoteKind::NotMapped,
            field: field.to_string(),
            text: text.into(),
        });
    }
}

/// A value as it appears in a message: strings bare, the rest as JSON.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A Kubernetes `SecretKeySelector` (`{name, key}`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct SecretRef {
    name: String,
    key: String,
}

impl SecretRef {
    fn from(v: Option<&Value>) -> Option<SecretRef> {
        let v = v?;
        Some(SecretRef {
            name: v.get("name")?.as_str()?.to_string(),
            key: v.get("key")?.as_str()?.to_string(),
        })
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key {} of Secret {}", self.key, self.name)
    }
}

/// The key pairs pitr reads from its environment (see
/// `pitr::config::S3Credentials::from_env`), in its order of preference.
const KEY_PAIRS: [(&str, &str); 2] = [
    ("S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"),
    ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
];
const SESSION_TOKEN_KEYS: [&str; 2] = ["S3_SESSION_TOKEN", "AWS_SESSION_TOKEN"];
/// The region key pitr falls back to (`S3_REGION`).
const REGION_KEY: &str = "S3_REGION";

/// barman-cloud's compression names and the object suffixes it writes.
const BARMAN_COMPRESSIONS: [(&str, &str); 6] = [
    ("gzip", ".gz"),
    ("bzip2", ".bz2"),
    ("xz", ".xz"),
    ("snappy", ".snappy"),
    ("zstd", ".zst"),
    ("lz4", ".lz4"),
];

const KMS_KEY_ARG: &str = "--sse-kms-key-id";

/// The value of `--sse-kms-key-id` in barman-cloud extra arguments, and the
/// arguments that are something else.
fn split_kms_arg(args: &[Value]) -> (Option<String>, Vec<String>) {
    let mut key = None;
    let mut rest = Vec::new();
    let mut it = args.iter().map(shown);
    while let Some(a) = it.next() {
        if let Some(v) = a.strip_prefix(&format!("{KMS_KEY_ARG}=")) {
            key = Some(v.to_string());
        } else if a == KMS_KEY_ARG {
            match it.next() {
                Some(v) => key = Some(v),
                None => rest.push(a),
            }
        } else {
            rest.push(a);
        }
    }
    (key, rest)
}

/// Translates barman-cloud's store configuration (an ObjectStore's
/// `spec.configuration`, or the in-tree `barmanObjectStore`) found at `at`.
fn store_configuration(cfg: &Value, at: &str, t: &mut Translation) {
    let Some(cfg) = cfg.as_object() else {
        t.not_mapped(at, format!("is {}, not a mapping", kind_of(cfg)));
        return;
    };
    let field = |name: &str| format!("{at}.{name}");
    // One pitr `sse` for every object: WAL's setting first, else data's.
    let mut sse: Option<(String, String)> = None; // (value, field)
    let mut kms_key: Option<(String, String)> = None;
    let mut wal_comp: Option<String> = None;
    let mut data_comp: Option<(String, String)> = None; // (value, field)

    for (name, value) in cfg {
        let f = field(name);
        match name.as_str() {
            "destinationPath" => match value.as_str() {
                Some(url) if url.starts_with("s3://") => t.set(param::REPOSITORY, url),
                _ => t.not_mapped(
                    &f,
                    format!(
                        "'{}' is not an s3:// URL: pitr-cnpg stores WAL on S3 only, so this \
                         store cannot be used as it is",
                        shown(value)
                    ),
                ),
            },
            "endpointURL" => t.set(param::ENDPOINT_URL, shown(value)),
            "serverName" => t.set(param::SERVER_NAME, shown(value)),
            "endpointCA" => match SecretRef::from(Some(value)) {
                Some(r) => {
                    t.set(param::CA_SECRET, r.name);
                    t.set(param::CA_KEY, r.key);
                }
                None => t.not_mapped(&f, "is not a Secret reference {name, key}"),
            },
            "s3Credentials" => s3_credentials(value, &f, t),
            "azureCredentials" => t.not_mapped(
                &f,
                "cannot map: pitr-cnpg stores on S3 (or a file system) only, not on Azure Blob \
                 Storage",
            ),
            "googleCredentials" => t.not_mapped(
                &f,
                "cannot map: pitr-cnpg stores on S3 (or a file system) only, not on Google Cloud \
                 Storage",
            ),
            "wal" => {
                let Some(wal) = value.as_object() else {
                    t.not_mapped(&f, format!("is {}, not a mapping", kind_of(value)));
                    continue;
                };
                for (k, v) in wal {
                    let wf = format!("{f}.{k}");
                    match k.as_str() {
                        "compression" => wal_comp = wal_compression(v, &wf, t),
                        "encryption" => sse = Some((shown(v), wf)),
                        "maxParallel" => t.not_mapped(
                            &wf,
                            format!(
                                "({}) pitr-cnpg archives and restores exactly the file asked \
                                 for, one per call: there is no parallel archiving or prefetch",
                                shown(v)
                            ),
                        ),
                        "archiveAdditionalCommandArgs" => {
                            let args = v.as_array().cloned().unwrap_or_default();
                            let (key, rest) = split_kms_arg(&args);
                            if let Some(key) = key {
                                kms_key = Some((key, wf.clone()));
                            }
                            if !rest.is_empty() {
                                t.not_mapped(
                                    &wf,
                                    format!(
                                        "{}: barman-cloud-wal-archive options, which pitr does \
                                         not take",
                                        rest.join(" ")
                                    ),
                                );
                            }
                        }
                        "restoreAdditionalCommandArgs" => t.not_mapped(
                            &wf,
                            format!(
                                "{}: barman-cloud-wal-restore options, which pitr does not take",
                                shown(v)
                            ),
                        ),
                        _ => t.not_mapped(&wf, "a field pitr-cnpg convert does not know"),
                    }
                }
            }
            "data" => {
                let Some(data) = value.as_object() else {
                    t.not_mapped(&f, format!("is {}, not a mapping", kind_of(value)));
                    continue;
                };
                for (k, v) in data {
                    let df = format!("{f}.{k}");
                    match k.as_str() {
                        "encryption" => {
                            let v = shown(v);
                            match &sse {
                                None => sse = Some((v, df)),
                                Some((wal, wf)) if *wal != v => t.note(
                                    &df,
                                    format!(
                                        "'{v}' differs from {wf} '{wal}': pitr has one \
                                         server-side encryption (sse) for all its objects; \
                                         '{wal}' is used"
                                    ),
                                ),
                                Some(_) => {}
                            }
                        }
                        "additionalCommandArgs" => {
                            let args = v.as_array().cloned().unwrap_or_default();
                            let (key, rest) = split_kms_arg(&args);
                            if let Some(key) = key {
                                if kms_key.is_none() {
                                    kms_key = Some((key, df.clone()));
                                }
                            }
                            if !rest.is_empty() {
                                t.not_mapped(
                                    &df,
                                    format!(
                                        "{}: barman-cloud-backup options, which pitr does not \
                                         take",
                                        rest.join(" ")
                                    ),
                                );
                            }
                        }
                        "compression" => data_comp = Some((shown(v), df)),
                        "jobs" | "immediateCheckpoint" => t.not_mapped(
                            &df,
                            format!(
                                "({}) a base-backup setting of barman-cloud-backup; pitr-cnpg \
                                 has no parameter for it",
                                shown(v)
                            ),
                        ),
                        _ => t.not_mapped(&df, "a field pitr-cnpg convert does not know"),
                    }
                }
            }
            "tags" | "historyTags" => t.not_mapped(&f, "pitr does not tag the objects it stores"),
            _ => t.not_mapped(&f, "a field pitr-cnpg convert does not know"),
        }
    }

    if let Some((data, df)) = &data_comp {
        data_compression(data, wal_comp.as_deref(), df, t);
    }
    if let Some((mode, _)) = &sse {
        t.set(param::SSE, mode.clone());
    }
    if let Some((key, kf)) = kms_key {
        match &sse {
            Some((mode, _)) if mode == "aws:kms" => t.set(param::SSE_KMS_KEY_ID, key),
            _ => t.not_mapped(
                &kf,
                format!(
                    "{KMS_KEY_ARG} {key} is given but the encryption is not aws:kms: pitr takes \
                     sseKmsKeyId only with sse aws:kms"
                ),
            ),
        }
    }
}

/// `wal.compression` (barman-cloud-wal-archive's): pitr writes and reads
/// every one of barman-cloud's compressions under the same suffix, so the
/// name carries over. Returns the name pitr will use.
fn wal_compression(v: &Value, at: &str, t: &mut Translation) -> Option<String> {
    let name = shown(v);
    if name.is_empty() {
        t.set(param::COMPRESSION, "none");
        return Some("none".into());
    }
    if BARMAN_COMPRESSIONS.iter().any(|(n, _)| *n == name) {
        t.set(param::COMPRESSION, name.clone());
        return Some(name);
    }
    t.not_mapped(
        at,
        format!(
            "'{name}' is not a compression barman-cloud writes ({}); pitr's default, gzip, is used",
            BARMAN_COMPRESSIONS.map(|(n, _)| n).join(", ")
        ),
    );
    None
}

/// `data.compression` (barman-cloud-backup's): pitr has one `compression`
/// for WAL and backups, so a different one is not mapped, with the way to
/// get it for backups.
fn data_compression(data: &str, wal: Option<&str>, at: &str, t: &mut Translation) {
    let wal = wal.unwrap_or("gzip");
    if data == wal {
        return;
    }
    t.not_mapped(
        at,
        format!(
            "'{data}' differs from the WAL's '{wal}': pitr-cnpg has one compression parameter \
             for WAL and base backups, and '{wal}' is used; to compress base backups with \
             '{data}', set compression: {data} in the ScheduledBackup's (or Backup's) \
             pluginConfiguration.parameters. Backups already stored with it are read either way"
        ),
    );
}

fn s3_credentials(v: &Value, at: &str, t: &mut Translation) {
    let Some(creds) = v.as_object() else {
        t.not_mapped(at, format!("is {}, not a mapping", kind_of(v)));
        return;
    };
    for k in creds.keys() {
        if !matches!(
            k.as_str(),
            "accessKeyId" | "secretAccessKey" | "sessionToken" | "region" | "inheritFromIAMRole"
        ) {
            t.not_mapped(
                &format!("{at}.{k}"),
                "a field pitr-cnpg convert does not know",
            );
        }
    }
    if creds.get("inheritFromIAMRole").and_then(Value::as_bool) == Some(true) {
        t.not_mapped(
            &format!("{at}.inheritFromIAMRole"),
            "cannot map: pitr uses static keys from the sidecar's environment only (no IAM role \
             or IRSA credentials chain); give it a Secret with S3_ACCESS_KEY_ID and \
             S3_SECRET_ACCESS_KEY (parameter credentialsSecret)",
        );
    }
    let id = SecretRef::from(creds.get("accessKeyId"));
    let secret = SecretRef::from(creds.get("secretAccessKey"));
    let token = SecretRef::from(creds.get("sessionToken"));
    let region = SecretRef::from(creds.get("region"));
    for (name, r) in [("accessKeyId", &id), ("secretAccessKey", &secret)] {
        if creds.contains_key(name) && r.is_none() {
            t.not_mapped(
                &format!("{at}.{name}"),
                "is not a Secret reference {name, key}",
            );
        }
    }
    let (Some(id), Some(secret)) = (id, secret) else {
        if creds.contains_key("accessKeyId") || creds.contains_key("secretAccessKey") {
            t.not_mapped(at, "needs both accessKeyId and secretAccessKey");
        }
        return;
    };

    // Usable as it is: one Secret holding a pair pitr reads, and the
    // session token (if any) in it under a name pitr reads.
    let pair_ok = id.name == secret.name
        && KEY_PAIRS
            .iter()
            .any(|(a, s)| id.key == *a && secret.key == *s);
    let token_ok = token
        .as_ref()
        .is_none_or(|r| r.name == id.name && SESSION_TOKEN_KEYS.contains(&r.key.as_str()));
    if pair_ok && token_ok {
        t.set(param::CREDENTIALS_SECRET, id.name.clone());
        if let Some(r) = &region {
            if r.name == id.name && r.key == REGION_KEY {
                t.note(
                    &format!("{at}.region"),
                    format!(
                        "pitr reads {REGION_KEY} from Secret {} (credentialsSecret) itself",
                        r.name
                    ),
                );
            } else {
                t.not_mapped(
                    &format!("{at}.region"),
                    format!(
                        "pitr takes the region as a value: set parameter region to the value of \
                         {r} (or add it to Secret {} as {REGION_KEY})",
                        id.name
                    ),
                );
            }
        }
        return;
    }

    // Otherwise: a Secret to create with the names pitr reads.
    let name = format!("{}-pitr-s3", t.secret_hint);
    let mut keys = vec![
        ("S3_ACCESS_KEY_ID", id.clone()),
        ("S3_SECRET_ACCESS_KEY", secret.clone()),
    ];
    if let Some(r) = &token {
        keys.push(("S3_SESSION_TOKEN", r.clone()));
    }
    if let Some(r) = &region {
        keys.push((REGION_KEY, r.clone()));
    }
    let mut manifest = String::from("apiVersion: v1\nkind: Secret\nmetadata:\n");
    manifest.push_str(&format!("  name: {name}\n"));
    if let Some(ns) = &t.namespace {
        manifest.push_str(&format!("  namespace: {ns}\n"));
    }
    manifest.push_str("type: Opaque\nstringData:\n");
    for (k, r) in &keys {
        manifest.push_str(&format!("  {k}: <the value of {r}>\n"));
    }
    t.not_mapped(
        at,
        format!(
            "the keys ({}) are not one Secret's S3_ACCESS_KEY_ID / S3_SECRET_ACCESS_KEY (or \
             AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), the names pitr reads. Create this \
             Secret with the same values, then set credentialsSecret: {name}\n{manifest}",
            keys.iter()
                .map(|(_, r)| r.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
}

/// Translates an ObjectStore's `spec` other than `configuration`.
fn object_store_spec(store: &Value, at: &str, t: &mut Translation) {
    let Some(spec) = store.get("spec").and_then(Value::as_object) else {
        t.not_mapped(&format!("{at}spec"), "is missing");
        return;
    };
    for (k, v) in spec {
        let f = format!("{at}spec.{k}");
        match k.as_str() {
            "configuration" => store_configuration(v, &f, t),
            "retentionPolicy" => retention(v, &f, t),
            "instanceSidecarConfiguration" => sidecar_configuration(v, &f, t),
            _ => t.not_mapped(&f, "a field pitr-cnpg convert does not know"),
        }
    }
    if spec.get("configuration").is_none() {
        t.not_mapped(
            &format!("{at}spec.configuration"),
            "is missing: no store to convert",
        );
    }
}

/// `retentionPolicy` carries over as the parameter of the same name,
/// which pitr applies after each successful backup.
fn retention(v: &Value, at: &str, t: &mut Translation) {
    match v
        .as_str()
        .map(|p| (p, p.parse::<pitr::retention::RetentionPolicy>()))
    {
        Some((text, Ok(policy))) => {
            t.set(param::RETENTION_POLICY, text);
            t.note(
                at,
                format!(
                    "({policy}) applied by pitr after each successful backup, with Barman's \
                     rules (see docs/retention.md)"
                ),
            );
        }
        Some((_, Err(e))) => t.not_mapped(at, e.to_string()),
        None => t.not_mapped(at, format!("is {}, not a policy", kind_of(v))),
    }
}

fn retention_interval_note(v: &Value) -> String {
    format!(
        "({}) pitr applies retentionPolicy after each successful backup, not on an interval",
        shown(v)
    )
}

fn sidecar_configuration(v: &Value, at: &str, t: &mut Translation) {
    let Some(cfg) = v.as_object() else {
        t.not_mapped(at, format!("is {}, not a mapping", kind_of(v)));
        return;
    };
    for (k, v) in cfg {
        let f = format!("{at}.{k}");
        match k.as_str() {
            "resources" => resources(v, &f, t),
            "env" => {
                let names: Vec<String> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| e.get("name").map(shown).unwrap_or_default())
                    .collect();
                t.not_mapped(
                    &f,
                    format!(
                        "({}) pitr-cnpg has no parameter for extra sidecar env: the sidecar gets \
                         the postgres container's env and the credentialsSecret",
                        names.join(", ")
                    ),
                );
            }
            "retentionPolicyIntervalSeconds" => t.not_mapped(&f, retention_interval_note(v)),
            "logLevel" => t.not_mapped(
                &f,
                format!(
                    "({}) pitr-cnpg has no log-level parameter for the sidecar",
                    shown(v)
                ),
            ),
            "additionalContainerArgs" => {
                t.not_mapped(&f, "pitr-cnpg has no parameter for extra sidecar arguments")
            }
            _ => t.not_mapped(&f, "a field pitr-cnpg convert does not know"),
        }
    }
}

fn resources(v: &Value, at: &str, t: &mut Translation) {
    let Some(r) = v.as_object() else {
        t.not_mapped(at, format!("is {}, not a mapping", kind_of(v)));
        return;
    };
    for (group, values) in r {
        let names = match group.as_str() {
            "requests" => (param::CPU_REQUEST, param::MEMORY_REQUEST),
            "limits" => (param::CPU_LIMIT, param::MEMORY_LIMIT),
            _ => {
                t.not_mapped(
                    &format!("{at}.{group}"),
                    "pitr-cnpg sets only cpu and memory requests and limits",
                );
                continue;
            }
        };
        for (res, q) in values.as_object().into_iter().flatten() {
            match res.as_str() {
                "cpu" => t.set(names.0, shown(q)),
                "memory" => t.set(names.1, shown(q)),
                _ => t.not_mapped(
                    &format!("{at}.{group}.{res}"),
                    "pitr-cnpg sets only cpu and memory requests and limits",
                ),
            }
        }
    }
}

/// Checks the translated parameters with the plugin's own settings code.
fn checked(t: &mut Translation, origin: &str, server: &str) -> Value {
    let params: Map<String, Value> = t
        .params
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let params = Value::Object(params);
    match Params::from_json(Some(&params), origin) {
        Ok(p) => {
            if let Err(e) = resolve(&p, server, &SidecarEnv::default()) {
                t.note(origin, format!("pitr will refuse these parameters: {e}"));
            }
        }
        Err(e) => t.note(origin, format!("pitr will refuse these parameters: {e}")),
    }
    params
}

fn api_group(doc: &Value) -> &str {
    doc.get("apiVersion")
        .and_then(Value::as_str)
        .and_then(|a| a.split_once('/'))
        .map(|(g, _)| g)
        .unwrap_or("")
}

fn kind(doc: &Value) -> &str {
    doc.get("kind").and_then(Value::as_str).unwrap_or("")
}

fn meta<'v>(doc: &'v Value, field: &str) -> Option<&'v str> {
    doc.pointer(&format!("/metadata/{field}"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn qualified(doc: &Value) -> String {
    let name = meta(doc, "name").unwrap_or("<unnamed>");
    match meta(doc, "namespace") {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

/// Converts the documents of one input.
pub fn convert(docs: &[Value]) -> Conversion {
    let stores: Vec<&Value> = docs
        .iter()
        .filter(|d| api_group(d) == OBJECT_STORE_GROUP && kind(d) == "ObjectStore")
        .collect();
    let mut used = vec![false; stores.len()];
    let mut out = Conversion::default();

    for doc in docs {
        let (group, kind) = (api_group(doc), kind(doc));
        if group == OBJECT_STORE_GROUP && kind == "ObjectStore" {
            continue;
        }
        if group != CNPG_GROUP || kind != "Cluster" {
            out.ignored.push(format!(
                "{} {} (not an ObjectStore or a Cluster)",
                if kind.is_empty() { "<no kind>" } else { kind },
                qualified(doc)
            ));
            continue;
        }
        let before = out.items.len();
        cluster(doc, &stores, &mut used, &mut out.items);
        if out.items.len() == before {
            out.ignored.push(format!(
                "Cluster {}: no spec.backup.barmanObjectStore, {BARMAN_PLUGIN_NAME} entry or \
                 external cluster with a Barman store",
                qualified(doc)
            ));
        }
    }

    for (store, used) in stores.iter().zip(used) {
        if used {
            continue;
        }
        let name = meta(store, "name").unwrap_or("<unnamed>");
        let origin = format!("ObjectStore {}", qualified(store));
        let mut t = Translation::new(meta(store, "namespace").map(String::from), name.into());
        object_store_spec(store, &format!("{origin}: "), &mut t);
        t.note(
            &origin,
            "no Cluster using this store was in the input, so serverName is not set: pitr, like \
             Barman, defaults it to the Cluster's name; if the Cluster's \
             barman-cloud.cloudnative-pg.io entry sets serverName, set the same here to keep \
             the history",
        );
        // The name is only for the check; it is not written.
        let parameters = checked(&mut t, &origin, name);
        out.items.push(Item {
            title: format!(
                "{origin}: a spec.plugins[] entry for the Clusters using it (replaces their \
                 {BARMAN_PLUGIN_NAME} entry)"
            ),
            place: Place::Plugins,
            entry: json!({"name": PLUGIN_NAME, "isWALArchiver": true, "parameters": parameters}),
            notes: t.notes,
        });
    }
    out
}

/// The ObjectStore a barman-cloud `parameters` map names.
fn find_store<'s>(
    stores: &[&'s Value],
    name: &str,
    namespace: Option<&str>,
) -> Option<(usize, &'s Value)> {
    stores.iter().copied().enumerate().find(|(_, s)| {
        meta(s, "name") == Some(name)
            && match (meta(s, "namespace"), namespace) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    })
}

/// A barman-cloud plugin `parameters` map (`barmanObjectName`,
/// `serverName`) into `t`, from the ObjectStore it names.
fn barman_plugin_params(
    params: Option<&Value>,
    at: &str,
    namespace: Option<&str>,
    stores: &[&Value],
    used: &mut [bool],
    t: &mut Translation,
) {
    let map = params.and_then(Value::as_object);
    for (k, v) in map.into_iter().flatten() {
        match k.as_str() {
            "barmanObjectName" => {
                let name = shown(v);
                match find_store(stores, &name, namespace) {
                    Some((i, store)) => {
                        used[i] = true;
                        object_store_spec(store, &format!("ObjectStore {name}: "), t);
                    }
                    None => t.not_mapped(
                        &format!("{at}.barmanObjectName"),
                        format!(
                            "ObjectStore {name} is not in the input: convert it together with \
                             the Cluster (e.g. kubectl get objectstore {name} -o yaml >> FILE) \
                             to get its repository, endpoint, credentials and CA"
                        ),
                    ),
                }
            }
            "serverName" => t.set(param::SERVER_NAME, shown(v)),
            _ => t.not_mapped(
                &format!("{at}.{k}"),
                "not a parameter of plugin-barman-cloud pitr-cnpg convert knows",
            ),
        }
    }
    if map.and_then(|m| m.get("barmanObjectName")).is_none() {
        t.not_mapped(
            &format!("{at}.barmanObjectName"),
            "is not set: no store to convert",
        );
    }
}

fn cluster(doc: &Value, stores: &[&Value], used: &mut [bool], items: &mut Vec<Item>) {
    let name = meta(doc, "name").unwrap_or("");
    let namespace = meta(doc, "namespace");
    let q = qualified(doc);
    let hint = if name.is_empty() { "cluster" } else { name };

    // In-tree spec.backup.barmanObjectStore.
    if let Some(store) = doc.pointer("/spec/backup/barmanObjectStore") {
        let origin = format!("Cluster {q}");
        let mut t = Translation::new(namespace.map(String::from), hint.into());
        store_configuration(
            store,
            &format!("{origin}: spec.backup.barmanObjectStore"),
            &mut t,
        );
        if !t.params.contains_key(param::SERVER_NAME) && !name.is_empty() {
            t.set(param::SERVER_NAME, name);
        }
        if let Some(r) = doc.pointer("/spec/backup/retentionPolicy") {
            retention(r, &format!("{origin}: spec.backup.retentionPolicy"), &mut t);
        }
        t.note(
            &format!("{origin}: spec.backup.barmanObjectStore"),
            "remove it when adding this entry: CloudNativePG refuses isWALArchiver together \
             with spec.backup.barmanObjectStore",
        );
        let parameters = checked(&mut t, &origin, name);
        items.push(Item {
            title: format!(
                "{origin}: spec.plugins[] entry (replaces spec.backup.barmanObjectStore)"
            ),
            place: Place::Plugins,
            entry: json!({"name": PLUGIN_NAME, "isWALArchiver": true, "parameters": parameters}),
            notes: t.notes,
        });
    }

    // plugin-barman-cloud entries of spec.plugins.
    let plugins = doc.pointer("/spec/plugins").and_then(Value::as_array);
    for p in plugins.into_iter().flatten() {
        if p.get("name").and_then(Value::as_str) != Some(BARMAN_PLUGIN_NAME) {
            continue;
        }
        let origin = format!("Cluster {q}");
        let at = format!("{origin}: spec.plugins[{BARMAN_PLUGIN_NAME}].parameters");
        let mut t = Translation::new(namespace.map(String::from), hint.into());
        barman_plugin_params(p.get("parameters"), &at, namespace, stores, used, &mut t);
        if !t.params.contains_key(param::SERVER_NAME) && !name.is_empty() {
            t.set(param::SERVER_NAME, name);
        }
        let parameters = checked(&mut t, &origin, name);
        let mut entry = json!({"name": PLUGIN_NAME});
        for k in ["enabled", "isWALArchiver"] {
            if let Some(v) = p.get(k) {
                entry[k] = v.clone();
            }
        }
        entry["parameters"] = parameters;
        items.push(Item {
            title: format!(
                "{origin}: spec.plugins[] entry (replaces the {BARMAN_PLUGIN_NAME} entry)"
            ),
            place: Place::Plugins,
            entry,
            notes: t.notes,
        });
    }

    // External clusters (recovery and replica sources).
    let externals = doc
        .pointer("/spec/externalClusters")
        .and_then(Value::as_array);
    for ext in externals.into_iter().flatten() {
        let Some(ext_name) = ext.get("name").and_then(Value::as_str) else {
            continue;
        };
        let origin = format!("Cluster {q}: externalClusters[{ext_name}]");
        let mut t = Translation::new(namespace.map(String::from), format!("{hint}-{ext_name}"));
        let what = if let Some(store) = ext.get("barmanObjectStore") {
            store_configuration(store, &format!("{origin}.barmanObjectStore"), &mut t);
            "barmanObjectStore"
        } else if ext.pointer("/plugin/name").and_then(Value::as_str) == Some(BARMAN_PLUGIN_NAME) {
            barman_plugin_params(
                ext.pointer("/plugin/parameters"),
                &format!("{origin}.plugin.parameters"),
                namespace,
                stores,
                used,
                &mut t,
            );
            "plugin block"
        } else {
            continue;
        };
        // Barman's default server name for a source is the entry's name.
        if !t.params.contains_key(param::SERVER_NAME) {
            t.set(param::SERVER_NAME, ext_name);
        }
        let parameters = checked(&mut t, &origin, ext_name);
        items.push(Item {
            title: format!(
                "{origin}: replaces the entry's {what} with this plugin block (its other fields \
                 stay)"
            ),
            place: Place::ExternalClusters,
            entry: json!({"name": ext_name, "plugin": {"name": PLUGIN_NAME, "parameters": parameters}}),
            notes: t.notes,
        });
    }
}

/// The conversion as YAML: one document per item, its notes as comments
/// above it, so the output can be read back (and its notes kept) as it is.
pub fn render(c: &Conversion, input: &str) -> String {
    let mut s = format!("# pitr-cnpg convert {input}: {PLUGIN_NAME} entries\n");
    for ignored in &c.ignored {
        s.push_str(&format!("# ignored: {ignored}\n"));
    }
    for item in &c.items {
        s.push_str("---\n");
        s.push_str(&comment(&item.title));
        for n in &item.notes {
            let tag = match n.kind {
                NoteKind::Note => "note",
                NoteKind::NotMapped => "not mapped",
            };
            s.push_str(&comment(&format!("{tag}: {}: {}", n.field, n.text)));
        }
        let yaml = serde_yaml_ng::to_string(&yaml_value(&Value::Array(vec![item.entry.clone()])))
            .expect("a YAML value serialises");
        s.push_str(&yaml);
    }
    s
}

/// JSON as YAML, with `name` first in every mapping (as people write
/// `spec.plugins[]`), the other keys in their (sorted) order.
fn yaml_value(v: &Value) -> serde_yaml_ng::Value {
    use serde_yaml_ng::Value as Y;
    match v {
        Value::Null => Y::Null,
        Value::Bool(b) => Y::Bool(*b),
        Value::Number(n) => serde_yaml_ng::to_value(n).expect("a JSON number is a YAML number"),
        Value::String(s) => Y::String(s.clone()),
        Value::Array(a) => Y::Sequence(a.iter().map(yaml_value).collect()),
        Value::Object(m) => {
            let mut out = serde_yaml_ng::Mapping::new();
            let first = m.get_key_value("name");
            for (k, v) in first
                .into_iter()
                .chain(m.iter().filter(|(k, _)| *k != "name"))
            {
                out.insert(Y::String(k.clone()), yaml_value(v));
            }
            Y::Mapping(out)
        }
    }
}

fn comment(text: &str) -> String {
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        out.push_str(if i == 0 { "# " } else { "#   " });
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::{patch, Injection};
    use crate::proto::lifecycle::operator_operation_type::Type as OpType;
    use crate::settings::{for_archive, for_restore, Cluster, WalSettings};
    use pitr::codec::Compression;
    use pitr::config::{RepoLocation, Sse};

    /// An ObjectStore as plugin-barman-cloud's documentation shows them
    /// (MinIO with a custom CA, KMS, parallelism, tags, sidecar settings)
    /// and the Cluster that uses it.
    const OBJECT_STORE_AND_CLUSTER: &str = r#"
apiVersion: barmancloud.cnpg.io/v1
kind: ObjectStore
metadata:
  name: minio-store
  namespace: db
spec:
  retentionPolicy: "30d"
  configuration:
    destinationPath: s3://backups/pg
    endpointURL: https://minio.storage.svc:9000
    endpointCA:
      name: minio-ca
      key: ca.crt
    s3Credentials:
      accessKeyId:
        name: minio-creds
        key: ACCESS_KEY_ID
      secretAccessKey:
        name: minio-creds
        key: ACCESS_SECRET_KEY
    wal:
      compression: gzip
      encryption: aws:kms
      maxParallel: 8
      archiveAdditionalCommandArgs:
        - --sse-kms-key-id
        - arn:aws:kms:eu-west-1:111122223333:key/k1
        - --min-chunk-size=5MB
    data:
      compression: bzip2
      jobs: 2
      immediateCheckpoint: true
    tags:
      env: prod
  instanceSidecarConfiguration:
    retentionPolicyIntervalSeconds: 1800
    logLevel: debug
    env:
      - name: AWS_REQUEST_CHECKSUM_CALCULATION
        value: when_required
    resources:
      requests:
        cpu: 100m
        memory: 256Mi
      limits:
        cpu: 1
        memory: 1Gi
        ephemeral-storage: 1Gi
---
apiVersion: postgresql.cnpg.io/v1
kind: Cluster
metadata:
  name: pg-main
  namespace: db
spec:
  instances: 3
  storage:
    size: 10Gi
  plugins:
    - name: barman-cloud.cloudnative-pg.io
      isWALArchiver: true
      parameters:
        barmanObjectName: minio-store
        serverName: pg-main-v2
"#;

    /// A Cluster with the in-tree barmanObjectStore and an external cluster
    /// (a recovery source) with one too.
    const IN_TREE_CLUSTER: &str = r#"
apiVersion: postgresql.cnpg.io/v1
kind: Cluster
metadata:
  name: pg-legacy
  namespace: db
spec:
  instances: 2
  storage:
    size: 10Gi
  bootstrap:
    recovery:
      source: old-origin
  backup:
    retentionPolicy: "7d"
    barmanObjectStore:
      destinationPath: s3://legacy-bucket/clusters/
      endpointURL: https://rgw.storage.svc:7443
      endpointCA:
        name: rgw-ca
        key: rgw.pem
      s3Credentials:
        accessKeyId:
          name: legacy-s3
          key: S3_ACCESS_KEY_ID
        secretAccessKey:
          name: legacy-s3
          key: S3_SECRET_ACCESS_KEY
        region:
          name: legacy-s3
          key: S3_REGION
      wal:
        compression: gzip
        encryption: AES256
      data:
        encryption: AES256
  externalClusters:
    - name: old-origin
      barmanObjectStore:
        destinationPath: s3://legacy-bucket/clusters
        serverName: pg-old
        s3Credentials:
          accessKeyId:
            name: legacy-s3
            key: AWS_ACCESS_KEY_ID
          secretAccessKey:
            name: legacy-s3
            key: AWS_SECRET_ACCESS_KEY
        wal:
          compression: snappy
"#;

    fn run(yaml: &str) -> Conversion {
        convert(&parse_documents(yaml, "test.yaml").unwrap())
    }

    fn params_of(item: &Item) -> BTreeMap<String, String> {
        item.parameters()
            .and_then(Value::as_object)
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect()
    }

    fn expect(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The item's parameters, through the plugin's own settings code.
    fn settings_of(item: &Item, default_server: &str) -> WalSettings {
        let p = Params::from_json(item.parameters(), "converted").unwrap();
        resolve(&p, default_server, &SidecarEnv::default()).unwrap()
    }

    fn not_mapped_fields(item: &Item) -> Vec<&str> {
        item.not_mapped().map(|n| n.field.as_str()).collect()
    }

    fn refused(item: &Item) -> bool {
        item.notes
            .iter()
            .any(|n| n.text.contains("pitr will refuse"))
    }

    #[test]
    fn an_object_store_and_its_cluster() {
        let c = run(OBJECT_STORE_AND_CLUSTER);
        assert_eq!(c.items.len(), 1, "{c:#?}");
        assert!(c.ignored.is_empty(), "{:?}", c.ignored);
        let item = &c.items[0];
        assert_eq!(item.place, Place::Plugins);
        assert_eq!(item.entry["name"], PLUGIN_NAME);
        assert_eq!(item.entry["isWALArchiver"], true);
        assert_eq!(
            params_of(item),
            expect(&[
                ("repository", "s3://backups/pg"),
                ("serverName", "pg-main-v2"),
                ("endpointURL", "https://minio.storage.svc:9000"),
                ("caSecret", "minio-ca"),
                ("caKey", "ca.crt"),
                ("compression", "gzip"),
                ("sse", "aws:kms"),
                ("sseKmsKeyId", "arn:aws:kms:eu-west-1:111122223333:key/k1"),
                ("cpuRequest", "100m"),
                ("memoryRequest", "256Mi"),
                ("cpuLimit", "1"),
                ("memoryLimit", "1Gi"),
                ("retentionPolicy", "30d"),
            ])
        );
        assert!(!refused(item), "{:#?}", item.notes);
        let s = settings_of(item, "pg-main");
        assert_eq!(
            s.repo.location,
            RepoLocation::S3 {
                bucket: "backups".into(),
                prefix: "pg".into()
            }
        );
        assert_eq!(s.repo.server_name, "pg-main-v2");
        assert_eq!(
            s.repo.sse,
            Sse::Kms {
                key_id: Some("arn:aws:kms:eu-west-1:111122223333:key/k1".into())
            }
        );
        assert_eq!(s.repo.compression, Compression::Gzip { level: 1 });

        let fields = not_mapped_fields(item);
        for f in [
            "ObjectStore minio-store: spec.configuration.wal.maxParallel",
            "ObjectStore minio-store: spec.configuration.wal.archiveAdditionalCommandArgs",
            "ObjectStore minio-store: spec.configuration.data.compression",
            "ObjectStore minio-store: spec.configuration.data.jobs",
            "ObjectStore minio-store: spec.configuration.data.immediateCheckpoint",
            "ObjectStore minio-store: spec.configuration.tags",
            "ObjectStore minio-store: spec.configuration.s3Credentials",
            "ObjectStore minio-store: spec.instanceSidecarConfiguration.env",
            "ObjectStore minio-store: spec.instanceSidecarConfiguration.logLevel",
            "ObjectStore minio-store: spec.instanceSidecarConfiguration.retentionPolicyIntervalSeconds",
            "ObjectStore minio-store: spec.instanceSidecarConfiguration.resources.limits.ephemeral-storage",
        ] {
            assert!(fields.contains(&f), "{f} missing from {fields:#?}");
        }
        // The KMS key came out of the extra args; the rest is reported.
        let args = item
            .not_mapped()
            .find(|n| n.field.ends_with("archiveAdditionalCommandArgs"))
            .unwrap();
        assert!(args.text.contains("--min-chunk-size=5MB"), "{}", args.text);
        assert!(!args.text.contains("k1"), "{}", args.text);
        assert!(!fields.contains(&"ObjectStore minio-store: spec.retentionPolicy"));
        assert_eq!(
            params_of(item).get("retentionPolicy").map(String::as_str),
            Some("30d")
        );
        assert!(item
            .notes
            .iter()
            .any(|n| n.field.ends_with("retentionPolicy")
                && n.text.contains("RECOVERY WINDOW OF 30 DAYS")
                && n.text.contains("after each successful backup")));
    }

    #[test]
    fn credentials_under_other_keys_get_a_secret_to_create() {
        let c = run(OBJECT_STORE_AND_CLUSTER);
        let item = &c.items[0];
        assert!(
            item.parameters()
                .unwrap()
                .get("credentialsSecret")
                .is_none(),
            "keys pitr does not read must not be passed as they are"
        );
        let note = item
            .not_mapped()
            .find(|n| n.field.ends_with("s3Credentials"))
            .unwrap();
        assert!(
            note.text.contains("credentialsSecret: pg-main-pitr-s3"),
            "{}",
            note.text
        );
        // The manifest in the note is a Secret with the names pitr reads.
        let manifest: String = note
            .text
            .lines()
            .skip_while(|l| !l.starts_with("apiVersion"))
            .map(|l| format!("{l}\n"))
            .collect();
        let docs = parse_documents(&manifest, "note").unwrap();
        assert_eq!(docs.len(), 1, "{manifest}");
        let secret = &docs[0];
        assert_eq!(secret["kind"], "Secret");
        assert_eq!(secret["metadata"]["name"], "pg-main-pitr-s3");
        assert_eq!(secret["metadata"]["namespace"], "db");
        assert_eq!(
            secret["stringData"]["S3_ACCESS_KEY_ID"],
            "<the value of key ACCESS_KEY_ID of Secret minio-creds>"
        );
        assert_eq!(
            secret["stringData"]["S3_SECRET_ACCESS_KEY"],
            "<the value of key ACCESS_SECRET_KEY of Secret minio-creds>"
        );
    }

    #[test]
    fn session_token_and_region_follow_the_secret() {
        let store = |token: &str, region: &str| {
            format!(
                r#"
apiVersion: barmancloud.cnpg.io/v1
kind: ObjectStore
metadata: {{name: s, namespace: db}}
spec:
  configuration:
    destinationPath: s3://bkt/p
    s3Credentials:
      accessKeyId: {{name: aws, key: AWS_ACCESS_KEY_ID}}
      secretAccessKey: {{name: aws, key: AWS_SECRET_ACCESS_KEY}}
      sessionToken: {token}
      region: {region}
"#
            )
        };
        // All in one Secret under names pitr reads: passed as is.
        let c = run(&store(
            "{name: aws, key: AWS_SESSION_TOKEN}",
            "{name: aws, key: S3_REGION}",
        ));
        let item = &c.items[0];
        assert_eq!(params_of(item)["credentialsSecret"], "aws");
        assert_eq!(item.not_mapped().count(), 0, "{:#?}", item.notes);
        // A region under another key: a value pitr needs as a parameter.
        let c = run(&store(
            "{name: aws, key: AWS_SESSION_TOKEN}",
            "{name: aws, key: AWS_DEFAULT_REGION}",
        ));
        let item = &c.items[0];
        assert_eq!(params_of(item)["credentialsSecret"], "aws");
        let n = item.not_mapped().next().unwrap();
        assert!(
            n.field.ends_with("s3Credentials.region")
                && n.text.contains("key AWS_DEFAULT_REGION of Secret aws"),
            "{n:?}"
        );
        // The token in another Secret: a new Secret with all of them.
        let c = run(&store(
            "{name: sts, key: token}",
            "{name: aws, key: S3_REGION}",
        ));
        let item = &c.items[0];
        assert!(!params_of(item).contains_key("credentialsSecret"));
        let n = item
            .not_mapped()
            .find(|n| n.field.ends_with("s3Credentials"))
            .unwrap();
        assert!(n
            .text
            .contains("S3_SESSION_TOKEN: <the value of key token of Secret sts>"));
        assert!(n
            .text
            .contains("S3_REGION: <the value of key S3_REGION of Secret aws>"));
        assert!(n.text.contains("name: s-pitr-s3"), "{}", n.text);
    }

    #[test]
    fn an_in_tree_cluster_and_its_recovery_source() {
        let c = run(IN_TREE_CLUSTER);
        assert_eq!(c.items.len(), 2, "{c:#?}");
        let own = &c.items[0];
        assert_eq!(own.place, Place::Plugins);
        assert_eq!(own.entry["isWALArchiver"], true);
        assert_eq!(
            params_of(own),
            expect(&[
                ("repository", "s3://legacy-bucket/clusters/"),
                ("serverName", "pg-legacy"),
                ("endpointURL", "https://rgw.storage.svc:7443"),
                ("caSecret", "rgw-ca"),
                ("caKey", "rgw.pem"),
                ("credentialsSecret", "legacy-s3"),
                ("compression", "gzip"),
                ("sse", "AES256"),
                ("retentionPolicy", "7d"),
            ])
        );
        assert!(!refused(own), "{:#?}", own.notes);
        let s = settings_of(own, "ignored-default");
        assert_eq!(s.repo.server_name, "pg-legacy", "written, not defaulted");
        assert_eq!(s.repo.location.to_string(), "s3://legacy-bucket/clusters");
        assert_eq!(s.repo.sse, Sse::Aes256);
        assert!(not_mapped_fields(own).is_empty(), "{:#?}", own.notes);
        assert!(own
            .notes
            .iter()
            .any(|n| n.text.contains("remove it") && n.field.ends_with("barmanObjectStore")));

        let ext = &c.items[1];
        assert_eq!(ext.place, Place::ExternalClusters);
        assert_eq!(ext.entry["name"], "old-origin");
        assert_eq!(ext.entry["plugin"]["name"], PLUGIN_NAME);
        assert_eq!(
            params_of(ext),
            expect(&[
                ("repository", "s3://legacy-bucket/clusters"),
                ("serverName", "pg-old"),
                ("credentialsSecret", "legacy-s3"),
                ("compression", "snappy"),
            ])
        );
        // pitr reads (and writes) snappy WAL: nothing left unmapped.
        assert_eq!(ext.not_mapped().count(), 0, "{:#?}", ext.notes);
        assert!(!refused(ext));
    }

    /// The converted entries, put into the Cluster in place of the Barman
    /// configuration, drive the real settings and injection code.
    #[test]
    fn converted_entries_drive_settings_and_injection() {
        let c = run(IN_TREE_CLUSTER);
        let mut cluster = parse_documents(IN_TREE_CLUSTER, "t").unwrap().remove(0);
        cluster["spec"].as_object_mut().unwrap().remove("backup");
        cluster["spec"]["plugins"] = json!([c.items[0].entry]);
        cluster["spec"]["externalClusters"] = json!([c.items[1].entry]);
        let cl = Cluster::parse(&serde_json::to_vec(&cluster).unwrap()).unwrap();
        assert_eq!(
            for_archive(&cl, &SidecarEnv::default())
                .unwrap()
                .repo
                .server_name,
            "pg-legacy"
        );
        // No primary yet: WAL comes from the recovery source, pg-old.
        assert_eq!(
            for_restore(&cl, &SidecarEnv::default())
                .unwrap()
                .repo
                .server_name,
            "pg-old"
        );

        let pod = include_bytes!("../tests/fixtures/pod.json");
        let injection = Injection {
            image: "img".into(),
        };
        let cluster_bytes = serde_json::to_vec(&cluster).unwrap();
        let ops = patch(OpType::Create, &cluster_bytes, pod, &injection)
            .unwrap()
            .unwrap();
        let text = ops.to_string();
        let sidecar = ops
            .as_array()
            .unwrap()
            .iter()
            .map(|op| &op["value"])
            .flat_map(|v| match v {
                Value::Array(a) => a.iter().collect::<Vec<_>>(),
                v => vec![v],
            })
            .find(|v| v["name"] == "pitr-cnpg")
            .unwrap_or_else(|| panic!("no sidecar in {text}"));
        assert_eq!(
            sidecar["envFrom"],
            json!([{"secretRef": {"name": "legacy-s3"}}])
        );
        assert!(text.contains(r#""secretName":"rgw-ca""#), "{text}");
        assert!(text.contains(r#""value":"/pitr-ca/rgw.pem""#), "{text}");
    }

    #[test]
    fn azure_google_and_iam_roles_cannot_be_mapped() {
        let c = run(r#"
apiVersion: barmancloud.cnpg.io/v1
kind: ObjectStore
metadata: {name: azure-store}
spec:
  configuration:
    destinationPath: https://account.blob.core.windows.net/container/pg
    azureCredentials:
      inheritFromAzureAD: true
---
apiVersion: barmancloud.cnpg.io/v1
kind: ObjectStore
metadata: {name: gcs-store}
spec:
  configuration:
    destinationPath: gs://bucket/pg
    googleCredentials:
      gkeEnvironment: true
---
apiVersion: barmancloud.cnpg.io/v1
kind: ObjectStore
metadata: {name: iam-store}
spec:
  configuration:
    destinationPath: s3://bucket/pg
    s3Credentials:
      inheritFromIAMRole: true
"#);
        assert_eq!(c.items.len(), 3);
        for (item, field) in c.items.iter().zip([
            "azureCredentials",
            "googleCredentials",
            "s3Credentials.inheritFromIAMRole",
        ]) {
            let n = item
                .not_mapped()
                .find(|n| n.field.ends_with(field))
                .unwrap_or_else(|| panic!("{field}: {:#?}", item.notes));
            assert!(n.text.contains("cannot map"), "{n:?}");
            // Without a Cluster, serverName is left to the default, said so.
            assert!(!params_of(item).contains_key("serverName"));
            assert!(item.notes.iter().any(|n| n.text.contains("serverName")));
        }
        // No s3:// path: no repository, and pitr's settings code says why.
        for item in &c.items[..2] {
            assert!(!params_of(item).contains_key("repository"));
            assert!(refused(item), "{:#?}", item.notes);
        }
        assert_eq!(params_of(&c.items[2])["repository"], "s3://bucket/pg");
        assert!(!refused(&c.items[2]));
    }

    #[test]
    fn compression_and_kms_arguments() {
        let store = |wal: &str| {
            format!(
                "apiVersion: barmancloud.cnpg.io/v1\nkind: ObjectStore\nmetadata: {{name: s}}\n\
                 spec:\n  configuration:\n    destinationPath: s3://bkt\n    wal: {wal}\n"
            )
        };
        for name in ["gzip", "bzip2", "xz", "snappy", "zstd", "lz4"] {
            let c = run(&store(&format!("{{compression: {name}}}")));
            let item = &c.items[0];
            assert_eq!(params_of(item)["compression"], name);
            assert_eq!(item.not_mapped().count(), 0, "{:#?}", item.notes);
            let s = settings_of(item, "pg");
            assert_eq!(s.repo.compression.name(), name);
        }
        let c = run(&store("{compression: brotli}"));
        let n = c.items[0].not_mapped().next().unwrap();
        assert!(
            n.text.contains("brotli") && n.text.contains("zstd"),
            "{n:?}"
        );
        // The same compression for data as for WAL maps; another one does not.
        let both = |wal: &str, data: &str| {
            run(&format!(
                "apiVersion: barmancloud.cnpg.io/v1\nkind: ObjectStore\nmetadata: {{name: s}}\n\
                 spec:\n  configuration:\n    destinationPath: s3://bkt\n    \
                 wal: {{compression: {wal}}}\n    data: {{compression: {data}}}\n"
            ))
        };
        assert_eq!(both("lz4", "lz4").items[0].not_mapped().count(), 0);
        let c = both("zstd", "snappy");
        let n = c.items[0].not_mapped().next().unwrap();
        assert!(
            n.field.ends_with("data.compression") && n.text.contains("ScheduledBackup"),
            "{n:?}"
        );
        let c = run(&store(
            "{encryption: aws:kms, archiveAdditionalCommandArgs: [\"--sse-kms-key-id=alias/pg\"]}",
        ));
        let item = &c.items[0];
        assert_eq!(params_of(item)["sseKmsKeyId"], "alias/pg");
        assert_eq!(item.not_mapped().count(), 0, "{:#?}", item.notes);
        assert!(!refused(item));
        // A KMS key with AES256 is not passed (pitr would refuse it).
        let c = run(&store(
            "{encryption: AES256, archiveAdditionalCommandArgs: [--sse-kms-key-id, k]}",
        ));
        let item = &c.items[0];
        assert!(!params_of(item).contains_key("sseKmsKeyId"));
        assert!(item.not_mapped().any(|n| n.text.contains("not aws:kms")));
        assert!(!refused(item));
    }

    #[test]
    fn unreadable_input_names_the_input_and_document() {
        let e = parse_documents("kind: A\n---\nkind: [unclosed\n", "in.yaml").unwrap_err();
        assert!(e.0.starts_with("in.yaml: YAML document 2"), "{e}");
        let e = parse_documents("just a string\n", "in.yaml").unwrap_err();
        assert!(e.0.contains("in.yaml") && e.0.contains("a string"), "{e}");
        // Empty documents are skipped; other kinds are listed as ignored.
        let docs = parse_documents(
            "---\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: x, namespace: db}\n",
            "in.yaml",
        )
        .unwrap();
        assert_eq!(docs.len(), 1);
        let c = convert(&docs);
        assert!(c.items.is_empty());
        assert_eq!(c.ignored.len(), 1);
        assert!(c.ignored[0].contains("Secret db/x"), "{:?}", c.ignored);
    }

    #[test]
    fn a_missing_object_store_is_reported() {
        let c = run(
            "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata: {name: pg}\nspec:\n  \
             plugins:\n  - name: barman-cloud.cloudnative-pg.io\n    parameters: \
             {barmanObjectName: elsewhere}\n",
        );
        let item = &c.items[0];
        assert_eq!(params_of(item), expect(&[("serverName", "pg")]));
        assert!(item
            .not_mapped()
            .any(|n| n.field.ends_with("barmanObjectName") && n.text.contains("elsewhere")));
    }

    #[test]
    fn rendered_output_reads_back_with_its_notes() {
        let c = run(OBJECT_STORE_AND_CLUSTER);
        let text = render(&c, "in.yaml");
        // Documents are lists of one entry; the comments are not data.
        let lists: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
            .map(|d| Value::deserialize(d).unwrap())
            .filter(|v| !v.is_null())
            .collect();
        assert_eq!(lists, vec![json!([c.items[0].entry])]);
        let item = &c.items[0];
        for n in item.not_mapped() {
            assert!(
                text.contains(&format!("# not mapped: {}: ", n.field)),
                "{} not in\n{text}",
                n.field
            );
        }
        assert!(
            text.contains("\n- name: pitr.cnpg.io\n  isWALArchiver: true\n"),
            "{text}"
        );
        // Every line of a multi-line note stays a comment.
        assert!(text.contains("#     S3_ACCESS_KEY_ID: <the value of key ACCESS_KEY_ID"));
    }
}
