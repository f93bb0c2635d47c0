//! Authentication and authorization of every API request, in Kubernetes' order: who asks
//! ([`super::auth`]), then whether they may: members of `system:masters` may do anything, as in
//! kube-apiserver; a node's agent is decided by the Node authorizer ([`node`]) where it has an
//! opinion; then RBAC ([`rbac`]). Refusals are 403 `Status` objects naming the user, the verb
//! and the resource. Writes of RBAC's own kinds are also checked against escalation
//! ([`Guard::admit`]): a user can grant only what it holds, unless allowed to `escalate` (roles)
//! or `bind` (bindings).
//!
//! - `attributes.rs`: what a request asks (verb, resource or path), from its path.
//! - `node.rs`: the Node authorizer (agents write only their own node's objects).
//! - `rbac.rs`: the authorizer over the informers' roles and bindings.
//! - `review.rs`: `SelfSubjectAccessReview` (`kubectl auth can-i`).
//! - `timing.rs`: how long authentication and authorization take (two histograms).
//!
//! The same middleware records every mutating request, and every refused one, in the audit log
//! ([`super::audit`]).

pub mod attributes;
pub mod node;
pub mod rbac;
pub mod review;
pub mod timing;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::rbac::v1::PolicyRule;
use keelson_model::rbac::{covers, Attributes, Target, UserInfo, GROUP, MASTERS};
use serde_json::Value;

use super::audit::{self, AuditLog};
use super::auth::{exempt, ClientCertificate, Tokens, User};
use super::ApiError;
use crate::registry::ResourceInfo;

/// Who may do what: the authenticator and the authorizer.
#[derive(Clone, Default)]
pub struct Guard {
    pub tokens: Tokens,
    /// None: no informers (only `system:masters` is allowed anything).
    pub rbac: Option<rbac::Rbac>,
    /// Where mutating and refused requests are recorded (`--audit-log-path`).
    pub audit: Option<AuditLog>,
    /// How long authentication and authorization take.
    pub timing: Option<timing::GuardMetrics>,
}

impl Guard {
    /// The user of a token kept in the replicated store, if `token` is one, current and not
    /// expired.
    fn stored_token(&self, token: &str) -> Option<Arc<UserInfo>> {
        let (id, secret) = crate::registry::token::split(token)?;
        let informers = &self.rbac.as_ref()?.informers;
        let item = informers.tokens.get(&format!("/registry/tokens/{id}"))?;
        item.facts.authenticate(secret, jiff::Timestamp::now())
    }

    /// Whether `user` may do `attrs`.
    pub fn allows(&self, user: &UserInfo, attrs: &Attributes) -> bool {
        self.decide(user, attrs, None)
    }

    /// Whether `user` may do `attrs`, in Kubernetes' order: `system:masters`, the Node
    /// authorizer (`query`: the request's query string), then RBAC.
    pub fn decide(&self, user: &UserInfo, attrs: &Attributes, query: Option<&str>) -> bool {
        self.decide_by(user, attrs, query).0
    }

    /// [`Guard::decide`], and who decided.
    fn decide_by(
        &self,
        user: &UserInfo,
        attrs: &Attributes,
        query: Option<&str>,
    ) -> (bool, timing::Decider) {
        if user.in_group(MASTERS) {
            return (true, timing::Decider::Masters);
        }
        if let Some(node) = node::node_of(user) {
            let informers = self.rbac.as_ref().map(|r| &*r.informers);
            match node::decide(node, attrs, query, informers) {
                node::Decision::Allow => return (true, timing::Decider::Node),
                node::Decision::Deny => return (false, timing::Decider::Node),
                node::Decision::NoOpinion => {}
            }
        }
        let allowed = self.rbac.as_ref().is_some_and(|r| r.allows(user, attrs));
        (allowed, timing::Decider::Rbac)
    }

    /// What authorization cannot tell from a request's path, checked on the object as it would
    /// be stored: a node's agent writes only its own Node (`NodeRestriction`), and a write of one
    /// of RBAC's kinds grants nothing its writer lacks ([`Guard::no_escalation`]).
    pub fn admit(
        &self,
        user: Option<&UserInfo>,
        info: &ResourceInfo,
        obj: &Value,
    ) -> Result<(), ApiError> {
        let Some(user) = user else { return Ok(()) };
        if user.in_group(MASTERS) {
            return Ok(());
        }
        if let Some(node) = node::node_of(user) {
            let name = crate::registry::meta_str(obj, "name").unwrap_or("");
            if info.group.is_empty() && info.plural == "nodes" && name != node {
                return Err(forbidden_write(
                    info,
                    name,
                    &format!("node {node:?} may only write its own Node"),
                ));
            }
        }
        if info.group != GROUP {
            return Ok(());
        }
        self.no_escalation(user, info, obj)
    }

