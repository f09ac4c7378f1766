"""The HTTP API: pairing, call events, ElevenLabs tokens and the post-call webhook."""
