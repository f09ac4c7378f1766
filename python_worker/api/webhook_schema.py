"""The ElevenLabs post-call webhook body, as JSON Schema for `openapi.json`.

The route reads the raw body (its signature covers the exact bytes), so FastAPI cannot derive
this from a model: it is written out here. It describes what the API reads
(python_worker.api.elevenlabs.parse_webhook and the SQL ingestion); ElevenLabs sends more,
and unknown fields are accepted, as PROTOCOLS.md requires.
"""

from __future__ import annotations

from typing import Any

_TEXT: dict[str, Any] = {"type": "string"}
_NULLABLE_TEXT: dict[str, Any] = {"type": ["string", "null"]}

TRANSCRIPT_TURN: dict[str, Any] = {
    "type": "object",
    "description": "one turn of the conversation",
    "properties": {
        "role": {"type": "string", "enum": ["agent", "user"]},
        "message": _NULLABLE_TEXT,
        "time_in_call_secs": {"type": "number", "description": "seconds from the call's start"},
    },
}

WEBHOOK_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["type", "event_timestamp", "data"],
    "description": (
        "ElevenLabs' post-call webhook (signed; see the ElevenLabs-Signature header). "
        "`post_call_transcription` is ingested into call_logs; `post_call_audio` is linked to "
        "its session and acknowledged (the audio is not stored); other types are kept as "
        "ignored. Unknown fields are accepted."
    ),
    "properties": {
        "type": {
            "type": "string",
            "examples": ["post_call_transcription", "post_call_audio"],
        },
        "event_timestamp": {"type": "integer", "description": "unix seconds"},
        "data": {
            "type": "object",
            "properties": {
                "agent_id": _TEXT,
                "conversation_id": {
                    "type": "string",
                    "description": "matched with the id the app reported with `connected`",
                },
                "status": _TEXT,
                "transcript": {"type": "array", "items": TRANSCRIPT_TURN},
                "metadata": {
                    "type": "object",
                    "properties": {
                        "start_time_unix_secs": {"type": "integer"},
                        "call_duration_secs": {"type": "number"},
                        "cost": {"type": ["number", "null"]},
                        "termination_reason": _NULLABLE_TEXT,
                    },
                },
                "analysis": {
                    "type": "object",
                    "properties": {
                        "call_successful": {
                            "type": "string",
                            "enum": ["success", "failure", "unknown"],
                        },
                        "transcript_summary": _NULLABLE_TEXT,
                        "call_summary_title": _NULLABLE_TEXT,
                        "data_collection_results": {
                            "type": "object",
                            "description": (
                                "by data-collection id; `value` is stored, `mood` fills "
                                "call_logs.mood, CALLPANION_CONCERN_FIELDS raise concerns"
                            ),
                            "additionalProperties": {
                                "type": "object",
                                "properties": {"value": {}, "rationale": _NULLABLE_TEXT},
                            },
                        },
                        "evaluation_criteria_results": {
                            "type": "object",
                            "description": "by criterion id; `result` is stored",
                            "additionalProperties": {
                                "type": "object",
                                "properties": {
                                    "result": {
                                        "type": "string",
                                        "enum": ["success", "failure", "unknown"],
                                    },
                                    "rationale": _NULLABLE_TEXT,
                                },
                            },
                        },
                    },
                },
                "conversation_initiation_client_data": {
                    "type": "object",
                    "properties": {
                        "dynamic_variables": {
                            "type": "object",
                            "description": (
                                "echoed back as the app passed them; `call_session_id` finds "
                                "the session when no conversation id was reported"
                            ),
                            "properties": {
                                "call_session_id": {"type": "string", "format": "uuid"},
                                "relative_name": _TEXT,
                                "household_name": _TEXT,
                                "last_call_summary": _TEXT,
                            },
                        }
                    },
                },
                "full_audio": {
                    "type": "string",
                    "description": "post_call_audio only: base64 MP3 (never stored)",
                },
            },
        },
    },
}
