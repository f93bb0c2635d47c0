#!/usr/bin/env python3
"""The official Python `kubernetes` client against keelson.

Usage: client_scenario.py KUBECONFIG

Lists pods (none yet), creates a replication controller and two pods, reads them back,
merge-patches a label, scales the controller through its scale subresource, and watches pods
from a resource version, seeing a change made while the watch runs. Every step is asserted;
any failure exits non-zero. Driven by tests/python_client.rs against a real 3-master cluster.
"""

import sys
import threading

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

    # 7. Clean up; deleted objects are gone.
    v1.delete_namespaced_replication_controller("frontend", NS)
    for name in ("scenario-a", "scenario-b"):
        v1.delete_namespaced_pod(name, NS)
    try:
        v1.read_namespaced_pod("scenario-a", NS)
        check(False, "a deleted pod must be gone")
    except ApiException as e:
        check(e.status == 404, "NotFound is 404, got %s" % e.status)
    print("python client scenario: all steps passed")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: client_scenario.py KUBECONFIG")
    main(sys.argv[1])
