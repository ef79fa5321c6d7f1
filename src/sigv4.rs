//! AWS Signature Version 4 for the Rekognition path, both ends.
//!
//! * The proxy re-encodes the image inside a Rekognition request, which changes the
//!   body, and SigV4 signs the body: the client's signature cannot survive. The proxy
//!   strips it and signs again with its own credentials ([`Signer::resign`]).
//! * The local backend can check signatures the way AWS does ([`verify`], enabled by
//!   `adacompress backend --aws-verify`), so tests prove the proxy's re-signing
//!   end to end without an AWS account.
//!
//! The signing itself is the `aws-sigv4` crate's (header signing, body hash in the
//! canonical request). Verification recomputes the signature with that crate over
//! exactly the headers the client listed in `SignedHeaders`, at the client's
//! `x-amz-date`, and compares.
//!
//! Secrets stay secret: the secret access key and the session token are
//! [`SecretString`]s (the `secrecy` crate), reached only through `expose_secret()` where
//! a signature is computed, printed as `[REDACTED]` by `Debug` and zeroed on drop; and
//! no error of this module quotes a header value, a secret or a session token.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri};
pub use secrecy::{ExposeSecret, SecretString};
use time::PrimitiveDateTime;
use time::macros::format_description;

/// The signing name of Amazon Rekognition.
pub const REKOGNITION: &str = "rekognition";

/// The only algorithm AWS JSON APIs accept in the `Authorization` header.
const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Clock skew AWS tolerates between a request's `x-amz-date` and its own clock.
pub const DEFAULT_MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// Headers that carry a signature of their own; a request to re-sign loses them.
const SIGNATURE_HEADERS: [&str; 4] = [
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
];

/// Headers never signed when re-signing: hop-by-hop headers (RFC 9110 §7.6.1, and the
/// `Proxy-*` pair) are not forwarded as they are; `content-length` is set again by the
/// HTTP client for the new body; `expect`, `user-agent` and `x-amzn-trace-id` are
/// routinely rewritten on the way (the AWS SDKs leave them out for the same reason).
const UNSIGNED_HEADERS: [&str; 13] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "expect",
    "user-agent",
    "x-amzn-trace-id",
];

/// An AWS access key: the id is public, the secret and the session token are not.
#[derive(Clone)]
pub struct AwsCredentials {
    /// `AKIA…` (long-term) or `ASIA…` (temporary) key id; names the key, proves nothing.
    pub access_key_id: String,
    /// The key that signs.
    pub secret_access_key: SecretString,
    /// Temporary credentials come with a token sent as `x-amz-security-token`.
    pub session_token: Option<SecretString>,
}

impl fmt::Debug for AwsCredentials {
    /// The key id as it is (it names the key, proves nothing); the secrets as
    /// `secrecy` prints them, `[REDACTED]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key)
            .field("session_token", &self.session_token)
            .finish()
    }
}

impl PartialEq for AwsCredentials {
    /// Same key id, secret and token (the secrets compared in constant time).
    fn eq(&self, other: &AwsCredentials) -> bool {
        let token = |c: &AwsCredentials| {
            c.session_token
                .as_ref()
                .map(|t| t.expose_secret().as_bytes().to_vec())
        };
        self.access_key_id == other.access_key_id
            && constant_time_eq(
                self.secret_access_key.expose_secret().as_bytes(),
                other.secret_access_key.expose_secret().as_bytes(),
            )
            && match (token(self), token(other)) {
                (Some(a), Some(b)) => constant_time_eq(&a, &b),
                (None, None) => true,
                _ => false,
            }
    }
}

impl Eq for AwsCredentials {}

/// The standard environment variables the credentials and region come from.
pub const ENV_ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
/// See [`ENV_ACCESS_KEY_ID`].
pub const ENV_SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
/// See [`ENV_ACCESS_KEY_ID`].
pub const ENV_SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";
/// See [`ENV_ACCESS_KEY_ID`]; `AWS_DEFAULT_REGION` is read when it is unset.
pub const ENV_REGION: &str = "AWS_REGION";

