"""python -m medbench_client"""

import sys

from medbench_client.cli import main

sys.exit(main())
