"""``python -m ganray.data prepare SRC DEST --resolution R ...``"""

import sys

from ganray.data.cli import main

sys.exit(main())
