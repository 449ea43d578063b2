#!/usr/bin/env python3
"""Automated tests: every new complete checkpoint is scored on the fixed validation suite.

What one evaluation does (``evaluate_checkpoint``), in its own process, on CPU or a chosen device:

1. loads the checkpoint (``checkpoint_info.json``'s ``model_dir``: "." or "merged" for LoRA) and its
   tokenizer (the base model's when the checkpoint has none);
2. renders each suite item for the active profile (the profile recorded in the checkpoint's info,
   else config ``profile.name``): ``syllo_puzzles.rerender_record`` then ``profile.prepare_messages``
   with the profile's system prompt, and the chat template with a generation prompt;
3. generates greedily (``evaluation.max_new_tokens``), batched, under the profile's logits
   processors, stopping at EOS or at one of the profile's stop sequences;
4. scores exact match: ``profile.normalize_answer(profile.extract_answer(text))`` against
   ``profile.normalize_answer(expected)``; accuracy overall and by difficulty, and every failure
   (prompt, expected, got);
5. computes each answer's confidence from the model's own (unprocessed) token probabilities: the
   probability of the generated tokens up to the one that completes the extracted answer (all
   generated tokens when no answer was extracted); ``confidence_calibrator.calibrate`` bins them;
6. computes the suite validation loss: the profile's ``transform_example`` (as in training), the
   engine's ``tokenize_example`` (labels on assistant tokens), one forward pass; the loss is the
   token-weighted mean cross entropy over every labelled token of the suite.

Results go to the model registry (``record_evaluation``) and ``status/automated_testing.json``;
after each evaluation the regression monitor, the comparison engine and the calibrator refresh
their status files (same process, so one daemon keeps all four current).

Mode ``server`` (config ``evaluation.mode``) scores whatever the inference server serves through
``monitoring.prediction_client.PredictionClient`` (accuracy only: no loss, no confidences), and
records it against the checkpoint the server reports.

Discovery: complete checkpoints are folders ``models/checkpoints/<job>/step-<N>/`` holding
``checkpoint_info.json`` with ``"complete": true`` (a folder without it is being written: ignored);
they are registered in the model registry (idempotent) and every registered checkpoint without an
evaluation on the current suite version whose folder still exists is evaluated, newest first.

``status/automated_testing.json`` (rewritten on every change and every
``monitoring.status_interval`` seconds as a heartbeat; all fields always present):

* ``schema_version``, ``updated_at``, ``pid``, ``heartbeat_at``
* ``state``: ``starting`` | ``idle`` | ``evaluating`` | ``stopped`` | ``error``
* ``mode`` (local | server), ``device``, ``profile``, ``interval``, ``started_at``
* ``suite_version`` (e.g. "syllo-v1"), ``suite_dir``, ``n_suite_items`` (items scored per checkpoint)
* ``current``: null or ``{checkpoint, global_step, started_at}``
* ``pending``: checkpoint paths waiting, newest first; ``n_pending``
* ``evaluated_total``: evaluations done by this process
* ``last_result``: null or ``{checkpoint, global_step, accuracy, n_items, n_correct, by_difficulty
  ({level: {accuracy, n, correct}}), validation_loss, ece, duration_s, evaluated_at, n_failures,
  failures (first 20: {index, id, difficulty, prompt, expected, got})}``
* ``recent``: newest first (max 20) ``{checkpoint, global_step, accuracy, validation_loss, ece, evaluated_at}``
* ``errors``: newest last (max 20) ``{checkpoint, error, at}``

Checkpoint paths are relative to the base dir when inside it. Single instance per base dir
(``.pids/automated_testing.lock``/``.pid``); SIGTERM/SIGINT stop it after the current evaluation.

    python3 monitoring/automated_testing_daemon.py [--base-dir DIR] [--once]
    trainctl eval daemon [--once]
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable


from foundation.atomic_io import read_json
from foundation.paths import Paths
from foundation.status_io import utc_now_iso, write_status

STATUS_NAME = "automated_testing.json"
INSTANCE_NAME = "automated_testing"
CHECKPOINT_INFO = "checkpoint_info.json"
MAX_FAILURES_IN_STATUS = 20
MAX_RECENT = 20
MAX_ATTEMPTS = 3


# =========================================================================== profiles
class _PlainFallback:
    """Plain behaviour for a tree where ``trainer.profiles`` does not exist yet."""
    name = "plain"
    stop_sequences: list[str] = []

    def render_system_prompt(self, template=None, now=None):
        return template or ""

    def transform_example(self, example, index, system_prompt=None):
        msgs = [dict(m) for m in example["messages"]]
        if system_prompt:
            msgs = [{"role": "system", "content": system_prompt}] + [m for m in msgs if m["role"] != "system"]
        return {"messages": msgs, "metadata": dict(example.get("metadata") or {})}

    def prepare_messages(self, messages, index=0, system_prompt=None):
        msgs = [dict(m) for m in messages]
        if system_prompt:
            msgs = [{"role": "system", "content": system_prompt}] + [m for m in msgs if m["role"] != "system"]
        return msgs

    def build_logits_processors(self, tokenizer):
        return []

    def postprocess(self, text):
        return text

    def extract_answer(self, text):
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        return lines[-1] if lines else None

    def normalize_answer(self, ans):
        return " ".join((ans or "").lower().split()).strip(" .,;:!?\"'")


def load_profile(name: str, options: dict | None = None):
    try:
        from trainer.profiles import get_profile
    except ImportError:
        return _PlainFallback()
    return get_profile(name, options or {})


# =========================================================================== checkpoints
def read_checkpoint_info(folder: str | os.PathLike) -> dict | None:
    """The folder's checkpoint_info.json when it marks a complete checkpoint, else None."""
    info = read_json(Path(folder) / CHECKPOINT_INFO)
    if not isinstance(info, dict) or info.get("complete") is not True:
        return None
    if not isinstance(info.get("global_step"), int):
        return None
    return info


