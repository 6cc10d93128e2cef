"""``python -m jaxhpo``: the command line (see ``jaxhpo.cli``)."""

import sys

from .cli import main

sys.exit(main())
