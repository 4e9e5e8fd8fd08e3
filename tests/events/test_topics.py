"""The partition cap of a deployment (``MF_PARTITIONS_MAX``), read once at import."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from libs.events.topics import CATALOGUE, READINGS, Topic, capped
from libs.partitions import partitions_max

PROBE = "import json; from libs.events.topics import CATALOGUE; print(json.dumps({t.name: t.partitions for t in CATALOGUE}))"


def _counts(value: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MF_PARTITIONS_MAX=value)
    return subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60)


def test_the_cap_applies_to_every_topic_and_unset_keeps_the_catalogue() -> None:
    one = _counts("1")
    assert one.returncode == 0 and set(json.loads(one.stdout).values()) == {1}
    three = json.loads(_counts("3").stdout)
    assert three["mf.readings"] == 3 and three["mf.tariffs"] == 1  # a cap never adds partitions
    full = json.loads(_counts("").stdout)
    assert full["mf.readings"] == 12 and full.keys() == {t.name for t in CATALOGUE}
    assert _counts("0").stdout == _counts("").stdout


def test_a_bad_cap_is_refused_naming_the_setting() -> None:
    bad = _counts("-1")
    assert bad.returncode != 0 and "MF_PARTITIONS_MAX" in bad.stderr
    with pytest.raises(ValueError, match="whole number"):
        partitions_max("1.5")
    assert capped(Topic("t", 6, "k", "d"), 2).partitions == 2 and capped(READINGS, 0) == READINGS