def discover_checkpoints(paths: Paths, db) -> list[str]:
    """Register every complete checkpoint folder under models/checkpoints/ (idempotent).
    Returns the stored paths found."""
    found = []
    if not paths.checkpoints.is_dir():
        return found
    for info_file in sorted(paths.checkpoints.glob(f"*/step-*/{CHECKPOINT_INFO}")):
        folder = info_file.parent
        info = read_checkpoint_info(folder)
        if info is None:
            continue
        db.register_checkpoint(folder, info["global_step"], info.get("job_id") or folder.parent.name,
                               info.get("source_file"), train_loss=_num(info.get("train_loss")),
                               validation_loss=_num(info.get("validation_loss")),
                               created_at=info.get("created_at"))
        found.append(db.rel(folder))
    return found


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def model_dir_of(folder: Path) -> Path:
    info = read_json(folder / CHECKPOINT_INFO) or {}
    sub = info.get("model_dir") or "."
    return (folder / sub).resolve() if sub != "." else folder


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / n).exists() for n in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"))


def resolve_device(device: str) -> str:
    import torch
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("evaluation.device is 'cuda' but CUDA is not available")
    return device


def load_checkpoint(folder: str | os.PathLike, device: str = "cpu", fallback_tokenizer: str | None = None):
    """(model in eval mode on ``device``, tokenizer) of a checkpoint folder (or any HF model folder)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    folder = Path(folder)
    mdir = model_dir_of(folder)
    if not (mdir / "config.json").is_file():
        raise FileNotFoundError(f"{mdir}: no config.json (not a model folder)")
    dtype = torch.float32
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        dtype = torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(str(mdir), dtype=dtype)
    model.to(device)
    model.eval()
    tok_dir = mdir if _has_tokenizer(mdir) else (folder if _has_tokenizer(folder) else fallback_tokenizer)
    if tok_dir is None:
        raise FileNotFoundError(f"{folder}: no tokenizer files and no fallback tokenizer")
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok


# =========================================================================== suite rendering
def render_for_profile(item, profile_name: str) -> dict:
    """The suite item's record for ``profile_name`` (untransformed: the profile adds its framing)."""
    from syllo.puzzles import rerender_record
    return rerender_record(item.record, profile_name, index=item.index)


