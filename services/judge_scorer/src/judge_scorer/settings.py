"""Settings of the judge scorer."""

from typing import Literal

from pydantic import BaseModel, Field, SecretStr

from medbench_runtime.settings import ServiceSettings


class JudgeModel(BaseModel):
    """One judge model behind an OpenAI-compatible server (vLLM in production)."""

    model: str
    base_url: str
    api_key: SecretStr = SecretStr("")
    # Requests in flight to this server at most.
    max_concurrency: int = 32
    # How its server takes the verdict's JSON Schema (constrained decoding): "json_schema"
    # (vLLM: response_format json_schema, strict), "json_object_schema" (llama-cpp-python
    # 0.3.x: response_format json_object with a schema) or "none" (the text parser reads it).
    structured: Literal["json_schema", "json_object_schema", "none"] = "none"
    # GPUs serving this model: judging cost counts call wall time x gpus (an estimate).
    gpus: float = Field(default=1, ge=0)
    # A vision-language model: judge requests' items with images go to these judges only (the
    # images as OpenAI image_url content parts); with none, such requests wait, parked.
    vision: bool = False


class JudgeSettings(BaseModel):
    """The judge panel and its contract. MEDBENCH_JUDGE__MODELS is a JSON list of JudgeModel;
    empty means no judge is configured (judge requests are then dead-lettered with the reason).
    """

    models: list[JudgeModel] = []
    # How a panel's scores combine: "mean", "median" or "majority".
    panel_rule: str = "median"
    # Panel spread (max - min, on [0, 1]) above which the item goes to physician review.
    review_spread: float = 0.3
    # A judge + rubric version is calibrated when the lower bound of the 95% interval of its
    # quadratic-weighted Cohen's kappa against physicians is >= this...
    kappa_threshold: float = 0.80
    # ...over at least this many physician-rated answers, per rubric and per dimension rated.
    min_ratings: int = 200
    timeout_s: float = 120.0
    max_attempts: int = 4
    retry_base_delay_s: float = 0.5
    retry_max_delay_s: float = 20.0
    max_tokens: int = 512
    # Items judged concurrently per batch (each judge also has its own max_concurrency).
    batch_concurrency: int = 64
    # Judge requests (Kafka messages) handled at once.
    request_concurrency: int = 4


class JudgeScorerSettings(ServiceSettings):
    """Judge-scorer settings."""

    service_name: str = "judge_scorer"
    judge: JudgeSettings = JudgeSettings()
