"""Where the scenario templates live.

An installed wheel carries them inside the package as ``afperturb/_templates`` (pyproject's
hatch ``force-include``); a source or editable checkout keeps them in ``<repo>/templates``.
:func:`templates_root` picks whichever exists, so ``import afperturb`` finds the templates from
any working directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from afperturb.errors import TemplateError

#: Set this to a folder of scenarios to override both built-in locations (tests, forks).
ENV_VAR = "AFPERTURB_TEMPLATES"

_PACKAGE_DIR = Path(__file__).resolve().parent


def candidate_roots() -> list[Path]:
    """Every place templates may live, in the order they are tried."""
    roots: list[Path] = []
    override = os.environ.get(ENV_VAR)
    if override:
        roots.append(Path(override))
    roots.append(_PACKAGE_DIR / "_templates")
    roots.append(_PACKAGE_DIR.parent / "templates")
    return roots


def templates_root() -> Path:
    """The first existing template folder: env override, installed wheel, then source tree."""
    for root in candidate_roots():
        if root.is_dir():
            return root
    tried = ", ".join(str(r) for r in candidate_roots())
    raise TemplateError(f"afperturb templates not found; looked in: {tried}")


__all__ = ["ENV_VAR", "candidate_roots", "templates_root"]
