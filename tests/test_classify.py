"""The image classification service: images that scikit-image ships (never downloaded),
preprocessing equal to torchvision's transforms, and a real Triton ensemble
(preprocessing -> the agent's ONNX engine -> softmax with ImageNet labels) equal to
torchvision's preprocessing + eager PyTorch, over HTTP, gRPC and plain JSON."""

from __future__ import annotations

import base64
import importlib.resources
import io
import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from agent.classify.imagenet import Preprocessing, decode_image, preprocess, softmax
from agent.errors import AgentError
from conftest import error_line, run_cli

SAMPLES = importlib.resources.files("skimage") / "data"  # files only: skimage itself is not imported


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def portrait_jpeg() -> bytes:
    im = Image.open(io.BytesIO(sample("chelsea.png"))).convert("RGB").rotate(90, expand=True)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def torchvision_input(data: bytes, model: str) -> np.ndarray:
    from torchvision.models import get_model_weights

    return get_model_weights(model).DEFAULT.transforms()(Image.open(io.BytesIO(data)).convert("RGB")).numpy()


@pytest.mark.parametrize("model", ["resnet18", "resnet50"])  # resize 256 and 232
def test_preprocessing_equals_torchvisions_transform(model):
    p = Preprocessing.of(model)
    for data in (sample("chelsea.png"), sample("coffee.png"), sample("camera.png"), portrait_jpeg()):
        ours = preprocess(data, p)
        assert ours.shape == (3, 224, 224) and ours.dtype == np.float32
        np.testing.assert_allclose(ours, torchvision_input(data, model), rtol=0, atol=1e-6)
    assert np.array_equal(preprocess(base64.b64encode(sample("coffee.png")), p), preprocess(sample("coffee.png"), p))


def test_undecodable_bytes_are_one_clear_error():
    for bad in (b"", b"not an image", base64.b64encode(b"still not an image")):
        with pytest.raises(AgentError, match="not an image Pillow can read"):
            decode_image(bad)