    /// The escalation check of a write of one of RBAC's kinds, `obj` as it would be stored:
    /// `user` must hold every rule the role grants (or be allowed to `escalate` it), or that
    /// the bound role grants (or be allowed to `bind` it).
    fn no_escalation(
        &self,
        user: &UserInfo,
        info: &ResourceInfo,
        obj: &Value,
    ) -> Result<(), ApiError> {
        let namespace = crate::registry::meta_str(obj, "namespace").unwrap_or("");
        let name = crate::registry::meta_str(obj, "name").unwrap_or("");
        let may = |verb: &str, resource: &str, name: &str| {
            self.allows(
                user,
                &Attributes {
                    verb: verb.into(),
                    target: Target::Resource {
                        group: GROUP.into(),
                        resource: resource.into(),
                        subresource: String::new(),
                        namespace: namespace.into(),
                        name: name.into(),
                    },
                },
            )
        };
        let granted: Vec<PolicyRule> = match obj.get("roleRef") {
            None => {
                if may("escalate", info.plural, name) {
                    return Ok(());
                }
                serde_json::from_value(obj.get("rules").cloned().unwrap_or(Value::Null))
                    .unwrap_or_default()
            }
            Some(role_ref) => {
                let kind = role_ref.get("kind").and_then(Value::as_str).unwrap_or("");
                let role = role_ref.get("name").and_then(Value::as_str).unwrap_or("");
                let plural = if kind == "Role" {
                    "roles"
                } else {
                    "clusterroles"
                };
                if may("bind", plural, role) {
                    return Ok(());
                }
                let rules = self
                    .rbac
                    .as_ref()
                    .and_then(|r| r.with_role(kind, namespace, role, <[PolicyRule]>::to_vec));
                match rules {
                    Some(rules) => rules,
                    None => {
                        return Err(forbidden_write(
                            info,
                            name,
                            &format!(
                                "{kind} {role:?} is not found, so what it grants cannot be checked"
                            ),
                        ))
                    }
                }
            }
        };
        let held = self
            .rbac
            .as_ref()
            .map(|r| r.rules_for(user, namespace))
            .unwrap_or_default();
        let missing: Vec<&PolicyRule> = granted.iter().filter(|r| !covers(&held, r)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        let missing = serde_json::to_string(&missing).unwrap_or_default();
        Err(forbidden_write(
            info,
            name,
            &format!(
                "user {:?} is attempting to grant RBAC permissions not currently held: {missing}",
                user.name
            ),
        ))
    }
}

fn forbidden_write(info: &ResourceInfo, name: &str, why: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "Forbidden",
        format!(
            "{}.{} {name:?} is forbidden: {why}",
            info.plural, info.group
        ),
    )
    .with_details(name, info.plural)
}

/// Kubernetes' refusal: `pods "a" is forbidden: User "bob" cannot get resource "pods" in API
/// group "" in the namespace "d"`.
pub fn forbidden(user: &UserInfo, attrs: &Attributes) -> ApiError {
    let verb = &attrs.verb;
    let who = &user.name;
    match &attrs.target {
        Target::Resource {
            group,
            resource,
            subresource,
            namespace,
            name,
        } => {
            let qualified = if group.is_empty() {
                resource.clone()
            } else {
                format!("{resource}.{group}")
            };
            let object = if name.is_empty() {
                qualified
            } else {
                format!("{qualified} {name:?}")
            };
            let what = if subresource.is_empty() {
                resource.clone()
            } else {
                format!("{resource}/{subresource}")
            };
            let scope = if namespace.is_empty() {
                "at the cluster scope".to_string()
            } else {
                format!("in the namespace {namespace:?}")
            };
            let mut e = ApiError::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!("{object} is forbidden: User {who:?} cannot {verb} resource {what:?} in API group {group:?} {scope}"),
            )
            .with_details(name, resource);
            if !group.is_empty() {
                e.details.get_or_insert_with(Default::default)["group"] = group.clone().into();
            }
            e
        }
        Target::NonResource { path } => ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("forbidden: User {who:?} cannot {verb} path {path:?}"),
        ),
    }
}

/// Middleware: authenticates the request (its client certificate, else its bearer token),
/// authorizes it, and hands its user on as a request extension. Health and readiness pass as
/// they are; without a token file, so does every request without a certificate.
pub async fn guard(State(guard): State<Guard>, mut req: Request, next: Next) -> Response {
    if exempt(req.uri().path()) {
        return next.run(req).await;
    }
    let attrs = attributes::of_request(req.method(), req.uri().path(), req.uri().query());
    let audited = guard.audit.as_ref().map(|log| (log, audit_request(&req)));
    let record = |user: Option<&UserInfo>, code: StatusCode| {
        if let Some((log, request)) = &audited {
            if code.as_u16() == 401 || code.as_u16() == 403 || audit::mutating(&attrs) {
                log.record(request, user, &attrs, code.as_u16());
            }
        }
    };
    let started = Instant::now();
    let certified = req
        .extensions()
        .get::<ClientCertificate>()
        .and_then(ClientCertificate::user);
    let mut method = timing::Method::Certificate;
    let authenticated = match certified {
        Some(user) => Ok(Some(Arc::new(user))),
        None => {
            method = timing::Method::TokenFile;
            guard.tokens.authenticate(req.headers(), |t| {
                method = timing::Method::StoredToken;
                guard.stored_token(t)
            })
        }
    };
    if let Some(m) = &guard.timing {
        let method = match authenticated {
            Ok(Some(_)) => method,
            _ => timing::Method::None,
        };
        m.authenticated(method, started.elapsed());
    }
    let user = match authenticated {
        Ok(Some(user)) => user,
        Ok(None) => {
            let response = next.run(req).await;
            record(None, response.status());
            return response;
        }
        Err(e) => {
            record(None, e.code);
            return e.into_response();
        }
    };
    let started = Instant::now();
    let (allowed, decider) = guard.decide_by(&user, &attrs, req.uri().query());
    if let Some(m) = &guard.timing {
        m.authorized(decider, started.elapsed());
    }
    if !allowed {
        record(Some(&user), StatusCode::FORBIDDEN);
        return forbidden(&user, &attrs).into_response();
    }
    req.extensions_mut().insert(User(Arc::clone(&user)));
    let response = next.run(req).await;
    record(Some(&user), response.status());
    response
}

/// What the audit log says of a request itself (its URI keeps the query, which never holds a
/// credential: tokens travel in the `Authorization` header).
fn audit_request(req: &Request) -> audit::Request {
    audit::Request {
        uri: req.uri().to_string(),
        source: req
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip()),
        user_agent: req
            .headers()
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
        received: jiff::Timestamp::now(),
    }
}
