"""Audience files: the same rows from CSV, JSONL and Parquet, every bad row reported with its
line number while the good ones go through, whole-file refusals, and exact resumption."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from loa.campaigns.audience import (
    CHUNK_BYTES,
    MAX_FIELD,
    BadRow,
    Item,
    Row,
    open_audience,
)
from loa.errors import AudienceError

SAMPLE: list[dict[str, str]] = [
    {"phone": "0912345678", "name": "Nguyễn Văn An", "region": "HN"},
    {"phone": "+84987654321", "name": "Trần Thị Bình", "region": ""},
    {"phone": "0901000001", "name": "Lê, Cường", "region": "HCM"},
    {"phone": "0901000002", "name": 'Phạm "Dũng"', "region": "ĐN"},
]


def read(path: Path, **options: Any) -> list[Item]:
    return list(open_audience(path, **options))


def good(items: list[Item]) -> list[Row]:
    return [item for item in items if isinstance(item, Row)]


def bad(items: list[Item]) -> list[BadRow]:
    return [item for item in items if isinstance(item, BadRow)]


def write_csv(path: Path, rows: list[dict[str, str]], **dialect: Any) -> Path:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]), **dialect)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_lines(path: Path, *lines: str | bytes, end: bytes = b"\n") -> Path:
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + end for x in lines))
    return path


# --- one sample, three formats ------------------------------------------------------------


def test_each_format_reads_the_same_sample_to_the_same_rows(tmp_path: Path) -> None:
    csv_path = write_csv(tmp_path / "a.csv", SAMPLE)
    jsonl_path = tmp_path / "a.jsonl"
    jsonl_path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in SAMPLE))
    parquet_path = tmp_path / "a.parquet"
    pq.write_table(pa.Table.from_pylist(SAMPLE), parquet_path)

    for path, first_line in ((csv_path, 2), (jsonl_path, 1), (parquet_path, 2)):
        audience = open_audience(path)
        assert audience.columns == ["phone", "name", "region"]
        items = list(audience)
        assert [item.fields for item in good(items)] == SAMPLE, path
        assert [item.line for item in items] == [first_line + n for n in range(len(SAMPLE))]
        assert audience.format == path.suffix[1:]


def test_columns_are_lower_cased_and_stripped(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "a.csv", " Phone , NAME", "0912,An")
    audience = open_audience(path)
    assert audience.columns == ["phone", "name"]
    assert [row.fields for row in good(list(audience))] == [{"phone": "0912", "name": "An"}]


def test_format_is_given_when_the_extension_says_nothing(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "export.dat", "phone", "0912")
    with pytest.raises(AudienceError, match=r"cannot tell the format .*'\.dat'"):
        open_audience(path)
    assert [row.fields for row in good(read(path, format="csv"))] == [{"phone": "0912"}]
    txt = write_lines(tmp_path / "list.txt", "phone", "0913")
    assert open_audience(txt).format == "csv"
    ndjson = write_lines(tmp_path / "list.ndjson", '{"phone": "0914"}')
    assert open_audience(ndjson).format == "jsonl"


# --- CSV dialects --------------------------------------------------------------------------


def test_a_utf8_bom_is_not_part_of_the_first_column(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbfphone,name\r\n0912,An\r\n")
    audience = open_audience(path)
    assert audience.columns == ["phone", "name"]
    assert [row.fields for row in good(list(audience))] == [{"phone": "0912", "name": "An"}]


def test_semicolons_are_sniffed_from_the_header(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "semi.csv", "phone;name;note", "0912;Lê, Cường;a,b,c")
    audience = open_audience(path)
    assert audience.columns == ["phone", "name", "note"]
    assert good(list(audience))[0].fields == {
        "phone": "0912",
        "name": "Lê, Cường",
        "note": "a,b,c",
    }


def test_tabs_are_sniffed_from_the_header(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "tabs.txt", "phone\tname", "0912\tAn, B")
    assert good(read(path))[0].fields == {"phone": "0912", "name": "An, B"}


def test_crlf_line_ends_are_not_part_of_the_values(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "crlf.csv", "phone,name", "0912,An", '0913,"B\r\nC"', end=b"\r\n")
    rows = good(read(path))
    assert [row.fields["name"] for row in rows] == ["An", "B\nC"]
    assert [(row.line, row.last_line) for row in rows] == [(2, 2), (3, 4)]


def test_quoted_commas_quotes_and_newlines_keep_their_line_numbers(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "quoted.csv",
        "phone,name,address",
        '0911,"Nguyễn, An","12 Lê Lợi',
        'Quận 1"',
        "0912,Bình,Huế",
        '0913,"Cường ""Út""","tầng 3',
        "",
        'hẻm 5"',
        "",
        "0914,Dũng,Vinh",
    )
    items = read(path)
    assert bad(items) == []
    assert [(row.line, row.last_line) for row in good(items)] == [(2, 3), (4, 4), (5, 7), (9, 9)]
    assert [row.fields for row in good(items)] == [
        {"phone": "0911", "name": "Nguyễn, An", "address": "12 Lê Lợi\nQuận 1"},
        {"phone": "0912", "name": "Bình", "address": "Huế"},
        {"phone": "0913", "name": 'Cường "Út"', "address": "tầng 3\n\nhẻm 5"},
        {"phone": "0914", "name": "Dũng", "address": "Vinh"},
    ]


