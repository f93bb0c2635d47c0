//! A kind's behaviour, written once in a file of its own (`pod.rs`, `service.rs`, ...) and used
//! by everything that serves or prints it: the strategies, the API server (Table, OpenAPI,
//! field validation, v1beta1), and `keelson ctl`.
//!
//! A kind implements [`Kind`], whose methods see its core/v1 typed struct; the registry hands
//! out every kind as a `&dyn` [`Resource`], which a blanket implementation derives from `Kind`
//! (the decoding into the typed struct, its schema and its field-pruning view are the same
//! generic code for every kind).

use k8s_openapi::schemars::{JsonSchema, SchemaGenerator};
use keelson_model::smp::{self, Strategies};
use keelson_model::v1beta1::ConvertError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::info::ResourceInfo;
use super::printing::{self, Column};
use super::status::ApiError;
use super::validation::{Cause, NameRule};

/// One kind, as its own file writes it: data as associated constants, behaviour as methods.
/// Everything but [`Kind::INFO`] has a default that suits a plain kind (no status of its own,
/// no defaults, no checks beyond the typed struct's, the name-and-age columns, no list
/// strategies or selectable fields of its own, not served by v1beta1).
pub trait Kind: Sync + 'static {
    /// The core/v1 struct: every body must decode into it before anything else is checked, and
    /// it is the kind's OpenAPI schema and field validation's notion of a known field.
    type Object: DeserializeOwned + Serialize + JsonSchema;

    /// Names, scope and subresources.
    const INFO: ResourceInfo;

    /// What its names may be (DNS-1123 subdomains unless the kind says otherwise).
    const NAMES: NameRule = NameRule::Subdomain;

    /// The columns of its Table; priority-1 columns are the ones `-o wide` adds.
    const COLUMNS: &'static [Column] = printing::DEFAULT;

    /// Its own list strategies for strategic merge patch and apply (`model/src/smp.rs`).
    const PATCH_STRATEGIES: Strategies = smp::PLAIN;

    /// The fields a field selector may name beyond `metadata.name` and `metadata.namespace`
    /// (an entry ending in `.` admits every field under it).
    const SELECTABLE_FIELDS: &'static [&'static str] = &[];

    /// The v1beta1 collection and kind names (`minions`, `Minion`), if v1beta1 serves it.
    const V1BETA1_NAMES: Option<(&'static str, &'static str)> = None;

    /// The status a new object starts from (status is the system's to write).
    fn initial_status(&self) -> Option<Value> {
        None
    }

    /// Sets what Kubernetes' defaulters set, on a create and on every update.
    fn apply_defaults(&self, _obj: &mut Value) {}

    /// What an update keeps of the stored object `old` when the new object `new` leaves it
    /// out (Kubernetes' `PrepareForUpdate`): values the system allocated, such as a service's
    /// cluster IP. Called before [`Kind::apply_defaults`].
    fn carry_over(&self, _old: &Value, _new: &mut Value) {}

    /// Checks the kind's own fields (metadata is checked for every kind) into `causes`.
    fn check(&self, _typed: &Self::Object, _obj: &Value, _causes: &mut Vec<Cause>) {}

    /// Checks an update of `old` into `new` (both as stored, `new` already checked) into
    /// `causes`: the transitions the kind forbids.
    fn check_update(&self, _old: &Value, _new: &Value, _causes: &mut Vec<Cause>) {}

    /// The cells of `obj`'s row under [`Kind::COLUMNS`], ages counted at `now`.
    fn cells(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        printing::default_cells(obj, now)
    }

    /// The v1beta1 object; `None` serves the core/v1 JSON as it is.
    fn to_v1beta1(&self, _typed: &Self::Object) -> Option<Value> {
        None
    }

    /// How a v1beta1 body becomes the core/v1 object; `None` if v1beta1 cannot write it.
    #[allow(clippy::type_complexity)]
    fn from_v1beta1(&self) -> Option<fn(&Value) -> Result<Self::Object, ConvertError>> {
        None
    }
}

