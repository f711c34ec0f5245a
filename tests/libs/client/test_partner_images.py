"""`medbench images` / download_images against the gateway's own DownloadImages servicer and use
case (over in-memory fakes of its ports) in an in-process gRPC server: files where the prompts
name them, sha256-checked, kept on a re-run, resumed by offset after a cut, and no write outside
the destination folder."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from gateway.core.submission import MODE_API, MODE_UPLOAD
from gateway.entrypoints import grpc_servicer
from gateway.entrypoints.grpc_servicer import SubmissionServicer
from gateway.usecases.images import Images
from medbench.submission.v1 import submission_service_pb2, submission_service_pb2_grpc
from medbench_client import partner_cli
from medbench_client.cli_config import Settings
from medbench_client.partner_cli import images as cli_images
from medbench_client.partner_cli import session
from medbench_client.partner_cli.images import PART_SUFFIX, download_images
from medbench_runtime.errors import MedbenchError
from medbench_runtime.interceptors import status_for
from tests.libs.client.test_partner_cli_unit import KEY_A
from tests.services.gateway.fakes import FakePoolImages, InMemorySubmissionStore

PNG = b"\x89PNG\r\n\x1a\n"


def blob(n: int, seed: int) -> bytes:
    body = hashlib.sha256(str(seed).encode()).digest() * (n // 32 + 1)
    return (PNG + body)[:n]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


A, B, C = blob(95, 1), blob(240, 2), blob(33, 3)
BANK = {sha(x): (x, "image/png") for x in (A, B, C)}
SERVED = [
    ("MedClass-1", ["MedClass/a.png", "MedClass/b.png"], [sha(A), sha(B)]),
    ("MedClass-2", ["MedClass/copy/a.png"], [sha(A)]),  # the same bytes under another path
    ("MedDetect-1", ["MedDetect/c.png"], [sha(C)]),
]
FILES = {"MedClass/a.png": A, "MedClass/b.png": B, "MedClass/copy/a.png": A, "MedDetect/c.png": C}


class Gateway(SubmissionServicer):
    """The gateway's servicer for DownloadImages, with the error mapping its interceptor does;
    records every request."""

    def __init__(self, images: Images) -> None:
        super().__init__(None, images)  # type: ignore[arg-type] - no other RPC is called
        self.requests: list[submission_service_pb2.DownloadImagesRequest] = []

    async def DownloadImages(self, request: Any, context: Any) -> AsyncIterator[Any]:  # noqa: N802
        self.requests.append(request)
        try:
            async for message in super().DownloadImages(request, context):
                yield message
        except MedbenchError as exc:
            await context.abort(status_for(exc), str(exc))


class World:
    def __init__(self, served: list[tuple[str, list[str], list[str]]] = SERVED) -> None:
        self.store = InMemorySubmissionStore()
        for sid, mode in (("sub-up", MODE_UPLOAD), ("sub-api", MODE_API)):
            self.store.records[("t", sid)] = {"_id": sid, "tenant_id": "t", "mode": mode}
        self.pool = FakePoolImages(dict(BANK), {"sub-up": served})
        self.gateway = Gateway(Images(self.store, self.pool, chunk_bytes=16))
        self.address = ""


@asynccontextmanager
async def serving(world: World) -> AsyncIterator[World]:
    """world's gateway on a loopback port."""
    server = grpc.aio.server()
    submission_service_pb2_grpc.add_SubmissionServiceServicer_to_server(world.gateway, server)
    world.address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    await server.start()
    try:
        yield world
    finally:
        await server.stop(None)


@pytest.fixture(autouse=True)
def _one_tenant_and_short_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grpc_servicer, "tenant_of", lambda context: "t")
    monkeypatch.setattr(session, "BACKOFF_BASE_S", 0.001)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async with serving(World()) as w:
        yield w


def partner(world: World) -> session.Session:
    return session.Session(Settings(world.address, KEY_A, "default", Path("x")))


async def fetch(world: World, dest: Path, retries: int = 8) -> cli_images.ImagesResult:
    s = partner(world)
    try:
        return await download_images(s, "sub-up", dest, retries=retries)
    finally:
        await s.close()


def written(dest: Path) -> dict[str, bytes]:
    return {
        p.relative_to(dest).as_posix(): p.read_bytes()
        for p in sorted(dest.rglob("*"))
        if p.is_file()
    }


def part_of(dest: Path, path: str, content: bytes) -> Path:
    target = dest / path
    return target.with_name(f".{target.name}.{sha(content)[:16]}{PART_SUFFIX}")


