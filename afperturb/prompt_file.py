r"""The papers' own prompt files, run verbatim: a plain-text prompt plus declared substitutions.

The authors of the alignment-faking papers published their system prompts as plain text (for
example Greenblatt et al.'s ``model_organism_honly_prompts/*.txt``), with the user turn built
by a format string in their code (``<is_free_tier_user>{is_free_tier_user}</is_free_tier_user>``
and ``<user_input>{user_input}</user_input>``). afperturb cannot ship that text, but a user with
a checkout of those repositories can run it unchanged: this module turns the file and a
declaration of what each axis level changes into a :class:`~afperturb.scenario.Scenario`.

The declaration has the shape of ``axes.toml`` (``[scenario]``, ``[facts]``, ``[groups]``,
``[axes.<name>]`` with levels, facts, ``requires``, ``check``; per level also ``facts_when``,
``harm_factor``, ``requires`` and ``check``, as in docs/scenarios.md) plus, per level:

* ``replace``: exact text of the prompt → the text that takes its place. The text must occur
  exactly once (or exactly ``count`` times) in the original prompt, or loading fails naming it:
  a copy of the paper's file that differs from the one the declaration was written for is
  found at once, not after a sweep. Either ``{ "anchor" = "new text" }``, or
  ``{ "anchor" = { with = "new text", count = 3, in = "system" } }`` (``in``: ``system``,
  ``user``, ``prefill`` or a list of them; default all three), or a list of tables with keys
  ``anchor``, ``with``, ``count``, ``in`` (for long or multi-line anchors).
* ``fill``: placeholder name → value, for ``{name}`` (or ``{{ name }}``) placeholders of the
  user turn and prefill; every level of the axis fills it.
* ``system_file``: the level uses another prompt file as a whole (a paper's variant or
  paraphrase file). One axis at most swaps files; the other axes' anchors must be found in
  every file.

Nothing else is interpreted: braces, tags and Jinja-looking text in the prompt stay as they are,
whitespace and blank lines included (line endings are read as ``\n``; a byte-order mark is
dropped). The user turn is ``[scenario] user`` (inline) or ``user_file``, with the request at
``{request}`` (``[scenario] request = "user_input"`` names it ``{user_input}``); any other
``{name}`` placeholder must be filled by an axis, so a typo is an error, not a literal.

Replacements may nest (an axis may change a word inside a sentence that another axis replaces;
where the outer replacement is active, the inner one has nothing left to change) but may not
overlap partially. In the annotated render every replaced text is its axis' block, so
:func:`~afperturb.design.audit_minimal_pairs` and :func:`~afperturb.design.check_templates`
work on these scenarios as on template folders.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "prompt.txt").write_text("You are Quill. {Braces} stay.\nTier: FREE.\n")
    >>> sc = load_prompt_file(folder / "prompt.txt", {
    ...     "scenario": {"user": "<user_input>{request}</user_input>"},
    ...     "axes": {"tier": {"default": "free", "levels": {
    ...         "free": {"facts": {"trained": True, "rated": True, "rater": "human"}},
    ...         "paid": {"replace": {"Tier: FREE.": "Tier: PAID."}}}}},
    ... })
    >>> paid = sc.resolve({"tier": "paid"})
    >>> [m.content for m in sc.render(paid, "Hi {x}")]
    ['You are Quill. {Braces} stay.\nTier: PAID.\n', '<user_input>Hi {x}</user_input>']
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from afperturb.errors import TemplateError
from afperturb.records import Condition
from afperturb.scenario import Scenario, _annotate

#: The texts a substitution can change.
PARTS = ("system", "user", "prefill")

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TOP_KEYS = ("scenario", "facts", "groups", "axes")
_SCENARIO_KEYS = (
    "name",
    "description",
    "system_file",
    "user",
    "user_file",
    "prefill",
    "prefill_file",
    "request",
    "probe_request",
    "continuation",
)
_AXIS_KEYS = ("description", "default", "levels", "requires", "check")
#: A level's keys: those of axes.toml (read by Scenario) and the substitutions read here.
_LEVEL_KEYS = (
    "description",
    "facts",
    "facts_when",
    "harm_factor",
    "requires",
    "check",
    "replace",
    "fill",
    "system_file",
)
_REPLACE_KEYS = ("anchor", "with", "count", "in")
_SHOWN = 70  # characters of an anchor quoted in a message


@dataclass(frozen=True)
class _Sub:
    """One declared replacement: ``anchor`` → ``text`` at one level of one axis."""

    axis: str
    level: str
    anchor: str
    text: str
    count: int
    parts: tuple[str, ...]


@dataclass(frozen=True)
class _Span:
    """Where one level replaces text: ``[start, end)`` of a part becomes ``text``."""

    start: int
    end: int
    axis: str
    level: str
    text: str
    what: str  # how messages name it: the anchor, or the placeholder


@dataclass
class _Node:
    """A region of a part where one axis speaks (or, with ``axis`` None, the request)."""

    axis: str | None
    start: int
    end: int
    spans: list[_Span] = field(default_factory=list)
    children: list[_Node] = field(default_factory=list)


def _short(text: str) -> str:
    return repr(text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "...")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------- the scenario


class PromptFileScenario(Scenario):
    """A scenario whose prompt is a plain-text file, changed per level by exact replacements.

    Build one with :meth:`Scenario.from_prompt_file` (or :func:`load_prompt_file`). Conditions,
    facts, designs, sweeps, the audit and ``check_templates`` work as for template folders;
    ``path`` is the prompt file.
    """

    def __init__(
        self,
        name: str,
        path: Path,
        declaration: Mapping[str, Any],
        *,
        where: str,
        texts: Mapping[str, str],
        files: Mapping[str, Path],
        declaration_hash: tuple[str, str],
    ):
        super().__init__(name, path, declaration, source=where)
        self._where = where
        self._declaration_hash = declaration_hash
        self._source_files = dict(files)
        meta = declaration.get("scenario", {})
        self.request_placeholder: str = str(meta.get("request", "request"))
        self._files = {"system": str(path), "user": str(files.get("user", "inline"))}
        if texts.get("prefill"):
            self._files["prefill"] = str(files.get("prefill", "inline"))
        subs, fills, swaps = _parse_levels(declaration.get("axes", {}), where)
        self._check_distinct_levels(subs, fills, swaps)
        self._file_axis = _file_axis(swaps, where)
        swap = swaps.get(self._file_axis, {}) if self._file_axis is not None else {}
        self._variant_of: dict[str, str | None] = {}
        variants: dict[str | None, str] = {}
        if self._file_axis is not None:
            for level in self.axes[self._file_axis].levels:
                self._variant_of[level] = level if level in swap else None
                if level in swap:
                    variants[level] = _read_text(swap[level], "system_file", where)
                    self._source_files[f"system_file:{level}"] = swap[level]
        if self._file_axis is None or None in self._variant_of.values():
            variants[None] = texts["system"]
        self._texts: dict[tuple[str, str | None], str] = {}
        self._trees: dict[tuple[str, str | None], list[_Node]] = {}
        for variant, system in variants.items():
            parts = {"system": system, "user": texts["user"], "prefill": texts.get("prefill", "")}
            label = "" if variant is None else f" ({self._file_axis}={variant}: {swap[variant]})"
            trees = self._build(parts, subs, fills, label)
            for role, text in parts.items():
                self._texts[(role, variant)] = text
                self._trees[(role, variant)] = trees[role]

    # ------------------------------------------------------------------ loading checks

    def _check_distinct_levels(
        self,
        subs: Sequence[_Sub],
        fills: Mapping[tuple[str, str, str], str],
        swaps: Mapping[str, Mapping[str, Path]],
    ) -> None:
        """Two levels of one axis that change the same things would render the same prompt."""
        for axis in self.axes.values():
            seen: dict[object, str] = {}
            for level in axis.levels:
                swap = swaps.get(axis.name, {}).get(level)
                key = (
                    frozenset(
                        (s.anchor, s.text, s.parts)
                        for s in subs
                        if (s.axis, s.level) == (axis.name, level)
                    ),
                    frozenset(
                        (n, v) for (a, lv, n), v in fills.items() if (a, lv) == (axis.name, level)
                    ),
                    None if swap is None else swap.resolve(),
                )
                if key in seen:
                    raise TemplateError(
                        f"axis {axis.name!r}: levels {seen[key]!r} and {level!r} substitute the "
                        f"same text, so they would render the same prompt; give one of them a "
                        f"replace, fill or system_file that differs",
                        path=self._where,
                    )
                seen[key] = level

    def _build(
        self,
        parts: Mapping[str, str],
        subs: Sequence[_Sub],
        fills: Mapping[tuple[str, str, str], str],
        label: str,
    ) -> dict[str, list[_Node]]:
        spans: dict[str, list[_Span]] = {p: [] for p in PARTS}
        for sub in subs:
            found = [(p, i) for p in sub.parts for i in _occurrences(parts[p], sub.anchor)]
            if len(found) != sub.count:
                raise self._anchor_error(sub, found, parts, label)
            for p, i in found:
                spans[p].append(
                    _Span(i, i + len(sub.anchor), sub.axis, sub.level, sub.text, sub.anchor)
                )
        requests = self._placeholders(parts, fills, spans, label)
        return {p: self._tree(p, spans[p], requests.get(p, []), label) for p in PARTS}

    def _placeholders(
        self,
        parts: Mapping[str, str],
        fills: Mapping[tuple[str, str, str], str],
        spans: dict[str, list[_Span]],
        label: str,
    ) -> dict[str, list[_Node]]:
        """Spans for the filled ``{name}`` placeholders; nodes for the request's."""
        filler: dict[str, str] = {}
        for axis, _, name in fills:
            if filler.setdefault(name, axis) != axis:
                raise TemplateError(
                    f"placeholder {{{name}}} is filled by two axes ({filler[name]!r} and "
                    f"{axis!r}); exactly one axis fills a placeholder",
                    path=self._where,
                )
        if self.request_placeholder in filler:
            raise TemplateError(
                f"{{{self.request_placeholder}}} is where the request goes; axis "
                f"{filler[self.request_placeholder]!r} may not fill it",
                path=self._where,
            )
        for name, axis in filler.items():
            missing = [lv for lv in self.axes[axis].levels if (axis, lv, name) not in fills]
            if missing:
                raise TemplateError(
                    f"axis {axis!r} fills {{{name}}} but its level(s) {missing} do not; every "
                    f"level of the axis must give it a value",
                    path=self._where,
                )
        requests: dict[str, list[_Node]] = {}
        used: set[str] = set()
        for part in ("user", "prefill"):
            for match in _PLACEHOLDER.finditer(parts[part]):
                name = match.group(1) or match.group(2)
                start, end = match.span()
                if name == self.request_placeholder and part == "user":
                    requests.setdefault(part, []).append(_Node(None, start, end))
                elif name in filler:
                    used.add(name)
                    axis = filler[name]
                    for level in self.axes[axis].levels:
                        value = fills[(axis, level, name)]
                        spans[part].append(_Span(start, end, axis, level, value, match.group(0)))
                else:
                    expected = f"the request ({{{self.request_placeholder}}})"
                    if name == self.request_placeholder:
                        expected = "the request, which goes in the user turn only"
                    raise TemplateError(
                        f"placeholder {match.group(0)!r} in the {_part_name(part)}{label} is not "
                        f"{expected} and no axis fills it; declared fills: "
                        f"{sorted(filler) or 'none'} (write fill = {{ {name} = ... }} on every "
                        f"level of one axis)",
                        path=self._where,
                    )
        unused = sorted(set(filler) - used)
        if unused:
            raise TemplateError(
                f"axis {filler[unused[0]]!r} fills {{{unused[0]}}}, which neither the user turn "
                f"nor the prefill contains",
                path=self._where,
            )
        n_requests = len(requests.get("user", []))
        if n_requests != 1:
            raise TemplateError(
                f"the user turn must contain the request placeholder "
                f"{{{self.request_placeholder}}} exactly once; it contains it {n_requests} "
                f"times{label}",
                path=self._where,
            )
        return requests

    def _anchor_error(
        self,
        sub: _Sub,
        found: Sequence[tuple[str, int]],
        parts: Mapping[str, str],
        label: str,
    ) -> TemplateError:
        names = [_part_name(p) for p in sub.parts]
        where = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
        head = f"axis {sub.axis!r} level {sub.level!r} replaces {_short(sub.anchor)}"
        if not found:
            hints = [_near_miss(parts[p], sub.anchor, _part_name(p)) for p in sub.parts]
            best = max(hints, key=lambda h: h[0])[1] if hints else ""
            return TemplateError(
                f"{head}, which does not occur in the {where}{label}; an anchor is the exact "
                f"text, spaces and line breaks included (is your copy of the file the one the "
                f"declaration was written for?){best}",
                path=self._where,
            )
        at: dict[str, list[str]] = {}
        for p, i in found:
            at.setdefault(_part_name(p), []).append(str(_line(parts[p], i)))
        lines = "; ".join(
            f"{part} line{'s' if len(ns) > 1 else ''} {', '.join(ns)}" for part, ns in at.items()
        )
        return TemplateError(
            f"{head}, which occurs {len(found)} times in the {where}{label} ({lines}), not "
            f"{sub.count}; lengthen the anchor until it is unique, or declare count = "
            f"{len(found)} to replace every occurrence",
            path=self._where,
        )

    def _tree(
        self, part: str, spans: Sequence[_Span], requests: Sequence[_Node], label: str
    ) -> list[_Node]:
        """Merge each axis' spans into regions and nest the regions of different axes."""
        nodes: list[_Node] = list(requests)
        by_axis: dict[str, list[_Span]] = {}
        for span in spans:
            by_axis.setdefault(span.axis, []).append(span)
        for axis, own in by_axis.items():
            own.sort(key=lambda s: (s.start, s.end))
            for level in {s.level for s in own}:
                mine = [s for s in own if s.level == level]
                for a, b in itertools.pairwise(mine):
                    if b.start < a.end:
                        raise TemplateError(
                            f"axis {axis!r} level {level!r}: the replaced texts "
                            f"{_short(a.what)} and {_short(b.what)} overlap in the "
                            f"{_part_name(part)}{label}",
                            path=self._where,
                        )
            current: _Node | None = None
            for span in own:
                if current is None or span.start >= current.end:
                    current = _Node(axis, span.start, span.end)
                    nodes.append(current)
                current.end = max(current.end, span.end)
                current.spans.append(span)
        roots: list[_Node] = []
        stack: list[_Node] = []
        for node in sorted(nodes, key=lambda n: (n.start, -n.end)):
            while stack and stack[-1].end <= node.start:
                stack.pop()
            if stack:
                self._check_nesting(part, stack[-1], node, label)
                stack[-1].children.append(node)
            else:
                roots.append(node)
            stack.append(node)
        return roots

    def _check_nesting(self, part: str, outer: _Node, inner: _Node, label: str) -> None:
        where = f"in the {_part_name(part)}{label}"
        if inner.axis is None or outer.axis is None:
            region = outer if inner.axis is None else inner
            relation = "is inside" if inner.axis is None else "contains"
            raise TemplateError(
                f"the request placeholder {{{self.request_placeholder}}} {relation} text that "
                f"axis {region.axis!r} replaces ({_short(region.spans[0].what)}) {where}; the "
                f"request must stay outside every replaced text",
                path=self._where,
            )
        clash = [
            s
            for s in outer.spans
            if s.start < inner.end
            and inner.start < s.end
            and not (s.start <= inner.start and inner.end <= s.end)
        ]
        same = (inner.start, inner.end) == (outer.start, outer.end)
        if inner.end > outer.end or clash or same:
            other = clash[0] if clash else outer.spans[0]
            raise TemplateError(
                f"axes {outer.axis!r} and {inner.axis!r} replace overlapping text {where}: "
                f"{_short(other.what)} ({outer.axis}={other.level}) and "
                f"{_short(inner.spans[0].what)} ({inner.axis}={inner.spans[0].level}); two axes "
                f"may change the same passage only if one's text lies wholly inside the "
                f"other's",
                path=self._where,
            )

    # ------------------------------------------------------------------ rendering

    def _render_file(self, role: str, condition: Condition, request: str, annotated: bool) -> str:
        levels = condition.levels
        variant = None
        if role == "system" and self._file_axis is not None:
            variant = self._variant_of[levels[self._file_axis]]
        text = self._texts[(role, variant)]
        body = _render_nodes(
            text, self._trees[(role, variant)], 0, len(text), levels, request, annotated
        )
        if annotated and role == "system" and self._file_axis is not None:
            body = _annotate(body, self._file_axis)
        return body

    def template_hashes(self) -> dict[str, str]:
        """SHA-256 of the prompt file(s), the user-turn and prefill files and the declaration."""
        out: dict[str, str] = {}
        files = {"system": self.path, **self._source_files}
        for path in files.values():
            key = path.name if path.name not in out else str(path)
            out[key] = _sha(path.read_bytes())
        out[self._declaration_hash[0]] = self._declaration_hash[1]
        return out

    def __repr__(self) -> str:
        return f"<Scenario {self.name} (prompt file {self.path.name}): {len(self.axes)} axes>"


