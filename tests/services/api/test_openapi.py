"""Schemathesis over the OpenAPI document: every operation, with generated valid and invalid
input, as an all-projects admin — no 5xx, and every response (status, media type, body, headers)
conforms to the document. The app runs in-process on the real broker and chDB.

``positive_data_acceptance`` is left out: rules across fields or against state (``end`` after
``start``, meters registered, a tariff published) cannot be written in the schema, so input the
schema allows may rightly get a 422 problem; every other default check runs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from clickhouse_connect.driver.client import Client
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from kafka import KafkaProducer
from schemathesis.checks import negative_data_rejection, positive_data_acceptance
from schemathesis.python import asgi as st_asgi

from libs.events import Codec, UserCreated
from libs.events.iam import PLATFORM
from libs.events.topics import CATALOGUE
from libs.stack.broker import ensure_topics
from services.api.app import create_app
from services.api.security import issue_token
from tests.services.api.conftest import PASSWORD_HASH, SECRET, site
from tests.services.api.conftest import settings as api_settings

pytestmark = [
    pytest.mark.slow,
    # schemathesis 4.32's strategies use `random` internally (third-party; not ours to fix)
    pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies"),
]
TOKEN: dict[str, str] = {}


@pytest.fixture
def api_schema(bootstrap: str, store: Client) -> Iterator[schemathesis.BaseSchema]:
    ensure_topics(bootstrap, CATALOGUE)
    codec, user_id = Codec(), str(uuid.uuid4())
    admin = UserCreated(
        project_id=PLATFORM, subject_id=user_id, username=f"st-{user_id[:8]}", password_hash=PASSWORD_HASH,
        roles=("admin",), all_projects=True, created_by="test",
    )  # fmt: skip
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        for e in [admin, *site(f"st-{user_id[:8]}")]:
            producer.send(e.TOPIC, codec.encode(e), key=e.key)
        producer.flush()
    finally:
        producer.close()
    TOKEN["Authorization"] = f"Bearer {issue_token(user_id, SECRET, 3600)}"
    app = create_app(api_settings(api_apply_timeout_s=5.0), bootstrap, store)
    try:
        yield schemathesis.openapi.from_asgi("/openapi.json", app)
    finally:
        st_asgi.shutdown_lifespans()


def _string_lists_in_query(operation: Any) -> bool:
    for parameter in operation.query:
        schema = parameter.definition.get("schema", {})
        for option in [schema, *schema.get("anyOf", [])]:
            if option.get("type") == "array" and option.get("items", {}).get("type") == "string":
                return True
    return False


def _checker(operation: Any, mode: schemathesis.GenerationMode, excluded: list[Any]) -> Any:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=dict(TOKEN), excluded_checks=excluded)

    return check


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode))
def test_api_conforms_to_its_openapi_document(
    api_schema: schemathesis.BaseSchema, mode: schemathesis.GenerationMode
) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 40
    exercised = 0
    for operation in operations:
        excluded = [positive_data_acceptance]
        if mode is schemathesis.GenerationMode.NEGATIVE and _string_lists_in_query(operation):
            # In a query string every value is text: a "non-array" `account_id=false` is the valid
            # list ["false"]. schemathesis still counts it as negative data (its issues #3056 /
            # #3129, open in 4.32), so that check is off for operations with such parameters.
            excluded.append(negative_data_rejection)

        check = _checker(operation, mode, excluded)

        try:
            check()
            exercised += 1
        except Unsatisfiable:
            # nothing in this operation can be made invalid (e.g. only free-text path ids)
            assert mode is schemathesis.GenerationMode.NEGATIVE, operation.label
    assert exercised >= (len(operations) if mode is schemathesis.GenerationMode.POSITIVE else 25)
