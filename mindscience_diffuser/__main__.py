"""``python -m mindscience_diffuser``: the command line (see :mod:`mindscience_diffuser.cli`)."""
import sys

from .cli import main

sys.exit(main())
