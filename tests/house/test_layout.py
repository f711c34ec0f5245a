"""Every service has the same floor plan (README "Layout"), and its README links each RPC and
each consumed topic to the use case behind it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from medbench_messaging import topics

ROOT = Path(__file__).resolve().parents[2]
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "src").is_dir())
MODULES = {"__init__.py", "__main__.py", "app.py", "settings.py"}
LAYERS = {"core", "usecases", "adapters", "entrypoints"}
# Package data that ships with a service (not code): YAML registries, rubric texts, a bank.
DATA = {"registry", "rubrics", "sample_bank"}


def package(service: str) -> Path:
    return ROOT / "services" / service / "src" / service


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_root_holds_only_the_floor_plan(service: str) -> None:
    members = {
        p.name
        for p in package(service).iterdir()
        if p.name != "__pycache__" and (p.suffix == ".py" or p.is_dir())
    }
    assert members - MODULES - LAYERS - DATA == set()
    assert members >= LAYERS
    assert {"app.py", "settings.py", "__main__.py"} <= members


@pytest.mark.parametrize("service", SERVICES)
def test_use_cases_take_ports_and_protobuf_is_mapped_in_one_place(service: str) -> None:
    root = package(service)
    assert (root / "core" / "ports.py").is_file()
    ports = (root / "core" / "ports.py").read_text()
    assert re.search(r"class \w+\(Protocol\)", ports)
    assert (root / "entrypoints" / "convert.py").is_file()
    use_cases = [p for p in (root / "usecases").glob("*.py") if p.name != "__init__.py"]
    assert use_cases, f"{service}/usecases holds no use case"


@pytest.mark.parametrize("service", SERVICES)
def test_the_readme_links_every_rpc_and_topic_to_its_use_case(service: str) -> None:
    readme = ROOT / "services" / service / "README.md"
    text = readme.read_text()
    linked = set(re.findall(r"`usecases/(\w+)\.py", text))
    assert linked, f"{readme} names no use-case module"
    for module in linked:
        assert (package(service) / "usecases" / f"{module}.py").is_file(), module
    # Every RPC the service's servicers implement appears in the README.
    servicers = "\n".join(p.read_text() for p in (package(service) / "entrypoints").glob("*.py"))
    rpcs = set(re.findall(r"async def ([A-Z]\w+)\(", servicers))
    missing = {rpc for rpc in rpcs if rpc not in text}
    assert not missing, f"{readme} does not name the RPCs {sorted(missing)}"
    # Every topic the service consumes (app.py: infra.consumer(topics.X, ...)) appears in a row
    # of the table that names a use-case module.
    app = (package(service) / "app.py").read_text()
    consumed = re.findall(r"infra\.consumer\(\s*topics\.(\w+)", app)
    rows = [line for line in text.splitlines() if "`usecases/" in line]
    for constant in consumed:
        name = getattr(topics, constant).name
        assert any(name in row for row in rows), f"{readme} links no use case to {name}"
