"""Human renderings of a data analysis report (``trainer.data.analysis.analyze_paths``): a
terminal summary with a length histogram, and a PNG (matplotlib, the ``analysis`` extra)."""
from __future__ import annotations

import io
from pathlib import Path

from foundation.atomic_io import atomic_write_bytes

_BAR = 40


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _mix(d: dict) -> str:
    total = sum(d.values()) or 1
    return ", ".join(f"{k} {v} ({100 * v / total:.0f}%)" for k, v in sorted(d.items(), key=lambda kv: -kv[1]))


def terminal_histogram(hist: dict, max_length: int | None = None) -> list[str]:
    """One line per bin: ``lo-hi  count  ####``; ``|`` marks the bin holding max_length and ``>``
    the bins past it; values above the last bin are one ``overflow`` line."""
    edges, counts = hist.get("edges") or [], hist.get("counts") or []
    if not counts:
        return []
    overflow = hist.get("overflow") or 0
    peak = max(counts + [overflow]) or 1
    w = len(str(hist.get("overflow_max") or edges[-1]))
    out = []
    rows = [(edges[i], edges[i + 1] - 1, c) for i, c in enumerate(counts)]
    if overflow:
        rows.append((edges[-1], hist["overflow_max"], overflow))
    for lo, hi, c in rows:
        mark = " " if max_length is None or hi <= max_length else ("|" if lo <= max_length else ">")
        bar = "#" * max(1 if c else 0, round(_BAR * c / peak))
        out.append(f"  {mark}{lo:>{w}}-{hi:<{w}} {c:>8}  {bar}")
    return out


def render_section(r: dict) -> list[str]:
    """The lines for one file's (or the total's) report."""
    head = r["path"] + (f"  ({r['files']} files)" if "files" in r else "")
    lines = [head, "=" * len(head)]
    lines.append(f"examples {r['examples']} from {r['lines']} lines ({r['blank_lines']} blank); "
                 f"errors {r['n_errors']}; formats: {_mix(r['formats']) or '-'}")
    for e in r.get("errors", []):
        lines.append(f"  error {r['path']}:{e['line']}: {e['field'] or '<line>'}: {e['reason']}: {e['message']}")
    t = r["turns"]
    if t["per_example"]:
        lines.append(f"turns per example: mean {t.get('mean')}; {_mix(t['per_example'])}")
        lines.append(f"roles: {_mix(r['roles'])}")
    sp = r["system_prompts"]
    top = "; ".join(f"{p['count']}x {p['text']!r}" for p in sp["top"][:3])
    lines.append(f"system prompts: {sp['distinct']} distinct, {sp['examples_without']} examples without"
                 + (f"; {top}" if top else "")
                 + (f"; training inserts {sp['configured']!r}" if sp["configured"] else ""))
    tk = r["tokens"]
    if tk["tokenized"]:
        ln = tk["length"]
        lines.append(f"tokens (chat template, before truncation) over {tk['tokenized']} examples: "
                     f"min {ln['min']} p50 {ln['p50']} p90 {ln['p90']} p95 {ln['p95']} p99 {ln['p99']} "
                     f"max {ln['max']} mean {ln['mean']}")
        lines.extend(terminal_histogram(tk["histogram"], tk["max_length"]))
        lines.append(f"over max_length {tk['max_length']}: {tk['overlong']} ({tk['overlong_policy']}: "
                     f"{tk['overlong_consequence']})"
                     + (f"; {tk['no_labels_after_truncation']} left with nothing to learn"
                        if tk["no_labels_after_truncation"] else ""))
        lines.append(f"would train: {tk['trained_examples']} examples, {tk['trained_tokens']} tokens, "
                     f"{tk['assistant_tokens']} with a loss ({tk['loss_on']}): share {_pct(tk['assistant_share'])}")
    else:
        lines.append("tokens: not measured (no tokenizer)")
    d = r["duplicates"]
    lines.append(f"duplicates: exact {d['exact_within']} within, {d['exact_trained']} already trained; "
                 f"near (>= {d['near_threshold']:.0%} similar) {d['near_within']} within, "
                 f"{d['near_trained']} already trained" + (" (near index full)" if d["near_index_full"] else ""))
    for x in d.get("examples", [])[:5]:
        lines.append(f"  line {x['line']}: {x['kind']} of {x['same_as']}")
    a = r["anomalies"]
    lines.append("anomalies: " + (_mix(a["counts"]) if a["counts"] else "none"))
    for x in a.get("examples", [])[:5]:
        lines.append(f"  line {x['line']}: {x['kind']}: {x['detail']}")
    sy = r["syllo"]
    if sy:
        lines.append(f"syllo: {sy['examples']} examples; difficulty: {_mix(sy['difficulty'])}; "
                     f"kinds: {_mix(sy['kinds'])}")
        lines.append(f"  answer from wording alone: {_pct(sy['wording_guess_accuracy'])} right "
                     f"(majority baseline {_pct(sy['majority_baseline'])})")
        for row in sy["templates"]:
            lines.append(f"  {row['n']:>6}  {row['template']}  -> {_mix(row['answers'])}")
    return lines


