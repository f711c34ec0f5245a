"""python -m metric_scorer"""

import asyncio

from medbench_runtime.logging import configure_logging
from metric_scorer import app
from metric_scorer.settings import MetricScorerSettings


def main() -> None:
    settings = MetricScorerSettings()
    configure_logging(service=settings.service_name, level=settings.log_level)
    asyncio.run(app.serve(settings))


if __name__ == "__main__":
    main()
