"""Fetching VATEX from Kaggle: an explicit step that fails with one sentence saying what is missing.

Credentials are looked up in the order the kaggle client reads them (an access token from
`KAGGLE_API_TOKEN` or `access_token`, then the legacy `KAGGLE_USERNAME` + `KAGGLE_KEY` or
`kaggle.json`, in `KAGGLE_CONFIG_DIR` or `~/.kaggle`), only to say clearly when there are none:
kagglehub reads them again itself. The secret is never logged, printed or put in an error: messages
name where the credentials came from, and client errors are redacted before they are chained.
"""
from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from qvidcap.config import StudyConfig
from qvidcap.runtime.env import Environment

logger = logging.getLogger(__name__)

KAGGLE_HOST = "www.kaggle.com"
COMPLETE_FILE = ".qvidcap_download_complete"  # written into a dataset's folder once it is fully downloaded


class MissingCredentialsError(RuntimeError):
    """No Kaggle credentials anywhere the kaggle client looks."""


class DownloadError(RuntimeError):
    """Kaggle could not be reached, refused the credentials, or the download failed."""


@dataclass(frozen=True)
class KaggleCredentials:
    origin: str  # where they were found, e.g. "KAGGLE_API_TOKEN" or "/root/.kaggle/kaggle.json"
    username: str = ""  # "" for access tokens
    secret: str = field(default="", repr=False)  # the token or key: never logged or shown

    def __str__(self) -> str:
        return f"Kaggle credentials from {self.origin}" + (f" (user {self.username})" if self.username else "")


def kaggle_config_dir() -> Path:
    return Path(os.environ.get("KAGGLE_CONFIG_DIR") or "~/.kaggle").expanduser()


def _read_token(path: Path) -> str:
    try:
        return path.read_text().strip() if path.is_file() else ""
    except OSError:
        return ""


def find_kaggle_credentials() -> KaggleCredentials | None:
    """The first credentials found, in the kaggle client's order; None when there are none."""
    token = os.environ.get("KAGGLE_API_TOKEN", "").strip()
    if token:
        from_file = _read_token(Path(token)) if len(token) < 4096 and Path(token).is_file() else ""
        return KaggleCredentials("KAGGLE_API_TOKEN", secret=from_file or token)
    folder = kaggle_config_dir()
    for name in ("access_token", "access_token.txt"):
        token = _read_token(folder / name)
        if token:
            return KaggleCredentials(str(folder / name), secret=token)
    username, key = os.environ.get("KAGGLE_USERNAME", ""), os.environ.get("KAGGLE_KEY", "")
    if username and key:
        return KaggleCredentials("KAGGLE_USERNAME and KAGGLE_KEY", username, key)
    legacy = folder / "kaggle.json"
    if legacy.is_file():
        try:
            values = json.loads(legacy.read_text())
            return KaggleCredentials(str(legacy), str(values["username"]), str(values["key"]))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise MissingCredentialsError(
                f"{legacy} is not a JSON object with \"username\" and \"key\"; download a fresh one from "
                "kaggle.com > Settings > API, or set KAGGLE_API_TOKEN instead"
            ) from e
    return None


def missing_credentials_message(config: StudyConfig) -> str:
    """The one sentence shown when there are no credentials."""
    partial = ""
    if bool(os.environ.get("KAGGLE_USERNAME")) != bool(os.environ.get("KAGGLE_KEY")):
        partial = "only one of KAGGLE_USERNAME and KAGGLE_KEY is set, and "
    return (
        f"Cannot download VATEX from Kaggle: {partial}no Kaggle credentials were found; set KAGGLE_API_TOKEN "
        f"(or KAGGLE_USERNAME and KAGGLE_KEY), put access_token or kaggle.json in {kaggle_config_dir()}, "
        f"attach {config.data.kaggle_datasets[0]} to the Kaggle notebook, or set paths.vatex_input to a local copy."
    )


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def check_network(host: str = KAGGLE_HOST, timeout: float = 5.0) -> None:
    """Fail fast, with one sentence, when Kaggle cannot be reached (instead of a client's long retries).

    Behind an HTTP proxy a direct connection proves nothing, so the check is left to the client there.
    """
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            pass
    except OSError as e:
        raise DownloadError(f"Cannot reach {host} ({type(e).__name__}: {e}); connect to the internet, "
                            "or attach the VATEX dataset / set paths.vatex_input to a local copy.") from e


def _download_one(handle: str, target: Path, secrets: list[str]) -> Path:
    import kagglehub

    if (target / COMPLETE_FILE).is_file():
        logger.info("%s already downloaded to %s", handle, target)
        return target
    target.mkdir(parents=True, exist_ok=True)
    logger.info("downloading Kaggle dataset %s to %s", handle, target)
    try:
        path = Path(kagglehub.dataset_download(handle, output_dir=str(target)))
    except Exception as e:  # kagglehub raises requests, HTTP, auth and backend errors alike
        detail = redact(f"{type(e).__name__}: {e}", secrets)
        refused = "401" in detail or "403" in detail or "Unauthenticated" in detail or "Credential" in detail
        what = "Kaggle refused the credentials" if refused else "The Kaggle download failed"
        cause = e if detail == f"{type(e).__name__}: {e}" else DownloadError(detail)  # never chain a secret
        raise DownloadError(f"{what} for {handle} ({detail}); check the credentials and the dataset name "
                            "(data.kaggle_datasets), or attach the dataset / set paths.vatex_input.") from cause
    (path / COMPLETE_FILE).write_text(handle)
    return path


def download_vatex(config: StudyConfig, env: Environment, force: bool = False) -> Path:
    """The root of a VATEX copy: one already at hand (attached on Kaggle, in the kagglehub cache,
    paths.vatex_input, or downloaded before), else the data.kaggle_datasets downloaded into data_dir/vatex.

    Raises MissingCredentialsError or DownloadError, each with one sentence saying what to supply.
    """
    from qvidcap.data.vatex import find_vatex

    if not force:
        location = find_vatex(config, env)
        if location is not None:
            logger.info("VATEX copy found at %s; nothing to download", location.root)
            return location.root
    credentials = find_kaggle_credentials()
    if credentials is None:
        raise MissingCredentialsError(missing_credentials_message(config))
    logger.info("using %s", credentials)
    check_network()
    root = env.data_dir / "vatex"
    secrets = [credentials.secret, os.environ.get("KAGGLE_KEY", ""), os.environ.get("KAGGLE_API_TOKEN", "")]
    for handle in config.data.kaggle_datasets:
        _download_one(handle, root / handle.split("/")[-1], secrets)
    return root
