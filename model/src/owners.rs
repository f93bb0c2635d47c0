//! Owner references: which object controls another.

use serde_json::Value;

/// The uid of the controller owning `obj` (its owner reference with `controller: true`), if any.
pub fn controller_uid(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|o| o["controller"] == Value::Bool(true))?
        .get("uid")?
        .as_str()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::controller_uid;

    #[test]
    fn only_the_controlling_owner_counts() {
        let pod = json!({"metadata": {"ownerReferences": [
            {"uid": "a", "controller": false},
            {"uid": "b", "controller": true},
        ]}});
        assert_eq!(controller_uid(&pod), Some("b"));
        let orphan = json!({"metadata": {"ownerReferences": [{"uid": "a"}]}});
        assert_eq!(controller_uid(&orphan), None);
        assert_eq!(controller_uid(&json!({})), None);
    }
}
