"""The image `make images` built (.tmp/images/medbench-platform, an OCI image layout): its
config, its filesystem, and the six services started from it by crun, as the chart runs them
(user 10001, read-only root, a tmpfs /tmp, no capabilities), against the session's Kafka broker
and Mongo-wire server, each reaching SERVING on gRPC health.

`make test` runs `make images` first (a cached rebuild takes seconds); run alone, build it
first. Needs root (umoci unpack, crun), as `make images` does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from medbench_devstack.processes import ManagedProcess
from medbench_devstack.services import SERVICES, ServiceStack
from tests.conftest import Servers

pytestmark = [pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
LAYOUT = ROOT / ".tmp" / "images" / "medbench-platform"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
CHART = ROOT / "charts" / "medbench"
ENTRYPOINTS = {s.module for s in SERVICES} | {"medbench_site", "medbench_review"}
USER = 10001
VENV = "/opt/medbench"
SERVING_TIMEOUT_S = 120


def _blob(digest: str) -> dict[str, Any]:
    algorithm, hexdigest = digest.split(":")
    data: dict[str, Any] = json.loads((LAYOUT / "blobs" / algorithm / hexdigest).read_text())
    return data


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    if not (LAYOUT / "index.json").exists():
        pytest.fail(f"no image at {LAYOUT}: run `make images` (make test does)")
    index = json.loads((LAYOUT / "index.json").read_text())
    refs = {
        m["annotations"]["org.opencontainers.image.ref.name"]: m["digest"]
        for m in index["manifests"]
    }
    assert VERSION in refs, f"the layout holds {sorted(refs)}, not the project's {VERSION}"
    return _blob(refs[VERSION])


@pytest.fixture(scope="module")
def config(manifest: dict[str, Any]) -> dict[str, Any]:
    return _blob(manifest["config"]["digest"])


@pytest.fixture(scope="module")
def rootfs(manifest: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image's filesystem, unpacked by umoci from the layout's layers."""
    bundle = tmp_path_factory.mktemp("image") / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--image", f"{LAYOUT}:{VERSION}", str(bundle)],
        check=True,
        capture_output=True,
    )
    return bundle / "rootfs"


def test_config_runs_a_module_as_the_unprivileged_user(config: dict[str, Any]) -> None:
    cfg = config["config"]
    assert cfg["User"] == f"{USER}:{USER}"
    assert cfg["Entrypoint"] == ["python", "-m"]
    env = dict(e.split("=", 1) for e in cfg["Env"])
    assert env["PATH"].split(":")[0] == f"{VENV}/bin"
    labels = cfg["Labels"]
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["org.opencontainers.image.title"] == "medbench-platform"
    assert len(labels["org.opencontainers.image.revision"]) == 40
    assert set(labels["org.medbench.entrypoints"].split()) == ENTRYPOINTS
    assert config["os"] == "linux" and config["architecture"] == "amd64"


def test_chart_defaults_name_this_image() -> None:
    """Every container of the chart's own components runs <prefix>/platform:<version> by default."""
    import yaml  # noqa: PLC0415 - dev dependency, as in the chart tests

    helm = ROOT / ".tools" / "bin" / "helm"
    if not helm.exists():
        pytest.fail(f"{helm} is missing: run `make chart-tools` (make test does)")
    out = subprocess.run(
        # ci/default-values.yaml: the chart's defaults with only the registry prefix set (the
        # same as the default) and what an install must give.
        [
            str(helm),
            "template",
            "medbench",
            str(CHART),
            "-f",
            str(CHART / "ci/default-values.yaml"),
            "--set",
            "site.enabled=true",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    images = {}
    for doc in yaml.safe_load_all(out):
        if doc and doc.get("kind") == "Deployment":
            for c in doc["spec"]["template"]["spec"]["containers"]:
                images[c["name"]] = (c["image"], c.get("command", [])[:3])
    ours = {name: v for name, v in images.items() if not v[0].startswith("vllm/")}
    assert {"gateway", "rotator", "dispatcher", "aggregator", "site"} <= set(ours)
    for name, (image, command) in ours.items():
        assert image == f"registry.example.org/medbench/platform:{VERSION}", name
        assert command[:2] == ["python", "-m"] and command[2] in ENTRYPOINTS, (name, command)


def test_rootfs_has_no_compiler_and_every_entrypoint(rootfs: Path) -> None:
    compilers = ["gcc", "cc", "c++", "g++", "clang", "ld", "as", "make", "cpp"]
    found = [
        f"{d}/{c}"
        for d in ("usr/bin", "usr/local/bin", "usr/sbin")
        for c in compilers
        if (rootfs / d / c).exists() or (rootfs / d / c).is_symlink()
    ]
    assert found == [], f"compilers in the image: {found}"
    assert not list((rootfs / "usr/bin").glob("*-linux-gnu-gcc*"))
    site = rootfs / VENV.lstrip("/") / "lib/python3.11/site-packages"
    missing = [m for m in sorted(ENTRYPOINTS) if not (site / m / "__main__.py").is_file()]
    assert missing == []
    assert (rootfs / VENV.lstrip("/") / "bin/python").resolve().name == "python3.11"
    passwd = (rootfs / "etc/passwd").read_text().splitlines()
    assert any(line.split(":")[2] == str(USER) for line in passwd)
    # The pins it was built from travel with it.
    reqs = (rootfs / VENV.lstrip("/") / "share/requirements.txt").read_text()
    assert "--hash=sha256:" in reqs and "grpcio==" in reqs
    assert "package python3.11 " in (rootfs / VENV.lstrip("/") / "share/debian.lock").read_text()


def _crun_config(rootfs: Path, argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    """An OCI runtime config as the chart's pods run: read-only root, tmpfs /tmp, user 10001,
    no capabilities, no new privileges; the host's network (the test servers are on loopback)."""
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": USER, "gid": USER},
            "args": argv,
            "env": [f"PATH={VENV}/bin:/usr/bin:/bin", "HOME=/tmp"]
            + [f"{k}={v}" for k, v in env.items()],
            "cwd": "/tmp",
            "capabilities": {"bounding": [], "effective": [], "permitted": []},
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs), "readonly": True},
        "hostname": "medbench",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/tmp",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=1777", "size=256m"],
            },
            {
                "destination": "/etc/resolv.conf",
                "type": "bind",
                "source": "/etc/resolv.conf",
                "options": ["rbind", "ro"],
            },
        ],
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount")],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list"],
            "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"],
        },
    }


