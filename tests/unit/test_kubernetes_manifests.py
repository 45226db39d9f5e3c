"""deploy/kubernetes/ checked offline against the Kubernetes API schemas (kubernetes-validate,
strict: unknown fields are errors) and against what gfs needs. Not applied to a real cluster
here: no cluster is reachable from these machines."""
from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from cli.daemon_config import load_config
from cli.main import chunkserver, master

MANIFESTS = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
K8S_VERSION = "1.30.0"      # the oldest release the manifests are meant for


def documents() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        out += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return out


def find(kind: str, name: str) -> dict:
    [doc] = [d for _, d in documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


@pytest.mark.parametrize("version", [K8S_VERSION, kubernetes_validate.latest_version()])
def test_every_resource_is_valid_for_kubernetes(version):
    docs = documents()
    assert {d["kind"] for _, d in docs} >= {"Namespace", "ConfigMap", "Service", "StatefulSet",
                                            "PodDisruptionBudget"}
    for name, doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']}: {err.message} "
                        f"at {'.'.join(map(str, err.path))}")


def test_the_validator_rejects_a_mistake():
    sts = find("StatefulSet", "gfs-master")
    bad = {**sts, "spec": {**sts["spec"], "replica": 3}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_config_maps_are_valid_gfs_config_files(tmp_path):
    for role, command in (("master", master), ("chunkserver", chunkserver)):
        text = find("ConfigMap", f"gfs-{role}")["data"][f"{role}.toml"]
        (tmp_path / f"{role}.toml").write_text(text)
        assert load_config(tmp_path / f"{role}.toml", role, command)
    peers = tomllib.loads(find("ConfigMap", "gfs-master")["data"]["master.toml"])["master"]["peers"]
    assert peers == [f"gfs-master-{i}.gfs-master.gfs.svc.cluster.local:7000@"
                     f"gfs-master-{i}.gfs-master.gfs.svc.cluster.local:7100" for i in range(3)]


@pytest.mark.parametrize("role", ["master", "chunkserver"])
def test_statefulsets_are_spread_probed_scraped_and_unprivileged(role):
    sts = find("StatefulSet", f"gfs-{role}")
    pod = sts["spec"]["template"]
    spec = pod["spec"]
    assert not spec.get("hostNetwork")
    anti = spec["affinity"]["podAntiAffinity"]
    if role == "master":      # never two masters on one node
        assert anti["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"] \
            == "kubernetes.io/hostname"
    else:
        assert anti["preferredDuringSchedulingIgnoredDuringExecution"]
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    [c] = spec["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(ports["metrics"])
    assert c["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    assert c["readinessProbe"]["tcpSocket"] == {"port": "grpc"}
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    secret_volumes = [v for v in spec["volumes"] if "secret" in v]
    assert secret_volumes[0]["secret"]["secretName"] == "gfs-cluster-secret"
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    pdb = find("PodDisruptionBudget", f"gfs-{role}")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == sts["spec"]["selector"]


def test_masters_have_stable_names_and_chunkservers_advertise_the_pod_ip():
    svc = find("Service", "gfs-master")
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"]
    assert find("StatefulSet", "gfs-master")["spec"]["serviceName"] == "gfs-master"
    [c] = find("StatefulSet", "gfs-chunkserver")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert c["args"][c["args"].index("--advertise-host") + 1] == "$(POD_IP)"


def test_master_pod_command_derives_id_and_names_from_the_pod_name():
    [c] = find("StatefulSet", "gfs-master")["spec"]["template"]["spec"]["containers"]
    assert c["command"][-2:] == ["/bin/sh", "-c"]
    script = c["args"][0]
    assert script.startswith("exec gfs master ")
    # The same shell line with `gfs` replaced by a function that prints its arguments.
    r = subprocess.run(["sh", "-c", 'gfs() { printf "%s\\n" "$@"; }; ' + script[len("exec "):]],
                       env={"HOSTNAME": "gfs-master-2", "PATH": "/usr/bin:/bin"},
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    name = "gfs-master-2.gfs-master.gfs.svc.cluster.local"
    assert r.stdout.split("\n")[:-1] == ["master", "--config", "/etc/gfs/master.toml",
                                         "--id", "3", "--raft", f"{name}:7000",
                                         "--grpc", f"{name}:7100"]
    peers = tomllib.loads(find("ConfigMap", "gfs-master")["data"]["master.toml"])["master"]["peers"]
    assert f"{name}:7000@{name}:7100" in peers       # the pod is a member under that name
