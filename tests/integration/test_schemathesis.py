"""The API holds its contract: schemathesis generates requests for every operation from the
engine's own OpenAPI document and checks the answers, with a token of each role.

Checks per response: no server error (5xx), the status code is one the operation documents,
the body matches the documented schema (error bodies included), the content type is the
documented one. Operations that would rewrite the engine's configuration or credentials
(PUT/PATCH config, the RCM secret, revoking users) are left out: random folder paths in a
config would point the watcher at arbitrary directories of this machine. They have their own
contract tests (tests/integration/test_api_contract.py).
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks as st_checks

from tests.conftest import start_test_engine

EXCLUDED = (
    ("PUT", "/api/v1/config"),
    ("PATCH", "/api/v1/config"),
    ("POST", "/api/v1/rcm/secret"),
    ("DELETE", "/api/v1/users/{name}"),
)

pytestmark = pytest.mark.keyring


@pytest.fixture(scope="module")
def fuzz_engine(tmp_path_factory):
    eng = start_test_engine(tmp_path_factory.mktemp("fuzz"))
    yield eng
    eng.stop()


@pytest.fixture(scope="module")
def api_schema(fuzz_engine):
    schema = schemathesis.openapi.from_url(f"{fuzz_engine.base}/openapi.json")
    for method, path in EXCLUDED:
        schema = schema.exclude(method=method, path=path)
    return schema


CHECKS = [st_checks.not_a_server_error, st_checks.status_code_conformance,
          st_checks.content_type_conformance, st_checks.response_schema_conformance]


def _fuzz(operation, *, base: str, token: str, examples: int) -> str:
    """Run one operation's generated cases; '' when all held, else the first failure's text."""
    from hypothesis import given

    @given(case=operation.as_strategy())
    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case) -> None:  # type: ignore[no-untyped-def]
        if case.path == "/api/v1/changes":  # a long-poll: keep each wait short
            case.query = {**(case.query or {}), "timeout": 0}
        case.call_and_validate(base_url=base, headers={"Authorization": f"Bearer {token}"},
                               checks=CHECKS, timeout=30)

    try:
        run()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # FailureGroup is a BaseExceptionGroup; collect every operation's verdict
        return f"{operation.method.upper()} {operation.path}: {str(exc)[:1500]}"
    return ""


@pytest.mark.parametrize("role", ["front_desk", "manager", "admin"])
def test_every_operation_holds_its_contract(api_schema, fuzz_engine, role):
    operations = [r.ok() for r in api_schema.get_all_operations()]
    assert len(operations) >= 18, "the OpenAPI document lost operations"
    failures = [f for op in operations
                if (f := _fuzz(op, base=fuzz_engine.base, token=fuzz_engine.tokens[role], examples=30))]
    assert not failures, f"{len(failures)} operation(s) broke the contract:\n" + "\n\n".join(failures)
