"""``python -m metastore.cli``: the ``metastore`` command."""

import sys

from metastore.cli import main

sys.exit(main())