def test_blank_lines_are_skipped_but_counted(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "blank.csv", "phone", "", "0912", "", "", "0913")
    assert [(row.line, row.fields["phone"]) for row in good(read(path))] == [
        (3, "0912"),
        (6, "0913"),
    ]


def test_a_last_line_without_newline_is_read(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes(b"phone,name\n0912,An\n0913,Binh")
    items = read(path)
    assert [row.fields["name"] for row in good(items)] == ["An", "Binh"]
    assert items[-1].offset == path.stat().st_size


# --- bad rows ------------------------------------------------------------------------------


def test_short_and_long_rows_are_bad_rows_and_the_rest_goes_through(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "width.csv",
        "phone,name,region",
        "0911,An,HN",
        "0912,Bình",
        "0913,Cường,HCM,extra,more",
        '0914,"Dũng, D"',
        "0915,Em,Huế",
    )
    items = read(path)
    assert [(item.line, item.reason) for item in bad(items)] == [
        (3, "expected 3 fields, found 2"),
        (4, "expected 3 fields, found 5"),
        (5, "expected 3 fields, found 2"),
    ]
    assert [(row.line, row.fields["phone"]) for row in good(items)] == [(2, "0911"), (6, "0915")]


def test_ten_thousand_malformed_rows_among_good_ones(tmp_path: Path) -> None:
    """Every bad row is reported at its line, every good row is delivered, across chunks."""
    lines = ["phone,name,region"]
    expected_good: dict[int, dict[str, str]] = {}
    expected_bad: set[int] = set()
    malformed = ["{n},only two", "{n},a,b,c,d", '{n},"a"b,c', '{n},"x"y"z,c', "{n}"]
    n = 0
    while len(expected_bad) < 10_000:
        line = len(lines) + 1
        if n % 3 == 1:
            lines.append(malformed[n % len(malformed)].format(n=n))
            expected_bad.add(line)
        elif n % 7 == 0:  # some good rows span two lines, a few of them across chunk ends
            lines.append(f'09{n:08d},"Tên {n}","phường {n}')
            lines.append(f'quận {n % 12}"')
            expected_good[line] = {
                "phone": f"09{n:08d}",
                "name": f"Tên {n}",
                "region": f"phường {n}\nquận {n % 12}",
            }
        else:
            lines.append(f"09{n:08d},Tên {n},HN{n % 63}")
            expected_good[line] = {
                "phone": f"09{n:08d}",
                "name": f"Tên {n}",
                "region": f"HN{n % 63}",
            }
        n += 1
    path = write_lines(tmp_path / "mixed.csv", *lines)
    assert path.stat().st_size > 2 * CHUNK_BYTES

    items = read(path)
    assert {item.line for item in bad(items)} == expected_bad
    assert {row.line: row.fields for row in good(items)} == expected_good
    assert len(items) == len(expected_bad) + len(expected_good)
    assert [item.line for item in items] == sorted(item.line for item in items)


def test_a_line_that_is_not_utf8_is_a_bad_row(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "latin1.csv", "phone,name", "0911,An", "0912,Tr\xe2n".encode("latin-1"), "0913,C"
    )
    items = read(path)
    assert [(item.line, item.reason) for item in bad(items)] == [
        (3, "not UTF-8 text at byte 8 of the line")
    ]
    assert [row.fields["phone"] for row in good(items)] == ["0911", "0913"]


def test_a_line_with_nul_bytes_is_a_bad_row(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "nul.csv", "phone,name", "0911,A\x00n", "0912,Bình", '0913,"C\x00"'
    )
    items = read(path)
    assert [(item.line, item.reason) for item in bad(items)] == [
        (2, "NUL byte at byte 7 of the line"),
        (4, "NUL byte at byte 8 of the line"),
    ]
    assert [row.fields for row in good(items)] == [{"phone": "0912", "name": "Bình"}]


def test_a_quoted_field_running_into_a_line_that_is_not_text(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "into.csv", "phone,name", '0911,"An', b"\xff\xfe", "0912,B", end=b"\n"
    )
    items = read(path)
    assert [(item.line, item.reason) for item in bad(items)] == [
        (2, "quoted field runs into line 3, which is not text"),
        (3, "not UTF-8 text at byte 1 of the line"),
    ]
    assert [row.line for row in good(items)] == [4]


def test_a_ten_megabyte_cell_is_a_bad_row_and_reading_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "huge.csv"
    with path.open("wb") as file:
        file.write(b"phone,name\n0911,An\n0912,")
        file.write(b"x" * 10_000_000)
        file.write(b'\n0913,"')
        file.write(b"y" * 10_000_000)
        file.write(b'"\n0914,Dung')
    items = read(path)
    assert [item.line for item in bad(items)] == [3, 4]
    for report in bad(items):
        assert f"a field longer than {MAX_FIELD} characters" in report.reason
    assert [(row.line, row.fields) for row in good(items)] == [
        (2, {"phone": "0911", "name": "An"}),
        (5, {"phone": "0914", "name": "Dung"}),
    ]
    assert read(path, resume=items[1].checkpoint) == items[2:]
    assert read(path, skip_rows=2) == items[2:]
    assert read(path, skip_rows=3) == items[3:]


def test_rows_spanning_lines_across_chunk_ends(tmp_path: Path) -> None:
    pad = "0900000000," + "x" * 11  # puts the first chunk's end inside a record
    record = '09{:08d},"dòng một\ndòng hai {:06d}"'
    lines = [pad] + [record.format(n, n) for n in range(30_000)]
    path = write_lines(tmp_path / "multi.csv", "phone,note", *lines)
    data = path.read_bytes()
    start = data.find(b"\n") + 1
    cut = data.rfind(b"\n", start, start + CHUNK_BYTES) + 1  # where the first chunk's lines end
    assert not data[cut:].startswith(b"09"), "this test means little unless a record is cut"

    items = read(path)
    assert bad(items) == []
    assert [(row.line, row.last_line) for row in good(items)] == [(2, 2)] + [
        (3 + 2 * n, 4 + 2 * n) for n in range(30_000)
    ]
    assert [row.fields["note"] for row in good(items)][1:] == [
        f"dòng một\ndòng hai {n:06d}" for n in range(30_000)
    ]


def test_fields_over_the_limit_are_bad_rows(tmp_path: Path) -> None:
    limit = "x" * MAX_FIELD
    path = write_lines(
        tmp_path / "long.csv",
        "phone,name",
        f"0911,{limit}",
        f"0912,{limit}x",
        f'0913,"{limit}"',
        f'0914,"{limit}\n{"y" * 70_000}"',
        "0915,End",
    )
    items = read(path)
    assert [(item.line, item.reason) for item in bad(items)] == [
        (3, f"field 'name' longer than {MAX_FIELD} characters"),
        (5, f"field longer than {MAX_FIELD} characters (a quoted field never closed?)"),
        (6, "expected 2 fields, found 1"),  # line 5's second line, read again on its own
    ]
    assert [(row.line, len(row.fields["name"])) for row in good(items)] == [
        (2, MAX_FIELD),
        (4, MAX_FIELD),
        (7, 3),
    ]


def test_a_stray_opening_quote_costs_one_row_not_the_rest(tmp_path: Path) -> None:
    lines = ["phone,name", '0911,"Nguyễn An'] + [f"09{n:08d},Tên {n}" for n in range(50)]
    never_closed = read(write_lines(tmp_path / "open.csv", *lines))
    assert [(item.line, item.reason) for item in bad(never_closed)] == [
        (2, "quoted field never closed")
    ]
    assert [row.line for row in good(never_closed)] == list(range(3, 53))

    lines[30] = '0930,"Trần" B'  # a later quote closes the stray one, and text follows it
    closed_later = read(write_lines(tmp_path / "closed.csv", *lines))
    assert [item.line for item in bad(closed_later)] == [2, 31]
    assert "closing quote" in bad(closed_later)[0].reason
    assert len(good(closed_later)) == 49


def test_a_stray_quote_in_a_big_file_costs_one_row(tmp_path: Path) -> None:
    lines = ["phone,name", '0911,"Nguyễn An'] + [f"09{n:08d},Tên {n}" for n in range(200_000)]
    items = read(write_lines(tmp_path / "open.csv", *lines))
    assert [item.line for item in bad(items)] == [2]
    assert "never closed" in bad(items)[0].reason
    assert len(good(items)) == 200_000


def test_formula_like_cells_are_kept_verbatim(tmp_path: Path) -> None:
    formulas = ['=HYPERLINK("http://evil.example","click")', "+84912345678", "-1+2", "@SUM(A1)"]
    path = write_csv(tmp_path / "f.csv", [{"phone": "0912", "note": value} for value in formulas])
    assert [row.fields["note"] for row in good(read(path))] == formulas


# --- whole-file problems -------------------------------------------------------------------


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    for name in ("a.csv", "a.jsonl", "a.parquet"):
        (tmp_path / name).write_bytes(b"")
        with pytest.raises(AudienceError, match="is empty"):
            open_audience(tmp_path / name)


def test_a_header_only_file_has_no_rows(tmp_path: Path) -> None:
    for body in (b"phone,name\n", b"phone,name", b"\xef\xbb\xbfphone;name\r\n\r\n"):
        path = tmp_path / "h.csv"
        path.write_bytes(body)
        audience = open_audience(path)
        assert audience.columns == ["phone", "name"]
        assert list(audience) == []
    empty = tmp_path / "h.parquet"
    pq.write_table(pa.table({"phone": pa.array([], pa.string())}), empty)
    assert list(open_audience(empty)) == []


def test_a_missing_phone_column_names_the_columns(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "a.csv", "name,email", "An,a@example.vn")
    with pytest.raises(AudienceError, match=r"no 'phone' column; columns are: name, email$"):
        open_audience(path)
    assert open_audience(path, required=("email",)).columns == ["name", "email"]
    assert open_audience(path, required=()).columns == ["name", "email"]
    with pytest.raises(AudienceError, match=r"no 'phone', 'zalo' columns"):
        open_audience(path, required=("Phone", "zalo", "name"))
    jsonl = write_lines(tmp_path / "a.jsonl", '{"name": "An"}')
    with pytest.raises(AudienceError, match=r"no 'phone' column; columns are: name"):
        open_audience(jsonl)
    parquet = tmp_path / "a.parquet"
    pq.write_table(pa.table({"name": ["An"]}), parquet)
    with pytest.raises(AudienceError, match=r"no 'phone' column; columns are: name"):
        open_audience(parquet)


def test_duplicate_and_blank_columns_are_refused(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "dup.csv", "Phone,name, phone ", "1,2,3")
    with pytest.raises(AudienceError, match=r"duplicate column 'phone' \(columns 1 and 3\)"):
        open_audience(path)
    blank = write_lines(tmp_path / "blank.csv", "phone,,name", "1,2,3")
    with pytest.raises(AudienceError, match="column 2 has no name"):
        open_audience(blank)
    parquet = tmp_path / "dup.parquet"
    pq.write_table(pa.table({"phone": ["1"], "PHONE": ["2"]}), parquet)
    with pytest.raises(AudienceError, match="duplicate column 'phone'"):
        open_audience(parquet)


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (PNG, "the file is a PNG image"),
        (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xcb\x48\xcd", "gzip-compressed"),
        (b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00", "ZIP archive"),
        ("phone,name\n".encode("utf-16"), "UTF-16"),
        (b"phone,na\x00me\n0912,x\n", "NUL byte at byte 9 of line 1"),
        (b"phone,t\xean\n0912,x\n", "line 1 is not UTF-8 text at byte 8"),
    ],
)
def test_binary_files_are_refused_with_a_reason(tmp_path: Path, body: bytes, reason: str) -> None:
    for name in ("upload.csv", "upload.jsonl"):
        path = tmp_path / name
        path.write_bytes(body)
        with pytest.raises(AudienceError) as raised:
            open_audience(path)
        assert reason in str(raised.value)
        assert str(path) in str(raised.value)


def test_a_header_that_starts_like_a_magic_number_is_still_text(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "a.csv", "PAR1,phone", "x,0912")
    assert good(read(path))[0].fields == {"par1": "x", "phone": "0912"}


def test_a_directory_and_a_missing_file_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "audience.csv"
    folder.mkdir()
    with pytest.raises(AudienceError, match="is a directory"):
        open_audience(folder)
    with pytest.raises(AudienceError, match=r"nothing\.csv: no such file"):
        open_audience(tmp_path / "nothing.csv")


def test_a_parquet_file_that_cannot_be_opened_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not really parquet")
    with pytest.raises(AudienceError, match="not a Parquet file that can be read"):
        open_audience(path)
    csv_named = write_lines(tmp_path / "not.parquet", "phone", "0912")
    with pytest.raises(AudienceError, match="not a Parquet file"):
        open_audience(csv_named)


# --- JSONL ---------------------------------------------------------------------------------


def test_jsonl_arrays_nested_values_and_garbage_are_bad_rows(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "mixed.jsonl",
        '{"phone": "0911", "name": "An", "age": 30}',
        "[1, 2, 3]",
        '{"phone": "0912", "name": {"first": "B"}, "age": 1}',
        '{"phone": ["0913"], "name": "C", "age": 2}',
        "not json at all",
        "",
        "   ",
        '{"phone": "0914", "name": "D", "age": 4',
        '"just a string"',
        "null",
        b'{"phone": "0915", "name": "\xff"}',
        '{"Phone": 84912345678, "NAME": null, "age": 3.0, "extra": [1]}',
        '{"phone": "0916", "name": true, "age": 1.5}',
        '{"phone": "0917"}',
        '{"phone": "0918", "PHONE": "0919"}',
    )
    items = read(path)
    assert [(item.line, item.reason) for item in bad(items)] == [
        (2, "not a JSON object but an array"),
        (3, "field 'name' is not a string or number"),
        (4, "field 'phone' is not a string or number"),
        (5, bad(items)[3].reason),
        (8, bad(items)[4].reason),
        (9, "not a JSON object but a string"),
        (10, "not a JSON object but true, false or null"),
        (11, "not UTF-8 text at byte 28 of the line"),
        (15, "duplicate key 'phone'"),
    ]
    assert bad(items)[3].reason.startswith("not valid JSON: ")
    assert bad(items)[4].reason.startswith("not valid JSON: ")
    assert [(row.line, row.fields) for row in good(items)] == [
        (1, {"phone": "0911", "name": "An", "age": "30"}),
        (12, {"phone": "84912345678", "name": "", "age": "3"}),
        (13, {"phone": "0916", "name": "true", "age": "1.5"}),
        (14, {"phone": "0917", "name": "", "age": ""}),
    ]


def test_jsonl_columns_come_from_the_first_object(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "late.jsonl", "garbage", "", '{"phone": "0911", "Tên": "An"}')
    audience = open_audience(path)
    assert audience.columns == ["phone", "tên"]
    items = list(audience)
    assert [item.line for item in bad(items)] == [1]
    assert [row.fields for row in good(items)] == [{"phone": "0911", "tên": "An"}]
    garbage = write_lines(tmp_path / "garbage.jsonl", *["nope"] * 150, '{"phone": "1"}')
    with pytest.raises(AudienceError, match="no JSON object in its first 100 non-blank lines"):
        open_audience(garbage)


def test_jsonl_with_one_column(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "one.jsonl", '{"phone": "1"}', '{"phone": 2}', '{"phone": "3", "x": 1}'
    )
    assert [row.fields for row in good(read(path))] == [
        {"phone": "1"},
        {"phone": "2"},
        {"phone": "3"},
    ]


def test_jsonl_with_a_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"phone": "0911"}\r\n{"phone": "0912"}\r\n')
    assert [(row.line, row.fields["phone"]) for row in good(read(path))] == [
        (1, "0911"),
        (2, "0912"),
    ]


