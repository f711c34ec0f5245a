"""KafkaSettings refuses transport security combinations that cannot work, at start."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from medbench_messaging.security import client_options, redact
from medbench_runtime.settings import KafkaSettings


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"security_protocol": "SASL_SSL", "sasl_password": "p"}, "SASL_USERNAME"),
        ({"security_protocol": "SASL_SSL", "sasl_username": "u"}, "exactly one of"),
        (
            {"security_protocol": "SASL_SSL", "sasl_username": "u", "sasl_password": "p",
             "sasl_password_file": "/f"},
            "(both are set)",
        ),
        ({"sasl_username": "u", "sasl_password": "p"}, "SASL credentials are set but"),
        ({"security_protocol": "SASL_PLAINTEXT", "sasl_username": "u", "sasl_password": "p",
          "ssl_cafile": "/ca"}, "TLS files are set but"),
        ({"security_protocol": "SSL", "ssl_certfile": "/c"}, "go together"),
        ({"security_protocol": "TLS"}, "security_protocol"),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI"}, "sasl_mechanism"),
    ],
)  # fmt: skip
def test_combinations_that_cannot_work_are_refused(values: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error.replace("(", r"\(").replace(")", r"\)")):
        KafkaSettings(**values)


def test_password_file_is_read_and_never_shown(tmp_path: Any) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret-pw\n")
    settings = KafkaSettings(
        security_protocol="SASL_SSL", sasl_username="svc", sasl_password_file=str(secret)
    )
    options = client_options(settings)
    assert options["sasl_plain_password"] == "s3cret-pw"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512" and options["ssl_check_hostname"] is True
    assert "s3cret-pw" not in repr(settings) and "s3cret-pw" not in str(redact(options))
    assert client_options(KafkaSettings()) == {"security_protocol": "PLAINTEXT"}