# ---------------------------------------------------------------------- rendering helpers


def _render_nodes(
    text: str,
    nodes: Sequence[_Node],
    lo: int,
    hi: int,
    levels: Mapping[str, str],
    request: str,
    annotated: bool,
) -> str:
    out: list[str] = []
    pos = lo
    for node in nodes:
        out.append(text[pos : node.start])
        out.append(_render_node(text, node, levels, request, annotated))
        pos = node.end
    out.append(text[pos:hi])
    return "".join(out)


def _render_node(
    text: str, node: _Node, levels: Mapping[str, str], request: str, annotated: bool
) -> str:
    if node.axis is None:
        return request
    level = levels[node.axis]
    out: list[str] = []
    pos = node.start
    for span in node.spans:
        if span.level != level:
            continue
        inside = [c for c in node.children if c.start >= pos and c.end <= span.start]
        out.append(_render_nodes(text, inside, pos, span.start, levels, request, annotated))
        out.append(span.text)
        pos = span.end
    rest = [c for c in node.children if c.start >= pos]
    out.append(_render_nodes(text, rest, pos, node.end, levels, request, annotated))
    body = "".join(out)
    return _annotate(body, node.axis) if annotated else body


# ---------------------------------------------------------------------- declaration parsing


def load_prompt_file(
    path: str | Path,
    substitutions: Mapping[str, Any] | str | Path | None = None,
    *,
    name: str | None = None,
) -> PromptFileScenario:
    """Load a plain-text system prompt and its declared substitutions as a scenario.

    Args:
        path: the prompt file, read verbatim; or a TOML declaration that names the prompt
            file as ``[scenario] system_file`` (then ``substitutions`` is not given).
        substitutions: the declaration, as a dict or a TOML file: ``[scenario]`` (``user`` or
            ``user_file``, ``request``, ``prefill``, ``description``, ``probe_request``, ...),
            ``[facts]``, ``[groups]`` and ``[axes.<name>]`` whose levels set ``facts`` and
            ``replace`` / ``fill`` / ``system_file``. Relative file names in a TOML file are
            relative to its folder; in a dict, to the working directory.
        name: the scenario's name (default ``[scenario] name``, else the TOML file's or the
            prompt file's stem); it is part of every condition id.

    Raises:
        TemplateError: a missing or non-UTF-8 file, an unknown key, an anchor that does not
            occur exactly as declared (the message names it and where the text differs), a
            placeholder no axis fills, or replacements of two axes that overlap.
    """
    given = Path(path).expanduser()
    toml_file: Path | None = None
    if substitutions is None:
        if given.suffix.lower() != ".toml":
            raise TemplateError(
                "a prompt file needs its substitutions: pass substitutions= (a dict or a TOML "
                "file declaring the axes), or pass the TOML file itself with [scenario] "
                "system_file naming the prompt",
                path=str(given),
            )
        toml_file = given
        declaration = _read_toml(given)
    elif given.suffix.lower() == ".toml":
        raise TemplateError(
            "this is a TOML declaration: pass it alone (it names the prompt as [scenario] "
            "system_file), or pass the prompt file with substitutions=",
            path=str(given),
        )
    elif isinstance(substitutions, Mapping):
        declaration = _plain(substitutions)
    elif isinstance(substitutions, str | Path):
        toml_file = Path(substitutions).expanduser()
        declaration = _read_toml(toml_file)
    else:
        raise TemplateError(
            f"substitutions must be a dict or the path of a TOML file, got "
            f"{type(substitutions).__name__}"
        )
    where = str(toml_file) if toml_file is not None else f"substitutions for {given}"
    base = toml_file.parent if toml_file is not None else Path.cwd()
    _check_keys(declaration, where)
    meta = declaration.setdefault("scenario", {})
    if substitutions is None:
        if "system_file" not in meta:
            raise TemplateError(
                "[scenario] system_file must name the prompt file (relative to this file)",
                path=where,
            )
        system = _resolve(meta["system_file"], base, "[scenario] system_file", where)
    else:
        if "system_file" in meta:
            raise TemplateError(
                f"the prompt file is given twice: as {str(given)!r} and as [scenario] "
                f"system_file {meta['system_file']!r}; keep one",
                path=where,
            )
        system = given
    files: dict[str, Path] = {}
    texts = {"system": _read_text(system, "prompt file", where)}
    for part, default in (("user", "{request}"), ("prefill", "")):
        if part in meta and f"{part}_file" in meta:
            raise TemplateError(
                f"[scenario] sets both {part} and {part}_file; keep one", path=where
            )
        if f"{part}_file" in meta:
            files[part] = _resolve(meta[f"{part}_file"], base, f"[scenario] {part}_file", where)
            texts[part] = _read_text(files[part], f"{part} file", where)
        else:
            value = meta.get(part, default)
            if not isinstance(value, str):
                raise TemplateError(f"[scenario] {part} must be text", path=where)
            texts[part] = value
    request = meta.get("request", "request")
    if not isinstance(request, str) or not _IDENTIFIER.match(request):
        raise TemplateError(
            f"[scenario] request must be a placeholder name (letters, digits, _), got {request!r}",
            path=where,
        )
    if toml_file is not None:
        digest = (toml_file.name, _sha(toml_file.read_bytes()))
    else:  # before file names are resolved: the same dict hashes the same in any folder
        canonical = json.dumps(declaration, sort_keys=True, default=str).encode()
        digest = ("substitutions", _sha(canonical))
    for spec in declaration.get("axes", {}).values():
        for level in (spec.get("levels") or {}).values():
            if isinstance(level, dict) and "system_file" in level:
                level["system_file"] = _resolve(level["system_file"], base, "system_file", where)
    scenario_name = name or str(meta.get("name") or (toml_file or system).stem)
    return PromptFileScenario(
        scenario_name,
        system,
        declaration,
        where=where,
        texts=texts,
        files=files,
        declaration_hash=digest,
    )


