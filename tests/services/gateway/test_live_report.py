"""A report reaches its owner as the live view while its pool is live, and exact once the
maintainers disclosed the pool (README, "What partners see")."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from medbench.report.v1 import report_pb2
from tests.services.gateway.fakes import FakeReports
from tests.services.gateway.test_usecases import T, World

AT = datetime(2026, 12, 6, 12, tzinfo=UTC)


class AskedReports(FakeReports):
    """FakeReports that records whether the exact report was asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[bool] = []

    async def report(self, submission_id: str, tenant_id: str, exact: bool = False) -> Any:
        self.asked.append(exact)
        return report_pb2.Report(submission_id=submission_id, tenant_id=tenant_id, live=not exact)


@pytest.mark.parametrize("api", [False, True], ids=["upload board", "API board"])
async def test_a_live_pools_report_is_its_live_view_and_a_disclosed_ones_exact(api: bool) -> None:
    w = World(reports=AskedReports())
    sid = await (w.api_mode() if api else w.upload_mode())
    await w.submissions.complete(T, sid, 4, AT)
    live = await w.submissions.report(T, sid)
    assert live.live and w.reports.asked == [False]
    w.rotator.disclosed_pools.add("pool-1")
    exact = await w.submissions.report(T, sid)
    assert not exact.live and w.reports.asked == [False, True]
    assert exact.lineage.model  # the gateway's side of the lineage is still filled in
