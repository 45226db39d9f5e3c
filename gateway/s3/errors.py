"""S3 errors: a code, an HTTP status and a message, answered as S3's XML error document."""
from __future__ import annotations


class S3Error(Exception):
    """An S3 error response. `code` is S3's (NoSuchKey, AccessDenied, ...)."""

    def __init__(self, code: str, message: str, status: int = 400, **extra: str):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.extra = extra            # more elements of the document (Key, BucketName, ...)


def access_denied(message: str = "Access Denied") -> S3Error:
    return S3Error("AccessDenied", message, 403)


def signature_mismatch(message: str = "The request signature we calculated does not match "
                       "the signature you provided. Check your key and signing method.") -> S3Error:
    return S3Error("SignatureDoesNotMatch", message, 403)


def bad_auth(message: str) -> S3Error:
    return S3Error("AuthorizationHeaderMalformed", message, 400)


def invalid_argument(message: str, **extra: str) -> S3Error:
    return S3Error("InvalidArgument", message, 400, **extra)


def not_implemented(what: str) -> S3Error:
    return S3Error("NotImplemented", f"{what} is not implemented by this server", 501)