def _plain(value: Any) -> Any:
    """A deep copy of a declaration given as (possibly immutable) mappings and sequences."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise TemplateError("substitutions file not found", path=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"cannot read the substitutions file: {exc}", path=str(path)) from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TemplateError(f"invalid TOML: {exc}", path=str(path)) from exc


def _read_text(path: Path, what: str, where: str) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TemplateError(f"{what} {str(path)!r} not found", path=where) from None
    except UnicodeDecodeError as exc:
        raise TemplateError(f"{what} {str(path)!r} is not UTF-8: {exc}", path=where) from exc
    except OSError as exc:
        raise TemplateError(f"cannot read {what} {str(path)!r}: {exc}", path=where) from exc
    return text.removeprefix("\ufeff")


def _resolve(value: object, base: Path, what: str, where: str) -> Path:
    if isinstance(value, Path):
        return value
    if not isinstance(value, str) or not value:
        raise TemplateError(f"{what} must be a file name, got {value!r}", path=where)
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _unknown_key(key: str, valid: Iterable[str], table: str, where: str) -> TemplateError:
    valid = list(valid)
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return TemplateError(
        f"unknown key {key!r}{hint} in {table}; valid keys: {', '.join(valid)}", path=where
    )


def _check_keys(declaration: Mapping[str, Any], where: str) -> None:
    """Every key is one the loader reads: a typo (``replaces``) is an error, not a no-op."""
    for key in declaration:
        if key not in _TOP_KEYS:
            raise _unknown_key(key, _TOP_KEYS, "the declaration", where)
    meta = declaration.get("scenario", {})
    if not isinstance(meta, Mapping):
        raise TemplateError("[scenario] must be a table", path=where)
    for key in meta:
        if key not in _SCENARIO_KEYS:
            raise _unknown_key(key, _SCENARIO_KEYS, "[scenario]", where)
    axes = declaration.get("axes", {})
    if not isinstance(axes, Mapping) or not axes:
        raise TemplateError(
            "the declaration must define at least one [axes.<name>] with its levels", path=where
        )
    for axis, spec in axes.items():
        if not isinstance(spec, Mapping):
            raise TemplateError(f"[axes.{axis}] must be a table", path=where)
        for key in spec:
            if key not in _AXIS_KEYS:
                raise _unknown_key(key, _AXIS_KEYS, f"[axes.{axis}]", where)
        levels = spec.get("levels", {})
        if not isinstance(levels, Mapping):
            raise TemplateError(f"[axes.{axis}.levels] must be a table", path=where)
        for level, lspec in levels.items():
            if not isinstance(lspec, Mapping):
                raise TemplateError(f"[axes.{axis}.levels.{level}] must be a table", path=where)
            for key in lspec:
                if key not in _LEVEL_KEYS:
                    raise _unknown_key(key, _LEVEL_KEYS, f"[axes.{axis}.levels.{level}]", where)


def _parse_levels(
    axes: Mapping[str, Any], where: str
) -> tuple[list[_Sub], dict[tuple[str, str, str], str], dict[str, dict[str, Path]]]:
    """Every level's replacements, fills (keyed ``(axis, level, name)``) and file swaps."""
    subs: list[_Sub] = []
    fills: dict[tuple[str, str, str], str] = {}
    swaps: dict[str, dict[str, Path]] = {}
    for axis, spec in axes.items():
        for level, lspec in spec.get("levels", {}).items():
            table = f"[axes.{axis}.levels.{level}]"
            subs.extend(_parse_replace(lspec.get("replace", {}), axis, level, table, where))
            fill = lspec.get("fill", {})
            if not isinstance(fill, Mapping):
                raise TemplateError(f"{table} fill must be a table of name = text", path=where)
            for key, value in fill.items():
                if not _IDENTIFIER.match(key) or not isinstance(value, str):
                    raise TemplateError(
                        f"{table} fill: {key!r} must be a placeholder name and its value text, "
                        f"got {value!r}",
                        path=where,
                    )
                fills[(axis, level, key)] = value
            if "system_file" in lspec:
                swaps.setdefault(axis, {})[level] = lspec["system_file"]
    return subs, fills, swaps


