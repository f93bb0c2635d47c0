//! How a stored object reads: the bytes of a record as the JSON object the API serves, with its
//! resource version. The registry reads records through it, and so do the informers' caches
//! (on a master, fed by the change feed; in the agent and the bench, fed by list and watch).

use serde_json::Value;

/// An object as read: the JSON of `bytes` with `metadata.resourceVersion` set to `rv` and no
/// `null` members.
pub fn decode(bytes: &[u8], rv: u64) -> Result<Value, serde_json::Error> {
    let mut v: Value = serde_json::from_slice(bytes)?;
    // Control loops write their own commands; whatever `null` they or an older version stored
    // is not served.
    drop_nulls(&mut v);
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
    Ok(v)
}

/// Removes the members of every object (at any depth) whose value is `null`: a field set to
/// `null` is a field left unset, as the typed structs read it, and the OpenAPI document types
/// none of them as nullable (a `lastProbeTime: null` would be a string field holding `null`).
pub fn drop_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, v| !v.is_null());
            m.values_mut().for_each(drop_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decode_sets_the_version_and_drops_nulls() {
        let bytes = br#"{"metadata":{"name":"a","resourceVersion":"1"},"status":{"x":null,"c":[{"t":null,"s":"y"}]}}"#;
        assert_eq!(
            decode(bytes, 42).unwrap(),
            json!({"metadata": {"name": "a", "resourceVersion": "42"}, "status": {"c": [{"s": "y"}]}})
        );
        assert!(decode(b"{", 1).is_err());
    }
}
