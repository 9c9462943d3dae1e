import json
import logging
import traceback

import pytest

from qvidcap import cli
from qvidcap.config import load_config
from qvidcap.data import download
from qvidcap.data.download import (
    DownloadError,
    MissingCredentialsError,
    download_vatex,
    find_kaggle_credentials,
)
from qvidcap.data.prepare import prepare_data
from qvidcap.runtime.env import Environment

FAKE_KEY = "fake-kaggle-key-0123456789abcdef"
TINY_MINI = "data.mini_train_clips=2 data.mini_validation_clips=1 data.mini_test_clips=1 " \
            "data.mini_frame_size=32 data.mini_fps=4 data.mini_seconds=1"


@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    """No Kaggle credentials anywhere, no attached input, no kagglehub cache."""
    for name in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_KERNEL_RUN_TYPE",
                 "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kaggle-config"))
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub-cache"))
    monkeypatch.setattr("qvidcap.runtime.env.KAGGLE_INPUT", tmp_path / "no-kaggle-input")
    (tmp_path / "kaggle-config").mkdir()
    return Environment("local", "cpu", 0, "", tmp_path / "data", tmp_path / "outputs", None)


def vatex_config(extra=""):
    return load_config("smoke", f"data.source=vatex data.fallback_to_mini=false {extra}")


def full_text(error: BaseException) -> str:
    return "".join(traceback.format_exception(error))  # the message, the traceback and every chained cause


def test_missing_credentials_say_what_to_supply_in_one_sentence_without_the_key(clean_env, monkeypatch, caplog, capsys):
    monkeypatch.setenv("KAGGLE_KEY", FAKE_KEY)  # a key without a username is not a credential
    with caplog.at_level(logging.DEBUG), pytest.raises(MissingCredentialsError) as info:
        download_vatex(vatex_config(), clean_env)
    message = str(info.value)
    assert message.count(". ") == 0 and message.endswith(".")
    assert "KAGGLE_API_TOKEN" in message and "paths.vatex_input" in message and "only one of" in message
    out, err = capsys.readouterr()
    assert FAKE_KEY not in full_text(info.value) + caplog.text + out + err


def test_credentials_are_found_in_the_clients_order(clean_env, tmp_path, monkeypatch):
    config_dir = tmp_path / "kaggle-config"
    assert find_kaggle_credentials() is None
    (config_dir / "kaggle.json").write_text(json.dumps({"username": "alice", "key": FAKE_KEY}))
    assert find_kaggle_credentials().origin.endswith("kaggle.json")
    monkeypatch.setenv("KAGGLE_USERNAME", "bob")
    monkeypatch.setenv("KAGGLE_KEY", FAKE_KEY)
    assert find_kaggle_credentials().username == "bob"
    (config_dir / "access_token").write_text("token-from-file\n")
    assert find_kaggle_credentials().secret == "token-from-file"
    monkeypatch.setenv("KAGGLE_API_TOKEN", "token-from-env")
    credentials = find_kaggle_credentials()
    assert credentials.origin == "KAGGLE_API_TOKEN" and credentials.secret == "token-from-env"
    assert "token-from-env" not in repr(credentials) + str(credentials)


def test_a_broken_kaggle_json_is_named_without_its_content(clean_env, tmp_path):
    (tmp_path / "kaggle-config" / "kaggle.json").write_text(f'{{"key": "{FAKE_KEY}"}}')
    with pytest.raises(MissingCredentialsError, match="username") as info:
        find_kaggle_credentials()
    assert FAKE_KEY not in full_text(info.value)


def test_no_network_fails_fast_in_one_sentence_without_the_key(clean_env, monkeypatch, caplog, capsys):
    monkeypatch.setenv("KAGGLE_USERNAME", "alice")
    monkeypatch.setenv("KAGGLE_KEY", FAKE_KEY)

    def unreachable(address, timeout):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(download.socket, "create_connection", unreachable)
    with caplog.at_level(logging.DEBUG), pytest.raises(DownloadError, match="Cannot reach www.kaggle.com") as info:
        download_vatex(vatex_config(), clean_env)
    out, err = capsys.readouterr()
    assert FAKE_KEY not in full_text(info.value) + caplog.text + out + err


