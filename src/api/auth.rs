//! Authentication: who a request is.
//!
//! A client certificate signed by `--client-ca-file` names its user (CN) and groups (O), as
//! kube-apiserver reads it; otherwise bearer tokens from a token file, as the API server's `--token-auth-file`: one token per line,
//! `token,user,uid,"group1,group2"` (Kubernetes' static token CSV; the user defaults to
//! `admin`, the groups to none), then the tokens kept in the replicated store
//! (`registry/token.rs`), which the caller looks up. Every authenticated user is also in `system:authenticated`.
//! Health and readiness answer without a token; `/metrics` needs a user allowed to get that
//! non-resource URL (`system:monitoring`). Without a token file
//! the API is open, for local tests, and authorization is off with it; `keelson up` always
//! creates one, whose token is in `system:masters`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use keelson_model::rbac::{UserInfo, AUTHENTICATED};

use super::ApiError;

/// The verified leaf certificate of a connection's client (a request extension the masters'
/// server loop attaches; verified against `--client-ca-file` during the handshake).
#[derive(Debug, Clone)]
pub struct ClientCertificate(pub tokio_rustls::rustls::pki_types::CertificateDer<'static>);

impl ClientCertificate {
    /// The user a certificate names, as kube-apiserver reads it: the subject's common name is
    /// the user, its organizations the groups. `None` without a common name.
    pub fn user(&self) -> Option<UserInfo> {
        let (_, cert) = x509_parser::parse_x509_certificate(&self.0).ok()?;
        let subject = cert.subject();
        let name = subject
            .iter_common_name()
            .next()?
            .as_str()
            .ok()?
            .to_string();
        let mut groups: Vec<String> = subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok())
            .map(str::to_string)
            .collect();
        groups.push(AUTHENTICATED.to_string());
        Some(UserInfo { name, groups })
    }
}

/// Tokens and the users they name.
#[derive(Debug, Clone, Default)]
pub struct Tokens(Option<Arc<HashMap<String, Arc<UserInfo>>>>);

impl Tokens {
    /// No authentication.
    pub fn open() -> Self {
        Tokens(None)
    }

    /// Reads a token file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read token file {}: {e}", path.display()))?;
        let mut map = HashMap::new();
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let fields = csv_fields(line);
            let field = |i: usize| fields.get(i).map(|f| f.trim()).unwrap_or("");
            if field(0).is_empty() {
                continue;
            }
            let name = match field(1) {
                "" => "admin",
                user => user,
            };
            let mut groups: Vec<String> = field(3)
                .split(',')
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(str::to_string)
                .collect();
            groups.push(AUTHENTICATED.to_string());
            let user = UserInfo {
                name: name.to_string(),
                groups,
            };
            map.insert(field(0).to_string(), Arc::new(user));
        }
        if map.is_empty() {
            anyhow::bail!("token file {} holds no token", path.display());
        }
        Ok(Tokens(Some(Arc::new(map))))
    }

    /// Whether requests must authenticate (a token file was given).
    pub fn required(&self) -> bool {
        self.0.is_some()
    }

    /// The user of a token of the file.
    pub fn get(&self, token: &str) -> Option<Arc<UserInfo>> {
        self.0.as_ref()?.get(token).cloned()
    }

    /// The user a request's `Authorization: Bearer` header names: `Ok(None)` when nothing is
    /// required, a 401 when the token is missing or neither in the file nor accepted by
    /// `stored` (the replicated store's tokens).
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        stored: impl FnOnce(&str) -> Option<Arc<UserInfo>>,
    ) -> Result<Option<Arc<UserInfo>>, ApiError> {
        if !self.required() {
            return Ok(None);
        }
        let token = bearer(headers).ok_or_else(|| unauthorized("a bearer token is required"))?;
        match self.get(token).or_else(|| stored(token)) {
            Some(user) => Ok(Some(user)),
            None => Err(unauthorized("invalid bearer token")),
        }
    }
}

/// The token of a request's `Authorization: Bearer` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let header = headers.get(axum::http::header::AUTHORIZATION)?;
    Some(header.to_str().ok()?.strip_prefix("Bearer ")?.trim())
}

fn unauthorized(why: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        format!("Unauthorized: {why}"),
    )
}

/// The fields of a CSV line: commas separate, double quotes enclose a field with commas (`""`
/// inside is one quote).
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut().expect("one field").push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(String::new()),
            c => fields.last_mut().expect("one field").push(c),
        }
    }
    fields
}

/// Paths that answer without authentication or authorization.
pub fn exempt(path: &str) -> bool {
    matches!(path, "/healthz" | "/livez" | "/readyz")
}

/// The authenticated user of a request (a request extension): authorization and per-user
/// limits read it.
#[derive(Debug, Clone)]
pub struct User(pub Arc<UserInfo>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_lines_name_users_and_groups() {
        let dir = std::env::temp_dir().join(format!("keelson-tokens-{}", std::process::id()));
        std::fs::write(
            &dir,
            "# comment\nt1,alice,u1,\"dev,ops\"\nt2\nt3,bob,u3,system:masters\n",
        )
        .unwrap();
        let tokens = Tokens::load(&dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        let user = |t: &str| {
            let mut h = HeaderMap::new();
            h.insert("authorization", format!("Bearer {t}").parse().unwrap());
            tokens.authenticate(&h, |_| None)
        };
        let alice = user("t1").unwrap().unwrap();
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.groups, ["dev", "ops", AUTHENTICATED]);
        assert_eq!(user("t2").unwrap().unwrap().name, "admin");
        assert!(user("t3").unwrap().unwrap().in_group("system:masters"));
        assert_eq!(user("nope").unwrap_err().code, StatusCode::UNAUTHORIZED);
        assert_eq!(
            tokens
                .authenticate(&HeaderMap::new(), |_| None)
                .unwrap_err()
                .code,
            StatusCode::UNAUTHORIZED
        );
    }
}
