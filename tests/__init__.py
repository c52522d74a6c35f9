"""The test suite. Settings every test shares are set here, since this package is imported
before any test module or model library."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Peer processes inherit this: one torch thread each on a 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")
