"""Record-batch checksums are computed in C: kafka-python's pure-Python CRC-32C cost more CPU
than anything else in the upload pipeline (every batch produced and every batch fetched)."""

from __future__ import annotations

from kafka.record import util


def test_kafka_python_uses_the_c_crc32c() -> None:
    assert util.crc32c_c is not None, "install kafka-python[crc32c] (libs/messaging)"
    data = memoryview(b"123456789")
    assert util.calc_crc32c(data) == util.crc32c_py(data) == 0xE3069283
