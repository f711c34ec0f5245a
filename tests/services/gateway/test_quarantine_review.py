"""QuarantineReview with an in-memory quarantine: paging, the decisions and their errors."""

from __future__ import annotations

import pytest

from gateway.usecases.quarantine import QuarantineReview
from medbench_runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from tests.services.gateway.fakes import InMemoryQuarantine

PUBLISHER = object()


def review(n: int = 5) -> tuple[QuarantineReview, InMemoryQuarantine]:
    entries = [
        {"_id": f"q_{i}", "service": "gateway" if i % 2 else "aggregator", "payload": b"x"}
        for i in range(n)
    ]
    entries.append({"_id": "q_nopayload", "service": "gateway", "payload": None})
    store = InMemoryQuarantine(entries)
    return QuarantineReview(store, PUBLISHER), store


async def test_pages_cover_every_entry_once_and_count_the_held() -> None:
    use, _ = review(5)
    seen: list[str] = []
    token = ""
    while True:
        page = await use.list("", "", 2, token)
        seen += [e["_id"] for e in page.entries]
        assert page.held == 6
        if not page.next_page_token:
            break
        token = page.next_page_token
    assert seen == [f"q_{i}" for i in range(5)] + ["q_nopayload"]


async def test_a_listing_filters_by_service_and_state() -> None:
    use, _ = review(5)
    await use.drop("q_1", "ops-key")
    page = await use.list("held", "gateway", 0, "")
    assert [e["_id"] for e in page.entries] == ["q_3", "q_nopayload"]
    assert page.held == 5


@pytest.mark.parametrize(
    ("status", "size", "token", "message"),
    [
        ("lost", 10, "", "status must be one of held, retried, dropped"),
        ("", 1001, "", "page_size must be between 0 and 1000"),
        ("", -1, "", "page_size"),
        ("", 10, "not-a-token", "page_token is not one this API returned"),
    ],
)
async def test_a_bad_listing_is_invalid_argument(
    status: str, size: int, token: str, message: str
) -> None:
    use, _ = review()
    with pytest.raises(InvalidArgument, match=message):
        await use.list(status, "", size, token)


async def test_a_retry_sends_the_entry_once_and_records_who() -> None:
    use, store = review()
    entry = await use.retry("q_2", "maintainer-key")
    assert entry["status"] == "retried" and entry["resolved_by"] == "maintainer-key"
    assert [(sent["_id"], publisher) for sent, publisher in store.sent] == [("q_2", PUBLISHER)]
    with pytest.raises(NotFound, match="q_2"):
        await use.retry("q_2", "maintainer-key")
    assert len(store.sent) == 1


async def test_an_entry_without_its_payload_cannot_be_retried_and_stays_held() -> None:
    use, store = review()
    with pytest.raises(FailedPrecondition, match="kept no payload"):
        await use.retry("q_nopayload", "ops-key")
    assert store.entries["q_nopayload"]["status"] == "held" and not store.sent


async def test_a_drop_is_final_and_an_empty_or_unknown_id_is_refused() -> None:
    use, _ = review()
    assert (await use.drop("q_0", "ops-key"))["status"] == "dropped"
    with pytest.raises(NotFound):
        await use.drop("q_0", "ops-key")
    with pytest.raises(NotFound):
        await use.drop("q_missing", "ops-key")
    with pytest.raises(InvalidArgument, match="entry_id is required"):
        await use.retry("", "ops-key")
