"""OpenAI-style error bodies: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

from starlette.responses import JSONResponse


class APIError(Exception):
    """An error that maps one-to-one onto an OpenAI-compatible HTTP error response."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def invalid(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def unauthorized() -> APIError:
    return APIError(
        401,
        "Incorrect API key provided. Send it as 'Authorization: Bearer <key>'.",
        code="invalid_api_key",
    )


def model_not_found(name: str) -> APIError:
    return APIError(
        404, f"The model '{name}' does not exist.", param="model", code="model_not_found"
    )


def queue_full(retry_after_s: int) -> APIError:
    return APIError(
        429,
        "The server is at capacity: too many requests are waiting. Retry later.",
        type="rate_limit_error",
        code="queue_full",
        headers={"Retry-After": str(retry_after_s)},
    )


def unavailable(message: str, code: str) -> APIError:
    return APIError(503, message, type="service_unavailable", code=code, headers={"Retry-After": "1"})


def internal(message: str = "The server had an error while processing your request.") -> APIError:
    return APIError(500, message, type="server_error", code="internal_error")
