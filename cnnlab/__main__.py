"""``python -m cnnlab`` is the ``cnnlab`` command."""

import sys

from .cli import main

sys.exit(main())