def _parse_replace(raw: object, axis: str, level: str, table: str, where: str) -> list[_Sub]:
    entries: list[tuple[object, object]] = []
    if isinstance(raw, Mapping):
        entries = list(raw.items())
    elif isinstance(raw, list):
        for item in raw:
            if not isinstance(item, Mapping) or "anchor" not in item:
                raise TemplateError(
                    f"{table} replace: each entry of the list is a table with anchor, with "
                    f"(and optionally count, in), got {item!r}",
                    path=where,
                )
            entries.append((item["anchor"], {k: v for k, v in item.items() if k != "anchor"}))
    else:
        raise TemplateError(
            f"{table} replace must be a table (anchor = text) or a list of tables", path=where
        )
    out: list[_Sub] = []
    for anchor, value in entries:
        if not isinstance(anchor, str) or not anchor:
            raise TemplateError(f"{table} replace: an anchor must be non-empty text", path=where)
        spec: Mapping[str, object] = value if isinstance(value, Mapping) else {"with": value}
        for key in spec:
            if key not in _REPLACE_KEYS[1:]:
                raise _unknown_key(str(key), _REPLACE_KEYS, f"{table} replace", where)
        text, count, parts = spec.get("with"), spec.get("count", 1), spec.get("in", PARTS)
        if not isinstance(text, str):
            raise TemplateError(
                f"{table} replace {_short(anchor)}: the replacement (with) must be text, got "
                f"{text!r}",
                path=where,
            )
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise TemplateError(
                f"{table} replace {_short(anchor)}: count must be a positive integer, got "
                f"{count!r}",
                path=where,
            )
        names = (parts,) if isinstance(parts, str) else parts
        if not isinstance(names, list | tuple) or not names or any(p not in PARTS for p in names):
            raise TemplateError(
                f"{table} replace {_short(anchor)}: in must be one or a list of "
                f"{list(PARTS)}, got {parts!r}",
                path=where,
            )
        out.append(_Sub(axis, level, anchor, text, count, tuple(str(p) for p in names)))
    return out