def render_text(report: dict) -> str:
    out: list[str] = []
    for r in report["files"]:
        out += render_section(r) + [""]
    if len(report["files"]) > 1:
        out += render_section(report["total"]) + [""]
    tr = report.get("trained")
    if tr:
        out.append(f"compared with {len(tr['compared_files'])} trained file(s), {tr['examples']} examples"
                   + (f"; not on disk any more: {', '.join(tr['missing_files'])}" if tr["missing_files"] else "")
                   + f" ({tr['note']})")
    return "\n".join(out).rstrip() + "\n"


def write_plot(report: dict, out: str | Path) -> Path:
    """A PNG of the total: length histogram (max_length marked), turns, difficulty mix and the
    syllo answer balance per template. ``ImportError`` when matplotlib is not installed."""
    import matplotlib
    matplotlib.use("Agg")  # no display needed; never opens a window
    import matplotlib.pyplot as plt

    from syllo.puzzles import DIFFICULTIES
    r = report["total"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    ax = axes[0][0]
    h = r["tokens"]["histogram"]
    if h["counts"]:
        ax.bar(h["edges"][:-1], h["counts"], width=[b - a for a, b in zip(h["edges"], h["edges"][1:])],
               align="edge", edgecolor="black")
        ax.axvline(r["tokens"]["max_length"], color="red", linestyle="--", label="max_length")
        ax.legend()
    more = f" ({h['overflow']} longer, up to {h['overflow_max']})" if h.get("overflow") else ""
    ax.set(title="Tokens per example (chat template)" + more, xlabel="tokens", ylabel="examples")
    ax = axes[0][1]
    turns = r["turns"]["per_example"]
    ax.bar(list(turns), list(turns.values()))
    ax.set(title="Turns per example", xlabel="messages (not system)", ylabel="examples")
    sy = r["syllo"] or {}
    ax = axes[1][0]
    mix = sy.get("difficulty") or r["roles"]
    order = {d: i for i, d in enumerate(DIFFICULTIES)}
    names = sorted(mix, key=lambda k: (order.get(k, len(order)), k))
    ax.bar(names, [mix[k] for k in names])
    ax.set(title="Syllo difficulty mix" if sy else "Messages per role", ylabel="count")
    ax = axes[1][1]
    rows = sy.get("templates") or []
    answers = sorted({a for row in rows for a in row["answers"]})
    bottom = [0.0] * len(rows)
    for a in answers:
        vals = [row["answers"].get(a, 0) / row["n"] for row in rows]
        ax.barh(range(len(rows)), vals, left=bottom, label=a)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_yticks(range(len(rows)), [row["template"][:40] for row in rows], fontsize=7)
    ax.set(title="Answer share per question template", xlabel="share")
    if answers:
        ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    out = Path(out)
    atomic_write_bytes(out, buf.getvalue())  # a dashboard may serve it while it is rewritten
    return out


__all__ = ["render_text", "render_section", "terminal_histogram", "write_plot"]
