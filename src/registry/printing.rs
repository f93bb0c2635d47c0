//! What every kind's printer shares: the columns of a Table (kubectl's `get` output, served as
//! `meta.k8s.io/v1` `Table` and printed by `keelson ctl`) and the cell helpers of Kubernetes'
//! `pkg/printers/internalversion`. Each kind's columns and cells are in its own file.

use keelson_model::duration::human_duration;
use serde_json::Value;

/// One column of a Table.
pub struct Column {
    pub name: &'static str,
    /// `string`, `integer`, `date`...
    pub kind: &'static str,
    /// `name` for the object's name column, else empty.
    pub format: &'static str,
    pub description: &'static str,
    /// 0 is always shown, 1 with `-o wide`.
    pub priority: u8,
}

pub const fn col(
    name: &'static str,
    kind: &'static str,
    priority: u8,
    description: &'static str,
) -> Column {
    Column {
        name,
        kind,
        format: "",
        description,
        priority,
    }
}

pub const NAME: Column = Column {
    name: "Name",
    kind: "string",
    format: "name",
    description: "Name must be unique within a namespace.",
    priority: 0,
};
pub const AGE: Column = col(
    "Age",
    "string",
    0,
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
);

/// The columns of a kind without printer of its own.
pub const DEFAULT: &[Column] = &[NAME, AGE];

/// The string at `pointer`, or "".
pub fn s<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The array at `pointer`, or an empty one.
pub fn arr<'a>(obj: &'a Value, pointer: &str) -> &'a [Value] {
    obj.pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// `v`, or `<none>` when it is empty.
pub fn or_none(v: &str) -> String {
    if v.is_empty() {
        "<none>".into()
    } else {
        v.into()
    }
}

/// Kubernetes' `labels.FormatLabels`: `k=v,...` sorted, `<none>` when empty.
pub fn format_labels(map: Option<&Value>) -> String {
    let mut pairs: Vec<String> = map
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    pairs.sort();
    or_none(&pairs.join(","))
}

/// `translateTimestampSince`: the age of an RFC 3339 timestamp at `now`, `<unknown>` when it
/// is absent or invalid.
pub fn since(ts: &str, now: jiff::Timestamp) -> String {
    match ts.parse::<jiff::Timestamp>() {
        Ok(t) => human_duration(now.as_second() - t.as_second()),
        Err(_) => "<unknown>".into(),
    }
}

/// The object's age at `now` (the AGE column).
pub fn age(obj: &Value, now: jiff::Timestamp) -> String {
    since(s(obj, "/metadata/creationTimestamp"), now)
}

/// The cells of a kind without printer of its own, under [`DEFAULT`].
pub fn default_cells(obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    vec![
        Value::from(s(obj, "/metadata/name")),
        Value::from(age(obj, now)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        let now: jiff::Timestamp = "2024-01-01T00:01:00Z".parse().unwrap();
        assert_eq!(since("2024-01-01T00:00:00Z", now), "60s");
        assert_eq!(since("garbage", now), "<unknown>");
    }
}
