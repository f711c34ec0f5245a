"""The local stack's judge: the user's judge settings reach the judge scorer only (make run),
make demo-llm's own judge replaces them, and the demo's judge sample covers every LLM dimension
that has a judge-scored dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from judge_scorer.settings import JudgeModel, JudgeSettings
from medbench_client.bank_files import read_jsonl
from medbench_devstack import DevstackError, ServiceStack, demo_llm
from medbench_devstack.demo import judge_line, sample_bank
from medbench_devstack.services import SERVICES, USER_JUDGE_SETTINGS, user_judge_env

REGISTRY = Path(__file__).resolve().parents[3] / (
    "services/rotator/src/rotator/registry/medbench_v4.json"
)
MODELS = json.dumps(
    [{"model": "qwen", "base_url": "http://judge.example/v1", "structured": "json_schema"}]
)


def _stack(tmp_path: Path, **kwargs: object) -> ServiceStack:
    return ServiceStack(tmp_path, "mongodb://m/", "db1", "127.0.0.1:9", "p.", **kwargs)  # type: ignore[arg-type]


def test_user_judge_settings_are_every_judge_setting() -> None:
    assert {f"MEDBENCH_JUDGE__{name.upper()}" for name in JudgeSettings.model_fields} == set(
        USER_JUDGE_SETTINGS
    )
    assert user_judge_env(
        {"medbench_judge__panel_rule": "mean", "MEDBENCH_JUDGE__NOPE": "1", "PATH": "/bin"}
    ) == {"MEDBENCH_JUDGE__PANEL_RULE": "mean"}


def test_make_run_hands_the_users_judge_settings_to_the_judge_scorer_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDBENCH_JUDGE__MODELS", MODELS)
    monkeypatch.setenv("medbench_judge__panel_rule", "mean")
    # What the stack pins itself never comes from the shell, judge-like or not.
    monkeypatch.setenv("MEDBENCH_GRPC_PORT", "1")
    monkeypatch.setenv("MEDBENCH_AUTH__SERVICE_TOKEN", "from-the-shell")
    monkeypatch.setenv("MEDBENCH_STRAY_SETTING", "from-the-shell")
    stack = _stack(tmp_path, user_judge_settings=True)
    judge = stack.env("judge_scorer")
    assert judge["MEDBENCH_JUDGE__MODELS"] == MODELS
    assert judge["MEDBENCH_JUDGE__PANEL_RULE"] == "mean"
    assert judge["MEDBENCH_GRPC_PORT"] == str(stack.grpc_port("judge_scorer"))
    assert judge["MEDBENCH_AUTH__SERVICE_TOKEN"] == stack.service_tokens["judge_scorer"]
    assert "from-the-shell" not in stack.service_tokens.values()
    assert "MEDBENCH_STRAY_SETTING" not in judge
    for name in stack.names:
        if name != "judge_scorer":
            assert not any(k.upper().startswith("MEDBENCH_JUDGE__") for k in stack.env(name))
    assert judge_line(stack) == "judge: qwen"

    # Tests (the default) and make demo-llm (its own judge) do not take them.
    assert "MEDBENCH_JUDGE__MODELS" not in _stack(tmp_path).env("judge_scorer")
    assert "no judge configured" in judge_line(_stack(tmp_path))
    own = demo_llm.judge_env("http://127.0.0.1:5/v1", "k")
    replaced = _stack(tmp_path, service_env={"judge_scorer": own}).env("judge_scorer")
    assert replaced["MEDBENCH_JUDGE__MODELS"] == own["MEDBENCH_JUDGE__MODELS"]
    assert "MEDBENCH_JUDGE__PANEL_RULE" not in replaced


def test_demo_llm_judge_is_a_valid_llama_cpp_judge() -> None:
    env = demo_llm.judge_env("http://127.0.0.1:5/v1", "key")
    [model] = [JudgeModel.model_validate(m) for m in json.loads(env["MEDBENCH_JUDGE__MODELS"])]
    assert (model.model, model.structured, model.max_concurrency, model.vision) == (
        demo_llm.MODEL_ALIAS, "json_object_schema", 1, False,
    )  # fmt: skip
    assert model.api_key.get_secret_value() == "key"
    assert JudgeSettings(timeout_s=float(env["MEDBENCH_JUDGE__TIMEOUT_S"])).timeout_s >= 120


def test_demo_pool_has_judge_scored_datasets_of_every_llm_dimension() -> None:
    registry = json.loads(REGISTRY.read_text())
    datasets = {d["name"]: d for d in registry["datasets"] if d["track"] == "llm"}
    dimensions = {d["code"] for d in registry["dimensions"] if d["track"] == "llm"}
    judged_dims = {d["dimension"] for d in datasets.values() if "judge" in d["metric"]}
    # safety_ethics has no judge-scored dataset in the registry: MedSafety stands for it.
    assert dimensions - judged_dims == {"safety_ethics"}
    sample = list(read_jsonl(demo_llm.JUDGE_SAMPLE))
    assert {datasets[r["dataset"]]["dimension"] for r in sample} == judged_dims
    for row in sample:
        assert "judge" in datasets[row["dataset"]]["metric"], row["dataset"]
        assert row["key_points"] and row["reference"] and row["answer_format"] == "free_text"
    bank_ids = {r["item_id"] for r in read_jsonl(sample_bank() / "items.jsonl")}
    rows = demo_llm.demo_rows([])
    assert len(rows) == 68 and not bank_ids & {r["item_id"] for r in sample}
    assert {datasets[r["dataset"]]["dimension"] for r in rows} == dimensions
    five = demo_llm.demo_rows(["MedSafety", "MedHC", "MedExplain", "MedDiag", "MedTerm"])
    assert len(five) == 23
    assert {datasets[r["dataset"]]["dimension"] for r in five} == dimensions
    with pytest.raises(DevstackError, match="no items of \\['MedNope'\\]"):
        demo_llm.demo_rows(["MedNope"])


def test_key_point_recall_is_the_judges_only_when_a_judge_is_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the chart decides it: the metric scorer leaves key points to the judge when the judge
    scorer is given judge models, and matches them lexically (its labelled fallback) when not."""

    def mode(stack: ServiceStack) -> str:
        return stack.env("metric_scorer")["MEDBENCH_KEY_POINT_RECALL"]

    monkeypatch.setenv("MEDBENCH_JUDGE__MODELS", MODELS)
    # make run with the user's judge; the same shell in a test stack (which drops it).
    assert mode(_stack(tmp_path, user_judge_settings=True)) == "judge"
    assert mode(_stack(tmp_path)) == "lexical"
    monkeypatch.delenv("MEDBENCH_JUDGE__MODELS")
    assert mode(_stack(tmp_path, user_judge_settings=True)) == "lexical"
    # A stack's own judge, for all services or for the judge scorer alone (make demo-llm).
    own = demo_llm.judge_env("http://127.0.0.1:5/v1", "k")
    assert mode(_stack(tmp_path, extra_env=own)) == "judge"
    assert mode(_stack(tmp_path, service_env={"judge_scorer": own})) == "judge"
    # An empty list is no judge; the judge scorer's absence from the stack neither.
    empty = {"MEDBENCH_JUDGE__MODELS": "[]"}
    assert mode(_stack(tmp_path, service_env={"judge_scorer": empty})) == "lexical"
    no_judge = [s for s in SERVICES if s.name != "judge_scorer"]
    assert mode(_stack(tmp_path, extra_env=own, specs=no_judge)) == "lexical"
    # Only the metric scorer is told; an explicit setting wins.
    stack = _stack(tmp_path, extra_env=own)
    assert [n for n in stack.names if "MEDBENCH_KEY_POINT_RECALL" in stack.env(n)] == [
        "metric_scorer"
    ]
    pinned = {"metric_scorer": {"MEDBENCH_KEY_POINT_RECALL": "judge"}}
    assert mode(_stack(tmp_path, service_env=pinned)) == "judge"
