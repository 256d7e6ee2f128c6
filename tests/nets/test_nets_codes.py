"""The README's table of the doctor's codes says what the code emits: every code, no other,
with the severities the code can give it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Finding(<severity expression>, "<code>", ...): the code is the first quoted hyphenated word
_FINDING = re.compile(r'Finding\(\s*(?P<sev>.*?),\s*"(?P<code>[a-z]+(?:-[a-z]+)+)"', re.S)
_ROW = re.compile(r"^\| `(?P<code>[a-z-]+)` \| (?P<sev>[a-z, ]+) \|", re.M)


def emitted() -> dict[str, set[str]]:
    """Code -> the severities written as literals where the nets package builds it."""
    out: dict[str, set[str]] = {}
    for path in (ROOT / "nets").glob("*.py"):
        for m in _FINDING.finditer(path.read_text()):
            out.setdefault(m.group("code"), set()).update(re.findall(r'"(error|warning|info)"', m.group("sev")))
    return out


def documented() -> dict[str, set[str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("### The doctor's findings", 1)[1].split("\n###", 1)[0]
    return {m.group("code"): {s.strip() for s in m.group("sev").split(",")} for m in _ROW.finditer(section)}


def test_readme_codes_table_matches_the_doctor():
    code, doc = emitted(), documented()
    assert set(code) == set(doc)
    for name, severities in code.items():
        assert severities <= doc[name], name
    # loss-normalization-lr's summed case sets its severity in a variable: both are in the table
    assert doc["loss-normalization-lr"] == {"error", "warning"}
