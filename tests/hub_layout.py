"""A Hugging Face Hub cache written by a test, read with the network cut: proves a loader by name works offline.

`write_snapshot` lays files out as `huggingface_hub` stores a download (`models--org--name/refs/main`
naming a 40-hex commit, the files under `snapshots/<commit>/`); `offline_hub` points the Hub client at
such a cache, sets HF_HUB_OFFLINE and makes every socket connect raise, recording the attempt, so a
test can assert that nothing reached (or tried to reach) the network, a swallowed attempt included.
"""
from __future__ import annotations

import hashlib
import json
import socket
from dataclasses import dataclass, field
from pathlib import Path


class NetworkBlocked(OSError):
    """Raised by every socket connect inside `offline_hub`."""


@dataclass
class OfflineHub:
    cache: Path  # HF_HUB_CACHE
    attempts: list[str] = field(default_factory=list)  # every connect / lookup tried, as "host:port"

    def snapshot(self, repo_id: str, files: dict[str, object]) -> Path:
        return write_snapshot(self.cache, repo_id, files)


def commit_of(repo_id: str) -> str:
    return hashlib.sha1(repo_id.encode()).hexdigest()  # any 40-hex id will do; stable per repo


def write_snapshot(cache: Path, repo_id: str, files: dict[str, object]) -> Path:
    """Files (str/bytes contents, dict or list = JSON, Path = copied) at `cache/models--org--name/snapshots/<commit>/`."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = commit_of(repo_id)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    for name, content in files.items():
        target = snapshot / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, (dict, list)):
            target.write_text(json.dumps(content, indent=2))
        elif isinstance(content, str):
            target.write_text(content)
        elif isinstance(content, Path):
            target.write_bytes(content.read_bytes())
        else:
            target.write_bytes(content)
    return snapshot


def offline_hub(monkeypatch, root: Path) -> OfflineHub:
    """HF_HOME / HF_HUB_CACHE under `root`, HF_HUB_OFFLINE=1, sockets cut; monkeypatch undoes it all."""
    import huggingface_hub.constants as constants

    hub = OfflineHub(cache=root / "hf" / "hub")
    hub.cache.mkdir(parents=True, exist_ok=True)
    for key, value in {"HF_HOME": str(root / "hf"), "HF_HUB_CACHE": str(hub.cache), "HF_HUB_OFFLINE": "1",
                       "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
                       "TORCH_HOME": str(root / "torch"), "XDG_CACHE_HOME": str(root / "cache")}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(constants, "HF_HOME", str(root / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub.cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    def refuse(address) -> None:
        hub.attempts.append(str(address))
        raise NetworkBlocked(f"test is offline: connect to {address!r} refused")

    monkeypatch.setattr(socket.socket, "connect", lambda self, address: refuse(address))
    monkeypatch.setattr(socket.socket, "connect_ex", lambda self, address: refuse(address))
    monkeypatch.setattr(socket, "create_connection", lambda address, *a, **k: refuse(address))
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, port, *a, **k: refuse((host, port)))
    return hub


def byte_level_bpe(texts: list[str], specials: list[str], vocab_size: int = 400):
    """A small byte-level BPE `tokenizers.Tokenizer` (GPT-2 / RoBERTa / DeepSeek style) trained on `texts`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


SENTENCES = ["A man, in a red coat, walks his dog.", "a woman rides a bike down the street",
             "two dogs play in the park!", "Someone is cooking pasta in a kitchen; he stirs it."]
