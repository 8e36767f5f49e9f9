//! The S3 driver (aws-sdk-s3), set up for Ceph RGW and MinIO as much as for
//! AWS: path-style addressing, a private CA, checksums only when required
//! (RGW 16 rejects the SDK's streamed trailing checksums), a Content-Length
//! on every PUT, and server-side encryption headers.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::interceptors::FinalizerInterceptorContextRef;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, ConfigBag, Credentials, Intercept, Region, RequestChecksumCalculation,
    ResponseChecksumValidation, RuntimeComponents, StalledStreamProtectionConfig,
};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption};
use aws_sdk_s3::Client;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use tracing::{debug, warn};

use super::s3_error::{classify, to_error, Failure, Target};
use super::{
    Metadata, Object, ObjectInfo, ObjectStore, ObjectWriter, PutOptions, PutOutcome, RangeBytes,
};
use crate::config::{S3Settings, Sse};
use crate::error::{Error, Result};

pub use crate::config::DEFAULT_PART_SIZE;

/// The largest object stored with `if_absent`: always one conditional PUT
/// (`If-None-Match: *`), since completing a multipart upload cannot be made
/// conditional on every store (Ceph RGW 16 ignores the condition there).
/// Room for PostgreSQL's largest WAL segment (1 GiB) and encoding overhead.
pub const MAX_CONDITIONAL_PUT: usize = (1 << 30) + (64 << 20);

pub struct S3Store {
    client: Client,
    bucket: String,
    endpoint: String,
    sse: Sse,
    part_size: usize,
    /// Attempts per request (`--s3-attempts`), also for reading a small
    /// object's body again when it fails half way.
    attempts: u32,
}

/// The most keys one DeleteObjects request may name (S3's limit).
const DELETE_BATCH: usize = 1000;

/// Content-MD5 of a request body, which MinIO and older S3 servers require
/// on DeleteObjects; the SDK, in "checksums when required" mode, sends only
/// its CRC32 header there.
fn content_md5(body: &[u8]) -> String {
    use base64::Engine;
    use md5::Digest;
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(body))
}

/// Builds an SDK client from the settings. Public so tests and tools can
/// reach the same store the way pitr does.
pub fn client(settings: &S3Settings) -> Result<Client> {
    let creds = settings.credentials.as_ref().ok_or_else(|| {
        Error::Config(
            "no S3 credentials: set S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY \
             (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) in the environment"
                .into(),
        )
    })?;
    let mut trust = TrustStore::default();
    if let Some(path) = &settings.ca_bundle {
        let pem = std::fs::read(path).map_err(|e| {
            Error::Config(format!(
                "cannot read CA bundle {} (--ca-bundle / PITR_CA_BUNDLE): {e}",
                path.display()
            ))
        })?;
        if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
            return Err(Error::Config(format!(
                "CA bundle {} (--ca-bundle / PITR_CA_BUNDLE) holds no PEM certificate",
                path.display()
            )));
        }
        trust = trust.with_pem_certificate(pem);
    }
    let tls_context = TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .map_err(|e| Error::Config(format!("cannot set up TLS: {e}")))?;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .tls_context(tls_context)
        .build_https();
    let credentials = Credentials::new(
        creds.access_key_id.expose(),
        creds.secret_access_key.expose(),
        creds.session_token.as_ref().map(|t| t.expose().to_string()),
        None,
        "pitr-environment",
    );
    let mut b = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(settings.region.clone()))
        .credentials_provider(credentials)
        .http_client(http)
        .force_path_style(settings.path_style)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .retry_config(RetryConfig::standard().with_max_attempts(settings.request_attempts.max(1)))
        .timeout_config({
            let mut t = TimeoutConfig::builder()
                .connect_timeout(settings.connect_timeout)
                .read_timeout(settings.read_timeout);
            t.set_operation_timeout(settings.request_time_limit);
            t.build()
        })
        // A body that makes no progress for the read timeout is a stall.
        .stalled_stream_protection(
            StalledStreamProtectionConfig::enabled()
                .grace_period(settings.read_timeout.max(Duration::from_secs(1)))
                .build(),
        )
        .interceptor(AttemptLog);
    if let Some(url) = &settings.endpoint_url {
        b = b.endpoint_url(url);
    }
    Ok(Client::from_conf(b.build()))
}

