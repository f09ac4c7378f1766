"""The post-call webhook body we read is described in openapi.json, and a real one fits it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema_rs

from python_worker.emulators.elevenlabs import (
    Conversation,
    scripted_transcript,
    transcription_payload,
    webhook_payload,
)

DOCUMENT = Path(__file__).resolve().parents[3] / "openapi.json"


def webhook_schema() -> dict[str, Any]:
    document = json.loads(DOCUMENT.read_text())
    operation = document["paths"]["/v1/webhooks/elevenlabs"]["post"]
    schema: dict[str, Any] = operation["requestBody"]["content"]["application/json"]["schema"]
    return schema


def test_the_document_names_every_part_of_the_body_we_read() -> None:
    data = webhook_schema()["properties"]["data"]["properties"]
    assert {"agent_id", "conversation_id", "transcript", "metadata", "analysis"} <= set(data)
    turn = data["transcript"]["items"]["properties"]
    assert {"role", "message", "time_in_call_secs"} <= set(turn)
    assert {"start_time_unix_secs", "call_duration_secs", "cost", "termination_reason"} <= set(
        data["metadata"]["properties"]
    )
    analysis = data["analysis"]["properties"]
    assert analysis["call_successful"]["enum"] == ["success", "failure", "unknown"]
    assert {"transcript_summary", "call_summary_title"} <= set(analysis)
    results = analysis["data_collection_results"]["additionalProperties"]["properties"]
    assert "value" in results
    criteria = analysis["evaluation_criteria_results"]["additionalProperties"]["properties"]
    assert "result" in criteria
    variables = data["conversation_initiation_client_data"]["properties"]["dynamic_variables"]
    assert "call_session_id" in variables["properties"]


def test_the_emulators_webhooks_fit_the_described_body() -> None:
    schema = webhook_schema()
    jsonschema_rs.validate(schema, transcription_payload("conv_1", call_session_id="x"))
    conversation = Conversation("conv_2", "agent_1", {"relative_name": "Nan"}, 1_795_000_000)
    conversation.ended_at = conversation.started_at + 4
    conversation.transcript = scripted_transcript(conversation.dynamic_variables, 4)
    jsonschema_rs.validate(schema, webhook_payload(conversation))
