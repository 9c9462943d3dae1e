"""The real models' load paths, offline: each checkpoint written in the Hub cache layout by the test, with the
config values the published checkpoint carries, then loaded through the kit by its real name with the
network cut (`hub_layout.offline_hub`): no connect attempted, no second download, the same classes.

Where a real-size weight file would be too large for a fast test, only the number of layers (or the
vocabulary) is shrunk, and said so next to the config; the full-size variants are marked slow.
"""
from __future__ import annotations

import contextlib
import copy
import re

import pytest
import torch

from hub_layout import offline_hub

# --- DeepSeek-VL2: only the language tensors are read, once per process ------------------------------------


class RecordingSafeOpen:
    """Wraps safetensors.safe_open, recording every tensor read."""

    def __init__(self, real):
        self.real, self.read = real, []

    def __call__(self, *args, **kwargs):
        handle = self.real(*args, **kwargs)
        recorder = self

        class Handle:
            def __enter__(self):
                self.f = handle.__enter__()
                return self

            def __exit__(self, *exc):
                return handle.__exit__(*exc)

            def keys(self):
                return self.f.keys()

            def get_tensor(self, key):
                recorder.read.append(key)
                return self.f.get_tensor(key)

            def __getattr__(self, name):
                return getattr(self.f, name)

        return Handle()


@pytest.fixture
def recorded_reads(monkeypatch):
    import safetensors

    from qvidcap.model.deepseek_vl2 import clear_session_weights

    recorder = RecordingSafeOpen(safetensors.safe_open)
    monkeypatch.setattr(safetensors, "safe_open", recorder)
    clear_session_weights()
    yield recorder
    clear_session_weights()


def test_vl2_loader_reads_only_the_language_tensors(tmp_path, recorded_reads):
    from test_deepseek_vl2 import LANG, random_vl2_weights, write_vl2_checkpoint

    from qvidcap.model.deepseek_vl2 import load_deepseek_vl2_language_model

    weights = random_vl2_weights(LANG)
    load_deepseek_vl2_language_model(write_vl2_checkpoint(tmp_path / "vl2", weights))
    language = {k for k in weights if k.startswith("language.")}
    assert len(language) < len(weights)  # the file holds vision / projector / tile tags too
    assert sorted(recorded_reads.read) == sorted(language)


def test_vl2_language_weights_are_read_once_per_process_and_reread_after_training(tmp_path, recorded_reads):
    from test_deepseek_vl2 import LANG, random_vl2_weights, write_vl2_checkpoint

    from qvidcap.model.deepseek_vl2 import load_deepseek_vl2_language_model

    weights = random_vl2_weights(LANG)
    directory = write_vl2_checkpoint(tmp_path / "vl2", weights)
    first = load_deepseek_vl2_language_model(directory)
    reads = len(recorded_reads.read)
    second = load_deepseek_vl2_language_model(directory)
    assert len(recorded_reads.read) == reads  # nothing read again
    assert second is not first and second.lm_head.weight.data_ptr() == first.lm_head.weight.data_ptr()
    ids = torch.tensor([[1, 5, 7, 9]])
    assert torch.equal(first(ids).logits, second(ids).logits)

    load_deepseek_vl2_language_model(directory, reuse=False)
    assert len(recorded_reads.read) == 2 * reads  # reuse=False always reads the file

    optimizer = torch.optim.SGD(first.parameters(), lr=1.0)  # train one model in place ...
    first(ids).logits.sum().backward()
    optimizer.step()
    third = load_deepseek_vl2_language_model(directory)  # ... and a new one still starts from the file
    assert len(recorded_reads.read) == 3 * reads
    assert torch.equal(third.lm_head.weight, weights["language.lm_head.weight"])
    assert not torch.equal(first.lm_head.weight, weights["language.lm_head.weight"])


