//! What a request asks, as authorization sees it (Kubernetes' `RequestInfo`): the verb, and the
//! resource (group, resource, subresource, namespace, name) or the non-resource path.
//!
//! Parsed from the path alone, whether or not the resource is served, as kube-apiserver does:
//! an unknown resource is refused before anyone learns whether it exists. The seed's v1beta1
//! paths read as the core/v1 resources they serve (`minions` are `nodes`).

use axum::http::Method;
use keelson_model::rbac::{Attributes, Target};

/// The attributes of a request with `method` on `path` (`query` for `watch=true`).
pub fn of_request(method: &Method, path: &str, query: Option<&str>) -> Attributes {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] if !rest.is_empty() => ("", rest),
        ["api", "v1beta1", rest @ ..] if !rest.is_empty() => return v1beta1(method, rest),
        ["apis", group, _version, rest @ ..] if !rest.is_empty() => (*group, rest),
        _ => return non_resource(method, path),
    };
    let watch_param = query.is_some_and(|q| {
        q.split('&')
            .any(|kv| matches!(kv, "watch=true" | "watch=1"))
    });
    resource(method, group, rest, watch_param)
}

fn non_resource(method: &Method, path: &str) -> Attributes {
    Attributes {
        verb: method.as_str().to_ascii_lowercase(),
        target: Target::NonResource {
            path: path.to_string(),
        },
    }
}

/// `[watch/][namespaces/NS/]RESOURCE[/NAME[/SUBRESOURCE]]`, and `namespaces/NAME[/status]`.
fn resource(method: &Method, group: &str, parts: &[&str], watch_param: bool) -> Attributes {
    let (watch_path, mut parts) = match parts {
        ["watch", rest @ ..] => (true, rest),
        rest => (false, rest),
    };
    let mut namespace = "";
    if let ["namespaces", ns, rest @ ..] = parts {
        namespace = ns;
        // `namespaces/NAME/status` is the namespace's own subresource.
        if !rest.is_empty() && !matches!(rest, ["status" | "finalize"]) {
            parts = rest;
        }
    }
    let at = |i: usize| parts.get(i).copied().unwrap_or("");
    let (resource, name, subresource) = (at(0), at(1), at(2));
    let verb = match *method {
        Method::GET | Method::HEAD if watch_path || watch_param => "watch",
        Method::GET | Method::HEAD if name.is_empty() => "list",
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if name.is_empty() => "deletecollection",
        Method::DELETE => "delete",
        _ => "",
    };
    Attributes {
        verb: verb.to_string(),
        target: Target::Resource {
            group: group.to_string(),
            resource: resource.to_string(),
            subresource: subresource.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        },
    }
}

/// The seed's paths: `/api/v1beta1/[watch/]{pods,replicationControllers,services,minions}[/ID]`,
/// whose objects are in the `default` namespace (v1beta1 has no namespaces).
fn v1beta1(method: &Method, parts: &[&str]) -> Attributes {
    let (watch, parts) = match parts {
        ["watch", rest @ ..] => (true, rest),
        rest => (false, rest),
    };
    let plural = match parts.first().copied().unwrap_or("") {
        "replicationControllers" => "replicationcontrollers",
        "minions" => "nodes",
        other => other,
    };
    let namespace = if plural == "nodes" { "" } else { "default" };
    let mut path = vec!["namespaces", namespace, plural];
    if namespace.is_empty() {
        path.drain(..2);
    }
    path.extend(parts.get(1));
    resource(method, "", &path, watch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(a: &Attributes) -> (String, String, String, String, String, String) {
        match &a.target {
            Target::Resource {
                group,
                resource,
                subresource,
                namespace,
                name,
            } => (
                a.verb.clone(),
                group.clone(),
                resource.clone(),
                subresource.clone(),
                namespace.clone(),
                name.clone(),
            ),
            Target::NonResource { path } => (
                a.verb.clone(),
                path.clone(),
                "".into(),
                "".into(),
                "".into(),
                "".into(),
            ),
        }
    }

    fn t(
        v: &str,
        g: &str,
        r: &str,
        s: &str,
        ns: &str,
        n: &str,
    ) -> (String, String, String, String, String, String) {
        (v.into(), g.into(), r.into(), s.into(), ns.into(), n.into())
    }

    #[test]
    fn paths_read_as_kubernetes_reads_them() {
        let get = |p: &str, q: Option<&str>| res(&of_request(&Method::GET, p, q));
        assert_eq!(
            get("/api/v1/namespaces/d/pods", None),
            t("list", "", "pods", "", "d", "")
        );
        assert_eq!(
            get("/api/v1/namespaces/d/pods", Some("watch=true")),
            t("watch", "", "pods", "", "d", "")
        );
        assert_eq!(
            get("/api/v1/watch/namespaces/d/pods/a", None),
            t("watch", "", "pods", "", "d", "a")
        );
        assert_eq!(
            get("/api/v1/namespaces/d/pods/a/log", None),
            t("get", "", "pods", "log", "d", "a")
        );
        assert_eq!(
            get("/api/v1/namespaces/d", None),
            t("get", "", "namespaces", "", "d", "d")
        );
        assert_eq!(
            get("/api/v1/namespaces/d/status", None),
            t("get", "", "namespaces", "status", "d", "d")
        );
        assert_eq!(
            get("/api/v1/nodes/n1", None),
            t("get", "", "nodes", "", "", "n1")
        );
        assert_eq!(
            get(
                "/apis/rbac.authorization.k8s.io/v1/namespaces/d/roles/r",
                None
            ),
            t("get", "rbac.authorization.k8s.io", "roles", "", "d", "r")
        );
        assert_eq!(
            res(&of_request(
                &Method::DELETE,
                "/apis/rbac.authorization.k8s.io/v1/clusterroles",
                None
            )),
            t(
                "deletecollection",
                "rbac.authorization.k8s.io",
                "clusterroles",
                "",
                "",
                ""
            )
        );
        assert_eq!(
            get("/api/v1beta1/minions/n1", None),
            t("get", "", "nodes", "", "", "n1")
        );
        assert_eq!(
            res(&of_request(
                &Method::POST,
                "/api/v1beta1/replicationControllers",
                None
            )),
            t("create", "", "replicationcontrollers", "", "default", "")
        );
        assert_eq!(
            res(&of_request(&Method::PUT, "/kv/a/b", None)),
            t("put", "/kv/a/b", "", "", "", "")
        );
        assert_eq!(
            get("/api/v1beta1/watch/pods", None),
            t("watch", "", "pods", "", "default", "")
        );
        assert_eq!(get("/api", None), t("get", "/api", "", "", "", ""));
        assert_eq!(
            get("/apis/rbac.authorization.k8s.io/v1", None),
            t("get", "/apis/rbac.authorization.k8s.io/v1", "", "", "", "")
        );
    }
}
