"""Local stand-ins for the providers (FCM, APNs, ElevenLabs) that speak their wire protocols."""
