"""Structured verdicts: the JSON Schema a verdict must satisfy, built from the rubric, for
judges that decode under a schema; and the strict reading of a reply decoded under it (pure).

A judge declares how its server takes a schema (`JudgeModel.structured` in settings):
- "json_schema": OpenAI-style `response_format` `{"type": "json_schema", "json_schema":
  {"name", "schema", "strict": true}}` (vLLM);
- "json_object_schema": `{"type": "json_object", "schema": ...}` (llama-cpp-python 0.3.x, which
  answers "json_schema" with HTTP 500). Its grammar ignores integer minimum/maximum but keeps
  to an enum, so the schema states the allowed scores as an enum;
- "none": no schema; the reply is read by the tolerant text parser (core/verdict.py).

The schema holds the fields the parser reads: `criteria` (an object with one score per rubric
criterion, by name, each one of the allowed scores), `score` (one of the rubric's whole points,
plus any anchor that is not whole: the overall score, what calibrates), `key_points_covered`
(key-point numbers 1..n, at most n) and `rationale` (at most the rubric's limit in characters:
an unbounded string is cut by max_tokens and the JSON left unclosed). A reply that does not
satisfy it is read by the text parser as a fallback and its verdict recorded as not structured.
"""

from __future__ import annotations

import functools
import json
import math
import re
from typing import Any

from judge_scorer.core.rubric import Rubric
from judge_scorer.core.verdict import RATIONALE_MAX_CHARS, MalformedVerdict, Verdict

STYLES = ("json_schema", "json_object_schema", "none")
"""How a judge's server takes a schema; "none" sends none."""
SCHEMA_NAME = "medbench_verdict"
TOKENS_PER_CHAR = 2
"""Tokens one character of the rationale may take at worst (CJK text in common tokenizers)."""
FIXED_TOKENS = 64
"""Braces, keys, the score and whitespace of a verdict."""
TOKENS_PER_POINT = 4
TOKENS_PER_CRITERION = 8
"""Quotes, colon, score and separator of one criterion's entry (its name counted apart)."""


def allowed_scores(rubric: Rubric) -> tuple[int | float, ...]:
    """The scores a structured verdict may give: every whole point of the scale and every
    anchor (the points calibration compares with physicians)."""
    scale = rubric.scale
    points: set[int | float] = set(range(math.ceil(scale.min), math.floor(scale.max) + 1))
    points.update(a.score for a in scale.anchors)
    return tuple(sorted(points))


def rationale_limit(rubric: Rubric) -> int:
    """Characters the rationale may take: the rubric's maxLength, at most RATIONALE_MAX_CHARS."""
    declared = rubric.output_schema.get("properties", {}).get("rationale", {}).get("maxLength")
    if isinstance(declared, int) and not isinstance(declared, bool) and declared > 0:
        return min(declared, RATIONALE_MAX_CHARS)
    return RATIONALE_MAX_CHARS


def verdict_schema(rubric: Rubric, key_points: int) -> dict[str, Any]:
    """The JSON Schema of a verdict under the rubric for an item with `key_points` key points
    (a fresh copy: callers may keep or change it)."""
    return json.loads(_schema_json(rubric, key_points))  # type: ignore[no-any-return]


def score_schema(rubric: Rubric) -> dict[str, Any]:
    """The schema of one score under the rubric: an enum of the allowed scores."""
    scores = allowed_scores(rubric)
    whole = all(float(s).is_integer() for s in scores)
    return {
        "type": "integer" if whole else "number",
        "enum": [int(s) if whole else s for s in scores],
    }


def criteria_schema(rubric: Rubric) -> dict[str, Any]:
    """The schema of a verdict's scores per criterion: an object with every criterion of the
    rubric by name, each an allowed score (as the overall score), and nothing else."""
    names = [c.name for c in rubric.criteria]
    return {
        "type": "object",
        "properties": {name: score_schema(rubric) for name in names},
        "required": names,
        "additionalProperties": False,
    }


