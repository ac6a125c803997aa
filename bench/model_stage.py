"""Model-stage benchmark: sessions/s through the daemon's ``Judge`` (vLLM in-process engine client) beside raw
``vllm.LLM.generate`` on the same prompts (goal: Judge / raw >= 0.9), and beside plain transformers ``generate``.

Same sessions (rendered HDFS sessions, realistic 3 % anomalous mix, parsed by the daemon's parser), same views and
chat prompts (``rationad.prompt``), cache OFF, greedy, the same ``max_new_tokens``; the two vLLM runs use the same
structured-output regex (``prompt.ANSWER_REGEX``); transformers has no regex constraint (it stops at EOS or
``max_new_tokens``). The Judge is driven like the daemon drives it: batches of ``model.max_batch_size`` sessions,
at most ``model.max_concurrency`` batches in flight. Engines run one after another (each in its own child process,
so one engine's memory and threads are gone before the next starts); engine start-up is reported but not counted.

Usage (vLLM spawns processes, hence the ``__main__`` guard):
``.venv/bin/python bench/model_stage.py [--sessions 64] [--max-tokens N] [--model DIR] [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, build_sessions, default_model_dir, mixed_records, print_machine


def _sessions(n: int):
    """``n`` sessions with pairwise different views, so that the Judge's in-flight deduplication of identical
    prompts cannot save it work that raw vLLM has to do."""
    from rationad.prompt import cache_key, view_of

    out, keys = [], set()
    for s in build_sessions(list(mixed_records(20 * n, 0.03, seed=11)), seed=11):
        k = cache_key(view_of(s, "hdfs"))
        if k not in keys:
            keys.add(k)
            out.append(s)
        if len(out) == n:
            return out
    raise RuntimeError(f"fewer than {n} distinct sessions")


def _cfg(model: str, max_tokens: int):
    from rationad.config import ModelConfig

    return ModelConfig(backend="vllm-engine", path=model, max_new_tokens=max_tokens)


def _views_and_messages(cfg, sessions):
    from rationad.model.base import token_counter
    from rationad.prompt import build_messages, view_of

    count = token_counter(cfg.path)
    views = [view_of(s, "hdfs", max_prompt_tokens=cfg.max_prompt_tokens, count_tokens=count) for s in sessions]
    return views, [build_messages(v) for v in views]


async def _judge(model: str, n: int, max_tokens: int) -> dict:
    from rationad.judge import Judge
    from rationad.model.engine import EngineClient

    cfg = _cfg(model, max_tokens)
    sessions = _sessions(n)
    client = EngineClient(cfg)
    t0 = time.perf_counter()
    await client.start()
    start_secs = time.perf_counter() - t0
    judge = Judge(client, cfg, "hdfs", cache=None)
    counted = {"prompt_tokens": 0, "gen_tokens": 0}
    generate = client.generate

    async def counting(conversations, **kw):  # token totals, to show both paths saw the same prompts
        out = await generate(conversations, **kw)
        counted["prompt_tokens"] += sum(c.prompt_tokens for c in out)
        counted["gen_tokens"] += sum(c.completion_tokens for c in out)
        return out

    client.generate = counting
    sem = asyncio.Semaphore(cfg.max_concurrency)
    batches = [sessions[i : i + cfg.max_batch_size] for i in range(0, n, cfg.max_batch_size)]

    async def one(batch):
        async with sem:
            return await judge.judge_many(batch)

    try:
        await judge.judge_many(sessions[:1])  # warm-up (first request compiles the regex's grammar)
        calls0 = judge.model_calls
        counted.update(prompt_tokens=0, gen_tokens=0)
        t0 = time.perf_counter()
        results = [j for r in await asyncio.gather(*(one(b) for b in batches)) for j in r]
        secs = time.perf_counter() - t0
    finally:
        await client.aclose()
    texts = [j.answer.raw for j in results]
    return {"path": "judge", "sessions": n, "secs": secs, "sessions_per_s": n / secs, "start_secs": start_secs,
            "model_calls": judge.model_calls - calls0, "ok": sum(j.ok for j in results), "texts": texts,
            "anomalous": sum(j.answer.verdict == "anomalous" for j in results), **counted}


def _raw_vllm(model: str, n: int, max_tokens: int) -> dict:
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import StructuredOutputsParams

    from rationad.model.engine import SEED
    from rationad.prompt import ANSWER_REGEX

    cfg = _cfg(model, max_tokens)
    sessions = _sessions(n)
    _, messages = _views_and_messages(cfg, sessions)
    t0 = time.perf_counter()
    llm = LLM(model=model, dtype=cfg.dtype, max_model_len=cfg.max_model_len, enforce_eager=True, seed=SEED,
              disable_log_stats=True)
    start_secs = time.perf_counter() - t0
    # The chat template rendered to token ids (no second BOS from re-tokenizing text), given to generate as-is.
    tok = llm.get_tokenizer()
    prompts = []
    for m in messages:
        ids = tok.apply_chat_template(m, add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids  # transformers 5 returns a BatchEncoding
        prompts.append(TokensPrompt(prompt_token_ids=list(ids)))
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, seed=SEED,
                            structured_outputs=StructuredOutputsParams(regex=ANSWER_REGEX))
    llm.generate(prompts[:1], params, use_tqdm=False)  # warm-up, as for the Judge
    t0 = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    secs = time.perf_counter() - t0
    texts = [o.outputs[0].text for o in outs]
    return {"path": "vllm", "sessions": n, "secs": secs, "sessions_per_s": n / secs, "start_secs": start_secs,
            "texts": texts, "gen_tokens": sum(len(o.outputs[0].token_ids) for o in outs),
            "prompt_tokens": sum(len(o.prompt_token_ids) for o in outs)}


def _transformers(model: str, n: int, max_tokens: int, batch: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = _cfg(model, max_tokens)
    sessions = _sessions(n)
    _, messages = _views_and_messages(cfg, sessions)
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(model, padding_side="left")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    start_secs = time.perf_counter() - t0
    prompts = [tok.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in messages]
    texts, gen_tokens = [], 0
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, n, batch):
            enc = tok(prompts[i : i + batch], return_tensors="pt", padding=True, add_special_tokens=False)
            out = lm.generate(**enc, max_new_tokens=max_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
            new = out[:, enc["input_ids"].shape[1] :]
            texts.extend(tok.batch_decode(new, skip_special_tokens=True))
            gen_tokens += int((new != tok.pad_token_id).sum())
    secs = time.perf_counter() - t0
    return {"path": "transformers", "sessions": n, "secs": secs, "sessions_per_s": n / secs, "start_secs": start_secs,
            "texts": texts, "gen_tokens": gen_tokens, "batch": batch, "dtype": "float32"}


def child(which: str, model: str, n: int, max_tokens: int, batch: int) -> dict:
    if which == "judge":
        return asyncio.run(_judge(model, n, max_tokens))
    if which == "vllm":
        return _raw_vllm(model, n, max_tokens)
    return _transformers(model, n, max_tokens, batch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=None, help="max_new_tokens (default: the daemon's default)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--hf-batch", type=int, default=16)
    ap.add_argument("--only", choices=("judge", "vllm", "transformers"), action="append")
    ap.add_argument("--quick", action="store_true",
                    help="8 sessions, 48 tokens, no transformers (about 3 min: two vLLM engine starts)")
    ap.add_argument("--json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    model = str(args.model or default_model_dir())
    if args.max_tokens is None:
        from rationad.config import ModelConfig

        args.max_tokens = ModelConfig().max_new_tokens
    if args.child:
        r = child(args.child, model, args.sessions, args.max_tokens, args.hf_batch)
        Path(args.out).write_text(json.dumps(r))
        return
    if args.quick:
        args.sessions, args.max_tokens = 8, 48
        args.only = args.only or ["judge", "vllm"]
    m = print_machine()
    print(f"model {model}; {args.sessions} sessions; max_new_tokens {args.max_tokens}; cache off", flush=True)
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE=os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"))
    results = {}
    for which in args.only or ["vllm", "judge", "transformers"]:
        out = Path(f"/tmp/rationad-bench-model-{os.getpid()}-{which}.json")
        proc = subprocess.run([sys.executable, __file__, "--child", which, "--model", model, "--sessions",
                               str(args.sessions), "--max-tokens", str(args.max_tokens), "--hf-batch",
                               str(args.hf_batch), "--out", str(out)], cwd=ROOT, env=env, capture_output=True,
                              text=True)
        if proc.returncode != 0 or not out.is_file():
            full = Path(f"/tmp/rationad-bench-model-{which}.log")
            full.write_text(proc.stdout + proc.stderr)
            print(f"  {which}: FAILED (full output in {full})\n{(proc.stdout + proc.stderr)[-3000:]}", flush=True)
            continue
        r = json.loads(out.read_text())
        out.unlink()
        results[which] = r
        print(f"  {which:<13} {r['sessions']} sessions in {r['secs']:7.2f} s = {r['sessions_per_s']:6.3f} sessions/s "
              f"(start-up {r['start_secs']:.0f} s, not counted)", flush=True)
    if "judge" in results and "vllm" in results:
        ratio = results["judge"]["sessions_per_s"] / results["vllm"]["sessions_per_s"]
        same = sum(a == b for a, b in zip(results["judge"]["texts"], results["vllm"]["texts"]))
        print(f"ratio Judge / raw vLLM = {ratio:.3f} (goal >= 0.9: {'MET' if ratio >= 0.9 else 'MISSED'}); "
              f"identical completions {same}/{args.sessions}; Judge model calls "
              f"{results['judge']['model_calls']} (malformed answers retried), well-formed {results['judge']['ok']}")
        results["ratio_judge_vllm"] = ratio
        print(f"tokens: Judge prompt {results['judge'].get('prompt_tokens')} / generated "
              f"{results['judge'].get('gen_tokens')} (retries included); raw vLLM prompt "
              f"{results['vllm'].get('prompt_tokens')} / generated {results['vllm'].get('gen_tokens')}")
        results["identical"] = same
    if "transformers" in results and "judge" in results:
        print(f"ratio Judge / transformers = "
              f"{results['judge']['sessions_per_s'] / results['transformers']['sessions_per_s']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": m, "model": model, "max_tokens": args.max_tokens,
                                               "results": results}, indent=1))


if __name__ == "__main__":
    main()
