"""Each citizen's language: templates per language, chosen by the `lang` column, and the dry run's
recipients and SMS parts per language, counted exactly (on real Redis)."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from loa.campaigns.audience import open_audience
from loa.campaigns.plan import Plan, load_plan
from loa.campaigns.planner import Group, Planner, Report
from loa.campaigns.service import Campaigns
from loa.campaigns.templates import LanguageTemplates
from loa.errors import PlanError
from loa.settings import Settings
from loa.sms import Encoding, analyse, to_ascii

pytestmark = pytest.mark.anyio

# Vietnamese with diacritics: 73 characters, UCS-2 (70 a part alone, 67 a concatenated part)
VI = "Bão lũ: sơ tán ngay khỏi vùng trũng, giữ liên lạc với chính quyền xã nhé."
# English: 159 characters of the basic alphabet and one '[' (two septets): 161 septets
EN = (
    "Flood warning: leave low ground now, keep your phone on and follow the communes "
    "instructions. Ask the health station or call the hotline 1900 9095 any hour [24h"
)
# Ede as operators write it: breve vowels, and ƀ, a letter no GSM alphabet and no folding has
EDE = "Klei mtă: đuĕ nao ti anôk dlông, ƀuôn sang ăt djă kơ klei hriăm."
# Hmong (RPA): plain Latin letters, tones written as final consonants
HMN = "Ceeb toom: dej nyab tuaj, khiav mus rau qhov siab tam sim no."

AUDIENCE = """phone,name,lang
0912000001,A,vi
0912000002,B,
0912000003,C,en
0912000004,D,EN_us
0912000005,E,ede
0912000006,F,fr
0912000007,G,hmn
0912000008,H,Vi-VN
"""


def plan_text(*, ascii_sms: bool) -> str:
    return (
        f'name = "flood"\nlane = "emergency"\nchannels = ["sms"]\n'
        f"sms_ascii = {'true' if ascii_sms else 'false'}\n"
        f'language = "vi"\n[templates]\nsms = "{VI}"\n'
        f'[templates.en]\nsms = "{EN}"\n[templates.ede]\nsms = "{EDE}"\n'
        f'[templates.hmn]\nsms = "{HMN}"\n'
    )


@pytest.fixture
def redis_url(service_url: str) -> str:
    return service_url


@pytest.fixture
def settings(make_settings: Any) -> Settings:
    return make_settings(
        routes={"sms-r": {"adapter": "null"}}, channels={"sms": {"default": "sms-r"}}
    )


def test_the_texts_are_what_the_counts_below_assume() -> None:
    assert len(VI) == 73
    assert (analyse(VI).encoding, analyse(VI).parts) == (Encoding.UCS2, 2)
    assert (len(to_ascii(VI)), analyse(to_ascii(VI)).encoding) == (73, Encoding.GSM7)
    assert analyse(to_ascii(VI)).parts == 1
    assert (len(EN), analyse(EN).units, analyse(EN).parts) == (160, 161, 2)
    assert (analyse(EDE).encoding, analyse(EDE).parts) == (Encoding.UCS2, 1)
    folded = to_ascii(EDE)
    assert folded == "Klei mta: due nao ti anok dlong, ƀuon sang at dja ko klei hriam."
    assert analyse(folded).encoding is Encoding.UCS2, "ƀ remains: the whole message is UCS-2"
    assert to_ascii(unicodedata.normalize("NFD", EDE)) == folded, "typed decomposed, the same"
    assert (analyse(HMN).encoding, analyse(HMN).parts) == (Encoding.GSM7, 1)


@pytest.mark.parametrize(
    ("ascii_sms", "expected"),
    [
        (
            False,
            {
                "vi": {"recipients": 4, "sms_parts": 8},  # vi, empty, fr, Vi-VN: 2 parts each
                "en": {"recipients": 2, "sms_parts": 4},  # en and EN_us: 161 septets, 2 parts
                "ede": {"recipients": 1, "sms_parts": 1},
                "hmn": {"recipients": 1, "sms_parts": 1},
            },
        ),
        (
            True,
            {
                "vi": {"recipients": 4, "sms_parts": 4},  # folded: 73 GSM-7 characters
                "en": {"recipients": 2, "sms_parts": 4},
                "ede": {"recipients": 1, "sms_parts": 1},
                "hmn": {"recipients": 1, "sms_parts": 1},
            },
        ),
    ],
)
async def test_dry_run_counts_recipients_and_parts_per_language(
    settings: Settings, redis_client: Any, tmp_path: Path, ascii_sms: bool, expected: Any
) -> None:
    (tmp_path / "p.toml").write_text(plan_text(ascii_sms=ascii_sms), encoding="utf-8")
    (tmp_path / "a.csv").write_text(AUDIENCE, encoding="utf-8")
    report = await Campaigns(settings, redis_client).validate(
        tmp_path / "p.toml", tmp_path / "a.csv"
    )
    data = report.to_json()
    assert (data["total"], data["queued"], data["invalid"]) == (8, 8, 0), data["errors"]
    assert data["by_language"] == expected
    assert data["parts"] == sum(n["sms_parts"] for n in expected.values())
    encodings = {"ucs2": 4 + 1, "gsm7": 2 + 1} if not ascii_sms else {"ucs2": 1, "gsm7": 7}
    assert data["by_encoding"] == encodings
    assert report.warnings == []


async def test_no_lang_column_everyone_gets_the_default_and_a_warning(
    settings: Settings, redis_client: Any, tmp_path: Path
) -> None:
    (tmp_path / "p.toml").write_text(plan_text(ascii_sms=False), encoding="utf-8")
    (tmp_path / "a.csv").write_text("phone\n0912000001\n0912000002\n", encoding="utf-8")
    report = await Campaigns(settings, redis_client).validate(
        tmp_path / "p.toml", tmp_path / "a.csv"
    )
    assert report.to_json()["by_language"] == {"vi": {"recipients": 2, "sms_parts": 4}}
    assert [w.split(":")[0] for w in report.warnings] == [
        "templates.en", "templates.ede", "templates.hmn"
    ]


async def test_a_person_falls_back_in_their_own_language(
    make_settings: Any, redis_client: Any, tmp_path: Path
) -> None:
    settings = make_settings(
        routes={"sms-r": {"adapter": "null"}, "zalo-r": {"adapter": "null"}},
        channels={"sms": {"default": "sms-r"}, "zalo": {"default": "zalo-r"}},
    )
    (tmp_path / "p.toml").write_text(
        'name = "x"\nlane = "high"\nchannels = ["zalo", "sms"]\nlanguage = "en"\n'
        '[templates.vi]\nsms = "Chào {{ name }}"\n'
        'zalo = { template_id = "1", data = { t = "Chào" } }\n'
        '[templates.en]\nsms = "Hello {{ name }}"\n'
        'zalo = { template_id = "2", data = { t = "Hi" } }\n',
        encoding="utf-8",
    )
    people = _audience(
        tmp_path, "phone,name,zalo_id,lang\n0912000001,Hoa,z1,vi\n0912000002,Ann,z2,\n"
    )
    planner = Planner(settings, load_plan(tmp_path / "p.toml"), "c1", people, datetime.now(UTC))
    assert planner.check(open_audience(people).columns) == []
    group = Group()
    planner.take(list(open_audience(tmp_path / "a.csv")), group)
    first, second = group.messages
    assert first.extra is not None and second.extra is not None
    assert first.extra["template_id"] == "1" and first.extra["next"][0][3] == "Chào Hoa"
    assert second.extra["template_id"] == "2" and second.extra["next"][0][3] == "Hello Ann"
    assert [kind[5] for kind in group.kinds] == ["vi", "en"]


def _audience(tmp_path: Path, text: str) -> Path:
    (tmp_path / "a.csv").write_text(text, encoding="utf-8")
    return tmp_path / "a.csv"


def test_the_lang_cell_picks_the_language() -> None:
    plan = Plan.from_mapping(
        {
            "name": "x", "lane": "normal", "channels": ["sms"],
            "templates": {"sms": "xin chào", "en": {"sms": "hello"}, "pt-br": {"sms": "olá"}},
        }
    )
    chosen = LanguageTemplates(plan)
    cells = ["", None, "vi", "EN", "en_GB", " en ", "pt-BR", "pt", "fr", "e"]
    assert [chosen.language_of(c) for c in cells] == [
        "vi", "vi", "vi", "en", "en", "en", "pt-br", "vi", "vi", "vi"
    ]
    assert [plan.language_of(c) for c in cells] == [chosen.language_of(c) for c in cells]


@pytest.mark.parametrize(
    ("templates", "language", "error"),
    [
        ({"en": {"sms": "hi"}}, "vi", "templates.vi: missing; language = 'vi' needs templates"),
        ({"sms": "a", "vi": {"sms": "b"}}, "vi", "templates.vi: the plan's language has its"),
        ({"sms": "a", "en": {}}, "vi", "templates.en.sms: missing; channels lists 'sms'"),
        ({"sms": "a", "smss": "b"}, "vi", "'smss' is neither a channel"),
        ({"sms": "a", "EN": {"sms": "b"}}, "vi", 'write the code in lower case, "en"'),
        ({"sms": "a", "en": "b"}, "vi", "templates.en: Input should be a valid dictionary"),
        ({"sms": "a"}, "v1", "language: expected a language code"),
        ({"sms": "a", "en": {"sms": "{{ x"}}, "vi", "templates.en.sms: template error on line 1"),
    ],
)
def test_a_bad_language_table_is_refused_with_its_key(
    templates: dict[str, Any], language: str, error: str
) -> None:
    with pytest.raises(PlanError, match=None) as caught:
        Plan.from_mapping(
            {"name": "x", "lane": "normal", "channels": ["sms"], "language": language,
             "templates": templates}
        )
    assert error in str(caught.value)


def test_the_counts_per_language_survive_a_checkpoint() -> None:
    report = Report()
    report.count_queued(
        [("r", "sms", "viettel", "ucs2", 2, "vi")] * 3 + [("z", "zalo", "", "", 1, "en")],
        ["79"] * 4,
    )
    data = report.to_json()
    assert data["by_language"] == {
        "vi": {"recipients": 3, "sms_parts": 6},
        "en": {"recipients": 1, "sms_parts": 0},  # a Zalo message is no SMS part
    }
    assert Report.from_json(data).to_json() == data