/// A kind as the rest of keelson uses it; see [`Kind`] for each method.
pub trait Resource: Sync {
    fn info(&self) -> &'static ResourceInfo;
    fn initial_status(&self) -> Option<Value>;
    fn name_rule(&self) -> NameRule;
    fn apply_defaults(&self, obj: &mut Value);
    fn carry_over(&self, old: &Value, new: &mut Value);
    /// Decodes `obj` into the typed struct (a 400 naming the kind if it does not) and checks
    /// the kind's own fields into `causes`.
    fn check(&self, obj: &Value, causes: &mut Vec<Cause>) -> Result<(), ApiError>;
    fn check_update(&self, old: &Value, new: &Value, causes: &mut Vec<Cause>);
    /// The object as its typed struct keeps it, or where and why it does not decode
    /// (`spec.containers[0].ports: invalid type: …`).
    fn typed_view(&self, obj: &Value) -> Result<Value, String>;
    /// Registers the typed struct's schema with `generator`.
    fn add_schema(&self, generator: &mut SchemaGenerator);
    fn patch_strategies(&self) -> &'static Strategies;
    fn selectable_fields(&self) -> &'static [&'static str];
    fn columns(&self) -> &'static [Column];
    fn cells(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value>;
    fn v1beta1_names(&self) -> Option<(&'static str, &'static str)>;
    /// The v1beta1 JSON of a stored object.
    fn to_v1beta1(&self, obj: &Value) -> Result<Value, ApiError>;
    /// Whether v1beta1 can write the kind.
    fn v1beta1_writable(&self) -> bool;
    /// The core/v1 JSON of a v1beta1 body (not yet defaulted or validated); `None` if v1beta1
    /// cannot write the kind.
    fn from_v1beta1(&self, v: &Value) -> Option<Result<Value, ConvertError>>;
}

impl<K: Kind> Resource for K {
    fn info(&self) -> &'static ResourceInfo {
        &K::INFO
    }
    fn initial_status(&self) -> Option<Value> {
        Kind::initial_status(self)
    }
    fn name_rule(&self) -> NameRule {
        K::NAMES
    }
    fn apply_defaults(&self, obj: &mut Value) {
        Kind::apply_defaults(self, obj)
    }
    fn carry_over(&self, old: &Value, new: &mut Value) {
        Kind::carry_over(self, old, new)
    }
    fn check(&self, obj: &Value, causes: &mut Vec<Cause>) -> Result<(), ApiError> {
        let typed: K::Object = serde_json::from_value(obj.clone())
            .map_err(|e| ApiError::bad_request(format!("{} in body: {e}", K::INFO.kind)))?;
        Kind::check(self, &typed, obj, causes);
        Ok(())
    }
    fn check_update(&self, old: &Value, new: &Value, causes: &mut Vec<Cause>) {
        Kind::check_update(self, old, new, causes)
    }
    fn typed_view(&self, obj: &Value) -> Result<Value, String> {
        let typed: K::Object = serde_path_to_error::deserialize(obj).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                e.inner().to_string()
            } else {
                format!("{path}: {}", e.inner())
            }
        })?;
        serde_json::to_value(typed).map_err(|e| e.to_string())
    }
    fn add_schema(&self, generator: &mut SchemaGenerator) {
        generator.subschema_for::<K::Object>();
    }
    fn patch_strategies(&self) -> &'static Strategies {
        &K::PATCH_STRATEGIES
    }
    fn selectable_fields(&self) -> &'static [&'static str] {
        K::SELECTABLE_FIELDS
    }
    fn columns(&self) -> &'static [Column] {
        K::COLUMNS
    }
    fn cells(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        Kind::cells(self, obj, now)
    }
    fn v1beta1_names(&self) -> Option<(&'static str, &'static str)> {
        K::V1BETA1_NAMES
    }
    fn to_v1beta1(&self, obj: &Value) -> Result<Value, ApiError> {
        let typed: K::Object = serde_json::from_value(obj.clone())
            .map_err(|e| ApiError::internal(format!("stored object undecodable: {e}")))?;
        Ok(Kind::to_v1beta1(self, &typed).unwrap_or_else(|| obj.clone()))
    }
    fn v1beta1_writable(&self) -> bool {
        Kind::from_v1beta1(self).is_some()
    }
    fn from_v1beta1(&self, v: &Value) -> Option<Result<Value, ConvertError>> {
        let convert = Kind::from_v1beta1(self)?;
        Some(
            convert(v).map(|typed| serde_json::to_value(typed).expect("a typed struct serializes")),
        )
    }
}
