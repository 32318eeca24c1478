"""The mutation score of each mutated module, from mutmut's results in mutants/.

`make mutate` prints it after `mutmut run`. Killed counts the mutants a test failed on
(and those that made the tests time out); not killed counts survivors and mutants no test
reached. Lines marked `# pragma: no mutate` are not mutated at all: each says why.

A survivor that changes no behaviour is equivalent: tests/mutation_equivalents.toml names
it, the change mutmut made (as `mutmut show` prints it) and why no test can tell. It is
left out of the score only while `mutmut show` still prints that change: mutmut numbers a
function's mutants in order, so after an edit the name may mean another mutant, and the
entry is reported as stale and its survivor counted until someone looks again.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tomllib
from collections import Counter
from collections.abc import Callable
from pathlib import Path

KILLED = {1, 3, 24, -24, 36, 37, 152, 255, -9, -11}  # mutmut's exit codes for a kill
SURVIVED = {0}
NO_TESTS = {5, 33}
EQUIVALENTS = Path(__file__).with_name("mutation_equivalents.toml")


def mutmut_show(name: str) -> str:
    """The diff of one mutant, as `mutmut show` prints it (mutmut's public command)."""
    shown = subprocess.run(
        [sys.executable, "-m", "mutmut", "show", name], capture_output=True, text=True, check=False
    )
    return shown.stdout


def change_of(diff: str) -> str:
    """What a mutant changed: its diff's removed and added lines, indentation dropped."""
    return "\n".join(
        f"{line[0]} {line[1:].strip()}".rstrip()
        for line in diff.splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    )


def load_equivalents(path: Path) -> dict[str, dict[str, str]]:
    """The registry by mutant name; each entry needs its change and why."""
    if not path.exists():
        return {}
    entries = tomllib.loads(path.read_text())["equivalent"]
    found: dict[str, dict[str, str]] = {}
    for entry in entries:
        missing = {"mutant", "change", "why"} - entry.keys()
        if missing or not entry["why"].strip():
            raise SystemExit(f"{path.name}: {entry.get('mutant', entry)} needs {sorted(missing)}")
        if entry["mutant"] in found:
            raise SystemExit(f"{path.name}: {entry['mutant']} is listed twice")
        found[entry["mutant"]] = entry
    return found


def main(
    root: str = "mutants",
    fail_under: float = 0.0,
    equivalents: Path = EQUIVALENTS,
    show: Callable[[str], str] = mutmut_show,
) -> int:
    known = load_equivalents(equivalents)
    rows: list[tuple[str, Counter[str]]] = []
    survivors: list[str] = []
    stale: list[str] = []
    for meta in sorted(Path(root).rglob("*.py.meta")):
        by_key = json.loads(meta.read_text())["exit_code_by_key"]
        tally: Counter[str] = Counter()
        for name, code in by_key.items():
            if code is None:
                tally["not run"] += 1
            elif code in KILLED:
                tally["killed"] += 1
            elif code in SURVIVED and name in known:
                if change_of(show(name)) == known[name]["change"].strip():
                    tally["equivalent"] += 1
                else:
                    stale.append(name)
                    tally["survived"] += 1
            elif code in SURVIVED:
                survivors.append(name)
                tally["survived"] += 1
            elif code in NO_TESTS:
                tally["no tests"] += 1
            else:
                tally["other"] += 1
        rows.append((str(meta.relative_to(root))[: -len(".meta")], tally))
    if not rows:
        print("no mutmut results under mutants/: run `make mutate` first")
        return 1
    total: Counter[str] = Counter()
    print(
        f"{'module':44} {'mutants':>7} {'killed':>7} {'survived':>8} {'no tests':>8}"
        f" {'equiv.':>6} {'score':>7}"
    )
    for name, tally in rows + [("all", total)]:
        if name != "all":
            total.update(tally)
        print(
            f"{name:44} {sum(tally.values()):7} {tally['killed']:7} {tally['survived']:8}"
            f" {tally['no tests']:8} {tally['equivalent']:6} {_score(tally):>7}"
            + (f"  ({tally['not run']} not run)" if tally["not run"] else "")
        )
    for name in survivors:
        print(f"survived: {name}")
    for name in stale:
        print(f"survived, listed as equivalent for another change (look again): {name}")
    tried = _tried(total)
    if tried and 100 * total["killed"] / tried < fail_under:
        print(f"mutation score below {fail_under:g}% of the mutants that change behaviour")
        return 1
    return 0


def _tried(tally: Counter[str]) -> int:
    """The mutants that ran and change behaviour: the equivalent ones are not counted."""
    return tally["killed"] + tally["survived"] + tally["no tests"] + tally["other"]


def _score(tally: Counter[str]) -> str:
    tried = _tried(tally)
    return f"{100 * tally['killed'] / tried:.1f}%" if tried else "-"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Mutation score per module, from mutants/.")
    parser.add_argument("root", nargs="?", default="mutants")
    parser.add_argument("--fail-under", type=float, default=0.0, help="exit 1 below this %%")
    parser.add_argument(
        "--equivalents", type=Path, default=EQUIVALENTS, help="the equivalent mutants, why each"
    )
    args = parser.parse_args()
    sys.exit(main(args.root, args.fail_under, args.equivalents))
