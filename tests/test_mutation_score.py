"""`make mutate`'s score: equivalent mutants are left out only while they are the change
the registry names (issue 23)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.mutation_score import EQUIVALENTS, change_of, load_equivalents, main

DIFF = """# app.money.x_cut__mutmut_2: survived
--- app/money.py
+++ app/money.py
@@ -1,3 +1,3 @@
 def cut(value):
-    return value[:255]
+    return value[:256]
"""


def results(tmp_path: Path, codes: dict[str, int | None]) -> Path:
    root = tmp_path / "mutants"
    (root / "app").mkdir(parents=True)
    (root / "app" / "money.py.meta").write_text(json.dumps({"exit_code_by_key": codes}))
    return root


def registry(tmp_path: Path, change: str) -> Path:
    path = tmp_path / "equivalents.toml"
    path.write_text(
        "[[equivalent]]\n"
        'mutant = "app.money.x_cut__mutmut_2"\n'
        f"change = '''{change}'''\n"
        'why = "every value is far shorter than 255"\n'
    )
    return path


def test_a_diff_s_change_is_its_removed_and_added_lines_without_indentation() -> None:
    assert change_of(DIFF) == "- return value[:255]\n+ return value[:256]"


def test_a_listed_equivalent_is_left_out_of_the_score(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = results(tmp_path, {"app.money.x_cut__mutmut_1": 1, "app.money.x_cut__mutmut_2": 0})
    equivalents = registry(tmp_path, change_of(DIFF))
    assert main(str(root), 95, equivalents, show={"app.money.x_cut__mutmut_2": DIFF}.get) == 0
    table = capsys.readouterr().out
    assert "app/money.py" in table and "100.0%" in table
    assert "survived:" not in table


def test_an_entry_whose_change_moved_counts_its_survivor_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After an edit mutmut may give the name to another mutant: that one is looked at."""
    root = results(tmp_path, {"app.money.x_cut__mutmut_1": 1, "app.money.x_cut__mutmut_2": 0})
    equivalents = registry(tmp_path, "- return value[:255]\n+ return None")
    assert main(str(root), 95, equivalents, show={"app.money.x_cut__mutmut_2": DIFF}.get) == 1
    out = capsys.readouterr().out
    assert "50.0%" in out
    assert "listed as equivalent for another change (look again): app.money.x_cut__mutmut_2" in out


def test_an_unlisted_survivor_is_named_and_a_mutant_not_run_is_not_scored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = results(
        tmp_path,
        {
            "app.money.x_cut__mutmut_1": 1,
            "app.money.x_cut__mutmut_2": 0,
            "app.money.x_a__mutmut_1": None,
        },
    )
    assert main(str(root), 0, tmp_path / "none.toml", show=lambda name: "") == 0
    out = capsys.readouterr().out
    assert "survived: app.money.x_cut__mutmut_2" in out
    assert "50.0%  (1 not run)" in out


def test_an_entry_without_its_reason_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "equivalents.toml"
    path.write_text(
        '[[equivalent]]\nmutant = "app.money.x_cut__mutmut_2"\nchange = "- a"\nwhy = " "\n'
    )
    with pytest.raises(SystemExit, match="x_cut__mutmut_2 needs"):
        load_equivalents(path)


def test_the_project_s_registry_gives_each_mutant_once_with_its_change_and_reason() -> None:
    listed = load_equivalents(EQUIVALENTS)
    assert listed
    assert all(entry["change"].startswith(("- ", "+ ")) for entry in listed.values())
