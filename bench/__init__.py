"""Benchmarks: what routing in Python costs over native cfg script (see bench/README.md)."""

import os
import sys

# The router is imported the way OpenSIPS imports it: from pyscripts/ on sys.path.
PYSCRIPTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pyscripts")
if PYSCRIPTS not in sys.path:
    sys.path.insert(0, PYSCRIPTS)
