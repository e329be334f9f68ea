"""``python -m fwcluster``: the same as the ``fwcluster`` command."""

import sys

from fwcluster.cli.main import main

sys.exit(main())
