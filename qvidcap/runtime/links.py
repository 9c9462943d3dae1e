"""Where the kit lives on GitHub, and the one-click badges built from it (README and every notebook)."""
from __future__ import annotations

GITHUB_REPO = "qvidcap/qvidcap"  # owner/name; forks change this one line and re-run `python -m qvidcap.runtime.links`
BRANCH = "main"


def colab_url(notebook: str) -> str:
    return f"https://colab.research.google.com/github/{GITHUB_REPO}/blob/{BRANCH}/notebooks/{notebook}"


def kaggle_url(notebook: str) -> str:
    return f"https://kaggle.com/kernels/welcome?src=https://github.com/{GITHUB_REPO}/blob/{BRANCH}/notebooks/{notebook}"


def badges(notebook: str) -> str:
    """Markdown for the Open-in-Colab and Open-in-Kaggle badges of one notebook."""
    return (
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(notebook)}) "
        f"[![Open In Kaggle](https://kaggle.com/static/images/open-in-kaggle.svg)]({kaggle_url(notebook)})"
    )


def install_spec() -> str:
    """What `pip install` takes on Colab/Kaggle: the kit from GitHub; torch is left as the image ships it."""
    return f"qvidcap @ git+https://github.com/{GITHUB_REPO}@{BRANCH}"


def write_badges(notebook_dir: str = "notebooks") -> list[str]:
    """Put (or refresh) the badges line at the top of each notebook's first markdown cell."""
    from pathlib import Path

    import nbformat

    changed = []
    for path in sorted(Path(notebook_dir).glob("[0-9][0-9]_*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        first = next(c for c in notebook.cells if c.cell_type == "markdown")
        lines = [line for line in first.source.splitlines() if "colab-badge.svg" not in line]
        first.source = "\n".join([badges(path.name), "", *lines]).replace("\n\n\n", "\n\n")
        nbformat.validate(notebook)
        nbformat.write(notebook, path)
        changed.append(path.name)
    return changed


if __name__ == "__main__":
    print("\n".join(write_badges()))
