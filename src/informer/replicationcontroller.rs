//! What the replication manager reads of a controller: identity, replicas, selector, and the
//! status it last wrote. The template is read from the record when pods are created.

use std::collections::BTreeMap;

use keelson_model::selectors::string_map;
use serde_json::Value;

use super::cache::Facts;

/// Index: controllers by uid.
pub const BY_UID: &str = "uid";
/// Index: controllers by namespace.
pub const BY_NAMESPACE: &str = "namespace";

#[derive(Debug, Clone)]
pub struct RcFacts {
    pub namespace: String,
    pub uid: String,
    /// `spec.replicas` (1 when unset, never negative).
    pub replicas: usize,
    pub selector: BTreeMap<String, String>,
    pub generation: i64,
    pub status: Option<Value>,
}

impl Facts for RcFacts {
    const PLURAL: &'static str = "replicationcontrollers";
    const INDEXES: &'static [&'static str] = &[BY_UID, BY_NAMESPACE];

    fn from_object(rc: &Value) -> Self {
        let s = |p: &str| {
            rc.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        RcFacts {
            namespace: s("/metadata/namespace"),
            uid: s("/metadata/uid"),
            replicas: rc
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1)
                .max(0) as usize,
            selector: string_map(rc, "/spec/selector"),
            generation: rc
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1),
            status: rc.get("status").cloned(),
        }
    }

    fn index_values(&self, index: &str) -> Vec<String> {
        match index {
            BY_UID => vec![self.uid.clone()],
            BY_NAMESPACE => vec![self.namespace.clone()],
            _ => Vec::new(),
        }
    }
}
