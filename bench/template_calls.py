"""Model calls per 1,000 windows, template level vs session level, without a model (issue 14).

The stream: the 2,000 lines of Loghub's ``BGL_2k.log`` (Loghub, ISSRE 2023), parsed once by the daemon's bgl parser
(the label column is stripped from the message, as in the daemon), then cycled: each cycle is the 2,000 lines in a
fresh shuffled order (``random.Random(seed)``), so consecutive cycles give different windows. The stream is cut into
fixed windows of ``--window-lines`` lines (the bgl dialect's count windows), each a ``rationad.records.Session``.

Counting, as the daemon's paths would call the model with a warm verdict cache and nothing ever failing:
- template level (``judge.level = "template"``): a window's templates go through ``TemplateBook.uses``; a template the
  book has no verdict for is one model call (``template_session`` prompt, ``Judge``/verdict cache), then known. The
  prompt keys of those template sessions are counted too (they must equal the template count);
- session level: one prompt per window, ``rationad.prompt.view_of`` (templates with counts, cut to
  ``max_prompt_tokens`` with the model's own tokenizer when its folder is there) and ``cache_key``; a key not seen
  before is one model call (the ``Judge`` dedups on that key through the verdict cache; no eviction is modelled,
  the replay cache holds 100,000 entries).

Retries of malformed answers and grounding repairs (which the real ``Judge`` also counts as model calls) are not
modelled: these are the calls of a model that always answers well.

Usage: ``.venv/bin/python bench/template_calls.py [--lines 100000] [--window-lines 100] [--seed 0]
[--steady-windows 1000] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SHARED, default_model_dir, print_machine

BGL_2K = SHARED / "datasets" / "loghub" / "BGL_2k.log"


def parse_lines(path: Path) -> list:
    from rationad.config import InputConfig
    from rationad.dialects import make_parser

    parser = make_parser(InputConfig(dialect="bgl"))
    out = []
    with path.open(encoding="utf-8", errors="surrogateescape") as f:
        for n, text in enumerate(f, start=1):
            out.extend(parser.parse(text.rstrip("\n").encode("utf-8", "surrogateescape"), topic=str(path), offset=n))
    return out


def stream(lines: list, total: int, seed: int):
    """``total`` lines: cycles over ``lines``, each cycle in its own shuffled order."""
    rng = random.Random(seed)
    emitted = 0
    while emitted < total:
        order = list(range(len(lines)))
        rng.shuffle(order)
        for i in order:
            if emitted >= total:
                return
            yield lines[i]
            emitted += 1


def per_1000(calls: int, windows: int) -> float | None:
    return round(1000 * calls / windows, 2) if windows else None


def run(log: Path, total_lines: int, window_lines: int, seed: int, steady_windows: int,
        max_prompt_tokens: int, model_dir: Path | None) -> dict:
    from rationad.model.base import token_counter
    from rationad.prompt import build_view, cache_key, view_of
    from rationad.records import Session
    from rationad.template_book import TemplateBook

    lines = parse_lines(log)
    count_tokens = token_counter(model_dir)
    book = TemplateBook()
    template_keys: set[str] = set()
    session_keys: set[str] = set()
    tpl_calls: list[int] = []  # per window
    ses_calls: list[int] = []
    t0 = time.monotonic()
    window: list = []

    def close(w: list) -> None:
        s = Session(key=f"w{len(ses_calls) + 1}", lines=w, close_reason="window", topic=str(log))
        calls = 0
        for use in book.uses(s):
            st = use.state
            if not st.known:
                view = build_view("bgl", [st.template], templated=True, max_prompt_tokens=max_prompt_tokens,
                                  count_tokens=count_tokens)
                template_keys.add(cache_key(view))
                book.judged(st.id, "normal", "counted", cached=False)
                calls += 1
        tpl_calls.append(calls)
        key = cache_key(view_of(s, "bgl", max_prompt_tokens=max_prompt_tokens, count_tokens=count_tokens))
        ses_calls.append(0 if key in session_keys else 1)
        session_keys.add(key)

    for line in stream(lines, total_lines, seed):
        window.append(line)
        if len(window) == window_lines:
            close(window)
            window = []
    if window:
        close(window)
    secs = time.monotonic() - t0
    n = len(ses_calls)
    k = min(steady_windows, n)
    first_cycle = max(1, -(-len(lines) // window_lines))
    assert len(template_keys) == sum(tpl_calls), "template prompts and template calls disagree"
    return {
        "source": f"{log} (Loghub BGL_2k, {len(lines)} lines), cycled in a shuffled order per cycle (seed {seed})",
        "lines": total_lines, "window_lines": window_lines, "windows": n, "cycles": round(total_lines / len(lines), 2),
        "max_prompt_tokens": max_prompt_tokens,
        "token_counter": f"{model_dir}/tokenizer.json" if model_dir and (model_dir / "tokenizer.json").is_file()
        else "approx (len/4)",
        "distinct_templates": len(book), "distinct_session_prompts": len(session_keys),
        "template_level": {
            "calls": sum(tpl_calls), "per_1000_windows_overall": per_1000(sum(tpl_calls), n),
            "calls_first_cycle_windows": sum(tpl_calls[:first_cycle]),
            f"per_1000_windows_last_{k}": per_1000(sum(tpl_calls[-k:]), k),
            "last_window_with_a_call": max((i + 1 for i, c in enumerate(tpl_calls) if c), default=0),
        },
        "session_level": {
            "calls": sum(ses_calls), "per_1000_windows_overall": per_1000(sum(ses_calls), n),
            "calls_first_cycle_windows": sum(ses_calls[:first_cycle]),
            f"per_1000_windows_last_{k}": per_1000(sum(ses_calls[-k:]), k),
            "last_window_with_a_call": max((i + 1 for i, c in enumerate(ses_calls) if c), default=0),
        },
        "steady_windows": k, "first_cycle_windows": first_cycle, "seconds": round(secs, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--log", type=Path, default=BGL_2K, help="a raw BGL log (default: Loghub BGL_2k.log)")
    ap.add_argument("--lines", type=int, default=100_000, help="stream length in lines (default 100,000)")
    ap.add_argument("--window-lines", type=int, default=100, help="lines per fixed window (default 100)")
    ap.add_argument("--seed", type=int, default=0, help="shuffle seed (default 0)")
    ap.add_argument("--steady-windows", type=int, default=1000,
                    help="steady state = the last N windows (default 1,000; all of them when the stream is shorter)")
    ap.add_argument("--max-prompt-tokens", type=int, default=1024, help="[model] max_prompt_tokens (default 1024)")
    ap.add_argument("--approx-tokens", action="store_true",
                    help="count prompt tokens by length estimate instead of the model folder's tokenizer.json")
    ap.add_argument("--json", type=Path, help="also write the figures here as JSON")
    args = ap.parse_args()
    m = print_machine()
    model_dir = None if args.approx_tokens else default_model_dir()
    r = run(args.log, args.lines, args.window_lines, args.seed, args.steady_windows, args.max_prompt_tokens,
            model_dir)
    r["machine"] = m
    k = r["steady_windows"]
    print(f"stream: {r['lines']:,} lines, {r['windows']:,} windows of {r['window_lines']} lines, "
          f"{r['cycles']} cycles of {args.log.name}; {r['seconds']} s")
    print(f"distinct templates: {r['distinct_templates']}, distinct session prompts: {r['distinct_session_prompts']}")
    last = f"last {k:,} windows" + (" (= all)" if k == r["windows"] else "")
    print(f"{'level':<10} {'calls':>8} {'per 1,000 windows':>18} {last + ', per 1,000':>34} "
          f"{'calls in the first ' + str(r['first_cycle_windows']) + ' windows':>32} {'last window with a call':>24}")
    for level in ("template_level", "session_level"):
        x = r[level]
        print(f"{level.split('_')[0]:<10} {x['calls']:>8} {x['per_1000_windows_overall']:>18} "
              f"{x[f'per_1000_windows_last_{k}']:>34} {x['calls_first_cycle_windows']:>32} "
              f"{x['last_window_with_a_call']:>24}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(r, indent=1) + "\n")


if __name__ == "__main__":
    main()