/// Logs every failed attempt of a store request that the S3 client may
/// retry (no answer, a timeout, HTTP 5xx, 429): the retries would be
/// silent otherwise. Names the request and the fault, never credentials
/// (requests are signed in headers, which are not logged).
#[derive(Debug)]
struct AttemptLog;

impl Intercept for AttemptLog {
    fn name(&self) -> &'static str {
        "pitr-attempt-log"
    }

    fn read_after_attempt(
        &self,
        ctx: &FinalizerInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> std::result::Result<(), aws_sdk_s3::error::BoxError> {
        let Some(Err(err)) = ctx.output_or_error() else {
            return Ok(());
        };
        let request = ctx
            .request()
            .map(|r| {
                let uri = r.uri();
                let path = uri.split('?').next().unwrap_or(uri);
                let path = path.split("://").last().unwrap_or(path);
                let path = path.find('/').map(|i| &path[i..]).unwrap_or("/");
                format!("{} {path}", r.method())
            })
            .unwrap_or_else(|| "request".into());
        let fault = match ctx.response().map(|r| r.status().as_u16()) {
            Some(s) if s >= 500 || s == 429 || s == 408 => {
                let body = ctx
                    .response()
                    .and_then(|r| r.body().bytes())
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                let code = body
                    .split("<Code>")
                    .nth(1)
                    .and_then(|c| c.split("</Code>").next())
                    .map(|c| format!(" {c}"))
                    .unwrap_or_default();
                format!("HTTP {s}{code}")
            }
            Some(_) => return Ok(()),
            None => aws_sdk_s3::error::DisplayErrorContext(err).to_string(),
        };
        warn!(
            "store request {request}: attempt failed: {fault} (retried while --s3-attempts and \
             --s3-request-time-limit allow)"
        );
        Ok(())
    }
}

impl S3Store {
    pub fn open(settings: &S3Settings, bucket: &str) -> Result<Self> {
        let endpoint = settings
            .endpoint_url
            .clone()
            .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", settings.region));
        match &settings.endpoint_url {
            Some(url) if !url.starts_with("http://") && !url.starts_with("https://") => {
                return Err(Error::Config(format!(
                    "endpoint '{url}' (--endpoint-url / PITR_ENDPOINT_URL) must start with https:// or http://"
                )))
            }
            Some(url) if url.starts_with("http://") && settings.sse != Sse::None => {
                return Err(Error::Config(format!(
                    "server-side encryption {} over plain HTTP ({url}) is rejected by Ceph RGW \
                     (and is unsafe anywhere): use an https:// endpoint, or --sse none",
                    settings.sse.name()
                )))
            }
            _ => {}
        }
        Ok(S3Store {
            client: client(settings)?,
            bucket: bucket.to_string(),
            endpoint,
            sse: settings.sse.clone(),
            part_size: settings.part_size,
            attempts: settings.request_attempts.max(1),
        })
    }