async def test_images_land_where_the_prompts_name_them_and_a_rerun_fetches_nothing(
    world: World, tmp_path: Path
) -> None:
    dest = tmp_path / "images"
    first = await fetch(world, dest)
    assert written(dest) == FILES  # no part or temp file left behind
    counts = (first.images, first.files, first.downloaded, first.kept, first.resumed)
    assert counts == (3, 4, 3, 0, 0)
    assert first.bytes == len(A) + len(B) + len(C) and first.problems == []
    # The listing, then one call naming the three images (A once, for its two paths).
    assert [r.info_only for r in world.gateway.requests] == [True, False]
    assert list(world.gateway.requests[1].image_ids) == [sha(A), sha(B), sha(C)]
    again = await fetch(world, dest)
    assert (again.downloaded, again.kept, again.bytes) == (0, 3, 0)
    assert [r.info_only for r in world.gateway.requests[2:]] == [True]
    # A file lost at one of A's paths is copied from the other; a damaged one is fetched.
    (dest / "MedClass/copy/a.png").unlink()
    (dest / "MedDetect/c.png").write_bytes(C[:-1] + b"?")
    third = await fetch(world, dest)
    assert (third.copied, third.downloaded, third.bytes) == (1, 1, len(C))
    assert written(dest) == FILES


async def test_a_cut_run_is_resumed_at_the_offset_of_its_part_file(
    world: World, tmp_path: Path
) -> None:
    dest = tmp_path / "images"
    # The rotator goes away after 9 range reads: 6 for A (95 bytes in runs of 16), 3 of B's 15.
    world.pool.fail_after = 9
    with pytest.raises(grpc.aio.AioRpcError) as cut:
        await fetch(world, dest, retries=2)
    assert cut.value.code() == grpc.StatusCode.UNAVAILABLE
    assert part_of(dest, "MedClass/b.png", B).read_bytes() == B[:48]
    assert (dest / "MedClass/a.png").read_bytes() == A
    # The next run asks for B first, from byte 48, and gets the rest only.
    world.pool.fail_after = None
    done = await fetch(world, dest)
    resumed = world.gateway.requests[-1]
    assert (list(resumed.image_ids)[0], resumed.offset) == (sha(B), 48)
    assert (done.downloaded, done.resumed, done.kept) == (2, 1, 1)
    assert done.bytes == len(B) - 48 + len(C)
    assert written(dest) == FILES


async def test_within_one_run_an_outage_is_retried_from_where_it_stopped(
    world: World, tmp_path: Path
) -> None:
    # Range reads fail: the 2nd (A's second run), the 8th (B's first, before its header: nothing
    # of it to resume) and the 17th (B's ninth run). A takes 6 reads, B 15.
    world.pool.fail_attempts = {2, 8, 17}
    dest = tmp_path / "images"
    done = await fetch(world, dest)
    assert written(dest) == FILES
    assert done.bytes == len(A) + len(B) + len(C)  # no byte fetched twice
    assert (done.downloaded, done.resumed) == (3, 2)
    assert [r.offset for r in world.gateway.requests if r.offset] == [16, 128]


async def test_a_part_file_that_does_not_match_is_started_over(
    world: World, tmp_path: Path
) -> None:
    dest = tmp_path / "images"
    part = part_of(dest, "MedClass/b.png", B)
    part.parent.mkdir(parents=True)
    part.write_bytes(b"X" * 50)  # not B's first bytes: the whole image fails its sha256
    done = await fetch(world, dest)
    assert written(dest) == FILES
    assert done.bytes == len(A) + (len(B) - 50) + len(B) + len(C)


async def test_paths_outside_the_folder_are_never_written(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "images"
    dest.mkdir()
    (dest / "link").symlink_to(outside, target_is_directory=True)
    served = [
        ("evil-1", ["../escape.png"], [sha(A)]),
        ("evil-2", ["/etc/abs.png"], [sha(A)]),
        ("evil-3", ["link/through-symlink.png"], [sha(A)]),
        ("evil-4", ["ok/../../up.png"], [sha(A)]),
        ("clash-1", ["same.png"], [sha(B)]),
        ("clash-2", ["same.png"], [sha(C)]),
        ("fine", ["fine/a.png"], [sha(A)]),
    ]
    async with serving(World(served)) as w:
        done = await fetch(w, dest)
    assert list(outside.iterdir()) == [] and not (tmp_path / "escape.png").exists()
    assert not (tmp_path / "up.png").exists()
    assert written(dest) == {"fine/a.png": A}
    refused = sorted(p.split(":")[0] for p in done.problems)
    assert refused == ["clash-2", "evil-1", "evil-2", "evil-3", "evil-4"]
    assert "written by neither" in done.problems[-1]
    assert done.downloaded == 1  # B and C have no path left: not fetched


async def test_the_images_command_prints_one_json_document_and_refusals_keep_their_codes(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--gateway", world.address, "--key", KEY_A]

    def parse(*argv: str) -> Any:
        return partner_cli.build_parser().parse_args([*base, *argv])

    assert await partner_cli.run(parse("images", "sub-up", "--out", str(tmp_path), "--json")) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 1
    assert json.loads(out)["downloaded"] == 3 and written(tmp_path) == FILES
    for sid, code, exit_code in (
        ("sub-api", grpc.StatusCode.FAILED_PRECONDITION, 4),
        ("nope", grpc.StatusCode.NOT_FOUND, 3),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await partner_cli.run(parse("images", sid, "--out", str(tmp_path / "x")))
        assert refused.value.code() == code
        assert partner_cli.exit_code_for(code) == exit_code
