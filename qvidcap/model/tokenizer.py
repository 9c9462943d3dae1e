"""Caption tokenizers: a word-level one built from the training captions, or a pretrained decoder's own.

Every tokenizer returned here has `pad_token_id`, `eos_token_id` and a start token
(`caption_start_id`: BOS, or EOS where the tokenizer has no BOS, as GPT-2 and Qwen do).
`tokenize_captions` appends EOS to every caption, so a decoder trained on its output learns to stop.
"""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Iterable

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from qvidcap.config import StudyConfig

logger = logging.getLogger(__name__)

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"


ROUND_TRIP_SENTENCE = "A man, in a red coat, walks his dog."


class TokenizerError(RuntimeError):
    """A tokenizer that cannot be built or loaded."""


class TokenizerRoundTripError(TokenizerError):
    """A loaded tokenizer whose decode does not give back the text it encoded (lost spaces, stray byte marks)."""


def build_word_tokenizer(captions: Iterable[str], min_count: int = 1) -> PreTrainedTokenizerFast:
    """A lowercase word-level tokenizer (punctuation split off) whose vocabulary is the captions' words.

    Ids: <pad> 0, <s> 1, </s> 2, <unk> 3, then words by falling count (ties alphabetical), so the
    same captions always give the same ids.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    splitter = pre_tokenizers.Whitespace()  # \w+ | [^\w\s]+: words and punctuation apart
    counts: Counter[str] = Counter()
    for caption in captions:
        words = splitter.pre_tokenize_str(normalizer.normalize_str(caption))
        counts.update(word for word, _ in words)
    if not counts:
        raise TokenizerError("build_word_tokenizer got no words: the training captions are empty")
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    vocab = {token: i for i, token in enumerate([PAD, BOS, EOS, UNK, *words])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.normalizer = normalizer
    core.pre_tokenizer = splitter
    core.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins words with spaces, tidies " ." -> "."
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, bos_token=BOS, eos_token=EOS,
                                        unk_token=UNK)
    logger.info("word-level tokenizer: %d words from %d distinct (min count %d)", len(words), len(counts), min_count)
    return tokenizer


def build_tokenizer(config: StudyConfig, train_captions: Iterable[str] | None = None) -> PreTrainedTokenizerBase:
    """The tokenizer the decoder `config.decoder` needs: word-level from `train_captions` for
    `deepseek_small`, otherwise the pretrained checkpoint's (a pad token added if it has none)."""
    kind = config.decoder.kind
    if kind == "deepseek_small":
        if train_captions is None:
            raise TokenizerError("decoder.kind='deepseek_small' builds its vocabulary from the training captions; "
                                 "pass train_captions")
        return build_word_tokenizer(train_captions, config.decoder.small_min_word_count)
    if kind == "deepseek_vl2":
        from qvidcap.model.deepseek_vl2 import resolve_checkpoint_dir

        return load_tokenizer(resolve_checkpoint_dir(config.decoder.name or "deepseek-ai/deepseek-vl2-tiny"))
    if kind == "hf":
        if not config.decoder.name:
            raise TokenizerError("decoder.kind='hf' needs decoder.name (e.g. gpt2 or a local directory)")
        return load_tokenizer(config.decoder.name)
    raise TokenizerError(f"unknown decoder.kind {kind!r}; expected deepseek_small, deepseek_vl2 or hf")


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """A tokenizer saved with `save_pretrained` (or a checkpoint's), with a pad token guaranteed."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except Exception as e:
        raise TokenizerError(f"could not load a tokenizer from {str(path)!r} ({type(e).__name__}: {e}); expected a "
                             "directory written by save_pretrained or a checkpoint directory with tokenizer files") from e
    if tokenizer.eos_token_id is None:
        raise TokenizerError(f"the tokenizer at {str(path)!r} has no EOS token; captions need one to stop")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # pad positions are masked out of the loss anyway
    check_round_trip(tokenizer, path)
    return tokenizer


def check_round_trip(tokenizer: PreTrainedTokenizerBase, source: str | Path = "") -> None:
    """Raise `TokenizerRoundTripError` unless decode(encode(s)) == s on a sentence with spaces and punctuation.

    Some transformers versions load a byte-level BPE labelled `LlamaTokenizerFast` (DeepSeek-VL2's) with
    Llama's SentencePiece decoder, which drops the spaces or keeps the byte marks: every caption would
    come out garbled. Our own word-level tokenizers lowercase by design and are skipped.
    """
    import transformers
    from tokenizers import models

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and isinstance(backend.model, models.WordLevel):
        return
    ids = tokenizer(ROUND_TRIP_SENTENCE, add_special_tokens=False)["input_ids"]
    decoded = tokenizer.decode(ids, skip_special_tokens=True)
    if decoded != ROUND_TRIP_SENTENCE:
        raise TokenizerRoundTripError(
            f"the tokenizer at {str(source)!r} ({type(tokenizer).__name__}, transformers "
            f"{transformers.__version__}) does not round-trip text: {ROUND_TRIP_SENTENCE!r} came back as "
            f"{decoded!r}; upgrade transformers (pip install -U 'transformers>=5.24'), or set "
            f"\"tokenizer_class\": \"PreTrainedTokenizerFast\" in that tokenizer_config.json so its own "
            "tokenizer.json decoder is used")


def caption_start_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The token the decoder reads right after the prefix: BOS, or EOS when there is no BOS."""
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def tokenize_captions(tokenizer: PreTrainedTokenizerBase, captions: list[str], max_tokens: int) -> list[list[int]]:
    """Token ids of each caption with EOS appended, truncated to `max_tokens` tokens EOS included."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens is {max_tokens!r}; at least 1 is needed to hold the EOS token")
    encoded = tokenizer(list(captions), add_special_tokens=False)["input_ids"]
    return [ids[: max_tokens - 1] + [tokenizer.eos_token_id] for ids in encoded]


def pad_token_ids(token_lists: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists into `input_ids (B, L)` and `attention_mask (B, L)` (1 = real token)."""
    length = max(1, max((len(ids) for ids in token_lists), default=1))
    input_ids = torch.full((len(token_lists), length), pad_token_id, dtype=torch.long)  # (B, L)
    attention_mask = torch.zeros(len(token_lists), length, dtype=torch.long)  # (B, L)
    for i, ids in enumerate(token_lists):
        input_ids[i, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
        attention_mask[i, : len(ids)] = 1
    return input_ids, attention_mask
