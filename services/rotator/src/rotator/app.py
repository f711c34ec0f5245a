"""Composition root of the rotator."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from medbench.taskpool.v1 import taskpool_service_pb2, taskpool_service_pb2_grpc
from medbench_runtime.service import Servicer, ServiceRuntime, run_service
from medbench_storage.infra import open_infrastructure
from rotator.adapters.gridfs_images import GridFSImages
from rotator.adapters.mongo_bank import INDEXES, SEALED_INDEXES, MongoTaskBank
from rotator.catalog import DatasetCatalog
from rotator.core.bank import DatasetInfo, ItemRejected
from rotator.core.registry import Registry
from rotator.entrypoints.grpc_servicer import TaskPoolServicer
from rotator.registry import DEFAULT_REGISTRY_PATH
from rotator.settings import RotatorSettings


def dataset_resolver(registry: Registry) -> Callable[[str, str], DatasetInfo | None]:
    """(dataset, answer_format) -> what a pool records of the item's dataset part."""
    catalog = DatasetCatalog(registry, "")

    def resolve(name: str, answer_format: str) -> DatasetInfo | None:
        try:
            return catalog.resolve("", name, "", answer_format).info
        except ItemRejected:
            return None

    return resolve


async def serve(settings: RotatorSettings) -> None:
    path = Path(settings.registry_path) if settings.registry_path else DEFAULT_REGISTRY_PATH
    catalog = DatasetCatalog.load(path)
    async with open_infrastructure(settings, INDEXES, SEALED_INDEXES) as infra:
        bank = MongoTaskBank(infra.db, infra.sealed_db)
        servicer = TaskPoolServicer(
            infra,
            bank,
            catalog,
            GridFSImages(infra.db),
            settings.leak_secret.get_secret_value().encode(),
            settings.canaries_per_download,
        )
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
                key_store=infra.key_store,
                audit=infra.audit_log,
            ),
        )
