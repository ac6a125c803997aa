"""The engine client's requests with every step's output (``RequestOutputKind.CUMULATIVE``, so that the request
timeout sees the engine making tokens) against the final output only (``FINAL_ONLY``, before 2026-12-07).

One started in-process engine (``EngineClient``, the daemon's default model settings), one batch of ``--sessions``
rendered HDFS sessions with pairwise different prompts (``bench/model_stage.py``'s), the daemon's constrained answer
regex, greedy, ``model.max_new_tokens``; the only difference is the requests' ``output_kind`` (asserted: every other
request parameter is the same). The passes alternate (final, cumulative, cumulative, final) so that a neighbour's
load does not favour one side, after a warm-up pass that is not counted (the engine's first batch of these prompts
ran twice as long: structured-output grammars compiled, caches filled). Reported: sessions/s of each pass, and how
many sessions' completions differ between the two passes of one kind (the CPU engine's own run-to-run variation,
BENCHMARKS section 6) and between the kinds.

Usage (vLLM spawns processes): ``.venv/bin/python bench/output_kind.py [--sessions 32] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import default_model_dir, print_machine


async def run(n: int, model: Path) -> dict:
    from model_stage import _sessions
    from vllm.sampling_params import RequestOutputKind

    from rationad.config import ModelConfig
    from rationad.model.engine import EngineClient
    from rationad.prompt import ANSWER_REGEX, build_messages, view_of

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    cfg = ModelConfig(backend="vllm-engine", path=model)
    client = EngineClient(cfg)
    await client.start()
    conversations = [build_messages(view_of(s, "hdfs")) for s in _sessions(n)]
    own = client._sampling
    kinds = {"final": RequestOutputKind.FINAL_ONLY, "cumulative": RequestOutputKind.CUMULATIVE}
    passes, texts, seen = [], [], []
    try:
        for name in ("warm-up", "final", "cumulative", "cumulative", "final"):
            def sampling(max_tokens, temperature, regex, kind=kinds.get(name, RequestOutputKind.FINAL_ONLY)):
                params = own(max_tokens, temperature, regex)
                params.output_kind = kind
                seen.append(repr(params).replace(repr(kind), "KIND"))  # everything but the kind, to compare
                return params

            client._sampling = sampling
            t0 = time.monotonic()
            got = await client.generate(conversations, max_tokens=cfg.max_new_tokens, temperature=0.0,
                                        regex=ANSWER_REGEX)
            secs = time.monotonic() - t0
            if name == "warm-up":
                print(f"warm-up pass (not counted): {secs:.1f} s", flush=True)
                continue
            passes.append({"output_kind": name, "seconds": round(secs, 2), "sessions_per_s": round(n / secs, 3)})
            print(json.dumps(passes[-1]), flush=True)
            texts.append([c.text for c in got])
    finally:
        await client.aclose()
    assert len(set(seen)) == 1, "the passes' request parameters differ beyond output_kind"

    def differ(a: int, b: int) -> int:
        return sum(x != y for x, y in zip(texts[a], texts[b], strict=True))

    return {"sessions": n, "max_new_tokens": cfg.max_new_tokens, "dtype": cfg.dtype, "passes": passes,
            "differing_completions": {"final vs final": differ(0, 3), "cumulative vs cumulative": differ(1, 2),
                                      "final vs cumulative": differ(0, 1), "final vs cumulative (later)": differ(3, 2)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sessions", type=int, default=32)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    machine = print_machine()
    report = asyncio.run(run(a.sessions, (a.model or default_model_dir()).expanduser()))
    report["machine"] = machine
    for kind in ("final", "cumulative"):
        rates = [p["sessions_per_s"] for p in report["passes"] if p["output_kind"] == kind]
        print(f"{kind}: sessions/s {rates} (mean {sum(rates) / len(rates):.3f})")
    print(f"sessions whose completions differ: {json.dumps(report['differing_completions'])}")
    if a.json:
        a.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
