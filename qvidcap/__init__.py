"""QVidCap: a notebook-first experiment kit for video captioning.

The notebooks in `notebooks/` tell the study; this package does the work. Nothing here downloads
anything or touches a GPU at import time.

Names used everywhere (shape letters in comments such as `# (B, T, D)`):

| name | meaning |
|---|---|
| B | batch size (clips) |
| T | temporal steps of the motion stream (VideoMAE tokens pooled over space) |
| N | keyframes per clip (`sampling.num_keyframes`) |
| P | object boxes per clip, padded to the longest in the batch |
| Q | learned queries (ObjectHead: `heads.num_object_queries`, Q-Former: `qformer.num_queries`) |
| L | caption tokens |
| D | the heads' common width (`heads.hidden_size`) |
| E | sentence-embedding width of the text targets (`heads.text_embed_dim`) |
| `*_mask` | 1 = real, 0 = padding, shape `(B, P)` or `(B, L)` |
"""
from qvidcap.config import StudyConfig, load_config

__version__ = "0.1.0"
__all__ = ["StudyConfig", "load_config", "__version__"]
