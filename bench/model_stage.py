"""Model-stage benchmark: sessions/s through the daemon's ``Judge`` (vLLM in-process engine client) beside raw
``vllm.LLM.generate`` on the same prompts (goal: Judge / raw >= 0.9), beside the ``Judge`` over the ``vllm-server``
backend (an OpenAI-compatible vLLM server in a child process, same engine settings), and beside plain transformers
``generate``.

Same sessions (rendered HDFS sessions, realistic 3 % anomalous mix, parsed by the daemon's parser), same views and
chat prompts (``rationad.prompt``), cache OFF, greedy, the same ``max_new_tokens``; the two vLLM runs use the same
request parameters (the raw side is given ``EngineClient._sampling``'s own: the structured-output regex
``prompt.ANSWER_REGEX`` and the top-10 logprobs of every token that the score is read from); transformers has no regex constraint (it stops at EOS or
``max_new_tokens``). The Judge is driven like the daemon drives it: batches of ``model.max_batch_size`` sessions,
at most ``model.max_concurrency`` batches in flight. Engines run one after another (each in its own child process,
so one engine's memory and threads are gone before the next starts); engine start-up is reported but not counted.

Same engine settings on every vLLM side, checked: the Judge's engine runs first and reports the settings its engine
resolved (dtype after ``rationad.model.dtype.resolve_dtype``, max_model_len, enforce_eager, seed, scheduler limits,
prefix caching, chunked prefill, KV-cache size); raw ``LLM`` and the server are built with those and report what
*they* resolved (the server: from its engine's config log line), and the script stops if any differs. (vLLM's
defaults differ by entry point: ``LLM`` takes 256 sequences / 4,096 batched tokens on CPU, ``AsyncLLM`` 128 / 2,048,
the API server 128 / 2,048; ``dtype="auto"`` is the checkpoint's bfloat16 in vLLM, float32 in rationad on an AVX2
CPU.) The server side runs three passes on one server, prefix cache reset before each: every request of a batch in
flight at once (the client now), at most ``model.max_concurrency`` requests in flight (the client before issue 15),
and the first again.

Usage (vLLM spawns processes, hence the ``__main__`` guard):
``.venv/bin/python bench/model_stage.py [--sessions 64] [--max-tokens N] [--model DIR] [--quick]
[--only judge --only vllm --only server --only transformers]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
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


def _engine_kwargs(cfg, settings: dict | None = None) -> dict:
    """The engine arguments of ``EngineClient._build`` (rationad/model/engine.py), plus the Judge engine's resolved
    scheduler limits when known (raw ``LLM`` and the API server default to other values)."""
    from vllm.platforms import current_platform

    from rationad.model.dtype import resolve_dtype
    from rationad.model.engine import SEED

    kw = {"dtype": resolve_dtype(cfg.dtype, on_cpu=current_platform.is_cpu()), "max_model_len": cfg.max_model_len,
          "enforce_eager": True, "seed": SEED, "disable_log_stats": True}
    if settings:
        kw.update(max_num_seqs=settings["max_num_seqs"], max_num_batched_tokens=settings["max_num_batched_tokens"])
    return kw


def _resolved(vc) -> dict:
    """The settings an engine resolved (from its ``VllmConfig``) that change how fast it runs."""
    import torch

    dtype = vc.model_config.dtype
    return {"dtype": str(dtype).removeprefix("torch.") if isinstance(dtype, torch.dtype) else str(dtype),
            "max_model_len": vc.model_config.max_model_len, "enforce_eager": vc.model_config.enforce_eager,
            "seed": vc.model_config.seed, "max_num_seqs": vc.scheduler_config.max_num_seqs,
            "max_num_batched_tokens": vc.scheduler_config.max_num_batched_tokens,
            "enable_chunked_prefill": vc.scheduler_config.enable_chunked_prefill,
            "enable_prefix_caching": vc.cache_config.enable_prefix_caching,
            "kvcache_space_gib": os.environ.get("VLLM_CPU_KVCACHE_SPACE")}


async def _drive(client, cfg, sessions, *, reset=None) -> dict:
    """The Judge over ``client`` as the daemon drives it: one warm-up session, then batches of
    ``model.max_batch_size``, at most ``model.max_concurrency`` batches in flight; cache off."""
    from rationad.judge import Judge

    n = len(sessions)
    # the model writes whole answers, as the raw side does (section 15 measures the walk the daemon writes)
    judge = Judge(client, cfg, "hdfs", cache=None, write_walk=False, write_rule=False)
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
        if reset is not None:  # a second pass on one server starts like the first
            await reset()
        await judge.judge_many(sessions[:1])  # warm-up (first request compiles the regex's grammar)
        calls0 = judge.model_calls
        counted.update(prompt_tokens=0, gen_tokens=0)
        t0, c0 = time.perf_counter(), time.process_time()
        results = [j for r in await asyncio.gather(*(one(b) for b in batches)) for j in r]
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        client.generate = generate
    texts = [j.answer.raw for j in results]
    return {"sessions": n, "secs": secs, "front_cpu_secs": cpu, "sessions_per_s": n / secs,
            "model_calls": judge.model_calls - calls0,
            "ok": sum(j.ok for j in results), "texts": texts,
            "anomalous": sum(j.answer.verdict == "anomalous" for j in results), **counted}


async def _judge(model: str, n: int, max_tokens: int) -> dict:
    from rationad.model.engine import EngineClient

    cfg = _cfg(model, max_tokens)
    sessions = _sessions(n)
    client = EngineClient(cfg)
    t0 = time.perf_counter()
    await client.start()
    start_secs = time.perf_counter() - t0
    settings = _resolved(client._llm.vllm_config)
    try:
        r = await _drive(client, cfg, sessions)
    finally:
        await client.aclose()
    return {"path": "judge", "start_secs": start_secs, "settings": settings, **r}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_settings(log: str) -> dict:
    """What the API server's engine resolved, read from its log: its ``Initializing a V1 LLM engine ... with
    config:`` line, and for the scheduler limits (not in that line) the ``non-default args`` it was started with."""
    line = next((x for x in log.splitlines() if "with config:" in x), "")
    args = next((x for x in log.splitlines() if "non-default args:" in x), "")

    def field(name: str) -> str | None:
        m = re.search(rf"\b{name}=([^,]+)", line)
        return m.group(1) if m else None

    def flag(name: str) -> bool | None:
        v = field(name)
        return None if v is None else v == "True"

    def arg(name: str) -> int | None:
        m = re.search(rf"'{name}': (\d+)", args)
        return int(m.group(1)) if m else None

    dtype = field("dtype")
    return {"dtype": dtype.removeprefix("torch.") if dtype else None,
            "max_model_len": int(field("max_seq_len") or 0) or None, "enforce_eager": flag("enforce_eager"),
            "seed": int(field("seed")) if field("seed") not in (None, "None") else None,
            "max_num_seqs": arg("max_num_seqs"), "max_num_batched_tokens": arg("max_num_batched_tokens"),
            "enable_chunked_prefill": flag("enable_chunked_prefill"),
            "enable_prefix_caching": flag("enable_prefix_caching"),
            "kvcache_space_gib": os.environ.get("VLLM_CPU_KVCACHE_SPACE")}


def _server(model: str, n: int, max_tokens: int, settings: dict | None) -> dict:
    """The Judge over ``ServerClient`` against ``python -m vllm.entrypoints.openai.api_server`` (a child process,
    built with the Judge engine's settings), three passes: every request of a batch in flight (the client as it is),
    at most ``model.max_concurrency`` requests in flight (the client before issue 15: a semaphore of that size), and
    the first again."""
    import httpx

    kw = _engine_kwargs(_cfg(model, max_tokens), settings)
    port = _free_port()
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--served-model-name",
           "rationad", "--host", "127.0.0.1", "--port", str(port), "--dtype", kw["dtype"], "--max-model-len",
           str(kw["max_model_len"]), "--enforce-eager", "--seed", str(kw["seed"]), "--disable-log-stats",
           "--disable-uvicorn-access-log"]
    if "max_num_seqs" in kw:
        cmd += ["--max-num-seqs", str(kw["max_num_seqs"]), "--max-num-batched-tokens",
                str(kw["max_num_batched_tokens"])]
    log_path = Path(f"/tmp/rationad-bench-model-server-{port}.log")
    env = dict(os.environ, VLLM_SERVER_DEV_MODE="1")  # for POST /reset_prefix_cache between the passes
    t0 = time.perf_counter()
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"vLLM server exited {proc.returncode}: {log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.perf_counter() - t0 > 600:
                raise RuntimeError(f"vLLM server not healthy after 600 s: {log_path.read_text()[-3000:]}")
            time.sleep(1)
        start_secs = time.perf_counter() - t0
        resolved = _server_settings(log_path.read_text(errors="replace"))
        out = asyncio.run(_server_passes(model, url, n, max_tokens))
        return {"path": "server", "start_secs": start_secs, "settings": resolved, "log": str(log_path), **out}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


async def _server_passes(model: str, url: str, n: int, max_tokens: int) -> dict:
    import httpx

    from rationad.config import ModelConfig
    from rationad.model.server import ServerClient

    cfg = ModelConfig(backend="vllm-server", path=model, server_url=url, served_model_name="rationad",
                      max_new_tokens=max_tokens, request_timeout_secs=600)
    sessions = _sessions(n)

    async def reset() -> None:
        async with httpx.AsyncClient() as http:
            (await http.post(f"{url}/reset_prefix_cache", timeout=30)).raise_for_status()

    out: dict = {}
    # A B A: the client as it is, the client before issue 15, the client as it is again (drift on a shared machine)
    for name, cap in (("all", None), ("capped", cfg.max_concurrency), ("all_again", None)):
        client = ServerClient(cfg)
        if cap is not None:
            client._sem = asyncio.Semaphore(cap)  # the client before issue 15: max_concurrency requests in flight
        peak = {"now": 0, "max": 0}

        async def counted(*a, _request=client._http.request, _peak=peak, **k):  # requests in flight
            _peak["now"] += 1
            _peak["max"] = max(_peak["max"], _peak["now"])
            try:
                return await _request(*a, **k)
            finally:
                _peak["now"] -= 1

        client._http.request = counted
        try:
            r = await _drive(client, cfg, sessions, reset=reset)
        finally:
            await client.aclose()
        r["max_requests_in_flight"] = peak["max"]
        if name == "all":
            out.update(r)
        else:
            out[name] = r
    return out


def _raw_vllm(model: str, n: int, max_tokens: int, settings: dict | None) -> dict:
    from vllm import LLM
    from vllm.inputs import TokensPrompt
    from vllm.platforms import current_platform

    from rationad.prompt import ANSWER_REGEX

    cfg = _cfg(model, max_tokens)
    sessions = _sessions(n)
    _, messages = _views_and_messages(cfg, sessions)
    t0 = time.perf_counter()
    # The Judge's engine settings: its resolved dtype (not vLLM's "auto", the checkpoint's bfloat16, emulated on an
    # AVX2 CPU) and its scheduler limits (LLM's own defaults on CPU are larger).
    llm = LLM(model=model, **_engine_kwargs(cfg, settings))
    start_secs = time.perf_counter() - t0
    resolved = _resolved(llm.llm_engine.vllm_config)
    # The chat template rendered to token ids (no second BOS from re-tokenizing text), given to generate as-is.
    tok = llm.get_tokenizer()
    prompts = []
    for m in messages:
        ids = tok.apply_chat_template(m, add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids  # transformers 5 returns a BatchEncoding
        prompts.append(TokensPrompt(prompt_token_ids=list(ids)))
    # The Judge's own request parameters (EngineClient._sampling): greedy, the answer regex, no per-request seed on a
    # CPU, and the top SCORE_LOGPROBS logprobs of every generated token that the score is read from.
    from types import SimpleNamespace

    from rationad.model.engine import EngineClient

    params = EngineClient._sampling(SimpleNamespace(_seed_requests=not current_platform.is_cpu()), max_tokens, 0.0,
                                    ANSWER_REGEX)
    assert params.logprobs and params.structured_outputs.regex == ANSWER_REGEX
    llm.generate(prompts[:1], params, use_tqdm=False)  # warm-up, as for the Judge
    t0, c0 = time.perf_counter(), time.process_time()
    outs = llm.generate(prompts, params, use_tqdm=False)
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    texts = [o.outputs[0].text for o in outs]
    return {"path": "vllm", "sessions": n, "secs": secs, "front_cpu_secs": cpu, "sessions_per_s": n / secs,
            "start_secs": start_secs,
            "settings": resolved, "texts": texts, "gen_tokens": sum(len(o.outputs[0].token_ids) for o in outs),
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


def child(which: str, model: str, n: int, max_tokens: int, batch: int, settings: dict | None) -> dict:
    if which == "judge":
        return asyncio.run(_judge(model, n, max_tokens))
    if which == "vllm":
        return _raw_vllm(model, n, max_tokens, settings)
    if which == "server":
        return _server(model, n, max_tokens, settings)
    return _transformers(model, n, max_tokens, batch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=None, help="max_new_tokens (default: the daemon's default)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--hf-batch", type=int, default=16)
    ap.add_argument("--only", choices=("judge", "vllm", "server", "transformers"), action="append",
                    help="paths to run (default: judge, vllm, transformers); vllm and server bring judge along, first: "
                         "they are built with the settings its engine resolved")
    ap.add_argument("--quick", action="store_true",
                    help="8 sessions, 48 tokens, no transformers (about 3 min: two vLLM engine starts)")
    ap.add_argument("--json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--settings", help=argparse.SUPPRESS)
    args = ap.parse_args()
    model = str(args.model or default_model_dir())
    if args.max_tokens is None:
        from rationad.config import ModelConfig

        args.max_tokens = ModelConfig().max_new_tokens
    if args.child:
        r = child(args.child, model, args.sessions, args.max_tokens, args.hf_batch,
                  json.loads(args.settings) if args.settings else None)
        Path(args.out).write_text(json.dumps(r))
        return
    if args.quick:
        args.sessions, args.max_tokens = 8, 48
        args.only = args.only or ["judge", "vllm"]
    m = print_machine()
    print(f"model {model}; {args.sessions} sessions; max_new_tokens {args.max_tokens}; cache off", flush=True)
    # Both as EngineClient sets them (its setdefault reaches the engine core; set here for every side alike).
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE=os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"),
               VLLM_REGEX_COMPILATION_TIMEOUT_S=os.environ.get("VLLM_REGEX_COMPILATION_TIMEOUT_S", "60"))
    paths = list(dict.fromkeys(args.only or ["judge", "vllm", "transformers"]))
    if {"vllm", "server"} & set(paths):  # they take the Judge engine's settings: the Judge runs first
        paths = ["judge"] + [p for p in paths if p != "judge"]
    results: dict = {}
    for which in paths:
        out = Path(f"/tmp/rationad-bench-model-{os.getpid()}-{which}.json")
        cmd = [sys.executable, __file__, "--child", which, "--model", model, "--sessions", str(args.sessions),
               "--max-tokens", str(args.max_tokens), "--hf-batch", str(args.hf_batch), "--out", str(out)]
        if which in ("vllm", "server") and "judge" in results:
            cmd += ["--settings", json.dumps(results["judge"]["settings"])]
        load0 = os.getloadavg()[0]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        load1 = os.getloadavg()[0]
        if proc.returncode != 0 or not out.is_file():
            full = Path(f"/tmp/rationad-bench-model-{which}.log")
            full.write_text(proc.stdout + proc.stderr)
            print(f"  {which}: FAILED (full output in {full})\n{(proc.stdout + proc.stderr)[-3000:]}", flush=True)
            if which == "judge" and {"vllm", "server"} & set(paths):
                raise SystemExit("the Judge's engine settings are unknown: the other vLLM sides cannot be matched")
            continue
        r = json.loads(out.read_text())
        out.unlink()
        r["load_avg_1m_before"], r["load_avg_1m_after"] = round(load0, 2), round(load1, 2)
        results[which] = r
        runs = [(which, r)] + [(f"server-{k}".replace("_", "-"), r[k]) for k in ("capped", "all_again") if k in r]
        for name, x in runs:
            extra = f", at most {x['max_requests_in_flight']} requests in flight" if "max_requests_in_flight" in x else ""
            if "front_cpu_secs" in x:  # this process's CPU while timed (the engine core is another process)
                extra += f"; front-end CPU {x['front_cpu_secs']:.1f} s"
            print(f"  {name:<13} {x['sessions']} sessions in {x['secs']:7.2f} s = {x['sessions_per_s']:6.3f} "
                  f"sessions/s (start-up {r['start_secs']:.0f} s, not counted{extra}; load avg 1 min "
                  f"{load0:.2f} before, {load1:.2f} after)", flush=True)
        if "settings" in r:
            print(f"    engine settings: {r['settings']}", flush=True)
        if which in ("vllm", "server"):
            if r["settings"] != results["judge"]["settings"]:
                diff = {k: (results["judge"]["settings"].get(k), v) for k, v in r["settings"].items()
                        if results["judge"]["settings"].get(k) != v}
                raise SystemExit(f"{which}: engine settings differ from the Judge's (judge, {which}): {diff}")
            print("    same engine settings as the Judge's engine: checked", flush=True)
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
    if "server" in results and "judge" in results:
        srv, cap, again = results["server"], results["server"]["capped"], results["server"]["all_again"]
        for name, x in (("all requests in flight", srv), ("max_concurrency requests in flight", cap),
                        ("all requests in flight, again", again)):
            same = sum(a == b for a, b in zip(results["judge"]["texts"], x["texts"]))
            print(f"Judge over vllm-server ({name}) / over the in-process engine = "
                  f"{x['sessions_per_s'] / results['judge']['sessions_per_s']:.3f}; identical completions "
                  f"{same}/{args.sessions}; model calls {x['model_calls']}, well-formed {x['ok']}; tokens prompt "
                  f"{x['prompt_tokens']} / generated {x['gen_tokens']}")
            x["ratio_to_engine"] = x["sessions_per_s"] / results["judge"]["sessions_per_s"]
            x["identical_to_engine"] = same
        print(f"server: all in flight / capped = {srv['sessions_per_s'] / cap['sessions_per_s']:.3f} and "
              f"{again['sessions_per_s'] / cap['sessions_per_s']:.3f}")
    if "transformers" in results and "judge" in results:
        print(f"ratio Judge / transformers = "
              f"{results['judge']['sessions_per_s'] / results['transformers']['sessions_per_s']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": m, "model": model, "max_tokens": args.max_tokens,
                                               "results": results}, indent=1))


if __name__ == "__main__":
    main()
