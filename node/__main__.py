"""``python -m node start ...`` is ``bitinglip node start ...``."""

import sys

from node.cli import main

sys.exit(main(["node", *sys.argv[1:]]))
