"""Templates: compiled once, rendered per recipient, never a blank field, no sandbox escapes."""

from __future__ import annotations

import time
import unicodedata
from typing import Any

import pytest

from loa.campaigns.plan import Plan, Templates
from loa.campaigns.sandbox import MAX_STEPS, MAX_TEXT, RENDER_CPU_SECONDS
from loa.campaigns.templates import (
    ENVIRONMENT,
    CompiledTemplates,
    MissingField,
    RenderedMessage,
    TemplateRefused,
    compile_template,
)
from loa.errors import PlanError, TemplateError
from loa.sms import to_ascii

SMS = (
    "Bộ Y tế: Chào {{ name }}, bé {{ child }} có lịch tiêm ngày {{ due_date }} "
    "lúc {{ time }} tại {{ clinic }}."
)
ROW = {
    "phone": "+84901234567",
    "name": "Nguyễn Thị Hoa",
    "child": "Minh",
    "due_date": "24/12/2026",
    "time": "08:00",
    "clinic": "Trạm y tế phường Bến Nghé",
    "region": "79",
}


def plan(sms_ascii: bool = False, **templates: Any) -> Plan:
    templates = templates or {"sms": SMS}
    return Plan.from_mapping(
        {
            "name": "test",
            "lane": "normal",
            "channels": list(templates),
            "sms_ascii": sms_ascii,
            "templates": templates,
        }
    )


def compiled(sms_ascii: bool = False, **templates: Any) -> CompiledTemplates:
    return CompiledTemplates.compile(plan(sms_ascii, **templates))


def sms(source: str, **fields: str) -> str:
    return compiled(sms=source).render("sms", fields).body


# --- rendering -----------------------------------------------------------------------------


def test_sms_in_vietnamese() -> None:
    message = compiled().render("sms", ROW)
    assert message == RenderedMessage(
        "sms",
        body="Bộ Y tế: Chào Nguyễn Thị Hoa, bé Minh có lịch tiêm ngày 24/12/2026 lúc 08:00 "
        "tại Trạm y tế phường Bến Nghé.",
    )


def test_sms_ascii_folds_text_and_fields() -> None:
    message = compiled(sms_ascii=True).render("sms", ROW)
    assert message.body == (
        "Bo Y te: Chao Nguyen Thi Hoa, be Minh co lich tiem ngay 24/12/2026 luc 08:00 "
        "tai Tram y te phuong Ben Nghe."
    )
    assert message.body.isascii()
    dong = compiled(sms_ascii=True, sms="Đường {{ street }}").render("sms", {"street": "Điện Biên"})
    assert dong.body == "Duong Dien Bien"


def test_sms_ascii_folding() -> None:  # the one folding: loa.sms.to_ascii
    assert to_ascii("Bộ Y tế Đà Nẵng") == "Bo Y te Da Nang"
    assert to_ascii(unicodedata.normalize("NFD", "Bộ Y tế Đà Nẵng")) == "Bo Y te Da Nang"
    assert to_ascii("\u201cChú ý\u201d \u2013 hết\u2026") == '"Chu y" - het...'
    assert to_ascii("plain ascii") == "plain ascii"
    # what has no ASCII form stays: the encoder decides, nothing is lost
    assert to_ascii("Hoa 🌸 Ø Bảo") == "Hoa 🌸 Ø Bao"
    assert to_ascii("Hoa\u00a0Bảo") == "Hoa Bao"
    # every Vietnamese letter with every tone
    letters = "aăâeêioôơuưy"
    tones = ["", "\u0300", "\u0301", "\u0303", "\u0309", "\u0323"]
    words = [unicodedata.normalize("NFC", c + t) for c in letters + letters.upper() for t in tones]
    folded = to_ascii(" ".join(words) + " đĐ")
    assert folded.isascii()
    assert folded.replace(" ", "") == "".join(c * 6 for c in "aaaeeiooouuy" + "AAAEEIOOOUUY") + "dD"


def test_email() -> None:
    templates = compiled(
        email={
            "subject": "Lịch tiêm của bé {{ child }}\n",
            "body": "Kính gửi {{ name }},\n\nBé {{ child }} tiêm ngày {{ due_date }}.\n",
        }
    )
    message = templates.render("email", ROW)
    assert message.channel == "email"
    assert message.subject == "Lịch tiêm của bé Minh"
    assert message.body == "Kính gửi Nguyễn Thị Hoa,\n\nBé Minh tiêm ngày 24/12/2026."
    # nothing is escaped: email is plain text
    assert templates.render("email", {**ROW, "name": "<b>Hoa & Lan</b>"}).body.startswith(
        "Kính gửi <b>Hoa & Lan</b>,"
    )
    # a subject is one line, whatever a field holds
    sneaky = templates.render("email", {**ROW, "child": "Minh\r\nBcc: x@example.com"})
    assert sneaky.subject == "Lịch tiêm của bé Minh Bcc: x@example.com"


