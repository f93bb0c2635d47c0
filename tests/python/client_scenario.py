#!/usr/bin/env python3
"""The official Python `kubernetes` client against keelson.

Usage: client_scenario.py KUBECONFIG

Lists pods (none yet), creates a replication controller and two pods, reads them back,
merge-patches a label, scales the controller through its scale subresource, and watches pods
from a resource version, seeing a change made while the watch runs. Then every kind that
discovery reports is listed, read and watched through the client's typed API (so kinds added
later are covered without editing this file), including the nodes of real agents. Every step
is asserted; any failure exits non-zero. Driven by tests/python_client.rs against a real
3-master cluster with a hollow agent.
"""

import re
import sys
import threading
import time

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

NS = "default"
MERGE = "application/merge-patch+json"


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def pod(name):
    return client.V1Pod(
        api_version="v1",
        kind="Pod",
        metadata=client.V1ObjectMeta(name=name, labels={"app": "scenario"}),
        spec=client.V1PodSpec(
            containers=[client.V1Container(name="c", image="busybox", command=["sleep", "3600"])]
        ),
    )


def main(kubeconfig):
    config.load_kube_config(config_file=kubeconfig)
    v1 = client.CoreV1Api()

    # 1. An empty namespace.
    pods = v1.list_namespaced_pod(NS)
    check(pods.items == [], "no pods yet, got %r" % [p.metadata.name for p in pods.items])
    check(int(pods.metadata.resource_version) > 0, "a list has a resource version")

    # 2. A replication controller and two pods (labelled outside its selector).
    rc = client.V1ReplicationController(
        api_version="v1",
        kind="ReplicationController",
        metadata=client.V1ObjectMeta(name="frontend", labels={"app": "frontend"}),
        spec=client.V1ReplicationControllerSpec(
            replicas=2,
            selector={"app": "frontend"},
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "frontend"}),
                spec=client.V1PodSpec(
                    containers=[
                        client.V1Container(
                            name="web",
                            image="nginx",
                            ports=[client.V1ContainerPort(container_port=80)],
                        )
                    ]
                ),
            ),
        ),
    )
    created = v1.create_namespaced_replication_controller(NS, rc)
    check(created.metadata.uid, "a created controller has a uid")
    for name in ("scenario-a", "scenario-b"):
        p = v1.create_namespaced_pod(NS, pod(name))
        check(p.metadata.name == name, "created pod %s" % name)
        check(p.status.phase == "Pending", "a new pod is Pending, got %r" % p.status.phase)
    try:
        v1.create_namespaced_pod(NS, pod("scenario-a"))
        check(False, "creating a pod twice must fail")
    except ApiException as e:
        check(e.status == 409, "AlreadyExists is 409, got %s" % e.status)

    # 3. Read back.
    got = v1.read_namespaced_replication_controller("frontend", NS)
    check(got.spec.replicas == 2, "replicas 2, got %r" % got.spec.replicas)
    check(got.spec.selector == {"app": "frontend"}, "selector, got %r" % got.spec.selector)
    check(got.spec.template.spec.containers[0].ports[0].container_port == 80, "container port")
    a = v1.read_namespaced_pod("scenario-a", NS)
    check(a.spec.containers[0].image == "busybox", "image, got %r" % a.spec.containers[0].image)
    listed = v1.list_namespaced_pod(NS, label_selector="app=scenario")
    names = sorted(p.metadata.name for p in listed.items)
    check(names == ["scenario-a", "scenario-b"], "selected pods, got %r" % names)

    # 4. Merge-patch a label.
    patched = v1.patch_namespaced_pod(
        "scenario-a", NS, {"metadata": {"labels": {"tier": "backend"}}}, _content_type=MERGE
    )
    check(
        patched.metadata.labels == {"app": "scenario", "tier": "backend"},
        "labels merged, got %r" % patched.metadata.labels,
    )
    check(
        int(patched.metadata.resource_version) > int(a.metadata.resource_version),
        "a patch advances the resource version",
    )
    tiered = v1.list_namespaced_pod(NS, label_selector="tier=backend")
    check([p.metadata.name for p in tiered.items] == ["scenario-a"], "label selects the patched pod")

    # 5. Scale through the scale subresource.
    scale = v1.patch_namespaced_replication_controller_scale(
        "frontend", NS, {"spec": {"replicas": 3}}, _content_type=MERGE
    )
    check(scale.spec.replicas == 3, "scale answer, got %r" % scale.spec.replicas)
    check(
        v1.read_namespaced_replication_controller_scale("frontend", NS).spec.replicas == 3,
        "scale read back",
    )
    check(
        v1.read_namespaced_replication_controller("frontend", NS).spec.replicas == 3,
        "the controller's spec.replicas follows its scale",
    )

    # 6. Watch from a resource version; a change made while watching is delivered.
    rv = v1.list_namespaced_pod(NS, label_selector="app=scenario").metadata.resource_version
    changer_error = []

    def change():
        try:
            v1.patch_namespaced_pod(
                "scenario-b", NS, {"metadata": {"labels": {"watched": "yes"}}}, _content_type=MERGE
            )
        except Exception as e:  # reported by the main thread
            changer_error.append(e)

    w = watch.Watch()
    stream = w.stream(
        v1.list_namespaced_pod,
        NS,
        label_selector="app=scenario",
        resource_version=rv,
        timeout_seconds=30,
    )
    changer = threading.Thread(target=change)
    changer.start()
    seen = None
    for event in stream:
        obj = event["object"]
        if (
            event["type"] == "MODIFIED"
            and obj.metadata.name == "scenario-b"
            and (obj.metadata.labels or {}).get("watched") == "yes"
        ):
            seen = obj
            w.stop()
            break
        check(
            int(obj.metadata.resource_version) > int(rv),
            "only changes after %s, got %s" % (rv, obj.metadata.resource_version),
        )
    changer.join()
    check(not changer_error, "the change failed: %r" % changer_error)
    check(seen is not None, "the watch from %s never delivered the change" % rv)
    check(int(seen.metadata.resource_version) > int(rv), "the event is newer than %s" % rv)

    # 7. Every kind (nothing is deleted while this runs, so every listed object is watched),
    # with at least one object of each: a namespace, and a service (whose endpoints follow).
    v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="scenario-ns")))
    v1.create_namespaced_service(
        NS,
        client.V1Service(
            metadata=client.V1ObjectMeta(name="frontend"),
            spec=client.V1ServiceSpec(
                selector={"app": "frontend"}, ports=[client.V1ServicePort(port=80)]
            ),
        ),
    )
    deadline = time.monotonic() + 30
    while not v1.list_namespaced_endpoints(NS, field_selector="metadata.name=frontend").items:
        check(time.monotonic() < deadline, "the service's endpoints within 30 s")
        time.sleep(0.1)
    every_kind(v1)
    v1.delete_namespaced_service("frontend", NS)
    v1.delete_namespace("scenario-ns")

    # 8. Clean up; deleted objects are gone (a bound pod once its agent confirms: graceful
    # deletion marks it terminating first).
    v1.delete_namespaced_replication_controller("frontend", NS)
    for name in ("scenario-a", "scenario-b"):
        v1.delete_namespaced_pod(name, NS)
    deadline = time.monotonic() + 30
    while True:
        try:
            p = v1.read_namespaced_pod("scenario-a", NS)
            check(p.metadata.deletion_timestamp, "a deleted pod is gone or terminating")
            check(time.monotonic() < deadline, "a deleted pod must be gone within 30 s")
            time.sleep(0.2)
        except ApiException as e:
            check(e.status == 404, "NotFound is 404, got %s" % e.status)
            break
    print("python client scenario: all steps passed")


