"""Errors raised by the identity layer. Both are ValueErrors: they describe bad input
(a certificate or token the caller handed us), not a failure of this process."""


class CertificateError(ValueError):
    """A certificate, CSR or key is malformed, untrusted, expired or not what was expected."""


class TokenError(ValueError):
    """A join token is malformed; the message names the part that is wrong."""