def test_zalo() -> None:
    templates = compiled(
        zalo={
            "template_id": "248613",
            "data": {"name": "{{ name }}", "date": "{{ due_date }}", "hotline": "1900 9095"},
        }
    )
    message = templates.render("zalo", ROW)
    assert message == RenderedMessage(
        "zalo",
        template_id="248613",
        data={"name": "Nguyễn Thị Hoa", "date": "24/12/2026", "hotline": "1900 9095"},
    )


def test_fcm() -> None:
    templates = compiled(fcm={"title": "Nhắc lịch: {{ child }}", "body": "Ngày {{ due_date }}"})
    message = templates.render("fcm", ROW)
    assert (message.channel, message.title, message.body) == (
        "fcm",
        "Nhắc lịch: Minh",
        "Ngày 24/12/2026",
    )


def test_jinja_features_work() -> None:
    assert sms("{{ name|upper }}", name="Hoa") == "HOA"
    assert sms("{{ name.title() }}", name="nguyễn hoa") == "Nguyễn Hoa"
    assert sms("{% if vip is defined %}Kính gửi {% endif %}{{ name }}", name="Hoa") == "Hoa"
    assert (
        sms("{% if vip is defined %}Kính gửi {% endif %}{{ name }}", name="Hoa", vip="1")
        == "Kính gửi Hoa"
    )
    assert sms("{% set greeting = 'Chào' %}{{ greeting }} {{ name }}", name="Hoa") == "Chào Hoa"


def test_field_values_are_not_templates() -> None:
    assert sms("Chào {{ name }}", name="{{ 7 * 7 }}{% raw %}") == "Chào {{ 7 * 7 }}{% raw %}"


@pytest.mark.parametrize(
    "source",
    [
        SMS,
        "{{ name }}",
        "  {{ name }}{{ child }}\n",
        "Chào {{ name }}.\n\nBộ Y tế\n",
        "{% raw %}{{ name }}{% endraw %} {{ name }}",
        "{# ghi chú #}Chào {{ name }}",
        "Chào {{ name|upper }}",
        "{% if child is defined %}{{ child }}, {% endif %}{{ name }}",
        "tĩnh, không có trường nào",
    ],
)
def test_every_template_renders_as_jinja_does(source: str) -> None:
    expected = ENVIRONMENT.from_string(source).render(ROW).strip()
    assert compiled(sms=source).render("sms", ROW).body == expected


def test_empty_text_is_an_error() -> None:
    with pytest.raises(TemplateError, match=r"^templates\.sms: the text is empty"):
        sms("{% if vip is defined %}{{ vip }}{% endif %}")
    with pytest.raises(TemplateError, match=r"^templates\.sms: the text is empty"):
        sms("{# nothing #}")


# --- missing fields ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields", [{"name": "Hoa"}, {"name": "Hoa", "appointment_time": ""}, {"appointment_time": " "}]
)
def test_missing_field_is_an_error(fields: dict[str, str]) -> None:
    templates = compiled(sms="{{ name }} ơi, lịch hẹn lúc {{ appointment_time }}")
    with pytest.raises(MissingField) as caught:
        templates.render("sms", fields)
    error = caught.value
    assert isinstance(error, TemplateError)
    assert error.key == "templates.sms"
    assert error.field in {"name", "appointment_time"}
    if "name" in fields:
        assert error.field == "appointment_time"
        assert str(error) == (
            "templates.sms: field 'appointment_time' is missing or empty for this recipient"
        )


def test_missing_field_in_a_template_with_logic() -> None:
    with pytest.raises(MissingField, match=r"^templates\.sms: field 'name' is missing"):
        sms("{% if vip is defined %}Kính gửi {% endif %}{{ name|upper }}", name=" ")
    with pytest.raises(MissingField, match=r"^templates\.sms: field 'child' is missing"):
        sms("{% for c in name %}{% endfor %}{{ child }}", name="Hoa")


