"""How far the tokenizer-free prompt-size estimate (``rationad.model.base.approx_token_count``: what a daemon without
``tokenizer.json`` at ``model.path`` uses, as the production overlay's does) is from the model's real count: a
1,000-line session of distinct lines in one script, cut by ``build_view`` to ``--budget`` estimated tokens, then its
system and user messages counted with the model's own ``tokenizer.json``.

With ``--against REV`` the estimate of ``rationad/model/base.py`` at that git revision (``6272f13~1``: four
characters a token whatever the script), in the same process.

Usage: ``.venv/bin/python bench/token_estimate.py [--model ~/.cache/rationad/models/default] [--budget 1024]
[--against 6272f13~1] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import default_model_dir, module_at, print_machine


def _tag(i: int, alphabet: str) -> str:
    """A word of ``alphabet`` naming ``i`` (lines differ without digits, which masking would make one template)."""
    out = ""
    while True:
        i, r = divmod(i, len(alphabet))
        out += alphabet[r]
        if not i:
            return out


SCRIPTS = {
    "ASCII": lambda i: f"worker {_tag(i, 'abcdefghijklmnopqrstuvwxyz')} finished its task and closed the connection",
    "Cyrillic": lambda i: f"Ошибка записи блока {_tag(i, 'абвгдеёжзийклмнопрстуфхцчшщ')}: соединение сброшено узлом",
    "Chinese": lambda i: "数据节点" + _tag(i, "".join(chr(0x4E00 + k) for k in range(200))) + "接收块失败，连接被拒绝",
    # digits (read one a token by SmolLM2) and control characters (quoted as \u0001): a log writer's choice
    "digits": lambda i: f"request {_tag(i, 'abcdefghijklmnopqrstuvwxyz')} 4096 from 10.250.19.102:50010 took "
                        "1226262930 ms",
    "control": lambda i: f"job {_tag(i, 'abcdefghijklmnopqrstuvwxyz')} " + "".join(chr(1 + (i + k) % 30)
                                                                                   for k in range(20)),
}


def run(estimate, tokenizer, budget: int, lines: int) -> dict:
    from rationad.prompt import build_messages, build_view

    out = {}
    for script, line in SCRIPTS.items():
        view = build_view("generic", [line(i) for i in range(lines)], max_prompt_tokens=budget, count_tokens=estimate)
        real = sum(len(tokenizer.encode(m["content"], add_special_tokens=False).ids) for m in build_messages(view))
        out[script] = {"rows_shown": len(view.rows), "real_tokens": real}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--budget", type=int, default=1024)
    ap.add_argument("--lines", type=int, default=1000)
    ap.add_argument("--against", help="also the estimate of rationad/model/base.py at this git revision")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from tokenizers import Tokenizer

    import rationad.model.base

    model = (args.model or default_model_dir()).expanduser()
    tokenizer = Tokenizer.from_file(str(model / "tokenizer.json"))
    result: dict = {"machine": print_machine(), "model": str(model), "budget": args.budget}
    sides = [("now", rationad.model.base)] + ([(args.against, module_at(args.against, "rationad/model/base.py"))]
                                             if args.against else [])
    for name, module in sides:
        r = result[name] = run(module.approx_token_count, tokenizer, args.budget, args.lines)
        for script, m in r.items():
            print(f"{name}: {script}: sized to {args.budget} estimated tokens, {m['rows_shown']} rows shown, "
                  f"{m['real_tokens']} real tokens", flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
