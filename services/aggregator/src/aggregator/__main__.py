"""python -m aggregator"""

import asyncio

from aggregator import app
from aggregator.settings import AggregatorSettings
from medbench_runtime.logging import configure_logging


def main() -> None:
    settings = AggregatorSettings()
    configure_logging(service=settings.service_name, level=settings.log_level)
    asyncio.run(app.serve(settings))


if __name__ == "__main__":
    main()
