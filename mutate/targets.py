"""What `make mutate` mutates, and which tests must kill each module's mutants.

Each critical module is run against only the tests that cover it, in two tiers: its unit tests
(`tests/unit/`, run without conftests: no cluster, no emulators, about a second to start),
then, only when those all pass, its integration tests (`tests/integration/`: the emulators over
HTTP/2 + TLS, or the API on a real cluster). pytest stops at the first failure, so most mutants
die in a second or two and only the survivors of the unit tier pay for the rest. `functions`
limits the mutants to the code the issue names (the provider classification, the dispatcher's
result mapping); an empty tuple mutates the whole module. A folder names every test in it (the
tiers of tests/); files are listed where a folder would run more than the module's own tests.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Plugins no target's tests need; loading them costs seconds per mutant.
PLUGINS_OFF = ("-p", "no:schemathesis", "-p", "no:anyio", "-p", "no:cacheprovider")
#: Unit tiers run without tests/support/db.py (its plugins start emulators and import the API).
UNIT_OPTIONS = ("--noconftest",)


@dataclass(frozen=True)
class PythonTarget:
    """One critical module, the functions of it that are mutated, and its tests."""

    name: str
    path: str
    functions: tuple[str, ...]
    unit: tuple[str, ...]
    integration: tuple[str, ...] = ()


PYTHON_TARGETS: tuple[PythonTarget, ...] = (
    PythonTarget(
        name="signature",
        path="python_worker/api/elevenlabs.py",
        # Signature verification and the webhook parser; the token client is plain HTTP glue.
        functions=(
            "signature",
            "signature_header",
            "verify_signature",
            "parse_signature_header",
            "SignatureHeader.check",
            "_is_hex",
            "_reject_constant",
            "_storable",
            "json_problem",
            "parse_webhook",
            "without_audio",
        ),
        unit=("tests/unit/api/test_signature.py", "tests/unit/api/test_webhook_fuzz.py"),
        integration=("tests/integration/test_api_webhook.py",),
    ),
    PythonTarget(
        name="client_address",
        path="python_worker/api/rate_limit.py",
        # Issue 25 item 3: whose address a pairing request is counted under.
        functions=("trusted_networks", "_address", "client_key"),
        unit=("tests/unit/api/test_client_address.py",),
        integration=("tests/integration/test_api_pairing.py",),
    ),
    PythonTarget(
        name="payloads",
        path="python_worker/push/payloads.py",
        functions=(),
        unit=(
            "tests/unit/push/test_payloads.py",
            "tests/unit/push/test_cancel_payloads.py",
            "tests/unit/worker/test_worker_units.py",
        ),
        integration=("tests/integration/test_push_fcm.py", "tests/integration/test_push_apns.py"),
    ),
    PythonTarget(
        name="fcm",
        path="python_worker/push/fcm.py",
        functions=("classify",),
        unit=("tests/unit/push/test_fcm_classify.py",),
        integration=("tests/integration/test_push_fcm.py",),
    ),
    PythonTarget(
        name="apns",
        path="python_worker/push/apns.py",
        functions=("classify", "_unix_seconds", "ProviderToken.renew", "ApnsSender.send"),
        unit=("tests/unit/push/test_apns_classify.py",),
        integration=("tests/integration/test_push_apns.py",),
    ),
    PythonTarget(
        name="retry",
        path="python_worker/push/retry.py",
        functions=(),
        unit=(
            "tests/unit/push/test_retry.py",
            "tests/unit/push/test_fcm_classify.py",
            "tests/unit/push/test_apns_classify.py",
        ),
        integration=("tests/integration/test_push_fcm.py", "tests/integration/test_push_apns.py"),
    ),
    PythonTarget(
        name="dispatcher",
        path="python_worker/worker/dispatcher.py",
        # The result mapping: claimed row -> push, provider answer -> recorded result.
        functions=(
            "Senders.send",
            "not_configured",
            "incoming_call",
            "result_json",
            "Dispatcher._send_one",
            "Dispatcher.lease_lost",
        ),
        unit=("tests/unit/worker/",),
        integration=("tests/integration/test_dispatcher_senders.py",),
    ),
    PythonTarget(
        name="notify_outcomes",
        path="python_worker/notify/outcomes.py",
        # The alert senders' classification: provider answer -> outcome.
        functions=("classify_webpush", "classify_twilio", "classify_smtp"),
        unit=("tests/unit/notify/test_alert_classify.py",),
        integration=("tests/integration/test_alert_senders.py",),
    ),
    PythonTarget(
        name="outbox",
        path="python_worker/worker/outbox.py",
        # The delivery result mapping: classified answer -> record_outbox_results element.
        functions=("result_json",),
        unit=("tests/unit/notify/test_alert_classify.py",),
        integration=("tests/integration/test_worker_alerts.py",),
    ),
    PythonTarget(
        name="notify_senders",
        path="python_worker/notify/senders.py",
        functions=("not_configured",),
        unit=("tests/unit/notify/test_alert_classify.py",),
        integration=("tests/integration/test_alert_senders.py",),
    ),
    PythonTarget(
        name="phone_checks",
        path="python_worker/phone/checks.py",
        # The app's per-path conditions: a mutant that rings where the app would not (or the
        # reverse) makes "it rings in the simulator" mean nothing.
        functions=(),
        unit=("tests/unit/phone/test_phone_checks.py", "tests/unit/push/test_app_push_contract.py"),
    ),
    # Issue 26: the code added most recently, against the tests written for it.
    PythonTarget(
        name="recorder",
        path="python_worker/worker/recorder.py",
        functions=(),
        unit=(
            "tests/unit/worker/test_recorder_batching.py",
            "tests/unit/worker/test_worker_units.py::"
            "test_the_recorder_records_in_small_batches_in_order_and_flushed_waits_for_them",
            "tests/unit/worker/test_worker_units.py::test_a_failing_record_does_not_wedge_the_recorder",
        ),
    ),
    PythonTarget(
        name="cancels",
        path="python_worker/worker/cancels.py",
        functions=(),
        unit=(),
        integration=("tests/integration/test_cancel_notice_sends.py",),
    ),
    PythonTarget(
        name="presence",
        path="python_worker/worker/presence.py",
        functions=(),
        unit=("tests/unit/worker/test_lease_owner.py",),
        integration=("tests/integration/test_presence.py",),
    ),
)

#: cosmic-ray operators left out, as regular expressions on the operator name. Binary
#: operators: one replacement per operator is kept (the other nine per site say nothing
#: more about the tests). `x == 200` -> `x is 200` and `x is None` -> `x == None` are
#: equivalent for small ints and singletons; `is` -> `<` only raises a TypeError.
#: VariableReplacer/VariableInserter put random names and values in: noise, not gaps.
EXCLUDED_OPERATORS: tuple[str, ...] = (
    r"core/ReplaceBinaryOperator_(?!(Add_Sub|Sub_Add|Mul_Div|Div_Mul|FloorDiv_Mul|Mod_Mul"
    r"|Pow_Mul|BitOr_BitAnd|BitAnd_BitOr|BitXor_BitOr|LShift_RShift|RShift_LShift)$)",
    r"core/ReplaceComparisonOperator_(Eq|NotEq|Lt|LtE|Gt|GtE)_(Is|IsNot)$",
    r"core/ReplaceComparisonOperator_(Is|IsNot)_(Lt|LtE|Gt|GtE)$",
    r"core/ReplaceComparisonOperator_Is_Eq$",
    r"core/ReplaceComparisonOperator_IsNot_NotEq$",
    r"core/Variable(Replacer|Inserter)$",
)
