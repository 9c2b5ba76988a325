"""How an S3/R2 failure reads: one clear line for what a person can fix, the rest unchanged."""

from __future__ import annotations

from render.errors import PublishError

REFUSED = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "InvalidToken",
    "ExpiredToken",
    "Unauthorized",
    "403",
    "401",
}
PRECONDITION = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
MISSING = {"NoSuchKey", "404", "NotFound"}


def s3_error(
    exc: Exception, action: str, key: str, *, description: str, bucket: str, where: str
) -> Exception:
    """One clear line for an expected failure; anything else is returned unchanged."""
    if not is_botocore(exc):
        return exc
    code = code_of(exc)
    name = type(exc).__name__
    if code == "NoSuchBucket":
        return PublishError(
            f"bucket {bucket!r} does not exist at {where}",
            hint="create the bucket, or fix [store] bucket / endpoint_url in render.toml",
        )
    if code in REFUSED:
        return PublishError(
            f"{description} refused the credentials ({code}) on {action} {key}",
            hint="check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or [store] profile);"
            " the key needs read, write and delete on the bucket",
        )
    if name in ("NoCredentialsError", "PartialCredentialsError", "ProfileNotFound"):
        return PublishError(
            f"no usable credentials for {description}: {exc}",
            hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or [store] profile",
        )
    if name in (
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ConnectionClosedError",
        "ReadTimeoutError",
        "ProxyConnectionError",
        "SSLError",
    ):
        return PublishError(
            f"cannot reach {where} for bucket {bucket!r} ({name}) on {action} {key}",
            hint="check [store] endpoint_url and the network; a re-run uploads only what is missing",
        )
    detail = code or name
    return PublishError(
        f"{description}: {action} {key} failed: {detail}: {_message(exc)}",
        hint="a re-run uploads only what is missing; the live version is unchanged",
    )


def is_botocore(exc: BaseException) -> bool:
    return type(exc).__module__.startswith(("botocore", "boto3", "s3transfer"))


def code_of(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error", {})
        code = str(error.get("Code", ""))
        if code:
            return code
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return str(status or "")
    return ""


def _message(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Message", "")) or str(exc)
    return str(exc)