def snake(kind):
    return re.sub(r"(?<!^)(?=[A-Z])", "_", kind).lower()


def every_kind(v1):
    """Lists, reads and watches every kind discovery reports, through the typed API: the
    client decodes every object into its model classes, which refuse missing required
    fields (a Node without its full nodeInfo, say)."""
    resources = [r for r in v1.get_api_resources().resources if "/" not in r.name]
    kinds = sorted(r.kind for r in resources)
    check("Node" in kinds and "Pod" in kinds, "discovery reports nodes and pods: %r" % kinds)
    for r in resources:
        verbs = set(r.verbs)
        if not {"list", "get", "watch"} <= verbs:
            continue
        name = snake(r.kind)
        if r.namespaced:
            listing = getattr(v1, "list_%s_for_all_namespaces" % name)
            read = lambda n, ns, name=name: getattr(v1, "read_namespaced_%s" % name)(n, ns)
        else:
            listing = getattr(v1, "list_%s" % name)
            read = lambda n, ns, name=name: getattr(v1, "read_%s" % name)(n)
        items = listing().items
        check(items, "%s: at least one object to list" % r.kind)
        for o in items[:20]:
            got = read(o.metadata.name, o.metadata.namespace)
            check(got.metadata.uid == o.metadata.uid, "%s %s read back" % (r.kind, o.metadata.name))
        # A watch without a resource version starts with every object as ADDED.
        want = {(o.metadata.namespace, o.metadata.name) for o in items}
        added = set()
        w = watch.Watch()
        for event in w.stream(listing, timeout_seconds=5):
            if event["type"] == "ADDED":
                obj = event["object"]
                added.add((obj.metadata.namespace, obj.metadata.name))
            if want <= added:
                w.stop()
                break
        check(want <= added, "%s: the watch announced %r of %r" % (r.kind, added, want))
        print("kind %s: %d listed, read and watched" % (r.kind, len(items)))
    nodes = v1.list_node().items
    check(nodes, "an agent's node is listed")
    for n in nodes:
        info = n.status.node_info
        for field in ("machine_id", "system_uuid", "boot_id", "kernel_version", "os_image",
                      "container_runtime_version", "kubelet_version", "kube_proxy_version",
                      "operating_system", "architecture"):
            check(getattr(info, field), "node %s reports nodeInfo.%s" % (n.metadata.name, field))
        types = {a.type for a in n.status.addresses}
        check({"InternalIP", "Hostname"} <= types, "node addresses, got %r" % types)
        check("pods" in n.status.capacity and "pods" in n.status.allocatable, "pods capacity")
        check(n.status.daemon_endpoints.kubelet_endpoint.port is not None, "daemon endpoint")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: client_scenario.py KUBECONFIG")
    main(sys.argv[1])