    /// One DeleteObjects request (quiet: only failures are reported).
    async fn delete_batch(&self, keys: &[String]) -> Result<()> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        let first = keys.first().map(String::as_str).unwrap_or_default();
        debug!(
            "store request: DeleteObjects {} keys from {first}",
            keys.len()
        );
        let objects = keys
            .iter()
            .map(|k| ObjectIdentifier::builder().key(k).build())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Store(format!("cannot build DeleteObjects request: {e}")))?;
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(|e| Error::Store(format!("cannot build DeleteObjects request: {e}")))?;
        let out = self
            .client
            .delete_objects()
            .bucket(&self.bucket)
            .delete(delete)
            .customize()
            .mutate_request(|req| {
                if let Some(md5) = req.body().bytes().map(content_md5) {
                    req.headers_mut().insert("Content-MD5", md5);
                }
            })
            .send()
            .await
            .map_err(|e| to_error(e, "DeleteObjects", first, &self.target()))?;
        let failed: Vec<String> = out
            .errors()
            .iter()
            .filter(|e| e.code() != Some("NoSuchKey"))
            .map(|e| {
                format!(
                    "{} ({})",
                    e.key().unwrap_or_default(),
                    e.message().or(e.code()).unwrap_or("refused")
                )
            })
            .collect();
        if let Some(one) = failed.first() {
            return Err(Error::Store(format!(
                "{} ({}) refused to delete {} of {} objects, e.g. {one}: check that the \
                 credentials may delete (s3:DeleteObject) in bucket {}",
                self.endpoint,
                self.bucket,
                failed.len(),
                keys.len(),
                self.bucket
            )));
        }
        Ok(())
    }

    /// One level under `prefix` (a listing with `/` as the delimiter): the
    /// objects directly there, and the "directories" below it.
    async fn list_one_level(&self, prefix: &str) -> Result<(Vec<ObjectInfo>, Vec<String>)> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .delimiter("/")
            .into_paginator()
            .send();
        let (mut objects, mut dirs) = (Vec::new(), Vec::new());
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| to_error(e, "LIST", prefix, &self.target()))?;
            debug!(
                "store request: LIST {prefix} (one level): {} keys, {} directories",
                page.contents().len(),
                page.common_prefixes().len()
            );
            for o in page.contents() {
                if let Some(key) = o.key() {
                    objects.push(listed(key, o.size(), o.last_modified()));
                }
            }
            dirs.extend(
                page.common_prefixes()
                    .iter()
                    .filter_map(|p| p.prefix().map(str::to_string)),
            );
        }
        Ok((objects, dirs))
    }

    fn target(&self) -> Target<'_> {
        Target {
            endpoint: &self.endpoint,
            bucket: &self.bucket,
        }
    }

    fn sse_header(&self) -> (Option<ServerSideEncryption>, Option<String>) {
        match &self.sse {
            Sse::None => (None, None),
            Sse::Aes256 => (Some(ServerSideEncryption::Aes256), None),
            Sse::Kms { key_id } => (Some(ServerSideEncryption::AwsKms), key_id.clone()),
        }
    }

    async fn put_single(
        &self,
        key: &str,
        data: Bytes,
        opts: &PutOptions,
        metadata: Metadata,
    ) -> Result<PutOutcome> {
        let (sse, kms) = self.sse_header();
        let len = data.len() as i64;
        debug!("store request: PUT {key} ({len} bytes)");
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(len)
            .body(ByteStream::from(data))
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms);
        if !metadata.is_empty() {
            req = req.set_metadata(Some(metadata.into_iter().collect()));
        }
        if opts.if_absent {
            req = req.if_none_match("*");
        }
        match req.send().await {
            Ok(_) => {
                debug!("store answer: PUT {key}: stored");
                Ok(PutOutcome::Stored)
            }
            Err(e) if opts.if_absent && classify(&e) == Failure::PreconditionFailed => {
                debug!("store answer: PUT {key}: already exists (412), nothing stored");
                Ok(PutOutcome::AlreadyExists)
            }
            Err(e) => Err(to_error(e, "PUT", key, &self.target())),
        }
    }
}

/// An object as a listing shows it (no metadata).
fn listed(
    key: &str,
    size: Option<i64>,
    modified: Option<&aws_sdk_s3::primitives::DateTime>,
) -> ObjectInfo {
    ObjectInfo {
        key: key.to_string(),
        size: size.unwrap_or(0).max(0) as u64,
        last_modified: to_utc(modified),
        metadata: Metadata::new(),
    }
}

/// What HEAD and GET say about an object.
fn object_info(
    key: &str,
    length: Option<i64>,
    modified: Option<&aws_sdk_s3::primitives::DateTime>,
    metadata: Option<&std::collections::HashMap<String, String>>,
) -> ObjectInfo {
    ObjectInfo {
        key: key.to_string(),
        size: length.unwrap_or(0).max(0) as u64,
        last_modified: to_utc(modified),
        metadata: metadata.cloned().unwrap_or_default().into_iter().collect(),
    }
}

fn to_utc(t: Option<&aws_sdk_s3::primitives::DateTime>) -> Option<DateTime<Utc>> {
    t.and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
}

#[async_trait]
impl ObjectStore for S3Store {
    fn url(&self) -> String {
        format!("s3://{} at {}", self.bucket, self.endpoint)
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        debug!("store request: HEAD {key}");
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(o) => Ok(Some(object_info(
                key,
                o.content_length(),
                o.last_modified(),
                o.metadata(),
            ))),
            Err(e) if classify(&e) == Failure::NotFound => Ok(None),
            Err(e) => Err(to_error(e, "HEAD", key, &self.target())),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Object>> {
        debug!("store request: GET {key}");
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(o) => {
                let info = object_info(key, o.content_length(), o.last_modified(), o.metadata());
                Ok(Some(Object {
                    info,
                    body: Box::pin(o.body.into_async_read()),
                }))
            }
            Err(e) if classify(&e) == Failure::NotFound => Ok(None),
            Err(e) => Err(to_error(e, "GET", key, &self.target())),
        }
    }

