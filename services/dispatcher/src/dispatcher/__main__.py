"""python -m dispatcher"""

import asyncio

from dispatcher import app
from dispatcher.settings import DispatcherSettings
from medbench_runtime.logging import configure_logging


def main() -> None:
    settings = DispatcherSettings()
    configure_logging(service=settings.service_name, level=settings.log_level)
    asyncio.run(app.serve(settings))


if __name__ == "__main__":
    main()