def test_missing_field_names_the_part() -> None:
    templates = compiled(email={"subject": "Bé {{ child }}", "body": "..."})
    with pytest.raises(MissingField, match=r"^templates\.email\.subject: field 'child'"):
        templates.render("email", {"name": "Hoa"})
    zalo = compiled(zalo={"template_id": "1", "data": {"date": "{{ due_date }}"}})
    with pytest.raises(MissingField, match=r"^templates\.zalo\.data\.date: field 'due_date'"):
        zalo.render("zalo", {"name": "Hoa"})


def test_other_render_errors() -> None:
    with pytest.raises(TemplateError, match=r"templates\.sms: 'str object' has no attribute 'x'"):
        sms("{{ name.x }}", name="Hoa")
    with pytest.raises(TemplateError, match=r"templates\.sms: ZeroDivisionError"):
        sms("{{ 1 / 0 }}")
    with pytest.raises(TemplateError, match=r"templates\.sms: TypeError"):
        sms("{{ name + 1 }}", name="Hoa")
    with pytest.raises(TemplateError, match="no template for this channel"):
        compiled().render("email", ROW)


# --- the sandbox ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ name.__class__.__base__.__subclasses__() }}",
        "{{ name|attr('__class__') }}",
        "{{ name.format.__globals__ }}",
        "{{ '{0.__class__}'.format(name) }}",
        "{{ name.__len__() }}",
        "{{ 'x' * 100000 }}",
        "{{ 10 ** 10000 }}",
    ],
)
def test_sandbox_escapes_are_refused(source: str) -> None:
    with pytest.raises(TemplateError, match=r"^templates\.sms: refused by the sandbox: "):
        sms(source, name="Hoa")


# Each of these built hundreds of millions of characters, or looped without end, before the
# sandbox checked what an operation would build: now each is refused before it runs.
HOSTILE = {
    "'%' width": "{{ '%0200000000d' % 1 }}{{ name }}",
    "'%' padding": "{{ '%900000000s' % 'x' }}",
    "'%' star width": "{{ '%*d' % (900000000, 1) }}",
    "'~' doubling": "{% set a = 'x' * 10000 %}" + "{% set a = a ~ a %}" * 14 + "{{ a }}",
    "'+' doubling": "{% set a = 'x' * 10000 %}" + "{% set a = a + a %}" * 14 + "{{ a }}",
    "replace filter": "{{ ('x' * 10000)|replace('x', 'x' * 10000) }}",
    "replace method": "{{ ('x' * 10000).replace('x', 'x' * 10000) }}",
    "format filter": "{{ '%(a)0900000000d'|format(a=1) }}",
    "str.format": "{{ '{:>900000000}'.format(name) }}",
    "str.format nested": "{{ '{a:{w}}'.format(a=1, w=900000000) }}",
    "center filter": "{{ name|center(900000000) }}",
    "ljust method": "{{ name.ljust(900000000) }}",
    "expandtabs": "{{ ('\t' * 10000).expandtabs(10000) }}",
    "indent filter": "{{ ('x\n' * 5000)|indent(10000) }}",
    "wordwrap filter": "{{ ('x ' * 5000)|wordwrap(1, wrapstring='y' * 10000) }}",
    "join filter": "{{ (['x' * 1000] * 10)|join('y' * 10000) }}",
    "join method": "{{ ('y' * 10000).join('x' * 10000) }}",
    "batch fill": "{{ name|batch(900000000, 'y') }}",
    "slice count": "{{ name|slice(900000000) }}",
    "sum of lists": "{{ ([[1] * 100] * 100)|sum(start=[]) }}",
    "nested lists": "{% set b = [name] %}" + "{% set b = [b,b,b,b,b,b,b,b,b,b] %}" * 10 + "{{ b }}",
    "big numbers": "{% set a = 10 ** 100 %}" + "{% set a = a * a %}" * 8 + "{{ a }}",
    "power": "{{ (10 ** 100) ** 100 }}",
    "nested loops": "{% for a in 'x' * 10000 %}{% for b in 'x' * 10000 %}{% endfor %}{% endfor %}.",
    "captured block": (
        "{% set a %}{% for i in 'x' * 10000 %}{{ 'y' * 10000 }}{% endfor %}{% endset %}{{ a }}"
    ),
    "macro output": (
        "{% macro m() %}{% for i in 'x' * 20 %}{{ 'y' * 10000 }}{% endfor %}{% endmacro %}{{ m() }}"
    ),
    "recursion": "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
}


@pytest.mark.parametrize("source", HOSTILE.values(), ids=HOSTILE.keys())
def test_templates_that_would_build_too_much_are_refused(source: str) -> None:
    with pytest.raises(TemplateRefused, match=r"^templates\.sms: refused by the sandbox: ") as err:
        sms(source, name="Hoa")
    assert isinstance(err.value, TemplateError)
    assert len(str(err.value)) < 200, "one line that says what"