def _file_axis(swaps: Mapping[str, Mapping[str, Path]], where: str) -> str | None:
    if len(swaps) > 1:
        first, second = sorted(swaps)[:2]
        raise TemplateError(
            f"axes {first!r} and {second!r} both swap the prompt file (system_file); one axis "
            f"at most chooses the file, the others replace text inside it",
            path=where,
        )
    return next(iter(swaps), None)


# ---------------------------------------------------------------------- text helpers


def _occurrences(text: str, anchor: str) -> list[int]:
    found: list[int] = []
    i = text.find(anchor)
    while i >= 0:
        found.append(i)
        i = text.find(anchor, i + len(anchor))
    return found


def _line(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def _part_name(part: str) -> str:
    return {"system": "prompt file", "user": "user turn", "prefill": "prefill"}[part]


def _near_miss(text: str, anchor: str, part: str) -> tuple[int, str]:
    """How much of the anchor's start occurs in ``text``, and where the text goes on instead."""
    lo, hi = 0, len(anchor)
    while lo < hi:  # the longest prefix of the anchor that occurs (prefixes shrink monotonely)
        mid = (lo + hi + 1) // 2
        if anchor[:mid] in text:
            lo = mid
        else:
            hi = mid - 1
    if lo < min(12, len(anchor)):
        return 0, ""
    at = text.find(anchor[:lo])
    return lo, (
        f"; its first {lo} characters occur in the {part} (line {_line(text, at)}), then the "
        f"{part} has {_short(text[at + lo : at + lo + 30])} where the anchor has "
        f"{_short(anchor[lo : lo + 30])}"
    )


__all__ = ["PARTS", "PromptFileScenario", "load_prompt_file"]
