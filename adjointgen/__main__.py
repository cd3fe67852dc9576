"""``python -m adjointgen`` is the ``adjointgen`` command."""

import sys

from adjointgen.tools.cli import main

sys.exit(main())
