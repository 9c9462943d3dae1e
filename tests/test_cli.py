import subprocess
import sys

from qvidcap.cli import COMMANDS, main


def test_every_subcommand_is_available():
    result = subprocess.run([sys.executable, "-m", "qvidcap.cli", "--help"], capture_output=True, text=True, check=True)
    for name in COMMANDS:
        assert name in result.stdout
    for name in COMMANDS:  # each one is implemented, not a placeholder
        help_text = subprocess.run([sys.executable, "-m", "qvidcap.cli", name, "--help"], capture_output=True, text=True)
        assert help_text.returncode == 0, help_text.stderr
        assert "--profile" in help_text.stdout and "--set" in help_text.stdout


def test_bad_override_is_reported_without_a_traceback(capsys):
    assert main(["kaggle", "write", "--username", "u", "--set", "train.epoch=3"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'train.epoch'" in err and "Traceback" not in err
