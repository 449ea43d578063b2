"""Syllo puzzles: syllogism puzzles with a computed, certified answer, at four difficulty levels,
rendered as chat records for a data profile. This module is the package's public face: the
record round trip (``render_record`` -> ``metadata`` -> ``puzzle_from_metadata`` ->
``rerender_record``) lives here, and the names of its parts are importable from here.

  ``syllo.model``         what a puzzle is: vocabulary, ``LEVELS``, ``Puzzle``
  ``syllo.construction``  ``make_puzzle``: drawing a puzzle with a computed, certified answer
  ``syllo.rendering``     prompt and answer text per profile, the puzzle's identity
  ``syllo.parsing``       statements and puzzle keys read back from text (fingerprints)
"""
from __future__ import annotations

import json

from syllo.construction import PuzzleRejected, make_puzzle
from syllo.logic import NEGATION, Stmt
from syllo.model import DIFFICULTIES, GENERATOR_VERSION, LEVELS, NOTHING, PHRASES, Level, Puzzle
from syllo.parsing import parse_core, parse_statement
from syllo.rendering import (PROFILE_NAMES, READING_NOTE, assistant_text, canonical_key_of, core_text,
                             expected_answer, normalize_text, puzzle_id, question_template, regime3_answer,
                             user_text)


def render_record(pz: Puzzle, profile: str = "plain", index: int = 0, seed: int | None = None) -> dict:
    """One chat record for ``profile``:

    * ``plain``: the prompt, and the bare answer as the assistant turn.
    * ``emoji_think``: the plain record; the profile's own ``transform_example`` (thinking-emoji
      frame on the answer, instructions on the user turn) is applied by the engine at training time
      and by the evaluator when it prompts, so the task package needs no profile code.
    * ``regime3``: a symbolic instruction, and the canonical s-expression answer between markers:
      ``<<ANS_START>> (verdict valid) <<ANS_END>>``, ``<<ANS_START>> (all wugs zorps) <<ANS_END>>``,
      ``<<ANS_START>> (some_not wugs zorps) <<ANS_END>>``, ``<<ANS_START>> (none wugs zorps) <<ANS_END>>``.

    ``metadata.answer`` is always the plain answer; ``metadata.expected`` the profile's form."""
    if profile not in PROFILE_NAMES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILE_NAMES)}")
    meta = {
        "source": "syllo", "generator_version": GENERATOR_VERSION, "id": puzzle_id(pz),
        "difficulty": pz.difficulty, "answer": pz.answer, "pattern": pz.pattern, "kind": pz.kind,
        "valid": pz.valid, "profile": profile, "expected": expected_answer(pz, profile),
        "premises": [st.as_list() for st in pz.premises],
        "phrasing": pz.phrasing, "conclusion": pz.conclusion.as_list() if pz.conclusion else None,
        "conclusion_phrasing": pz.conclusion_phrasing,
        "subject": pz.subject or None, "predicate": pz.predicate or None,
        "chain_length": pz.chain_length, "n_premises": len(pz.premises),
        "premise_forms": "+".join(sorted(st.q for st in pz.premises)),
        "chain_indices": pz.chain_indices, "distractor_indices": pz.distractor_indices,
        "n_distractors": len(pz.distractor_indices), "converted_indices": pz.converted_indices,
        "paraphrased": any(pz.phrasing) or bool(pz.conclusion_phrasing), "n_terms": len(pz.terms),
        "shuffled": LEVELS[pz.difficulty].shuffle, "template": question_template(pz),
        "certificate": pz.certificate,
    }
    if seed is not None:
        meta["seed"], meta["index"] = seed, index
    rec = {"messages": [{"role": "user", "content": user_text(pz, profile)},
                        {"role": "assistant", "content": assistant_text(pz, profile)}],
           "metadata": meta}
    return rec


def rerender_record(record: dict, profile: str, index: int = 0) -> dict:
    """A syllo record rendered for another profile (from its metadata); other records unchanged."""
    meta = record.get("metadata") if isinstance(record, dict) else None
    if not isinstance(meta, dict) or meta.get("source") != "syllo" or profile not in PROFILE_NAMES:
        return record
    return render_record(puzzle_from_metadata(meta), profile, index=index, seed=meta.get("seed"))


def puzzle_from_metadata(meta: dict) -> Puzzle:
    """Rebuild a puzzle from a record's metadata (to re-render it for another profile)."""
    try:
        prem = [Stmt.from_list(x) for x in meta["premises"]]
        concl = Stmt.from_list(meta["conclusion"]) if meta.get("conclusion") else None
        return Puzzle(difficulty=meta["difficulty"], kind=meta["kind"], pattern=meta["pattern"],
                      valid=bool(meta["valid"]), premises=prem, phrasing=list(meta["phrasing"]),
                      chain_indices=list(meta.get("chain_indices", [])),
                      distractor_indices=list(meta.get("distractor_indices", [])),
                      converted_indices=list(meta.get("converted_indices", [])), conclusion=concl,
                      conclusion_phrasing=int(meta.get("conclusion_phrasing", 0)),
                      subject=meta.get("subject") or "", predicate=meta.get("predicate") or "",
                      answer=meta["answer"], chain_length=int(meta.get("chain_length", 0)),
                      certificate=meta.get("certificate") or {})
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"not syllo metadata ({type(e).__name__}: {e})") from None


def dumps_record(rec: dict) -> str:
    return json.dumps(rec, ensure_ascii=False, sort_keys=False)


__all__ = ["Puzzle", "Level", "LEVELS", "DIFFICULTIES", "PHRASES", "GENERATOR_VERSION", "PuzzleRejected",
           "make_puzzle", "render_record", "rerender_record", "puzzle_from_metadata", "dumps_record",
           "parse_statement", "parse_core", "canonical_key_of", "normalize_text", "core_text", "user_text",
           "assistant_text", "regime3_answer", "expected_answer", "NOTHING", "NEGATION", "READING_NOTE",
           "question_template"]
