"""Push providers: the HTTP/2 transport, FCM v1, APNs, payloads, outcomes and retry policy."""
