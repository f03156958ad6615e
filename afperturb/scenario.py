"""Scenarios: Jinja templates plus a declaration of their perturbation axes.

A scenario is a folder holding Jinja templates (system prompt, user turn, optional prefill) and
an ``axes.toml`` that declares every axis, its levels, and the *facts* each level implies. The
templates read the resolved levels as ``levels.<axis>`` and level strings as ``v.<axis>.<var>``.

Two design decisions matter to everything downstream:

* **The request is data.** It is passed to the user template as a variable and, on the hot path,
  spliced between a pre-rendered prefix and suffix, so ``{{ 7*7 }}`` in a request stays
  ``{{ 7*7 }}``. Templates run in Jinja's ``SandboxedEnvironment`` with ``StrictUndefined``.
* **Axes speak only inside their blocks.** Template text that depends on an axis is wrapped in
  ``{% filter axis("name") %}...{% endfilter %}`` (level vars are wrapped automatically). In
  normal rendering the filter is the identity; in annotated rendering it wraps the text in
  private-use markers, which is how :func:`afperturb.design.audit_minimal_pairs` proves that
  two conditions differing in one axis differ only where that axis speaks.

Rendering is cheap after the first call per condition: the system prompt, the prefill message,
and the user turn's text around the request are cached per condition id.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import pydantic
from jinja2.sandbox import SandboxedEnvironment

from afperturb import _paths
from afperturb.errors import DesignError, TemplateError, unknown_choice
from afperturb.records import FRAME_COLUMNS, Condition, Facts, Message, Request

#: Marker that opens an annotated axis block: MARK_OPEN + axis name + MARK_NAME_END.
MARK_OPEN = "\ue000"
MARK_NAME_END = "\ue001"
#: Marker that closes the innermost open axis block.
MARK_CLOSE = "\ue002"

#: Column names of ``SweepResult.to_frame()``; an axis may not take one of these names.
RESERVED_NAMES = frozenset(FRAME_COLUMNS)

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_FACT_FIELDS = frozenset(Facts.model_fields)
_SENTINEL = "\ue010afperturb-request\ue011"
_BLANK_RUNS = re.compile(r"\n{3,}")
DECLARATION = "axes.toml"


@dataclass(frozen=True)
class Level:
    """One level of an axis: what it says, what it implies, and the strings it prints."""

    name: str
    description: str
    #: Partial facts (a subset of :class:`~afperturb.records.Facts` fields).
    facts: Mapping[str, Any] = field(default_factory=dict)
    #: Strings the templates print as ``v.<axis>.<var>`` (always inside the axis' span).
    vars: Mapping[str, str] = field(default_factory=dict)
    #: Multiplies ``deployment_harm`` (a scale factor for the whole condition).
    harm_factor: float = 1.0
    #: This level needs these other axes at one of these levels (on top of the axis' own).
    requires: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: Other levels to set when ``templates check`` renders this level (over the axis' own).
    check: Mapping[str, str] = field(default_factory=dict)
    #: Conditional facts: where every ``when`` axis is at one of its levels, ``facts`` refine
    #: (and override) what those axes' levels set. See :meth:`Scenario.resolve`.
    facts_when: tuple[FactsWhen, ...] = ()

    def __repr__(self) -> str:
        return f"<Level {self.name}: {self.description}>"


@dataclass(frozen=True)
class FactsWhen:
    """Facts a level implies only in combination with other axes' levels.

    ``when`` maps other axes to the levels that trigger the refinement; ``facts`` are partial
    facts that override what those axes' levels set (e.g. the F.3 "never trained" story makes
    a free-tier conversation rated but not trained).
    """

    when: Mapping[str, tuple[str, ...]]
    facts: Mapping[str, Any]

    def matches(self, levels: Mapping[str, str]) -> bool:
        """Whether every ``when`` axis of the condition is at one of the listed levels."""
        return all(levels.get(axis) in allowed for axis, allowed in self.when.items())


@dataclass(frozen=True)
class Axis:
    """A declared perturbation axis with its named levels and default."""

    name: str
    description: str
    levels: Mapping[str, Level]
    default: str
    #: The cue group this axis belongs to (at most one member of a group speaks).
    group: str | None = None
    #: Non-default levels need these other axes at one of these levels.
    requires: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: Other levels to set when ``templates check`` renders this axis' levels.
    check: Mapping[str, str] = field(default_factory=dict)

    def level(self, name: str) -> Level:
        """Return the named level or raise a DesignError listing the valid ones."""
        valid = ", ".join(repr(x) for x in self.levels)
        if not isinstance(name, str):  # e.g. fixed={"tier": ["free"]}: unhashable, or a number
            raise DesignError(
                f"a level of axis {self.name!r} is one name (a string), got "
                f"{name!r} ({type(name).__name__}); valid levels: {valid}"
            )
        try:
            return self.levels[name]
        except KeyError:
            raise DesignError(
                f"unknown level {name!r} for axis {self.name!r}; valid levels: {valid}"
            ) from None

    def __repr__(self) -> str:
        return f"<Axis {self.name}: {', '.join(self.levels)} (default {self.default})>"


@dataclass(frozen=True)
class CueGroup:
    """Axes of which exactly one speaks per condition; the others sit at level ``off``."""

    name: str
    axes: tuple[str, ...]
    off: str


@dataclass(frozen=True)
class _Prepared:
    """Everything about a condition's prompt that does not depend on the request."""

    system: Message
    user_parts: tuple[str, str] | None
    prefill: Message | None


