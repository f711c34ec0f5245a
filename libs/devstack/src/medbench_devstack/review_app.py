"""The physician review web app in the local stack (`make run`): started after the site, with a
reviewer key written to .stack/reviewer.key for you to sign in with."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from medbench_devstack.ports import free_port
from medbench_devstack.processes import ManagedProcess, stop_recorded, wait_http_ok
from medbench_devstack.services import ServiceStack

REVIEW_FILE = "review.json"
REVIEWER_KEY_FILE = "reviewer.key"
REVIEWERS_TENANT = "physicians"


def stop_review(stack_dir: Path) -> None:
    """Stops the review app a previous `up` left running."""
    stop_recorded(stack_dir / REVIEW_FILE, "medbench_review", "the review app")


def reviewer_key(stack_dir: Path, stack: ServiceStack) -> Path:
    """A reviewer key (tenant REVIEWERS_TENANT) in stack_dir/reviewer.key, readable by you only."""
    from medbench.identity.v1 import access_pb2
    from medbench_client.api import provision_key

    key = provision_key(
        stack.address("gateway"), stack.admin_key, REVIEWERS_TENANT, access_pb2.ROLE_REVIEWER
    )
    path = stack_dir / REVIEWER_KEY_FILE
    path.touch(mode=0o600)
    path.write_text(key + "\n")
    return path


def start_review(stack_dir: Path, stack: ServiceStack) -> str:
    """Serves the review app against the stack's judge scorer; returns its address. The app
    holds no key of its own: users sign in with theirs."""
    stop_review(stack_dir)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDBENCH_")}
    app = ManagedProcess(
        "review",
        [
            sys.executable,
            "-m",
            "medbench_review",
            "--port",
            str(port),
            "--judge-scorer",
            stack.address("judge_scorer"),
        ],
        env,
        stack_dir / "services" / "review.log",
    )
    app.start()
    url = f"http://127.0.0.1:{port}/"
    (stack_dir / REVIEW_FILE).write_text(json.dumps({"pid": app.pid, "url": url}) + "\n")
    wait_http_ok(app, url + "healthz", "the review app")
    return url
