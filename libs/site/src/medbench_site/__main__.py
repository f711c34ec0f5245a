"""medbench-site: build the public website from the platform, or build and serve it.

    medbench-site build --out DIR                  # once: DIR/site is the website
    medbench-site serve --out DIR --port 8080      # rebuild every --refresh-s, serve DIR/site

Addresses default to MEDBENCH_PEERS__AGGREGATOR and MEDBENCH_PEERS__ROTATOR (as the services
read them); the credential to MEDBENCH_API_KEY (a maintainer key), else the deployment's
service token MEDBENCH_AUTH__SERVICE_TOKEN.

Exit codes of build: 0 built, 2 no credential, 4 the folder cannot be written, 5 the platform
is unreachable, 6 the platform refused (a bad key, a missing role).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import threading
import time
from pathlib import Path

import grpc

from medbench_client.api import channel
from medbench_site.publish import write_site
from medbench_site.render import published_ids, render_site
from medbench_site.server import SiteServer
from medbench_site.snapshot import fetch

log = logging.getLogger("medbench_site")


async def build(out: Path, aggregator: str, rotator: str, key: str) -> tuple[Path, int, int]:
    """Fetches, renders and writes one build; returns (link, pages, submissions)."""
    aggregator_channel = channel(aggregator, key)
    rotator_channel = channel(rotator, key)
    try:
        snapshot = await fetch(aggregator_channel, rotator_channel)
    finally:
        await aggregator_channel.close()
        await rotator_channel.close()
    files = render_site(snapshot)
    link = write_site(out, files)
    pages = sum(1 for p in files if p.endswith(".html"))
    return link, pages, len(published_ids(snapshot))


def _refresh(out: Path, args: argparse.Namespace, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            link, pages, shown = asyncio.run(build(out, args.aggregator, args.rotator, args.key))
            log.info("built %s: %d pages, %d published submissions", link, pages, shown)
        except Exception:  # noqa: BLE001 - the loop outlives any one build
            # The last build keeps being served; the next refresh tries again.
            log.exception("site build failed, serving the previous build")
        stop.wait(args.refresh_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="medbench-site", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("build", "serve"):
        p = sub.add_parser(name)
        p.add_argument("--out", type=Path, required=True, help="folder; DIR/site is the website")
        p.add_argument(
            "--aggregator",
            default=os.environ.get("MEDBENCH_PEERS__AGGREGATOR", "127.0.0.1:50056"),
        )
        p.add_argument(
            "--rotator", default=os.environ.get("MEDBENCH_PEERS__ROTATOR", "127.0.0.1:50052")
        )
        p.add_argument(
            "--key",
            default=os.environ.get("MEDBENCH_API_KEY")
            or os.environ.get("MEDBENCH_AUTH__SERVICE_TOKEN", ""),
            help="maintainer key or service token (default: from the environment)",
        )
        if name == "serve":
            p.add_argument("--host", default="127.0.0.1")
            p.add_argument("--port", type=int, default=8080)
            p.add_argument(
                "--refresh-s", type=float, default=60.0, help="rebuild period; 0 = serve only"
            )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("MEDBENCH_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    if not args.key:
        print("medbench-site: no credential (--key, MEDBENCH_API_KEY)", file=sys.stderr)
        return 2
    if args.command == "build":
        started = time.monotonic()
        try:
            link, pages, shown = asyncio.run(
                build(args.out, args.aggregator, args.rotator, args.key)
            )
        except grpc.aio.AioRpcError as exc:
            print(
                f"medbench-site: reading the platform ({args.aggregator}, {args.rotator}) "
                f"failed: {exc.code().name}: {exc.details()}",
                file=sys.stderr,
            )
            return 5 if exc.code() == grpc.StatusCode.UNAVAILABLE else 6
        except OSError as exc:
            print(f"medbench-site: cannot write {args.out}: {exc}", file=sys.stderr)
            return 4
        print(
            f"{link}: {pages} pages, {shown} published submissions, "
            f"{time.monotonic() - started:.1f} s"
        )
        return 0
    server = SiteServer(args.out, args.host, args.port)
    stop = threading.Event()
    if args.refresh_s > 0:
        threading.Thread(target=_refresh, args=(args.out, args, stop), daemon=True).start()
    log.info("serving %s on http://%s:%d/", args.out / "site", args.host, server.port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())