def test_vl2_decoder_and_tokenizer_by_hub_name_offline(tmp_path, monkeypatch):
    from test_deepseek_vl2 import LANG, random_vl2_weights, write_vl2_checkpoint
    from test_tokenizer import write_vl2_tokenizer

    from qvidcap.config import load_config
    from qvidcap.model.decoder import build_decoder
    from qvidcap.model.deepseek_vl2 import DeepseekCausalLM, clear_session_weights
    from qvidcap.model.tokenizer import build_tokenizer, build_word_tokenizer

    hub = offline_hub(monkeypatch, tmp_path)
    snapshot = hub.snapshot("deepseek-ai/deepseek-vl2-tiny", {})
    weights = random_vl2_weights(LANG)
    write_vl2_checkpoint(snapshot, weights)
    write_vl2_tokenizer(snapshot)
    config = load_config("smoke", {"decoder.kind": "deepseek_vl2", "decoder.name": "", "decoder.dtype": "float32"})
    assert build_tokenizer(config).eos_token_id == 1
    clear_session_weights()
    model = build_decoder(config.decoder, build_word_tokenizer(["a dog runs"]))
    assert isinstance(model, DeepseekCausalLM) and model.config.num_hidden_layers == LANG["num_hidden_layers"]
    assert torch.equal(model.lm_head.weight, weights["language.lm_head.weight"])
    assert hub.attempts == []
    clear_session_weights()


# --- DETR facebook/detr-resnet-50 ----------------------------------------------------------------------------

COCO_LABELS = (  # id -> name as in the published config's id2label (91 ids, "N/A" for the unused ones)
    "N/A person bicycle car motorcycle airplane bus train truck boat traffic_light fire_hydrant N/A stop_sign "
    "parking_meter bench bird cat dog horse sheep cow elephant bear zebra giraffe N/A backpack umbrella N/A N/A "
    "handbag tie suitcase frisbee skis snowboard sports_ball kite baseball_bat baseball_glove skateboard "
    "surfboard tennis_racket bottle N/A wine_glass cup fork knife spoon bowl banana apple sandwich orange "
    "broccoli carrot hot_dog pizza donut cake chair couch potted_plant bed N/A dining_table N/A N/A toilet N/A "
    "tv laptop mouse remote keyboard cell_phone microwave oven toaster sink refrigerator N/A book clock vase "
    "scissors teddy_bear hair_drier toothbrush").replace("_", "\0").split()
COCO_LABELS = [label.replace("\0", " ") for label in COCO_LABELS]
DETR_R50_CONFIG = {  # facebook/detr-resnet-50 config.json, full size (nothing shrunk)
    "architectures": ["DetrForObjectDetection"], "model_type": "detr", "activation_dropout": 0.0,
    "activation_function": "relu", "attention_dropout": 0.0, "auxiliary_loss": False, "backbone": "resnet50",
    "bbox_cost": 5, "bbox_loss_coefficient": 5, "class_cost": 1, "d_model": 256, "decoder_attention_heads": 8,
    "decoder_ffn_dim": 2048, "decoder_layerdrop": 0.0, "decoder_layers": 6, "dice_loss_coefficient": 1,
    "dilation": False, "dropout": 0.1, "encoder_attention_heads": 8, "encoder_ffn_dim": 2048,
    "encoder_layerdrop": 0.0, "encoder_layers": 6, "eos_coefficient": 0.1, "giou_cost": 2,
    "giou_loss_coefficient": 2, "init_std": 0.02, "init_xavier_std": 1.0, "is_encoder_decoder": True,
    "mask_loss_coefficient": 1, "max_position_embeddings": 1024, "num_channels": 3, "num_hidden_layers": 6,
    "num_queries": 100, "position_embedding_type": "sine", "scale_embedding": False, "torch_dtype": "float32",
    "transformers_version": "4.26.0.dev0", "use_pretrained_backbone": True, "use_timm_backbone": True,
    "id2label": {str(i): label for i, label in enumerate(COCO_LABELS)},
    "label2id": {label: i for i, label in enumerate(COCO_LABELS)},
}
DETR_PREPROCESSOR = {  # its preprocessor_config.json
    "do_normalize": True, "do_resize": True, "feature_extractor_type": "DetrFeatureExtractor",
    "format": "coco_detection", "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
    "max_size": 1333, "size": 800,
}


