"""python -m gateway"""

import asyncio

from gateway import app
from gateway.settings import GatewaySettings
from medbench_runtime.logging import configure_logging


def main() -> None:
    settings = GatewaySettings()
    configure_logging(service=settings.service_name, level=settings.log_level)
    asyncio.run(app.serve(settings))


if __name__ == "__main__":
    main()
