"""Integrity of the whole artifact: a change to any file is refused by every load path, also
when the attacker recomputes the hash in metadata.json (the registry's recorded hash catches
that), and `mlflow.pyfunc.load_model` runs no code dropped into the artifact (its data
directory) before verifying it. The phat code shipped beside it (`code/`) is what MLflow
imports; docs/mlflow.md says what that trusts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

import phat
from conftest import make_cfg
from phat.errors import HashMismatch, MalformedArtifact
from phat.lifecycle.training import run
from phat.registry.artifact import compute_model_hash

NAME = "phat-integrity-15m"


@pytest.fixture
def store(tmp_path: Path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    out = run(
        make_cfg(
            tmp_path / "run",
            "data.synthetic.periods=3000",
            "metrics.bootstrap_n=5",
            f"registry.model_name={NAME}",
            uri=uri,
        )
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    return out, tmp_path


def stored_model_dir(out: dict) -> Path:
    """The registry version's artifact directory inside the local artifact store."""
    mv = MlflowClient().get_model_version(NAME, str(out["model_version"]))
    root = Path(mlflow.artifacts.download_artifacts(f"models:/{NAME}/{mv.version}"))
    # Find the stored (not downloaded) copy: the logged model lives under mlruns/models/<id>.
    store_root = Path(mlflow.get_tracking_uri()[len("sqlite:///") :]).parent / "mlruns"
    (stored,) = [p for p in store_root.glob("models/*/artifacts") if (p / "MLmodel").exists()]
    assert (root / "MLmodel").read_text() == (stored / "MLmodel").read_text()
    return stored / "data" / "model"


def run_artifact_dir(out: dict) -> Path:
    store_root = Path(mlflow.get_tracking_uri()[len("sqlite:///") :]).parent / "mlruns"
    d = store_root / out["run_id"] / "artifacts" / "model"
    assert d.is_dir()
    return d


def flip_weight_and_rehash(model_dir: Path) -> None:
    """The attack of the issue: one weight byte flipped, metadata's hash recomputed to match."""
    from safetensors.numpy import load_file, save_file

    w = load_file(str(model_dir / "weights.safetensors"))
    key = sorted(w)[0]
    arr = w[key].copy()
    arr.reshape(-1)[0] = np.nextafter(arr.reshape(-1)[0], np.inf)
    w[key] = arr
    save_file(w, str(model_dir / "weights.safetensors"))
    rehash(model_dir)


def rehash(model_dir: Path) -> None:
    from safetensors.numpy import load_file

    read = {
        f: json.loads((model_dir / f).read_text())
        for f in (
            "model.json",
            "feature_spec.json",
            "label_spec.json",
            "calibration.json",
            "data_spec.json",
            "metadata.json",
        )
    }
    meta = read["metadata.json"]
    meta["phat.model_hash"] = compute_model_hash(
        read["model.json"],
        load_file(str(model_dir / "weights.safetensors")),
        read["feature_spec.json"],
        read["label_spec.json"],
        read["calibration.json"],
        read["data_spec.json"],
        meta,
    )
    (model_dir / "metadata.json").write_text(json.dumps(meta))


def test_untouched_model_loads_on_every_path(store) -> None:
    out, _ = store
    v = out["model_version"]
    h = out["model_hash"]
    assert phat.load(f"models:/{NAME}/{v}").model_hash == h
    assert phat.load(f"runs:/{out['run_id']}/model").model_hash == h
    assert phat.load(str(stored_model_dir(out).parent.parent)).model_hash == h
    for uri in (f"models:/{NAME}/{v}", str(stored_model_dir(out).parent.parent)):
        loaded = mlflow.pyfunc.load_model(uri)  # through the shipped verifier, then phat's loader
        assert loaded._model_impl.model.model_hash == h, uri


def test_rehashed_weight_flip_is_refused_by_every_path(store) -> None:
    out, _ = store
    v = out["model_version"]
    flip_weight_and_rehash(stored_model_dir(out))
    flip_weight_and_rehash(run_artifact_dir(out))
    with pytest.raises(HashMismatch, match="the registry recorded"):
        phat.load(f"models:/{NAME}/{v}")
    with pytest.raises(HashMismatch, match=f"run {out['run_id']} recorded"):
        phat.load(f"runs:/{out['run_id']}/model")
    with pytest.raises(HashMismatch, match="training run .* recorded"):
        phat.load(str(stored_model_dir(out).parent.parent))  # a local MLflow model directory
    with pytest.raises(HashMismatch, match="training run .* recorded"):
        mlflow.pyfunc.load_model(f"models:/{NAME}/{v}")