def _prompt_and_expected(rec: dict) -> tuple[list[dict], str]:
    msgs = rec["messages"]
    last_asst = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
    return [dict(m) for m in msgs[:last_asst]], msgs[last_asst]["content"]


# =========================================================================== generation
class _StopOnText:
    """Per-row stop when a stop sequence appears in the generated text (HF StoppingCriteria)."""

    def __init__(self, tokenizer, stops: list[str], prompt_len: int, window: int = 24):
        self.tok, self.stops, self.prompt_len, self.window = tokenizer, [s for s in stops if s], prompt_len, window

    def __call__(self, input_ids, scores, **kwargs):
        import torch
        gen = input_ids[:, self.prompt_len:][:, -self.window:]
        texts = self.tok.batch_decode(gen, skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stops) for t in texts], dtype=torch.bool,
                            device=input_ids.device)


def _stopping_list(tok, stops, prompt_len):
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _C(StoppingCriteria):
        def __init__(self, inner):
            self.inner = inner

        def __call__(self, input_ids, scores, **kw):
            return self.inner(input_ids, scores, **kw)

    return StoppingCriteriaList([_C(_StopOnText(tok, stops, prompt_len))])


def _eos_ids(model, tok) -> list[int]:
    ids: list[int] = []
    gc = getattr(model, "generation_config", None)
    e = getattr(gc, "eos_token_id", None) if gc is not None else None
    for x in (e if isinstance(e, (list, tuple)) else [e]):
        if isinstance(x, int) and x not in ids:
            ids.append(x)
    if tok.eos_token_id is not None and tok.eos_token_id not in ids:
        ids.append(tok.eos_token_id)
    return ids


