"""Bad input: one clear line on stderr, a non-zero exit, nothing half-written."""

from __future__ import annotations

import shutil

import pytest

from agent.exporters import tensorrt_status
from conftest import error_line, run_cli

pytestmark = pytest.mark.slow


def test_unknown_model_suggests(tmp_path):
    out = tmp_path / "engines"
    line = error_line(run_cli("build-engines", "--models", "resnet18,resnt50", "--engines", str(out)))
    assert "unknown model 'resnt50' (did you mean resnet50" in line
    assert not out.exists()  # validated before anything was written


def test_unknown_format_and_precision(tmp_path):
    out = tmp_path / "engines"
    line = error_line(run_cli("build-engines", "--models", "resnet18", "--formats", "onnxx",
                              "--engines", str(out)))
    assert "unknown format 'onnxx' (did you mean onnx" in line
    line = error_line(run_cli("build-engines", "--models", "resnet18", "--precision", "int8",
                              "--engines", str(out)))
    assert "unknown precision 'int8'" in line
    assert not out.exists()


def test_tensorrt_without_tensorrt_is_one_line(tmp_path):
    ok, why = tensorrt_status()
    if ok:
        pytest.skip("tensorrt and a GPU are present: the TensorRT path runs here")
    print(f"TensorRT build path skipped here: {why}")
    line = error_line(run_cli("build-engines", "--models", "resnet18", "--formats", "tensorrt",
                              "--engines", str(tmp_path / "e")))
    assert "--formats tensorrt:" in line and "GPU nodes" in line


def test_unwritable_output_directory(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    line = error_line(run_cli("build-engines", "--models", "squeezenet1_1", "--engines",
                              str(blocker / "engines")))
    assert "is not writable" in line
    assert blocker.read_text() == "not a directory"


def test_models_and_all_together_and_nothing(tmp_path):
    assert "either --models or --all" in error_line(
        run_cli("build-engines", "--models", "resnet18", "--all", "--engines", str(tmp_path)))
    assert "name the models" in error_line(run_cli("build-engines", "--engines", str(tmp_path)))


@pytest.mark.parametrize("fmt,how", [("onnx", "truncate"), ("torchscript", "garbage")])
def test_corrupt_engine_is_refused_by_bench(built_engines, tmp_path, fmt, how):
    engines = tmp_path / "engines"
    shutil.copytree(built_engines, engines)
    name = {"onnx": "model.onnx", "torchscript": "model.pt"}[fmt]
    f = engines / "squeezenet1_1" / f"{fmt}_fp32" / name
    f.write_bytes(f.read_bytes()[:1000] if how == "truncate" else b"garbage" * 100)
    json_out = tmp_path / "r.json"
    line = error_line(run_cli("bench", "--engines", str(engines), "--models", "squeezenet1_1",
                              "--formats", fmt, "--batch-sizes", "1", "--json-file", str(json_out),
                              env={"INFERFLEET_STATE_DIR": str(tmp_path / "state")}))
    assert f"engine squeezenet1_1_{fmt}" in line and "corrupt, truncated or replaced" in line
    assert not json_out.exists()
    assert not (tmp_path / "state" / "spool").exists() or not list((tmp_path / "state" / "spool").iterdir())


def test_bench_unknown_format_and_model(built_engines, tmp_path):
    env = {"INFERFLEET_STATE_DIR": str(tmp_path)}
    assert "unknown format 'tensorrtt' (did you mean tensorrt" in error_line(
        run_cli("bench", "--engines", str(built_engines), "--formats", "tensorrtt", env=env))
    assert "unknown model 'squeezenet1_2' (did you mean squeezenet1_1" in error_line(
        run_cli("bench", "--engines", str(built_engines), "--models", "squeezenet1_2", env=env))


def test_corrupt_manifest_is_refused_by_bench(built_engines, tmp_path):
    engines = tmp_path / "engines"
    shutil.copytree(built_engines, engines)
    (engines / "manifest.json").write_text("{ not json")
    assert "is not a valid manifest" in error_line(
        run_cli("bench", "--engines", str(engines), "--formats", "onnx",
                env={"INFERFLEET_STATE_DIR": str(tmp_path)}))


def test_cli_conventions_version_completion_and_deprecated_spellings(tmp_path):
    """`agent --version`, shell completion, and the old option spellings (hidden, one
    release): they still work and say which spelling replaces them."""
    from agent import __version__

    v = run_cli("--version")
    assert v.returncode == 0 and v.stdout.strip() == __version__
    help_ = run_cli("--help")
    assert "--install-completion" in help_.stdout and "--show-completion" in help_.stdout
    for args, old, new in ((("build-engines", "--models", "resnt18", "--out", str(tmp_path)), "--out", "--engines"),
                           (("bench", "--out", str(tmp_path / "none")), "--out", "--engines"),
                           (("repo", "--out", str(tmp_path / "none")), "--out", "--engines"),
                           (("fleet", "report", "--db", "sqlite:///x.db", "--format", "pdf"), "--format", "--outputs"),
                           (("repo", "--engines", str(tmp_path / "none"), "--backend", "native"),
                            "--backend native", "--backend platform"),
                           (("serve", "start", "--repo", str(tmp_path / "none"), "--runtime", "native",
                             "--state-dir", str(tmp_path / "s")), "--runtime native", "--runtime process")):
        r = run_cli(*args)
        assert r.returncode != 0
        assert f"{old} is deprecated" in r.stderr and f"use {new}" in r.stderr, r.stderr
        assert error_line(r).startswith("error:"), r.stderr  # the old value was used: the command's own error
    for cmd in ("build-engines", "bench", "repo"):
        shown = run_cli(cmd, "--help").stdout
        assert "--engines" in shown and "--out " not in shown, (cmd, shown)
