"""Settings of the judge scorer."""

from pydantic import BaseModel, SecretStr

from medbench_runtime.settings import ServiceSettings


class JudgeModel(BaseModel):
    """One judge model behind an OpenAI-compatible server (vLLM in production)."""

    model: str
    base_url: str
    api_key: SecretStr = SecretStr("")
    # Requests in flight to this server at most.
    max_concurrency: int = 32


class JudgeSettings(BaseModel):
    """The judge panel and its contract. MEDBENCH_JUDGE__MODELS is a JSON list of JudgeModel;
    empty means no judge is configured (judge requests are then dead-lettered with the reason).
    """

    models: list[JudgeModel] = []
    # How a panel's scores combine: "mean", "median" or "majority".
    panel_rule: str = "median"
    # Panel spread (max - min, on [0, 1]) above which the item goes to physician review.
    review_spread: float = 0.3
    # A judge + rubric version is calibrated at Cohen's kappa >= this against physicians.
    kappa_threshold: float = 0.80
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
