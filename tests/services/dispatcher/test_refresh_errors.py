"""Which failures of loading jobs the dispatcher waits out (a peer or the database restarting)
and which end its worker (anything else: a bug is not retried forever)."""

from __future__ import annotations

import grpc
import pytest
from pymongo.errors import AutoReconnect

from dispatcher.adapters.failures import is_outage as _passing


def rpc_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), "down")


@pytest.mark.parametrize(
    "exc",
    [
        rpc_error(grpc.StatusCode.UNAVAILABLE),
        rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED),
        AutoReconnect("primary stepped down"),
    ],
)
def test_outages_are_waited_out(exc: BaseException) -> None:
    assert _passing(exc)


@pytest.mark.parametrize(
    "exc",
    [rpc_error(grpc.StatusCode.INVALID_ARGUMENT), KeyError("decoding"), ValueError("bug")],
)
def test_anything_else_ends_the_worker(exc: BaseException) -> None:
    assert not _passing(exc)
