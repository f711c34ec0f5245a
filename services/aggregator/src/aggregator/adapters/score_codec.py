"""How a batch of item scores is stored: columns, not one document per item.

A report reads every score of a submission (700,000 for a full pool); decoding as many small
documents costs more than everything else a report does. A stored batch (format 2) holds:

- ``item_ids``: the items, in order; ``scores``: float64 values, packed;
- ``vocab`` with uint16 codes (packed) for the few distinct strings of ``dataset``,
  ``dimension``, ``component``, ``metric``, ``merge_rule`` and the single component's name;
- ``group_ids`` only when some item's group differs from its id, ``prompt_hashes`` when known;
- ``parsed`` (what the scorer read from each answer) as one JSON string, decoded only for the
  owner's item results;
- ``extras``, JSON, only for the items that need more: several components, tp/fp/fn counts,
  a judge failure, judge lineage.

``Entry`` and ``entry_of`` (the read form) are the core's (core/parts.py); they are imported
here for the codec and its readers.

Format 1 (a list of per-item documents under ``scores``) is still read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from bson.binary import Binary

from aggregator.core.parts import Entry, ItemPart, entry_of

CODED = ("dataset", "dimension", "component", "metric", "merge_rule", "cname")


def pack(scores: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The stored form of a batch's per-item score documents (see the module docstring)."""
    vocab: dict[str, int] = {}

    def code(value: str) -> int:
        return vocab.setdefault(value, len(vocab))

    columns: dict[str, list[int]] = {name: [] for name in CODED}
    extras: dict[str, dict[str, Any]] = {}
    values: list[float] = []
    for index, s in enumerate(scores):
        components = s.get("components") or [[s["component"], s["score"]]]
        single = len(components) == 1 and components[0][1] == s["score"]
        for name in CODED[:5]:
            columns[name].append(code(s.get(name, "") or ("mean" if name == "merge_rule" else "")))
        columns["cname"].append(code(components[0][0] if single else ""))
        values.append(float(s["score"]))
        extra: dict[str, Any] = {}
        if not single:
            extra["components"] = [[n, float(v)] for n, v in components]
        if list(s.get("counts", [0, 0, 0])) != [0, 0, 0]:
            extra["counts"] = list(s["counts"])
        if s.get("unscored"):
            extra["unscored"] = True
        if s.get("judge"):
            extra["judge"] = s["judge"]
        if extra:
            extras[str(index)] = extra
    if len(vocab) > 65535:
        raise ValueError("a batch with more than 65,535 distinct labels cannot be packed")
    ids = [s["item_id"] for s in scores]
    groups = [s.get("group_id") or s["item_id"] for s in scores]
    hashes = [s.get("prompt_hash", "") for s in scores]
    doc: dict[str, Any] = {
        "fmt": 2,
        "item_ids": ids,
        "scores": Binary(np.asarray(values, dtype="<f8").tobytes()),
        "vocab": list(vocab),
        "parsed": json.dumps([s.get("parsed", "") for s in scores], ensure_ascii=False),
        "extras": json.dumps(extras, ensure_ascii=False) if extras else "",
    }
    for name in CODED:
        doc[name] = Binary(np.asarray(columns[name], dtype="<u2").tobytes())
    if groups != ids:
        doc["group_ids"] = groups
    if any(hashes):
        doc["prompt_hashes"] = hashes
    return doc


def record(part: ItemPart) -> dict[str, Any]:
    """The per-item score record of a part (what ``pack`` stores, ``unpack`` gives back)."""
    return {
        "item_id": part.item_id,
        "dataset": part.dataset,
        "dimension": part.dimension,
        "group_id": part.group_id,
        "component": part.component,
        "metric": part.metric,
        "score": part.score,
        "parsed": part.parsed,
        "prompt_hash": part.prompt_hash,
        # Kept apart, so the item's merge covers every component of every scorer.
        "components": [[n, v] for n, v in part.components] or [[part.component, part.score]],
        "merge_rule": part.merge_rule or "mean",
        "counts": list(part.counts),
        **({"unscored": True} if part.unscored else {}),
        # Judge lineage, for the report (raw outputs stay with the judge).
        **({"judge": part.judge} if part.judge is not None else {}),
    }


def entries(doc: dict[str, Any]) -> Iterator[Entry]:
    """The batch's item scores, cheaply (no parsed answers)."""
    if doc.get("fmt") != 2:
        yield from map(entry_of, doc["scores"])
        return
    vocab = doc["vocab"]
    codes = {name: np.frombuffer(doc[name], dtype="<u2").tolist() for name in CODED}
    values = np.frombuffer(doc["scores"], dtype="<f8").tolist()
    extras = json.loads(doc["extras"]) if doc["extras"] else {}
    ids = doc["item_ids"]
    groups = doc.get("group_ids", ids)
    for i, item_id in enumerate(ids):
        extra = extras.get(str(i))
        counts: tuple[int, int, int] = (0, 0, 0)
        if extra is None:
            components: tuple[tuple[str, float], ...] = ((vocab[codes["cname"][i]], values[i]),)
            unscored, judge_scores, judge = False, (), None
        else:
            raw = extra.get("components") or [[vocab[codes["cname"][i]], values[i]]]
            components = tuple((n, v) for n, v in raw)
            unscored = bool(extra.get("unscored"))
            judge = extra.get("judge")
            judge_scores = tuple((judge or {}).get("judge_scores", ()))
            if "counts" in extra:
                tp, fp, fn = extra["counts"]
                counts = (int(tp), int(fp), int(fn))
        yield Entry(
            item_id,
            vocab[codes["dataset"][i]],
            vocab[codes["dimension"][i]],
            groups[i],
            vocab[codes["component"][i]],
            values[i],
            vocab[codes["merge_rule"][i]],
            components,
            unscored,
            judge_scores,
            judge,
            vocab[codes["metric"][i]],
            counts,
        )


def unpack(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The batch's per-item score documents, complete (item results, equating)."""
    if doc.get("fmt") != 2:
        return list(doc["scores"])
    vocab = doc["vocab"]
    codes = {name: np.frombuffer(doc[name], dtype="<u2").tolist() for name in CODED}
    values = np.frombuffer(doc["scores"], dtype="<f8").tolist()
    extras = json.loads(doc["extras"]) if doc["extras"] else {}
    parsed = json.loads(doc["parsed"])
    ids = doc["item_ids"]
    groups = doc.get("group_ids", ids)
    hashes = doc.get("prompt_hashes") or [""] * len(ids)
    out = []
    for i, item_id in enumerate(ids):
        extra = extras.get(str(i), {})
        out.append(
            {
                "item_id": item_id,
                "dataset": vocab[codes["dataset"][i]],
                "dimension": vocab[codes["dimension"][i]],
                "group_id": groups[i],
                "component": vocab[codes["component"][i]],
                "metric": vocab[codes["metric"][i]],
                "score": values[i],
                "parsed": parsed[i],
                "prompt_hash": hashes[i],
                "components": extra.get("components") or [[vocab[codes["cname"][i]], values[i]]],
                "merge_rule": vocab[codes["merge_rule"][i]],
                "counts": extra.get("counts", [0, 0, 0]),
                **({"unscored": True} if extra.get("unscored") else {}),
                **({"judge": extra["judge"]} if "judge" in extra else {}),
            }
        )
    return out
