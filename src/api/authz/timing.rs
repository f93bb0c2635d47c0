//! How long authentication and authorization take, per method and per decider, as
//! kube-apiserver's `apiserver_authentication_duration_seconds` and
//! `apiserver_authorization_duration_seconds`: what the bench's `authz-cost` phase reads to tell
//! what they cost a request.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, Registry};

/// How a request was authenticated.
#[derive(Debug, Clone, Copy)]
pub enum Method {
    Certificate,
    TokenFile,
    StoredToken,
    /// Refused (401), or the API is open.
    None,
}

/// Who decided a request's authorization.
#[derive(Debug, Clone, Copy)]
pub enum Decider {
    Masters,
    Node,
    Rbac,
}

/// The two histograms.
#[derive(Clone)]
pub struct GuardMetrics {
    authentication: HistogramVec,
    authorization: HistogramVec,
}

impl GuardMetrics {
    pub fn register(reg: &Registry) -> anyhow::Result<Self> {
        // 1 µs to 16 ms.
        let buckets = prometheus::exponential_buckets(1e-6, 4.0, 8)?;
        let authentication = HistogramVec::new(
            HistogramOpts::new(
                "keelson_api_authentication_duration_seconds",
                "Time to authenticate an API request, by method (certificate, token-file, stored-token, none).",
            )
            .buckets(buckets.clone()),
            &["method"],
        )?;
        let authorization = HistogramVec::new(
            HistogramOpts::new(
                "keelson_api_authorization_duration_seconds",
                "Time to authorize an API request, by who decided (masters, node, rbac).",
            )
            .buckets(buckets),
            &["decider"],
        )?;
        reg.register(Box::new(authentication.clone()))?;
        reg.register(Box::new(authorization.clone()))?;
        Ok(GuardMetrics {
            authentication,
            authorization,
        })
    }

    pub fn authenticated(&self, method: Method, took: Duration) {
        let label = match method {
            Method::Certificate => "certificate",
            Method::TokenFile => "token-file",
            Method::StoredToken => "stored-token",
            Method::None => "none",
        };
        self.authentication
            .with_label_values(&[label])
            .observe(took.as_secs_f64());
    }

    pub fn authorized(&self, decider: Decider, took: Duration) {
        let label = match decider {
            Decider::Masters => "masters",
            Decider::Node => "node",
            Decider::Rbac => "rbac",
        };
        self.authorization
            .with_label_values(&[label])
            .observe(took.as_secs_f64());
    }
}