def test_client_errors_are_redacted_before_they_are_chained(clean_env, monkeypatch, caplog, capsys):
    import kagglehub

    monkeypatch.setenv("KAGGLE_API_TOKEN", FAKE_KEY)
    monkeypatch.setattr(download, "check_network", lambda *a, **k: None)

    def refuse(handle, output_dir=None, **kwargs):
        raise RuntimeError(f"401 Client Error: Unauthorized for token {FAKE_KEY}")

    monkeypatch.setattr(kagglehub, "dataset_download", refuse)
    with caplog.at_level(logging.DEBUG), pytest.raises(DownloadError, match="refused the credentials") as info:
        download_vatex(vatex_config(), clean_env)
    out, err = capsys.readouterr()
    assert "***" in str(info.value)
    assert FAKE_KEY not in full_text(info.value) + caplog.text + out + err


def fake_kaggle_download(handle, output_dir=None, **kwargs):
    """What kagglehub leaves: the dataset's files under output_dir."""
    from pathlib import Path

    root = Path(output_dir)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    if handle.endswith("vatex0110"):
        rows = [{"videoID": "0wR5jVB-WPk_000417_000427", "enCap": ["a man juggles"] * 10, "chCap": []}]
        (root / "json").mkdir(exist_ok=True)
        (root / "json" / "vatex_training_v1.0.json").write_text(json.dumps(rows))
    else:
        (root / "videos" / "0wR5jVB-WPk_000417_000427.mp4").write_bytes(b"\0")
    return str(root)


def test_download_writes_every_dataset_once_and_then_reuses_the_copy(clean_env, monkeypatch):
    import kagglehub

    calls = []
    monkeypatch.setenv("KAGGLE_API_TOKEN", FAKE_KEY)
    monkeypatch.setattr(download, "check_network", lambda *a, **k: None)
    monkeypatch.setattr(kagglehub, "dataset_download", lambda h, **k: calls.append(h) or fake_kaggle_download(h, **k))
    root = download_vatex(vatex_config(), clean_env)
    assert root == clean_env.data_dir / "vatex" and len(calls) == 3
    assert all((root / h.split("/")[1] / download.COMPLETE_FILE).is_file() for h in calls)
    assert download_vatex(vatex_config(), clean_env) == root and len(calls) == 3
    location = prepare_data(vatex_config(), clean_env)
    assert location.name == "vatex" and len(location.video_dirs) == 3


def test_an_attached_kaggle_copy_needs_no_credentials(clean_env, tmp_path):
    attached = tmp_path / "input" / "vatex0110"
    (attached / "json").mkdir(parents=True)
    (attached / "json" / "vatex_training_v1.0.json").write_text("[]")
    env = Environment("kaggle", "cpu", 0, "", clean_env.data_dir, clean_env.output_dir, tmp_path / "input")
    assert download_vatex(vatex_config(), env) == attached


def test_prepare_data_falls_back_to_mini_or_raises(clean_env, caplog):
    with pytest.raises(MissingCredentialsError):
        prepare_data(vatex_config(TINY_MINI), clean_env)
    config = load_config("smoke", f"data.source=vatex data.fallback_to_mini=true {TINY_MINI}")
    with caplog.at_level(logging.WARNING):
        location = prepare_data(config, clean_env)
    assert location.name == "mini" and "mini dataset instead" in caplog.text
    assert (location.root / "mini_complete.json").is_file()


def test_the_data_command_prints_the_split_table(clean_env, tmp_path, capsys):
    code = cli.main(["data", "--set", f"paths.data_dir={tmp_path / 'cli-data'}",
                     "--set", f"paths.output_dir={tmp_path / 'cli-out'}", *[a for o in TINY_MINI.split() for a in ("--set", o)]])
    out = capsys.readouterr().out
    assert code == 0 and "mini dataset at" in out and "public_test" in out and "with video" in out
    code = cli.main(["data", "--set", f"paths.data_dir={tmp_path / 'cli-data'}", "--set", "data.source=vatex",
                     "--set", "data.fallback_to_mini=false"])
    assert code == 1 and "no Kaggle credentials" in capsys.readouterr().err


def test_the_data_command_says_which_splits_a_copy_lacks(clean_env, tmp_path, capsys):
    copy = tmp_path / "copy"
    copy.mkdir()
    rows = [{"videoID": "0wR5jVB-WPk_000417_000427", "enCap": ["a caption"], "chCap": []}]
    (copy / "vatex_training_v1.0.json").write_text(json.dumps(rows))
    code = cli.main(["data", "--set", "data.source=vatex", "--set", "data.fallback_to_mini=false",
                     "--set", f"paths.vatex_input={copy}", "--set", f"paths.data_dir={tmp_path / 'd'}"])
    out = capsys.readouterr().out
    assert code == 0 and f"vatex dataset at {copy}" in out
    assert "no annotations for: validation, public_test, private_test" in out
