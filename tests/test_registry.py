"""The model registry: all 31 seed models, their facts, seeded weights, bad names."""

from __future__ import annotations

import json

import pytest
import torch

from agent import registry
from agent.errors import AgentError
from conftest import run_cli

SEED = ["alexnet", "densenet121", "densenet161", "densenet169", "densenet201", "mnasnet0_5",
        "mnasnet1_0", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "resnet18",
        "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d",
        "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "squeezenet1_0", "squeezenet1_1", "vgg11",
        "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
        "wide_resnet50_2", "wide_resnet101_2"]


def test_registry_has_the_31_seed_models_with_facts():
    assert sorted(registry.MODELS) == sorted(SEED) and len(registry.MODELS) == 31
    for spec in registry.MODELS.values():
        assert spec.input_shape == (3, 224, 224)
        assert spec.num_classes == 1000
        assert spec.params and spec.params > 1e6
        assert spec.gflops and spec.gflops > 0
        assert spec.weights_mb and spec.weights_mb > 1
    assert registry.MODELS["resnet18"].params == 11689512


@pytest.mark.slow
@pytest.mark.parametrize("name", SEED)
def test_every_model_instantiates_with_its_parameter_count(name):
    model = registry.build(name)
    assert not model.training
    assert sum(p.numel() for p in model.parameters()) == registry.MODELS[name].params


def test_random_weights_are_seeded_per_model():
    a = registry.build("squeezenet1_1").state_dict()
    b = registry.build("squeezenet1_1").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        y = registry.build("squeezenet1_1")(x)
    assert y.shape == (1, 1000)


def test_unknown_model_suggests_close_names():
    with pytest.raises(AgentError, match=r"unknown model 'resnet19' \(did you mean resnet18"):
        registry.get("resnet19")
    with pytest.raises(AgentError, match="name the models"):
        registry.resolve([])
    assert registry.resolve([], all_models=True) == list(registry.SEED_MODELS)


@pytest.mark.timeout(120)
def test_pretrained_fails_clearly_without_download_access():
    try:
        registry.build("squeezenet1_1", pretrained=True)
    except AgentError as e:
        assert "cannot load pretrained weights for squeezenet1_1" in str(e)
        assert "\n" not in str(e)
    else:
        pytest.skip("this machine can download torchvision weights (pretrained path works)")


def test_models_cli_json_lists_all_31():
    proc = run_cli("models", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert [m["name"] for m in doc["models"]] == list(registry.SEED_MODELS)
    assert doc["weights"] == "random"
    r18 = next(m for m in doc["models"] if m["name"] == "resnet18")
    assert r18["input_shape"] == [3, 224, 224] and r18["gflops"] == pytest.approx(1.814)


def test_models_cli_table():
    proc = run_cli("models")
    assert proc.returncode == 0, proc.stderr
    assert "wide_resnet101_2" in proc.stdout and "31 models" in proc.stdout


def test_shipped_registry_data_equals_torchvisions_metadata():
    """agent/models.json is what scripts/gen_model_registry.py makes from this torchvision."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(root / "scripts/gen_model_registry.py"), "--check"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


def test_listing_models_never_imports_torch():
    import subprocess
    import sys

    code = ("import sys; from agent.cli import app\n"
            "try: app(['models', '--json'], standalone_mode=False)\n"
            "except SystemExit: pass\n"
            "heavy = sorted(m for m in ('torch', 'torchvision', 'onnx', 'onnxruntime') if m in sys.modules)\n"
            "print('HEAVY', heavy)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stdout, r.stdout[-300:]
    assert json.loads(r.stdout[: r.stdout.rindex("HEAVY")])["models"][10]["name"] == "resnet18"