def test_jsonl_values_over_the_limit_are_bad_rows(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "long.jsonl",
        orjson.dumps({"phone": "0911", "name": "x" * MAX_FIELD}),
        orjson.dumps({"phone": "0912", "name": "x" * (MAX_FIELD + 1)}),
    )
    items = read(path)
    assert [(item.line, item.reason) for item in bad(items)] == [
        (2, f"field 'name' longer than {MAX_FIELD} characters")
    ]
    assert [row.line for row in good(items)] == [1]


# --- Parquet -------------------------------------------------------------------------------


def test_parquet_nulls_numbers_and_other_types_become_text(tmp_path: Path) -> None:
    path = tmp_path / "typed.parquet"
    table = pa.table(
        {
            "Phone": pa.array(["0911", None, "0913"]),
            "age": pa.array([30, None, -1], pa.int64()),
            "msisdn": pa.array([84912345678.0, 1.5, None], pa.float64()),
            "ok": pa.array([True, False, None]),
            "region": pa.array(["HN", "HN", None]).dictionary_encode(),
            "raw": pa.array([b"abc", None, b"d"], pa.binary()),
        }
    )
    pq.write_table(table, path)
    audience = open_audience(path)
    assert audience.columns == ["phone", "age", "msisdn", "ok", "region", "raw"]
    rows = good(list(audience))
    assert [row.line for row in rows] == [2, 3, 4]
    assert [row.fields for row in rows] == [
        dict(phone="0911", age="30", msisdn="84912345678", ok="true", region="HN", raw="abc"),
        dict(phone="", age="", msisdn="1.5", ok="false", region="HN", raw=""),
        dict(phone="0913", age="-1", msisdn="", ok="", region="", raw="d"),
    ]


