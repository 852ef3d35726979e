"""The package claims CPython >= 3.9 (``requires-python``, the cp39-abi3 wheel): a fast check,
without a 3.9, that no module uses what 3.9 lacks. It parses every module with 3.9's grammar
and looks for the 3.10+ calls and imports that would fail only at run time there.
``tests/test_wheel.py`` runs the installed wheel under a real 3.9 where one exists."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "python" / "seaweed_rdma"
MODULES = sorted(PACKAGE.rglob("*.py"))
# Names typing gained in 3.10 or later: under 3.9 they exist only for a type checker.
TYPING_310 = {"ParamSpec", "Concatenate", "TypeAlias", "TypeGuard", "Self", "Never",
              "LiteralString", "Required", "NotRequired", "Unpack", "TypeVarTuple",
              "assert_never", "assert_type", "reveal_type", "dataclass_transform", "override",
              "is_typeddict", "ParamSpecArgs", "ParamSpecKwargs"}


def _type_checking_only(tree: ast.Module) -> set[int]:
    """Line numbers inside ``if TYPE_CHECKING:`` blocks (never run)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.If) and isinstance(node.test, ast.Name)
                and node.test.id == "TYPE_CHECKING"):
            for inner in node.body:
                lines.update(range(inner.lineno, (inner.end_lineno or inner.lineno) + 1))
    return lines


def _problems(path: Path) -> list[str]:
    src = path.read_text()
    try:
        tree = ast.parse(src, str(path), feature_version=(3, 9))
    except SyntaxError as e:  # match statements, parenthesized context managers...
        return [f"not 3.9 syntax: {e}"]
    skip = _type_checking_only(tree)
    found = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if line in skip:
            continue
        if isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else (
                node.func.attr if isinstance(node.func, ast.Attribute) else "")
            words = {k.arg for k in node.keywords}
            if name == "zip" and "strict" in words:
                found.append(f"{line}: zip(strict=) is 3.10+")
            if name == "dataclass" and words & {"slots", "kw_only", "match_args"}:
                found.append(f"{line}: dataclass({', '.join(words)}) is 3.10+")
        if isinstance(node, ast.ImportFrom) and node.module == "typing":
            late = {a.name for a in node.names} & TYPING_310
            if late:
                found.append(f"{line}: typing.{', '.join(sorted(late))} is 3.10+ "
                             "(import it under TYPE_CHECKING)")
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_runs_on_python_3_9(path: Path) -> None:
    assert _problems(path) == []


def test_the_check_catches_what_it_looks_for(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from typing import ParamSpec\nx = list(zip([1], [2], strict=True))\n")
    assert len(_problems(bad)) == 2
    bad.write_text("match 1:\n    case 1:\n        pass\n")
    assert _problems(bad)[0].startswith("not 3.9 syntax")
    ok = tmp_path / "ok.py"
    ok.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                  "    from typing import ParamSpec\n")
    assert _problems(ok) == []
