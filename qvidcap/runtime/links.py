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


def bootstrap_cell_source(remember: bool = False) -> str:
    """The first code cell of every notebook (after its parameters), made from `install_spec` so the
    repository is named in one place: install the kit when it is missing (a local checkout, `kit_source`,
    or GitHub; never torch), then `qvidcap.runtime.bootstrap.bootstrap`."""
    call = "bootstrap(profile, overrides, mount_drive=mount_drive" + (", remember=True)" if remember else ")")
    return "\n".join([
        "import importlib, importlib.util, os, subprocess, sys",
        'if importlib.util.find_spec("qvidcap") is None:  # a fresh Colab/Kaggle runtime: install the kit, never torch',
        f'    source = kit_source or (".." if os.path.isfile("../pyproject.toml") else "{install_spec()}")',
        '    if subprocess.run([sys.executable, "-m", "pip", "install", "-q", source]).returncode != 0:',
        '        raise RuntimeError(f"could not install the kit from {source!r}: turn on the internet, or set kit_source "',
        '                           "to a checkout, wheel or zip of it")',
        "    importlib.invalidate_caches()",
        "from qvidcap.runtime.bootstrap import bootstrap",
        f"cfg, env = {call}",
    ])


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
