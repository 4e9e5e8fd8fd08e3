"""`meterflow frame decode|encode` through the real entry point."""

from __future__ import annotations

import json

import pytest

from services.cli import main

# [QT-READER] GitHub Qt reader.cpp debug capture: an abnormal reply then a clock reply, FE-prefixed.
STREAM = (
    "FE FE FE FE 68 18 55 60 06 00 00 68 D1 01 35 AA 16 "
    "FE FE FE FE 68 18 55 60 06 00 00 68 91 07 35 34 33 37 65 86 4B 44 16"
)
# [HEYUAN] DL/T 645-1997 reply: voltage A of meter 030000000000 = 100 V.
REPLY_1997 = "68 03 00 00 00 00 00 68 81 04 44 E9 33 34 EC 16"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict], str]:
    code = main(["frame", *argv])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines() if line.startswith("{")], err


def test_decode_back_to_back_frames(capsys: pytest.CaptureFixture[str]) -> None:
    code, views, _ = _run(capsys, "decode", STREAM)
    assert code == 0
    assert len(views) == 2
    assert views[0]["protocol"] == "dlt645-2007"
    assert views[0]["error"]
    assert views[0]["error_code"] == 2
    assert views[0]["consumed"] == 17
    assert views[1]["address"] == "000006605518"
    assert views[1]["di"] == "04000102"
    assert views[1]["values"] == {"meter_time": {"value": "18:53:32", "unit": ""}}
    assert views[1]["control"] == "91"
    assert views[1]["reply"] is True


def test_auto_detects_1997(capsys: pytest.CaptureFixture[str]) -> None:
    code, views, _ = _run(capsys, "decode", *REPLY_1997.split())
    assert code == 0
    assert views[0]["protocol"] == "dlt645-1997"
    assert views[0]["di"] == "B611"
    assert views[0]["values"]["voltage_a"] == {"value": "100", "unit": "V"}


def test_decimal_values_are_exact_strings(capsys: pytest.CaptureFixture[str]) -> None:
    wire = "68 12 00 00 00 10 20 68 91 08 33 35 C3 33 89 CB 34 33 C4 16"  # [SANSHENG] 198.56 yuan
    code, views, _ = _run(capsys, "decode", "--protocol", "dlt645-2007", wire)
    assert code == 0
    assert views[0]["values"]["remaining_amount"] == {"value": "198.56", "unit": "yuan"}


@pytest.mark.parametrize(
    ("argv", "fault"),
    [
        (["decode", "--protocol", "dlt645-2007", REPLY_1997], "control"),
        (
            ["decode", "--protocol", "dlt645-1997", REPLY_1997[:-5] + "ED 16"],
            "checksum: expected 0xEC, got 0xED",
        ),
        (["decode", REPLY_1997[:-5] + "ED 16"], "checksum"),
        (["decode", REPLY_1997[:20]], "incomplete"),
        (["decode", "zz"], "not hex"),
    ],
)
def test_bad_frames_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str], fault: str) -> None:
    code, views, err = _run(capsys, *argv)
    assert code == 2
    assert views == []
    assert fault in err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["encode", "read", "--di", "00010000"], "68 AA AA AA AA AA AA 68 11 04 33 33 34 33 AE 16"),
        (["encode", "--preamble", "3", "read-address"], "FE FE FE 68 AA AA AA AA AA AA 68 13 00 DF 16"),
        (
            ["encode", "read", "--protocol", "dlt645-1997", "--address", "000000000003", "--di", "B611"],
            "68 03 00 00 00 00 00 68 01 02 44 E9 03 16",
        ),
        (
            ["encode", "time-sync", "--time", "2017-06-05T10:22:51"],
            "68 99 99 99 99 99 99 68 08 06 84 55 43 38 39 4A 4B 16",
        ),
        (
            [
                "encode",
                "relay",
                "--address",
                "111111111111",
                "--action",
                "trip",
                "--password",
                "00000000",
                "--valid-until",
                "2018-05-12T15:41:24",
            ],
            "68 11 11 11 11 11 11 68 1C 10 33 33 33 33 33 33 33 33 4D 33 57 74 48 45 38 4B 55 16",
        ),
    ],
)
def test_encode_matches_public_vectors(
    capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    assert main(["frame", *argv]) == 0
    assert capsys.readouterr().out.strip() == expected


def test_encode_relay_close_round_trips_through_decode(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "frame",
                "encode",
                "relay",
                "--address",
                "202301010001",
                "--action",
                "close-allowed",
                "--operator",
                "12345678",
                "--valid-until",
                "2030-01-02T03:04:05",
            ]
        )
        == 0
    )
    wire = capsys.readouterr().out.strip()
    code, views, _ = _run(capsys, "decode", wire)
    assert code == 0
    assert views[0]["address"] == "202301010001"
    assert views[0]["control"] == "1C"
    assert views[0]["values"]["action"]["value"] == "close_allowed"
    assert views[0]["values"]["operator"]["value"] == "12345678"
    assert views[0]["values"]["valid_until"]["value"] == "2030-01-02T03:04:05"


def test_encode_bad_address_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frame", "encode", "read", "--address", "12AB", "--di", "00010000"]) == 2
    assert "address" in capsys.readouterr().err


def test_encode_valve_when_cjt188_exists(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("libs.protocols.cjt188")
    assert main(["frame", "encode", "valve", "--address", "00000000000001", "--action", "close"]) == 0
    wire = capsys.readouterr().out.strip()
    code, views, _ = _run(capsys, "decode", "--protocol", "cjt188", wire)
    assert code == 0
    assert views[0]["protocol"] == "cjt188"
