"""`callpanion webhook`: a sample signed ElevenLabs post-call webhook, sent to the API."""

from __future__ import annotations

import argparse
import json
import uuid
from typing import Any

from python_worker.api.settings import api_settings
from python_worker.errors import CallPanionError
from python_worker.worker.settings import worker_settings

#: The post-call webhook's route on the API (kept here: the CLI does not import the API's app
#: for commands that do not serve it).
WEBHOOK_PATH = "/v1/webhooks/elevenlabs"


def configure(sub: argparse._SubParsersAction[Any]) -> None:
    """Register `webhook`."""
    webhook = sub.add_parser(
        "webhook", help="send a sample signed ElevenLabs post-call webhook to the API"
    )
    webhook.add_argument("--session-id", help="call_session_id in its dynamic variables")
    webhook.add_argument(
        "--binding",
        help="call_binding in its dynamic variables (what `accepted` gave the session's device);"
        " without it a --session-id alone matches nothing",
    )
    webhook.add_argument("--conversation-id", help="default: a new conv_sample_… id")
    webhook.add_argument("--url", help="default: CALLPANION_PUBLIC_API_URL + the webhook path")
    webhook.add_argument("--secret", help="default: ELEVENLABS_WEBHOOK_SECRET")
    webhook.add_argument("--print", action="store_true", help="also print the body sent")
    webhook.set_defaults(func=cmd_webhook)


def cmd_webhook(args: argparse.Namespace) -> int:
    """Send a sample post-call webhook, signed with ELEVENLABS_WEBHOOK_SECRET, to the API."""
    from python_worker.emulators.elevenlabs import post_signed_webhook, transcription_payload

    secret = args.secret or api_settings().elevenlabs_webhook_secret
    if not secret:
        raise CallPanionError(
            "--secret or ELEVENLABS_WEBHOOK_SECRET: the API's webhook signing secret is needed"
        )
    url = args.url or f"{worker_settings().public_api_url}{WEBHOOK_PATH}"
    if args.session_id:
        try:
            uuid.UUID(args.session_id)
        except ValueError:
            raise CallPanionError(f"--session-id must be a UUID, got {args.session_id!r}") from None
    conversation = args.conversation_id or "conv_sample_" + uuid.uuid4().hex[:12]
    payload = transcription_payload(
        conversation, call_session_id=args.session_id, call_binding=args.binding
    )
    if args.print:
        print(json.dumps(payload, indent=2))
    response = post_signed_webhook(url, secret, payload)
    print(f"POST {url}: HTTP {response.status_code} {response.text}")
    return 0 if response.status_code == 200 else 1
