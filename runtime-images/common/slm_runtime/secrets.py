"""Reading secrets from mounted files (never from arguments or the environment's literals)."""

from __future__ import annotations

from pathlib import Path


class SecretFileError(RuntimeError):
    """A secret file is named but cannot be used; the message never contains the secret."""


def read_secret_file(path: Path | str | None) -> str | None:
    """The stripped content of a mounted secret file, or None when no path is given.

    A named file that is missing or empty is an error: silently going on without a token
    would turn into a confusing 401 from the hub later.
    """
    if not path:
        return None
    p = Path(path)
    try:
        value = p.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise SecretFileError(f"secret file {p} does not exist (is the Secret mounted?)") from None
    except OSError as exc:
        raise SecretFileError(f"secret file {p} cannot be read: {exc.strerror}") from None
    if not value:
        raise SecretFileError(f"secret file {p} is empty")
    return value


def redact(text: str, *secrets: str | None) -> str:
    """text with every given secret replaced by '***' (for error messages from libraries)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