def generate_answers(model, tok, prompts: list[str], *, max_new_tokens: int, stop_sequences: list[str],
                     make_processors: Callable[[], Any], batch_size: int = 32) -> list[dict]:
    """Greedy generations for ``prompts``: ``[{"tokens": [...], "probs": [...], "text": str}]``
    (generated tokens up to EOS, their unprocessed probabilities, the decoded text)."""
    import torch
    from transformers import GenerationConfig
    device = next(model.parameters()).device
    eos = _eos_ids(model, tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else (eos[0] if eos else 0)
    gcfg = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos or None,
                            pad_token_id=pad, output_logits=True, return_dict_in_generate=True)
    old_side = tok.padding_side
    tok.padding_side = "left"
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[dict | None] = [None] * len(prompts)
    try:
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            enc = tok([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(device) for k, v in enc.items()}
            plen = enc["input_ids"].shape[1]
            kw: dict[str, Any] = {}
            procs = make_processors()
            if procs is not None and len(procs):
                kw["logits_processor"] = procs
            if stop_sequences:
                kw["stopping_criteria"] = _stopping_list(tok, stop_sequences, plen)
            with torch.no_grad():
                res = model.generate(**enc, generation_config=gcfg, **kw)
            seqs = res.sequences[:, plen:]
            if res.logits:
                logits = torch.stack(list(res.logits), dim=1).float()
                probs = torch.softmax(logits, dim=-1).gather(-1, seqs[:, : logits.shape[1], None]).squeeze(-1)
            else:
                probs = torch.zeros(seqs.shape, dtype=torch.float32)
            for row, i in enumerate(idx):
                toks = seqs[row].tolist()
                pr = probs[row].tolist()
                n = len(toks)
                for j, t in enumerate(toks):
                    if t in eos or t == pad:
                        n = j + 1 if t in eos else j  # the EOS decision belongs to the answer
                        break
                out[i] = {"tokens": toks[:n], "probs": pr[:n],
                          "text": tok.decode(toks[:n], skip_special_tokens=True)}
    finally:
        tok.padding_side = old_side
    return out  # type: ignore[return-value]


def answer_confidence(tok, profile, tokens: list[int], probs: list[float], answer: str | None) -> float:
    """Probability of the generated tokens up to the one that completes ``answer`` (extracted
    from the full text); all of them when there is no answer."""
    from monitoring.evaluation.calibration import sequence_confidence
    if answer is not None:
        for j in range(1, len(tokens) + 1):
            if profile.extract_answer(tok.decode(tokens[:j], skip_special_tokens=True)) == answer:
                return sequence_confidence(probs[:j])
    return sequence_confidence(probs)


# =========================================================================== validation loss
def _tokenize(tok, rec: dict, max_length: int, loss_on: str) -> dict:
    try:
        from trainer.data.tokenization import tokenize_example
    except ImportError:
        tokenize_example = None
    if tokenize_example is not None:
        return tokenize_example(tok, rec, max_length=max_length, loss_on=loss_on)
    msgs = rec["messages"]
    prompt = tok.apply_chat_template(msgs[:-1], tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(msgs, tokenize=False)
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    ids = tok(full, add_special_tokens=False)["input_ids"][:max_length]
    labels = [-100] * min(len(p_ids), len(ids)) + ids[len(p_ids):]
    return {"input_ids": ids, "labels": labels[: len(ids)]}


def suite_validation_loss(model, tok, records: list[dict], *, max_length: int, loss_on: str = "assistant",
                          batch_size: int = 32) -> float | None:
    """Token-weighted mean cross entropy over the labelled (assistant) tokens of ``records``
    (already transformed by the profile)."""
    import torch
    import torch.nn.functional as F
    device = next(model.parameters()).device
    items = [_tokenize(tok, r, max_length, loss_on) for r in records]
    items = [it for it in items if any(x != -100 for x in it["labels"][1:])]
    if not items:
        return None
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    total, count = 0.0, 0
    items.sort(key=lambda it: len(it["input_ids"]))
    with torch.no_grad():
        for b in range(0, len(items), batch_size):
            chunk = items[b:b + batch_size]
            L = max(len(it["input_ids"]) for it in chunk)
            ids = torch.full((len(chunk), L), pad, dtype=torch.long)
            lab = torch.full((len(chunk), L), -100, dtype=torch.long)
            att = torch.zeros((len(chunk), L), dtype=torch.long)
            for r, it in enumerate(chunk):
                n = len(it["input_ids"])
                ids[r, :n] = torch.tensor(it["input_ids"])
                lab[r, :n] = torch.tensor(it["labels"])
                att[r, :n] = 1
            logits = model(input_ids=ids.to(device), attention_mask=att.to(device)).logits.float()
            lg = logits[:, :-1].reshape(-1, logits.shape[-1])
            tg = lab[:, 1:].reshape(-1).to(device)
            total += float(F.cross_entropy(lg, tg, ignore_index=-100, reduction="sum"))
            count += int((tg != -100).sum())
    return total / count if count else None


# =========================================================================== scoring
def _score(items, profile, texts: list[str], expected_texts: list[str], prompts_user: list[str],
           confidences: list[float] | None) -> dict:
    from monitoring.evaluation.calibration import calibrate
    per: list[dict] = []
    by: dict[str, dict] = {}
    by_kind: dict[str, dict] = {}
    failures: list[dict] = []
    for k, item in enumerate(items):
        got_raw = profile.extract_answer(texts[k])
        got = profile.normalize_answer(got_raw) if got_raw is not None else None
        exp = profile.normalize_answer(expected_texts[k])
        ok = got is not None and got == exp
        d = item.difficulty
        kind = str(item.meta.get("kind", "unknown"))
        for table, key in ((by, d), (by_kind, kind)):
            slot = table.setdefault(key, {"n": 0, "correct": 0})
            slot["n"] += 1
            slot["correct"] += int(ok)
        row = {"index": item.index, "id": item.meta.get("id"), "difficulty": d, "kind": kind, "correct": ok,
               "expected": exp, "got": got}
        if confidences is not None:
            row["confidence"] = confidences[k]
        per.append(row)
        if not ok:
            failures.append({"index": item.index, "id": item.meta.get("id"), "difficulty": d,
                             "prompt": prompts_user[k], "expected": exp, "got": got, "raw": texts[k][:500]})
    for table in (by, by_kind):
        for slot in table.values():
            slot["accuracy"] = slot["correct"] / slot["n"] if slot["n"] else None
    n = len(items)
    n_correct = sum(1 for r in per if r["correct"])
    cal = calibrate([r["confidence"] for r in per], [r["correct"] for r in per]) if confidences is not None else None
    return {"accuracy": n_correct / n if n else None, "n_items": n, "n_correct": n_correct,
            "by_difficulty": by, "by_kind": by_kind, "items": per, "failures": failures, "calibration": cal}


def evaluate_model(model, tok, suite, profile, *, profile_name: str, system_prompt: str | None,
                   max_new_tokens: int, batch_size: int, max_length: int, loss_on: str = "assistant") -> dict:
    """Score a loaded model on ``suite`` (see the module docstring). Returns the result dict."""
    t0 = time.monotonic()
    prompts, expected, users, transformed = [], [], [], []
    for item in suite.items:
        rec = render_for_profile(item, profile_name)
        msgs, exp = _prompt_and_expected(rec)
        gen_msgs = profile.prepare_messages(msgs, index=item.index, system_prompt=system_prompt)
        prompts.append(tok.apply_chat_template(gen_msgs, tokenize=False, add_generation_prompt=True))
        expected.append(exp)
        users.append(next((m["content"] for m in reversed(msgs) if m["role"] == "user"), ""))
        transformed.append(profile.transform_example(rec, item.index, system_prompt))
    gens = generate_answers(model, tok, prompts, max_new_tokens=max_new_tokens,
                            stop_sequences=list(getattr(profile, "stop_sequences", []) or []),
                            make_processors=lambda: profile.build_logits_processors(tok), batch_size=batch_size)
    texts = [g["text"] for g in gens]
    confs = [answer_confidence(tok, profile, g["tokens"], g["probs"], profile.extract_answer(g["text"]))
             for g in gens]
    res = _score(suite.items, profile, texts, expected, users, confs)
    res["validation_loss"] = suite_validation_loss(model, tok, transformed, max_length=max_length, loss_on=loss_on,
                                                   batch_size=batch_size)
    res["duration_s"] = round(time.monotonic() - t0, 3)
    return res


def evaluate_checkpoint(folder: str | os.PathLike, suite, cfg, *, device: str | None = None,
                        base_dir: str | os.PathLike | None = None) -> dict:
    """Load a checkpoint folder and score it on ``suite`` with the config's evaluation settings."""
    paths = Paths.from_base(base_dir)
    folder = Path(folder)
    info = read_json(folder / CHECKPOINT_INFO) or {}
    profile_name = info.get("profile") or cfg.profile.name
    options = cfg.profile.options if profile_name == cfg.profile.name else {}
    profile = load_profile(profile_name, options)
    system_prompt = profile.render_system_prompt(cfg.profile.system_prompt or None)
    dev = resolve_device(device or cfg.evaluation.device)
    model, tok = load_checkpoint(folder, dev, fallback_tokenizer=str(paths.resolve(cfg.model.model_path)))
    try:
        res = evaluate_model(model, tok, suite, profile, profile_name=profile_name, system_prompt=system_prompt,
                             max_new_tokens=cfg.evaluation.max_new_tokens, batch_size=cfg.evaluation.batch_size,
                             max_length=cfg.data.max_length, loss_on=cfg.data.loss_on)
    finally:
        del model
        if dev.startswith("cuda"):
            import torch
            torch.cuda.empty_cache()
    res.update({"profile": profile_name, "device": dev, "mode": "local"})
    return res


def evaluate_via_server(client, suite, cfg, profile_name: str | None = None, concurrency: int = 8) -> dict:
    """Score what the inference server serves (mode "server"): accuracy only. The server applies its
    active profile to the prompts (system prompt, framing, stop sequences); ``profile_name`` (the one
    the server reports) is used to render the items and extract the answers."""
    from concurrent.futures import ThreadPoolExecutor
    profile_name = profile_name or cfg.profile.name
    profile = load_profile(profile_name, cfg.profile.options if profile_name == cfg.profile.name else {})
    t0 = time.monotonic()
    expected, users, requests = [], [], []
    for item in suite.items:
        rec = render_for_profile(item, profile_name)
        msgs, exp = _prompt_and_expected(rec)
        requests.append(msgs)
        expected.append(exp)
        users.append(next((m["content"] for m in reversed(msgs) if m["role"] == "user"), ""))
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:  # the server batches them
        texts = [_reply_text(r) for r in pool.map(
            lambda m: client.chat(m, max_tokens=cfg.evaluation.max_new_tokens, temperature=0), requests)]
    res = _score(suite.items, profile, texts, expected, users, None)
    res.update({"validation_loss": None, "duration_s": round(time.monotonic() - t0, 3), "profile": profile_name,
                "device": "server", "mode": "server"})
    return res


def _reply_text(reply: Any) -> str:
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


def record_result(db, checkpoint: str | os.PathLike, suite, res: dict) -> int:
    details = {"profile": res.get("profile"), "mode": res.get("mode"), "device": res.get("device"),
               "duration_s": res.get("duration_s"), "n_correct": res.get("n_correct"),
               "by_kind": res.get("by_kind"), "items": res.get("items"), "failures": res.get("failures")}
    return db.record_evaluation(checkpoint, suite.version, res["accuracy"], res["by_difficulty"], res["n_items"],
                                validation_loss=res.get("validation_loss"), calibration=res.get("calibration"),
                                details=details)


# =========================================================================== daemon
class StatusKeeper:
    """Holds the status document; writes it atomically on change and as a heartbeat."""

    def __init__(self, path: Path, interval: float, clock: Callable[[], float] | None = None):
        self.path, self.interval, self.clock = path, interval, clock
        self.doc: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def set(self, **fields: Any) -> None:
        with self._lock:
            self.doc.update(fields)
            write_status(self.path, dict(self.doc), daemon=True, clock=self.clock)

    def beat(self) -> None:
        with self._lock:
            write_status(self.path, dict(self.doc), daemon=True, clock=self.clock)

    def start(self, stop_event: threading.Event) -> None:
        def loop() -> None:
            while not stop_event.wait(self.interval):
                try:
                    self.beat()
                except OSError:
                    pass
        self._thread = threading.Thread(target=loop, name="status-heartbeat", daemon=True)
        self._thread.start()


def refresh_reports(base_dir, cfg, suite_version: str) -> None:
    """Regression first, then the comparison (it marks flagged entries), then calibration."""
    from monitoring.evaluation import calibration, comparison, regression
    regression.run_once(base_dir, cfg, suite_version)
    comparison.run_once(base_dir, cfg, suite_version)
    calibration.run_once(base_dir, suite_version)


class AutomatedTester:
    """The daemon: discover -> evaluate pending -> publish, every ``evaluation.interval`` seconds."""

    def __init__(self, base_dir=None, config=None, *, stop_event: threading.Event | None = None,
                 clock: Callable[[], float] | None = None, client=None):
        from foundation.model_db import ModelDB
        from syllo.suite import load_suite, resolve_suite_dir
        from trainer.config.loader import load_config
        self.paths = Paths.from_base(base_dir)
        self.cfg = config if config is not None else load_config(base_dir=self.paths.base)
        self.stop_event = stop_event or threading.Event()
        self.clock = clock
        self.db = ModelDB(self.paths.model_db, base_dir=self.paths.base)
        suite_dir = resolve_suite_dir(self.paths.base, self.cfg.data.validation_dir)
        self.suite = load_suite(suite_dir, max_items=self.cfg.evaluation.max_items)
        self.attempts: dict[str, int] = {}
        self.client = client
        ev = self.cfg.evaluation
        self.status = StatusKeeper(self.paths.status_file(STATUS_NAME), self.cfg.monitoring.status_interval, clock)
        self.status.doc.update({
            "state": "starting", "mode": ev.mode, "device": ev.device if ev.mode == "local" else "server",
            "profile": self.cfg.profile.name, "interval": ev.interval, "started_at": utc_now_iso(clock),
            "suite_version": self.suite.version, "suite_dir": str(self.suite.dir),
            "n_suite_items": len(self.suite.items), "current": None, "pending": [], "n_pending": 0,
            "evaluated_total": 0, "last_result": None, "recent": [], "errors": [],
        })

    # ------------------------------------------------------------------ one pass
    def pending(self) -> list[dict]:
        out = []
        for c in self.db.unevaluated_checkpoints(self.suite.version, order="-global_step"):
            if self.attempts.get(c["path"], 0) >= MAX_ATTEMPTS:
                continue
            if not (model_dir_of(Path(c["abs_path"])) / "config.json").is_file():
                continue  # pruned by training, or not a model folder
            out.append(c)
        return out

    def run_once(self) -> int:
        """Discover, evaluate everything pending (newest first), publish. Returns evaluations done."""
        if self.cfg.evaluation.mode == "server":
            return self._run_once_server()
        discover_checkpoints(self.paths, self.db)
        todo = self.pending()
        self.status.set(state="idle" if not todo else "evaluating", pending=[c["path"] for c in todo],
                        n_pending=len(todo))
        done = 0
        for i, c in enumerate(todo):
            if self.stop_event.is_set():
                break
            if self._evaluate_one(c, remaining=[x["path"] for x in todo[i + 1:]]):
                done += 1
        self.status.set(state="idle", current=None, pending=[], n_pending=0)
        return done

    def _evaluate_one(self, c: dict, remaining: list[str]) -> bool:
        path = c["path"]
        started = utc_now_iso(self.clock)
        self.status.set(state="evaluating", current={"checkpoint": path, "global_step": c["global_step"],
                                                     "started_at": started},
                        pending=remaining, n_pending=len(remaining))
        try:
            res = evaluate_checkpoint(c["abs_path"], self.suite, self.cfg, base_dir=self.paths.base)
            record_result(self.db, path, self.suite, res)
        except Exception as e:  # one bad checkpoint must not stop the daemon
            if not (model_dir_of(Path(c["abs_path"])) / "config.json").is_file():
                self.status.set(current=None)  # pruned by training while we loaded it: not an error
                return False
            self.attempts[path] = self.attempts.get(path, 0) + 1
            err = {"checkpoint": path, "error": f"{type(e).__name__}: {e}", "at": utc_now_iso(self.clock),
                   "attempt": self.attempts[path]}
            self.status.set(errors=(self.status.doc["errors"] + [err])[-MAX_RECENT:], current=None)
            print(f"[automated_testing] {path}: {err['error']}\n{traceback.format_exc()}", file=sys.stderr)
            return False
        self._publish(path, c["global_step"], res)
        return True

    def _publish(self, path: str, step: int, res: dict) -> None:
        cal = res.get("calibration") or {}
        last = {"checkpoint": path, "global_step": step, "accuracy": res["accuracy"], "n_items": res["n_items"],
                "n_correct": res["n_correct"], "by_difficulty": res["by_difficulty"],
                "validation_loss": res.get("validation_loss"), "ece": cal.get("ece"),
                "duration_s": res.get("duration_s"), "evaluated_at": utc_now_iso(self.clock),
                "n_failures": len(res["failures"]),
                "failures": [{k: f[k] for k in ("index", "id", "difficulty", "prompt", "expected", "got")}
                             for f in res["failures"][:MAX_FAILURES_IN_STATUS]]}
        summary = {k: last[k] for k in ("checkpoint", "global_step", "accuracy", "validation_loss", "ece",
                                        "evaluated_at")}
        try:
            refresh_reports(self.paths.base, self.cfg, self.suite.version)
        except Exception as e:
            err = {"checkpoint": path, "error": f"reports: {type(e).__name__}: {e}", "at": utc_now_iso(self.clock)}
            self.status.doc["errors"] = (self.status.doc["errors"] + [err])[-MAX_RECENT:]
        self.status.set(last_result=last, recent=([summary] + self.status.doc["recent"])[:MAX_RECENT],
                        evaluated_total=self.status.doc["evaluated_total"] + 1, current=None)

    def _run_once_server(self) -> int:
        if self.client is None:
            self.client = _make_client(self.cfg, self.paths.base)
        client = self.client
        info = client.info()
        info = info if isinstance(info, dict) else {}
        ck = _served_checkpoint(self.paths, info)
        if ck is None:
            self.status.set(state="idle", current=None)
            return 0
        path, step = ck
        self.db.register_checkpoint(path, step, info.get("job_id"), info.get("source_file"))
        if any(e["suite_version"] == self.suite.version for e in self.db.evaluations_for(path, with_details=False)):
            self.status.set(state="idle", current=None)
            return 0
        rel = self.db.rel(path)
        self.status.set(state="evaluating", current={"checkpoint": rel, "global_step": step,
                                                     "started_at": utc_now_iso(self.clock)})
        try:
            res = evaluate_via_server(client, self.suite, self.cfg, info.get("profile") or None)
            record_result(self.db, path, self.suite, res)
        except Exception as e:
            err = {"checkpoint": rel, "error": f"{type(e).__name__}: {e}", "at": utc_now_iso(self.clock)}
            self.status.set(state="idle", errors=(self.status.doc["errors"] + [err])[-MAX_RECENT:], current=None)
            return 0
        self._publish(rel, step, res)
        self.status.set(state="idle")
        return 1

    # ------------------------------------------------------------------ loop
    def run(self, once: bool = False) -> None:
        self.status.set(state="idle")
        self.status.start(self.stop_event)
        if self.db.latest_evaluations(self.suite.version):
            try:  # thresholds or weights may have changed since the last run
                refresh_reports(self.paths.base, self.cfg, self.suite.version)
            except Exception as e:
                print(f"[automated_testing] reports: {type(e).__name__}: {e}", file=sys.stderr)
        try:
            while not self.stop_event.is_set():
                try:
                    self.run_once()
                except Exception as e:
                    err = {"checkpoint": None, "error": f"{type(e).__name__}: {e}", "at": utc_now_iso(self.clock)}
                    self.status.set(state="error", errors=(self.status.doc["errors"] + [err])[-MAX_RECENT:])
                    print(f"[automated_testing] pass failed: {traceback.format_exc()}", file=sys.stderr)
                if once:
                    break
                self.stop_event.wait(self.cfg.evaluation.interval)
        finally:
            self.status.set(state="stopped", current=None)


def _make_client(cfg, base_dir):
    import os as _os
    from monitoring.prediction_client import PredictionClient
    if cfg.evaluation.server_url:
        return PredictionClient(cfg.evaluation.server_url,
                                api_key=_os.environ.get("INFERENCE_API_KEY") or cfg.inference.api_key or None)
    return PredictionClient.from_config(base_dir)


def _served_checkpoint(paths: Paths, info: dict) -> tuple[str, int] | None:
    """(checkpoint path, global step) of what the server serves: its info's ``checkpoint``, else
    the last deployment's, else the served folder itself."""
    last = read_json(paths.status_file("last_deployment.json")) or {}
    path = info.get("checkpoint") or last.get("checkpoint") or info.get("path")
    step = info.get("global_step", last.get("global_step"))
    if not path or not isinstance(step, int):
        return None
    p = Path(path)
    return (str(p if p.is_absolute() else paths.base / p), step)


def run_daemon(base_dir=None, once: bool = False, config=None) -> int:
    """Entry point with single-instance lock and signal handling. Returns an exit code."""
    from foundation.single_instance import AlreadyRunning, SingleInstance
    paths = Paths.from_base(base_dir)
    stop = threading.Event()
    lock = SingleInstance(paths.pids, INSTANCE_NAME)
    try:
        lock.acquire()
    except AlreadyRunning as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stop.set())
        tester = AutomatedTester(paths.base, config, stop_event=stop)
        tester.run(once=once)
        return 0
    finally:
        lock.release()

