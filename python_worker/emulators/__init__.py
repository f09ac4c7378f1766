"""Local stand-ins for the services this machine cannot reach (FCM, APNs, ElevenLabs).

Each speaks the provider's real wire protocol (see PROTOCOLS.md) on loopback, records what it
received, and can be told to fail. The official clients from PyPI are run against them in the
tests to prove they are faithful.
"""
