"""Composition root of the rotator."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from medbench.taskpool.v1 import taskpool_service_pb2, taskpool_service_pb2_grpc
from medbench_runtime.service import Servicer, ServiceRuntime, run_service
from medbench_storage.infra import open_infrastructure
from rotator.adapters.mongo_bank import INDEXES, SEALED_INDEXES, MongoTaskBank
from rotator.core.bank import DatasetInfo
from rotator.core.registry import Registry, RegistryError, load_registry
from rotator.entrypoints.grpc_servicer import TaskPoolServicer
from rotator.registry import DEFAULT_REGISTRY_PATH
from rotator.settings import RotatorSettings


def dataset_resolver(registry: Registry) -> Callable[[str, str], DatasetInfo | None]:
    """(dataset, answer_format) -> what a pool records of the item's dataset part."""

    def resolve(name: str, answer_format: str) -> DatasetInfo | None:
        try:
            dataset = registry.dataset(name)
        except RegistryError:
            return None
        try:
            part = dataset.part_for_format(answer_format)
        except KeyError:
            # Reported by validate_item as a format mismatch.
            return DatasetInfo(
                name,
                dataset.track,
                dataset.dimension,
                "|".join(sorted(dataset.answer_formats)),
                dataset.metric,
                dataset.dataset_rule,
            )
        rule = "all_permutations" if part.permutations > 1 else dataset.dataset_rule
        return DatasetInfo(
            name, dataset.track, dataset.dimension, part.answer_format, part.metric, rule
        )

    return resolve


def registry_version(path: Path) -> str:
    """ "<benchmark version>+<content hash>", recorded in every pool."""
    raw = path.read_bytes()
    return f"{json.loads(raw).get('version', '?')}+{hashlib.sha256(raw).hexdigest()[:12]}"


async def serve(settings: RotatorSettings) -> None:
    path = Path(settings.registry_path) if settings.registry_path else DEFAULT_REGISTRY_PATH
    registry = load_registry(path)
    async with open_infrastructure(settings, INDEXES, SEALED_INDEXES) as infra:
        bank = MongoTaskBank(infra.db, infra.sealed_db)
        servicer = TaskPoolServicer(infra, bank, dataset_resolver(registry), registry_version(path))
        await run_service(
            settings,
            ServiceRuntime(
                servicers=[
                    Servicer(
                        taskpool_service_pb2_grpc.add_TaskPoolServiceServicer_to_server,
                        servicer,
                        taskpool_service_pb2.DESCRIPTOR.services_by_name[
                            "TaskPoolService"
                        ].full_name,
                    )
                ],
                workers=[infra.relay],
                readiness=[infra.ready],
            ),
        )
