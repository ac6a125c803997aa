"""Write ``rationad/data/lookalikes.json``: each character that Unicode's confusables data (UTS #39,
``confusables.txt``) says is drawn as one ASCII letter, with that letter (Cyrillic ``о`` -> ``o``, IPA ``ɡ`` -> ``g``,
small capital ``ᴏ`` -> ``o``). ``rationad.injection`` reads injection patterns through it.

The data comes from the ``confusable-homoglyphs`` package (its copy of ``confusables.txt``); it is needed only to
write the file, never at run time: ``pip install confusable-homoglyphs==3.3.1 && python scripts/make_lookalikes.py``.
Deterministic: the same package version writes the same file.
"""

from __future__ import annotations

import json
import unicodedata
from importlib.metadata import version
from importlib.resources import files
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "rationad" / "data" / "lookalikes.json"


def lookalikes() -> dict[str, str]:
    data = json.loads(files("confusable_homoglyphs").joinpath("confusables.json").read_text(encoding="utf-8"))
    out: dict[str, str] = {}
    for char, homoglyphs in data.items():
        if len(char) != 1 or char.isascii() or unicodedata.category(char)[0] != "L":
            continue  # letters only: a mark or a symbol drawn as a letter is no word an injection is written in
        letters = sorted({h["c"] for h in homoglyphs if len(h["c"]) == 1 and h["c"].isascii() and h["c"].isalpha()})
        if len(letters) == 1:
            out[char] = letters[0]
    return dict(sorted(out.items()))


def main() -> None:
    table = lookalikes()
    source = f"Unicode confusables.txt via confusable-homoglyphs {version('confusable-homoglyphs')}"
    OUT.write_text(json.dumps({"source": source, "lookalikes": table}, ensure_ascii=False, indent=0) + "\n",
                   encoding="utf-8")
    print(f"{OUT}: {len(table)} characters")


if __name__ == "__main__":
    main()
