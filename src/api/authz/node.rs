//! The Node authorizer (Kubernetes' `NodeAuthorizer` and `NodeRestriction`, in one): an agent,
//! user `system:node:NAME` in group `system:nodes`, may read what its node runs on (pods,
//! services, endpoints, nodes, `GET /cluster`), write events, and write only its own Node, the
//! pods bound to it and its own heartbeats. Touching another node's objects is denied outright,
//! whatever RBAC says; anything else is left to RBAC.

use keelson_model::rbac::{Attributes, Target, UserInfo, NODES};

use crate::informer::Informers;

/// What the Node authorizer says of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
    /// Not a node's request, or not one it decides: RBAC's.
    NoOpinion,
}

/// The node a user is the agent of: `system:node:NAME` in `system:nodes`.
pub fn node_of(user: &UserInfo) -> Option<&str> {
    if !user.in_group(NODES) {
        return None;
    }
    user.name
        .strip_prefix("system:node:")
        .filter(|n| !n.is_empty())
}

/// Decides a request of `node`'s agent; `query` is the request's query string (the heartbeat
/// names its node there), `informers` tell which node a pod is bound to.
pub fn decide(
    node: &str,
    attrs: &Attributes,
    query: Option<&str>,
    informers: Option<&Informers>,
) -> Decision {
    let verb = attrs.verb.as_str();
    let read = matches!(verb, "get" | "list" | "watch");
    let allow_if = |ok: bool| if ok { Decision::Allow } else { Decision::Deny };
    match &attrs.target {
        Target::NonResource { path } => match (path.as_str(), verb) {
            ("/cluster", "get") => Decision::Allow,
            ("/agent/heartbeats", "post") => {
                let named = query
                    .into_iter()
                    .flat_map(|q| q.split('&'))
                    .filter_map(|kv| kv.strip_prefix("node="))
                    .collect::<Vec<_>>();
                allow_if(named == [node])
            }
            ("/agent/heartbeats", _) => Decision::Deny,
            _ => Decision::NoOpinion,
        },
        Target::Resource {
            group,
            resource,
            namespace,
            name,
            ..
        } if group.is_empty() => match resource.as_str() {
            "nodes" if read => Decision::Allow,
            // Which node a new Node names is checked on its body (`Guard::admit`).
            "nodes" if verb == "create" => Decision::Allow,
            "nodes" => allow_if(name == node),
            "pods" if read => Decision::Allow,
            "pods" if verb == "create" => Decision::Deny,
            "pods" => {
                let key = format!("/registry/pods/{namespace}/{name}");
                let bound = informers
                    .and_then(|i| i.pods.get(&key))
                    .is_some_and(|pod| pod.facts.node_name == node);
                allow_if(bound)
            }
            "services" | "endpoints" if read => Decision::Allow,
            "events" if matches!(verb, "create" | "update" | "patch") => Decision::Allow,
            _ => Decision::NoOpinion,
        },
        Target::Resource { .. } => Decision::NoOpinion,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(verb: &str, resource: &str, name: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            target: Target::Resource {
                group: String::new(),
                resource: resource.into(),
                subresource: String::new(),
                namespace: String::new(),
                name: name.into(),
            },
        }
    }

    #[test]
    fn a_node_writes_only_its_own() {
        let user = |name: &str, groups: &[&str]| UserInfo {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        assert_eq!(node_of(&user("system:node:a", &[NODES])), Some("a"));
        assert_eq!(node_of(&user("system:node:a", &[])), None);
        assert_eq!(node_of(&user("alice", &[NODES])), None);
        assert_eq!(
            decide("a", &res("update", "nodes", "a"), None, None),
            Decision::Allow
        );
        assert_eq!(
            decide("a", &res("patch", "nodes", "b"), None, None),
            Decision::Deny
        );
        assert_eq!(
            decide("a", &res("list", "nodes", ""), None, None),
            Decision::Allow
        );
        assert_eq!(
            decide("a", &res("create", "pods", ""), None, None),
            Decision::Deny
        );
        // A pod it cannot see bound to it is not its own.
        assert_eq!(
            decide("a", &res("update", "pods", "p"), None, None),
            Decision::Deny
        );
        assert_eq!(
            decide("a", &res("list", "secrets", ""), None, None),
            Decision::NoOpinion
        );
        let beat = Attributes {
            verb: "post".into(),
            target: Target::NonResource {
                path: "/agent/heartbeats".into(),
            },
        };
        assert_eq!(decide("a", &beat, Some("node=a"), None), Decision::Allow);
        assert_eq!(decide("a", &beat, Some("node=b"), None), Decision::Deny);
        assert_eq!(
            decide("a", &beat, Some("node=a&node=b"), None),
            Decision::Deny
        );
        assert_eq!(decide("a", &beat, None, None), Decision::Deny);
    }
}