def test_the_bounds_leave_ordinary_templates_alone() -> None:
    assert sms("{{ '%05d'|format(42) }} {{ '%s ơi' % name }}", name="Hoa") == "00042 Hoa ơi"
    assert sms("[{{ '{:>5}|{}'.format(name, 1) }}]", name="Hoa") == "[  Hoa|1]"
    assert sms("{{ [name, 'Lan']|join(', ') }}; {{ name ~ '!' }}", name="Hoa") == "Hoa, Lan; Hoa!"
    assert sms("{{ name|replace('o', 'ô')|center(7) }}.", name="Hoa") == "Hôa  ."
    assert sms("{% for c in name %}{{ loop.index }}{{ c }}{% endfor %}", name="Hoa") == "1H2o3a"
    assert sms("{{ {'a': 1}|dictsort }} {{ (1, 2) }} {{ [1, 2]|sum }}") == "[('a', 1)] (1, 2) 3"
    assert sms("{% set t %}Bé {{ name }}{% endset %}{{ t|upper }}", name="Hoa") == "BÉ HOA"
    assert sms("{{ ('x' * 9000) ~ ('y' * 9000) }}")[-2:] == "yy"
    assert sms("{% for a in 'x' * 300 %}{% for b in 'x' * 300 %}{% endfor %}{% endfor %}.") == "."


