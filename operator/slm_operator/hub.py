"""The model hub the quantization Jobs download hf:// sources from: endpoint and CA bundle.

Two layers, each field falling back on its own:

- operator-wide defaults from the chart (``hub.endpoint``, ``hub.caBundleSecretName``,
  ``hub.caBundleKey`` -> env ``SLM_HUB_ENDPOINT``, ``SLM_HUB_CA_BUNDLE_SECRET``,
  ``SLM_HUB_CA_BUNDLE_KEY``), checked when the operator starts;
- per SLMDeployment, ``spec.model.hub.endpoint`` and ``spec.model.hub.caBundleSecretRef``,
  checked at admission (CEL) and again when the operator parses the spec.

The Job gets ``HF_ENDPOINT`` (huggingface_hub reads it at import) and, with a CA bundle, the
Secret mounted read-only at ``CA_BUNDLE_FILE`` with ``SSL_CERT_FILE`` (httpx2/httpcore2 under
huggingface_hub 2.x, and hf_xet's rustls) and ``REQUESTS_CA_BUNDLE`` (anything on requests)
pointing at it. The bundle replaces the image's trust store for that Job.

Everything here is pure: no API calls.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from slm_operator import api

# The fix, in words, for operator-wide settings (api.HUB_ENDPOINT_MESSAGE says it for the spec).
ENDPOINT_HELP = ("an http:// or https:// URL with a host (DNS name or IPv4 address), an optional port and "
                 "path, and no credentials, query or fragment, e.g. https://hub.mirror.internal or "
                 "http://hub-mirror.models.svc:8080")

CA_BUNDLE_DIR = "/var/run/secrets/slm-hub-ca"
CA_BUNDLE_FILE = f"{CA_BUNDLE_DIR}/ca.crt"
CA_VOLUME = "hub-ca-bundle"
DEFAULT_CA_KEY = "ca.crt"

# Environment variables that make the Job's TLS clients trust the bundle (and only it).
CA_ENV = ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")

_DNS_LABEL = re.compile(api.DNS_LABEL_PATTERN)
_SECRET_KEY = re.compile(api.SECRET_KEY_PATTERN)


class InvalidHubSetting(ValueError):
    """An operator-wide hub setting is wrong; the message names the setting and the fix."""


@dataclass(frozen=True)
class Endpoint:
    """A checked hub URL: ``url`` without a trailing slash; ``port`` explicit or the scheme's."""

    url: str
    scheme: str
    host: str
    port: int

    @property
    def ip(self) -> str | None:
        """The host when it is an IPv4 literal, else None."""
        try:
            return str(ipaddress.IPv4Address(self.host))
        except ValueError:
            return None


def parse_endpoint(url: str) -> Endpoint:
    """Check a hub URL and split it.

    Args:
        url: e.g. ``https://hub.mirror.internal`` or ``http://10.0.0.5:8080/hf``.
    Returns:
        The Endpoint (trailing slashes removed, port filled in from the scheme: 80 or 443).
    Raises:
        ValueError: the reason in words (scheme, credentials, query/fragment, host or port).
    """
    if not re.fullmatch(api.HUB_ENDPOINT_PATTERN, url):
        parts = urlsplit(url)
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"{url!r} is not an http:// or https:// URL")
        if "@" in parts.netloc:  # the URL is not repeated: it holds a secret
            raise ValueError("the URL carries credentials (user:password@): remove them and give the hub "
                             "token through a Secret (spec.model.tokenSecretRef)")
        if parts.query or parts.fragment or "?" in url or "#" in url:
            raise ValueError(f"{url!r} has a query or fragment: give the base URL only")
        raise ValueError(f"{url!r} needs a host (a DNS name or IPv4 address) and, optionally, a port 1-65535")
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return Endpoint(url=url.rstrip("/"), scheme=parts.scheme, host=parts.hostname or "", port=port)


