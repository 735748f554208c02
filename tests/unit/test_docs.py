"""The documents match the repository: the README's links resolve, and the contract page lists the schema's fields.

The docs site itself is checked by ``mkdocs build --strict`` in scripts/test (links, anchors, navigation); the
README is not part of the site, so its links are checked here. Files pointing outside the repository:
tests/unit/test_architecture.py.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def relative_links(markdown: str) -> list[str]:
    """The relative link targets of a Markdown text, anchors dropped.

    >>> relative_links("see [a](docs/a.md#x), [b](https://example.com) and [c](c.md)")
    ['docs/a.md', 'c.md']
    """
    targets = (m.group(1) for m in LINK.finditer(markdown))
    return [t.split("#", 1)[0] for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


def test_readme_links_resolve():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [t for t in relative_links(readme) if not (ROOT / t).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing} (create them or fix the links)"


def contract_fields(markdown: str) -> dict[str, tuple[set[str], set[str]]]:
    """Per event type, the (required, optional) fields of docs/contract.md's "Fields by type" table.

    >>> contract_fields("## Fields by type\\n| type | f |\\n|---|---|\\n| `a`, `b` | `x`, `y`? (`z` or `w`) |\\n\\n## Next")
    {'a': ({'x'}, {'y'}), 'b': ({'x'}, {'y'})}
    """
    section = markdown.split("## Fields by type", 1)[1].split("\n#", 1)[0]
    table: dict[str, tuple[set[str], set[str]]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 2 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`([a-z_]+)`(\??)", re.sub(r"\([^)]*\)", "", cells[1]))  # notes in brackets are not fields
        fields = ({n for n, q in names if not q}, {n for n, q in names if q})
        for kind in re.findall(r"`([a-z_]+)`", cells[0]):
            table[kind] = fields
    return table


def test_contract_page_lists_every_event_type_with_its_fields():
    from crm_stream.operators.events.schema import EVENT_TYPES

    documented = contract_fields((ROOT / "docs" / "contract.md").read_text(encoding="utf-8"))
    assert set(documented) == set(EVENT_TYPES), "docs/contract.md and EVENT_TYPES name different event types"
    for kind, spec in EVENT_TYPES.items():
        required, optional = documented[kind]
        assert required == set(spec.required), f"{kind}: required fields differ between docs/contract.md and the schema"
        assert optional == set(spec.optional), f"{kind}: optional fields differ between docs/contract.md and the schema"


def test_rules_page_shows_what_each_rule_declares():
    from crm_stream.operators.rules import RULES

    page = (ROOT / "docs" / "rules-and-governance.md").read_text(encoding="utf-8")
    rows = {
        cells[0].strip("` "): cells for cells in (line.strip("|").split("|") for line in page.splitlines()) if len(cells) == 4
    }
    for rule in RULES:
        assert rule.KIND in rows, f"docs/rules-and-governance.md: no row for {rule.KIND} in the declarations table"
        cells = rows[rule.KIND]
        for column, name in ((1, "REACTS_TO"), (2, "REARMS_ON")):
            documented = set(re.findall(r"`([a-z_]+)`", cells[column]))
            assert documented == set(getattr(rule, name, ())), f"{rule.KIND}: {name} differs from the rules page"
        flags = {flag for flag in ("ON_SEGMENT_CHANGE", "TEACHES_ANGER") if getattr(rule, flag, False)}
        assert set(re.findall(r"`([A-Z_]+)`", cells[3])) == flags, f"{rule.KIND}: flags differ from the rules page"
