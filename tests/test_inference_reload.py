"""Hot reload, auth, the bounded queue and the no-model state of the inference server.

Real server subprocesses with read and admin API keys. Each test states what it needs and gets it
whatever ran before it (any order, ``-p randomly``): the no-model test has a fresh server of its
own; the others share one module server through ``loaded``, which (re)loads v-a first.
"""
from __future__ import annotations

import asyncio
import json
import concurrent.futures as cf
import os
import subprocess
import sys
import time

import httpx
import openai
import pytest

from tests.helpers.inference_server import REPO, ServerProcess, deploy_version, make_base_dir, make_checkpoint

READ_KEY = "read-key-123"
ADMIN_KEY = "admin-key-456"
READ = {"Authorization": f"Bearer {READ_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
PROMPT = [{"role": "user", "content": "Repeat #3: delta epsilon"}]
SERVER_ENV = {"INFERENCE_API_KEY": READ_KEY, "INFERENCE_ADMIN_KEY": ADMIN_KEY}


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("inf-reload")
    base = make_base_dir(root / "base", tiny_model_dir, {"inference": {"max_queue": 64, "max_batch_size": 16}})
    deploy_version(tiny_model_dir, base, "v-a", global_step=100)
    ckpt = make_checkpoint(tiny_model_dir, base, "job-b", 200, noise=0.02, seed=1)
    deploy_version(ckpt, base, "v-b", global_step=200)
    broken = make_checkpoint(tiny_model_dir, base, "job-broken", 300, corrupt=True)
    deploy_version(broken, base, "v-broken", global_step=300)
    # a "version" that is a symlink to a model folder outside models/
    outside = root / "outside-model"
    outside.mkdir()
    (outside / "config.json").write_text("{}")
    os.symlink(outside, base / "models" / "deployed" / "evil-link")
    srv = ServerProcess(base, "--no-base-fallback", env=SERVER_ENV)
    try:
        srv.wait_ready(need_model=False)
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def empty_server(tmp_path, tiny_model_dir):
    """A fresh server with a version deployed but none current and no base fallback: no model."""
    base = make_base_dir(tmp_path / "base", tiny_model_dir)
    deploy_version(tiny_model_dir, base, "v-a", global_step=100)
    srv = ServerProcess(base, "--no-base-fallback", env=SERVER_ENV)
    try:
        srv.wait_ready(need_model=False)
        yield srv
    finally:
        srv.stop()


def reload(server, body, headers=ADMIN):
    return httpx.post(server.url + "/models/reload", json=body, headers=headers, timeout=120)


def info(server):
    return httpx.get(server.url + "/models/info", headers=READ, timeout=30).json()


@pytest.fixture
def loaded(server):
    """The module server, serving v-a (whatever an earlier test left loaded, or nothing)."""
    r = reload(server, {"version": "v-a"})
    assert r.status_code == 200, r.text
    assert info(server)["version"] == "v-a"
    return server


def test_503_until_a_model_is_loaded(empty_server):
    server = empty_server
    r = httpx.get(server.url + "/health")
    assert r.status_code == 503 and r.json()["error"]["code"] == "model_not_loaded"
    r = httpx.post(server.url + "/v1/chat/completions", json={"messages": PROMPT}, headers=READ)
    assert r.status_code == 503 and r.json()["error"]["type"] == "service_unavailable"
    assert httpx.get(server.url + "/models/info", headers=READ).status_code == 503
    assert httpx.get(server.url + "/v1/models", headers=READ).json()["data"] == []
    r = reload(server, {"version": "v-a"})
    assert r.status_code == 200, r.text
    assert r.json()["info"]["version"] == "v-a" and r.json()["previous_version"] is None
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    assert info(server)["global_step"] == 100


def test_api_keys(loaded):
    url = loaded.url
    assert httpx.get(url + "/health").status_code == 200  # probes need no key
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
    r = httpx.post(url + "/v1/chat/completions", json={"messages": PROMPT, "max_tokens": 2})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert httpx.get(url + "/metrics").status_code == 401
    assert httpx.get(url + "/models/info").status_code == 401
    ok = openai.OpenAI(base_url=url + "/v1", api_key=READ_KEY, max_retries=0)
    assert ok.chat.completions.create(model="tiny-qwen3", messages=PROMPT, max_tokens=2).choices
    # reload: the read key is not enough, no key is refused, the admin key works
    r = reload(loaded, {"version": "v-a"}, headers=READ)
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
    r = reload(loaded, {"version": "v-a"}, headers={})
    assert r.status_code == 401
    assert reload(loaded, {"version": "v-a"}).status_code == 200


@pytest.mark.parametrize("body", [
    {"version": "../../../etc"},
    {"version": ".."},
    {"version": "v-a/../../outside"},
    {"version": "/etc/passwd"},
    {"path": "/tmp"},
    {"path": "../outside"},
    {"path": "models/../inbox"},
    {"version": "evil-link"},
], ids=lambda b: f"{next(iter(b))}={next(iter(b.values()))}")
def test_reload_refuses_paths_outside_the_models_folder(loaded, body):
    r = reload(loaded, body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "path_outside_models"
    assert info(loaded)["version"] == "v-a"


def test_reload_unknown_or_broken_version_keeps_serving(loaded):
    r = reload(loaded, {"version": "v-does-not-exist"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "version_not_found"
    r = reload(loaded, {"version": "v-broken"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "model_load_failed"
    assert "v-a" in r.json()["error"]["message"]
    r = reload(loaded, {"version": 5})
    assert r.status_code == 400
    assert info(loaded)["version"] == "v-a"
    assert httpx.post(loaded.url + "/v1/chat/completions", json={"messages": PROMPT, "max_tokens": 2},
                      headers=READ).status_code == 200


def test_reload_with_50_requests_in_flight(loaded):
    client = openai.OpenAI(base_url=loaded.url + "/v1", api_key=READ_KEY, max_retries=0, timeout=300)

    def one(i: int):
        r = client.chat.completions.create(model="tiny-qwen3", max_tokens=24, temperature=0,
                                           messages=[{"role": "user", "content": f"Request {i}: alpha"}])
        return r.system_fingerprint, r.choices[0].finish_reason, r.usage.completion_tokens

    with cf.ThreadPoolExecutor(50) as ex:
        futures = [ex.submit(one, i) for i in range(50)]
        deadline = time.monotonic() + 60
        while True:  # wait until the requests are in the server (observable), not a fixed time
            i = info(loaded)
            if i["active_requests"] + i["queue_depth"] >= 20:
                break
            assert time.monotonic() < deadline, f"requests never reached the server: {i}"
            time.sleep(0.02)
        r = reload(loaded, {"version": "v-b"})
        assert r.status_code == 200, r.text
        assert r.json()["previous_version"] == "v-a"
        results = [f.result(timeout=300) for f in futures]
    assert len(results) == 50
    assert all(reason in ("stop", "length") and n >= 1 for _, reason, n in results)
    versions = [v for v, _, _ in results]
    assert "v-a" in versions, "requests in flight during the reload finish on the old model"
    assert info(loaded)["version"] == "v-b" and info(loaded)["global_step"] == 200
    after = client.chat.completions.create(model="tiny-qwen3", messages=PROMPT, max_tokens=2)
    assert after.system_fingerprint == "v-b"


def test_queue_full_answers_429_with_the_envelope(loaded):
    async def flood():
        async with httpx.AsyncClient(timeout=300, headers=READ,
                                     limits=httpx.Limits(max_connections=200)) as c:
            body = {"messages": PROMPT, "max_tokens": 16}
            return await asyncio.gather(*[c.post(loaded.url + "/v1/chat/completions", json=body)
                                          for _ in range(150)])

    responses = asyncio.run(flood())
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 429}, codes
    assert codes.count(429) >= 1 and codes.count(200) >= 16
    err = next(r for r in responses if r.status_code == 429).json()["error"]
    assert err["type"] == "rate_limit_error" and err["code"] == "queue_full"
    assert httpx.get(loaded.url + "/health").status_code == 200


def test_non_loopback_bind_without_keys_refuses_to_start(tmp_path, tiny_model_dir):
    base = make_base_dir(tmp_path / "base", tiny_model_dir)
    env = {k: v for k, v in os.environ.items() if k not in ("INFERENCE_API_KEY", "INFERENCE_ADMIN_KEY")}
    p = subprocess.run([sys.executable, "-m", "management.cli", "serve", "--base-dir", str(base),
                        "--host", "0.0.0.0", "--port", "1"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode != 0
    assert "refusing to bind '0.0.0.0'" in p.stderr


def test_a_read_key_never_opens_admin_endpoints(tmp_path, tiny_model_dir):
    """A read key and no admin key: reload is disabled (403), not opened to the read key; a key
    file that others can read is refused at start with a message naming the key and the file."""
    base = make_base_dir(tmp_path / "base", tiny_model_dir)
    deploy_version(tiny_model_dir, base, "v-a", global_step=100)
    key_file = tmp_path / "read.key"
    key_file.write_text(READ_KEY + "\n")
    key_file.chmod(0o600)
    cfg = json.loads((base / "config.json").read_text())
    cfg.setdefault("inference", {})["api_key_file"] = str(key_file)
    (base / "config.json").write_text(json.dumps(cfg))
    env = {"INFERENCE_API_KEY": "", "INFERENCE_ADMIN_KEY": ""}
    with ServerProcess(base, "--no-base-fallback", env=env) as srv:
        srv.wait_ready(need_model=False)
        assert httpx.get(srv.url + "/models/info", headers={}).status_code == 401  # the file's key is enforced
        r = reload(srv, {"version": "v-a"}, headers=READ)
        assert r.status_code == 403 and r.json()["error"]["code"] == "admin_key_not_configured"
        assert reload(srv, {"version": "v-a"}, headers={}).status_code == 403
    key_file.chmod(0o644)
    srv = ServerProcess(base, "--no-base-fallback", env=env)
    try:
        assert srv.proc.wait(timeout=120) != 0
        assert "inference.api_key" in srv.log() and str(key_file) in srv.log()
    finally:
        srv.stop()
