//! Request bodies: JSON decoded into core/v1's typed structs, as the registry decodes every
//! body (`serde_json::from_value` into k8s-openapi's types), and v1beta1 conversion both ways,
//! as the v1beta1 routes run it (`keelson_model::v1beta1`).
//!
//! Input: any bytes; those that are JSON go through every kind. Properties: nothing panics; an
//! object converted from v1beta1 serializes and decodes as its core/v1 type (else the API would
//! answer 500 or store what it cannot read back); and what keelson serves in v1beta1 for it
//! converts back, so a client can write back what it read.

#![no_main]

use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, ReplicationController, Service};
use keelson_model::v1beta1::{self, ConvertError};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

type From<T> = fn(&Value) -> Result<T, ConvertError>;
type To<T> = fn(&T) -> Value;

/// A core/v1 body of kind `T`: decoded as the registry does, then served in v1beta1.
fn core_v1<T: DeserializeOwned>(body: &Value, to: To<T>) {
    if let Ok(obj) = serde_json::from_value::<T>(body.clone()) {
        let _ = to(&obj);
    }
}

/// A v1beta1 body of kind `T`: converted to core/v1 as the v1beta1 routes do.
fn from_v1beta1<T: Serialize + DeserializeOwned>(body: &Value, from: From<T>, to: To<T>) {
    let Ok(obj) = from(body) else {
        return;
    };
    let json = serde_json::to_value(&obj).expect("a converted object serializes");
    if let Err(e) = serde_json::from_value::<T>(json.clone()) {
        panic!("a converted object does not decode as its type: {e}\n{json}");
    }
    let served = to(&obj);
    if let Err(e) = from(&served) {
        panic!("served v1beta1 does not convert back: {e}\n{served}");
    }
}

fuzz_target!(init: keelson_fuzz::report_stack_overflows(), |data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    core_v1::<Pod>(&body, v1beta1::pod_to_v1beta1);
    core_v1::<ReplicationController>(&body, v1beta1::controller_to_v1beta1);
    core_v1::<Service>(&body, v1beta1::service_to_v1beta1);
    core_v1::<Endpoints>(&body, v1beta1::endpoints_to_v1beta1);
    core_v1::<Node>(&body, v1beta1::node_to_v1beta1);

    from_v1beta1(&body, v1beta1::pod_from_v1beta1, v1beta1::pod_to_v1beta1);
    from_v1beta1(
        &body,
        v1beta1::controller_from_v1beta1,
        v1beta1::controller_to_v1beta1,
    );
    from_v1beta1(
        &body,
        v1beta1::service_from_v1beta1,
        v1beta1::service_to_v1beta1,
    );
    from_v1beta1(
        &body,
        v1beta1::minion_from_v1beta1,
        v1beta1::node_to_v1beta1,
    );
});
