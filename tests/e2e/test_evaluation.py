"""One real evaluation end to end through the six services, Kafka and the Mongo-wire server."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import pytest
from pymongo import AsyncMongoClient

from medbench.common.v1 import common_pb2
from medbench.submission.v1 import submission_pb2, submission_service_pb2
from medbench_client.api import channel
from medbench_client.bank_files import answers_by_item, read_jsonl
from medbench_devstack.services import ServiceStack
from medbench_runtime.bearer import authorized_channel
from medbench_runtime.checksums import answers_sha256
from medbench_runtime.introspection import REFLECTION_V1ALPHA
from rotator.core.options import parse_options
from tests.conftest import Servers
from tests.e2e.harness import Evaluation, eventually, load_pool, partner_client
from tests.reference_scoring import score_in_process

pytestmark = [pytest.mark.e2e]

BANK = Path(__file__).resolve().parents[2] / "services/rotator/src/rotator/sample_bank"
ROWS = list(read_jsonl(BANK / "items.jsonl"))
BASELINE = answers_by_item(read_jsonl(BANK / "baseline_answers.jsonl"))
QUESTIONS = {r["item_id"]: r["question"] for r in ROWS}


def expected_report() -> dict[str, object]:
    """The report computed in-process with the same metric and aggregation code."""
    report = score_in_process(ROWS, BASELINE)
    return {
        "overall": report.overall,
        "datasets": {d.dataset: (d.score, d.n_items, d.n_units) for d in report.datasets},
        "dimensions": {d.dimension: d.score for d in report.dimensions},
    }


@pytest.fixture(scope="module")
async def pool(stack: ServiceStack) -> str:
    await load_pool(stack, ROWS, "sample-pool-1")
    return "sample-pool-1"


@pytest.fixture(scope="module")
async def completed(stack: ServiceStack, pool: str) -> Evaluation:
    evaluation = Evaluation(
        stack, "hospital-a", "baseline-run", BASELINE, batch_size=25, questions=QUESTIONS
    )
    await evaluation.create()
    for batch in evaluation.batches(await evaluation.prompts()):
        await evaluation.upload_batch(batch)
    evaluation.report = await evaluation.wait_completed()
    return evaluation


async def test_sample_evaluation_reports_the_in_process_scores(completed: Evaluation) -> None:
    report = completed.report
    expected = expected_report()
    assert report.scored_items == len(ROWS)
    assert report.overall == pytest.approx(expected["overall"], abs=1e-9)
    # Same code, same inputs: the numbers must be equal, not merely close.
    assert {d.dataset: (d.score, d.items, d.units) for d in report.datasets} == expected["datasets"]
    assert {d.dimension: d.score for d in report.dimensions} == expected["dimensions"]
    assert 0 < report.overall < 100, "the baseline has right and wrong answers"
    assert report.lineage.pool_id == "sample-pool-1"
    assert len(report.lineage.item_scores_digest) == 64


async def test_create_is_idempotent_per_tenant_and_request_id(
    stack: ServiceStack, completed: Evaluation
) -> None:
    again = await completed.partner().create("baseline-run", "e2e-model")
    assert not again.created
    assert again.submission.submission_id == completed.submission_id
    code, details = await code_of(completed.partner().create("baseline-run", "another-model"))
    assert code == grpc.StatusCode.ALREADY_EXISTS and "baseline-run" in details
    other = partner_client(stack, "hospital-b")
    theirs = await other.create("baseline-run", "e2e-model")
    assert theirs.created and theirs.submission.submission_id != completed.submission_id


async def code_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call  # type: ignore[misc]
    return err.value.code(), err.value.details()


async def test_unknown_and_foreign_submissions_are_not_found(
    stack: ServiceStack, completed: Evaluation
) -> None:
    partner = completed.partner()
    code, details = await code_of(partner.get("sub_doesnotexist"))
    assert code == grpc.StatusCode.NOT_FOUND and "sub_doesnotexist" in details
    stranger = partner_client(stack, "hospital-z")
    for call in (
        stranger.get(completed.submission_id),
        stranger.report(completed.submission_id),
        stranger.prompts(completed.submission_id),
    ):
        code, _ = await code_of(call)
        assert code == grpc.StatusCode.NOT_FOUND


async def test_upload_after_completion_is_failed_precondition(completed: Evaluation) -> None:
    code, details = await code_of(
        completed.partner().upload(
            completed.submission_id, [("late", [(ROWS[0]["item_id"], "<A>")], False)]
        )
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "COMPLETED" in details


async def test_missing_credentials_are_unauthenticated(stack: ServiceStack) -> None:
    from medbench.submission.v1 import submission_service_pb2, submission_service_pb2_grpc

    stub = submission_service_pb2_grpc.SubmissionServiceStub(channel(stack.address("gateway")))
    code, details = await code_of(
        stub.GetSubmission(submission_service_pb2.GetSubmissionRequest(submission_id="x"))
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED and "authorization: Bearer" in details


async def test_bad_uploads_are_rejected_and_lose_nothing_accepted(
    stack: ServiceStack, pool: str
) -> None:
    evaluation = Evaluation(stack, "hospital-c", "bad-input-run", BASELINE)
    sid = await evaluation.create()
    partner = evaluation.partner()
    known = {r["item_id"] for r in ROWS}
    ids = [p.item_id for p in await evaluation.prompts() if p.item_id in known]
    first = await partner.upload(sid, [("ok-1", [(ids[0], "<A>"), (ids[1], "<B>")], False)])
    assert first.accepted_answers == 2

    cases = {
        "unknown item": ("bad-1", [(ids[2], "<A>"), ("no-such-item", "<A>")], "no-such-item"),
        "twice in one message": ("bad-2", [(ids[3], "<A>"), (ids[3], "<B>")], "twice"),
        "twice across batches": ("bad-3", [(ids[4], "<A>"), (ids[0], "<C>")], "already answered"),
        "oversize answer": ("bad-4", [(ids[5], "x" * (32 * 1024 + 1))], "bytes"),
        "batch id reused": ("ok-1", [(ids[6], "<A>")], "already used"),
        "malformed batch id": ("bad id!", [(ids[7], "<A>")], "batch_id"),
    }
    for name, (batch_id, answers, phrase) in cases.items():
        code, details = await code_of(partner.upload(sid, [(batch_id, answers, False)]))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, name
        assert phrase in details, (name, details)

    # A batch damaged on its way (its checksum no longer matches) is refused whole.
    damaged = submission_service_pb2.UploadAnswersRequest(
        submission_id=sid,
        batch_id="damaged",
        answers=[submission_pb2.Answer(item_id=ids[9], answer="<B>")],
        answers_sha256=answers_sha256([(ids[9], "<A>")]),
    )
    code, details = await code_of(partner._stub.UploadAnswers(iter([damaged])))  # noqa: SLF001
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "answers_sha256" in details
    # String fields of a submission are limited, each refusal naming its field.
    for field, value in [
        ("organisation", "医" * 201),
        ("version", "v" * 101),
        ("parameter_count", "7B\n"),
    ]:
        request = submission_service_pb2.CreateSubmissionRequest(
            request_id=f"long-{field}",
            model=submission_pb2.ModelInfo(name="m", **{field: value}),
            track=common_pb2.TRACK_LLM,
            mode=common_pb2.SUBMISSION_MODE_UPLOAD,
        )
        code, details = await code_of(partner._stub.CreateSubmission(request))  # noqa: SLF001
        assert code == grpc.StatusCode.INVALID_ARGUMENT and f"model.{field}" in details

    # A resend of an accepted batch is acknowledged and changes nothing.
    replay = await partner.upload(sid, [("ok-1", [(ids[0], "<A>"), (ids[1], "<B>")], False)])
    assert replay.replayed_batches == 1 and replay.accepted_answers == 0
    sub = await partner.get(sid)
    assert sub.progress.answered_items == 2
    assert sub.state == submission_pb2.SUBMISSION_STATE_AWAITING_ANSWERS

    code, _ = await code_of(partner.report(sid))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    code, details = await code_of(
        partner.create("api-run", "m", mode=common_pb2.SUBMISSION_MODE_API)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "endpoint is required" in details
    code, details = await code_of(partner.create("no-track", "m", track=0))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "track" in details

    # final=true closes the upload: unanswered items score 0 and the report arrives.
    await partner.upload(sid, [("last", [(ids[8], "<A>")], True)])
    report = await evaluation.wait_completed()
    assert report.scored_items == len(ROWS)


SEALED_FIELDS = {"reference", "references", "key_points", "rubric", "answer_key"}


def field_names(descriptor: object, seen: set[str] | None = None) -> set[str]:
    """Every field name reachable from a message type."""
    seen = set() if seen is None else seen
    names: set[str] = set()
    if descriptor.full_name in seen:  # type: ignore[attr-defined]
        return names
    seen.add(descriptor.full_name)  # type: ignore[attr-defined]
    for f in descriptor.fields:  # type: ignore[attr-defined]
        names.add(f.name)
        if f.message_type is not None:
            names |= field_names(f.message_type, seen)
    return names


def test_partner_facing_messages_have_no_sealed_fields() -> None:
    from medbench.submission.v1 import submission_events_pb2, submission_service_pb2

    service = submission_service_pb2.DESCRIPTOR.services_by_name["SubmissionService"]
    types = [m.output_type for m in service.methods]
    types += [
        submission_events_pb2.SubmissionCreated.DESCRIPTOR,
        submission_events_pb2.SubmissionCompleted.DESCRIPTOR,
    ]
    for t in types:
        assert not field_names(t) & SEALED_FIELDS, t.full_name


async def test_references_stay_in_the_sealed_database(
    servers: Servers, stack: ServiceStack, completed: Evaluation
) -> None:
    """The database the gateway reaches holds no reference answers; the sealed one does."""
    db_name = stack.env("gateway")["MEDBENCH_MONGO__DATABASE"]
    client: AsyncMongoClient = AsyncMongoClient(servers.mongo_uri)
    try:
        db = client[db_name]
        for name in await db.list_collection_names():
            async for doc in db[name].find({}):
                assert not SEALED_FIELDS & set(doc), (name, doc["_id"])
                lists = [doc.get(k) for k in ("keys", "items")]
                for nested in [n for v in lists if isinstance(v, list) for n in v]:
                    if isinstance(nested, dict):
                        assert not SEALED_FIELDS & set(nested), (name, doc["_id"])
        sealed = client[f"{db_name}_sealed"]
        assert await sealed.references.count_documents({}) == len(ROWS)
    finally:
        await client.close()


async def test_prompts_carry_the_question_but_not_the_answer(completed: Evaluation) -> None:
    prompts = await completed.prompts()
    by_id = {r["item_id"]: r for r in ROWS}
    real = [p for p in prompts if p.item_id in by_id]
    # Every shown item is a pool item (a download's canaries are pool items shown altered).
    assert len(real) == len(prompts) == len(ROWS)
    reordered = 0
    for p in real:
        row = by_id[p.item_id]
        shown, canonical = parse_options(p.question), parse_options(row["question"])
        assert shown is not None and canonical is not None
        # Same stem and options, in this tenant's own order.
        assert shown.prefix == canonical.prefix and sorted(shown.texts) == sorted(canonical.texts)
        reordered += shown.texts != canonical.texts
        assert p.answer_format == row["answer_format"]
        assert set(p.DESCRIPTOR.fields_by_name) == {
            "item_id",
            "dataset",
            "question",
            "image_paths",
            "answer_format",
            "messages",
        }
    assert reordered == len(real)


async def test_watch_streams_until_completed(completed: Evaluation) -> None:
    states = [w.submission.state async for w in completed.partner().watch(completed.submission_id)]
    assert states[-1] == submission_pb2.SUBMISSION_STATE_COMPLETED
    await eventually(lambda: completed.partner().get(completed.submission_id), 5, "get")


async def test_every_service_serves_reflection_and_prometheus_metrics(
    stack: ServiceStack, completed: Evaluation
) -> None:
    async def services_of(name: str) -> set[str]:
        # The gateway's reflection is open; the internal services' needs the service token.
        token = None if name == "gateway" else stack.service_token
        api = REFLECTION_V1ALPHA
        async with authorized_channel(stack.address(name), token) as chan:
            call = api.stub(chan)(iter([api.request(list_services="")]), timeout=10)
            return {s.name async for r in call for s in r.list_services_response.service}

    await code_of(completed.partner().get("sub_missing"))  # leaves a NOT_FOUND in the counters
    assert "medbench.submission.v1.SubmissionService" in await services_of("gateway")
    assert "medbench.taskpool.v1.TaskPoolService" in await services_of("rotator")
    assert "medbench.report.v1.ReportService" in await services_of("aggregator")
    for name in stack.names:
        assert "grpc.health.v1.Health" in await services_of(name)
        assert "medbench_" in stack.scrape(name), name
    gateway = stack.scrape("gateway")
    assert (
        'medbench_grpc_server_handled_total{code="OK",medbench_service="gateway",'
        'method="/medbench.submission.v1.SubmissionService/UploadAnswers"}' in gateway
    )
    assert (
        'medbench_grpc_tenant_calls_total{code="OK",medbench_service="gateway",'
        'tenant="hospital-a"}' in gateway
    )
    # Bounded series: no tenant on the per-method counter, no `_created` series.
    assert 'medbench_grpc_server_handled_total{code="OK",medbench_service="gateway",' in gateway
    assert not re.search(r"^\w+_created[{ ]", gateway, re.M)
    assert 'code="NOT_FOUND"' in gateway
    assert 'medbench_submissions_created_total{mode="upload",tenant="hospital-a",track="llm"}' in (
        gateway
    )
    assert 'medbench_submissions_finished_total{state="COMPLETED",tenant="hospital-a"}' in gateway
    assert f'medbench_answers_uploaded_total{{tenant="hospital-a"}} {len(ROWS)}.0' in gateway


async def test_no_counter_tells_a_canary_from_a_scored_item(stack: ServiceStack, pool: str) -> None:
    """Answers sent one per batch: every one moves the counters alike, nothing is scored until
    every shown item is in, the last batch (whatever it holds) is accepted, and every shown
    item (the canaries among them) is scored."""
    probe = Evaluation(stack, "hospital-probe", "probe-run", BASELINE, questions=QUESTIONS)
    await probe.create()
    prompts = await probe.prompts()
    assert len(prompts) == len(ROWS)  # the download's canaries are among them, in place
    partner = probe.partner()
    steps = []
    for n, (_, answers, _) in enumerate(probe.batches(prompts), start=1):
        for k, answer in enumerate(answers):
            reply = await partner.upload(probe.submission_id, [(f"one-{n}-{k}", [answer], False)])
            steps.append(
                (reply.accepted_answers, reply.progress.answered_items, reply.progress.scored_items)
            )
    assert [s[0] for s in steps] == [1] * len(prompts)
    assert [s[1] for s in steps] == list(range(1, len(prompts) + 1))
    assert {s[2] for s in steps[:-1]} == {0}
    sub = await partner.get(probe.submission_id)
    assert sub.progress.expected_items == len(prompts)
    # The last shown item ended the upload (every item is scored, so scoring may be done by
    # now: nothing is left waiting as unscored canaries once were).
    assert sub.state in (
        submission_pb2.SUBMISSION_STATE_SCORING,
        submission_pb2.SUBMISSION_STATE_COMPLETED,
    )
    report = await probe.wait_completed()
    assert report.scored_items == len(ROWS) == len(prompts)
    done = await partner.get(probe.submission_id)
    assert done.progress.scored_items == done.progress.answered_items == len(prompts)
