"""Message templates: Jinja2 in a sandbox, compiled once per campaign, rendered per recipient.

The rules a citizen's message depends on:

- A field that is missing, or empty, for a recipient is an error (`MissingField`, a
  TemplateError naming the template key and the field), never a blank in the message.
  `{% if nickname is defined %}` is how a template makes a field optional.
- A dotted name reads a dotted column: `{{ appointment.date }}` is the audience column
  `appointment.date` (an appointments schedule has `appointment.site_name`, `appointment.start`
  and so on), one level deep. Where the audience has no such column but has `appointment`
  itself, the name is what it always was: an attribute of that field's text.
- Templates run in Jinja's immutable sandbox: no `__class__`, `__globals__` or other attribute
  tricks, no mutation of values. Every operation that can build more than it is given is
  bounded (`loa.campaigns.sandbox`), and so are one message's steps and CPU time: a template
  that goes past a bound is refused (TemplateRefused), whatever the recipient, so a planner
  refuses the plan rather than the row. A rendered text longer than MAX_TEXT characters, or
  a field longer than that, is an error for that recipient. There are no globals either (no
  `range`, `cycler`, `lipsum`): every name a template uses is a column of the audience, which is
  what `fields_used` reports, and a column that is missing can never fall back to a global.
- Nothing is escaped: SMS, Zalo and push text are plain text, and so are email bodies (loa
  sends plain-text email).
- With `sms_ascii = true`, the SMS text is folded to ASCII (Vietnamese diacritics stripped,
  'đ' to 'd', curly quotes and dashes to plain ones) so it fits 160-character GSM parts. The
  template's own text is folded once, when it is compiled, and each recipient's values as they
  are filled in; folding works a character at a time, so this is the same as folding the
  rendered text, without paying for the template's text again for every recipient.
- Rendered text is stripped of leading and trailing white space (after folding); an email
  subject or push title is one line (line breaks, for instance from a field, become spaces).
- A channel whose templates read no field renders the same for everyone: `static` gives that
  message once per campaign, so a planner need not render it for every recipient.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType, SimpleNamespace
from typing import TYPE_CHECKING, Any, NamedTuple

import jinja2
import jinja2.meta
import jinja2.nodes
from jinja2.exceptions import SecurityError

from loa.campaigns.sandbox import MAX_TEXT, BoundedSandbox, budget
from loa.errors import TemplateError
from loa.sms import to_ascii

if TYPE_CHECKING:
    from loa.campaigns.plan import Channel, Plan

# Field values repeat (names, clinics, dates): folding short ones is cached, in bounded memory.
_fold_short = functools.lru_cache(maxsize=8192)(to_ascii)
FOLD_CACHE_CHARS = 64
_UNDEFINED = re.compile(r"'([^']+)' is undefined")
_NO_ATTRIBUTE = re.compile(r"SimpleNamespace object' has no attribute '([^']+)'")
_LINE_BREAKS = re.compile(r"\s*[\r\n]+\s*")


def _environment() -> BoundedSandbox:
    return BoundedSandbox(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        auto_reload=False,
        cache_size=0,
        keep_trailing_newline=False,
    )


ENVIRONMENT = _environment()


def compile_template(source: str, key: str) -> jinja2.Template:
    """Compile one template, or raise TemplateError naming `key` and the line of the problem."""
    try:
        return ENVIRONMENT.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{key}: line {exc.lineno}: {exc.message}") from None


def check_syntax(source: str) -> str:
    """`source` if it compiles; else a ValueError 'line N: reason' (for the plan's validators)."""
    try:
        ENVIRONMENT.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(f"template error on line {exc.lineno}: {exc.message}") from None
    return source


def variables(source: str) -> frozenset[str]:
    """The names a template reads from its context: the fields it needs from each recipient.

    `name.attr` on a name the template does not set itself is the dotted field `name.attr`;
    `name.attr(...)` is a method call on the field `name` (`{{ name.title() }}`).
    """
    return _fields_read(ENVIRONMENT.parse(source))


def _fields_read(tree: jinja2.nodes.Template) -> frozenset[str]:
    undeclared = jinja2.meta.find_undeclared_variables(tree)
    found: set[str] = set()
    dotted: set[int] = set()  # the Name nodes that stand for a group of dotted columns
    called = {id(call.node) for call in tree.find_all(jinja2.nodes.Call)}
    for node in tree.find_all(jinja2.nodes.Getattr):
        base = node.node
        if (
            isinstance(base, jinja2.nodes.Name)
            and _column_like(node)
            and base.name in undeclared
            and id(node) not in called
        ):
            found.add(f"{base.name}.{node.attr}")
            dotted.add(id(base))
    for name in tree.find_all(jinja2.nodes.Name):
        if name.ctx == "load" and name.name in undeclared and id(name) not in dotted:
            found.add(name.name)
    return frozenset(found)


def _column_like(node: jinja2.nodes.Getattr) -> bool:
    """`name.attr` that may read the dotted column `name.attr` (never `name._attr`)."""
    return isinstance(node.node, jinja2.nodes.Name) and not node.attr.startswith("_")


class RenderedMessage(NamedTuple):
    """One recipient's message on one channel, ready for the adapter.

    sms: `body`; email: `subject` and `body` (plain text); zalo: `template_id` and `data`
    (the ZNS template's parameters); fcm: `title` and `body`. (A named tuple: it is built once
    per recipient, and a tuple is built several times faster than a frozen dataclass.)
    """

    channel: str
    body: str = ""
    subject: str = ""
    title: str = ""
    template_id: str = ""
    data: Mapping[str, str] = MappingProxyType({})


class TemplateRefused(TemplateError):
    """The sandbox refused a template: it would build too much, or take too long, for one
    message. The template is at fault, not the recipient: a plan using it is refused."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: refused by the sandbox: {reason}")
        self.key = key
        self.reason = reason


class MissingField(TemplateError):
    """A template needs a field this recipient does not have (or has empty)."""

    def __init__(self, key: str, name: str) -> None:
        super().__init__(f"{key}: field {name!r} is missing or empty for this recipient")
        self.key = key
        self.field = name


@dataclass(frozen=True, slots=True)
class _Part:
    key: str  # templates.email.subject
    template: jinja2.Template
    fields: tuple[str, ...]
    # Most templates are text with {{ field }} slots and nothing else; those are rendered by
    # filling the slots of `pieces` (the text between them) directly, five times faster than
    # running the compiled template, with the same result and the same MissingField.
    pieces: tuple[str, ...] | None = None
    slots: tuple[tuple[int, str], ...] = ()
    fold: bool = False  # to ASCII: `pieces` are folded already, values as they are filled in

    @classmethod
    def compile(cls, key: str, source: str, *, fold: bool = False) -> _Part:
        template = compile_template(source, key)
        fields = tuple(sorted(variables(source)))
        plain = _plain_output(ENVIRONMENT.parse(source))
        if plain is None:
            return cls(key, template, fields, fold=fold)
        pieces: list[str] = []
        slots: list[tuple[int, str]] = []
        for node in plain:
            if isinstance(node, jinja2.nodes.Name | jinja2.nodes.Getattr):
                slots.append((len(pieces), _slot_name(node)))
                pieces.append("")
            else:
                pieces.append(to_ascii(node.data) if fold else node.data)
        return cls(key, template, fields, tuple(pieces), tuple(slots), fold)

    def render(self, fields: Mapping[str, str]) -> str:
        if self.pieces is None:
            return self._render_template(fields)
        pieces = list(self.pieces)
        fold = self.fold
        for index, name in self.slots:
            value = fields.get(name)
            if value is None and "." in name and name.partition(".")[0] in fields:
                return self._render_template(fields)  # an attribute of a field, not a column
            if not value or value.isspace():
                raise MissingField(self.key, name)
            pieces[index] = _fold(value) if fold else value
        text = "".join(pieces).strip()
        if len(text) > MAX_TEXT:
            raise _too_long(self.key, len(text))
        if not text:
            raise TemplateError(f"{self.key}: the text is empty for this recipient")
        return text

    def _render_template(self, fields: Mapping[str, str]) -> str:
        text = self._run(fields)
        if self.fold:
            text = to_ascii(text).strip()
        if not text:
            raise TemplateError(f"{self.key}: the text is empty for this recipient")
        return text

    def _run(self, fields: Mapping[str, str]) -> str:
        context: dict[str, Any] = {}
        for name in self.fields:
            value = fields.get(name)
            if value and len(value) > MAX_TEXT:
                raise TemplateError(
                    f"{self.key}: field {name!r} is {len(value):,} characters long "
                    f"(at most {MAX_TEXT:,})"
                )
            group, dot, attribute = name.partition(".")
            if dot and value is None and group in fields:  # the field `group`'s attribute
                group_value = fields[group]
                if group_value and not group_value.isspace():
                    context[group] = group_value
            elif dot:  # a dotted column: an attribute of its group, absent when empty
                record = context.get(group)
                if not isinstance(record, SimpleNamespace):
                    record = context[group] = SimpleNamespace()
                if value and not value.isspace():
                    setattr(record, attribute, value)
            elif value and not value.isspace():
                context[name] = value
        template = self.template
        pieces: list[str] = []
        written = 0
        try:
            # Template.render without its copy of the context and traceback rewriting, in
            # the budget of one message, and counted as it is written
            with budget():
                for piece in template.root_render_func(template.new_context(context, shared=True)):
                    written += len(piece)
                    if written > MAX_TEXT:
                        raise _too_long(self.key, written)
                    pieces.append(piece)
        except jinja2.UndefinedError as exc:
            missing = _UNDEFINED.fullmatch(str(exc))
            if missing is not None:
                raise MissingField(self.key, missing[1]) from None
            absent = _NO_ATTRIBUTE.search(str(exc))  # a dotted column this recipient lacks
            dotted = [n for n in self.fields if absent and n.endswith("." + absent[1])]
            if dotted:
                raise MissingField(self.key, dotted[0]) from None
            raise TemplateError(f"{self.key}: {exc}") from None
        except SecurityError as exc:
            raise TemplateRefused(self.key, str(exc)) from None
        except RecursionError:
            raise TemplateRefused(self.key, "the template calls itself too deeply") from None
        except MemoryError:
            raise TemplateRefused(self.key, "the template needs too much memory") from None
        except (jinja2.TemplateError, TypeError, ValueError, ArithmeticError, LookupError) as exc:
            raise TemplateError(f"{self.key}: {type(exc).__name__}: {exc}") from None
        return "".join(pieces).strip()


@dataclass(frozen=True, slots=True)
class Slots:
    """A template of text and {{ field }} slots: what `_Part.render` fills, row by row."""

    key: str
    pieces: tuple[str, ...]  # the text between slots ("" where a slot goes), folded if `fold`
    slots: tuple[tuple[int, str], ...]  # (index in pieces, field name)
    fold: bool

    def value(self, cell: str) -> str | None:
        """A cell as it goes in a slot; None when it is missing (empty or blank)."""
        if not cell or cell.isspace():
            return None
        return _fold(cell) if self.fold else cell

    def missing(self, name: str) -> str:
        """The reason a row without `name` is invalid."""
        return str(MissingField(self.key, name))

    def too_long(self, length: int) -> str:
        """The reason a row whose text is `length` characters, over MAX_TEXT, is invalid."""
        return str(_too_long(self.key, length))


def _too_long(key: str, length: int) -> TemplateError:
    return TemplateError(
        f"{key}: the text is more than {MAX_TEXT:,} characters for this recipient "
        f"({length:,} at least)"
    )


def _fold(value: str) -> str:
    """A field value folded to ASCII; short ones from a cache, long ones each time."""
    if value.isascii():
        return value
    return _fold_short(value) if len(value) <= FOLD_CACHE_CHARS else to_ascii(value)


_PlainNode = jinja2.nodes.Name | jinja2.nodes.Getattr | jinja2.nodes.TemplateData


def _plain_output(tree: jinja2.nodes.Template) -> list[_PlainNode] | None:
    """The nodes of a template that is only text and {{ field }} slots, else None.

    `{{ group.field }}` is a slot too (the dotted column), when `group` is a plain name.
    """
    if not tree.body:
        return []
    if len(tree.body) != 1 or not isinstance(tree.body[0], jinja2.nodes.Output):
        return None
    nodes = tree.body[0].nodes
    plain = [
        node
        for node in nodes
        if isinstance(node, jinja2.nodes.Name | jinja2.nodes.TemplateData)
        or (isinstance(node, jinja2.nodes.Getattr) and _column_like(node))
    ]
    return plain if len(plain) == len(nodes) else None


def _slot_name(node: jinja2.nodes.Name | jinja2.nodes.Getattr) -> str:
    """The field a plain slot reads: `name`, or the dotted `group.field`."""
    if isinstance(node, jinja2.nodes.Name):
        return node.name
    base = node.node
    assert isinstance(base, jinja2.nodes.Name)  # _plain_output lets no other Getattr through
    return f"{base.name}.{node.attr}"


class CompiledTemplates:
    """A campaign's templates, compiled once; `render` is then called for every recipient."""

    __slots__ = ("_key", "_parts", "_zalo_id")

    def __init__(
        self,
        parts: Mapping[str, Mapping[str, _Part]],
        *,
        zalo_id: str = "",
        key: str = "templates.",
    ) -> None:
        self._parts = {channel: dict(named) for channel, named in parts.items()}
        self._zalo_id = zalo_id
        self._key = key  # "templates." or "templates.en.": what messages name the templates by

    @classmethod
    def compile(cls, plan: Plan, language: str | None = None) -> CompiledTemplates:
        """Compile the template of every channel of `plan` in `language` (default: the plan's
        `language`); TemplateError names the bad one."""
        language = language or plan.language
        templates = plan.languages[language]
        flat = language == plan.language and bool(plan.templates.given())
        key = "templates." if flat else f"templates.{language}."
        parts: dict[str, dict[str, _Part]] = {}
        zalo_id = ""
        for channel in plan.channels:
            if channel == "sms" and templates.sms is not None:
                body = _Part.compile(f"{key}sms", templates.sms, fold=plan.sms_ascii)
                parts["sms"] = {"body": body}
            elif channel == "email" and templates.email is not None:
                parts["email"] = {
                    "subject": _Part.compile(f"{key}email.subject", templates.email.subject),
                    "body": _Part.compile(f"{key}email.body", templates.email.body),
                }
            elif channel == "fcm" and templates.fcm is not None:
                parts["fcm"] = {
                    "title": _Part.compile(f"{key}fcm.title", templates.fcm.title),
                    "body": _Part.compile(f"{key}fcm.body", templates.fcm.body),
                }
            elif channel == "zalo" and templates.zalo is not None:
                zalo_id = templates.zalo.template_id
                parts["zalo"] = {
                    name: _Part.compile(f"{key}zalo.data.{name}", source)
                    for name, source in templates.zalo.data.items()
                }
            else:
                raise TemplateError(f"{key}{channel}: missing")
        return cls(parts, zalo_id=zalo_id, key=key)

    @property
    def runs_code(self) -> bool:
        """Whether a message is rendered by running a template (not only filling in slots)."""
        # a channel whose templates read no field is rendered once (`static`), not per row
        return any(
            any(part.fields for part in named.values())
            and any(part.pieces is None for part in named.values())
            for named in self._parts.values()
        )

    @property
    def channels(self) -> tuple[str, ...]:
        """The channels that have a template, in the plan's order."""
        return tuple(self._parts)

    def _channel(self, channel: str) -> dict[str, _Part]:
        try:
            return self._parts[channel]
        except KeyError:
            known = ", ".join(self._parts) or "none"
            raise TemplateError(
                f"templates.{channel}: no template for this channel (templates for: {known})"
            ) from None

    def fields_used(self, channel: Channel | None = None) -> frozenset[str]:
        """The fields the channel's templates read (every channel's, without `channel`)."""
        channels = [self._channel(channel)] if channel is not None else self._parts.values()
        return frozenset(
            name for named in channels for part in named.values() for name in part.fields
        )

    def missing_columns(self, columns: Collection[str]) -> list[str]:
        """One line per template field that is not a column, for a dry run to print.

        "templates.sms uses 'appointment_time' but the audience has no such column"
        """
        problems: list[str] = []
        present = set(columns)
        for channel, named in self._parts.items():
            absent = sorted(
                name
                for name in {name for part in named.values() for name in part.fields}
                if name not in present and name.partition(".")[0] not in present
            )
            problems.extend(
                f"{self._key}{channel} uses {name!r} but the audience has no such column"
                for name in absent
            )
        return problems

    def render(self, channel: Channel | str, fields: Mapping[str, str]) -> RenderedMessage:
        """This recipient's message on `channel`; TemplateError (MissingField) if it cannot be."""
        named = self._channel(channel)
        if channel == "sms":
            return RenderedMessage("sms", body=named["body"].render(fields))
        if channel == "email":
            subject = _one_line(named["subject"].render(fields))
            return RenderedMessage("email", subject=subject, body=named["body"].render(fields))
        if channel == "fcm":
            title = _one_line(named["title"].render(fields))
            return RenderedMessage("fcm", title=title, body=named["body"].render(fields))
        data = {name: part.render(fields) for name, part in named.items()}
        return RenderedMessage("zalo", template_id=self._zalo_id, data=data)

    @property
    def sms_slots(self) -> Slots | None:
        """The SMS text as pieces and {{ field }} slots, for filling a column at a time; None
        when it is more than that (logic, filters, dotted names)."""
        part = self._channel("sms")["body"]
        if part.pieces is None or any("." in name for _, name in part.slots):
            return None
        return Slots(part.key, part.pieces, part.slots, part.fold)

    @property
    def sms_body(self) -> Callable[[Mapping[str, str]], str]:
        """The SMS text of one recipient (as `render("sms", fields).body`, with one call less:
        a planner calls it for every recipient)."""
        return self._channel("sms")["body"].render

    def static(self, channel: Channel | str) -> RenderedMessage | None:
        """The channel's message when its templates read no field (the same for everyone).

        None when they read fields, or when rendering fails: then every recipient's render
        raises, and each row is reported with the reason, as for any other template error
        (TemplateRefused is raised here: the template is refused whoever the recipient).
        """
        named = self._channel(channel)
        if any(part.fields for part in named.values()):
            return None
        try:
            return self.render(channel, {})
        except TemplateRefused:
            raise
        except TemplateError:
            return None


def _one_line(text: str) -> str:
    return _LINE_BREAKS.sub(" ", text) if "\n" in text or "\r" in text else text


class LanguageTemplates:
    """A campaign's templates in each of its languages, and which language each recipient reads.

    A recipient's `lang` cell picks the language: its code as written ('en', 'EN', 'en_US' and
    'en-US' alike) when the plan has templates in it, else its primary subtag ('en-US' -> 'en'),
    else the plan's `language`; so does an empty or missing cell.
    """

    __slots__ = ("_codes", "by_language", "default")

    def __init__(self, plan: Plan) -> None:
        self.default = plan.language
        self.by_language = {
            language: CompiledTemplates.compile(plan, language) for language in plan.languages
        }
        self._codes: dict[str, str] = {}  # cell -> language, for the few distinct cells

    @property
    def multilingual(self) -> bool:
        """Whether the plan has templates in more than one language."""
        return len(self.by_language) > 1

    def language_of(self, cell: str | None) -> str:
        """The language of a recipient whose `lang` cell is `cell`."""
        if not cell:
            return self.default
        found = self._codes.get(cell)
        if found is None:
            code = cell.strip().lower().replace("_", "-")
            primary = code.split("-")[0]
            if code in self.by_language:
                found = code
            elif primary in self.by_language:
                found = primary
            else:
                found = self.default
            if len(self._codes) < 1024:  # bounded: a file of odd cells cannot grow it
                self._codes[cell] = found
        return found

    @property
    def runs_code(self) -> bool:
        """Whether any language's messages are rendered by running a template."""
        return any(compiled.runs_code for compiled in self.by_language.values())

    def missing_columns(self, columns: Collection[str]) -> list[str]:
        """One line per template field, in any language, that is not a column."""
        problems: list[str] = []
        for compiled in self.by_language.values():
            problems.extend(p for p in compiled.missing_columns(columns) if p not in problems)
        return problems