    /// A small object whole. The S3 client retries a request that fails
    /// before its answer arrives, not a body that fails half way (a reset,
    /// a stall): that is read again here, with the same attempts.
    async fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>> {
        use tokio::io::AsyncReadExt;
        let mut attempt = 1;
        loop {
            let Some(mut obj) = self.get(key).await? else {
                return Ok(None);
            };
            let mut body = Vec::with_capacity(obj.info.size.min(64 << 20) as usize);
            match obj.body.read_to_end(&mut body).await {
                Ok(_) => return Ok(Some(body)),
                Err(e) if attempt < self.attempts => {
                    warn!(
                        "store request GET {key}: attempt failed: reading the body: {} (read \
                         again, attempt {} of {})",
                        crate::error::with_causes(&e),
                        attempt + 1,
                        self.attempts
                    );
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                    attempt += 1;
                }
                Err(e) => {
                    return Err(Error::Store(format!(
                        "reading {key} from {} failed: {} (after {attempt} attempts)",
                        self.url(),
                        crate::error::with_causes(&e)
                    )))
                }
            }
        }
    }

    async fn get_range(&self, key: &str, start: u64, len: u64) -> Result<Option<RangeBytes>> {
        debug!("store request: GET {key} (bytes {start}+{len})");
        let range = format!("bytes={start}-{}", start + len.max(1) - 1);
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(range)
            .send()
            .await
        {
            Ok(o) => {
                let version = o.e_tag().map(str::to_string);
                let bytes = o.body.collect().await.map_err(|e| {
                    Error::Store(format!(
                        "reading bytes {start}+{len} of {key} from {} failed: {}",
                        self.url(),
                        crate::error::with_causes(&e)
                    ))
                })?;
                Ok(Some(RangeBytes {
                    bytes: bytes.into_bytes(),
                    version,
                }))
            }
            Err(e) if classify(&e) == Failure::NotFound => Ok(None),
            Err(e) => Err(to_error(e, "GET", key, &self.target())),
        }
    }

    async fn list_each(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        each: &mut (dyn FnMut(ObjectInfo) + Send),
    ) -> Result<()> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .set_start_after(start_after.map(str::to_string))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| to_error(e, "LIST", prefix, &self.target()))?;
            debug!(
                "store request: LIST {prefix} (after {}): {} keys",
                start_after.unwrap_or("-"),
                page.contents().len()
            );
            for o in page.contents() {
                if let Some(key) = o.key() {
                    each(listed(key, o.size(), o.last_modified()));
                }
            }
        }
        Ok(())
    }

    async fn list_shallow(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        Ok(self.list_one_level(prefix).await?.0)
    }

    async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>> {
        let mut dirs = self.list_one_level(prefix).await?.1;
        dirs.sort();
        Ok(dirs)
    }

    async fn any_under(&self, prefix: &str) -> Result<bool> {
        debug!("store request: LIST {prefix} (one key)");
        let page = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .max_keys(1)
            .send()
            .await
            .map_err(|e| to_error(e, "LIST", prefix, &self.target()))?;
        Ok(!page.contents().is_empty())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        debug!("store request: DELETE {key}");
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| to_error(e, "DELETE", key, &self.target()))?;
        Ok(())
    }

    async fn delete_many(&self, keys: &[String]) -> Result<()> {
        for batch in keys.chunks(DELETE_BATCH) {
            self.delete_batch(batch).await?;
        }
        Ok(())
    }

    async fn abort_unfinished(&self, prefix: &str) -> Result<usize> {
        let listed = self
            .client
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .prefix(prefix)
            .send()
            .await
            .map_err(|e| to_error(e, "ListMultipartUploads", prefix, &self.target()))?;
        let mut aborted = 0;
        for u in listed.uploads() {
            let (Some(key), Some(id)) = (u.key(), u.upload_id()) else {
                continue;
            };
            self.client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(id)
                .send()
                .await
                .map_err(|e| to_error(e, "AbortMultipartUpload", key, &self.target()))?;
            aborted += 1;
        }
        Ok(aborted)
    }

    async fn writer(&self, key: &str, opts: PutOptions) -> Result<Box<dyn ObjectWriter>> {
        Ok(Box::new(S3Writer {
            store: S3Store {
                client: self.client.clone(),
                bucket: self.bucket.clone(),
                endpoint: self.endpoint.clone(),
                sse: self.sse.clone(),
                part_size: self.part_size,
                attempts: self.attempts,
            },
            key: key.to_string(),
            part_size: part_size_for(self.part_size, opts.size_hint),
            opts,
            buf: BytesMut::new(),
            upload: None,
        }))
    }
}

