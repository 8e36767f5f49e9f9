//! The throw-away Ceph RGW started by tests/run.sh, and buckets on it.

use std::process::Command;

use aws_sdk_s3::primitives::ByteStream;
use pitr::config::{S3Credentials, S3Settings, Secret, Sse};

pub struct Rgw {
    pub endpoint: String,
    pub http_endpoint: String,
    pub ca: String,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
    pub kms_key_id: String,
    settings: S3Settings,
    client: aws_sdk_s3::Client,
    rt: tokio::runtime::Runtime,
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: these tests need the throw-away Ceph RGW that tests/run.sh starts. \
             Run the tests with `bash tests/run.sh` (it passes extra arguments to cargo test)."
        )
    })
}

impl Rgw {
    pub fn from_env() -> Rgw {
        let endpoint = var("PITR_TEST_S3_ENDPOINT");
        let settings = S3Settings {
            endpoint_url: Some(endpoint.clone()),
            region: var("PITR_TEST_S3_REGION"),
            ca_bundle: Some(var("PITR_TEST_S3_CA").into()),
            credentials: Some(S3Credentials {
                access_key_id: Secret::new(var("PITR_TEST_S3_ACCESS_KEY")),
                secret_access_key: Secret::new(var("PITR_TEST_S3_SECRET_KEY")),
                session_token: None,
            }),
            sse: Sse::None,
            path_style: true,
            part_size: pitr::store::s3::DEFAULT_PART_SIZE,
            request_attempts: pitr::config::DEFAULT_REQUEST_ATTEMPTS,
            ..S3Settings::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = {
            let _guard = rt.enter();
            pitr::store::s3::client(&settings).unwrap()
        };
        let settings_kept = settings.clone();
        Rgw {
            endpoint,
            http_endpoint: var("PITR_TEST_S3_HTTP_ENDPOINT"),
            ca: var("PITR_TEST_S3_CA"),
            access_key: var("PITR_TEST_S3_ACCESS_KEY"),
            secret_key: var("PITR_TEST_S3_SECRET_KEY"),
            region: var("PITR_TEST_S3_REGION"),
            kms_key_id: var("PITR_TEST_S3_KMS_KEY_ID"),
            settings: settings_kept,
            client,
            rt,
        }
    }

    /// pitr's settings for `s3://bucket/pg`, server `server`, to call the
    /// library directly.
    pub fn repo_config(&self, bucket: &str, server: &str) -> pitr::config::RepoConfig {
        pitr::config::RepoConfig {
            location: pitr::config::RepoLocation::S3 {
                bucket: bucket.into(),
                prefix: "pg".into(),
            },
            server_name: server.into(),
            s3: self.settings.clone(),
            compression: pitr::codec::Compression::Gzip { level: 1 },
            encryption_key_file: None,
        }
    }

    /// Creates a bucket with a unique name.
    pub fn new_bucket(&self, tag: &str) -> String {
        let name = super::unique(&format!("pitr-{tag}")).to_lowercase();
        self.rt
            .block_on(self.client.create_bucket().bucket(&name).send())
            .unwrap_or_else(|e| {
                panic!(
                    "create bucket {name}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                )
            });
        name
    }

    /// Every key in the bucket under `prefix`.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = self.rt.block_on(pages.next()) {
            for o in page.unwrap().contents() {
                out.push(o.key().unwrap().to_string());
            }
        }
        out.sort();
        out
    }

