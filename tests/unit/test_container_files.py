"""The container build files, checked without podman (tests/integration/test_container.py builds
and runs the image for real with GFS_CONTAINER_TESTS=1)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CONTAINER = ROOT / "deploy" / "container"


def test_build_script_is_valid_bash():
    r = subprocess.run(["bash", "-n", str(CONTAINER / "build-image.sh")], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr


def test_image_user_and_ports_match_the_kubernetes_manifests():
    text = (CONTAINER / "Containerfile").read_text()
    uid = int(re.search(r"useradd .*--uid (\d+)", text).group(1))
    exposed = {(int(p.split("/")[0]), (p.split("/") + ["tcp"])[1])
               for p in re.search(r"^EXPOSE (.*)$", text, re.M).group(1).split()}
    for name in ("masters.yaml", "chunkservers.yaml"):
        for doc in yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / name).read_text()):
            if doc and doc["kind"] == "StatefulSet":
                spec = doc["spec"]["template"]["spec"]
                assert spec["securityContext"]["runAsUser"] == uid
                ports = {(p["containerPort"], p.get("protocol", "TCP").lower())
                         for c in spec["containers"] for p in c["ports"]}
                assert ports <= exposed, (name, ports - exposed)
