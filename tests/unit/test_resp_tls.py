"""TLS settings of a rediss:// URL on the hot-path connection, read as redis-py reads them."""

import ssl

from redis.asyncio.connection import parse_url

from bus.resp import _tls_context


def test_certificates_are_verified_by_default() -> None:
    context = _tls_context(dict(parse_url("rediss://redis.example.com:6380/0")))
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname


def test_the_url_can_turn_verification_off_as_for_redis_py() -> None:
    context = _tls_context(dict(parse_url("rediss://redis.example.com:6380/0?ssl_cert_reqs=none")))
    assert context.verify_mode == ssl.CERT_NONE
    assert not context.check_hostname


def test_the_url_can_keep_verification_but_skip_the_hostname() -> None:
    context = _tls_context(dict(parse_url("rediss://10.0.0.5:6380/0?ssl_check_hostname=false")))
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert not context.check_hostname