class Containers:
    """crun containers over one unpacked rootfs, each a ManagedProcess with a log file."""

    def __init__(self, rootfs: Path, work: Path) -> None:
        if shutil.which("crun") is None:
            pytest.fail("crun is not installed: run `make images` (it installs crun)")
        self.rootfs = rootfs
        self.work = work
        self.state = work / "crun-state"
        self.ids: list[str] = []

    def process(self, name: str, argv: list[str], env: dict[str, str]) -> ManagedProcess:
        bundle = self.work / name
        bundle.mkdir(parents=True, exist_ok=True)
        (bundle / "config.json").write_text(json.dumps(_crun_config(self.rootfs, argv, env)))
        container = f"medbench-test-{os.getpid()}-{name}"
        self.ids.append(container)
        # No cgroups are asked for (--cgroup-manager=disabled); on a host with v1 and v2
        # hierarchies mounted at once ("hybrid", which crun refuses) the v2 one is unmounted
        # in a mount namespace of this process only.
        script = (
            "umount /sys/fs/cgroup/unified 2>/dev/null || true; "
            'exec crun --root "$0" --cgroup-manager=disabled run --bundle "$1" "$2"'
        )
        return ManagedProcess(
            name,
            ["unshare", "--mount", "sh", "-c", script, str(self.state), str(bundle), container],
            {"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            self.work / f"{name}.log",
        )

    def cleanup(self) -> None:
        for container in self.ids:
            subprocess.run(
                ["crun", "--root", str(self.state), "delete", "--force", container],
                capture_output=True,
                check=False,
            )


@pytest.fixture
def containers(rootfs: Path, tmp_path: Path) -> Iterator[Containers]:
    c = Containers(rootfs, tmp_path)
    yield c
    c.cleanup()


def _wait_serving(address: str, proc: ManagedProcess, deadline: float) -> None:
    request = health_pb2.HealthCheckRequest(service="")
    last = "no answer yet"
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            assert proc.alive(), f"{proc.name} exited ({proc.returncode}):\n{proc.tail(40)}"
            try:
                reply = stub.Check(request, timeout=1, wait_for_ready=True)
            except grpc.RpcError as exc:
                last = str(exc.code()) if isinstance(exc, grpc.Call) else repr(exc)
            else:
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            time.sleep(0.2)
    pytest.fail(f"{proc.name} not SERVING on {address} (last: {last}):\n{proc.tail(40)}")


def test_the_six_services_serve_from_the_image(
    containers: Containers, servers: Servers, unique: str, tmp_path: Path
) -> None:
    # The settings a local stack gives each service (ports, peers, per-service tokens):
    # only the MEDBENCH_* ones cross into the container, the rest is the image's own.
    stack = ServiceStack(
        tmp_path / "stack",
        servers.mongo_uri,
        f"img_{unique}",
        servers.kafka_bootstrap,
        f"img_{unique}.",
    )
    procs = {}
    for spec in SERVICES:
        env = {k: v for k, v in stack.env(spec.name).items() if k.startswith("MEDBENCH_")}
        procs[spec.name] = containers.process(spec.name, ["python", "-m", spec.module], env)
    try:
        for proc in procs.values():
            proc.start()
        deadline = time.monotonic() + SERVING_TIMEOUT_S
        for name, proc in procs.items():
            _wait_serving(stack.address(name), proc, deadline)
    finally:
        for proc in procs.values():
            proc.terminate(10)
    # SIGTERM reached the services inside: each drained and exited by itself.
    assert {n: p.returncode for n, p in procs.items()} == {n: 0 for n in procs}


def test_the_website_entrypoint_runs_from_the_image(containers: Containers) -> None:
    proc = containers.process("site", ["python", "-m", "medbench_site", "--help"], {})
    proc.start()
    assert proc.wait_exit(60) == 0, proc.tail(40)
    assert "serve" in proc.tail(40)
