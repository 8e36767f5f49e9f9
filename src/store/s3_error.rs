//! Turns AWS SDK errors into one-line messages that name the setting to
//! check. The SDK's own text is kept after the hint for the curious, but
//! never contains credentials (the signing key is not part of any error).

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::error::Error;

/// What went wrong, as far as the caller needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    NotFound,
    PreconditionFailed,
    Other,
}

/// Where the request went, for messages.
pub(crate) struct Target<'a> {
    pub endpoint: &'a str,
    pub bucket: &'a str,
}

/// Classifies an SDK error so callers can handle "not found" and
/// "precondition failed" themselves.
pub(crate) fn classify<E>(err: &SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata,
{
    let status = http_status(err);
    let code = err
        .as_service_error()
        .and_then(|e| e.code())
        .unwrap_or_default();
    match (status, code) {
        (_, "NoSuchKey") | (Some(404), "") | (Some(404), "NotFound") => Failure::NotFound,
        (Some(412), _) | (_, "PreconditionFailed") => Failure::PreconditionFailed,
        _ => Failure::Other,
    }
}

fn http_status<E>(err: &SdkError<E, HttpResponse>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

pub(crate) fn to_error<E>(
    err: SdkError<E, HttpResponse>,
    op: &str,
    key: &str,
    t: &Target<'_>,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let detail = DisplayErrorContext(&err).to_string();
    let code = err
        .as_service_error()
        .and_then(|e| e.code())
        .unwrap_or_default()
        .to_string();
    let status = http_status(&err);
    let place = format!("{op} s3://{}/{key} at {}", t.bucket, t.endpoint);
    let hint = match (&err, code.as_str()) {
        (_, "NoSuchBucket") => Some(format!(
            "bucket '{}' does not exist at {}: create it, or fix the bucket in --repo / PITR_REPO",
            t.bucket, t.endpoint
        )),
        (
            _,
            "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "AccessDenied"
            | "InvalidToken"
            | "ExpiredToken",
        ) => Some(format!(
            "the S3 store rejected the credentials ({code}): check S3_ACCESS_KEY_ID and \
                 S3_SECRET_ACCESS_KEY (or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) and the \
                 user's rights on bucket '{}'",
            t.bucket
        )),
        (_, "InvalidRequest") if detail.contains("ncrypt") || detail.contains("SSL") => {
            Some(format!(
                "the S3 store refused the server-side encryption request: check --sse / PITR_SSE \
             (Ceph RGW accepts AES256 and aws:kms only over https) at {}",
                t.endpoint
            ))
        }
        (_, "KMS.NotFoundException" | "KMSNotFound") => Some(
            "the KMS key was not found: check --sse-kms-key-id / PITR_SSE_KMS_KEY_ID".to_string(),
        ),
        (SdkError::DispatchFailure(_), _) | (SdkError::TimeoutError(_), _) => {
            Some(dispatch_hint(&detail, t.endpoint))
        }
        _ => None,
    };
    let status = status.map(|s| format!(" (HTTP {s})")).unwrap_or_default();
    match hint {
        Some(h) => Error::Store(format!("{place} failed: {h}{status}")),
        None => Error::Store(format!("{place} failed{status}: {detail}")),
    }
}

fn dispatch_hint(detail: &str, endpoint: &str) -> String {
    let d = detail.to_ascii_lowercase();
    if d.contains("unknownissuer")
        || d.contains("invalid peer certificate")
        || d.contains("certificate")
    {
        format!(
            "the TLS certificate of {endpoint} is not trusted ({}): pass the CA bundle that \
             signed it with --ca-bundle / PITR_CA_BUNDLE",
            if d.contains("unknownissuer") {
                "UnknownIssuer"
            } else {
                "certificate error"
            }
        )
    } else if d.contains("connection refused") {
        format!("cannot connect to {endpoint} (connection refused): check --endpoint-url / PITR_ENDPOINT_URL and that the S3 server is running")
    } else if d.contains("dns error") || d.contains("failed to lookup") {
        format!("cannot resolve the host of {endpoint}: check --endpoint-url / PITR_ENDPOINT_URL")
    } else if d.contains("timeout") || d.contains("timed out") {
        format!(
            "{endpoint} did not answer in time (limits: --s3-connect-timeout, \
             --s3-read-timeout, --s3-request-time-limit): check the network and \
             --endpoint-url / PITR_ENDPOINT_URL"
        )
    } else {
        format!("cannot reach {endpoint}: check --endpoint-url / PITR_ENDPOINT_URL ({detail})")
    }
}
