"""The users service: profiles, created by the registration saga and edited by their owners."""

SERVICE = "users"