def condition_id(scenario: str, levels: Mapping[str, str]) -> str:
    """Stable id of a condition: a hash of the scenario and every resolved level."""
    payload = json.dumps([scenario, sorted(levels.items())], separators=(",", ":"))
    return "c" + hashlib.sha256(payload.encode()).hexdigest()[:12]


def _unknown_axis(name: object, axes: Mapping[str, Axis]) -> DesignError:
    valid = ", ".join(repr(a) for a in axes)
    return DesignError(f"unknown axis {name!r}; valid axes: {valid}")


def _passthrough(content: str, axis: str) -> str:
    return content


def _annotate(content: str, axis: str) -> str:
    return f"{MARK_OPEN}{axis}{MARK_NAME_END}{content}{MARK_CLOSE}"


class Scenario:
    """A scenario's templates and axes; renders conditions into chat messages.

    Example:
        >>> sc = Scenario.load("helpful_only")
        >>> sorted(sc.axes["tier"].levels)
        ['free', 'none', 'paid']
    """

    def __init__(
        self,
        name: str,
        path: Path,
        declaration: Mapping[str, Any],
        *,
        source: str | None = None,
    ):
        self.name = name
        self.path = path
        decl_path = source or str(path / DECLARATION)  # where errors in the declaration point
        meta = dict(declaration.get("scenario", {}))
        self.description: str = str(meta.get("description", ""))
        self.continuation_text: str = str(meta.get("continuation", "<NEXT/>"))
        self.probe_request: str = str(meta.get("probe_request", "Please say hello."))
        self._files = {
            "system": str(meta.get("system", "system.j2")),
            "user": str(meta.get("user", "user.j2")),
        }
        if meta.get("prefill"):
            self._files["prefill"] = str(meta["prefill"])
        self.base_facts: dict[str, Any] = _check_facts(declaration.get("facts", {}), decl_path)
        self.axes: dict[str, Axis] = _parse_axes(declaration.get("axes", {}), decl_path)
        self.groups: dict[str, CueGroup] = _parse_groups(
            declaration.get("groups", {}), self.axes, decl_path
        )
        self.axes = {n: _with_group(a, self.groups) for n, a in self.axes.items()}
        _check_references(self.axes, decl_path)
        self._envs: dict[bool, SandboxedEnvironment] = {}
        self._templates: dict[tuple[bool, str], jinja2.Template] = {}
        self._prepared: dict[str, _Prepared] = {}

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, name: str) -> Scenario:
        """Load a built-in scenario by name (cached: one instance per name)."""
        return _load_builtin(name)

    @classmethod
    def from_dir(cls, path: str | Path) -> Scenario:
        """Load a scenario from a folder holding ``axes.toml`` and its templates."""
        folder = Path(path)
        decl = folder / DECLARATION
        if not decl.is_file():
            raise TemplateError(f"no {DECLARATION} in scenario folder", path=str(folder))
        try:
            declaration = tomllib.loads(decl.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise TemplateError(f"invalid TOML: {exc}", path=str(decl)) from exc
        scenario = cls(folder.name, folder, declaration)
        for name in scenario._files.values():
            if not (folder / name).is_file():
                raise TemplateError(f"template {name!r} is missing", path=str(folder / name))
        return scenario

    @classmethod
    def from_prompt_file(
        cls,
        path: str | Path,
        substitutions: Mapping[str, Any] | str | Path | None = None,
        *,
        name: str | None = None,
    ) -> Scenario:
        """Load a plain-text system prompt verbatim, with declared per-level substitutions.

        ``path`` is the prompt file (a paper's ``*.txt``) and ``substitutions`` the declaration
        (a dict, or a TOML file): axes, levels, the exact text each level replaces, the facts
        it sets, and the user turn. Or ``path`` is that TOML file, naming the prompt file as
        ``[scenario] system_file``. See :mod:`afperturb.prompt_file` and docs/scenarios.md.
        """
        from afperturb.prompt_file import load_prompt_file  # the loader builds on this class

        return load_prompt_file(path, substitutions, name=name)

    @classmethod
    def from_spec(cls, spec: str | Path, base_dir: str | Path | None = None) -> Scenario:
        """A scenario named the way the CLI and experiment files name one.

        ``spec`` is a built-in scenario's name (``"helpful_only"``), a template folder (holding
        ``axes.toml``) or a prompt-file declaration (a ``.toml`` naming ``[scenario]
        system_file``, see :meth:`from_prompt_file`). A relative path is taken from
        ``base_dir`` (an experiment file's folder; default the working directory). A name that
        is neither gets the list of built-in scenarios.
        """
        text = str(spec)
        if _NAME.match(text) and (_paths.templates_root() / text / DECLARATION).is_file():
            return cls.load(text)
        path = Path(text).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        if path.is_dir():
            return cls.from_dir(path)
        if path.is_file():
            if path.suffix.lower() == ".toml":
                return cls.from_prompt_file(path)
            raise TemplateError(
                "a scenario file must be a prompt-file declaration (.toml with [scenario] "
                "system_file naming the prompt); a plain prompt file needs that declaration",
                path=str(path),
            )
        if path.suffix or "/" in text or "\\" in text:
            raise TemplateError("no such scenario folder or declaration file", path=str(path))
        raise unknown_choice("scenario", text, cls.available())

    @staticmethod
    def available() -> list[str]:
        """Names of the built-in scenarios."""
        root = _paths.templates_root()
        return sorted(p.name for p in root.iterdir() if (p / DECLARATION).is_file())

    def template_hashes(self) -> dict[str, str]:
        """SHA-256 of every template and declaration file (for the run manifest)."""
        out: dict[str, str] = {}
        for file in sorted(self.path.rglob("*")):
            if file.is_file() and file.suffix in {".j2", ".toml"}:
                rel = file.relative_to(self.path).as_posix()
                out[rel] = hashlib.sha256(file.read_bytes()).hexdigest()
        return out

    def template_files(self) -> dict[str, str]:
        """Role (system, user, prefill) → template file name."""
        return dict(self._files)

    # ------------------------------------------------------------------ design

    def resolve(self, chosen: Mapping[str, str]) -> Condition:
        """Turn the levels a user chose into a full condition (defaults, cue group, facts).

        Axes not chosen take their default, except cue-group members, which sit at the group's
        ``off`` level when another member was chosen. Raises :class:`DesignError` for unknown
        axes or levels, for two speaking cue axes, for unmet ``requires``, and for levels whose
        facts contradict each other (the error names the axes).
        """
        for axis_name, level in chosen.items():
            self.axis(axis_name).level(level)
        levels = {name: self._resolved_level(axis, chosen) for name, axis in self.axes.items()}
        for group in self.groups.values():
            speaking = [a for a in group.axes if levels[a] != group.off]
            if len(speaking) > 1:
                detail = ", ".join(f"{a}={levels[a]}" for a in speaking)
                raise DesignError(
                    f"axes {' and '.join(repr(a) for a in speaking)} contradict: exactly one of "
                    f"the {group.name} axes ({', '.join(group.axes)}) speaks per condition; "
                    f"got {detail}"
                )
            if not speaking:
                raise DesignError(
                    f"one of the {group.name} axes ({', '.join(group.axes)}) must speak per "
                    f"condition; all are {group.off!r} (none of them)"
                )
        self._check_requires(levels)
        facts = self._merge_facts(levels)
        return Condition(
            id=condition_id(self.name, levels), scenario=self.name, levels=levels, facts=facts
        )

    def axis(self, name: str) -> Axis:
        """Return the named axis or raise a DesignError listing the valid ones."""
        try:
            return self.axes[name]
        except (KeyError, TypeError):  # TypeError: an unhashable name
            raise _unknown_axis(name, self.axes) from None

    def _resolved_level(self, axis: Axis, chosen: Mapping[str, str]) -> str:
        if axis.name in chosen:
            return chosen[axis.name]
        if axis.group is not None:
            group = self.groups[axis.group]
            if any(chosen.get(a, group.off) != group.off for a in group.axes):
                return group.off
        return axis.default

    def _check_requires(self, levels: Mapping[str, str]) -> None:
        for name, axis in self.axes.items():
            needs = dict(axis.levels[levels[name]].requires)
            if levels[name] != axis.default:
                needs = {**axis.requires, **needs}
            for other, allowed in needs.items():
                if levels[other] not in allowed:
                    raise DesignError(
                        f"axes {name!r} and {other!r} contradict: {name}={levels[name]!r} needs "
                        f"{other} in {list(allowed)}, got {other}={levels[other]!r}"
                    )

    def _merge_facts(self, levels: Mapping[str, str]) -> Facts:
        """Base facts, then every level's facts, then the conditional refinements.

        Two levels setting one fact to different values contradict (a DesignError naming both
        axes). A level's ``facts_when`` entry that matches the condition overrides the facts
        set by the axes its ``when`` names (it refines what their levels mean), and
        contradicts any other axis or refinement that sets the same fact differently.
        """
        merged = dict(self.base_facts)
        setter: dict[str, tuple[str, str, Any]] = {}
        factor = 1.0

        def contradiction(fact: str, name: str, value: Any) -> DesignError:
            other, other_level, other_value = setter[fact]
            return DesignError(
                f"axes {other!r} and {name!r} contradict: {other}={other_level!r} sets "
                f"{fact}={other_value!r} but {name}={levels[name]!r} sets {fact}={value!r}"
            )

        for name, axis in self.axes.items():
            level = axis.levels[levels[name]]
            factor *= level.harm_factor
            for fact, value in level.facts.items():
                if fact in setter and setter[fact][2] != value:
                    raise contradiction(fact, name, value)
                setter[fact] = (name, levels[name], value)
                merged[fact] = value
        refined: dict[str, tuple[str, str, Any]] = {}
        for name, axis in self.axes.items():
            for rule in axis.levels[levels[name]].facts_when:
                if not rule.matches(levels):
                    continue
                for fact, value in rule.facts.items():
                    if fact in refined and refined[fact][2] != value:
                        setter[fact] = refined[fact]
                        raise contradiction(fact, name, value)
                    owner = setter.get(fact)
                    if owner is not None and owner[0] not in rule.when and owner[2] != value:
                        raise contradiction(fact, name, value)
                    refined[fact] = setter[fact] = (name, levels[name], value)
                    merged[fact] = value
        merged["deployment_harm"] = min(1.0, float(merged.get("deployment_harm", 0.0)) * factor)
        return Facts(**merged)

    # ------------------------------------------------------------------ rendering

    def render(self, condition: Condition, request: Request | str) -> list[Message]:
        """Render one condition and request into chat messages.

        The list is ``[system, user]`` or, with a prefill, ``[system, user, assistant]``: a
        trailing assistant message is a prefill that chat backends send as the last turn.
        """
        prepared = self._prepared.get(condition.id)
        if prepared is None:
            prepared = self._prepare(condition)
        text = request.text if isinstance(request, Request) else request
        if prepared.user_parts is not None:
            user = prepared.user_parts[0] + text + prepared.user_parts[1]
        else:
            user = self._render_file("user", condition, text, annotated=False)
        messages = [prepared.system, Message(role="user", content=user)]
        if prepared.prefill is not None:
            messages.append(prepared.prefill)
        return messages

    def render_annotated(self, condition: Condition, request: str) -> str:
        """Render every part with axis markers, for the minimal-pair audit.

        Returns ``[system]``, ``[user]`` and ``[prefill]`` sections joined by newlines; the
        text between ``MARK_OPEN name MARK_NAME_END`` and the matching ``MARK_CLOSE`` is where
        that axis speaks.
        """
        parts = []
        for role in ("system", "user", "prefill"):
            body = ""
            if role in self._files:
                body = self._render_file(role, condition, request, annotated=True)
            parts.append(f"[{role}]\n{body}")
        return "\n".join(parts)

    def _prepare(self, condition: Condition) -> _Prepared:
        if condition.scenario != self.name:
            raise DesignError(
                f"condition {condition.id} belongs to scenario {condition.scenario!r}, "
                f"not {self.name!r}"
            )
        system = self._render_file("system", condition, "", annotated=False)
        user = self._render_file("user", condition, _SENTINEL, annotated=False)
        pieces = user.split(_SENTINEL)
        # A custom template that transforms the request cannot be spliced; render per request.
        parts = (pieces[0], pieces[1]) if len(pieces) == 2 else None
        prefill_text = ""
        if "prefill" in self._files:
            prefill_text = self._render_file("prefill", condition, "", annotated=False)
        prepared = _Prepared(
            system=Message(role="system", content=system),
            user_parts=parts,
            prefill=Message(role="assistant", content=prefill_text) if prefill_text else None,
        )
        self._prepared[condition.id] = prepared
        return prepared

    def _render_file(self, role: str, condition: Condition, request: str, annotated: bool) -> str:
        template = self._template(role, annotated)
        wrap = _annotate if annotated else _passthrough
        context = {
            "levels": dict(condition.levels),
            "facts": condition.facts.model_dump(),
            "v": self._vars(condition.levels, wrap),
            "request": request,
        }
        try:
            text = template.render(context)
        except TemplateError:
            raise
        except Exception as exc:
            raise _template_error(exc, self.path / self._files[role]) from exc
        if role == "user":
            return text
        return _BLANK_RUNS.sub("\n\n", text).strip()

    def _vars(
        self, levels: Mapping[str, str], wrap: Callable[[str, str], str]
    ) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for name, level_name in levels.items():
            axis = self.axes.get(name)
            if axis is None:
                raise _unknown_axis(name, self.axes)
            level = axis.level(level_name)
            out[name] = {k: wrap(val, name) for k, val in level.vars.items()}
        return out

    def environment(self, annotated: bool = False) -> SandboxedEnvironment:
        """The (cached) sandboxed Jinja environment, plain or annotating."""
        env = self._envs.get(annotated)
        if env is None:
            env = SandboxedEnvironment(
                loader=jinja2.FileSystemLoader(str(self.path)),
                undefined=jinja2.StrictUndefined,
                autoescape=False,
                trim_blocks=True,
                lstrip_blocks=True,
                auto_reload=False,
            )
            axes = self.axes
            wrap = _annotate if annotated else _passthrough

            def axis_filter(content: str, name: str) -> str:
                if name not in axes:
                    raise _unknown_axis(name, axes)
                return wrap(content, name)

            env.filters["axis"] = axis_filter
            self._envs[annotated] = env
        return env

    def _template(self, role: str, annotated: bool) -> jinja2.Template:
        key = (annotated, role)
        template = self._templates.get(key)
        if template is None:
            name = self._files[role]
            try:
                template = self.environment(annotated).get_template(name)
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateError(
                    f"template syntax error: {exc.message}",
                    path=exc.filename or str(self.path / name),
                    line=exc.lineno,
                ) from exc
            except jinja2.TemplateNotFound as exc:
                raise TemplateError(
                    f"template {exc.name!r} not found", path=str(self.path)
                ) from exc
            self._templates[key] = template
        return template

    def __repr__(self) -> str:
        return f"<Scenario {self.name}: {len(self.axes)} axes>"


# ---------------------------------------------------------------------- declaration parsing


@cache
def _load_builtin(name: str) -> Scenario:
    root = _paths.templates_root()
    folder = root / name
    if not _NAME.match(name) or not (folder / DECLARATION).is_file():
        raise unknown_choice("scenario", name, Scenario.available())
    return Scenario.from_dir(folder)


def _check_facts(raw: object, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise TemplateError("facts must be a table", path=where)
    unknown = set(raw) - _FACT_FIELDS
    if unknown:
        raise TemplateError(
            f"unknown fact(s) {sorted(unknown)}; valid facts: {sorted(_FACT_FIELDS)}", path=where
        )
    try:
        Facts(**raw)
    except pydantic.ValidationError as exc:
        raise TemplateError(f"invalid facts {raw}: {exc}", path=where) from exc
    return dict(raw)


def _parse_axes(raw: object, where: str) -> dict[str, Axis]:
    if not isinstance(raw, dict) or not raw:
        raise TemplateError("the declaration must define at least one [axes.<name>]", path=where)
    axes: dict[str, Axis] = {}
    for name, spec in raw.items():
        if not _NAME.match(name) or name in RESERVED_NAMES:
            raise TemplateError(
                f"axis name {name!r} must be lower_snake_case and not one of the result "
                f"columns {sorted(RESERVED_NAMES)}",
                path=where,
            )
        levels: dict[str, Level] = {}
        for level_name, lspec in spec.get("levels", {}).items():
            if not _NAME.match(level_name):
                raise TemplateError(
                    f"level name {level_name!r} must be lower_snake_case", path=where
                )
            levels[level_name] = Level(
                name=level_name,
                description=str(lspec.get("description", "")),
                facts=types.MappingProxyType(_check_facts(lspec.get("facts", {}), where)),
                vars=types.MappingProxyType({k: str(v) for k, v in lspec.get("vars", {}).items()}),
                harm_factor=float(lspec.get("harm_factor", 1.0)),
                requires=_level_map(lspec.get("requires", {}), f"{name}.{level_name}", where),
                check=types.MappingProxyType(
                    {k: str(v) for k, v in lspec.get("check", {}).items()}
                ),
                facts_when=_parse_facts_when(
                    lspec.get("facts_when", []), f"{name}.{level_name}", where
                ),
            )
        default = str(spec.get("default", ""))
        if default not in levels:
            raise TemplateError(
                f"axis {name!r}: default {default!r} is not one of its levels {list(levels)}",
                path=where,
            )
        axes[name] = Axis(
            name=name,
            description=str(spec.get("description", "")),
            levels=types.MappingProxyType(levels),
            default=default,
            requires=_level_map(spec.get("requires", {}), name, where),
            check=types.MappingProxyType({k: str(v) for k, v in spec.get("check", {}).items()}),
        )
    return axes


def _level_map(raw: object, owner: str, where: str) -> Mapping[str, tuple[str, ...]]:
    """``{axis: level or [levels]}`` → ``{axis: (levels, ...)}`` (read-only)."""
    if not isinstance(raw, dict):
        raise TemplateError(
            f"{owner}: expected a table {{axis = [levels]}}, got {raw!r}", path=where
        )
    out: dict[str, tuple[str, ...]] = {}
    for axis, value in raw.items():
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not values:
            raise TemplateError(
                f"{owner}: {axis} must be a level or a non-empty list of levels, got {value!r}",
                path=where,
            )
        out[str(axis)] = tuple(str(x) for x in values)
    return types.MappingProxyType(out)


def _parse_facts_when(raw: object, owner: str, where: str) -> tuple[FactsWhen, ...]:
    if not isinstance(raw, list):
        raise TemplateError(
            f"{owner}: facts_when must be a list of {{ when = {{...}}, facts = {{...}} }}",
            path=where,
        )
    rules: list[FactsWhen] = []
    for entry in raw:
        if not isinstance(entry, dict) or set(entry) != {"when", "facts"} or not entry["when"]:
            raise TemplateError(
                f"{owner}: each facts_when entry needs exactly a non-empty `when` table and "
                f"`facts`, got {entry!r}",
                path=where,
            )
        rules.append(
            FactsWhen(
                when=_level_map(entry["when"], owner, where),
                facts=types.MappingProxyType(_check_facts(entry["facts"], where)),
            )
        )
    return tuple(rules)


def _parse_groups(raw: object, axes: Mapping[str, Axis], where: str) -> dict[str, CueGroup]:
    groups: dict[str, CueGroup] = {}
    if not isinstance(raw, dict):
        raise TemplateError("groups must be a table", path=where)
    for name, spec in raw.items():
        members = tuple(str(a) for a in spec.get("axes", ()))
        off = str(spec.get("off", "none"))
        for member in members:
            if member not in axes:
                raise TemplateError(f"group {name!r} names unknown axis {member!r}", path=where)
            if off not in axes[member].levels:
                raise TemplateError(
                    f"group {name!r}: axis {member!r} needs an {off!r} level", path=where
                )
        speaking = [m for m in members if axes[m].default != off]
        if len(speaking) != 1:
            raise TemplateError(
                f"group {name!r}: exactly one member must have a default other than {off!r}; "
                f"got {speaking}",
                path=where,
            )
        groups[name] = CueGroup(name=name, axes=members, off=off)
    return groups


def _with_group(axis: Axis, groups: Mapping[str, CueGroup]) -> Axis:
    for group in groups.values():
        if axis.name in group.axes:
            return Axis(
                name=axis.name,
                description=axis.description,
                levels=axis.levels,
                default=axis.default,
                group=group.name,
                requires=axis.requires,
                check=axis.check,
            )
    return axis


def _check_references(axes: Mapping[str, Axis], where: str) -> None:
    for axis in axes.values():
        found: list[tuple[str, str, Mapping[str, Any]]] = [
            (f"axis {axis.name!r}", "requires", axis.requires),
            (f"axis {axis.name!r}", "check", axis.check),
        ]
        for level in axis.levels.values():
            owner = f"level {axis.name}.{level.name}"
            found += [(owner, "requires", level.requires), (owner, "check", level.check)]
            found += [(owner, "facts_when", rule.when) for rule in level.facts_when]
        for owner, kind, refs in found:
            for other, value in refs.items():
                values = (value,) if isinstance(value, str) else value
                if other not in axes or any(v not in axes[other].levels for v in values):
                    raise TemplateError(
                        f"{owner}: {kind} names unknown axis or level {other}={list(values)}",
                        path=where,
                    )


def _template_error(exc: BaseException, default_path: Path) -> TemplateError:
    """Point at the template file and line where a render failed."""
    path, line = str(default_path), None
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith(".j2"):
            path, line = filename, tb.tb_lineno
        tb = tb.tb_next
    return TemplateError(
        f"template render error: {type(exc).__name__}: {exc}", path=path, line=line
    )


__all__ = [
    "MARK_CLOSE",
    "MARK_NAME_END",
    "MARK_OPEN",
    "RESERVED_NAMES",
    "Axis",
    "CueGroup",
    "FactsWhen",
    "Level",
    "Scenario",
    "condition_id",
]
