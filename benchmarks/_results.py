"""The one way a benchmark reports: print its JSON and write it (atomically) to a results file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_result(result: dict[str, Any], out: str | Path) -> None:
    """Print ``result`` as indented JSON and write it to ``out`` (parents created)."""
    text = json.dumps(result, indent=2)
    print(text)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, out)  # a crash leaves the previous result, never half a file
