"""03: features: the three streams of a clip (motion, objects, context) and the store that keeps them.

`extractors.build_extractors` makes VideoMAE, DETR and CLIP (pretrained by name, or small random
models); `store.FeatureStore` keeps their float16 output by videoID; `extract.extract_features` runs a
split from decoded clips into the store. Nothing here loads a model at import.
"""
from qvidcap.features.clip_features import ClipFeatures, collate_features
from qvidcap.features.extractors import Extractors, build_extractors, load_extractors
from qvidcap.features.loading import ModelNotAvailableError
from qvidcap.features.store import FeatureStore, FeatureStoreError

__all__ = ["ClipFeatures", "collate_features", "Extractors", "build_extractors", "load_extractors",
           "ModelNotAvailableError", "FeatureStore", "FeatureStoreError"]
