"""Upload mode as a partner holding the platform's own files works it, on all three tracks, with
the CLI alone: the MedBench v4 test-pool files (synthetic keys for the test) pooled, downloaded
in the platform's format (images included), answered, checked line by line, uploaded, scored.

Images: the v4 files name images that are not public, so each multimodal line's img_path is
served with a real public image of the same kind (SAM-Med2D CT slices for MedDetect, with boxes
from their masks; PneumoniaMNIST chest X-rays for MedClass)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from medbench.common.v1 import common_pb2
from medbench.taskpool.v1 import taskpool_pb2, taskpool_service_pb2, taskpool_service_pb2_grpc
from medbench_client.answer_files import MAX_ANSWER_BYTES
from medbench_client.bank_files import import_item
from medbench_client.importers import read_medbench_pool
from medbench_devstack.answers import translate
from medbench_devstack.services import ServiceStack
from tests.e2e.harness import admin_channel, partner_key, watermarked_copy
from tests.e2e.test_partner_cli import Cli
from tests.shared_data import shared_path

pytestmark = [pytest.mark.e2e]

TRACKS = {
    "llm": ("llm/MedExam.jsonl", "llm/DDx-advanced.jsonl"),
    "multimodal": ("vlm/MedDetect.jsonl", "vlm/MedClass.jsonl"),
    "agent": ("agent/MedIntentID.jsonl",),
}
TRACK_ENUM = {
    "llm": common_pb2.TRACK_LLM,
    "multimodal": common_pb2.TRACK_MULTIMODAL,
    "agent": common_pb2.TRACK_AGENT,
}
_OPTION = re.compile(r"^([A-J])[.．、]", re.MULTILINE)
_CANDIDATES = re.compile(r"候选诊断[:：]\s*(.+)")


def _digest(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest(), 16)


class Bank:
    """The v4 files of a track as bank rows with synthetic keys, and the right answer of each."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.images: dict[str, tuple[bytes, str]] = {}  # v4 path -> (bytes, media type)
        self.answer: dict[str, str] = {}  # item id -> a right answer, canonical option order
        self.question: dict[str, str] = {}
        root = shared_path("medbench-data")
        sam = root / "sam-med2d-demo-masks"
        self._boxes = [
            json.loads(x) for x in (sam / "boxes_from_masks.jsonl").read_text().splitlines()
        ]
        self._sam = sam
        self._xrays = sorted((root / "pneumoniamnist-test-sample" / "images").glob("*.png"))[:8]

    def add(self, track: str, file: Path) -> None:
        result = read_medbench_pool(file)
        assert not result.errors, result.errors[:3]
        for n, row in enumerate(result.rows):
            dataset = row.source.removesuffix("_V4")
            item: dict[str, Any] = {
                "item_id": row.item_id,
                "source": row.source,
                "group_id": row.group_id,
                "question": row.question,
                "image_paths": list(row.image_paths),
                "track": track,
            }
            reference, answer = self._key(dataset, row.item_id, row.question, n, row.image_paths)
            item["reference"] = reference
            self.rows.append(item)
            self.answer[row.item_id] = answer
            self.question[row.item_id] = row.question

    def _key(
        self, dataset: str, item_id: str, question: str, n: int, images: tuple[str, ...]
    ) -> tuple[list[str], str]:
        h = _digest(item_id)
        if dataset in ("MedExam", "DDx-advanced"):
            letters = _OPTION.findall(question)
            assert len(letters) >= 4, item_id
            if dataset == "MedExam":
                key = [letters[h % len(letters)]]
            else:
                key = sorted({letters[h % len(letters)], letters[(h // 7) % len(letters)]})
            return key, "<" + ", ".join(key) + ">"
        if dataset == "MedDetect":
            box = self._boxes[n % len(self._boxes)]
            self.images[images[0]] = ((self._sam / box["image"]).read_bytes(), "image/png")
            scale = [round(c * 1000 / box["width"]) for c in box["bbox_xyxy"]]
            key = json.dumps([{"类别": [box["label"]], "边界框": scale}], ensure_ascii=False)
            # The perfect answer with its keys in another order and the class as a string.
            answer = json.dumps([{"边界框": scale, "类别": box["label"]}], ensure_ascii=False)
            return [key], f"```json\n{answer}\n```"
        if dataset == "MedClass":
            xray = self._xrays[n % len(self._xrays)]
            self.images[images[0]] = (xray.read_bytes(), "image/png")
            found = _CANDIDATES.search(question)
            assert found, item_id
            labels = re.split(r"[、，,]", found[1].strip())
            label = labels[h % len(labels)].strip()
            return [label], label
        assert dataset == "MedIntentID", dataset
        label = ["费用争议投诉", "诊疗质量投诉", "服务态度投诉", "预约挂号咨询"][h % 4]
        return [label], label


@pytest.fixture(scope="module")
async def bank(stack: ServiceStack) -> Bank:
    bank = Bank()
    pool = shared_path("medbench-data", "medbench-v4-testpool")
    for track, files in TRACKS.items():
        for name in files:
            bank.add(track, pool / name)
    stub = taskpool_service_pb2_grpc.TaskPoolServiceStub(admin_channel(stack, "rotator"))
    items = []
    for row in bank.rows:
        item = import_item(row, track=row["track"])
        for path in row["image_paths"]:
            data, media = bank.images[path]
            item.images.append(taskpool_pb2.ImageBlob(path=path, content=data, media_type=media))
        items.append(item)

    async def messages():  # type: ignore[no-untyped-def]
        for start in range(0, len(items), 200):
            yield taskpool_service_pb2.ImportTasksRequest(items=items[start : start + 200])

    done = await stub.ImportTasks(messages())
    assert done.imported == len(items) and not done.rejected, done
    for track in TRACKS:
        await stub.PublishPool(
            taskpool_service_pb2.PublishPoolRequest(
                pool_id=f"formats-{track}", track=TRACK_ENUM[track], board=taskpool_pb2.BOARD_UPLOAD
            )
        )
    return bank


def answered(bank: Bank, line: dict[str, Any]) -> str:
    """A right answer to a downloaded line (in the option order this tenant was shown, which a
    canary's key follows too); an unknown line gets an answer as a model would give one."""
    item_id = line["other"]["id"]
    if item_id not in bank.answer:
        return "<A>"
    return translate(bank.answer[item_id], bank.question[item_id], line["question"])


@pytest.mark.parametrize("track", sorted(TRACKS))
async def test_a_partner_does_a_track_in_the_platforms_format(
    stack: ServiceStack, bank: Bank, tmp_path: Path, track: str
) -> None:
    cli = Cli(tmp_path, MEDBENCH_GATEWAY=stack.address("gateway"))
    cli.env["MEDBENCH_API_KEY"] = partner_key(stack, f"formats-{track}")
    sid = (await cli.ok("submit", "--model", f"m-{track}", "--track", track))["submission_id"]
    folder = tmp_path / "download"
    got = await cli.ok("download", sid, "--format", "medbench", "--out", str(folder))
    datasets = {Path(n).stem for n in TRACKS[track]}
    assert set(got["files"]) == {f"{d}.jsonl" for d in datasets}
    assert sum(got["files"].values()) == got["items"] > 0

    # Images: every img_path of every line is a file beside the dataset files: the tenant's
    # watermarked copy of the bank's image.
    lines: dict[str, list[dict[str, Any]]] = {
        name: [json.loads(x) for x in (folder / name).read_text(encoding="utf-8").splitlines()]
        for name in got["files"]
    }
    with_images = [line for rows in lines.values() for line in rows if line.get("img_path")]
    assert bool(with_images) is (track == "multimodal")
    served_paths = {p for line in with_images for p in line["img_path"]}
    for path in served_paths:
        original = bank.images[path.removeprefix("images/")][0]
        assert watermarked_copy(original, (folder / path).read_bytes()), path

    # Answer every line in the dataset files, as a partner would, and upload the folder with a
    # file of bad lines beside it: nothing is sent while a line is invalid.
    for name, rows in lines.items():
        for line in rows:
            line["answer"] = answered(bank, line)
        (folder / name).write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
        )
    first_name = sorted(lines)[0]
    first_id = lines[first_name][0]["other"]["id"]
    bad = tmp_path / "extra.jsonl"
    bad.write_text(
        "\n".join(
            [
                json.dumps({"item_id": "MedExam-999-p1", "answer": "<A>"}),
                json.dumps({"item_id": first_id, "answer": "x" * (MAX_ANSWER_BYTES + 1)}),
                "{broken",
                json.dumps({"item_id": first_id, "answer": "<B>"}),
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    refused = await cli.run("upload", sid, str(folder), str(bad))
    assert refused.returncode == 2, refused.stderr
    assert "4 invalid" in refused.stderr and "nothing was sent" in refused.stderr
    problems = (folder / "medbench-problems.txt").read_text(encoding="utf-8")
    for n, reason in [
        (1, "item 'MedExam-999-p1' is not served in this submission"),
        (2, f"at most {MAX_ANSWER_BYTES}"),
        (3, "not valid JSON"),
        (4, f"is answered twice (first at {folder / first_name}:1)"),
    ]:
        assert f"{bad}:{n}: " in problems and reason in problems, (n, problems)
    assert (await cli.ok("status", sid))["progress"]["answered_items"] == 0

    done = await cli.ok("upload", sid, str(folder), str(bad), "--skip-invalid")
    total = sum(len(rows) for rows in lines.values())
    assert done["check"]["valid"] == done["accepted_answers"] == total
    assert done["check"]["invalid_lines"] == 4 and done["check"]["read_lines"] == total + 4
    assert done["progress"]["answered_items"] == done["progress"]["expected_items"] == total

    watched = await cli.run("watch", sid, "--json")
    assert watched.returncode == 0, watched.stderr
    report = await cli.ok("report", sid, "--out", str(tmp_path / "report"))
    doc = json.loads(Path(report["files"]["report.json"]).read_text("utf-8"))  # noqa: ASYNC240
    scores = {d["code"]: d["score"] for d in doc["datasets"]}
    assert set(scores) == datasets
    # Every answer is right (boxes in another key order, options in this tenant's order).
    assert all(s == pytest.approx(100.0) for s in scores.values()), scores
    # The pool holds a few of the track's datasets: the report says so, naming the others.
    assert doc["partial"] is True and not set(doc["missing_datasets"]) & datasets
    assert (
        len(doc["missing_datasets"]) + len(datasets)
        == {"llm": 36, "multimodal": 10, "agent": 14}[track]
    )