@pytest.mark.parametrize(
    ("field", "value"),
    [("phat.feature_version", "0" * 64), ("phat.horizon_id", "1h"), ("phat.symbol", "ETHUSDT")],
)
def test_edited_metadata_fields_are_refused(store, field: str, value: str) -> None:
    out, _ = store
    d = stored_model_dir(out)
    meta = json.loads((d / "metadata.json").read_text())
    meta[field] = value
    (d / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(HashMismatch, match="model_hash mismatch"):
        phat.load(f"models:/{NAME}/{out['model_version']}")
    with pytest.raises(HashMismatch, match="model_hash mismatch"):
        mlflow.pyfunc.load_model(f"models:/{NAME}/{out['model_version']}")


def test_code_dropped_into_the_artifact_never_runs(store, tmp_path: Path) -> None:
    out, _ = store
    d = stored_model_dir(out)
    marker = tmp_path / "ran"
    (d / "pyfunc_model.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    with pytest.raises(HashMismatch, match=r"files no model_hash covers: \['pyfunc_model.py'\]"):
        mlflow.pyfunc.load_model(f"models:/{NAME}/{out['model_version']}")
    with pytest.raises(HashMismatch, match="files no model_hash covers"):
        phat.load(f"models:/{NAME}/{out['model_version']}")
    assert not marker.exists()


def test_malformed_metadata_names_the_file_and_the_uri(store, tmp_path: Path) -> None:
    out, _ = store
    local = tmp_path / "copy"
    shutil.copytree(run_artifact_dir(out), local)
    (local / "metadata.json").write_text("{not json")
    with pytest.raises(MalformedArtifact, match=rf"{local}.*metadata.json' is not valid JSON"):
        phat.load(str(local))
    d = stored_model_dir(out)
    (d / "metadata.json").write_text("[1, 2")
    uri = f"models:/{NAME}/{out['model_version']}"
    with pytest.raises(MalformedArtifact, match=rf"^{uri}: .*metadata.json' is not valid JSON"):
        phat.load(uri)


def test_shipped_code_changed_after_training_is_refused(store) -> None:
    """The model ships phat's code (MLflow imports it when serving); its hash is recorded as
    phat.code_hash, and phat.load refuses a model whose code/ was edited in the store."""
    out, _ = store
    v = out["model_version"]
    mv = MlflowClient().get_model_version(NAME, str(v))
    assert (
        mv.tags["phat.code_hash"]
        == MlflowClient().get_run(out["run_id"]).data.tags["phat.code_hash"]
    )
    code = stored_model_dir(out).parent.parent / "code" / "phat" / "registry" / "pyfunc_loader.py"
    code.write_text(code.read_text() + "\nimport os  # planted\n")
    with pytest.raises(HashMismatch, match="code/phat"):
        phat.load(f"models:/{NAME}/{v}")


# The code a logged model ships (issue #27): the tamper matrix. One logged model serves every
# case: each case changes files of the stored model, and the fixture puts them back after it.
@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    d = tmp_path_factory.mktemp("shipped")
    uri = f"sqlite:///{d}/mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        out = run(make_cfg(d / "run", "data.synthetic.periods=3000", "metrics.bootstrap_n=5",
                           f"registry.model_name={NAME}", uri=uri))  # fmt: skip
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        yield out, d


@pytest.fixture
def store_shipped(shipped):
    """The module's logged model, restored byte for byte after the test changed it."""
    out, d = shipped
    mlflow.set_tracking_uri(f"sqlite:///{d}/mlflow.db")
    model_dir = stored_model_dir(out).parent.parent
    before = {p: p.read_bytes() for p in model_dir.rglob("*") if p.is_file()}
    yield out, d
    for p in model_dir.rglob("*"):
        if p.is_file() and p not in before:
            p.unlink()
    for p, data in before.items():
        p.write_bytes(data)


def _code_dir(out: dict) -> Path:
    return stored_model_dir(out).parent.parent / "code"


