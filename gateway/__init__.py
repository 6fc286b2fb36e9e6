"""The HTTP gateway: Litestar routes that turn requests into bus commands."""
