"""The activity service: each user's audit trail (logins, password changes, profile edits)."""

SERVICE = "activity"
