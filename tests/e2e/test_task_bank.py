"""The task bank and pool rotation against the real rotator, Mongo-wire server and Kafka."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import pytest
from pymongo import AsyncMongoClient

from medbench.common.v1 import common_pb2
from medbench.taskpool.v1 import taskpool_pb2, taskpool_service_pb2, taskpool_service_pb2_grpc
from medbench_client.api import channel
from medbench_client.bank_files import import_item
from medbench_devstack.services import ServiceSpec, ServiceStack
from medbench_storage.identity import install_bootstrap_key
from rotator.core.rotation import board_of
from rotator.core.synthetic import synthetic_items
from tests.conftest import Servers
from tests.e2e.harness import maintainer_cli
from tests.shared_data import shared_path

pytestmark = [pytest.mark.e2e]
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000")


def stub(stack: ServiceStack) -> taskpool_service_pb2_grpc.TaskPoolServiceStub:
    return taskpool_service_pb2_grpc.TaskPoolServiceStub(
        channel(stack.address("rotator"), stack.admin_key)
    )


async def import_rows(
    stack: ServiceStack, items: list[taskpool_pb2.ImportItem]
) -> taskpool_service_pb2.ImportTasksResponse:
    async def messages():  # type: ignore[no-untyped-def]
        for i in range(0, len(items), 1000):
            yield taskpool_service_pb2.ImportTasksRequest(items=items[i : i + 1000])

    return await stub(stack).ImportTasks(messages())


ROWS = list(synthetic_items(3000, seed=21))


@pytest.fixture(scope="module")
async def bank(stack: ServiceStack) -> list[dict[str, object]]:
    response = await import_rows(stack, [import_item(r) for r in ROWS])
    assert response.imported == len(ROWS) and not response.rejected
    return ROWS


async def rotate(
    stack: ServiceStack,
    cycle: str,
    board: int = taskpool_pb2.BOARD_UPLOAD,
    datasets: tuple[str, ...] = ("MedExam", "DDx-advanced", "MedSafety"),
    **kwargs: int,
) -> taskpool_service_pb2.RotatePoolResponse:
    return await stub(stack).RotatePool(
        taskpool_service_pb2.RotatePoolRequest(
            track=common_pb2.TRACK_LLM, board=board, cycle=cycle, datasets=datasets, **kwargs
        )
    )


async def pool_groups(servers: Servers, stack: ServiceStack, pool_id: str) -> dict[str, list[str]]:
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient = AsyncMongoClient(servers.mongo_uri)
    try:
        sealed = client[stack.env("rotator")["MEDBENCH_MONGO__DATABASE"] + "_sealed"]
        groups: dict[str, list[str]] = {}
        items: Counter[str] = Counter()
        async for chunk in sealed.pool_keys.find({"pool_id": pool_id}).sort("chunk", 1):
            for key in chunk["keys"]:
                items[key["group_id"]] += 1
                listed = groups.setdefault(key["dataset"], [])
                if key["group_id"] not in listed:
                    listed.append(key["group_id"])
        groups["__sizes__"] = [f"{g}={n}" for g, n in items.items()]
        return groups
    finally:
        await client.close()


async def test_rotation_is_stratified_whole_and_board_separated(
    servers: Servers, stack: ServiceStack, bank: list[dict[str, object]]
) -> None:
    upload = await rotate(stack, "c1", groups_per_dataset=10)
    api = await rotate(stack, "c1", board=taskpool_pb2.BOARD_API, groups_per_dataset=10)
    assert api.pool.pool_id == "llm-api-c1" and api.pool.board == taskpool_pb2.BOARD_API
    assert upload.pool.pool_id == "llm-upload-c1" and upload.pool.current
    assert upload.pool.group_count == 30 and not upload.shortfalls
    up_groups = await pool_groups(servers, stack, "llm-upload-c1")
    api_groups = await pool_groups(servers, stack, "llm-api-c1")
    expected_size = Counter(str(r["group_id"]) for r in bank)
    for entry in up_groups.pop("__sizes__"):
        group, n = entry.rsplit("=", 1)
        assert int(n) == expected_size[group], f"group {group} not whole"
    api_groups.pop("__sizes__")
    for dataset, groups in up_groups.items():
        assert len(groups) == 10
        assert all(board_of(g) == "upload" for g in groups)
        assert not set(groups) & set(api_groups[dataset])
    medexam = {str(r["group_id"]): r["specialties"][0] for r in bank if r["dataset"] == "MedExam"}
    assert len({medexam[g] for g in up_groups["MedExam"]}) >= 8, "spread over specialties"
    # Idempotent per (track, board, cycle); other parameters for the same cycle are refused.
    again = await rotate(stack, "c1", groups_per_dataset=10)
    assert again.pool.digest == upload.pool.digest
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await rotate(stack, "c1", groups_per_dataset=11)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_next_cycle_carries_anchors_and_rests_exposed_groups(
    servers: Servers, stack: ServiceStack, bank: list[dict[str, object]]
) -> None:
    await rotate(stack, "e1", groups_per_dataset=10, exposure_cap=1, anchors_per_dataset=2, seed=99)
    second = await rotate(
        stack, "e2", groups_per_dataset=10, exposure_cap=1, anchors_per_dataset=2, seed=99
    )
    assert second.pool.anchor_groups == 6
    first_groups = await pool_groups(servers, stack, "llm-upload-e1")
    second_groups = await pool_groups(servers, stack, "llm-upload-e2")
    for dataset in ("MedExam", "DDx-advanced", "MedSafety"):
        # Two anchors come back; every other group served once rests (cap 1), same seed or not.
        assert len(set(second_groups[dataset]) & set(first_groups[dataset])) == 2
        assert len(second_groups[dataset]) == 10


async def test_same_bank_and_seed_give_the_same_pool_in_another_database(
    servers: Servers, stack: ServiceStack, bank: list[dict[str, object]], tmp_path: Path
) -> None:
    """Two fresh banks with the same content, imported in opposite orders, rotate alike."""
    digests = []
    for n, rows in enumerate((bank, list(reversed(bank)))):
        env = stack.env("rotator")
        alone = ServiceStack(
            tmp_path / str(n),
            servers.mongo_uri,
            f"{env['MEDBENCH_MONGO__DATABASE']}_r{n}",
            servers.kafka_bootstrap,
            env["MEDBENCH_KAFKA__TOPIC_PREFIX"],
            specs=[ServiceSpec("rotator", "rotator")],
        )
        alone.start(timeout_s=60)
        try:
            # Only a gateway installs the bootstrap maintainer key; this rotator runs alone on
            # its own database, so the key is put there as the gateway would.
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(servers.mongo_uri)
            try:
                await install_bootstrap_key(
                    client[alone.env("rotator")["MEDBENCH_MONGO__DATABASE"]], alone.admin_key
                )
            finally:
                await client.close()
            await import_rows(alone, [import_item(r) for r in rows])
            digests.append((await rotate(alone, "r1", seed=12345, groups_per_dataset=10)).pool)
        finally:
            alone.stop()
    assert digests[0].digest == digests[1].digest
    assert digests[0].item_count == digests[1].item_count > 0
    other_seed = await rotate(stack, "r2", seed=54321, groups_per_dataset=10)
    assert other_seed.pool.digest != digests[0].digest


async def test_import_rejects_bad_items_one_by_one_and_versions_changes(
    stack: ServiceStack,
) -> None:
    good = {
        "item_id": "MedExam-imp-1",
        "dataset": "MedExam",
        "question": "题目 A. x B. y",
        "answer_format": "choice_single",
        "reference": ["<B>"],
        "specialties": ["IM.CARD"],
    }
    bad = [
        ({**good, "item_id": "bad id"}, "task.item_id"),
        ({**good, "item_id": "x-2", "dataset": "NoSuchSet"}, "task.dataset"),
        ({**good, "item_id": "x-3", "question": ""}, "task.question"),
        ({**good, "item_id": "x-4", "reference": ["<B, C>"]}, "key.reference"),
        ({**good, "item_id": "x-5", "specialties": ["NOPE"]}, "task.specialties"),
        ({**good, "item_id": "x-6", "answer_format": "free_text"}, "task.answer_format"),
    ]
    items = [import_item(good, ref="f.jsonl:1")]
    items += [import_item(row, ref=f"f.jsonl:{n}") for n, (row, _) in enumerate(bad, 2)]
    response = await import_rows(stack, items)
    assert response.imported == 1
    assert [(r.ref, r.field) for r in response.rejected] == [
        (f"f.jsonl:{n}", field) for n, (_, field) in enumerate(bad, 2)
    ]
    assert all(r.reason for r in response.rejected)

    same = await import_rows(stack, [import_item(good)])
    assert (same.imported, same.unchanged, same.new_versions) == (0, 1, 0)
    changed = await import_rows(stack, [import_item({**good, "reference": ["C"]})])
    assert (changed.imported, changed.unchanged, changed.new_versions) == (0, 0, 1)


async def test_images_are_stored_once_and_unkeyed_items_stay_out_of_pools(
    stack: ServiceStack,
) -> None:
    row = {
        "item_id": "MedClass-img-1",
        "dataset": "MedClass",
        "track": "multimodal",
        "question": "这张CT图像最可能的诊断是 A. 肝癌 B. 肺癌 C. 无病变",
        "image_paths": ["img/ct1.png"],
    }
    item = import_item(row)
    item.images.append(taskpool_pb2.ImageBlob(path="img/ct1.png", content=PNG))
    first = await import_rows(stack, [item])
    assert first.images_stored == 1 and first.imported == 1, first
    second = await import_rows(stack, [item])
    assert second.images_stored == 0 and second.unchanged == 1
    listing = await stub(stack).ListDatasets(
        taskpool_service_pb2.ListDatasetsRequest(track=common_pb2.TRACK_MULTIMODAL)
    )
    medclass = next(d for d in listing.datasets if d.dataset == "MedClass")
    assert (medclass.bank_items, medclass.keyed_items) == (1, 0)
    assert len(listing.datasets) == 10
    stray = import_item({**row, "item_id": "MedClass-img-2"})
    stray.images.append(taskpool_pb2.ImageBlob(path="other.png", content=PNG))
    refused = await import_rows(stack, [stray])
    assert [r.field for r in refused.rejected] == ["images"]


async def test_get_pool_and_unknown_pool(
    stack: ServiceStack, bank: list[dict[str, object]]
) -> None:
    rotated = await rotate(stack, "g1", groups_per_dataset=5)
    got = await stub(stack).GetPool(taskpool_service_pb2.GetPoolRequest(pool_id="llm-upload-g1"))
    assert got.pool.digest == rotated.pool.digest and got.pool.current
    assert got.pool.method == "rotation" and got.pool.cycle == "g1"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub(stack).GetPool(taskpool_service_pb2.GetPoolRequest(pool_id="nope"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_every_shared_test_pool_file_imports_with_its_permutation_groups(
    servers: Servers, stack: ServiceStack, tmp_path: Path
) -> None:
    pool = shared_path("medbench-data", "medbench-v4-testpool")
    files = sorted(pool.glob("*/*.jsonl"))
    assert len(files) == 62
    done = await asyncio.to_thread(
        maintainer_cli, stack, "import-medbench", *map(str, files), "--allow-missing-images"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2340 rows" in done.stdout and "0 rejected" in done.stdout, done.stdout

    listing = await stub(stack).ListDatasets(taskpool_service_pb2.ListDatasetsRequest())
    counts = {d.dataset: (d.bank_items, d.keyed_items) for d in listing.datasets}
    permuted = {"MedExam", "MedSafety", "MedEthics"}
    for d in listing.datasets:
        if d.dataset in ("MedClass",):
            continue  # also holds an item of the image test
        shared = 150 if d.dataset in permuted else (210 if d.dataset == "MedRxCheck" else 30)
        assert counts[d.dataset][0] >= shared, d.dataset
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient = AsyncMongoClient(servers.mongo_uri)
    try:
        tasks = client[stack.env("rotator")["MEDBENCH_MONGO__DATABASE"]].tasks
        groups: Counter[str] = Counter()
        async for doc in tasks.find({"source": "MedExam_V4"}, {"group_id": 1}):
            groups[doc["group_id"]] += 1
        assert len(groups) == 30 and set(groups.values()) == {5}
    finally:
        await client.close()

    # A gold file keys the items; a pool built from them keeps the permutation groups whole.
    gold_dir = tmp_path / "gold"
    gold_dir.mkdir()
    source = pool / "llm" / "MedEthics.jsonl"
    lines = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines()]
    for line in lines:
        line["answer"] = "<A>"
    (gold_dir / "MedEthics.jsonl").write_text(
        "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8"
    )
    keyed = await asyncio.to_thread(
        maintainer_cli, stack, "import-medbench", str(source), "--gold-dir", str(gold_dir)
    )
    assert keyed.returncode == 0 and "150 new versions" in keyed.stdout, keyed.stdout
    rotated = await rotate(stack, "shared-1", datasets=("MedEthics",), groups_per_dataset=30)
    sizes = await pool_groups(servers, stack, "llm-upload-shared-1")
    ethics = [e for e in sizes["__sizes__"] if e.startswith("MedEthics")]
    assert ethics and all(e.endswith("=5") for e in ethics)
    assert rotated.pool.group_count == len(ethics)


async def test_csv_import_stores_real_images_from_an_images_folder(
    stack: ServiceStack, tmp_path: Path
) -> None:
    images = shared_path("medbench-data", "pneumoniamnist-test-sample", "images")
    names = sorted(p.name for p in images.glob("*.png"))[:4]
    rows = (
        ["id,prompt,answer,images"]
        + [
            f"MedClass-pn-{n},这张胸片最可能的诊断是 A. 正常 B. 肺炎 C. 气胸,<A>,{name}"
            for n, name in enumerate(names)
        ]
        + ["MedClass-pn-missing,这张胸片最可能的诊断是 A. 正常 B. 肺炎,<B>,no-such.png"]
    )
    (tmp_path / "bank.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    spec = "item_id=id,question=prompt,reference=answer,image_paths=images,dataset=:MedClass"
    args = ("import-csv", str(tmp_path / "bank.csv"), "--map", spec, "--images-dir", str(images))
    done = await asyncio.to_thread(maintainer_cli, stack, *args)
    assert done.returncode == 1, "the missing image is reported"
    assert "4 imported" in done.stdout and "4 images stored" in done.stdout, done.stdout
    assert "bank.csv:6: img_path: image no-such.png not found" in done.stdout, done.stdout
    again = await asyncio.to_thread(maintainer_cli, stack, *args)
    assert "4 unchanged" in again.stdout and "0 images stored" in again.stdout, again.stdout