/// S3 allows 10,000 parts; pitr plans for 8,000 to leave room for an
/// estimate that falls short.
const PLANNED_PARTS: usize = 8_000;

/// The part size for an object expected to hold up to `hint` bytes: the
/// store's (small parts keep memory low: two parts travel while a third
/// fills), or, for an object that would need more than 8,000 of them, the
/// next whole MiB that fits it in 8,000 (S3's maximum part is 5 GiB).
fn part_size_for(default: usize, hint: Option<usize>) -> usize {
    let needed = hint
        .unwrap_or(0)
        .div_ceil(PLANNED_PARTS)
        .next_multiple_of(1 << 20);
    default.max(needed).min(5 << 30)
}

/// Appends `data` to `buf`, growing it by doubling but never past what the
/// object or part can need (`hint`, the largest size expected, then
/// `limit`): a 32 MiB part holds 32 MiB, not a 64 MiB allocation, and a
/// 16 MiB WAL segment that does not compress is not given 32 MiB.
fn append(buf: &mut BytesMut, data: &[u8], hint: Option<usize>, limit: usize) {
    let needed = buf.len() + data.len();
    if needed > buf.capacity() {
        let ceiling = hint.unwrap_or(limit).min(limit).max(needed);
        let cap = buf.capacity().saturating_mul(2).max(needed).min(ceiling);
        let mut bigger = BytesMut::with_capacity(cap);
        bigger.extend_from_slice(buf);
        *buf = bigger;
    }
    buf.extend_from_slice(data);
}

/// Parts uploading at once: the next part is read and encoded while the
/// previous ones travel (memory: this many parts plus the one filling).
const PARTS_IN_FLIGHT: usize = 2;

type PartUpload = futures::future::BoxFuture<'static, Result<CompletedPart>>;

struct Multipart {
    id: String,
    parts: Vec<CompletedPart>,
    in_flight: futures::stream::FuturesUnordered<PartUpload>,
    next_number: i32,
}

impl Multipart {
    /// Waits for every part in flight; the parts in order.
    async fn drain(&mut self) -> Result<Vec<CompletedPart>> {
        use futures::StreamExt;
        while let Some(part) = self.in_flight.next().await {
            self.parts.push(part?);
        }
        let mut parts = self.parts.clone();
        parts.sort_by_key(|p| p.part_number());
        Ok(parts)
    }
}

/// Buffers up to one part; a small object becomes a single PUT (with
/// `If-None-Match: *` when asked), a large one a multipart upload.
struct S3Writer {
    store: S3Store,
    key: String,
    /// This object's part size: the store's, or larger for a big object.
    part_size: usize,
    opts: PutOptions,
    buf: BytesMut,
    upload: Option<Multipart>,
}

