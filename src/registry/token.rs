//! keelson's `Token` (`auth.keelson.io/v1`): a bearer token kept in the replicated store, so
//! that every master honours it, and forgets it as soon as it is deleted (`keelson ctl token`).
//!
//! A token reads `ID.SECRET`, as Kubernetes' bootstrap tokens do: the object is named by the
//! public id (6 characters of `[a-z0-9]`) and keeps only the SHA-256 of the secret (32
//! characters of `[a-z0-9]`, about 165 bits), so the store, its snapshots and backups never
//! hold a usable credential. `keelson ctl token create` draws the secret and sends only its
//! hash; the token is printed once and never again.
//!
//! `spec.usages` says what a token is for. Today `authentication` (a bearer token of
//! `spec.user` in `spec.groups`) is the only usage; single-purpose join tokens for new hosts
//! (`--join master|node`) will be further usages of the same kind. The spec cannot change: a
//! token is revoked by deleting it, and a new one made.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rand::Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::info::ResourceInfo;
use super::printing::{arr, col, s, Column, AGE, NAME};
use super::resource::Kind;
use super::validation::{invalid, required, Cause, NameRule};

/// The API group of keelson's own authentication kinds.
pub const GROUP: &str = "auth.keelson.io";

/// The usage of a token that authenticates API requests.
pub const AUTHENTICATION: &str = "authentication";

/// The usages a token may have.
pub const USAGES: &[&str] = &[AUTHENTICATION];

/// Characters of a token's id and of its secret.
pub const ID_LEN: usize = 6;
pub const SECRET_LEN: usize = 32;

/// A stored token, as its typed struct: OpenAPI schema and field validation read it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "io.keelson.auth.v1.Token")]
pub struct TokenObject {
    /// `auth.keelson.io/v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// `Token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The token's id is its name.
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: TokenSpec,
}

/// What a token grants.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "io.keelson.auth.v1.TokenSpec")]
pub struct TokenSpec {
    /// The user a request bearing the token is.
    #[serde(default)]
    pub user: String,
    /// The groups that user is in (beside `system:authenticated`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// What the token is for; default `[authentication]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub usages: Vec<String>,
    /// `sha256:` and the lower-case hex SHA-256 of the token's secret.
    #[serde(default)]
    pub secret_hash: String,
    /// When the token stops being honoured (RFC 3339); none: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<String>,
}

/// Tokens.
pub struct Token;

impl Kind for Token {
    type Object = TokenObject;