def test_parquet_values_that_cannot_be_text_are_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "nested.parquet"
    table = pa.table(
        {
            "phone": pa.array(["0911", "0912", "0913", "0914"]),
            "tags": pa.array([None, ["a"], None, None], pa.list_(pa.string())),
            "raw": pa.array([b"ok", b"ok", b"\xff", None], pa.binary()),
            "note": pa.array(["", "", "", "n" * (MAX_FIELD + 1)]),
        }
    )
    pq.write_table(table, path)
    items = read(path)
    assert [(item.line, item.reason) for item in bad(items)] == [
        (3, "field 'tags' is not a string or number"),
        (4, "field 'raw' is not UTF-8 text"),
        (5, f"field 'note' longer than {MAX_FIELD} characters"),
    ]
    assert [row.fields for row in good(items)] == [
        {"phone": "0911", "tags": "", "raw": "ok", "note": ""}
    ]


# --- resuming and skipping -----------------------------------------------------------------


def tricky_rows(count: int) -> list[str]:
    """CSV lines with every kind of row: good, multi-line, bad, blank, not text."""
    lines = ["phone,name,region"]
    for n in range(count):
        kind = n % 11
        if kind == 3:
            lines.append(f'09{n:08d},"Tên, {n}","a\nb"')
        elif kind == 5:
            lines.append(f"09{n:08d},short")
        elif kind == 7:
            lines.append("")
        elif kind == 9:
            lines.append(f'09{n:08d},"bad"quote,x')
        else:
            lines.append(f"09{n:08d},Tên {n},HN")
    return lines