def published_detr_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers 5 names -> the names the published (transformers 4) checkpoint uses."""
    renamed = {}
    for key, value in state.items():
        key = key.replace("model.backbone.", "model.backbone.conv_encoder.").replace(".o_proj.", ".out_proj.")
        renamed[re.sub(r"layers\.(\d+)\.mlp\.fc", r"layers.\1.fc", key)] = value.contiguous()
    return renamed


# the fast tests shrink only the transformer's layers (6 + 6 -> 1 + 1); the ResNet-50 backbone, widths, queries
# and labels stay the published ones. The slow test writes the whole 41.5M-parameter model (166 MB).
DETR_FAST_CONFIG = {**DETR_R50_CONFIG, "encoder_layers": 1, "decoder_layers": 1, "num_hidden_layers": 1}


@pytest.fixture(scope="module")
def detr_weights(tmp_path_factory):
    """Random DETR weights in the published checkpoint's tensor names, one file per config, built once."""
    from safetensors.torch import save_file
    from transformers import DetrConfig, DetrForObjectDetection

    from qvidcap.features.detector import explicit_timm_backbone

    built = {}

    def weights(config: dict):
        key = (config["encoder_layers"], config["decoder_layers"])
        if key not in built:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = DetrForObjectDetection(DetrConfig.from_dict(explicit_timm_backbone(config)))
            state = published_detr_names(model.state_dict())
            path = tmp_path_factory.mktemp("detr") / "model.safetensors"
            save_file(state, str(path), metadata={"format": "pt"})
            built[key] = path, state
        return built[key]

    return weights


@pytest.mark.parametrize("config, extra", [
    pytest.param(DETR_FAST_CONFIG, {}, id="published-1-layer"),
    pytest.param(DETR_FAST_CONFIG, {"backbone_kwargs": {"out_indices": [1, 2, 3, 4], "in_chans": 3}},
                 id="with-backbone-kwargs"),
    pytest.param(DETR_R50_CONFIG, {}, id="published-full-size", marks=pytest.mark.slow),
])
def test_detr_resnet50_by_name_offline_without_a_second_download(tmp_path, monkeypatch, detr_weights, config, extra):
    import timm

    from qvidcap.config import load_config
    from qvidcap.features.detector import ObjectDetector

    path, state = detr_weights(config)
    hub = offline_hub(monkeypatch, tmp_path)
    hub.snapshot("facebook/detr-resnet-50", {"config.json": {**config, **extra},
                                             "preprocessor_config.json": DETR_PREPROCESSOR, "model.safetensors": path})
    created = []
    real_create = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: created.append((a, k)) or real_create(*a, **k))
    features = load_config("smoke", {"features.detector_model": "facebook/detr-resnet-50"}).features
    detector = ObjectDetector.build(features, "cpu", torch.float32)

    assert hub.attempts == []
    assert [(a[0], k.get("pretrained")) for a, k in created] == [("resnet50", False)]  # no ImageNet fetch
    assert type(detector.model).__name__ == "DetrForObjectDetection"
    loaded_config = detector.model.config
    assert type(loaded_config.backbone_config).__name__ == "TimmBackboneConfig"
    assert (loaded_config.d_model, loaded_config.num_queries, loaded_config.num_labels) == (256, 100, 91)
    assert (loaded_config.encoder_layers, loaded_config.decoder_layers) == (config["encoder_layers"], config["decoder_layers"])
    assert detector.label_name(1) == "person" and detector.label_name(90) == "toothbrush"
    assert type(detector.processor).__name__ == "DetrImageProcessor"
    assert list(detector.processor.image_mean) == DETR_PREPROCESSOR["image_mean"]
    loaded = published_detr_names(detector.model.state_dict())
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())  # backbone included: nothing left random


