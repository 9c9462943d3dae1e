"""Fake Colab and Kaggle runtimes for executing a notebook alone, as a user who clicks its badge would.

What is faked, and how close it is to the real thing:

- **A Python without the kit.** `FreshPython` is a virtual environment that sees the kit's dependencies
  (the test venv's site-packages, added by a `.pth` line, so no `.pth` of that venv runs and the
  editable `qvidcap` stays invisible) but not `qvidcap` itself: the notebook's first cell has to install
  it, from the local checkout, with pip, as it would on Colab from GitHub.
- **Colab**: the kernel imports a stand-in `google.colab` at start (as Colab's kernel does), whose
  `drive.mount` makes `<content>/drive/MyDrive`; `QVIDCAP_COLAB_CONTENT` points `/content` at a temporary folder.
- **Kaggle**: `KAGGLE_KERNEL_RUN_TYPE` is set as Kaggle sets it; `QVIDCAP_KAGGLE_ROOT` points `/kaggle` at a
  temporary folder with `input/` (either layout: `input/<slug>` or `input/notebooks/<user>/<slug>`) and `working/`.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAKE_COLAB_DRIVE = '''"""Stand-in for google.colab.drive: mounting makes the MyDrive folder and notes the call."""
from pathlib import Path


def mount(mountpoint, force_remount=False, **kwargs):
    drive = Path(mountpoint) / "MyDrive"
    drive.mkdir(parents=True, exist_ok=True)
    with open(Path(mountpoint).parent / "mount_calls.txt", "a") as log:
        log.write(str(mountpoint) + "\\n")
'''


class FreshPython:
    """A virtual environment with the kit's dependencies and without the kit, plus a Jupyter kernel for it."""

    KERNEL = "qvidcap-fresh"

    def __init__(self, base: Path):
        self.base = base
        self.venv = base / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(self.venv)], check=True)
        self.python = self.venv / "bin" / "python"
        site = Path(subprocess.run([str(self.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   capture_output=True, text=True, check=True).stdout.strip())
        (site / "kit_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        self.kernels = base / "jupyter"
        spec = self.kernels / "kernels" / self.KERNEL
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [str(self.python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "fresh runtime", "language": "python"}))

    def has_kit(self) -> bool:
        probe = subprocess.run([str(self.python), "-c", "import importlib.util as u; print(u.find_spec('qvidcap') is not None)"],
                               capture_output=True, text=True, cwd=self.base)
        return probe.stdout.strip() == "True"

    def remove_kit(self) -> None:
        subprocess.run([str(self.python), "-m", "pip", "uninstall", "-y", "-q", "qvidcap"], capture_output=True)


@dataclass
class HostedRuntime:
    """One faked runtime: its environment variables, its disk, and where the study's outputs land there."""

    kind: str  # "colab", "kaggle" or "kaggle-old" (the older /kaggle/input/<slug> layout)
    root: Path
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def make(cls, kind: str, root: Path) -> "HostedRuntime":
        root.mkdir(parents=True, exist_ok=True)
        if kind == "colab":
            modules = root / "colab_modules"
            (modules / "google" / "colab").mkdir(parents=True)
            (modules / "google" / "colab" / "__init__.py").write_text("")
            (modules / "google" / "colab" / "drive.py").write_text(FAKE_COLAB_DRIVE)
            (modules / "sitecustomize.py").write_text("import google.colab  # Colab's kernel has it imported\n")
            (root / "content").mkdir()
            return cls(kind, root, {"QVIDCAP_COLAB_CONTENT": str(root / "content"), "PYTHONPATH": str(modules)})
        if kind in ("kaggle", "kaggle-old"):
            (root / "kaggle" / "input").mkdir(parents=True)
            (root / "kaggle" / "working").mkdir()
            return cls(kind, root, {"QVIDCAP_KAGGLE_ROOT": str(root / "kaggle"), "KAGGLE_KERNEL_RUN_TYPE": "Interactive"})
        raise ValueError(f"unknown runtime {kind!r}; expected colab, kaggle or kaggle-old")

    @property
    def outputs(self) -> Path:
        """Where the kit puts outputs on this runtime (Drive when mounted on Colab)."""
        if self.kind == "colab":
            drive = self.root / "content" / "drive" / "MyDrive"
            return (drive if drive.is_dir() else self.root / "content") / "qvidcap" / "outputs"
        return self.root / "kaggle" / "working" / "outputs"

    def attach_earlier_version(self, outputs: Path, user: str = "someone", slug: str = "qvidcap-vatex-study") -> Path:
        """Put an earlier notebook version's outputs where Kaggle mounts them, in this runtime's layout."""
        base = self.root / "kaggle" / "input"
        target = (base / slug if self.kind == "kaggle-old" else base / "notebooks" / user / slug) / "outputs"
        shutil.copytree(outputs, target)
        return target


def execute_alone(notebook: str, runtime: HostedRuntime, python: FreshPython, out_dir: Path, monkeypatch,
                  parameters: dict) -> Path:
    """Run one notebook in a fresh kernel of `python` on `runtime`, from the notebooks folder; returns the executed copy."""
    import papermill

    for key in [k for k in os.environ if k.startswith(("QVIDCAP_", "KAGGLE_"))]:
        monkeypatch.delenv(key)
    for key, value in runtime.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("QVIDCAP_HEADLESS", "1")
    monkeypatch.setenv("JUPYTER_PATH", str(python.kernels))
    output = out_dir / notebook
    output.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(str(ROOT / "notebooks" / notebook), str(output), kernel_name=python.KERNEL,
                               cwd=str(ROOT / "notebooks"), parameters=parameters, progress_bar=False,
                               execution_timeout=900)
    return output


def cell_text(executed: Path) -> str:
    """Everything the executed notebook printed, logged or displayed as text."""
    import nbformat

    notebook = nbformat.read(executed, as_version=4)
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)
