"""The bus: broker factory, wire format, request-reply client, middlewares, outbox relay."""
