//! What the authenticator reads of a stored `Token`: whom it names, its secret's hash, when it
//! expires.

use std::sync::Arc;

use keelson_model::rbac::{UserInfo, AUTHENTICATED};
use serde_json::Value;

use super::cache::Facts;
use crate::registry::token::{self, TokenObject, AUTHENTICATION};

/// A token, as a bearer of it is checked against it.
#[derive(Debug, Clone)]
pub struct TokenFacts {
    /// `None` for a token that does not authenticate (or does not read).
    user: Option<Arc<UserInfo>>,
    /// The digest of its secret, decoded once.
    digest: token::Digest,
    expiration: Option<jiff::Timestamp>,
}

impl TokenFacts {
    /// The user a bearer of `secret` is at `now`: `None` unless the secret is this token's,
    /// the token authenticates, and it has not expired.
    pub fn authenticate(&self, secret: &str, now: jiff::Timestamp) -> Option<Arc<UserInfo>> {
        let user = self.user.as_ref()?;
        if self.expiration.is_some_and(|t| now >= t) {
            return None;
        }
        token::verify(secret, &self.digest).then(|| Arc::clone(user))
    }
}

impl Facts for TokenFacts {
    const PLURAL: &'static str = "tokens";

    fn from_object(obj: &Value) -> Self {
        // Stored tokens were validated; one that does not read authenticates nobody.
        let nobody = TokenFacts {
            user: None,
            digest: [0; 32],
            expiration: None,
        };
        let Ok(t) = serde_json::from_value::<TokenObject>(obj.clone()) else {
            return nobody;
        };
        let spec = t.spec;
        let Some(digest) = token::parse_hash(&spec.secret_hash) else {
            return nobody;
        };
        let user = spec.usages.iter().any(|u| u == AUTHENTICATION).then(|| {
            let mut groups = spec.groups;
            groups.push(AUTHENTICATED.to_string());
            Arc::new(UserInfo {
                name: spec.user,
                groups,
            })
        });
        // An expiration that does not read is in the past: the token is never honoured.
        let expiration = spec
            .expiration
            .map(|e| e.parse().unwrap_or(jiff::Timestamp::MIN));
        TokenFacts {
            user,
            digest,
            expiration,
        }
    }
}
