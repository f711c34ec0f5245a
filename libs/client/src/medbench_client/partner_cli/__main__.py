"""python -m medbench_client.partner_cli"""

import sys

from medbench_client.partner_cli.main import main

sys.exit(main())
