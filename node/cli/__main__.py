"""``python -m node.cli ...`` is ``bitinglip ...``."""

import sys

from node.cli.main import main

sys.exit(main())
