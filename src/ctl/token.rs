//! `keelson ctl token create|list|revoke`: bearer tokens kept in the replicated store
//! (`auth.keelson.io/v1` `Token`, `registry/token.rs`), as `kubeadm token` manages bootstrap
//! tokens. The secret is drawn here and only its hash is sent: the token is printed once.

use anyhow::{bail, Context};
use clap::Subcommand;
use reqwest::Method;
use serde_json::json;

use super::manifest::{collection_path, object_path};
use super::objects::{self, GetArgs};
use super::Ctx;
use crate::registry::token::{self, AUTHENTICATION};

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token and print it (`ID.SECRET`); it is shown only this once.
    Create {
        /// The user the token authenticates.
        #[arg(long)]
        user: String,
        /// A group of that user (repeat for more).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// How long the token is honoured (`30m`, `24h`, `1h30m`); `0`: until revoked.
        #[arg(long, default_value = "24h")]
        ttl: String,
    },
    /// List the tokens: id, user, groups, usages, expiry (never the secret).
    List {
        /// Output format: json, yaml, name, wide.
        #[arg(short = 'o', long)]
        output: Option<String>,
    },
    /// Revoke tokens, by id or by the whole token: every master refuses them at once.
    Revoke {
        #[arg(required = true)]
        tokens: Vec<String>,
    },
}

/// Runs a `token` command.
pub async fn run(ctx: &Ctx, command: TokenCommand) -> anyhow::Result<()> {
    let info = crate::registry::lookup_in(token::GROUP, "v1", "tokens").expect("tokens are served");
    match command {
        TokenCommand::Create { user, groups, ttl } => {
            let expiration = expiration(&ttl, jiff::Timestamp::now())?;
            let (id, secret) = token::generate();
            let mut spec = json!({
                "user": user,
                "usages": [AUTHENTICATION],
                "secretHash": token::hash(&secret),
            });
            if !groups.is_empty() {
                spec["groups"] = json!(groups);
            }
            if let Some(t) = expiration {
                spec["expiration"] = json!(t.to_string());
            }
            let body = json!({
                "apiVersion": info.api_version(),
                "kind": info.kind,
                "metadata": {"name": id},
                "spec": spec,
            });
            let path = collection_path(info, None);
            ctx.client.send_json(Method::POST, &path, &body).await?;
            println!("{id}.{secret}");
        }
        TokenCommand::List { output } => {
            let args = GetArgs {
                resource: "tokens".into(),
                names: Vec::new(),
                output,
                selector: None,
                field_selector: None,
                watch: false,
                all_namespaces: false,
                no_headers: false,
            };
            objects::get(ctx, args).await?;
        }
        TokenCommand::Revoke { tokens } => {
            for t in tokens {
                let id = t.split_once('.').map_or(t.as_str(), |(id, _)| id);
                if !token::is_id(id) {
                    bail!("{t:?} is neither a token nor a token id");
                }
                ctx.client
                    .json(Method::DELETE, &object_path(info, None, id), None)
                    .await?;
                println!("token {id:?} revoked");
            }
        }
    }
    Ok(())
}

/// When a token made at `now` with `ttl` expires; `None` for `0` (never).
fn expiration(ttl: &str, now: jiff::Timestamp) -> anyhow::Result<Option<jiff::Timestamp>> {
    if ttl.trim() == "0" {
        return Ok(None);
    }
    let d: jiff::SignedDuration = ttl
        .parse()
        .with_context(|| format!("--ttl {ttl:?}: expected a duration such as 30m, 24h or 1h30m"))?;
    if d.is_negative() || d.is_zero() {
        bail!("--ttl {ttl:?}: must be positive (0 for a token that never expires)");
    }
    Ok(Some(now.checked_add(d).context("--ttl is too long")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_read_as_go_durations() {
        let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let at = |ttl| expiration(ttl, now).unwrap().map(|t| t.to_string());
        assert_eq!(at("0"), None);
        assert_eq!(at("24h").as_deref(), Some("2026-01-02T00:00:00Z"));
        assert_eq!(at("1h30m").as_deref(), Some("2026-01-01T01:30:00Z"));
        assert_eq!(at("2s").as_deref(), Some("2026-01-01T00:00:02Z"));
        assert!(expiration("soon", now).is_err());
        assert!(expiration("-5m", now).is_err());
    }
}