def _fresh_load(model_dir: Path, env_uri: str | None) -> subprocess.CompletedProcess:
    """mlflow.pyfunc.load_model in a new interpreter (as `mlflow models serve` starts): nothing
    of phat imported before MLflow imports the model's loader module."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    if env_uri:
        env["MLFLOW_TRACKING_URI"] = env_uri
    code = f"import mlflow; mlflow.pyfunc.load_model({str(model_dir)!r}); print('LOADED')"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=300, cwd=model_dir.parent)  # fmt: skip


@pytest.mark.slow  # fresh interpreters and `phat serve`: the full suite runs it
def test_the_issue_tamper_never_runs_on_any_path(store_shipped, tmp_path: Path) -> None:
    """One line appended to the stored code/phat/registry/pyfunc_loader.py (it would write a
    marker file): refused by phat.load, by mlflow.pyfunc.load_model on the registry URI and on
    the raw directory (with and without a tracking store, in this process and in a fresh one),
    and by `phat serve`; the marker never exists."""
    out, _ = store_shipped
    uri = f"models:/{NAME}/{out['model_version']}"
    model_dir = _code_dir(out).parent
    fresh = _fresh_load(model_dir, None)
    assert "LOADED" in fresh.stdout, fresh.stderr[-2000:]  # untouched: loads in a fresh process
    marker = tmp_path / "tampered-code-ran"
    target = _code_dir(out) / "phat" / "registry" / "pyfunc_loader.py"
    target.write_text(target.read_text() + f"\nopen({str(marker)!r}, 'w').write('ran')\n")
    with pytest.raises(HashMismatch, match="code/phat/registry/pyfunc_loader.py was changed"):
        phat.load(uri)
    with pytest.raises(HashMismatch, match="code/phat/registry/pyfunc_loader.py was changed"):
        phat.load(str(model_dir))
    with pytest.raises(Exception, match="pyfunc_loader.py was changed"):
        mlflow.pyfunc.load_model(uri)
    with pytest.raises(Exception, match="pyfunc_loader.py was changed"):
        mlflow.pyfunc.load_model(str(model_dir))
    for env_uri in (None, mlflow.get_tracking_uri()):
        fresh = _fresh_load(model_dir, env_uri)
        assert fresh.returncode != 0 and "pyfunc_loader.py was changed" in fresh.stderr
    served = subprocess.run([sys.executable, "-m", "phat", "serve", f"model_uri={uri}"],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert served.returncode == 2, served.stderr[-2000:]
    assert "pyfunc_loader.py was changed" in served.stderr and "Traceback" not in served.stderr
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "raw_path_refuses"),
    [
        ("phat_module", True),  # any file of the shipped package
        ("added_module", True),  # a module dropped into code/ would shadow an installed one
        ("manifest_rewritten", "with_store"),  # a self-consistent rewrite: the run's tag catches it
        ("verifier", False),  # a verifier rewritten to check nothing: only phat's paths catch it
        ("mlmodel_loader", False),  # MLmodel's loader entry: MLflow trusts it
    ],
)
def test_tamper_matrix(store_shipped, tmp_path: Path, case: str, raw_path_refuses) -> None:
    from phat.registry import verify_shipped as vs

    out, _ = store_shipped
    uri = f"models:/{NAME}/{out['model_version']}"
    code = _code_dir(out)
    if case == "phat_module":
        f = code / "phat" / "__init__.py"
        f.write_text(f.read_text() + "\n# edited\n")
    elif case == "added_module":
        (code / "yaml.py").write_text("raise SystemExit('shadowed')\n")
    elif case == "manifest_rewritten":
        f = code / "phat" / "errors.py"
        f.write_text(f.read_text() + "\n# edited\n")
        vs.write_manifest(code)
    elif case == "verifier":  # an attacker's verifier: checks nothing, hands over at once
        f = code / vs.VERIFIER
        f.write_text(f.read_text() + "\n\ndef _load_pyfunc(data_path, model_config=None):\n"
                     "    from phat.registry.pyfunc_loader import _load_pyfunc as load\n\n"
                     "    return load(data_path, model_config)\n")  # fmt: skip
    else:
        mlmodel = code.parent / "MLmodel"
        mlmodel.write_text(mlmodel.read_text().replace("loader_module: phat_verify",
                                                       "loader_module: phat.registry.pyfunc_loader"))  # fmt: skip
    for path in (uri, str(code.parent)):
        with pytest.raises(HashMismatch):
            phat.load(path)
    without_store = _fresh_load(code.parent, None)
    with_store = _fresh_load(code.parent, mlflow.get_tracking_uri())
    assert (without_store.returncode != 0) == (raw_path_refuses is True), without_store.stderr[
        -800:
    ]
    assert (with_store.returncode != 0) == bool(raw_path_refuses), with_store.stderr[-800:]


def test_the_shipped_verifier_imports_only_the_standard_library_before_its_check() -> None:
    """phat_verify.py is what MLflow imports first, with the model's code/ first on sys.path:
    at module level it may import the standard library only, and inside a function nothing of
    phat before the call that checks the files (any other import would run shipped code that
    nobody has checked yet)."""
    import ast

    from phat.registry import verify_shipped as vs

    tree = ast.parse(Path(vs.__file__).read_text())

    def modules(node: ast.AST) -> list[tuple[int, str]]:
        if isinstance(node, ast.Import):
            return [(node.lineno, a.name.split(".")[0]) for a in node.names]
        if isinstance(node, ast.ImportFrom):
            return [(node.lineno, (node.module or "").split(".")[0])]
        return []

    top = [m for node in tree.body for m in modules(node)]
    assert top and all(m in sys.stdlib_module_names or m == "__future__" for _, m in top), top
    entry = next(
        n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "_load_pyfunc"
    )
    checked = min(
        n.lineno for n in ast.walk(entry)
        if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "check_files"
    )  # fmt: skip
    late = [(line, m) for n in ast.walk(entry) for line, m in modules(n)]
    assert late and all(m in sys.stdlib_module_names or line > checked for line, m in late), late
    for fn in (n for n in tree.body if isinstance(n, ast.FunctionDef) and n is not entry):
        assert all(m in sys.stdlib_module_names for n in ast.walk(fn) for _, m in modules(n)), (
            fn.name
        )


@pytest.mark.slow  # fresh interpreters, `phat serve` and `mlflow models serve`: the full suite
def test_no_line_appended_to_any_shipped_file_runs_on_any_load_path(store_shipped, tmp_path):
    """One line appended to every shipped Python file (each would write its own marker file;
    the package __init__ files included), then every way a model is loaded, each in a fresh
    process that has imported nothing of phat: mlflow.pyfunc.load_model on the directory
    (with and without a tracking store) and on the registry URI, phat.load on both, `phat
    serve` and `mlflow models serve`. Each refuses, and no marker exists afterwards."""
    import os
    import signal
    import time
    import urllib.request

    from conftest import _free_port
    from phat.registry import verify_shipped as vs

    out, _ = store_shipped
    uri = f"models:/{NAME}/{out['model_version']}"
    code = _code_dir(out)
    model_dir = code.parent
    ran = tmp_path / "ran"
    ran.mkdir()
    shipped = sorted(f for f in code.rglob("*.py") if f.name != vs.VERIFIER)
    assert code / "phat" / "__init__.py" in shipped and code / "phat" / "tagnames.py" in shipped
    for i, f in enumerate(shipped):
        f.write_text(f.read_text() + f"\nopen({str(ran / str(i))!r}, 'w').write({str(f)!r})\n")
    store = mlflow.get_tracking_uri()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    loads = {
        "pyfunc dir, no store": (None, f"import mlflow; mlflow.pyfunc.load_model({str(model_dir)!r})"),
        "pyfunc dir": (store, f"import mlflow; mlflow.pyfunc.load_model({str(model_dir)!r})"),
        "pyfunc registry": (store, f"import mlflow; mlflow.pyfunc.load_model({uri!r})"),
        "phat.load registry": (store, f"import phat; phat.load({uri!r})"),
        "phat.load dir": (store, f"import phat; phat.load({str(model_dir)!r})"),
    }  # fmt: skip
    for what, (tracking, line) in loads.items():
        e = {**env, **({"MLFLOW_TRACKING_URI": tracking} if tracking else {})}
        r = subprocess.run([sys.executable, "-c", line], capture_output=True, text=True, env=e,
                           timeout=300, cwd=tmp_path)  # fmt: skip
        assert r.returncode != 0 and "was changed" in r.stderr, (what, r.stderr[-1500:])
        assert not list(ran.iterdir()), (what, [p.read_text() for p in ran.iterdir()])
    e = {**env, "MLFLOW_TRACKING_URI": store}
    served = subprocess.run([str(Path(sys.executable).with_name("phat")), "serve",
                             f"model_uri={uri}"], capture_output=True, text=True, env=e,
                            timeout=300, cwd=tmp_path)  # fmt: skip
    assert served.returncode == 2 and "was changed" in served.stderr, served.stderr[-1500:]
    port = _free_port()
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    log = tmp_path / "serve.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m",
             str(model_dir), "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
            stdout=fh, stderr=subprocess.STDOUT, env=e, cwd=tmp_path, start_new_session=True,
        )  # fmt: skip
    try:
        deadline, answered = time.time() + 120, False
        while (
            time.time() < deadline and proc.poll() is None and "was changed" not in log.read_text()
        ):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as resp:
                    answered = resp.status == 200
                    break
            except OSError:
                time.sleep(0.5)
        time.sleep(1)  # a worker that did load would have run the lines by now
        assert not answered, "mlflow models serve answered /ping with a tampered model"
        assert "was changed" in log.read_text(), log.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert not list(ran.iterdir()), [p.read_text() for p in ran.iterdir()]