def sample_files(tmp_path: Path, count: int) -> list[Path]:
    lines = tricky_rows(count)
    text = "\n".join(lines) + "\n"
    csv_path = tmp_path / "r.csv"
    csv_path.write_bytes(text.encode().replace(b"short\n", b"sh\xffrt\n", 5))
    rows = [
        dict(zip(("phone", "name", "region"), line, strict=False))
        for line in csv.reader(io.StringIO(text))
    ]
    jsonl_path = tmp_path / "r.jsonl"
    jsonl_path.write_bytes(
        b"".join(
            (orjson.dumps(row) if row else b"") + b"\n" if n % 13 else b"[garbage]\n"
            for n, row in enumerate(rows[1:])
        )
    )
    parquet_path = tmp_path / "r.parquet"
    table = pa.Table.from_pylist(rows[1:])
    tags = [["a", "b"] if n % 17 == 5 else None for n in range(table.num_rows)]
    table = table.append_column("tags", pa.array(tags, pa.list_(pa.string())))
    pq.write_table(table, parquet_path, row_group_size=1000)
    return [csv_path, jsonl_path, parquet_path]


def test_resuming_from_any_checkpoint_gives_the_rest_exactly(tmp_path: Path) -> None:
    for path in sample_files(tmp_path, 120):
        everything = read(path)
        assert bad(everything) and good(everything), path
        for n, item in enumerate(everything):
            assert read(path, resume=item.checkpoint) == everything[n + 1 :], (path, n)


