//! Who may have a Rekognition request signed with the proxy's AWS identity: `aws.resign`.
//!
//! Every request the proxy forwards to the Rekognition upstream is re-signed (the client
//! signed it for the proxy's `Host`, which the upstream would reject). Which requests get
//! that far depends on the policy:
//!
//! * `"any"`: all of them: a pod-local sidecar, where only the app reaches the listener
//!   (the model of AWS's own SigV4 proxy). Implicit only while every listener is on
//!   loopback ([`crate::config::Config::check_resign`]).
//! * `"verified"`: the client's SigV4 signature must verify against the proxy's own key or
//!   one of `aws.clients`; anything else gets Rekognition's own 403
//!   (`UnrecognizedClientException` for a key id nobody configured,
//!   `InvalidSignatureException` otherwise) and never goes up.

use std::time::SystemTime;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;

use crate::config::{Config, ResignPolicy};
use crate::sigv4::{AwsCredentials, DEFAULT_MAX_SKEW, REKOGNITION, VerifyError};

/// `aws.resign` and, under `"verified"`, the keys and region client signatures must match.
#[derive(Debug, Clone)]
pub struct ClientTrust {
    policy: ResignPolicy,
    /// The proxy's own key (when it has one), then `aws.clients`.
    keys: Vec<AwsCredentials>,
    /// The region client requests are scoped to (the proxy's own).
    region: String,
}

impl Default for ClientTrust {
    /// `"any"`: what a proxy built without a config trusts.
    fn default() -> Self {
        ClientTrust {
            policy: ResignPolicy::Any,
            keys: Vec::new(),
            region: String::new(),
        }
    }
}

/// A Rekognition request refused under `aws.resign = "verified"`, in Rekognition's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `UnrecognizedClientException` or `InvalidSignatureException`.
    pub kind: &'static str,
    /// Says what is wrong; never a header value or a secret.
    pub message: String,
}

impl Refusal {
    fn of(e: &VerifyError) -> Refusal {
        match e {
            VerifyError::UnknownAccessKey => Refusal {
                kind: "UnrecognizedClientException",
                message: "The security token included in the request is invalid.".to_owned(),
            },
            other => Refusal {
                kind: "InvalidSignatureException",
                message: other.to_string(),
            },
        }
    }

    /// Rekognition's 403: `{"__type": kind, "message": …}` with `x-amzn-ErrorType`.
    pub fn respond(&self) -> Response {
        let body = serde_json::json!({"__type": self.kind, "message": self.message});
        let mut resp = (
            StatusCode::FORBIDDEN,
            [("content-type", "application/x-amz-json-1.1")],
            body.to_string(),
        )
            .into_response();
        resp.headers_mut()
            .insert("x-amzn-errortype", HeaderValue::from_static(self.kind));
        resp
    }
}

impl ClientTrust {
    /// From `[aws]` (and the `AWS_*` variables for the proxy's own key and region).
    /// `"verified"` with a key needs a region.
    pub fn from_config(cfg: &Config) -> Result<ClientTrust, String> {
        let policy = cfg.resign_policy();
        let own = super::proxy_credentials(cfg)?;
        let region = own
            .as_ref()
            .map(|(_, r)| r.clone())
            .or_else(|| cfg.aws.region.clone())
            .or_else(|| std::env::var(crate::sigv4::ENV_REGION).ok())
            .unwrap_or_default();
        let mut keys: Vec<AwsCredentials> = own.into_iter().map(|(c, _)| c).collect();
        keys.extend(cfg.aws.clients.iter().map(|k| {
            AwsCredentials::new(
                k.access_key_id.clone(),
                k.secret_access_key.expose_secret().to_owned(),
                None,
            )
        }));
        // Without any key every request is refused, which is also all a proxy without
        // credentials could do (start-up and /readyz say so).
        if policy == ResignPolicy::Verified && !keys.is_empty() && region.is_empty() {
            return Err(
                "aws.resign = \"verified\" needs a region to check client signatures against (set aws.region or AWS_REGION)"
                    .to_owned(),
            );
        }
        Ok(ClientTrust {
            policy,
            keys,
            region,
        })
    }

    /// The policy in force.
    pub fn policy(&self) -> ResignPolicy {
        self.policy
    }

    /// Whether this request (as the client sent it: method, path and query, headers, body)
    /// may be signed with the proxy's identity.
    pub fn check(
        &self,
        method: &str,
        path_q: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), Refusal> {
        if self.policy == ResignPolicy::Any {
            return Ok(());
        }
        let now = SystemTime::now();
        let mut last = VerifyError::UnknownAccessKey;
        for key in &self.keys {
            match crate::sigv4::verify(
                key,
                &self.region,
                REKOGNITION,
                method,
                path_q,
                headers,
                body,
                now,
                DEFAULT_MAX_SKEW,
            ) {
                Ok(()) => return Ok(()),
                Err(VerifyError::UnknownAccessKey) => {}
                Err(e) => {
                    last = e;
                    break;
                }
            }
        }
        Err(Refusal::of(&last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sigv4::Signer;

    fn trust() -> ClientTrust {
        ClientTrust {
            policy: ResignPolicy::Verified,
            keys: vec![AwsCredentials::new("AKIDKNOWN", "known-secret", None)],
            region: "us-east-1".to_owned(),
        }
    }

    fn signed(key: &str, secret: &str) -> (HeaderMap, Vec<u8>) {
        let body = br#"{"Image":{"Bytes":"AAAA"}}"#.to_vec();
        let mut h = HeaderMap::new();
        Signer::new(AwsCredentials::new(key, secret, None), "us-east-1")
            .resign(
                "POST",
                "http://127.0.0.1:8080/",
                &mut h,
                &body,
                SystemTime::now(),
            )
            .unwrap();
        // As the HTTP client sends it.
        h.insert("host", HeaderValue::from_static("127.0.0.1:8080"));
        (h, body)
    }

    #[test]
    fn rekognition_verified_accepts_known_keys_and_names_the_rest() {
        let t = trust();
        let (h, body) = signed("AKIDKNOWN", "known-secret");
        assert_eq!(t.check("POST", "/", &h, &body), Ok(()));

        let (h, body) = signed("AKIDSTRANGER", "whatever");
        let r = t.check("POST", "/", &h, &body).unwrap_err();
        assert_eq!(r.kind, "UnrecognizedClientException");

        let (h, body) = signed("AKIDKNOWN", "wrong-secret");
        let r = t.check("POST", "/", &h, &body).unwrap_err();
        assert_eq!(r.kind, "InvalidSignatureException");
        assert!(!r.message.contains("wrong-secret"), "{}", r.message);

        let r = t.check("POST", "/", &HeaderMap::new(), &body).unwrap_err();
        assert_eq!(r.kind, "InvalidSignatureException");
        assert!(r.message.contains("Authorization"), "{}", r.message);

        let any = ClientTrust::default();
        assert_eq!(any.check("POST", "/", &HeaderMap::new(), &body), Ok(()));
    }
}