impl S3Writer {
    async fn start_multipart(&mut self) -> Result<()> {
        let t = self.store.target();
        let (sse, kms) = self.store.sse_header();
        let meta = (!self.opts.metadata.is_empty())
            .then(|| self.opts.metadata.clone().into_iter().collect());
        let out = self
            .store
            .client
            .create_multipart_upload()
            .bucket(&self.store.bucket)
            .key(&self.key)
            .set_metadata(meta)
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms)
            .send()
            .await
            .map_err(|e| to_error(e, "CreateMultipartUpload", &self.key, &t))?;
        let id = out.upload_id().ok_or_else(|| {
            Error::Store(format!("{} returned no multipart upload id", t.endpoint))
        })?;
        self.upload = Some(Multipart {
            id: id.to_string(),
            parts: Vec::new(),
            in_flight: Default::default(),
            next_number: 1,
        });
        Ok(())
    }

    /// Starts uploading a part, first waiting for room among the parts in flight.
    async fn send_part(&mut self, data: Bytes) -> Result<()> {
        use futures::StreamExt;
        let up = self.upload.as_mut().expect("multipart started");
        while up.in_flight.len() >= PARTS_IN_FLIGHT {
            let done = up.in_flight.next().await.expect("not empty")?;
            up.parts.push(done);
            if up.parts.len() == 1 {
                crate::fault_point::reached("multipart-part-stored", &self.key);
            }
        }
        let number = up.next_number;
        up.next_number += 1;
        let (client, bucket, key, id) = (
            self.store.client.clone(),
            self.store.bucket.clone(),
            self.key.clone(),
            up.id.clone(),
        );
        let endpoint = self.store.endpoint.clone();
        up.in_flight.push(Box::pin(async move {
            let len = data.len() as i64;
            let out = client
                .upload_part()
                .bucket(&bucket)
                .key(&key)
                .upload_id(&id)
                .part_number(number)
                .content_length(len)
                .body(ByteStream::from(data))
                .send()
                .await
                .map_err(|e| {
                    let t = Target {
                        endpoint: &endpoint,
                        bucket: &bucket,
                    };
                    to_error(e, "UploadPart", &key, &t)
                })?;
            Ok(CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(str::to_string))
                .build())
        }));
        Ok(())
    }
}

