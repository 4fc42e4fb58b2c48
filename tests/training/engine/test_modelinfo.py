"""Model-folder inspection: what the registry records, read from headers, and a clear reason for every broken folder."""

from __future__ import annotations

import json
import shutil

import pytest

from training.engine.modelinfo import ModelDirError, inspect_model_dir

SMALL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


@pytest.fixture(scope="module")
def demo_state_dict(demo_model_dir):
    from safetensors.torch import load_file

    return load_file(demo_model_dir / "model.safetensors")


@pytest.fixture
def folder(tmp_path, demo_model_dir):
    """A copy of the demo model folder that a test may break."""
    target = tmp_path / "model"
    shutil.copytree(demo_model_dir, target)
    return target


def test_it_describes_the_demo_model(demo_model_dir):
    from transformers import AutoTokenizer

    info = inspect_model_dir(demo_model_dir)

    assert info["architecture"] == "Qwen3ForCausalLM"
    assert info["model_type"] == "qwen3"
    assert info["dtype"] == "float32"
    assert info["has_tokenizer"] is True
    assert info["has_chat_template"] is True
    assert info["vocab_size"] == len(AutoTokenizer.from_pretrained(demo_model_dir))
    assert (info["hidden_size"], info["num_layers"], info["num_attention_heads"], info["num_key_value_heads"]) == (256, 4, 4, 2)
    assert info["context_length"] == 2048
    assert info["weights_format"] == "safetensors"
    names = [f["name"] for f in info["files"]]
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= set(names)
    assert info["weights_bytes"] == (demo_model_dir / "model.safetensors").stat().st_size
    json.dumps(info)  # stored as JSON on the BaseModel row


def test_the_parameter_count_is_the_loaded_models(demo_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(demo_model_dir)

    assert inspect_model_dir(demo_model_dir)["num_parameters"] == sum(p.numel() for p in model.parameters())


def test_sharded_safetensors_are_counted_across_shards(tmp_path, demo_model_dir, demo_state_dict):
    from safetensors.torch import save_file

    target = tmp_path / "sharded"
    target.mkdir()
    for name in SMALL_FILES:
        shutil.copy(demo_model_dir / name, target / name)
    names = sorted(demo_state_dict)
    halves = {"model-00001-of-00002.safetensors": names[: len(names) // 2], "model-00002-of-00002.safetensors": names[len(names) // 2 :]}
    weight_map = {}
    for shard, keys in halves.items():
        save_file({k: demo_state_dict[k] for k in keys}, str(target / shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(keys, shard))
    (target / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))

    assert inspect_model_dir(target)["num_parameters"] == sum(t.numel() for t in demo_state_dict.values())

    (target / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ModelDirError, match="names model-00002-of-00002.safetensors, which is missing"):
        inspect_model_dir(target)


def test_pytorch_checkpoints_are_counted_too(tmp_path, demo_model_dir, demo_state_dict):
    import torch

    target = tmp_path / "bin"
    target.mkdir()
    for name in SMALL_FILES:
        shutil.copy(demo_model_dir / name, target / name)
    torch.save(demo_state_dict, target / "pytorch_model.bin")

    info = inspect_model_dir(target)
    assert info["weights_format"] == "pytorch"
    assert info["num_parameters"] == sum(t.numel() for t in demo_state_dict.values())


def test_the_dtype_comes_from_the_weights_when_config_lacks_it(tmp_path, demo_model_dir, demo_state_dict):
    from safetensors.torch import save_file

    target = tmp_path / "bf16"
    target.mkdir()
    for name in SMALL_FILES:
        shutil.copy(demo_model_dir / name, target / name)
    config = json.loads((target / "config.json").read_text())
    config.pop("dtype", None)
    config.pop("torch_dtype", None)
    (target / "config.json").write_text(json.dumps(config))
    save_file({k: v.bfloat16() for k, v in demo_state_dict.items()}, str(target / "model.safetensors"))

    assert inspect_model_dir(target)["dtype"] == "bfloat16"


def test_a_chat_template_is_found_in_tokenizer_config_or_in_its_own_file(folder):
    template = (folder / "chat_template.jinja").read_text()
    (folder / "chat_template.jinja").unlink()
    assert inspect_model_dir(folder)["has_chat_template"] is False

    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": template}))
    assert inspect_model_dir(folder)["has_chat_template"] is True


def test_a_folder_without_tokenizer_is_refused_unless_asked_not_to(folder):
    (folder / "tokenizer.json").unlink()

    with pytest.raises(ModelDirError, match="no tokenizer in .*: expected tokenizer.json"):
        inspect_model_dir(folder)
    assert inspect_model_dir(folder, require_tokenizer=False)["has_tokenizer"] is False


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(ModelDirError, match=f"no folder at {tmp_path / 'nowhere'}"):
        inspect_model_dir(tmp_path / "nowhere")


def test_a_file_is_not_a_model_folder(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"x")

    with pytest.raises(ModelDirError, match="is a file, not a model folder"):
        inspect_model_dir(tmp_path / "model.safetensors")


def test_a_folder_without_config_is_not_a_hugging_face_folder(folder):
    (folder / "config.json").unlink()

    with pytest.raises(ModelDirError, match="no config.json in .*: not a Hugging Face model folder"):
        inspect_model_dir(folder)


def test_a_config_that_is_not_json_is_refused_with_the_position(folder):
    (folder / "config.json").write_text('{"model_type": "qwen3",')

    with pytest.raises(ModelDirError, match=r"config.json is not valid JSON: .* \(line 1, column"):
        inspect_model_dir(folder)


def test_a_folder_without_weights_is_refused(folder):
    (folder / "model.safetensors").unlink()

    with pytest.raises(ModelDirError, match="no weights in .*: expected model.safetensors"):
        inspect_model_dir(folder)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x01\x00", "shorter than its 8-byte header length"),
        ((10**12).to_bytes(8, "little") + b"{}", "header length .* is impossible"),
        ((40).to_bytes(8, "little") + b'{"a": ', "truncated"),
        ((6).to_bytes(8, "little") + b"\xff\xfe{}{}", "header is not JSON"),
    ],
)
def test_a_corrupt_safetensors_file_is_refused(folder, content, message):
    (folder / "model.safetensors").write_bytes(content)

    with pytest.raises(ModelDirError, match=f"model.safetensors .*{message}|model.safetensors is {message}"):
        inspect_model_dir(folder)
