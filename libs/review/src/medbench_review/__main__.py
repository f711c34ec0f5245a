"""medbench-review: the physician review web app.

    python -m medbench_review --port 8081 [--host 127.0.0.1] [--judge-scorer HOST:PORT]
                              [--secure-cookies]

The judge scorer's address defaults to MEDBENCH_PEERS__JUDGE_SCORER (as the services read it);
--secure-cookies (or MEDBENCH_REVIEW_SECURE_COOKIES=true) marks cookies Secure: set it whenever
users reach the app over TLS (an ingress). The app holds no credential of its own: every call
carries the signed-in user's key.
"""

from __future__ import annotations

import argparse
import logging
import os

from medbench_review.server import App, ReviewServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="medbench-review", description=__doc__.split("\n")[1])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument(
        "--judge-scorer",
        default=os.environ.get("MEDBENCH_PEERS__JUDGE_SCORER", "127.0.0.1:50055"),
    )
    parser.add_argument(
        "--secure-cookies",
        action="store_true",
        default=os.environ.get("MEDBENCH_REVIEW_SECURE_COOKIES", "").lower() in ("1", "true"),
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    server = ReviewServer(
        App(args.judge_scorer, secure_cookies=args.secure_cookies), args.host, args.port
    )
    logging.getLogger("medbench_review").info(
        "serving on http://%s:%d/ (judge scorer %s)", args.host, server.port, args.judge_scorer
    )
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