    pub fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        self.rt.block_on(async {
            let o = self
                .client
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .unwrap();
            o.body.collect().await.unwrap().into_bytes().to_vec()
        })
    }

    /// Raw PUT, bypassing pitr (to plant a damaged object).
    /// Stores `body` under `key` with user metadata, overwriting.
    pub fn put_with_metadata(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        metadata: &std::collections::HashMap<String, String>,
    ) {
        let len = body.len() as i64;
        self.rt
            .block_on(
                self.client
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .content_length(len)
                    .set_metadata(Some(metadata.clone()))
                    .body(ByteStream::from(body))
                    .send(),
            )
            .unwrap();
    }

    pub fn put_raw(&self, bucket: &str, key: &str, body: Vec<u8>) {
        let len = body.len() as i64;
        self.rt
            .block_on(
                self.client
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .content_length(len)
                    .body(ByteStream::from(body))
                    .send(),
            )
            .unwrap();
    }

    /// Keys of the multipart uploads open under `prefix`.
    pub fn open_uploads(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let out = self
            .rt
            .block_on(
                self.client
                    .list_multipart_uploads()
                    .bucket(bucket)
                    .prefix(prefix)
                    .send(),
            )
            .unwrap();
        out.uploads()
            .iter()
            .filter_map(|u| u.key().map(str::to_string))
            .collect()
    }

    pub fn delete(&self, bucket: &str, key: &str) {
        self.rt
            .block_on(self.client.delete_object().bucket(bucket).key(key).send())
            .unwrap();
    }

    /// Sets a bucket policy (JSON), for tests that revoke access.
    pub fn put_bucket_policy(&self, bucket: &str, policy: &str) {
        self.rt
            .block_on(
                self.client
                    .put_bucket_policy()
                    .bucket(bucket)
                    .policy(policy)
                    .send(),
            )
            .unwrap();
    }

    /// The user metadata (`x-amz-meta-*`) RGW reports for an object.
    pub fn metadata_of(
        &self,
        bucket: &str,
        key: &str,
    ) -> std::collections::HashMap<String, String> {
        let h = self
            .rt
            .block_on(self.client.head_object().bucket(bucket).key(key).send())
            .unwrap();
        h.metadata().cloned().unwrap_or_default()
    }

    /// The server-side encryption RGW reports for an object.
    pub fn sse_of(&self, bucket: &str, key: &str) -> (Option<String>, Option<String>) {
        let h = self
            .rt
            .block_on(self.client.head_object().bucket(bucket).key(key).send())
            .unwrap();
        (
            h.server_side_encryption().map(|s| s.as_str().to_string()),
            h.ssekms_key_id().map(str::to_string),
        )
    }

    /// An object's ETag (`"<md5>-<parts>"` for a multipart upload) and its
    /// user metadata (`x-amz-meta-*`, without the prefix).
    pub fn head(
        &self,
        bucket: &str,
        key: &str,
    ) -> (String, std::collections::HashMap<String, String>) {
        let h = self
            .rt
            .block_on(self.client.head_object().bucket(bucket).key(key).send())
            .unwrap();
        (
            h.e_tag().unwrap_or_default().to_string(),
            h.metadata().cloned().unwrap_or_default(),
        )
    }

    /// Environment for pitr (and for archive_command) pointing at `bucket`.
    pub fn pitr_env(&self, bucket: &str, server: &str) -> Vec<(String, String)> {
        vec![
            ("PITR_REPO".into(), format!("s3://{bucket}/pg")),
            ("PITR_SERVER_NAME".into(), server.into()),
            ("PITR_ENDPOINT_URL".into(), self.endpoint.clone()),
            ("PITR_REGION".into(), self.region.clone()),
            ("PITR_CA_BUNDLE".into(), self.ca.clone()),
            ("S3_ACCESS_KEY_ID".into(), self.access_key.clone()),
            ("S3_SECRET_ACCESS_KEY".into(), self.secret_key.clone()),
        ]
    }

    /// Environment for barman-cloud (boto3) against this RGW.
    pub fn barman_env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret_key.clone()),
            ("AWS_CA_BUNDLE".into(), self.ca.clone()),
            ("AWS_DEFAULT_REGION".into(), self.region.clone()),
            // boto3's new default checksums fail against RGW 16 over HTTPS.
            (
                "AWS_REQUEST_CHECKSUM_CALCULATION".into(),
                "when_required".into(),
            ),
            (
                "AWS_RESPONSE_CHECKSUM_VALIDATION".into(),
                "when_required".into(),
            ),
        ]
    }

    /// A barman-cloud command from the venv tests/run.sh prepared.
    pub fn barman(&self, tool: &str) -> Command {
        let mut c = Command::new(format!("{}/bin/{tool}", super::barman_venv()));
        c.env_clear()
            .envs(self.barman_env())
            .env("PATH", "/usr/bin:/bin");
        c
    }
}
