"""Specification of models.registry: ROOT/NAME/VERSION folders with every artifact, a latest
pointer, NAME@VERSION / NAME@latest resolution, and loading that refuses a model that does not fit
(feature spec, lookback, input width, runtime) with a message saying what differs."""
from __future__ import annotations

import json
import shutil

import pytest

from tradeloop.models.errors import CompatibilityError, RegistryError
from tradeloop.models.features import FeatureSpec
from tradeloop.models.registry import ModelRef, Registry, parse_ref
from tests.test_models_support import TINY_FEATURES, trained


@pytest.fixture
def copy_reg(tmp_path):
    """A private copy of the session registry (tests here edit files)."""
    root, ref = trained("tiny")
    dst = tmp_path / "reg"
    shutil.copytree(root, dst)
    return Registry(dst), ref


def test_a_version_folder_holds_every_artifact():
    root, ref = trained("tiny")
    p = Registry(root).path(ref)
    assert p.parent.name == "tiny" and p.name == "v0001"
    for f in ("weights.pt", "net.json", "model.onnx", "model.int8.onnx", "features.json", "train_config.json",
              "metadata.json"):
        assert (p / f).is_file(), f
    feats = json.loads((p / "features.json").read_text())
    assert feats["hash"] == FeatureSpec(**TINY_FEATURES).hash and feats["spec"]["lookback"] == 16
    meta = json.loads((p / "metadata.json").read_text())
    assert meta["input"] == {"lookback": 16, "n_features": 16} and meta["feature_hash"] == feats["hash"]


def test_references_resolve_and_latest_follows_the_pointer():
    root, _ = trained("tiny")
    reg = Registry(root)
    assert reg.versions("tiny") == ["v0001", "v0002"]  # v0002 was saved with set_latest=False
    assert reg.resolve("tiny@latest") == ModelRef("tiny", "v0001") == reg.resolve("tiny")
    assert str(reg.resolve("tiny@v0002")) == "tiny@v0002"
    assert "tiny" in reg.names()


def test_set_latest_moves_the_pointer(copy_reg):
    reg, _ = copy_reg
    reg.set_latest("tiny@v0002")
    assert reg.resolve("tiny@latest").version == "v0002"
    assert (reg.root / "tiny" / "latest").read_text().strip() == "v0002"


@pytest.mark.parametrize("ref, words", [
    ("nosuch@latest", "no model named 'nosuch'.*models there: .*tiny"),
    ("tiny@v0099", "no version 'v0099'.*v0001, v0002"),
    ("tiny@3", "versions look like v0001"),
    ("../etc@latest", "bad model reference"),
    ("", "bad model reference"),
])
def test_bad_references_are_clear_errors(ref, words):
    root, _ = trained("tiny")
    with pytest.raises(RegistryError, match=words):
        Registry(root).resolve(ref)


def test_parse_ref_defaults_to_latest():
    assert parse_ref("m") == ("m", "latest") and parse_ref("m@v0003") == ("m", "v0003")


def test_loading_refuses_another_feature_spec_and_says_what_differs():
    root, ref = trained("tiny")
    with pytest.raises(CompatibilityError) as e:
        Registry(root).load(ref, "onnx-cpu", spec=FeatureSpec(lookback=16, window=10, rsi=7))
    msg = str(e.value)
    assert "feature spec hash" in msg and "window 20 (model) vs 10 (expected)" in msg
    assert "rsi 14 (model) vs 7 (expected)" in msg and "lookback" not in msg.split("expected):")[1]


def test_loading_refuses_another_lookback_and_input_width():
    root, ref = trained("tiny")
    with pytest.raises(CompatibilityError, match=r"lookback 16 \(model\) vs 64 \(expected\)"):
        Registry(root).load(ref, "onnx-cpu", lookback=64)
    with pytest.raises(CompatibilityError, match=r"input width 16 features \(model\) vs 12 \(expected\)"):
        Registry(root).load(ref, "onnx-cpu", n_features=12)


def test_loading_with_matching_expectations_works():
    root, ref = trained("tiny")
    m = Registry(root).load(ref, "onnx-cpu", spec=FeatureSpec(**TINY_FEATURES), lookback=16, n_features=16)
    assert str(m) == "tiny@v0001 (onnx-cpu)" and m.spec == FeatureSpec(**TINY_FEATURES)


@pytest.mark.parametrize("key, value, message", [
    ("window", 30, "features.json was edited"),                            # an edited spec
    ("version", 0, "feature spec version 0 is not this code's"),           # another kernel version's features
], ids=["edited", "other-kernel-version"])
def test_loading_refuses_a_feature_spec_it_cannot_trust(copy_reg, key, value, message):
    reg, ref = copy_reg
    f = reg.path(ref) / "features.json"
    d = json.loads(f.read_text())
    d["spec"][key] = value
    f.write_text(json.dumps(d))
    with pytest.raises(CompatibilityError, match=message):
        reg.load(ref, "onnx-cpu")


def test_loading_refuses_a_runtime_whose_file_is_missing(copy_reg):
    reg, ref = copy_reg
    (reg.path(ref) / "model.int8.onnx").unlink()
    with pytest.raises(CompatibilityError, match="onnx-cpu-int8 needs model.int8.onnx"):
        reg.load(ref, "onnx-cpu-int8")
    assert reg.load(ref, "onnx-cpu").predict  # the others still load


def test_a_missing_json_file_is_a_registry_error(copy_reg):
    reg, ref = copy_reg
    (reg.path(ref) / "net.json").unlink()
    with pytest.raises(RegistryError, match="net.json is missing"):
        reg.info(ref)


def test_unknown_runtime_is_refused_at_load():
    root, ref = trained("tiny")
    with pytest.raises(CompatibilityError, match="unknown runtime 'gpu'"):
        Registry(root).load(ref, "gpu")


def test_versions_number_upwards_and_half_written_folders_are_ignored(copy_reg):
    reg, ref = copy_reg
    (reg.root / "tiny" / ".tmp-crashed").mkdir()
    net = reg.info(ref).load_net()
    new = reg.save("tiny", net, reg.info(ref).spec, reg.info(ref).net, onnx=False, set_latest=False)
    assert new == ModelRef("tiny", "v0003") and reg.versions("tiny") == ["v0001", "v0002", "v0003"]
    with pytest.raises(CompatibilityError, match="needs model.onnx"):
        reg.load(new, "onnx-cpu")
    assert reg.load(new, "torch-cpu").predict


def test_bad_model_name_is_refused_at_save(tmp_path):
    with pytest.raises(RegistryError, match="bad model name"):
        Registry(tmp_path).save("a/b", None, FeatureSpec(), None)  # type: ignore[arg-type]