/// Credentials or region missing from the environment; names the variable to set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not set (or empty): set it to use AWS signatures")]
pub struct MissingEnv(pub &'static str);

impl AwsCredentials {
    /// Credentials from an id, a secret and an optional session token.
    pub fn new(
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: Option<String>,
    ) -> AwsCredentials {
        AwsCredentials {
            access_key_id: access_key_id.into(),
            secret_access_key: SecretString::from(secret_access_key.into()),
            session_token: session_token.map(SecretString::from),
        }
    }

    /// From `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`.
    pub fn from_env() -> Result<AwsCredentials, MissingEnv> {
        AwsCredentials::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`AwsCredentials::from_env`], reading variables through `lookup` (for tests).
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<AwsCredentials, MissingEnv> {
        let get = |name: &'static str| lookup(name).filter(|v| !v.is_empty());
        let id = get(ENV_ACCESS_KEY_ID).ok_or(MissingEnv(ENV_ACCESS_KEY_ID))?;
        let secret = get(ENV_SECRET_ACCESS_KEY).ok_or(MissingEnv(ENV_SECRET_ACCESS_KEY))?;
        Ok(AwsCredentials::new(id, secret, get(ENV_SESSION_TOKEN)))
    }

    /// The `aws-sigv4` identity of these credentials, with or without the token.
    fn identity(&self, with_token: bool) -> Identity {
        let token = if with_token {
            self.session_token
                .as_ref()
                .map(|t| t.expose_secret().to_owned())
        } else {
            None
        };
        Credentials::new(
            self.access_key_id.clone(),
            self.secret_access_key.expose_secret(),
            token,
            None,
            "adacompress",
        )
        .into()
    }
}

/// The region from `AWS_REGION`, else `AWS_DEFAULT_REGION`.
pub fn region_from_env() -> Result<String, MissingEnv> {
    region_from_lookup(|name| std::env::var(name).ok())
}

/// As [`region_from_env`], reading variables through `lookup` (for tests).
pub fn region_from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<String, MissingEnv> {
    [ENV_REGION, "AWS_DEFAULT_REGION"]
        .iter()
        .find_map(|name| lookup(name).filter(|v| !v.is_empty()))
        .ok_or(MissingEnv(ENV_REGION))
}

/// Why a request could not be signed. Never quotes the URL (it may carry a key in its
/// query) nor any header value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("cannot sign: the upstream URL must be absolute (scheme and host)")]
    NotAbsolute,
    #[error("cannot sign the request: {0}")]
    Signing(String),
}

/// Signs requests to one AWS service in one region with the proxy's credentials.
#[derive(Debug, Clone)]
pub struct Signer {
    /// The proxy's own key; the client's never reaches the upstream.
    creds: AwsCredentials,
    /// Part of the credential scope; must be the upstream endpoint's region.
    region: String,
    /// Signing name, `rekognition` unless [`Signer::with_service`] says otherwise.
    service: String,
}

impl Signer {
    /// A signer for Rekognition in `region`.
    pub fn new(creds: AwsCredentials, region: impl Into<String>) -> Signer {
        Signer {
            creds,
            region: region.into(),
            service: REKOGNITION.to_owned(),
        }
    }

    /// The same signer for another service's signing name.
    pub fn with_service(mut self, service: impl Into<String>) -> Signer {
        self.service = service.into();
        self
    }

    /// The region in the credential scope.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The service's signing name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The access key id signatures are made with.
    pub fn access_key_id(&self) -> &str {
        &self.creds.access_key_id
    }

    /// Replaces the client's signature on a request to `uri` (the full upstream URL)
    /// with one made with the proxy's credentials at `now`.
    ///
    /// Removes `authorization`, `x-amz-date`, `x-amz-security-token` and
    /// `x-amz-content-sha256` (the client's signature) and `host` (the client named
    /// the proxy; the HTTP client sends the upstream's host, and the signature covers
    /// that one, taken from `uri`). Then signs the body's SHA-256 and every remaining
    /// header except hop-by-hop ones, `content-length` and a few that proxies rewrite
    /// (see `UNSIGNED_HEADERS`); header values that are not UTF-8 stay unsigned. Adds
    /// `authorization`, `x-amz-date` and, with temporary credentials,
    /// `x-amz-security-token`.
    pub fn resign(
        &self,
        method: &str,
        uri: &str,
        headers: &mut HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), SignError> {
        let parsed: Uri = uri.parse().map_err(|_| SignError::NotAbsolute)?;
        if parsed.scheme().is_none() || parsed.host().is_none() {
            return Err(SignError::NotAbsolute);
        }
        for name in SIGNATURE_HEADERS {
            headers.remove(name);
        }
        headers.remove(axum::http::header::HOST);

        let unsigned = unsigned_headers(headers);
        let to_sign: Vec<(&str, &str)> = headers
            .iter()
            .filter(|(name, _)| !unsigned.iter().any(|u| u == name.as_str()))
            .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
            .collect();

        let identity = self.creds.identity(true);
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(&self.service)
            .time(now)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| SignError::Signing(e.to_string()))?
            .into();
        let request =
            SignableRequest::new(method, uri, to_sign.into_iter(), SignableBody::Bytes(body))
                .map_err(|e| SignError::Signing(e.to_string()))?;
        let (instructions, _signature) = sign(request, &params)
            .map_err(|e| SignError::Signing(e.to_string()))?
            .into_parts();
        let (new_headers, _params) = instructions.into_parts();
        for header in new_headers {
            let mut value = HeaderValue::from_str(header.value()).map_err(|_| {
                SignError::Signing(format!("`{}` is not a valid header value", header.name()))
            })?;
            value.set_sensitive(header.sensitive() || header.name() == "authorization");
            headers.insert(HeaderName::from_static(header.name()), value);
        }
        Ok(())
    }
}

