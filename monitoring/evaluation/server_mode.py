"""Mode ``server``: score whatever the inference server serves, through
``monitoring.prediction_client.PredictionClient`` (accuracy only: no loss, no confidences), and
record it against the checkpoint the server reports."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from foundation.atomic_io import read_json
from foundation.paths import Paths
from monitoring.evaluation.loading import load_profile
from monitoring.evaluation.scoring import last_user_text, prompt_and_expected, render_for_profile, score


def evaluate_via_server(client, suite, cfg, profile_name: str | None = None, concurrency: int = 8) -> dict:
    """Score what the inference server serves: accuracy only. The server applies its active profile
    to the prompts (system prompt, framing, stop sequences); ``profile_name`` (the one the server
    reports) is used to render the items and extract the answers."""
    from concurrent.futures import ThreadPoolExecutor
    profile_name = profile_name or cfg.profile.name
    profile = load_profile(profile_name, cfg.profile.options if profile_name == cfg.profile.name else {})
    t0 = time.monotonic()
    expected, users, requests = [], [], []
    for item in suite.items:
        rec = render_for_profile(item, profile_name)
        msgs, exp = prompt_and_expected(rec)
        requests.append(msgs)
        expected.append(exp)
        users.append(last_user_text(msgs))
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:  # the server batches them
        texts = [reply_text(r) for r in pool.map(
            lambda m: client.chat(m, max_tokens=cfg.evaluation.max_new_tokens, temperature=0), requests)]
    res = score(suite.items, profile, texts, expected, users, None)
    res.update({"validation_loss": None, "duration_s": round(time.monotonic() - t0, 3), "profile": profile_name,
                "device": "server", "mode": "server"})
    return res


def reply_text(reply: Any) -> str:
    """The assistant text of a chat reply, whichever shape the client returned."""
    if isinstance(reply, str):
        return reply
    if isinstance(getattr(reply, "text", None), str):  # prediction_client.ChatResult
        return reply.text
    if isinstance(reply, dict):
        try:
            return reply["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            return str(reply.get("text") or reply.get("content") or "")
    try:  # an OpenAI client object
        return reply.choices[0].message.content or ""
    except AttributeError:
        return str(reply)


def make_client(cfg, base_dir):
    """The prediction client for config ``evaluation.server_url`` (else the configured server)."""
    from monitoring.prediction_client import PredictionClient
    if cfg.evaluation.server_url:
        from trainer.config.keys import resolve_inference_keys
        return PredictionClient(cfg.evaluation.server_url,
                                api_key=resolve_inference_keys(cfg, base_dir).api_key or None)
    return PredictionClient.from_config(base_dir)


def served_checkpoint(paths: Paths, info: dict) -> tuple[str, int] | None:
    """(checkpoint path, global step) of what the server serves: its info's ``checkpoint``, else
    the last deployment's, else the served folder itself."""
    last = read_json(paths.status_file("last_deployment.json")) or {}
    path = info.get("checkpoint") or last.get("checkpoint") or info.get("path")
    step = info.get("global_step", last.get("global_step"))
    if not path or not isinstance(step, int):
        return None
    p = Path(path)
    return (str(p if p.is_absolute() else paths.base / p), step)
