import json

import pytest

from qvidcap.config import PROFILES, ConfigError, StudyConfig, load_config, parse_overrides


def test_default_profile_is_smoke_on_mini_data():
    config = load_config()
    assert config.profile == "smoke"
    assert config.data.source == "mini"
    assert config.decoder.kind == "deepseek_small"
    assert config.features.temporal_model == ""


@pytest.mark.parametrize("profile", ["kaggle", "colab"])
def test_gpu_profiles_use_the_original_sizes_and_real_models(profile):
    config = load_config(profile)
    assert config.profile == profile
    assert (config.heads.hidden_size, config.heads.num_object_queries, config.qformer.num_queries) == (1024, 8, 15)
    assert config.features.temporal_model == "MCG-NJU/videomae-base-finetuned-kinetics"
    assert config.features.detector_model == "facebook/detr-resnet-50"
    assert (config.features.clip_model, config.features.clip_pretrained) == ("ViT-B-32", "openai")
    assert config.decoder.name == "deepseek-ai/deepseek-vl2-tiny"
    assert config.decoder.train_mode == "frozen"
    assert config.data.source == "vatex" and not config.data.fallback_to_mini


def test_string_overrides_are_typed_by_the_schema():
    config = load_config("smoke", "train.epochs=3 train.lr=1e-4 data.lenient=false data.kaggle_datasets=a/b,c/d")
    assert config.train.epochs == 3 and isinstance(config.train.epochs, int)
    assert config.train.lr == pytest.approx(1e-4)
    assert config.data.lenient is False
    assert config.data.kaggle_datasets == ("a/b", "c/d")


def test_dict_overrides_and_profile_overrides_compose():
    config = load_config("kaggle", {"train.batch_size": 8, "device": "cpu"})
    assert config.train.batch_size == 8 and config.device == "cpu"
    assert config.heads.hidden_size == 1024  # from the profile, untouched


def test_overrides_do_not_leak_between_configs():
    load_config("smoke", "train.epochs=99")
    assert load_config("smoke").train.epochs == StudyConfig().train.epochs
    assert PROFILES["smoke"] == {}


def test_unknown_key_names_the_key_and_suggests_the_close_one():
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.epoch'.*train\.epochs"):
        load_config("smoke", "train.epoch=3")


@pytest.mark.parametrize("override, message", [
    ("train.epochs=three", r"train\.epochs expects int, got 'three'"),
    ("train.lr=fast", r"train\.lr expects float"),
    ("data.lenient=maybe", r"data\.lenient expects bool"),
])
def test_wrong_type_is_a_clear_error(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("smoke", override)


def test_wrong_type_in_a_dict_is_an_error_too():
    with pytest.raises(ConfigError, match=r"train\.epochs expects int, got True"):
        load_config("smoke", {"train.epochs": True})
    with pytest.raises(ConfigError, match=r"data\.source expects str, got 3"):
        load_config("smoke", {"data.source": 3})


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown profile 'gpu'.*colab.*kaggle.*smoke"):
        load_config("gpu")


def test_malformed_override_string():
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides("train.epochs")


def test_json_round_trip(tmp_path):
    config = load_config("colab", "train.epochs=2")
    path = tmp_path / "config.json"
    config.to_json(path)
    assert StudyConfig.from_json(path) == config
    data = json.loads(path.read_text())
    data["train"]["no_such_field"] = 1
    with pytest.raises(ConfigError, match="train.no_such_field"):
        StudyConfig.from_dict(data)


def test_tuple_of_int_values_are_coerced_and_round_trip():
    config = load_config("smoke", "ablation.seeds=3,4,5 ablation.variants=full,no_object_head")
    assert config.ablation.seeds == (3, 4, 5) and config.ablation.variants == ("full", "no_object_head")
    assert load_config("smoke", {"ablation.seeds": [1, "2"]}).ablation.seeds == (1, 2)
    assert StudyConfig.from_dict(json.loads(config.to_json())).ablation.seeds == (3, 4, 5)
    with pytest.raises(ConfigError, match=r"ablation\.seeds expects comma-separated int values"):
        load_config("smoke", "ablation.seeds=1,two")
    with pytest.raises(ConfigError, match="comma-separated str"):
        load_config("smoke", {"data.kaggle_datasets": [1, 2]})


def test_the_ablation_switches_default_to_the_full_model():
    config = load_config()
    assert (config.heads.object_head, config.heads.action_head, config.heads.global_head) == (True, True, True)
    assert config.qformer.kind == "qformer" and "full" in config.ablation.variants
    assert "lora_decoder" in load_config("kaggle").ablation.variants
    assert "lora_decoder" not in config.ablation.variants


def test_changed_settings_are_the_overrides_that_rebuild_the_config():
    from qvidcap.config import changed_settings

    config = load_config("smoke", {"train.lr": 1e-3, "ablation.seeds": (1, 2), "heads.object_head": False})
    changed = changed_settings(config)
    assert changed == {"train.lr": 1e-3, "ablation.seeds": (1, 2), "heads.object_head": False}
    assert load_config("smoke", changed) == config and changed_settings(load_config("smoke")) == {}
    assert changed_settings(config, base=config) == {}
