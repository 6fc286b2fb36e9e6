"""The base every contract derives from: frozen, no unknown fields."""

from pydantic import BaseModel, ConfigDict


class Contract(BaseModel):
    """A message body on the bus: immutable, and strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")
