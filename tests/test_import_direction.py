"""House rules in code: the import direction of ARCHITECTURE.md §2, checked with ``ast``.

Every module's imports are parsed (not executed), relative imports resolved, and
``from afperturb import x`` counted as importing the submodule ``afperturb.x``. Imports inside
functions and under ``if TYPE_CHECKING:`` are recorded with that context, because the only
allowed upward import is the lazy sweep facade inside ``Perturbation``'s methods.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "afperturb"


@dataclass(frozen=True)
class Imp:
    importer: str
    target: str
    line: int
    in_function: str | None
    type_checking: bool


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE_DIR.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


MODULES = all_modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool):
        self.module = module
        self.package = module if is_package else module.rpartition(".")[0]
        self.found: list[Imp] = []
        self.function: list[str] = []
        self.type_checking = 0

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self.function.append(node.name)
        self.generic_visit(node)
        self.function.pop()

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            self.type_checking += 1
            for child in node.body:
                self.visit(child)
            self.type_checking -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def _add(self, target: str, line: int) -> None:
        if target == "afperturb" or target.startswith("afperturb."):
            self.found.append(
                Imp(
                    self.module,
                    target,
                    line,
                    self.function[-1] if self.function else None,
                    self.type_checking > 0,
                )
            )

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")
            base = base[: len(base) - (node.level - 1)]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        self._add(module, node.lineno)
        for alias in node.names:
            sub = f"{module}.{alias.name}"
            if sub in MODULES:
                self._add(sub, node.lineno)


def imports_of(module: str) -> list[Imp]:
    path = MODULES[module]
    collector = _Collector(module, path.name == "__init__.py")
    collector.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return collector.found


ALL_IMPORTS = [imp for module in MODULES for imp in imports_of(module)]


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def show(imps: list[Imp]) -> str:
    return "\n".join(f"{i.importer}:{i.line} imports {i.target}" for i in imps)


def test_the_parser_sees_imports() -> None:
    """Guard against a checker that passes because it sees nothing."""
    targets = {(i.importer, i.target) for i in ALL_IMPORTS}
    assert ("afperturb.design", "afperturb.scenario") in targets
    assert ("afperturb.records", "afperturb") not in targets
    facade = [
        i
        for i in ALL_IMPORTS
        if i.importer == "afperturb.design" and within(i.target, "afperturb.sweep")
    ]
    assert {i.in_function for i in facade} == {"sweep", "sweep_async", "estimate"}


def test_stats_never_imports_models_sweep_or_store() -> None:
    banned = ("afperturb.models", "afperturb.sweep", "afperturb.store")
    bad = [
        i
        for i in ALL_IMPORTS
        if within(i.importer, "afperturb.stats") and any(within(i.target, b) for b in banned)
    ]
    assert not bad, show(bad)


def test_nothing_imports_the_cli() -> None:
    bad = [
        i
        for i in ALL_IMPORTS
        if within(i.target, "afperturb.cli")
        and i.importer != "afperturb.__main__"
        and not within(i.importer, "afperturb.cli")  # the CLI package's own modules
    ]
    assert not bad, show(bad)


@pytest.mark.parametrize("module", ["afperturb.errors", "afperturb.records"])
def test_errors_and_records_import_only_each_other(module: str) -> None:
    allowed = {"afperturb.errors", "afperturb.records"}
    bad = [i for i in imports_of(module) if i.target not in allowed]
    assert not bad, show(bad)


def test_profiles_sit_on_errors_and_records_only() -> None:
    """The simulated truth is shared by models and stats, so it may import neither."""
    allowed = {"afperturb.errors", "afperturb.records"}
    bad = [i for i in imports_of("afperturb.profiles") if i.target not in allowed]
    assert not bad, show(bad)
    users = {i.importer for i in ALL_IMPORTS if i.target == "afperturb.profiles"}
    assert {"afperturb.models.simulated", "afperturb.stats.simulate"} <= users


def test_models_stay_below_classify_stats_hypotheses_sweep() -> None:
    banned = ("afperturb.classify", "afperturb.stats", "afperturb.hypotheses", "afperturb.sweep")
    bad = [
        i
        for i in ALL_IMPORTS
        if within(i.importer, "afperturb.models") and any(within(i.target, b) for b in banned)
    ]
    assert not bad, show(bad)


def test_foundation_imports_only_the_layers_above_it() -> None:
    """profiles, scenario, design and datasets sit above models, store, sweep, classify, stats.

    The one exception is the lazy facade: ``Perturbation.sweep``/``sweep_async``/``estimate``
    import ``afperturb.sweep`` inside the method. Type-only imports do not run.
    """
    foundation = {
        "afperturb.profiles",
        "afperturb.scenario",
        "afperturb.design",
        "afperturb.datasets",
        "afperturb._paths",
    }
    below = (
        "afperturb.models",
        "afperturb.store",
        "afperturb.sweep",
        "afperturb.classify",
        "afperturb.stats",
        "afperturb.hypotheses",
        "afperturb.report",
        "afperturb.results",
    )
    bad = []
    for i in ALL_IMPORTS:
        if i.importer not in foundation or i.type_checking:
            continue
        if not any(within(i.target, b) for b in below):
            continue
        facade = (
            i.importer == "afperturb.design"
            and within(i.target, "afperturb.sweep")
            and i.in_function in {"sweep", "sweep_async", "estimate"}
        )
        if not facade:
            bad.append(i)
    assert not bad, show(bad)


def test_checker_flags_a_violation(tmp_path: Path) -> None:
    """The collector resolves relative and from-package imports (the checks can fail)."""
    source = "from .. import sweep\nfrom afperturb import store\nimport afperturb.models.base\n"
    collector = _Collector("afperturb.stats.fake", is_package=False)
    collector.visit(ast.parse(source))
    targets = [i.target for i in collector.found]
    assert "afperturb.sweep" in targets
    assert "afperturb.store" in targets
    assert "afperturb.models.base" in targets
