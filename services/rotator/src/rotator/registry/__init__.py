"""The benchmark registry shipped with the rotator, as data."""

from pathlib import Path

DEFAULT_REGISTRY_PATH = Path(__file__).resolve().with_name("medbench_v4.json")