@functools.lru_cache(maxsize=1024)
def _schema_json(rubric: Rubric, key_points: int) -> str:
    points: dict[str, Any] = {"type": "array", "maxItems": key_points}
    if key_points > 0:
        points["items"] = {"type": "integer", "enum": list(range(1, key_points + 1))}
    else:
        points["items"] = {"type": "integer"}
    schema = {
        "type": "object",
        "properties": {
            # First: a schema-decoding judge scores each criterion before the overall score.
            "criteria": criteria_schema(rubric),
            "score": score_schema(rubric),
            "key_points_covered": points,
            "rationale": {"type": "string", "maxLength": rationale_limit(rubric)},
        },
        "required": ["criteria", "score", "key_points_covered", "rationale"],
        "additionalProperties": False,
    }
    return json.dumps(schema, ensure_ascii=False)


def token_budget(schema: dict[str, Any]) -> int:
    """max_tokens a verdict under the schema may need at worst (an estimate)."""
    props = schema["properties"]
    chars = int(props["rationale"]["maxLength"])
    points = int(props["key_points_covered"]["maxItems"])
    names = props.get("criteria", {}).get("properties", {})
    criteria = sum(TOKENS_PER_CHAR * len(name) + TOKENS_PER_CRITERION for name in names)
    return FIXED_TOKENS + TOKENS_PER_CHAR * chars + TOKENS_PER_POINT * points + criteria


def response_format(style: str, schema: dict[str, Any]) -> dict[str, Any] | None:
    """The `response_format` of a chat completion request in the judge's declared style
    (None for "none").

    Raises:
        ValueError: an unknown style.
    """
    if style == "json_schema":
        return {
            "type": "json_schema",
            "json_schema": {"name": SCHEMA_NAME, "schema": schema, "strict": True},
        }
    if style == "json_object_schema":
        return {"type": "json_object", "schema": schema}
    if style == "none":
        return None
    raise ValueError(f"structured must be one of {', '.join(STYLES)}, got {style!r}")


def read_structured(
    raw: str, rubric: Rubric, schema: dict[str, Any], *, answer: str | None = None
) -> Verdict:
    """Reads a reply decoded under `schema`: strict JSON, exactly the schema's fields, each
    valid.

    Args:
        answer: the answer under evaluation; a verdict copied verbatim from it is not taken
            (as the text parser does).

    Raises:
        MalformedVerdict: the reply is not one JSON object satisfying the schema, or is
            copied from the answer (the text parser may still read it).
    """
    if answer and _compact(raw) and _compact(raw) in _compact(answer):
        raise MalformedVerdict("the structured reply is copied from the answer")
    try:
        obj = json.loads(raw)
    except ValueError as exc:
        raise MalformedVerdict(f"the structured reply is not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise MalformedVerdict("the structured reply is not a JSON object")
    props = schema["properties"]
    if set(obj) != set(props):
        raise MalformedVerdict(
            f"the structured reply has fields {sorted(obj)}, the schema {sorted(props)}"
        )
    score = obj["score"]
    if isinstance(score, bool) or score not in props["score"]["enum"]:
        raise MalformedVerdict(f"the structured score {score!r} is not an allowed score")
    points = obj["key_points_covered"]
    allowed = props["key_points_covered"]
    if (
        not isinstance(points, list)
        or len(points) > allowed["maxItems"]
        or any(isinstance(p, bool) or p not in allowed["items"].get("enum", ()) for p in points)
    ):
        raise MalformedVerdict(f"the structured key_points_covered {points!r} are not allowed")
    rationale = obj["rationale"]
    if not isinstance(rationale, str) or len(rationale) > props["rationale"]["maxLength"]:
        raise MalformedVerdict("the structured rationale is not text within its length")
    criteria: tuple[tuple[str, float], ...] = ()
    if "criteria" in props:
        given = obj["criteria"]
        names = [c.name for c in rubric.criteria]
        if (
            not isinstance(given, dict)
            or set(given) != set(names)
            or any(isinstance(v, bool) or v not in props["score"]["enum"] for v in given.values())
        ):
            raise MalformedVerdict(f"the structured criteria {given!r} are not allowed")
        criteria = tuple((n, rubric.scale.clamp(float(given[n]))) for n in names)
    scale = rubric.scale
    return Verdict(
        score=scale.clamp(float(score)),
        raw_score=float(score),
        scale_min=float(scale.min),
        scale_max=float(scale.max),
        key_points_covered=tuple(int(p) for p in points),
        rationale=rationale.strip(),
        rubric_id=rubric.id,
        rubric_version=rubric.version,
        rubric_hash=rubric.content_hash,
        criteria=criteria,
    )


def _compact(text: str) -> str:
    return re.sub(r"\s+", "", text)