def test_detr_checkpoint_missing_weights_is_refused_not_left_random(tmp_path, monkeypatch, detr_weights):
    from safetensors.torch import save_file

    from qvidcap.config import load_config
    from qvidcap.features.detector import ObjectDetector
    from qvidcap.features.loading import PretrainedMismatchError

    _, state = detr_weights(DETR_FAST_CONFIG)
    partial = {k: v for k, v in state.items() if ".conv_encoder." not in k}  # a checkpoint without its backbone
    save_file(partial, str(tmp_path / "partial.safetensors"), metadata={"format": "pt"})
    hub = offline_hub(monkeypatch, tmp_path)
    hub.snapshot("facebook/detr-resnet-50", {"config.json": DETR_FAST_CONFIG, "preprocessor_config.json": DETR_PREPROCESSOR,
                                             "model.safetensors": tmp_path / "partial.safetensors"})
    features = load_config("smoke", {"features.detector_model": "facebook/detr-resnet-50"}).features
    with pytest.raises(PretrainedMismatchError, match="backbone"):
        ObjectDetector.build(features, "cpu", torch.float32)


# --- VideoMAE MCG-NJU/videomae-base ------------------------------------------------------------------------

VIDEOMAE_BASE_CONFIG = {  # MCG-NJU/videomae-base config.json: a pre-training checkpoint, full size
    "architectures": ["VideoMAEForPreTraining"], "model_type": "videomae", "attention_probs_dropout_prob": 0.0,
    "decoder_hidden_size": 384, "decoder_intermediate_size": 1536, "decoder_num_attention_heads": 6,
    "decoder_num_hidden_layers": 4, "hidden_act": "gelu", "hidden_dropout_prob": 0.0, "hidden_size": 768,
    "image_size": 224, "initializer_range": 0.02, "intermediate_size": 3072, "layer_norm_eps": 1e-12,
    "norm_pix_loss": True, "num_attention_heads": 12, "num_channels": 3, "num_frames": 16,
    "num_hidden_layers": 12, "patch_size": 16, "qkv_bias": True, "torch_dtype": "float32",
    "transformers_version": "4.22.0.dev0", "tubelet_size": 2, "use_mean_pooling": False,
}
VIDEOMAE_PREPROCESSOR = {  # its preprocessor_config.json
    "crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "do_normalize": True, "do_rescale": True,
    "do_resize": True, "image_mean": [0.485, 0.456, 0.406], "image_processor_type": "VideoMAEImageProcessor",
    "image_std": [0.229, 0.224, 0.225], "resample": 2, "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 224},
}
# fast: 1 encoder and 1 decoder layer instead of 12 and 4 (all widths, patch, frames as published)
VIDEOMAE_FAST_CONFIG = {**VIDEOMAE_BASE_CONFIG, "num_hidden_layers": 1, "decoder_num_hidden_layers": 1}


