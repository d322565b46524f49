"""Execute notebooks in place, top to bottom, with the committed code (``make notebooks``).

Each notebook runs in a fresh kernel from its own folder; the outputs are stored and the
metadata that would change on every run (timings, widget state) is dropped, so that a re-run
without code changes gives a clean diff.

    python .ci/execute_notebooks.py notebooks/*.ipynb
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

KERNEL = "ssdlib"  # registered by `make venv` (ipykernel install --sys-prefix --name ssdlib)
TIMEOUT_S = 1800  # per cell; the longest is the training notebook's on a CPU


def clean(nb: nbformat.NotebookNode) -> None:
    nb.metadata.pop("widgets", None)
    nb.metadata["kernelspec"] = {
        "name": KERNEL,
        "display_name": "Python (ssdlib)",
        "language": "python",
    }
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        cell.metadata.pop("ExecuteTime", None)


def execute(path: Path) -> float:
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    client = NotebookClient(
        nb,
        timeout=TIMEOUT_S,
        kernel_name=KERNEL,
        resources={"metadata": {"path": str(path.parent)}},
        store_widget_state=True,  # False makes nbclient fail on figures in Output widgets
    )
    client.execute()
    clean(nb)
    nbformat.write(nb, path)
    return time.perf_counter() - start


def main(paths: list[str]) -> int:
    os.environ.setdefault("PYTHONHASHSEED", "0")
    for p in paths:
        seconds = execute(Path(p))
        print(f"{p}: executed in {seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
