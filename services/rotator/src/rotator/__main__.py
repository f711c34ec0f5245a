"""python -m rotator"""

import asyncio

from medbench_runtime.logging import configure_logging
from rotator import app
from rotator.settings import RotatorSettings


def main() -> None:
    settings = RotatorSettings()
    configure_logging(service=settings.service_name, level=settings.log_level)
    asyncio.run(app.serve(settings))


if __name__ == "__main__":
    main()