/// The names never signed on this request: [`UNSIGNED_HEADERS`] plus any the
/// `Connection` header declares hop-by-hop.
fn unsigned_headers(headers: &HeaderMap) -> Vec<String> {
    let mut names: Vec<String> = UNSIGNED_HEADERS.iter().map(|s| (*s).to_owned()).collect();
    for value in headers.get_all(axum::http::header::CONNECTION) {
        if let Ok(value) = value.to_str() {
            names.extend(
                value
                    .split(',')
                    .map(|t| t.trim().to_ascii_lowercase())
                    .filter(|t| !t.is_empty()),
            );
        }
    }
    names
}

/// Why a request's signature was rejected. Messages name what is wrong, never a
/// header value, a secret or a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing Authorization header")]
    MissingAuthorization,
    #[error("malformed Authorization header: {0}")]
    Malformed(&'static str),
    #[error("unsupported signature algorithm (only {ALGORITHM} is accepted)")]
    Algorithm,
    #[error("the access key id in the credential is not recognised")]
    UnknownAccessKey,
    #[error("credential scope is for {found}, expected {expected}")]
    Scope { expected: String, found: String },
    #[error("x-amz-date is missing, malformed or not the credential's date")]
    Date,
    #[error(
        "signature expired: x-amz-date is {skew_secs} s away from the server's time (limit {max_secs} s)"
    )]
    Stale { skew_secs: u64, max_secs: u64 },
    #[error("`{0}` must be among the signed headers")]
    NotSigned(&'static str),
    #[error("signed header `{0}` is missing from the request or not valid text")]
    MissingSignedHeader(String),
    #[error("the security token is missing or not the expected one")]
    Token,
    #[error(
        "the request signature does not match (body or signed headers changed, or another secret key)"
    )]
    Mismatch,
    #[error("cannot recompute the signature: {0}")]
    Internal(String),
}

/// What an `Authorization: AWS4-HMAC-SHA256 …` header says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Authorization {
    access_key_id: String,
    date: String,
    region: String,
    service: String,
    signed_headers: Vec<String>,
    signature: String,
}

fn parse_authorization(value: &str) -> Result<Authorization, VerifyError> {
    let rest = value
        .trim()
        .strip_prefix(ALGORITHM)
        .ok_or(VerifyError::Algorithm)?;
    if !rest.starts_with(' ') {
        return Err(VerifyError::Algorithm);
    }
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (key, val) = part
            .trim()
            .split_once('=')
            .ok_or(VerifyError::Malformed("expected Key=Value pairs"))?;
        let slot = match key {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut signature,
            _ => return Err(VerifyError::Malformed("unknown component")),
        };
        if slot.replace(val).is_some() {
            return Err(VerifyError::Malformed("repeated component"));
        }
    }
    let credential = credential.ok_or(VerifyError::Malformed("no Credential"))?;
    let signed = signed.ok_or(VerifyError::Malformed("no SignedHeaders"))?;
    let signature = signature.ok_or(VerifyError::Malformed("no Signature"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [key, date, region, service, terminator] = scope[..] else {
        return Err(VerifyError::Malformed(
            "Credential must be KEY/DATE/REGION/SERVICE/aws4_request",
        ));
    };
    if terminator != "aws4_request" || key.is_empty() {
        return Err(VerifyError::Malformed(
            "Credential must be KEY/DATE/REGION/SERVICE/aws4_request",
        ));
    }
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(VerifyError::Malformed("Signature must be 64 hex digits"));
    }
    let signed_headers: Vec<String> = signed.split(';').map(str::to_ascii_lowercase).collect();
    if signed_headers.iter().any(|h| h.is_empty()) {
        return Err(VerifyError::Malformed("empty name in SignedHeaders"));
    }
    Ok(Authorization {
        access_key_id: key.to_owned(),
        date: date.to_owned(),
        region: region.to_owned(),
        service: service.to_owned(),
        signed_headers,
        signature: signature.to_ascii_lowercase(),
    })
}

