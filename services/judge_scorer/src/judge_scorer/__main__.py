"""python -m judge_scorer"""

import asyncio

from judge_scorer import app
from judge_scorer.settings import JudgeScorerSettings
from medbench_runtime.logging import configure_logging


def main() -> None:
    settings = JudgeScorerSettings()
    configure_logging(service=settings.service_name, level=settings.log_level)
    asyncio.run(app.serve(settings))


if __name__ == "__main__":
    main()