@pytest.fixture(scope="module")
def node(built_engines, tmp_path_factory):
    from agent.triton.server import ServerSettings, start, stop
    from testing.ports import free_port

    root = tmp_path_factory.mktemp("classify")
    engines = root / "engines"
    shutil.copytree(built_engines, engines, ignore=shutil.ignore_patterns("triton-repo"))
    r = run_cli("repo", "--engines", str(engines), "--repo", str(root / "repo"), "--models", "squeezenet1_1",
                "--formats", "onnx", "--classifiers")
    assert r.returncode == 0, r.stderr
    again = run_cli("repo", "--engines", str(engines), "--repo", str(root / "repo"), "--models", "squeezenet1_1",
                    "--formats", "onnx", "--classifiers")
    assert again.returncode == 0 and "written" not in again.stdout, again.stdout  # idempotent
    # what bench.yml runs with inferfleet_bench_classifiers: the build's repository step writes them too
    build = run_cli("build-engines", "--models", "squeezenet1_1", "--formats", "onnx", "--max-batch", "4",
                    "--engines", str(engines), "--repo", str(root / "built-repo"), "--classifiers", timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    assert {"squeezenet1_1_classifier", "squeezenet1_1_preprocess", "imagenet_postprocess"} <= {
        d.name for d in (root / "built-repo").iterdir()}
    s = ServerSettings(repo=root / "repo", http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                       state_dir=root / "state")
    started = start(s, timeout=240)
    try:
        assert not started.report.failed, started.report
        yield {"engines": engines, "http": f"127.0.0.1:{s.http_port}", "grpc": f"127.0.0.1:{s.grpc_port}"}
    finally:
        stop(s, quiet=True)


def eager_probs(data: bytes, model: str) -> np.ndarray:
    from agent.runners import eager_runner

    runner = eager_runner(model, precision="fp32", device="cpu")
    return softmax(runner.to_numpy(runner.infer(runner.prepare(torchvision_input(data, model)[None]))))[0]


@pytest.mark.slow
@pytest.mark.triton
@pytest.mark.timeout(600)
def test_served_ensemble_equals_torchvision_and_eager_pytorch(node):
    """Full PROBS of a two-image request vs torchvision preprocessing + eager PyTorch
    (the engine's tolerance), and the CLI's top 5 from the same probabilities."""
    import tritonclient.http as th

    from agent.build.manifest import load_manifest

    rtol = load_manifest(node["engines"]).engines["squeezenet1_1_onnx"].verification.rtol
    images = [sample("chelsea.png"), portrait_jpeg()]
    client = th.InferenceServerClient(node["http"])
    inp = th.InferInput("IMAGE", [2, 1], "BYTES")
    inp.set_data_from_numpy(np.array([[x] for x in images], dtype=np.object_))
    served = client.infer("squeezenet1_1_classifier", [inp]).as_numpy("PROBS")
    assert served.shape == (2, 1000)
    for probs, data in zip(served, images, strict=True):
        ref = eager_probs(data, "squeezenet1_1")
        assert np.abs(probs - ref).max() <= rtol * np.abs(ref).max(), np.abs(probs - ref).max()
        assert probs.sum() == pytest.approx(1.0, abs=1e-4)
    r = run_cli("classify", str(SAMPLES / "chelsea.png"), "--model", "squeezenet1_1", "--url", node["http"],
                "--top-k", "5", "--json")
    assert r.returncode == 0, r.stderr
    top = json.loads(r.stdout)[0]["top"]
    ranked = np.argsort(-served[0], kind="stable")[:5]
    assert [t["class"] for t in top] == [int(i) for i in ranked]
    assert [t["probability"] for t in top] == pytest.approx([float(served[0][i]) for i in ranked], abs=1e-6)
    labels = (node["engines"].parent / "repo" / "squeezenet1_1_classifier" / "labels.txt").read_text().splitlines()
    assert [t["label"] for t in top] == [labels[i] for i in ranked] and labels[285] == "Egyptian cat"


@pytest.mark.slow
@pytest.mark.triton
@pytest.mark.timeout(300)
def test_grpc_plain_json_and_in_process_agree(node):
    chelsea = str(SAMPLES / "chelsea.png")
    answers = []
    for args in (("--url", node["grpc"], "--protocol", "grpc"), ("--local", "--engines", str(node["engines"]))):
        r = run_cli("classify", chelsea, "--model", "squeezenet1_1", "--top-k", "3", "--json", *args)
        assert r.returncode == 0, r.stderr
        answers.append(json.loads(r.stdout)[0]["top"])
    # what the README's curl example sends: KServe v2 JSON, the image as base64 text in a BYTES tensor
    body = {"inputs": [{"name": "IMAGE", "shape": [1, 1], "datatype": "BYTES",
                        "data": [base64.b64encode(sample("chelsea.png")).decode()]}],
            "outputs": [{"name": "PROBS", "parameters": {"classification": 3}}]}
    resp = httpx.post(f"http://{node['http']}/v2/models/squeezenet1_1_classifier/infer", json=body, timeout=60)
    assert resp.status_code == 200, resp.text
    plain = [{"label": s.split(":", 2)[2], "class": int(s.split(":", 2)[1]), "probability": float(s.split(":")[0])}
             for s in resp.json()["outputs"][0]["data"]]
    for got in (answers[1], plain):
        assert [t["class"] for t in got] == [t["class"] for t in answers[0]]
        assert [t["probability"] for t in got] == pytest.approx([t["probability"] for t in answers[0]], abs=1e-5)


@pytest.mark.slow
@pytest.mark.triton
@pytest.mark.timeout(300)
def test_bad_images_and_missing_classifiers_are_one_line_errors(node, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    r = run_cli("classify", str(bad), "--model", "squeezenet1_1", "--url", node["http"])
    assert r.returncode != 0 and "not an image Pillow can read" in error_line(r), r.stderr
    r = run_cli("classify", str(SAMPLES / "chelsea.png"), "--model", "resnet18", "--url", node["http"])
    assert r.returncode != 0 and "resnet18_classifier" in error_line(r), r.stderr
    r = run_cli("classify", str(tmp_path / "missing.png"), "--model", "squeezenet1_1", "--url", node["http"])
    assert r.returncode != 0 and "cannot read" in error_line(r)


@pytest.mark.slow
def test_pretrained_weights_know_a_cat():
    """With torchvision's pretrained weights (nodes that can download them), scikit-image's
    chelsea is a cat among the top 5."""
    from agent.registry import build

    try:
        model = build("resnet18", pretrained=True).eval()
    except AgentError as e:
        pytest.skip(f"pretrained weights cannot be downloaded here: {e}")
    import torch

    with torch.no_grad():
        probs = softmax(model(torch.from_numpy(preprocess(sample("chelsea.png"), Preprocessing.of("resnet18"))[None]))
                        .numpy())[0]
    from agent.registry import imagenet_labels

    top5 = [imagenet_labels()[i] for i in np.argsort(-probs)[:5]]
    assert {"tabby", "tiger cat", "Egyptian cat"} & set(top5), top5


@pytest.mark.slow
@pytest.mark.triton
@pytest.mark.timeout(600)
def test_image_payload_benchmarks_in_process_and_served_and_report_apart(node, tmp_path):
    """`agent bench --input images`: encoded images through the preprocessing, in-process
    (eager and ONNX on the same images, interleaved) and through the classifier ensemble;
    the fleet report keeps them apart from the tensor results ("<backend> images")."""
    from agent.collector.db import make_engine, migrate
    from agent.collector.ingest import ingest
    from agent.fleet.data import build_report
    from agent.schema import ResultDocument

    common = ("--models", "squeezenet1_1", "--engines", str(node["engines"]), "--batch-sizes", "1,2",
              "--duration", "0.3", "--max-windows", "3", "--warmup", "1")
    docs = []
    for name, args in (("inprocess", ("--formats", "eager,onnx", "--input", "images", "--images",
                                      str(SAMPLES / "chelsea.png"), "--rounds", "2")),
                       ("served", ("--target", "triton", "--url", node["http"], "--concurrency", "1",
                                   "--input", "images")),
                       ("tensors", ("--formats", "eager,onnx", "--rounds", "2"))):
        r = run_cli("bench", *common, *args, "--json-file", str(tmp_path / f"{name}.json"), timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        docs.append(ResultDocument.model_validate_json((tmp_path / f"{name}.json").read_text()))
    inproc, served, tensors = docs
    assert {(x.format, x.input) for x in inproc.results} == {("eager", "image"), ("onnx", "image")}
    assert all(x.speedup_vs_eager and x.throughput_ips > 0 for x in inproc.results)
    assert [(x.triton_model, x.format, x.input, x.batch_size) for x in served.results] == [
        ("squeezenet1_1_classifier", "onnx", "image", 1), ("squeezenet1_1_classifier", "onnx", "image", 2)]
    assert all(x.input == "tensor" for x in tensors.results)
    engine = make_engine(f"sqlite:///{tmp_path / 'c.db'}")
    migrate(engine)
    for d in docs:
        assert ingest(engine, d)
    report = build_report(engine)
    engine.dispose()
    backends = {x.backend for x in report.rows}
    assert backends == {"eager", "onnx", "eager images", "onnx images", "triton-onnx images"}
    onnx_images = next(x for x in report.rows if x.backend == "onnx images" and x.batch_size == 1)
    eager_images = next(x for x in inproc.results if x.format == "eager" and x.batch_size == 1)
    assert onnx_images.speedup_vs_eager == pytest.approx(
        onnx_images.throughput_ips / eager_images.throughput_ips, rel=1e-6)  # vs eager on images


@pytest.mark.slow
@pytest.mark.triton
@pytest.mark.timeout(600)
def test_mlperf_scenarios_on_image_payloads(node, tmp_path):
    """LoadGen's offline scenario on encoded images: the QSL holds the JPEG/PNG bytes, each
    query decodes and preprocesses them in-process, or sends them to the classifier ensemble."""
    from agent.schema import ResultDocument

    common = ("--models", "squeezenet1_1", "--formats", "onnx", "--engines", str(node["engines"]),
              "--input", "images", "--images", str(SAMPLES / "chelsea.png"), "--scenario", "offline",
              "--min-duration", "0.5", "--min-queries", "16", "--batch-sizes", "2",
              "--log-dir", str(tmp_path / "logs"))
    got = {}
    for name, args in (("inprocess", ()), ("served", ("--target", "triton", "--url", node["http"],
                                                     "--concurrency", "2"))):
        r = run_cli("bench", *common, *args, "--json-file", str(tmp_path / f"{name}.json"), timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        doc = ResultDocument.model_validate_json((tmp_path / f"{name}.json").read_text())
        [res] = doc.results
        got[name] = res
        assert (res.input, res.format, res.scenario.name) == ("image", "onnx", "offline")
        assert res.scenario.samples >= 16 and res.scenario.metric_value > 0
        assert (Path(res.scenario.log_dir) / "mlperf_log_summary.txt").is_file()
    assert got["inprocess"].triton_model is None
    assert got["served"].triton_model == "squeezenet1_1_classifier"