/// Parses SigV4's `YYYYMMDD'T'HHMMSS'Z'` timestamp (UTC): exactly 16 characters, a real
/// calendar date and time of day (no month 13, no 30 February, no leap second), no
/// earlier than 1970.
fn parse_amz_date(value: &str) -> Option<SystemTime> {
    let format = format_description!("[year][month][day]T[hour][minute][second]Z");
    // `[year]` would also take a sign (`+2015…`); SigV4 dates are plain digits.
    if !value.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let at = PrimitiveDateTime::parse(value, format).ok()?.assume_utc();
    let secs = u64::try_from(at.unix_timestamp()).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

/// Equality that takes as long whatever the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks a request's SigV4 header signature as AWS would: the key id must be
/// `creds`'s, the scope `region`/`service`, `x-amz-date` within `max_skew` of `now`,
/// and the signature recomputed over the request's method, `uri` (path and query, or a
/// full URL), the headers named in `SignedHeaders` (which must include `host` and
/// `x-amz-date`) and the SHA-256 of `body` must equal the one sent. With a session
/// token in `creds`, the request must carry that token, signed.
#[allow(clippy::too_many_arguments)]
pub fn verify(
    creds: &AwsCredentials,
    region: &str,
    service: &str,
    method: &str,
    uri: &str,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
    max_skew: Duration,
) -> Result<(), VerifyError> {
    let auth = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or(VerifyError::MissingAuthorization)?
        .to_str()
        .map_err(|_| VerifyError::Malformed("not text"))?;
    let auth = parse_authorization(auth)?;
    if !constant_time_eq(
        auth.access_key_id.as_bytes(),
        creds.access_key_id.as_bytes(),
    ) {
        return Err(VerifyError::UnknownAccessKey);
    }
    if auth.region != region || auth.service != service {
        return Err(VerifyError::Scope {
            expected: format!("{region}/{service}"),
            found: format!("{}/{}", auth.region, auth.service),
        });
    }
    for required in ["host", "x-amz-date"] {
        if !auth.signed_headers.iter().any(|h| h == required) {
            return Err(VerifyError::NotSigned(required));
        }
    }

    let amz_date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or(VerifyError::Date)?;
    let signed_at = parse_amz_date(amz_date).ok_or(VerifyError::Date)?;
    if !amz_date.starts_with(&auth.date) || auth.date.len() != 8 {
        return Err(VerifyError::Date);
    }
    let skew = now
        .duration_since(signed_at)
        .or_else(|_| signed_at.duration_since(now))
        .unwrap_or_default();
    if skew > max_skew {
        return Err(VerifyError::Stale {
            skew_secs: skew.as_secs(),
            max_secs: max_skew.as_secs(),
        });
    }

    let token_signed = auth
        .signed_headers
        .iter()
        .any(|h| h == "x-amz-security-token");
    if let Some(expected) = &creds.session_token {
        let sent = headers
            .get("x-amz-security-token")
            .map(HeaderValue::as_bytes)
            .unwrap_or_default();
        if !token_signed || !constant_time_eq(sent, expected.expose_secret().as_bytes()) {
            return Err(VerifyError::Token);
        }
    }

    // Exactly the signed headers, every value of each (x-amz-date is added back by the
    // signer from `signed_at`). The host comes from the URL when the request has no
    // Host header (HTTP/2's :authority).
    let parsed_uri: Uri = uri
        .parse()
        .map_err(|_| VerifyError::Internal("the request URI does not parse".to_owned()))?;
    let mut to_sign: Vec<(&str, &str)> = Vec::new();
    for name in &auth.signed_headers {
        if name == "x-amz-date" {
            continue;
        }
        let values: Vec<&str> = headers
            .get_all(name.as_str())
            .iter()
            .map(|v| v.to_str().ok())
            .collect::<Option<_>>()
            .ok_or_else(|| VerifyError::MissingSignedHeader(name.clone()))?;
        if values.is_empty() {
            if name == "host"
                && let Some(authority) = parsed_uri.authority()
            {
                to_sign.push(("host", authority.as_str()));
                continue;
            }
            return Err(VerifyError::MissingSignedHeader(name.clone()));
        }
        to_sign.extend(values.into_iter().map(|v| (name.as_str(), v)));
    }

    let mut settings = SigningSettings::default();
    // Sign what the client says it signed, nothing more, nothing less.
    settings.excluded_headers = None;
    let identity = creds.identity(false);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(signed_at)
        .settings(settings)
        .build()
        .map_err(|e| VerifyError::Internal(e.to_string()))?
        .into();
    let request = SignableRequest::new(method, uri, to_sign.into_iter(), SignableBody::Bytes(body))
        .map_err(|e| VerifyError::Internal(e.to_string()))?;
    let (_instructions, expected) = sign(request, &params)
        .map_err(|e| VerifyError::Internal(e.to_string()))?
        .into_parts();
    if constant_time_eq(expected.as_bytes(), auth.signature.as_bytes()) {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

/// The receiving side's settings: whose signatures to accept, for which scope.
#[derive(Debug, Clone)]
pub struct Verifier {
    /// The only key accepted (the local backend plays one AWS account).
    pub creds: AwsCredentials,
    /// The region requests must be scoped to.
    pub region: String,
    /// The signing name requests must be scoped to (`rekognition`).
    pub service: String,
    /// Largest accepted distance between `x-amz-date` and the clock.
    pub max_skew: Duration,
}

impl Verifier {
    /// Accepts Rekognition requests signed with `creds` for `region`, 15 minutes of skew.
    pub fn new(creds: AwsCredentials, region: impl Into<String>) -> Verifier {
        Verifier {
            creds,
            region: region.into(),
            service: REKOGNITION.to_owned(),
            max_skew: DEFAULT_MAX_SKEW,
        }
    }

    /// From the standard `AWS_*` environment variables.
    pub fn from_env() -> Result<Verifier, MissingEnv> {
        Ok(Verifier::new(
            AwsCredentials::from_env()?,
            region_from_env()?,
        ))
    }

    /// [`verify`] with these settings.
    pub fn verify(
        &self,
        method: &str,
        uri: &str,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), VerifyError> {
        verify(
            &self.creds,
            &self.region,
            &self.service,
            method,
            uri,
            headers,
            body,
            now,
            self.max_skew,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const URL: &str = "https://rekognition.us-east-1.amazonaws.com/";
    const BODY: &[u8] = br#"{"Image":{"Bytes":"AAAA"},"MaxLabels":10}"#;

    fn creds() -> AwsCredentials {
        AwsCredentials::new("AKIDEXAMPLE", SECRET, None)
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// 2015-08-30T12:36:00Z, the AWS test suite's time.
    const SUITE_TIME: u64 = 1_440_938_160;

    fn client_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "x-amz-target",
            "RekognitionService.DetectLabels".parse().unwrap(),
        );
        h.insert(
            "content-type",
            "application/x-amz-json-1.1".parse().unwrap(),
        );
        h
    }

    fn signed(signer: &Signer, body: &[u8], now: SystemTime) -> HeaderMap {
        let mut h = client_headers();
        signer.resign("POST", URL, &mut h, body, now).unwrap();
        // What the receiving side sees: the HTTP client adds the host from the URL.
        h.insert(
            "host",
            "rekognition.us-east-1.amazonaws.com".parse().unwrap(),
        );
        h
    }

    fn check(
        creds: &AwsCredentials,
        h: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), VerifyError> {
        verify(
            creds,
            "us-east-1",
            REKOGNITION,
            "POST",
            "/",
            h,
            body,
            now,
            DEFAULT_MAX_SKEW,
        )
    }

    #[test]
    fn sign_then_verify() {
        let now = at(SUITE_TIME);
        let h = signed(&Signer::new(creds(), "us-east-1"), BODY, now);
        let auth = h["authorization"].to_str().unwrap();
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/rekognition/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature="
            ),
            "{auth}"
        );
        assert_eq!(h["x-amz-date"], "20150830T123600Z");
        assert_eq!(check(&creds(), &h, BODY, now), Ok(()));
        // A few minutes later is still fine.
        assert_eq!(check(&creds(), &h, BODY, at(SUITE_TIME + 300)), Ok(()));
    }

    #[test]
    fn changed_body_fails() {
        let now = at(SUITE_TIME);
        let h = signed(&Signer::new(creds(), "us-east-1"), BODY, now);
        let tampered = br#"{"Image":{"Bytes":"AAAB"},"MaxLabels":10}"#;
        assert_eq!(
            check(&creds(), &h, tampered, now),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn changed_signed_header_fails_unsigned_header_does_not_matter() {
        let now = at(SUITE_TIME);
        let mut h = signed(&Signer::new(creds(), "us-east-1"), BODY, now);
        h.insert("user-agent", "something else".parse().unwrap());
        assert_eq!(check(&creds(), &h, BODY, now), Ok(()));
        h.insert(
            "x-amz-target",
            "RekognitionService.DetectFaces".parse().unwrap(),
        );
        assert_eq!(check(&creds(), &h, BODY, now), Err(VerifyError::Mismatch));
    }

    #[test]
    fn wrong_secret_fails() {
        let now = at(SUITE_TIME);
        let other = AwsCredentials::new("AKIDEXAMPLE", "not-the-secret", None);
        let h = signed(&Signer::new(other, "us-east-1"), BODY, now);
        assert_eq!(check(&creds(), &h, BODY, now), Err(VerifyError::Mismatch));
    }

    #[test]
    fn wrong_key_id_scope_and_stale_date_fail() {
        let now = at(SUITE_TIME);
        let other = AwsCredentials::new("AKIDOTHER", SECRET, None);
        let h = signed(&Signer::new(other, "us-east-1"), BODY, now);
        assert_eq!(
            check(&creds(), &h, BODY, now),
            Err(VerifyError::UnknownAccessKey)
        );

        let h = signed(&Signer::new(creds(), "eu-west-1"), BODY, now);
        assert!(matches!(
            check(&creds(), &h, BODY, now),
            Err(VerifyError::Scope { .. })
        ));

        let h = signed(&Signer::new(creds(), "us-east-1"), BODY, now);
        let late = at(SUITE_TIME + 16 * 60);
        assert_eq!(
            check(&creds(), &h, BODY, late),
            Err(VerifyError::Stale {
                skew_secs: 960,
                max_secs: 900
            })
        );
        let early = at(SUITE_TIME - 16 * 60);
        assert!(matches!(
            check(&creds(), &h, BODY, early),
            Err(VerifyError::Stale { .. })
        ));
    }

    #[test]
    fn missing_or_malformed_authorization_fails() {
        let now = at(SUITE_TIME);
        let mut h = client_headers();
        h.insert("host", "example".parse().unwrap());
        assert_eq!(
            check(&creds(), &h, BODY, now),
            Err(VerifyError::MissingAuthorization)
        );
        for (value, want) in [
            ("Bearer abc", VerifyError::Algorithm),
            ("AWS4-HMAC-SHA256", VerifyError::Algorithm),
            (
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/rekognition/aws4_request, SignedHeaders=host;x-amz-date",
                VerifyError::Malformed("no Signature"),
            ),
            (
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
                VerifyError::Malformed("Credential must be KEY/DATE/REGION/SERVICE/aws4_request"),
            ),
            (
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/rekognition/aws4_request, SignedHeaders=host, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
                VerifyError::NotSigned("x-amz-date"),
            ),
        ] {
            h.insert("authorization", value.parse().unwrap());
            assert_eq!(check(&creds(), &h, BODY, now), Err(want), "{value}");
        }
    }

    #[test]
    fn clients_own_signature_is_replaced() {
        let now = at(SUITE_TIME);
        let mut h = client_headers();
        h.insert(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=CLIENTKEY/20150830/us-east-1/rekognition/aws4_request, SignedHeaders=host;x-amz-date, Signature=0000000000000000000000000000000000000000000000000000000000000000"
                .parse()
                .unwrap(),
        );
        h.insert("x-amz-date", "20000101T000000Z".parse().unwrap());
        h.insert("x-amz-security-token", "client-token".parse().unwrap());
        h.insert("x-amz-content-sha256", "deadbeef".parse().unwrap());
        h.insert("host", "127.0.0.1:8080".parse().unwrap());
        h.insert("connection", "keep-alive, x-custom-hop".parse().unwrap());
        h.insert("x-custom-hop", "1".parse().unwrap());
        h.insert("content-length", "12".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        Signer::new(creds(), "us-east-1")
            .resign("POST", URL, &mut h, BODY, now)
            .unwrap();

        let auth = h["authorization"].to_str().unwrap();
        assert!(auth.contains("Credential=AKIDEXAMPLE/20150830/"), "{auth}");
        assert!(
            auth.contains("SignedHeaders=content-type;host;x-amz-date;x-amz-target,"),
            "hop-by-hop and length headers are not signed: {auth}"
        );
        assert_eq!(h.get_all("authorization").iter().count(), 1);
        assert_eq!(h["x-amz-date"], "20150830T123600Z");
        assert!(
            h.get("x-amz-security-token").is_none(),
            "client's token dropped"
        );
        assert!(h.get("x-amz-content-sha256").is_none());
        assert!(h.get("host").is_none(), "the proxy's host is not forwarded");
        assert!(h["authorization"].is_sensitive());

        h.insert(
            "host",
            "rekognition.us-east-1.amazonaws.com".parse().unwrap(),
        );
        assert_eq!(check(&creds(), &h, BODY, now), Ok(()));
    }

    #[test]
    fn session_token_is_sent_signed_and_checked() {
        let now = at(SUITE_TIME);
        let temp = AwsCredentials::new("ASIAEXAMPLE", SECRET, Some("the-token".to_owned()));
        let h = signed(&Signer::new(temp.clone(), "us-east-1"), BODY, now);
        assert_eq!(h["x-amz-security-token"], "the-token");
        assert!(h["x-amz-security-token"].is_sensitive());
        assert!(
            h["authorization"]
                .to_str()
                .unwrap()
                .contains("x-amz-date;x-amz-security-token;x-amz-target")
        );
        assert_eq!(check(&temp, &h, BODY, now), Ok(()));
        let other_token = AwsCredentials::new("ASIAEXAMPLE", SECRET, Some("other".to_owned()));
        assert_eq!(check(&other_token, &h, BODY, now), Err(VerifyError::Token));
    }

    #[test]
    fn relative_url_cannot_be_signed() {
        let mut h = client_headers();
        let signer = Signer::new(creds(), "us-east-1");
        assert_eq!(
            signer.resign("POST", "/", &mut h, BODY, at(SUITE_TIME)),
            Err(SignError::NotAbsolute)
        );
        assert_eq!(
            signer.resign("POST", "not a url", &mut h, BODY, at(SUITE_TIME)),
            Err(SignError::NotAbsolute)
        );
    }

    #[test]
    fn secrets_never_printed() {
        let temp = AwsCredentials::new("ASIAEXAMPLE", SECRET, Some("tok-SECRET-123".to_owned()));
        let signer = Signer::new(temp.clone(), "us-east-1");
        let verifier = Verifier::new(temp.clone(), "us-east-1");
        let printed = [
            format!("{temp:?}"),
            format!("{signer:?}"),
            format!("{verifier:?}"),
            format!("{:?}", temp.secret_access_key),
            format!("{:?}", temp.session_token),
        ];
        for p in &printed {
            assert!(!p.contains(SECRET), "{p}");
            assert!(!p.contains("tok-SECRET-123"), "{p}");
        }
        assert!(printed[0].contains("ASIAEXAMPLE"), "{}", printed[0]);
        assert!(printed[0].contains("[REDACTED]"), "{}", printed[0]);
        // Reachable where a signature is computed, and only through `expose_secret`.
        assert_eq!(temp.secret_access_key.expose_secret(), SECRET);

        // Every error a verification can end in, Display and Debug.
        let now = at(SUITE_TIME);
        let h = signed(&signer, BODY, now);
        let mut errors = vec![
            check(&temp, &h, b"other", now).unwrap_err(),
            check(&creds(), &h, BODY, now).unwrap_err(),
            check(&temp, &h, BODY, at(SUITE_TIME + 3600)).unwrap_err(),
            check(
                &AwsCredentials::new("ASIAEXAMPLE", SECRET, Some("x".to_owned())),
                &h,
                BODY,
                now,
            )
            .unwrap_err(),
        ];
        let mut bad = h.clone();
        bad.insert("authorization", SECRET.parse().unwrap());
        errors.push(check(&temp, &bad, BODY, now).unwrap_err());
        for e in errors {
            for p in [e.to_string(), format!("{e:?}")] {
                assert!(!p.contains(SECRET), "{p}");
                assert!(!p.contains("tok-SECRET-123"), "{p}");
            }
        }
    }

    #[test]
    fn env_lookup_names_the_missing_variable() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert_eq!(
            AwsCredentials::from_lookup(env(&[("AWS_ACCESS_KEY_ID", "AKID")])),
            Err(MissingEnv("AWS_SECRET_ACCESS_KEY"))
        );
        let c = AwsCredentials::from_lookup(env(&[
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("AWS_SESSION_TOKEN", ""),
        ]))
        .unwrap();
        assert_eq!(c, AwsCredentials::new("AKID", "s", None));
        assert_eq!(
            region_from_lookup(env(&[("AWS_DEFAULT_REGION", "eu-west-1")])),
            Ok("eu-west-1".to_owned())
        );
        assert_eq!(region_from_lookup(env(&[])), Err(MissingEnv("AWS_REGION")));
        assert!(MissingEnv("AWS_REGION").to_string().contains("AWS_REGION"));
    }

    #[test]
    fn amz_date_parsing() {
        assert_eq!(parse_amz_date("20150830T123600Z"), Some(at(SUITE_TIME)));
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(UNIX_EPOCH));
        assert_eq!(parse_amz_date("20240229T235959Z"), Some(at(1_709_251_199)));
        assert_eq!(parse_amz_date("20000229T120000Z"), Some(at(951_825_600)));
        assert_eq!(parse_amz_date("20151231T235959Z"), Some(at(1_451_606_399)));
        for bad in [
            "",
            "20150830",
            "20151330T000000Z",
            "2015083XT123600Z",
            "20150830 123600Z",
            "+0150830T123600Z",
            // Month 13, day 0, 30 February, 29 February of a common year, day 32.
            "20151301T000000Z",
            "20150800T000000Z",
            "20150230T000000Z",
            "20230229T000000Z",
            "20150132T000000Z",
            // Hour 24, minute 60, second 60 (no leap seconds).
            "20150830T240000Z",
            "20150830T126000Z",
            "20150830T123660Z",
            // Wrong length: short, long, a 2-digit year.
            "2015083T123600Z",
            "20150830T1236000Z",
            "20150830T123600Z0",
            "150830T123600Z",
            // Not digits, signs, spaces, lowercase letters, no Z.
            "2015O830T123600Z",
            "20150830T12360xZ",
            "+2015083T123600Z",
            "-2015083T123600Z",
            "20150830T 12360Z",
            "20150830t123600Z",
            "20150830T123600z",
            "20150830T1236001",
            "2015-08-30T12:36:00Z",
            // Before the epoch.
            "19691231T235959Z",
        ] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
    }

    /// Known answers from the AWS SigV4 test suite (`get-vanilla`, `post-header-key-sort`,
    /// `post-x-www-form-urlencoded`; vendored in the aws-sigv4 crate's source package):
    /// AKIDEXAMPLE, region us-east-1, service `service`, 2015-08-30T12:36:00Z.
    #[test]
    fn aws_test_suite_known_answers() {
        let now = at(SUITE_TIME);
        let signer = Signer::new(creds(), "us-east-1").with_service("service");
        let mut h = HeaderMap::new();
        signer
            .resign("GET", "https://example.amazonaws.com/", &mut h, b"", now)
            .unwrap();
        assert_eq!(
            h["authorization"],
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );

        let mut h = HeaderMap::new();
        h.insert("my-header1", "value1".parse().unwrap());
        signer
            .resign("POST", "https://example.amazonaws.com/", &mut h, b"", now)
            .unwrap();
        assert_eq!(
            h["authorization"],
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;my-header1;x-amz-date, Signature=c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c"
        );

        // The receiving side accepts the suite's signed request as it is on the wire,
        // including a signed content-length and x-amz-content-sha256.
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("content-type", "application/x-www-form-urlencoded"),
            ("host", "example.amazonaws.com"),
            ("content-length", "13"),
            ("x-amz-date", "20150830T123600Z"),
            (
                "x-amz-content-sha256",
                "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e",
            ),
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=content-length;content-type;host;x-amz-content-sha256;x-amz-date, Signature=d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b",
            ),
        ] {
            h.insert(k, v.parse().unwrap());
        }
        let suite = |body: &[u8]| {
            verify(
                &creds(),
                "us-east-1",
                "service",
                "POST",
                "/",
                &h,
                body,
                now,
                DEFAULT_MAX_SKEW,
            )
        };
        assert_eq!(suite(b"Param1=value1"), Ok(()));
        assert_eq!(suite(b"Param1=value2"), Err(VerifyError::Mismatch));
    }
}
