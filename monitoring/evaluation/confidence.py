"""Each answer's confidence: the model's own (unprocessed) probability of the tokens that produced it."""
from __future__ import annotations

from monitoring.evaluation.calibration import sequence_confidence


def answer_confidence(tok, profile, tokens: list[int], probs: list[float], answer: str | None) -> float:
    """Probability of the generated tokens up to the one that completes ``answer`` (extracted
    from the full text); all of them when there is no answer."""
    if answer is not None:
        for j in range(1, len(tokens) + 1):
            if profile.extract_answer(tok.decode(tokens[:j], skip_special_tokens=True)) == answer:
                return sequence_confidence(probs[:j])
    return sequence_confidence(probs)
