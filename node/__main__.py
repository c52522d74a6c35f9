"""``python -m node start ...`` is ``bitinglip node start ...``."""

import sys

from node.cli.main import main

sys.exit(main(["node", *sys.argv[1:]]))
