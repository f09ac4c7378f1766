"""The webhook benchmark states its fits against the API's real default cap."""

from python_worker.api.settings import DEFAULT_WEBHOOK_MAX_BYTES
from python_worker.bench.webhooks import WEBHOOK_CAP


def test_the_benchmark_uses_the_apis_default_webhook_cap() -> None:
    assert WEBHOOK_CAP == DEFAULT_WEBHOOK_MAX_BYTES == 64 * 1024 * 1024
