"""Field types shared by several contracts, with their validation rules."""

from typing import Annotated

from pydantic import AfterValidator, EmailStr, Field, StringConstraints

Email = Annotated[EmailStr, AfterValidator(str.lower)]
"""An email address, compared case-insensitively (stored lower-case)."""

Password = Annotated[str, Field(min_length=8, max_length=256)]
"""A password as the user typed it; at least 8 characters."""

DisplayName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]*$")
]
"""A name shown to other users."""

Identifier = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
"""An opaque id: user, registration, session."""

Printable = Annotated[str, StringConstraints(max_length=500, pattern=r"^[^\x00-\x1f\x7f]*$")]
"""Free text from a client (a user agent): no control characters, which databases refuse."""

OpaqueToken = Annotated[str, StringConstraints(min_length=1, max_length=512)]
"""A token busway issued (refresh, password reset), as the client presents it."""
