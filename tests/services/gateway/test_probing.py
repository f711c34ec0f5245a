"""Probing detection (issue 22): the rules (core/probing.py) and the use case with in-memory
fakes: two near-identical uploads on one pool are a finding with the evidence, a genuinely
different one is not, and the partner sees nothing of it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY

from gateway.core import probing as rules
from gateway.core.probing import StoredDigest, compare, digest_vector
from gateway.core.submission import MODE_UPLOAD, CreateRequest, ModelInfo
from gateway.core.uploads import Manifest
from gateway.entrypoints import convert
from gateway.usecases.probing import Probing
from gateway.usecases.submissions import Submissions
from medbench_runtime.errors import InvalidArgument
from medbench_storage.testing import InMemoryTransactions
from tests.services.gateway.fakes import InMemoryProbingStore
from tests.services.gateway.test_usecases import T, World, api_request

T0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


# -- the rules ---------------------------------------------------------------------------------


def test_answers_that_parse_the_same_have_one_digest() -> None:
    same = ["<A>", "a", "(A).", "Ａ", " A\n", "A"]
    assert {rules.answer_digest(a) for a in same} == {rules.answer_digest("A")}
    assert rules.answer_digest("<A, C>") == rules.answer_digest("AC")
    assert rules.answer_digest("B") != rules.answer_digest("A")
    assert rules.answer_digest("心肌梗死") != rules.answer_digest("心肌炎")
    assert rules.answer_digest("") == rules.EMPTY == rules.answer_digest(" ,.")


def test_a_digest_vector_has_one_digest_per_pool_item_and_leaves_canaries_out() -> None:
    vector = digest_vector([(0, "A"), (2, "C"), (3, "canary answer"), (-1, "x")], 3)
    w = rules.DIGEST_BYTES
    assert len(vector) == 3 * w
    assert vector[:w] == rules.answer_digest("A") and vector[2 * w :] == rules.answer_digest("C")
    assert vector[w : 2 * w] == rules.EMPTY  # unanswered


@pytest.mark.parametrize(("items", "most"), [(0, 5), (12, 5), (299, 5), (300, 6), (1000, 20)])
def test_the_threshold_is_five_answers_or_two_percent_of_the_items(items: int, most: int) -> None:
    assert rules.threshold(items) == most


def digest(sid: str, answers: list[str], at: datetime) -> StoredDigest:
    return StoredDigest(sid, T, "pool-1", 1, at, digest_vector(enumerate(answers), len(answers)))


def test_a_pair_within_the_threshold_is_a_finding_with_differences_per_dataset() -> None:
    datasets = ["MedExam"] * 200 + ["DDx"] * 100
    base = ["A"] * 300
    probe = list(base)
    for o in (3, 150, 250, 251, 299, 10):  # six differ: the threshold of 300 items is 6
        probe[o] = "B"
    earlier, later = digest("sub-1", base, T0), digest("sub-2", probe, T0 + timedelta(hours=1))
    finding = compare(later, earlier, datasets, T0)
    assert finding is not None
    assert (finding.earlier_submission_id, finding.later_submission_id) == ("sub-1", "sub-2")
    assert finding.finding_id == "sub-1:sub-2"
    assert (finding.differing, finding.items, finding.threshold) == (6, 300, 6)
    assert [(d.dataset, d.differing, d.items) for d in finding.datasets] == [
        ("DDx", 3, 100),
        ("MedExam", 3, 200),
    ]
    # Identical answers are a finding too; one more difference is not.
    assert compare(earlier, digest("sub-3", base, T0), datasets, T0) is not None
    probe[20] = "C"
    assert compare(digest("sub-4", probe, T0), earlier, datasets, T0) is None


def test_a_page_token_names_its_finding() -> None:
    f = compare(digest("s-1", ["A"], T0), digest("s-2", ["A"], T0), ["D"], T0)
    assert f is not None
    assert rules.read_token(rules.page_token(f)) == (T0, "s-1:s-2")
    for bad in ("x", "12", "abc.s-1:s-2", "1" * 40 + ".x"):
        with pytest.raises(InvalidArgument):
            rules.read_token(bad)


# -- the use case ------------------------------------------------------------------------------


def flags(tenant: str) -> float:
    value = REGISTRY.get_sample_value(
        "medbench_gateway_probing_flags_total", {"tenant": tenant, "track": "llm"}
    )
    return value or 0.0


class ProbedWorld(World):
    def __init__(self, items: int = 20, canaries: int = 2) -> None:
        super().__init__(items=items, canaries=canaries)
        self.quotas.defaults = self.quotas.defaults.merged({"hidden_per_day": 10})
        self.probing_store = InMemoryProbingStore(self.store)
        self.probing = Probing(self.probing_store)
        self.submissions = Submissions(
            self.store,
            InMemoryTransactions(self.outbox),
            self.outbox,
            self.rotator,
            self.reports,
            self.dispatch,
            self.quotas,
            probing=self.probing,
        )

    async def run(self, request_id: str, answers: dict[int, str], final: bool = True) -> str:
        """An upload run answering items by ordinal (and its canaries) in two batches; without
        final, only the first is sent."""
        sid = await self.upload_mode(request_id)
        pairs = [(f"item-{o}", a) for o, a in sorted(answers.items())]
        pairs += [(f"canary-{n}", request_id) for n in range(self.rotator.canaries)]
        half = len(pairs) // 2
        await self.submissions.upload(T, sid, "b1", pairs[:half], final=False)
        if final:
            await self.submissions.upload(T, sid, "b2", pairs[half:], final=True)
        return sid


async def test_near_identical_uploads_are_flagged_a_different_one_is_not() -> None:
    w = ProbedWorld()
    before = flags(T)
    base = dict.fromkeys(range(20), "A")
    first = await w.run("r-1", base)
    # One answer changed (canaries differ: they are left out): a finding, with the evidence.
    second = await w.run("r-2", base | {7: "<B>"})
    (finding,) = w.probing_store.found.values()
    assert (finding.earlier_submission_id, finding.later_submission_id) == (first, second)
    assert (finding.differing, finding.items, finding.pool_id) == (1, 20, "pool-1")
    assert [(d.dataset, d.differing, d.items) for d in finding.datasets] == [("D", 1, 20)]
    assert flags(T) == before + 1
    # A genuinely different run (half the answers changed) is compared with both, and flagged
    # with neither.
    await w.run("r-3", base | dict.fromkeys(range(10), "C"))
    assert len(w.probing_store.found) == 1 and flags(T) == before + 1
    # An identical resubmission (answers written differently) is flagged with both of the first
    # two it agrees with within the threshold.
    fourth = await w.run("r-4", dict.fromkeys(range(20), " a."))
    assert {f.later_submission_id for f in w.probing_store.found.values()} == {second, fourth}
    assert len(w.probing_store.found) == 3 and flags(T) == before + 3


async def test_the_comparison_waits_for_final_answers_and_unanswered_items_count() -> None:
    w = ProbedWorld()
    base = dict.fromkeys(range(20), "A")
    await w.run("r-1", base)
    # Not final: nothing compared yet.
    sid = await w.run("r-2", base, final=False)
    assert w.probing_store.found == {} and sid not in w.probing_store.stored
    # Ending it without answering 6 items: 6 differ from the first (threshold 5).
    third = await w.run("r-3", {o: "A" for o in range(14)})
    assert third in w.probing_store.stored and w.probing_store.found == {}


async def test_the_partner_is_not_told() -> None:
    plain, probed = World(items=20, canaries=2), ProbedWorld()
    plain.quotas.defaults = probed.quotas.defaults
    outcomes = []
    for world in (plain, probed):
        sids = []
        for request_id in ("r-1", "r-2"):
            sid = await world.upload_mode(request_id)
            answers = [(f"item-{o}", "A") for o in range(20)] + [("canary-0", "A")]
            outcome = await world.submissions.upload(T, sid, "b1", answers, final=True)
            view = await world.submissions.view(T, sid)
            shown = convert.view_to_proto(view)
            shown.ClearField("created_at")
            shown.ClearField("updated_at")
            sids.append((outcome, shown))
        outcomes.append(sids)
    assert len(probed.probing_store.found) == 1
    assert outcomes[0] == outcomes[1]


async def test_a_failing_check_never_fails_the_upload() -> None:
    w = ProbedWorld()

    async def broken(*args: object) -> None:
        raise RuntimeError("store down")

    w.probing_store.save_digest = broken  # type: ignore[method-assign]
    sid = await w.run("r-1", dict.fromkeys(range(20), "A"))
    assert w.store.records[(T, sid)]["state"] == "SCORING"


async def test_api_runs_and_other_tenants_and_pools_are_not_compared() -> None:
    w = ProbedWorld()
    base = dict.fromkeys(range(20), "A")
    await w.run("r-1", base)
    record, _ = await w.submissions.create(api_request("api-1"))
    assert await w.probing.answers_final(record, Manifest("pool-1", {}, {}, {})) == []
    w.rotator.pools[False] = "pool-2"
    await w.run("r-2", base)
    # Another tenant's run on the same pool, answered the same.
    other, _ = await w.submissions.create(
        CreateRequest("tenant-b", "o-1", ModelInfo("m"), 1, MODE_UPLOAD)
    )
    answers = [(f"item-{o}", "A") for o in range(20)]
    await w.submissions.upload("tenant-b", other["_id"], "b", answers, final=True)
    assert w.probing_store.found == {}
    assert {d.pool_id for d in w.probing_store.stored.values()} == {"pool-1", "pool-2"}


async def test_findings_are_listed_newest_first_in_pages_for_maintainers() -> None:
    store = InMemoryProbingStore(World().store)
    probing = Probing(store)
    for n in range(5):
        f = compare(
            digest(f"s-{n}a", ["A"], T0), digest(f"s-{n}b", ["A"], T0), ["D"], T0 + timedelta(n)
        )
        assert f is not None
        await store.add_finding(f)
    seen, token = [], ""
    while True:
        page, token = await probing.findings(T, "", 2, token)
        seen += [f.finding_id for f in page]
        if not token:
            break
    assert seen == [f"s-{n}a:s-{n}b" for n in reversed(range(5))]
    assert (await probing.findings("tenant-x", "", 0, ""))[0] == []
    assert len((await probing.findings("", "pool-1", 0, ""))[0]) == 5
    for bad in (("Bad Tenant", 0, ""), (T, 501, ""), (T, -1, ""), (T, 0, "nope")):
        with pytest.raises(InvalidArgument):
            await probing.findings(bad[0], "", bad[1], bad[2])


# -- what is scored, not the raw text (choice items) -------------------------------------------

SINGLE, MULTI = rules.CHOICE_SINGLE, rules.CHOICE_MULTI
NON_ANSWERS = ["不确定", "无法判断", "信息不足，无法作答", "", "N/A", " a ", "b", "<A, C>"]


def test_a_choice_answer_is_digested_as_the_letters_it_names() -> None:
    same_a = ["A", "答案：A", "<A>", "(A).", "Ａ", " A\n", "**A**", "最终答案是 A", "故选A。"]
    assert {rules.answer_digest(a, SINGLE) for a in same_a} == {rules.answer_digest("A", SINGLE)}
    assert rules.answer_digest("A", SINGLE) != rules.answer_digest("B", SINGLE)
    same_ac = ["A,C", "AC", "<A、C>", "答案：A C", "选A和C", "<A>、<C>", "C,A"]
    assert {rules.answer_digest(a, MULTI) for a in same_ac} == {rules.answer_digest("AC", MULTI)}
    assert rules.answer_digest("AC", MULTI) != rules.answer_digest("A", MULTI)
    # Naming no option, or several for a single-answer item, scores 0 whatever the key: one
    # value, the digest of an unanswered item. Letters are capitals, as the scorer reads them:
    # " a " names no option (collapsing it with "A" would let "a"/"b" hide a probe).
    assert {rules.answer_digest(a, SINGLE) for a in NON_ANSWERS} == {rules.EMPTY}
    assert rules.answer_digest("B超 待查", SINGLE) == rules.EMPTY  # a term, not option B
    # Other formats are read as normalised text, as before.
    text = "free_text"
    assert rules.answer_digest("不确定", text) != rules.answer_digest("无法判断", text)
    assert rules.answer_digest("<A>", text) == rules.answer_digest("a") != rules.EMPTY
    # A single letter's digest is the one an older vector (text-only) holds for "<A>".
    assert rules.answer_digest("答案：A", SINGLE) == rules.answer_digest("<A>")


async def test_a_pair_differing_only_in_worded_non_answers_and_one_probe_is_flagged() -> None:
    w = ProbedWorld()
    w.rotator.answer_format = SINGLE
    # 12 real answers, 8 non-answers worded anew every run, and one probed item (7: A -> B).
    real = {o: "<A>" for o in range(12)}
    first = await w.run("r-1", real | {o: "不确定" for o in range(12, 20)})
    second = await w.run(
        "r-2",
        {o: f"答案：{a[1]}" for o, a in real.items()}
        | {7: "B"}
        | {o: f"无法判断（{o}）" for o in range(12, 20)},
    )
    (finding,) = w.probing_store.found.values()
    assert (finding.earlier_submission_id, finding.later_submission_id) == (first, second)
    assert (finding.differing, finding.items) == (1, 20)
    # Read as raw text, the same two runs differ in 9 answers: not flagged (the evasion).
    raw = [
        digest_vector(list(enumerate(answers)), 20)
        for answers in (
            ["<A>"] * 12 + ["不确定"] * 8,
            ["答案：A"] * 7 + ["B"] + ["答案：A"] * 4 + [f"无法判断（{o}）" for o in range(12, 20)],
        )
    ]
    assert rules.differing_ordinals(raw[0], raw[1], rules.threshold(20)) is None


async def test_api_runs_are_compared_by_the_dispatchers_digests() -> None:
    """The dispatcher hands a DONE run's digests (one reading with the uploads'); two runs
    alike but for one item are a finding, whatever the submission's state when the event comes
    (its report may be stored first), and a redelivery finds nothing new."""
    from gateway.core.submission import DispatchProgress

    w = ProbedWorld()
    w.quotas.defaults = w.quotas.defaults.merged({"official_per_cycle": 10})
    sids = []
    runs = (("api-1", ["<A>"] * 20), ("api-2", ["A"] * 19 + ["<B>"]), ("api-3", ["C"] * 20))
    for request_id, answers in runs:
        record, _ = await w.submissions.create(api_request(request_id))
        sid = record["_id"]
        digests = b"".join(rules.answer_digest(a, rules.CHOICE_SINGLE) for a in answers)
        if request_id == "api-2":
            w.store.records[(T, sid)]["state"] = "COMPLETED"  # its report came first
        done = DispatchProgress(sid, T, "DONE", "", 20, 0, 1, digests)
        await w.submissions.apply_dispatch_progress(done)
        await w.submissions.apply_dispatch_progress(done)  # redelivered
        sids.append(sid)
    (finding,) = w.probing_store.found.values()
    assert (finding.earlier_submission_id, finding.later_submission_id) == (sids[0], sids[1])
    assert (finding.differing, finding.items) == (1, 20)
    assert {d.submission_id for d in w.probing_store.stored.values()} >= set(sids)


async def test_api_digests_are_fitted_to_the_pools_items() -> None:
    """Digests past the pool's items (an extra ordinal) are left out; items they do not reach
    hold the digest of no answer, as an upload's unanswered items do."""
    w = ProbedWorld()
    w.quotas.defaults = w.quotas.defaults.merged({"official_per_cycle": 10})
    record, _ = await w.submissions.create(api_request("api-1"))
    manifest = await w.rotator.manifest(record["_id"], record["pool_id"])
    a = rules.answer_digest("A")
    await w.probing.api_answers_final(record, manifest, a * 25)
    await w.probing.api_answers_final(record | {"_id": "short"}, manifest, a * 3)
    long, short = w.probing_store.stored[record["_id"]], w.probing_store.stored["short"]
    assert long.vector == a * 20
    assert short.vector == a * 3 + rules.EMPTY * 17
    # An upload is never read as an API run.
    upload = record | {"_id": "u", "mode": MODE_UPLOAD}
    assert await w.probing.api_answers_final(upload, manifest, a * 20) == []
    assert "u" not in w.probing_store.stored
