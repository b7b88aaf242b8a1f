"""``python -m ganray.metrics {fid,train-backbone}``."""

import sys

from ganray.metrics.cli import main

sys.exit(main())