@dataclass(frozen=True)
class HubDefaults:
    """Operator-wide hub settings (from the chart). All empty: the public hub, the image's CAs."""

    endpoint: str | None = None
    ca_bundle_secret: str | None = None
    ca_bundle_key: str = DEFAULT_CA_KEY

    @classmethod
    def from_env(cls, env: dict[str, str]) -> HubDefaults:
        """Read and check SLM_HUB_ENDPOINT, SLM_HUB_CA_BUNDLE_SECRET, SLM_HUB_CA_BUNDLE_KEY.

        Raises:
            InvalidHubSetting: a value is malformed; the message names the env var, the chart
                value behind it and the fix.
        """
        endpoint = env.get("SLM_HUB_ENDPOINT", "").strip() or None
        secret = env.get("SLM_HUB_CA_BUNDLE_SECRET", "").strip() or None
        key = env.get("SLM_HUB_CA_BUNDLE_KEY", "").strip() or DEFAULT_CA_KEY
        if endpoint:
            try:
                endpoint = parse_endpoint(endpoint).url
            except ValueError as e:
                raise InvalidHubSetting(f"SLM_HUB_ENDPOINT (chart value hub.endpoint): {e}; set {ENDPOINT_HELP}, "
                                        "or leave it empty for the public hub") from None
        if secret and (len(secret) > 253 or not _DNS_LABEL.fullmatch(secret)):
            raise InvalidHubSetting(f"SLM_HUB_CA_BUNDLE_SECRET (chart value hub.caBundleSecretName): {secret!r} "
                                    "is not a Secret name (lower-case letters, digits and '-')")
        if not _SECRET_KEY.fullmatch(key) or len(key) > 253:
            raise InvalidHubSetting(f"SLM_HUB_CA_BUNDLE_KEY (chart value hub.caBundleKey): {key!r} is not a "
                                    "Secret key (letters, digits, '-', '_', '.')")
        return cls(endpoint=endpoint, ca_bundle_secret=secret, ca_bundle_key=key)


@dataclass(frozen=True)
class HubAccess:
    """What one quantization Job uses: the endpoint (None: public hub) and the CA bundle ref.

    ``ca_field`` names where the CA bundle came from, for messages about a missing Secret.
    """

    endpoint: Endpoint | None = None
    ca_bundle: api.SecretKeyRef | None = None
    ca_field: str = ""


def effective(model: api.ModelSource, defaults: HubDefaults) -> HubAccess | None:
    """The hub settings for one SLMDeployment: spec.model.hub wins, field by field, over the
    operator-wide defaults. None for sources that are not hf:// (they never talk to a hub)."""
    if not model.source.startswith("hf://"):
        return None
    own = model.hub or api.HubSpec()
    url = own.endpoint or defaults.endpoint
    endpoint = parse_endpoint(url) if url else None
    if own.ca_bundle_secret_ref:
        return HubAccess(endpoint, api.SecretKeyRef(name=own.ca_bundle_secret_ref.name,
                                                    key=own.ca_bundle_secret_ref.key),
                         "spec.model.hub.caBundleSecretRef")
    if defaults.ca_bundle_secret:
        return HubAccess(endpoint, api.SecretKeyRef(name=defaults.ca_bundle_secret, key=defaults.ca_bundle_key),
                         "the operator's hub.caBundleSecretName")
    return HubAccess(endpoint)


def secret_refs(model: api.ModelSource, defaults: HubDefaults) -> list[tuple[str, api.SecretKeyRef]]:
    """(field, ref) for the CA bundle Secret a Job will mount, the shape the reconciler's
    Secret check takes: empty when no bundle applies."""
    access = effective(model, defaults)
    return [(access.ca_field, access.ca_bundle)] if access and access.ca_bundle else []


def job_env(access: HubAccess | None) -> list[dict[str, str]]:
    """Env entries for the quantization container (HF_ENDPOINT; the CA variables)."""
    if access is None:
        return []
    env = []
    if access.endpoint:
        env.append({"name": "HF_ENDPOINT", "value": access.endpoint.url})
    if access.ca_bundle:
        env += [{"name": name, "value": CA_BUNDLE_FILE} for name in CA_ENV]
    return env


def job_volume(access: HubAccess | None) -> tuple[dict, dict] | None:
    """(volumeMount, volume) for the CA bundle Secret, or None. Read-only, one file."""
    if access is None or access.ca_bundle is None:
        return None
    mount = {"name": CA_VOLUME, "mountPath": CA_BUNDLE_DIR, "readOnly": True}
    volume = {"name": CA_VOLUME, "secret": {
        "secretName": access.ca_bundle.name, "defaultMode": 0o440,
        "items": [{"key": access.ca_bundle.key, "path": "ca.crt"}]}}
    return mount, volume


def egress_rule(access: HubAccess | None) -> dict | None:
    """A NetworkPolicy egress rule for the endpoint's port when it is not 443 (always open).
    Limited to the host when the endpoint is an IP literal; any address otherwise (policies
    cannot name DNS hosts)."""
    if access is None or access.endpoint is None or access.endpoint.port == 443:
        return None
    rule: dict = {"ports": [{"port": access.endpoint.port, "protocol": "TCP"}]}
    ip = access.endpoint.ip
    if ip:
        rule["to"] = [{"ipBlock": {"cidr": f"{ip}/{128 if ':' in ip else 32}"}}]
    return rule
