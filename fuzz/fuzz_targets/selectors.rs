//! Label and field selectors (`keelson_model::selectors`), as `?labelSelector=`,
//! `?fieldSelector=`, v1beta1's `?labels=` and controllers' selectors parse and match them.
//!
//! Input: up to three lines — a label selector, a field selector, and a JSON object to match
//! against (a small pod when absent or not JSON). Properties: nothing panics; a label selector
//! that parses prints (`to_string_form`, which watches and tables show) to a string that parses
//! to the same selector; matching an object agrees with matching its labels.

#![no_main]

use keelson_model::selectors::{labels_of, FieldSelector, LabelSelector};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

/// Selectable fields of kinds (the registry's pods, nodes and events; a prefix entry), and none.
const KINDS: [&[&str]; 4] = [
    &[
        "spec.nodeName",
        "status.phase",
        "spec.restartPolicy",
        "status.podIP",
    ],
    &["spec.unschedulable"],
    &["involvedObject.", "reason", "type", "source"],
    &[],
];

fuzz_target!(init: keelson_fuzz::report_stack_overflows(), |data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(3, '\n');
    let label_selector = lines.next().unwrap_or("");
    let field_selector = lines.next().unwrap_or("");
    let object = lines
        .next()
        .and_then(|o| serde_json::from_str::<Value>(o).ok())
        .unwrap_or_else(|| {
            json!({
                "metadata": {"name": "web-1", "namespace": "default",
                             "labels": {"app": "web", "tier": "frontend", "env": ""}},
                "spec": {"nodeName": "node-1", "restartPolicy": "Always"},
                "status": {"phase": "Running", "podIP": "10.0.0.7"},
            })
        });

    if let Ok(selector) = LabelSelector::parse(label_selector) {
        let printed = selector.to_string_form();
        assert_eq!(
            LabelSelector::parse(&printed).as_ref(),
            Ok(&selector),
            "{label_selector:?} printed as {printed:?}"
        );
        let by_object = selector.matches_object(&object);
        let by_labels = selector.matches(&labels_of(&object));
        assert_eq!(by_object, by_labels, "{printed:?} on {object}");
    }

    for kind in KINDS {
        if let Ok(selector) = FieldSelector::parse(field_selector, kind) {
            let _ = selector.matches(&object);
        }
    }
});
