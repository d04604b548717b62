"""Lumen: a desktop photo manager that finds photos by meaning.

The package `desktop` is the application. Everything in it except `jobs/` (the Qt
threads), `ui/` (the widgets) and `app.py` is the Qt-free core; ARCHITECTURE.md at the
root maps the layers, and tests/test_architecture.py keeps them.
"""

import os

__version__ = "0.1.0"

# Torch's OpenMP threads spin between operators by default, burning the cores that our
# decode threads, the GUI thread and the user's other programs need; on a busy 2-core
# machine that made a text query 7x slower (bench/README numbers). Passive waiting costs
# microseconds per operator. Set here, before anything can import torch (libgomp reads
# it once, when torch loads); a value the user exported wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
