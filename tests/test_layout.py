"""The package follows the notebooks: a stage imports the stages before it and the ground, never a later one."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "qvidcap"
# in study order; the ground (config, video, the package itself) is open to every stage
STAGES = ["ground", "runtime", "data", "features", "model", "training", "evaluation", "serving",
          "planning", "bench", "cli"]
GROUND_MODULES = {"__init__", "config", "video"}


def stage_of(module: str) -> str:
    """`qvidcap.training.train` -> "training"; `qvidcap.config` -> "ground"."""
    parts = module.split(".")
    assert parts[0] == "qvidcap", module
    if len(parts) == 1 or parts[1] in GROUND_MODULES or parts[1] == "__version__":
        return "ground"
    if parts[1] not in STAGES:
        raise AssertionError(f"{module} belongs to no stage; add its sub-package to STAGES in {__file__}")
    return parts[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every `qvidcap...` module `path` imports, at the top or inside a function."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "qvidcap"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "qvidcap":
            if node.module == "qvidcap":  # `from qvidcap import env` names a module of the package
                found += [(node.lineno, f"qvidcap.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}:{node.lineno}: relative import; the kit spells imports out in full")
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_only_the_ground_and_the_cli_sit_at_the_top():
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert top == ["__init__", "cli", "config", "video"]
    assert [p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"] != []


def test_every_sub_package_says_what_it_holds():
    for folder in (p for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"):
        doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text()))
        assert doc, f"{folder.name}/__init__.py has no docstring"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_flow_from_later_stages_to_earlier_ones(path):
    own = stage_of(module_name(path)) if path.stem != "cli" or path.parent != PACKAGE else "cli"
    later = [(line, name) for line, name in imported_modules(path)
             if STAGES.index(stage_of(name) if name != "qvidcap.cli" else "cli") > STAGES.index(own)]
    assert not later, f"{path.relative_to(PACKAGE)} ({own}) imports later stages: " + ", ".join(
        f"{name} (line {line})" for line, name in later)


def test_the_checker_sees_a_reaching_import(tmp_path):
    fake = tmp_path / "qvidcap" / "model" / "bad.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("def f():\n    from qvidcap.training.train import train\n")
    names = [name for _, name in imported_modules(fake)]
    assert names == ["qvidcap.training.train"]
    assert STAGES.index(stage_of(names[0])) > STAGES.index("model")
    with pytest.raises(AssertionError, match="no stage"):
        stage_of("qvidcap.metrics")


def test_paths_computed_from_a_modules_file_still_point_at_the_checkout():
    from qvidcap.runtime import env, study

    assert (env.REPO_ROOT / "pyproject.toml").is_file() and (env.REPO_ROOT / "qvidcap").is_dir()
    assert (study.NOTEBOOK_DIR / "00_setup.ipynb").is_file()