#[async_trait]
impl ObjectWriter for S3Writer {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        let limit = match self.opts.if_absent {
            true => MAX_CONDITIONAL_PUT,
            false => self.part_size + data.len(),
        };
        append(&mut self.buf, &data, self.opts.size_hint, limit);
        if self.opts.if_absent {
            // Never multipart: one atomic conditional PUT at finish.
            if self.buf.len() > MAX_CONDITIONAL_PUT {
                return Err(Error::Config(format!(
                    "{} is over {} MiB, the largest object pitr stores with a conditional \
                     PUT (never-overwrite); WAL segments are at most 1 GiB",
                    self.key,
                    MAX_CONDITIONAL_PUT >> 20
                )));
            }
            return Ok(());
        }
        while self.buf.len() > self.part_size {
            if self.upload.is_none() {
                self.start_multipart().await?;
            }
            let part = self.buf.split_to(self.part_size).freeze();
            // What follows the part still shares its allocation; it moves
            // to a new buffer, sized for a whole part, only once the part
            // has a place among those in flight: no more than the parts in
            // flight and the one filling are ever held.
            let tail = std::mem::take(&mut self.buf);
            if let Err(e) = self.send_part(part).await {
                let _ = abort_upload(&self.store, &self.key, self.upload.take()).await;
                return Err(e);
            }
            self.buf = BytesMut::with_capacity(self.part_size + tail.len().max(1 << 20));
            self.buf.extend_from_slice(&tail);
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>, late_metadata: Metadata) -> Result<PutOutcome> {
        let rest = std::mem::take(&mut self.buf).freeze();
        if self.upload.is_none() {
            let mut metadata = self.opts.metadata.clone();
            metadata.extend(late_metadata);
            return self
                .store
                .put_single(&self.key, rest, &self.opts, metadata)
                .await;
        }
        let mut sent = self.send_part(rest).await;
        let mut parts = Vec::new();
        if sent.is_ok() {
            match self
                .upload
                .as_mut()
                .expect("multipart started")
                .drain()
                .await
            {
                Ok(p) => parts = p,
                Err(e) => sent = Err(e),
            }
        }
        if let Err(e) = sent {
            let _ = abort_upload(&self.store, &self.key, self.upload.take()).await;
            return Err(e);
        }
        let up = self.upload.take().expect("multipart started");
        let done = self
            .store
            .client
            .complete_multipart_upload()
            .bucket(&self.store.bucket)
            .key(&self.key)
            .upload_id(&up.id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await;
        match done {
            Ok(_) => Ok(PutOutcome::Stored),
            Err(e) => {
                let err = to_error(
                    e,
                    "CompleteMultipartUpload",
                    &self.key,
                    &self.store.target(),
                );
                let _ = abort_upload(&self.store, &self.key, Some(up)).await;
                Err(err)
            }
        }
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        abort_upload(&self.store, &self.key, self.upload.take()).await
    }
}

async fn abort_upload(store: &S3Store, key: &str, upload: Option<Multipart>) -> Result<()> {
    let Some(up) = upload else { return Ok(()) };
    store
        .client
        .abort_multipart_upload()
        .bucket(&store.bucket)
        .key(key)
        .upload_id(&up.id)
        .send()
        .await
        .map_err(|e| to_error(e, "AbortMultipartUpload", key, &store.target()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{S3Credentials, Secret};

    /// A store whose endpoint refuses connections: any request fails, so a
    /// write that returns Ok sent nothing.
    fn unreachable_store() -> S3Store {
        let settings = S3Settings {
            endpoint_url: Some("http://127.0.0.1:9".into()),
            credentials: Some(S3Credentials {
                access_key_id: Secret::new("AKIATEST"),
                secret_access_key: Secret::new("not-a-secret"),
                session_token: None,
            }),
            part_size: 5 << 20,
            request_attempts: 1,
            ..S3Settings::default()
        };
        S3Store::open(&settings, "bucket").unwrap()
    }

    #[tokio::test]
    async fn never_overwrite_objects_are_buffered_for_one_conditional_put() {
        let store = unreachable_store();
        let chunk = Bytes::from(vec![7u8; 4 << 20]);
        let mut w = store
            .writer(
                "k",
                PutOptions {
                    if_absent: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        // Four parts' worth: no multipart upload is started.
        for _ in 0..5 {
            w.write(chunk.clone()).await.unwrap();
        }
        // Only finishing sends (one PUT), which fails here.
        let e = w.finish(Metadata::new()).await.unwrap_err();
        assert!(e.to_string().contains("PUT s3://bucket/k"), "{e}");

        // Without if_absent, passing one part starts a multipart upload.
        let mut w = store.writer("k2", PutOptions::default()).await.unwrap();
        w.write(chunk.clone()).await.unwrap();
        let e = w.write(chunk).await.unwrap_err();
        assert!(e.to_string().contains("CreateMultipartUpload"), "{e}");
    }

    #[test]
    fn parts_grow_only_for_objects_that_would_need_too_many() {
        let mib = 1 << 20;
        assert_eq!(part_size_for(16 * mib, None), 16 * mib);
        assert_eq!(part_size_for(16 * mib, Some(100 * 1024 * mib)), 16 * mib);
        // 1 TiB in 8,000 parts: 132 MiB each (131.07 rounded up).
        assert_eq!(part_size_for(16 * mib, Some(1 << 40)), 132 * mib);
        assert_eq!(part_size_for(16 * mib, Some(usize::MAX / 2)), 5 << 30);
    }

    #[test]
    fn buffers_grow_to_what_the_object_needs_not_beyond() {
        let mut buf = BytesMut::new();
        let chunk = vec![1u8; 1 << 20];
        // A 16 MiB segment that does not compress, with a 17 MiB hint.
        for _ in 0..16 {
            append(&mut buf, &chunk, Some(17 << 20), MAX_CONDITIONAL_PUT);
        }
        append(&mut buf, &[2u8; 100], Some(17 << 20), MAX_CONDITIONAL_PUT);
        assert!(buf.capacity() <= 17 << 20, "{}", buf.capacity());
        assert_eq!(buf.len(), (16 << 20) + 100);
        // A part never grows past the part size plus the chunk being added.
        let mut part = BytesMut::new();
        for _ in 0..33 {
            append(&mut part, &chunk, None, (32 << 20) + chunk.len());
        }
        assert!(part.capacity() <= (33 << 20), "{}", part.capacity());
    }

    #[tokio::test]
    async fn parts_complete_in_any_order_and_are_listed_in_order() {
        let part = |n: i32| {
            CompletedPart::builder()
                .part_number(n)
                .e_tag(format!("e{n}"))
                .build()
        };
        let mut up = Multipart {
            id: "u".into(),
            parts: vec![part(2)],
            in_flight: Default::default(),
            next_number: 5,
        };
        for n in [4, 1, 3] {
            up.in_flight
                .push(Box::pin(async move { Ok::<_, Error>(part(n)) }) as PartUpload);
        }
        let parts = up.drain().await.unwrap();
        let numbers: Vec<i32> = parts.iter().map(|p| p.part_number().unwrap()).collect();
        assert_eq!(numbers, [1, 2, 3, 4]);

        // A failed part fails the drain.
        up.in_flight.push(Box::pin(async {
            Err::<CompletedPart, _>(Error::Store("part 5 failed".into()))
        }) as PartUpload);
        assert!(up.drain().await.is_err());
    }
}
