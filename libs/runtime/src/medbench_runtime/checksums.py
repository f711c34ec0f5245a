"""The checksum an upload batch may carry (UploadAnswersRequest.answers_sha256), computed the same
way by clients and the gateway."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def answers_sha256(answers: Iterable[tuple[str, str]]) -> str:
    """SHA-256 (hex) over the answers in order, each field UTF-8 with a 4-byte big-endian length
    prefix, so that no two different batches encode alike."""
    digest = hashlib.sha256()
    for item_id, answer in answers:
        for field in (item_id.encode(), answer.encode()):
            digest.update(len(field).to_bytes(4, "big"))
            digest.update(field)
    return digest.hexdigest()
