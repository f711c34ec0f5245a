"""A simulated OpenAI-compatible endpoint for benchmarks: asyncio, keep-alive, fixed latency,
optional 429/5xx rates; GET /stats returns call counts, and GET /stats?since=T the same for
the calls that arrived after monotonic time T (the clock is the machine's, shared by every
process), which lets a benchmark leave out the preflight call. Run as its own process:

    python -m tests.bench.sim_endpoint --port 8000 --latency-s 0.2 --rate-429 0.1 --rate-5xx 0.05
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time

STATS = {
    "calls": 0,
    "answered": 0,
    "throttled": 0,
    "errors": 0,
    "first": 0.0,
    "last": 0.0,
    # Requests in flight now, and summed over arrivals (their mean is the concurrency a
    # request found when it arrived, itself included).
    "inflight": 0,
    "inflight_sum": 0,
}
# (monotonic arrival time, requests in flight then) of every chat call.
ARRIVALS: list[tuple[float, int]] = []


def since(t: float) -> dict[str, float]:
    """Calls before t, and count, first, last and summed in-flight of the calls after t."""
    after = [(at, inflight) for at, inflight in ARRIVALS if at > t]
    return {
        "calls_before": len(ARRIVALS) - len(after),
        "calls": len(after),
        "first": after[0][0] if after else 0.0,
        "last": after[-1][0] if after else 0.0,
        "inflight_sum": sum(inflight for _, inflight in after),
    }


async def handle(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    args: argparse.Namespace,
    rng: random.Random,
) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            method, path = lines[0].split(" ")[:2]
            length = next(
                (int(h.split(":")[1]) for h in lines if h.lower().startswith("content-length:")), 0
            )
            if length:
                await reader.readexactly(length)
            status, body, extra = 200, {}, ""
            if method == "GET" and "/stats?since=" in path:
                body = since(float(path.split("?since=", 1)[1]))
            elif method == "GET" and path.endswith("/stats"):
                body = STATS
            elif method == "GET":
                body = {"data": [{"id": "test-model"}]}
            else:
                now = time.monotonic()
                STATS["calls"] += 1
                STATS["first"] = STATS["first"] or now
                STATS["last"] = now
                STATS["inflight"] += 1
                STATS["inflight_sum"] += STATS["inflight"]
                ARRIVALS.append((now, STATS["inflight"]))
                try:
                    await asyncio.sleep(args.latency_s)
                finally:
                    STATS["inflight"] -= 1
                roll = rng.random()
                if roll < args.rate_429:
                    STATS["throttled"] += 1
                    status, body, extra = (
                        429,
                        {"error": {"message": "slow down"}},
                        "Retry-After: 1\r\n",
                    )
                elif roll < args.rate_429 + args.rate_5xx:
                    STATS["errors"] += 1
                    status, body = 503, {"error": {"message": "overloaded"}}
                else:
                    STATS["answered"] += 1
                    body = {
                        "choices": [
                            {
                                "message": {"role": "assistant", "content": args.reply},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 3},
                    }
            raw = json.dumps(body).encode()
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(raw)}\r\n{extra}\r\n".encode()
                + raw
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, args, rng), "127.0.0.1", args.port, backlog=512
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-s", type=float, default=0.2)
    parser.add_argument("--rate-429", type=float, default=0.0)
    parser.add_argument("--rate-5xx", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--reply", default="<A>", help="the completion text of every answer")
    asyncio.run(main(parser.parse_args()))
