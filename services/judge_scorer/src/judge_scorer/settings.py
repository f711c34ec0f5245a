"""Settings of the judge scorer."""

from medbench_runtime.settings import ServiceSettings


class JudgeScorerSettings(ServiceSettings):
    """Judge-scorer settings (shared MEDBENCH_* groups only, for now)."""

    service_name: str = "judge_scorer"
