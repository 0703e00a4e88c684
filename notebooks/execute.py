"""Execute the notebooks top to bottom and save them with their outputs.

    python notebooks/execute.py                  # every notebook here
    python notebooks/execute.py block_dynamics   # one (the .ipynb suffix is optional)
"""

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
CELL_TIMEOUT = 300  # seconds


def execute(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    # From notebooks/, as Jupyter runs them (frontier.ipynb reads ../experiments/frontier); no per-cell timestamps,
    # so that a re-execution changes only what the cells print.
    NotebookClient(notebook, kernel_name="python3", timeout=CELL_TIMEOUT, record_timing=False,
                   resources={"metadata": {"path": str(HERE)}}).execute()
    nbformat.write(notebook, path)


def main(names: list[str]) -> None:
    available = sorted(HERE.glob("*.ipynb"))
    paths = [HERE / (name if name.endswith(".ipynb") else f"{name}.ipynb") for name in names] or available
    missing = [path.name for path in paths if not path.is_file()]
    if missing:
        raise SystemExit(f"no notebook {', '.join(missing)} in {HERE}; available: {', '.join(p.stem for p in available)}")
    for path in paths:
        execute(path)
        print(f"executed {path.name}")


if __name__ == "__main__":
    main(sys.argv[1:])
