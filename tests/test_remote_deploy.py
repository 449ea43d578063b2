"""Deployment to a server on another machine: two base dirs that share no paths, the trainer side
(A: a checkpoint, the orchestrator with ``deployment.transport = "http"``) and the server side (B:
its own config and ``models/`` folder, starting with no model at all). Everything between them goes
over real HTTP on 127.0.0.1 with the admin key; the files on B come only from the upload endpoints.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import httpx
import openai
import pytest

from foundation.model_files import model_files
from foundation.paths import is_within
from monitoring.deployment.orchestrator import DeploymentOrchestrator
from monitoring.deployment.versions import version_name
from tests.helpers.inference_server import ServerProcess, make_base_dir, make_checkpoint, write_rankings

ADMIN, READ = "remote-admin-key", "remote-read-key"
STEP, JOB = 10, "remote-job"
VERSION = version_name(STEP, JOB)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def sides(tmp_path_factory, tiny_model_dir):
    """(A's base dir, A's checkpoint, B's base dir, B's server). B's config names a base model it
    does not have and may not fall back to: it serves nothing until a version is pushed to it."""
    root = tmp_path_factory.mktemp("remote")
    base_b = make_base_dir(root / "server", "models/no-such-model",
                           {"inference": {"serve_base_model_when_empty": False, "upload_max_bytes": 64 << 20}})
    srv = ServerProcess(base_b, env={"INFERENCE_API_KEY": READ, "INFERENCE_ADMIN_KEY": ADMIN})
    try:
        srv.wait_ready(need_model=False)
        base_a = make_base_dir(root / "trainer", tiny_model_dir,
                               {"deployment": {"transport": "http", "server_url": srv.url, "smoke_max_tokens": 4,
                                               "upload_attempts": 2}})
        ckpt = make_checkpoint(tiny_model_dir, base_a, JOB, STEP)
        write_rankings(base_a, [(ckpt, 1.0)])
        assert not is_within(base_a, base_b) and not is_within(base_b, base_a)
        yield base_a, ckpt, base_b, srv
    finally:
        srv.stop()


def admin(srv: ServerProcess, method: str, path: str, key: str | None = ADMIN, **kw) -> httpx.Response:
    headers = {**kw.pop("headers", {}), **({"Authorization": f"Bearer {key}"} if key else {})}
    return httpx.request(method, srv.url + path, headers=headers, timeout=60, **kw)


def test_upload_endpoints_refuse_what_they_must(sides):
    base_a, ckpt, base_b, srv = sides
    deployed = base_b / "models" / "deployed"
    # auth: no key -> 401, the read key -> 403, on every upload endpoint
    for method, path in (("GET", "/models/upload/v1"), ("PUT", "/models/upload/v1/config.json"),
                         ("POST", "/models/upload/v1/commit"), ("DELETE", "/models/upload/v1"),
                         ("PUT", "/models/current")):
        assert admin(srv, method, path, key=None).status_code == 401, path
        r = admin(srv, method, path, key=READ)
        assert r.status_code == 403 and r.json()["error"]["code"] == "admin_key_required", path
    # names: only plain model-file names, only plain version names
    for path in ("/models/upload/v1/trainer_state.json", "/models/upload/v1/model.py", "/models/upload/v1/.x.json",
                 "/models/upload/v1/%2E%2E", "/models/upload/%2E%2E/evil.json", "/models/upload/.incoming/config.json",
                 "/models/upload/current/config.json", "/models/upload/base/config.json"):
        r = admin(srv, "PUT", path, content=b"{}")
        assert r.status_code == 400 and r.json()["error"]["code"] in ("invalid_file_name", "invalid_version"), path
    for path in ("/models/upload/v1/..%2F..%2Fevil.json", "/models/upload/..%2F..%2Fconfig/evil.json"):
        assert admin(srv, "PUT", path, content=b"{}").status_code == 404, path  # a "/" never matches a name
    assert not [p for p in base_b.parent.rglob("evil*")]
    # size: a file larger than inference.upload_max_bytes is refused before a byte is stored
    r = admin(srv, "PUT", "/models/upload/v1/model.safetensors", content=b"x",
              headers={"Content-Range": f"bytes 0-0/{1 << 30}"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "upload_too_large"

    # a commit whose sha256 does not match is refused, and nothing becomes servable
    files = {f.name: {"sha256": sha256(f), "size": f.stat().st_size} for f in model_files(ckpt)}
    for name in files:
        assert admin(srv, "PUT", f"/models/upload/bad/{name}", content=(ckpt / name).read_bytes()).status_code == 200
    wrong = {**files, "model.safetensors": {**files["model.safetensors"], "sha256": "0" * 64}}
    r = admin(srv, "POST", "/models/upload/bad/commit", json={"files": wrong})
    assert r.status_code == 422 and r.json()["error"]["code"] == "checksum_mismatch", r.text
    assert not (deployed / "bad").exists()
    assert admin(srv, "POST", "/models/reload", json={"version": "bad"}).status_code == 404
    assert admin(srv, "PUT", "/models/current", json={"version": "bad"}).status_code == 404
    state = admin(srv, "GET", "/models/upload/bad").json()
    assert state["deployed"] is None and "model.safetensors" not in state["incoming"]  # the bad file is gone
    # a part that is not where the client says it continues: 409 with the right offset
    r = admin(srv, "PUT", "/models/upload/bad/config.json", content=b"x",
              headers={"Content-Range": f"bytes 5-5/{files['config.json']['size']}"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "offset_mismatch"

    # an unfinished upload idle longer than inference.upload_stale_seconds is discarded
    old = (deployed / ".incoming" / "bad")
    for p in (old, *old.iterdir()):
        os.utime(p, (1_000_000, 1_000_000))
    assert admin(srv, "GET", "/models/upload/other").status_code == 200  # any upload request sweeps
    assert not old.exists()


@pytest.mark.slow
def test_orchestrator_pushes_resumes_and_serves(sides, monkeypatch):
    base_a, ckpt, base_b, srv = sides
    weights = ckpt / "model.safetensors"
    total = weights.stat().st_size
    half = total // 2
    # an earlier try that stopped half-way through the weights
    r = admin(srv, "PUT", f"/models/upload/{VERSION}/model.safetensors", content=weights.read_bytes()[:half],
              headers={"Content-Range": f"bytes 0-{half - 1}/{total}"})
    assert r.status_code == 200 and r.json()["received"] == half and not r.json()["complete"]
    assert admin(srv, "POST", "/models/reload", json={"version": VERSION}).status_code == 404  # not servable

    # the trainer side has the keys only in its environment
    monkeypatch.setenv("INFERENCE_ADMIN_KEY", ADMIN)
    monkeypatch.setenv("INFERENCE_API_KEY", READ)
    orch = DeploymentOrchestrator(base_a)
    result = orch.check_once("test")
    entry = result["entry"]
    assert entry["outcome"] == "deployed", entry
    upload = entry["upload"]
    assert upload["bytes_resumed"] == half and not upload["already_on_server"]
    assert upload["bytes_sent"] == upload["bytes"] - half

    served = base_b / "models" / "deployed" / VERSION
    for f in model_files(ckpt):
        assert sha256(served / f.name) == sha256(f), f.name
    assert (base_b / "models" / "deployed" / "current").read_text().strip() == VERSION
    assert not list((base_b / "models" / "deployed" / ".incoming").iterdir())
    info = admin(srv, "GET", "/models/info", key=READ).json()
    assert info["version"] == VERSION and info["global_step"] == STEP

    client = openai.OpenAI(base_url=srv.url + "/v1", api_key=READ, max_retries=0, timeout=60)
    done = client.chat.completions.create(model=info["model_id"], messages=[{"role": "user", "content": "Hi"}],
                                          max_tokens=4, temperature=0)
    assert isinstance(done.choices[0].message.content, str) and done.system_fingerprint == VERSION

    # nothing left to do; a second push of the same version finds it on the server already
    assert orch.check_once("again")["action"] == "none"
    again = orch.deployer.transport.publish(VERSION, orch.store.resolve(VERSION))
    assert again["already_on_server"] and again["bytes_sent"] == 0
    # the server refuses to drop what it serves
    r = admin(srv, "DELETE", f"/models/upload/{VERSION}")
    assert r.status_code == 409 and r.json()["error"]["code"] == "version_in_use"
    status = json.loads((base_a / "status" / "deployment_status.json").read_text())
    assert status["transport"] == "http" and status["current_version"] == VERSION
