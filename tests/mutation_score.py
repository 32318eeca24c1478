"""The mutation score of each mutated module, from mutmut's results in mutants/.

`make mutate` prints it after `mutmut run`. Killed counts the mutants a test failed on
(and those that made the tests time out); not killed counts survivors and mutants no test
reached. Lines marked `# pragma: no mutate` are not mutated at all: each says why.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

KILLED = {1, 3, 24, -24, 36, 37, 152, 255, -9, -11}  # mutmut's exit codes for a kill
SURVIVED = {0}
NO_TESTS = {5, 33}


def main(root: str = "mutants", fail_under: float = 0.0) -> int:
    rows: list[tuple[str, Counter[str]]] = []
    for meta in sorted(Path(root).rglob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"].values()
        tally: Counter[str] = Counter()
        for code in codes:
            if code is None:
                tally["not run"] += 1
            elif code in KILLED:
                tally["killed"] += 1
            elif code in SURVIVED:
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
        f"{'module':44} {'mutants':>7} {'killed':>7} {'survived':>8} {'no tests':>8} {'score':>7}"
    )
    for name, tally in rows + [("all", total)]:
        if name != "all":
            total.update(tally)
        tried = tally["killed"] + tally["survived"] + tally["no tests"] + tally["other"]
        score = f"{100 * tally['killed'] / tried:.1f}%" if tried else "-"
        mutants = sum(tally.values())
        print(
            f"{name:44} {mutants:7} {tally['killed']:7} {tally['survived']:8}"
            f" {tally['no tests']:8} {score:>7}"
            + (f"  ({tally['not run']} not run)" if tally["not run"] else "")
        )
    tried = total["killed"] + total["survived"] + total["no tests"] + total["other"]
    if tried and 100 * total["killed"] / tried < fail_under:
        print(f"mutation score below {fail_under:g}%: `mutmut results` lists the survivors")
        return 1
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Mutation score per module, from mutants/.")
    parser.add_argument("root", nargs="?", default="mutants")
    parser.add_argument("--fail-under", type=float, default=0.0, help="exit 1 below this %%")
    args = parser.parse_args()
    sys.exit(main(args.root, args.fail_under))
