"""04: the captioning model: heads, Q-Former, decoders, tokenizers, the `QVidCap` captioner, the feature
standardisation it carries and the checkpoint that rebuilds it."""
from qvidcap.model.captioner import CaptionerOutput, QVidCap, VideoEncoding, build_captioner, link_widths
from qvidcap.model.tokenizer import build_tokenizer, load_tokenizer, pad_token_ids, tokenize_captions

__all__ = [
    "CaptionerOutput", "QVidCap", "VideoEncoding", "build_captioner", "build_tokenizer", "link_widths",
    "load_tokenizer", "pad_token_ids", "tokenize_captions",
]
