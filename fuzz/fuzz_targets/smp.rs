//! Strategic merge patch (`keelson_model::smp`), as `PATCH` with
//! `application/strategic-merge-patch+json` and server-side apply run it.
//!
//! Input: a first line naming the kind (`Pod`, `ReplicationController`, `Service`, `Node`; the
//! patch strategies of lists depend on it), then two JSON documents one after the other: the
//! stored object and the patch. Properties: nothing panics; a patch that applies leaves an
//! object; the empty patch `{}` changes nothing.

#![no_main]

use keelson_model::smp::{Strategies, PLAIN};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

/// The list strategies of the kind named on the first line (core/v1's, as the registry's kind
/// files name them); any other name has none.
fn strategies(kind: &str) -> &'static Strategies {
    use keelson_model::smp::core_v1::*;
    match kind {
        "Pod" => &POD,
        "ReplicationController" => &REPLICATION_CONTROLLER,
        "Service" => &SERVICE,
        "Node" => &NODE,
        _ => &PLAIN,
    }
}

fuzz_target!(init: keelson_fuzz::report_stack_overflows(), |data: &[u8]| {
    let Some(newline) = data.iter().position(|&b| b == b'\n') else {
        return;
    };
    let Ok(kind) = std::str::from_utf8(&data[..newline]) else {
        return;
    };
    let kind = strategies(kind);
    let mut docs = serde_json::Deserializer::from_slice(&data[newline + 1..]).into_iter::<Value>();
    let (Some(Ok(target)), Some(Ok(patch))) = (docs.next(), docs.next()) else {
        return;
    };

    let mut patched = target.clone();
    if keelson_model::smp::apply(kind, &mut patched, &patch).is_ok() {
        assert!(
            patched.is_object(),
            "a patched object is an object: {patched}"
        );
    }

    if target.is_object() {
        let mut unchanged = target.clone();
        keelson_model::smp::apply(kind, &mut unchanged, &json!({})).expect("{} applies");
        assert_eq!(unchanged, target, "the empty patch changed the object");
    }
});
