//! What the endpoints controller reads of a service: its selector.

use std::collections::BTreeMap;

use keelson_model::selectors::string_map;
use serde_json::Value;

use super::cache::Facts;

/// Index: services by namespace.
pub const BY_NAMESPACE: &str = "namespace";

#[derive(Debug, Clone)]
pub struct ServiceFacts {
    pub namespace: String,
    /// `spec.selector`; empty for a service whose endpoints are not managed.
    pub selector: BTreeMap<String, String>,
}

impl Facts for ServiceFacts {
    const PLURAL: &'static str = "services";
    const INDEXES: &'static [&'static str] = &[BY_NAMESPACE];

    fn from_object(svc: &Value) -> Self {
        ServiceFacts {
            namespace: svc
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            selector: string_map(svc, "/spec/selector"),
        }
    }

    fn index_values(&self, index: &str) -> Vec<String> {
        match index {
            BY_NAMESPACE => vec![self.namespace.clone()],
            _ => Vec::new(),
        }
    }
}