def _sinusoid_table(n_position: int, d_hid: int) -> torch.Tensor:
    """transformers' VideoMAE position table, vectorised: its Python double loop takes seconds at 1568 x 768."""
    import numpy as np

    exponents = 2 * (np.arange(d_hid) // 2) / d_hid
    table = np.arange(n_position)[:, None] / np.power(10000, exponents)[None, :]
    table[:, 0::2], table[:, 1::2] = np.sin(table[:, 0::2]), np.cos(table[:, 1::2])
    return torch.FloatTensor(table).unsqueeze(0)


@pytest.fixture(scope="module")
def fast_sinusoids():
    from transformers.models.videomae import modeling_videomae

    real = modeling_videomae.get_sinusoid_encoding_table
    assert torch.allclose(_sinusoid_table(40, 24), real(40, 24), atol=1e-6)
    modeling_videomae.get_sinusoid_encoding_table = _sinusoid_table
    yield
    modeling_videomae.get_sinusoid_encoding_table = real


@pytest.fixture(scope="module")
def videomae_weights(tmp_path_factory, fast_sinusoids):
    """Random VideoMAEForPreTraining weights (the published checkpoint's class), one file per config, built once."""
    from safetensors.torch import save_file
    from transformers import VideoMAEConfig, VideoMAEForPreTraining

    built = {}

    def weights(config: dict, drop: str = ""):
        layers = config["num_hidden_layers"]
        if layers not in built:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = VideoMAEForPreTraining(VideoMAEConfig.from_dict(config))
            built[layers] = {k: v.contiguous() for k, v in model.state_dict().items()}
        state = {k: v for k, v in built[layers].items() if not (drop and drop in k)}
        path = tmp_path_factory.mktemp("videomae") / "model.safetensors"
        save_file(state, str(path), metadata={"format": "pt"})
        return path, state

    return weights


def write_videomae(hub, weights, config: dict, preprocessor: dict | None = VIDEOMAE_PREPROCESSOR, drop: str = ""):
    path, state = weights(config, drop)
    files = {"config.json": config, "model.safetensors": path}
    if preprocessor is not None:
        files["preprocessor_config.json"] = preprocessor
    hub.snapshot("MCG-NJU/videomae-base", files)
    return state


@pytest.mark.parametrize("config", [pytest.param(VIDEOMAE_FAST_CONFIG, id="1-layer"),
                                    pytest.param(VIDEOMAE_BASE_CONFIG, id="full-size", marks=pytest.mark.slow)])
def test_videomae_base_by_name_offline(tmp_path, monkeypatch, videomae_weights, config):
    from qvidcap.config import load_config
    from qvidcap.features.temporal import TemporalExtractor

    hub = offline_hub(monkeypatch, tmp_path)
    state = write_videomae(hub, videomae_weights, config)
    study = load_config("smoke", {"features.temporal_model": "MCG-NJU/videomae-base", "sampling.temporal_frames": 16,
                                  "sampling.temporal_size": 224})
    extractor = TemporalExtractor.build(study.features, study.sampling, "cpu", torch.float32)
    assert hub.attempts == []
    assert type(extractor.model).__name__ == "VideoMAEModel"
    assert (extractor.dim, extractor.num_frames, extractor.image_size, extractor.steps) == (768, 16, 224, 8)
    assert extractor.mean_values == tuple(VIDEOMAE_PREPROCESSOR["image_mean"])
    loaded = extractor.model.state_dict()
    encoder = {k[len("videomae."):]: v for k, v in state.items() if k.startswith("videomae.")}
    assert loaded.keys() == encoder.keys() and all(torch.equal(loaded[k], v) for k, v in encoder.items())
    windows = torch.randint(0, 256, (1, 16, 224, 224, 3), dtype=torch.uint8)
    assert extractor(windows).shape == (1, 8, 768)


def test_videomae_normalises_with_the_checkpoints_own_mean_and_std(tmp_path, monkeypatch, videomae_weights):
    from qvidcap.config import load_config
    from qvidcap.features.temporal import TemporalExtractor

    hub = offline_hub(monkeypatch, tmp_path)
    halves = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    write_videomae(hub, videomae_weights, VIDEOMAE_FAST_CONFIG, {**VIDEOMAE_PREPROCESSOR, **halves})
    study = load_config("smoke", {"features.temporal_model": "MCG-NJU/videomae-base", "sampling.temporal_frames": 16,
                                  "sampling.temporal_size": 224})
    extractor = TemporalExtractor.build(study.features, study.sampling, "cpu", torch.float32)
    assert extractor.describe()["mean"] == [0.5, 0.5, 0.5] and extractor.std.flatten().tolist() == [0.5, 0.5, 0.5]


def test_videomae_checkpoint_with_encoder_weights_missing_is_refused(tmp_path, monkeypatch, videomae_weights):
    from qvidcap.config import load_config
    from qvidcap.features.loading import PretrainedMismatchError
    from qvidcap.features.temporal import TemporalExtractor

    hub = offline_hub(monkeypatch, tmp_path)
    write_videomae(hub, videomae_weights, VIDEOMAE_FAST_CONFIG, drop="videomae.encoder.layer.0.attention")
    study = load_config("smoke", {"features.temporal_model": "MCG-NJU/videomae-base", "sampling.temporal_frames": 16,
                                  "sampling.temporal_size": 224})
    with pytest.raises(PretrainedMismatchError, match="encoder.layer.0.attention"):
        TemporalExtractor.build(study.features, study.sampling, "cpu", torch.float32)


# --- open_clip ViT-B-32 / openai ---------------------------------------------------------------------------

def clip_hub_source(arch: str, tag: str) -> tuple[str, str]:
    """The hub repository and file open_clip itself reads for `arch`/`tag` (from its pretrained registry)."""
    import open_clip
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME

    hf_hub = open_clip.get_pretrained_cfg(arch, tag)["hf_hub"]
    repo, filename = hf_hub.rstrip("/"), ""
    if not hf_hub.endswith("/"):
        repo, filename = hf_hub.rsplit("/", 1)
    return repo, filename or HF_SAFE_WEIGHTS_NAME


@contextlib.contextmanager
def vit_b32_layers(layers: int):
    """open_clip's own ViT-B-32 config with `layers` blocks in each tower (12 = as published); nothing else changed."""
    from open_clip import factory

    real = factory._MODEL_CONFIGS["ViT-B-32"]
    shrunk = copy.deepcopy(real)
    shrunk["vision_cfg"]["layers"] = shrunk["text_cfg"]["layers"] = layers
    factory._MODEL_CONFIGS["ViT-B-32"] = shrunk
    try:
        yield
    finally:
        factory._MODEL_CONFIGS["ViT-B-32"] = real


@pytest.fixture(scope="module")
def vit_b32_weights(tmp_path_factory):
    """A random ViT-B-32 (QuickGELU, the OpenAI weights' activation) in float16 as safetensors (~300 MB at 12 layers)."""
    import open_clip
    from safetensors.torch import save_file

    built = {}

    def weights(layers: int):
        if layers not in built:
            with vit_b32_layers(layers), torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = open_clip.create_model("ViT-B-32", force_quick_gelu=True)
            state = {k: v.half().contiguous() for k, v in model.state_dict().items()}
            path = tmp_path_factory.mktemp("clip") / "open_clip_model.safetensors"
            save_file(state, str(path))
            built[layers] = path, state
        return built[layers]

    return weights


# fast: 1 block per tower instead of 12 (widths, patch, image size, vocabulary as published)
@pytest.mark.parametrize("layers", [1, pytest.param(12, marks=pytest.mark.slow, id="full-size")])
def test_open_clip_vit_b32_openai_by_name_offline(tmp_path, monkeypatch, vit_b32_weights, layers):
    from qvidcap.config import load_config
    from qvidcap.features.clip_image import ClipImageEncoder

    path, state = vit_b32_weights(layers)
    repo, filename = clip_hub_source("ViT-B-32", "openai")
    assert repo == "timm/vit_base_patch32_clip_224.openai"
    hub = offline_hub(monkeypatch, tmp_path)
    hub.snapshot(repo, {filename: path})
    study = load_config("smoke", {"features.clip_model": "ViT-B-32", "features.clip_pretrained": "openai"})
    with vit_b32_layers(layers):
        encoder = ClipImageEncoder.build(study.features, study.sampling, "cpu", torch.float32)
    assert hub.attempts == []
    assert type(encoder.model).__name__ == "CLIP" and encoder.name == "ViT-B-32/openai"
    assert (encoder.dim, encoder.image_size, len(encoder.model.visual.transformer.resblocks)) == (512, 224, layers)
    assert type(encoder.model.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    loaded = encoder.model.state_dict()
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k].half(), v) for k, v in state.items())
    assert encoder(torch.rand(2, 3, 224, 224)).shape == (2, 512)


