"""The pure parts of dead letters: headers, the fold of mf.dead-letter's records, what a retry takes."""

from __future__ import annotations

from datetime import UTC, datetime

from libs.stack.deadletter import DeadLetter, counts, decode_headers, fold, headers, retry_marker, to_retry

AT = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def record(
    offset: int, hs: list[tuple[str, bytes]], value: bytes = b"v"
) -> tuple[int, bytes, bytes, dict[str, str]]:
    return offset, b"k", value, decode_headers(hs)


def test_headers_say_where_from_and_why() -> None:
    hs = dict(headers("billing", "mf.tariffs", 2, 17, "x" * 900, "TariffError", AT))
    assert hs["source"] == b"mf.tariffs[2]@17"
    assert (hs["service"], hs["topic"], hs["partition"], hs["offset"]) == (
        b"billing",
        b"mf.tariffs",
        b"2",
        b"17",
    )
    assert hs["error_type"] == b"TariffError" and hs["at"] == AT.isoformat().encode()
    assert len(hs["reason"]) == 500


def test_a_fact_that_waited_has_no_place_of_its_own() -> None:
    hs = dict(
        headers("billing", "mf.readings", None, None, "boom", "ValueError", AT, released_by="mf.tariffs[0]@3")
    )
    assert "partition" not in hs and "offset" not in hs
    assert hs["released_by"] == b"mf.tariffs[0]@3"
    letter = fold([record(0, list(hs.items()))])[0]
    assert letter.topic == "mf.readings" and letter.partition is None  # a retry goes by key


def test_fold_marks_retried_letters_and_skips_markers() -> None:
    first = record(0, headers("control", "mf.commands", 1, 5, "bad", "ValueError", AT))
    sender = record(1, [("reason", b"no channel"), ("attempts", b"3"), ("source", b"notify")])
    marker = record(2, retry_marker(DeadLetter(0, b"k", b"v", {"service": "control"}), AT), b"")
    letters = fold([first, sender, marker])
    assert [(le.id, le.service, le.retried) for le in letters] == [(0, "control", True), (1, "notify", False)]
    assert letters[0].partition == 1 and letters[1].topic is None
    assert letters[0].summary()["source"] == "mf.commands[1]@5"
    assert counts(letters) == {
        "control": {"dead_letters": 1, "not_retried": 0},
        "notify": {"dead_letters": 1, "not_retried": 1},
    }


def test_what_a_retry_takes() -> None:
    letters = fold([
        record(0, headers("billing", "mf.tariffs", 0, 1, "r", "E", AT)),
        record(1, headers("control", "mf.commands", 0, 2, "r", "E", AT)),
        record(2, headers("billing", "mf.readings", 3, 3, "r", "E", AT)),
        record(3, [("retried_of", b"2")], b""),
        record(4, [("reason", b"r"), ("source", b"notify")]),
    ])  # fmt: skip
    assert [le.id for le in to_retry(letters, [], True, None)[0]] == [0, 1]  # not retried, with a topic
    assert [le.id for le in to_retry(letters, [], True, "billing")[0]] == [0]
    chosen, unknown = to_retry(letters, [2, 9], False, None)
    assert [le.id for le in chosen] == [2] and unknown == [9]  # an id retries even when retried before
