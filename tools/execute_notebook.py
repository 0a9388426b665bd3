"""Execute a notebook in place with nbclient and keep its outputs (`make notebook`).

Runs every cell on a fresh ipykernel with the notebook's folder as the working directory, then
stores the outputs as a reader sees them: consecutive stream outputs merged, and text that a
carriage return overwrote (progress bars) dropped, so a bar is its last state. The data comes
from the default data directory (`mnistlab data fetch`).

    python tools/execute_notebook.py examples/drill-down.ipynb
"""

import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

OVERWRITTEN = re.compile(r"[^\n]*\r(?!\n)")  # a line's text up to a carriage return


def coalesce_streams(cell: nbformat.NotebookNode) -> None:
    """Merge consecutive outputs of one stream and apply carriage returns."""
    merged: list[nbformat.NotebookNode] = []
    for output in cell.get("outputs", []):
        last = merged[-1] if merged else None
        same_stream = (
            last is not None and last.output_type == "stream" and last.name == output.get("name")
        )
        if output.output_type == "stream" and same_stream:
            last.text += output.text
            continue
        merged.append(output)
    for output in merged:
        if output.output_type == "stream":
            output.text = OVERWRITTEN.sub("", output.text)
    # A bar's closing newline, flushed after the next output, is all that is left of it.
    cell.outputs = [o for o in merged if o.output_type != "stream" or o.text.strip()]


def main(path: str) -> None:
    notebook = nbformat.read(path, as_version=4)
    started = time.perf_counter()
    client = NotebookClient(
        notebook,
        timeout=1200,
        kernel_name="python3",
        resources={"metadata": {"path": str(Path(path).parent)}},
    )
    client.execute()
    for cell in notebook.cells:
        if cell.cell_type == "code":
            coalesce_streams(cell)
    nbformat.write(notebook, path)
    print(f"executed {path} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1])