    const INFO: ResourceInfo = ResourceInfo {
        group: GROUP,
        version: "v1",
        plural: "tokens",
        singular: "token",
        kind: "Token",
        short_names: &[],
        categories: &[],
        namespaced: false,
        has_status: false,
        has_scale: false,
        has_log: false,
        graceful_delete: false,
    };
    const NAMES: NameRule = NameRule::Label;
    const COLUMNS: &'static [Column] = &[
        NAME,
        col("User", "string", 0, "The user the token authenticates."),
        col("Groups", "string", 0, "The user's groups."),
        col("Usages", "string", 0, "What the token is for."),
        col(
            "Expires",
            "string",
            0,
            "When the token stops being honoured.",
        ),
        AGE,
    ];

    fn apply_defaults(&self, obj: &mut Value) {
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            if spec
                .get("usages")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty)
            {
                spec.insert("usages".into(), json!([AUTHENTICATION]));
            }
        }
    }

    fn check(&self, token: &TokenObject, _obj: &Value, causes: &mut Vec<Cause>) {
        let name = token.metadata.name.as_deref().unwrap_or("");
        if !is_id(name) {
            causes.push(invalid(
                "metadata.name",
                name,
                &format!("a token's id is {ID_LEN} characters of [a-z0-9]"),
            ));
        }
        let spec = &token.spec;
        if spec.user.is_empty() {
            causes.push(required("spec.user"));
        }
        for (i, group) in spec.groups.iter().enumerate() {
            if group.is_empty() {
                causes.push(invalid(
                    format!("spec.groups[{i}]"),
                    "",
                    "must not be empty",
                ));
            }
        }
        for (i, usage) in spec.usages.iter().enumerate() {
            if !USAGES.contains(&usage.as_str()) {
                causes.push(invalid(
                    format!("spec.usages[{i}]"),
                    usage,
                    &format!("supported values: {}", USAGES.join(", ")),
                ));
            }
        }
        if !is_hash(&spec.secret_hash) {
            causes.push(invalid(
                "spec.secretHash",
                "<redacted>",
                "must be \"sha256:\" and 64 lower-case hex digits",
            ));
        }
        if let Some(expiration) = &spec.expiration {
            if expiration.parse::<jiff::Timestamp>().is_err() {
                causes.push(invalid(
                    "spec.expiration",
                    expiration,
                    "must be an RFC 3339 time",
                ));
            }
        }
    }

    fn check_update(&self, old: &Value, new: &Value, causes: &mut Vec<Cause>) {
        if old.get("spec") != new.get("spec") {
            causes.push(invalid(
                "spec",
                "<redacted>",
                "a token cannot change: delete it and create another",
            ));
        }
    }

    fn cells(&self, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
        let list = |pointer: &str| {
            arr(obj, pointer)
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        };
        let expires = match s(obj, "/spec/expiration") {
            "" => "<never>".to_string(),
            t => t.to_string(),
        };
        vec![
            json!(s(obj, "/metadata/name")),
            json!(s(obj, "/spec/user")),
            json!(list("/spec/groups")),
            json!(list("/spec/usages")),
            json!(expires),
            json!(super::printing::age(obj, now)),
        ]
    }
}

fn is_token_text(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Whether `s` is a token id.
pub fn is_id(s: &str) -> bool {
    is_token_text(s, ID_LEN)
}

fn is_hash(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The (id, secret) of a token's text `ID.SECRET`; `None` if it is not shaped as one.
pub fn split(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    (is_id(id) && is_token_text(secret, SECRET_LEN)).then_some((id, secret))
}

/// The SHA-256 of a token's secret.
pub type Digest = [u8; 32];

fn digest(secret: &str) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    d.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// What a token object keeps of its secret: `sha256:HEX`.
pub fn hash(secret: &str) -> String {
    let hex: String = digest(secret).iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The digest a stored `sha256:HEX` names; `None` if it is not one.
pub fn parse_hash(stored: &str) -> Option<Digest> {
    if !is_hash(stored) {
        return None;
    }
    let hex = stored.strip_prefix("sha256:")?.as_bytes();
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// Whether `secret` is the one whose digest is `stored`, in time independent of where they
/// differ.
pub fn verify(secret: &str, stored: &Digest) -> bool {
    digest(secret)
        .iter()
        .zip(stored)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// A new token's (id, secret), from the operating system's random source.
pub fn generate() -> (String, String) {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rngs::OsRng;
    let mut draw = |len: usize| -> String {
        (0..len)
            .map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char)
            .collect()
    };
    (draw(ID_LEN), draw(SECRET_LEN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_split_hash_and_verify() {
        let (id, secret) = generate();
        let text = format!("{id}.{secret}");
        assert_eq!(split(&text), Some((id.as_str(), secret.as_str())));
        assert!(is_hash(&hash(&secret)));
        let stored = parse_hash(&hash(&secret)).unwrap();
        assert!(verify(&secret, &stored));
        assert!(!verify("x", &stored));
        assert_eq!(parse_hash("sha256:xyz"), None);
        for bad in [
            "abc.def",
            "ABCDEF.0123456789abcdef0123456789abcdef",
            "nodot",
            "",
        ] {
            assert_eq!(split(bad), None, "{bad}");
        }
        assert_eq!(
            hash("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