# --- sentence-transformers/all-roberta-large-v1 ------------------------------------------------------------

ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
ROBERTA_LARGE_CONFIG = {  # all-roberta-large-v1's config.json (RoBERTa-large)
    "architectures": ["RobertaModel"], "model_type": "roberta", "attention_probs_dropout_prob": 0.1,
    "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1, "gradient_checkpointing": False, "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1, "hidden_size": 1024, "initializer_range": 0.02, "intermediate_size": 4096,
    "layer_norm_eps": 1e-05, "max_position_embeddings": 514, "num_attention_heads": 16, "num_hidden_layers": 24,
    "position_embedding_type": "absolute", "transformers_version": "4.6.1", "type_vocab_size": 1, "use_cache": True,
    "vocab_size": 50265,
}
SENTENCE_MODULES = [  # modules.json
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
]
SENTENCE_POOLING = {"word_embedding_dimension": 1024, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
                    "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}
ROBERTA_TOKENIZER_CONFIG = {
    "tokenizer_class": "RobertaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>",
    "cls_token": "<s>", "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>",
    "add_prefix_space": False, "errors": "replace", "model_max_length": 512,
}


def test_all_roberta_large_v1_by_name_offline(tmp_path, monkeypatch):
    """Shrunk: 1 layer instead of 24, and a 300-token byte-level BPE instead of RoBERTa's 50265 (a real-size
    file is 1.4 GB); every width, the pooling and the normalisation are as published."""
    from hub_layout import SENTENCES, byte_level_bpe
    from safetensors.torch import save_file
    from tokenizers import processors
    from transformers import RobertaConfig, RobertaModel

    from qvidcap.training.text_targets import load_sentence_model

    tokenizer = byte_level_bpe(SENTENCES * 3, ROBERTA_SPECIALS, vocab_size=300)
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), add_prefix_space=False)
    config = {**ROBERTA_LARGE_CONFIG, "num_hidden_layers": 1, "vocab_size": tokenizer.get_vocab_size()}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = RobertaModel(RobertaConfig.from_dict(config), add_pooling_layer=False)
    hub = offline_hub(monkeypatch, tmp_path)
    snapshot = hub.snapshot("sentence-transformers/all-roberta-large-v1", {
        "config.json": config, "modules.json": SENTENCE_MODULES, "1_Pooling/config.json": SENTENCE_POOLING,
        "config_sentence_transformers.json": {"__version__": {"sentence_transformers": "2.0.0", "transformers": "4.6.1",
                                                              "pytorch": "1.8.1"}},
        "sentence_bert_config.json": {"max_seq_length": 128, "do_lower_case": False},
        "tokenizer_config.json": ROBERTA_TOKENIZER_CONFIG, "2_Normalize/.keep": "",
    })
    tokenizer.save(str(snapshot / "tokenizer.json"))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(snapshot / "model.safetensors"),
              metadata={"format": "pt"})

    sentence_model = load_sentence_model("sentence-transformers/all-roberta-large-v1")
    assert hub.attempts == []
    assert type(sentence_model[0].auto_model).__name__ == "RobertaModel"
    dimension = getattr(sentence_model, "get_embedding_dimension", None) or sentence_model.get_sentence_embedding_dimension
    assert dimension() == 1024 and sentence_model.max_seq_length == 128
    embeddings = sentence_model.encode(SENTENCES[:2], convert_to_tensor=True)
    assert embeddings.shape == (2, 1024) and torch.allclose(embeddings.norm(dim=1), torch.ones(2), atol=1e-5)
    # the same numbers as the random RoBERTa's mean-pooled, normalised output: the weights really loaded
    batch = sentence_model.tokenize(SENTENCES[:1])
    assert batch["input_ids"][0, 0] == 0 and batch["input_ids"][0, -1] == 2
    with torch.inference_mode():
        hidden = model.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    expected = torch.nn.functional.normalize(hidden.mean(dim=1), dim=1)[0]
    assert torch.allclose(embeddings[0], expected, atol=1e-5)