def test_reading_half_then_resuming_equals_reading_all(tmp_path: Path) -> None:
    for path in sample_files(tmp_path, 60_000):
        everything = read(path)
        assert len(everything) > 40_000
        half = everything[: len(everything) // 2]
        rest = read(path, resume=half[-1].checkpoint)
        assert half + rest == everything, path
        assert rest[0].line > half[-1].line


def test_skip_rows_skips_items(tmp_path: Path) -> None:
    for path in sample_files(tmp_path, 25_000):
        everything = read(path)
        for skip in (0, 1, 7, 999, 1000, 1001, 8192, 12_345, len(everything), len(everything) + 5):
            assert read(path, skip_rows=skip) == everything[skip:], (path, skip)
        middle = everything[100]
        assert read(path, resume=middle.checkpoint, skip_rows=10) == everything[111:]


def test_a_resume_point_must_be_a_checkpoint(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "a.csv", "phone,name", "0911,An", "0912,Bình")
    with pytest.raises(AudienceError, match="not at a line's start"):
        open_audience(path, resume=(14, 2))
    with pytest.raises(AudienceError, match="outside the data"):
        open_audience(path, resume=(3, 1))
    with pytest.raises(AudienceError, match="outside the data"):
        open_audience(path, resume=(10_000, 9))
    parquet = tmp_path / "a.parquet"
    pq.write_table(pa.table({"phone": ["1", "2"]}), parquet)
    with pytest.raises(AudienceError, match="not a row of this file"):
        open_audience(parquet, resume=(1, 7))
    assert read(parquet, resume=(2, 3)) == []


def test_a_header_of_thousands_of_columns_is_refused(tmp_path):
    wide = tmp_path / "wide.csv"
    wide.write_text("phone," + ",".join(f"c{n}" for n in range(140_000)) + "\n0912345678\n")
    with pytest.raises(AudienceError, match="140,001 columns; at most 1,024"):
        open_audience(wide)


def test_a_huge_row_is_one_bad_row_however_wide_the_header(tmp_path):
    columns = ["phone", *(f"c{n}" for n in range(1000))]
    huge = ",".join(["0912345678", *(["y" * 60_000] * 40)])  # 2.4 MB, every field short enough
    path = tmp_path / "huge.csv"
    after = "0987654321" + "," * 1000
    path.write_text(",".join(columns) + f"\n{huge}\n{after}\n", encoding="utf-8")
    items = read(path)
    assert isinstance(items[0], BadRow)
    assert (items[0].line, items[0].reason.startswith("row longer than 1,048,576 bytes")) == (
        2,
        True,
    )
    assert [row.fields["phone"] for row in good(items)] == ["0987654321"], "the rest goes on"
