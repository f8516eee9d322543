"""``python -m ctdn`` is the ``ctdn`` command."""

import sys

from .cli import main

sys.exit(main())