def test_steps_per_message_are_bounded_not_per_campaign() -> None:
    loops = "{% for a in name %}{% for b in 'x' * 1000 %}{% endfor %}{% endfor %}{{ name }}"
    templates = compiled(sms=loops)
    fits = "x" * (MAX_STEPS // 1001 - 1)
    for _ in range(3):  # the budget starts afresh for every message
        assert templates.render("sms", {"name": fits}).body == fits
    with pytest.raises(TemplateRefused, match=f"more than {MAX_STEPS:,} steps"):
        templates.render("sms", {"name": fits + "x" * 10})


def test_cpu_time_per_message_is_bounded() -> None:
    # 30,000 steps (within MAX_STEPS), each upper-casing 90,000 characters: seconds of work
    heavy = (
        "{% set b = 'y' * 10000 %}{% set big = b ~ b ~ b ~ b ~ b ~ b ~ b ~ b ~ b %}"
        "{% for i in 'x' * 3000 %}{% for j in 'x' * 9 %}{% set c = big|upper %}{% endfor %}"
        "{% endfor %}{{ name }}"
    )
    with pytest.raises(TemplateRefused, match=f"more than {RENDER_CPU_SECONDS * 1000:g} ms"):
        sms(heavy, name="Hoa")


def test_long_text_is_an_error_for_that_recipient_not_a_refusal() -> None:
    for source in ("{{ name }}{{ name }}", "{{ name|upper }}{{ name }}"):
        templates = compiled(sms=source)
        with pytest.raises(TemplateError, match=f"more than {MAX_TEXT:,} characters") as caught:
            templates.render("sms", {"name": "x" * (MAX_TEXT // 2 + 1)})
        assert not isinstance(caught.value, TemplateRefused)
    with pytest.raises(TemplateError, match="field 'name' is 100,001 characters long") as caught:
        compiled(sms="{{ name|upper }}").render("sms", {"name": "x" * (MAX_TEXT + 1)})
    assert not isinstance(caught.value, TemplateRefused)


def test_no_globals() -> None:
    # a name is always a field: a missing column never renders a global like `range` or `cycler`
    for name in ("cycler", "range", "lipsum", "dict", "namespace", "joiner"):
        with pytest.raises(MissingField, match=f"field '{name}'"):
            sms(f"{{{{ {name} }}}}")
        assert sms(f"{{{{ {name} }}}}", **{name: "Hoa"}) == "Hoa"


# --- compiling -----------------------------------------------------------------------------


def test_compile_errors_name_the_template_and_line() -> None:
    with pytest.raises(TemplateError, match=r"^templates\.sms: line 2: unexpected '}'"):
        compile_template("Chào\n{{ name }", "templates.sms")
    broken = Plan.model_construct(
        name="x",
        lane=plan().lane,
        channels=["sms", "fcm"],
        sms_ascii=False,
        templates=Templates.model_construct(sms="ok", fcm=None),
    )
    with pytest.raises(TemplateError, match=r"templates\.fcm: missing"):
        CompiledTemplates.compile(broken)
    unvalidated = Plan.model_construct(
        name="x",
        lane=plan().lane,
        channels=["sms"],
        sms_ascii=False,
        templates=Templates.model_construct(sms="{% if x %}never closed"),
    )
    with pytest.raises(TemplateError, match=r"^templates\.sms: line 1: Unexpected end"):
        CompiledTemplates.compile(unvalidated)


def test_plan_validation_refuses_bad_templates() -> None:
    with pytest.raises(PlanError, match=r"templates\.email\.body: template error on line 3"):
        plan(email={"subject": "ok", "body": "a\nb\n{{ x"})


def test_fields_used() -> None:
    templates = compiled(
        sms="{% set greeting = 'Chào' %}{{ greeting }} {{ name }}, {% for c in children %}{{ c }}"
        "{% endfor %}{% if vip is defined %}{{ vip }}{% endif %}",
        email={"subject": "{{ child }}", "body": "{{ name }} {{ clinic }}"},
        zalo={"template_id": "1", "data": {"a": "{{ due_date }}", "b": "literal"}},
        fcm={"title": "{{ title_field }}", "body": "static"},
    )
    assert templates.channels == ("sms", "email", "zalo", "fcm")
    assert templates.fields_used("sms") == {"name", "children", "vip"}
    assert templates.fields_used("email") == {"child", "name", "clinic"}
    assert templates.fields_used("zalo") == {"due_date"}
    assert templates.fields_used("fcm") == {"title_field"}
    assert templates.fields_used() == {
        "name",
        "children",
        "vip",
        "child",
        "clinic",
        "due_date",
        "title_field",
    }
    assert templates.missing_columns(["name", "children", "vip", "child", "clinic"]) == [
        "templates.zalo uses 'due_date' but the audience has no such column",
        "templates.fcm uses 'title_field' but the audience has no such column",
    ]
    with pytest.raises(TemplateError, match="no template for this channel"):
        compiled().fields_used("zalo")


def test_render_speed() -> None:
    templates = compiled(sms_ascii=True)
    templates.render("sms", ROW)
    count = 20_000
    started = time.perf_counter()
    for _ in range(count):
        templates.render("sms", ROW)
    per_render = (time.perf_counter() - started) / count
    assert per_render < 200e-6, f"{per_render * 1e6:.1f} µs per render"


APPOINTMENT = {
    "phone": "+84912345678",
    "appointment.site_name": "Trạm Y tế Phường Bến Nghé",
    "appointment.date": "2026-12-10",
    "appointment.start": "08:00",
}


@pytest.mark.parametrize(
    "sms",
    [
        # plain text and slots: the fast path
        "Hẹn tiêm: {{ appointment.date }} {{ appointment.start }}, {{ appointment.site_name }}",
        # a filter makes it a full template run
        "Hẹn tiêm: {{ appointment.date }} {{ appointment.start | trim }}, "
        "{{ appointment.site_name }}",
    ],
)
def test_dotted_fields_read_dotted_columns(sms: str) -> None:
    templates = compiled(sms=sms, sms_ascii=True)
    assert templates.fields_used("sms") == {
        "appointment.date",
        "appointment.start",
        "appointment.site_name",
    }
    body = templates.render("sms", APPOINTMENT).body
    assert body == "Hen tiem: 2026-12-10 08:00, Tram Y te Phuong Ben Nghe"
    assert templates.missing_columns(["phone", "appointment.date", "appointment.start"]) == [
        "templates.sms uses 'appointment.site_name' but the audience has no such column"
    ]
    for empty in ("", "  "):
        with pytest.raises(MissingField, match=r"'appointment\.start' is missing") as caught:
            templates.render("sms", {**APPOINTMENT, "appointment.start": empty})
        assert caught.value.field == "appointment.start"


def test_dotted_fields_can_be_optional_and_never_reach_python_attributes() -> None:
    templates = compiled(
        sms="{{ appointment.date }}{% if appointment.note is defined %} ({{ appointment.note }})"
        "{% endif %}"
    )
    assert templates.fields_used("sms") == {"appointment.date", "appointment.note"}
    assert templates.render("sms", APPOINTMENT).body == "2026-12-10"
    with_note = {**APPOINTMENT, "appointment.note": "mang CCCD"}
    assert templates.render("sms", with_note).body == "2026-12-10 (mang CCCD)"
    sneaky = compiled(sms="{{ appointment.__class__ }}{{ appointment.date }}")
    with pytest.raises(TemplateError):
        sneaky.render("sms", {**APPOINTMENT, "appointment.__class__": "x"} | {"x": "y"})
