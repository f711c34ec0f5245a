"""Composition root of the rotator."""

from __future__ import annotations

from pathlib import Path

from medbench.taskpool.v1 import taskpool_service_pb2_grpc
from medbench_runtime.service import Servicer, run_service
from medbench_storage.infra import open_infrastructure
from rotator.adapters.gridfs_image_store import GridFSImageStore
from rotator.adapters.mongo_assignment_store import SEALED_INDEXES as ASSIGNMENT_SEALED_INDEXES
from rotator.adapters.mongo_assignment_store import MongoAssignmentStore
from rotator.adapters.mongo_current_pools import MongoCurrentPools
from rotator.adapters.mongo_leak_signals import MongoLeakSignals
from rotator.adapters.mongo_pool_store import INDEXES as POOL_INDEXES
from rotator.adapters.mongo_pool_store import SEALED_INDEXES, MongoPoolStore
from rotator.adapters.mongo_registry_store import MongoRegistryStore
from rotator.adapters.mongo_task_store import INDEXES as TASK_INDEXES
from rotator.adapters.mongo_task_store import MongoTaskStore
from rotator.entrypoints import convert
from rotator.entrypoints.grpc_servicer import TaskPoolServicer
from rotator.registry import DEFAULT_REGISTRY_PATH
from rotator.settings import RotatorSettings
from rotator.usecases.bank import BankImport, DatasetListing
from rotator.usecases.disclosure import PoolDisclosure
from rotator.usecases.leaks import LeakTracing
from rotator.usecases.pool import PoolServing
from rotator.usecases.registry import RegistryVersions
from rotator.usecases.rotation import PoolRotation


async def serve(settings: RotatorSettings) -> None:
    path = Path(settings.registry_path) if settings.registry_path else DEFAULT_REGISTRY_PATH
    async with open_infrastructure(
        settings, (*TASK_INDEXES, *POOL_INDEXES), (*SEALED_INDEXES, *ASSIGNMENT_SEALED_INDEXES)
    ) as infra:
        tasks = MongoTaskStore(infra.db, infra.sealed_db)
        pools = MongoPoolStore(infra.db, infra.sealed_db)
        assignments = MongoAssignmentStore(infra.db, infra.sealed_db, pools)
        images = GridFSImageStore(infra.db)
        current = MongoCurrentPools(infra, convert.pool_rotated)
        registry = RegistryVersions(MongoRegistryStore(infra.db), settings.registry_cache_s)
        # The bundled file becomes version 1 of an empty store (a broken file stops start-up).
        await registry.seed(path.read_bytes(), path.name)
        servicer = TaskPoolServicer(
            bank=BankImport(tasks, images, registry),
            listing=DatasetListing(tasks, pools, registry),
            registry=registry,
            rotation=PoolRotation(tasks, pools, current, registry),
            serving=PoolServing(
                pools,
                assignments,
                images,
                settings.leak_secret.get_secret_value().encode(),
                settings.canaries_per_dataset,
            ),
            leaks=LeakTracing(
                tasks,
                assignments,
                MongoLeakSignals(infra.sealed_db),
                (pools, images, settings.leak_secret.get_secret_value().encode()),
            ),
            disclosure=PoolDisclosure(pools, current),
        )
        await run_service(
            settings,
            infra.runtime(servicers=[Servicer.of(taskpool_service_pb2_grpc, servicer)]),
        )
