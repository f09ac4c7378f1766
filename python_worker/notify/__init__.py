"""Family alerts: the senders of Web Push, email and SMS, and their failure classification."""
