"""SLMDeployment v1alpha1: the typed API, one source of truth.

The CRD in crds/ is generated from these models (see crdgen.py); the reconciler parses
every CR through them. Cross-field rules are CEL expressions attached here (``rules=``)
so that the API server (at admission) and ``slmctl validate`` (offline, via cel-python)
enforce the very same rules with the very same messages.

Conventions: camelCase on the wire, no floats in spec (percentages are integers),
lower-case enum values, lists of named objects rather than maps.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from slm_operator import engines
from slm_operator.engines import table as engine_table
from slm_operator.engines import vllm_parsers

GROUP = "slm.ai"
VERSION = "v1alpha1"
KIND = "SLMDeployment"
PLURAL = "slmdeployments"
SINGULAR = "slmdeployment"
SHORT_NAMES = ["slm"]
API_VERSION = f"{GROUP}/{VERSION}"

# Child names are "<cr-name>-quantize-<8 hex>" at the longest (a Job, whose name also
# becomes a label value capped at 63): 40 + 18 = 58 leaves room.
MAX_NAME_LENGTH = 40

# A Kubernetes quantity as resource.ParseQuantity reads it (no sign: these are sizes).
QUANTITY_PATTERN = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][-+]?[0-9]+)?$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# The CR name: a DNS-1035 label, because it is also the Service's name (the strictest of the
# children's name rules: Service DNS-1035 label; Deployment, Secret, PVC, Job, HPA, PDB,
# NetworkPolicy, ServiceMonitor DNS-1123 subdomain; the Job name is also a label value).
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
NAME_MESSAGE = (
    "metadata.name must start with a lower-case letter, contain only lower-case letters, digits "
    "and '-' (no dots or underscores) and end with a letter or digit, because it also names the "
    "Service (a DNS-1035 label): e.g. phi-3-5-mini instead of phi-3.5-mini"
)
NAME_LENGTH_MESSAGE = (
    f"metadata.name must be at most {MAX_NAME_LENGTH} characters so that child object names fit "
    "(the quantization Job adds 18 characters and must stay a 63-character label value)"
)
# A container image reference (distribution/reference): [domain[:port]/]path[:tag][@digest].
_DOMAIN_PART = r"([a-zA-Z0-9]|[a-zA-Z0-9][-a-zA-Z0-9]*[a-zA-Z0-9])"
_PATH_PART = r"[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*"
IMAGE_PATTERN = (
    rf"^({_DOMAIN_PART}(\.{_DOMAIN_PART})*(:[0-9]+)?/)?{_PATH_PART}(/{_PATH_PART})*"
    r"(:[A-Za-z0-9_][-A-Za-z0-9_.]{0,127})?(@[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)
# A Secret (or other object) name: a DNS-1123 subdomain.
OBJECT_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
# Label keys (also annotation keys): an optional DNS-subdomain prefix and "/", then a name of
# at most 63 letters, digits, '-', '_' and '.' that starts and ends with a letter or digit.
LABEL_KEY_PATTERN = (r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                     r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"
LABEL_KEY_WORDS = ("a label key: an optional DNS prefix and '/', then at most 63 letters, digits, "
                   "'-', '_' and '.' starting and ending with a letter or digit (e.g. "
                   "node.kubernetes.io/instance-type)")
LABEL_VALUE_WORDS = ("at most 63 letters, digits, '-', '_' and '.', starting and ending with a "
                     "letter or digit (or empty)")
SOURCE_PATTERN = (
    r"^(hf://[A-Za-z0-9][-_.A-Za-z0-9]*/[-_.A-Za-z0-9]+"
    r"|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?/[^\s]*"
    r"|s3://[a-z0-9][-.a-z0-9]{1,61}[a-z0-9](/[^\s]*)?)$"
)
SOURCE_MESSAGE = (
    "model.source must be hf://ORG/NAME (a Hugging Face repo id: for "
    "https://huggingface.co/Qwen/Qwen3-0.6B write hf://Qwen/Qwen3-0.6B and put a branch, tag or commit "
    "in model.revision), pvc://CLAIM/PATH (a PersistentVolumeClaim in this namespace) or "
    "s3://BUCKET/PREFIX"
)
# A hub base URL: http(s), a DNS name or IPv4 address, an optional port 1-65535 and path; no
# credentials, query or fragment. No backslashes or quotes: it is also embedded in a CEL rule.
HUB_ENDPOINT_PATTERN = (
    r"^https?://[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?"
    r"(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?"
    r"(/[-A-Za-z0-9._~!$&()*+,;=:@%/]*)?$"
)
HUB_ENDPOINT_MESSAGE = (
    "model.hub.endpoint must be an http:// or https:// URL with a host (DNS name or IPv4 address), an "
    "optional port 1-65535 and path, and no credentials, query or fragment, e.g. "
    "https://hub.mirror.internal or http://hub-mirror.models.svc:8080"
)

SECRET_NAME_WORDS = ("a Secret name: at most 253 lower-case letters, digits, '-' and '.', starting and "
                     "ending with a letter or digit")
SECRET_KEY_WORDS = "a key of the Secret: letters, digits, '-', '_' and '.'"


def rules(*pairs: tuple[str, str]) -> dict[str, Any]:
    """CEL validation rules (rule, message) for a model's JSON schema."""
    return {"x-kubernetes-validations": [{"rule": r, "message": m} for r, m in pairs]}


def _cel_string(pattern: str) -> str:
    if "'" in pattern:
        raise ValueError(f"pattern {pattern!r} cannot be a raw CEL string")
    return f"r'{pattern}'"


def matching(pattern: str, message: str, *also: tuple[str, str]) -> tuple[Any, Any]:
    """Annotated metadata: the value must match `pattern`, else `message` (words, not the regex).

    The same check runs in pydantic (specs that reach the operator without admission) and as
    a CEL rule in the CRD, so admission and `slmctl validate` say the same sentence. A plain
    JSON-schema `pattern` would make the API server quote the regular expression instead.
    Other rules of the field go in `also`: a second Field(json_schema_extra=...) would replace
    these, not add to them."""
    rx = re.compile(pattern)

    def check(value: Any) -> Any:
        if isinstance(value, str) and not rx.fullmatch(value):
            raise PydanticCustomError("pattern_in_words", message)
        return value

    return AfterValidator(check), Field(json_schema_extra=rules(
        (f"self.matches({_cel_string(pattern)})", message), *also))


def label_map(field: str, *, values: bool = True, max_items: int = 32) -> tuple[Any, ...]:
    """Annotated metadata for a map of labels (keys and values checked) or annotations (keys)."""
    key_rx, value_rx = re.compile(LABEL_KEY_PATTERN), re.compile(LABEL_VALUE_PATTERN)
    key_msg = f"{field} keys must each be {LABEL_KEY_WORDS}"
    value_msg = f"{field} values must each be a label value: {LABEL_VALUE_WORDS}"

    def check(value: Any) -> Any:
        for k, v in (value or {}).items():
            if len(k) > 317 or not key_rx.fullmatch(k):
                raise PydanticCustomError("label_key", key_msg)
            if values and not value_rx.fullmatch(v):
                raise PydanticCustomError("label_value", value_msg)
        return value

    pairs = [(f"self.all(k, size(k) <= 317 && k.matches({_cel_string(LABEL_KEY_PATTERN)}))", key_msg)]
    if values:
        pairs.append((f"self.all(k, self[k].matches({_cel_string(LABEL_VALUE_PATTERN)}))", value_msg))
    return AfterValidator(check), Field(max_length=max_items, json_schema_extra=rules(*pairs))


class Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", use_enum_values=True
    )


# The engine enum, from the engine table (engines/table.py): every engine, then auto.
Engine = StrEnum("Engine", {n.upper(): n for n in (*engine_table.ENGINE_NAMES, engine_table.AUTO)})  # type: ignore[misc]


class QuantFormat(StrEnum):
    NONE = "none"
    GGUF = "gguf"
    ONNX = "onnx"
    AWQ = "awq"
    GPTQ = "gptq"
    FP8 = "fp8"
    MLX = "mlx"


# Export-only formats: the quantization Job makes and gates them, no engine in the cluster
# serves them, so they need serving.enabled: false. Types per format (the first: default).
EXPORT_FORMAT_TYPES: dict[str, tuple[str, ...]] = {"mlx": ("4bit", "8bit")}
# Tools for format onnx (quantization.tool): onnxruntime-genai's builder, or Olive's GPTQ pass
# before it (int4 only). The default is the one docs/quantization.md's comparison picked.
ONNX_TOOLS: tuple[str, ...] = ("builder", "olive")
DEFAULT_ONNX_TOOL = "builder"


# Which quantization formats each engine can serve (enforced at admission), and the valid
# types per format (the first one is the default): both from the engine table.
ENGINE_FORMATS: dict[str, tuple[str, ...]] = {r.name: r.formats for r in engine_table.ROWS}
FORMAT_TYPES: dict[str, tuple[str, ...]] = {**engine_table.FORMAT_TYPES, **EXPORT_FORMAT_TYPES}


def _cel_list(values: tuple[str, ...] | list[str]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def _cel_is(field: str, values: tuple[str, ...] | list[str]) -> str:
    """`field == 'a'` for one value, `field in ['a', 'b']` for several."""
    return f"{field} == '{values[0]}'" if len(values) == 1 else f"{field} in {_cel_list(values)}"


def _words(names: list[str], sep: str = " or ") -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + sep + names[-1]


def format_type_rule() -> tuple[str, str]:
    """CEL: quantization.type is one of its format's types (FORMAT_TYPES, grouped by types)."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for fmt, types in FORMAT_TYPES.items():
        groups.setdefault(types, []).append(fmt)
    terms = [f"({_cel_is('self.format', fmts)} && {_cel_is('self.type', types)})"
             for types, fmts in groups.items()]
    words = [f"{_words(fmts, ' and ')} {'takes' if len(fmts) == 1 else 'take'} {'|'.join(types)}"
             for types, fmts in groups.items()]
    return ("!has(self.type) || !has(self.format) || " + " || ".join(terms),
            "quantization.type does not match quantization.format: " + "; ".join(words))


def engine_rules() -> list[tuple[str, str]]:
    """The SLMDeploymentSpec CEL rules that depend on engines, built from the engine table and
    registry: the formats and types each engine serves, options only for their engine, GPU-only
    engines, and the autoscaling signals each engine exports."""
    rows = engine_table.ROWS
    fmt_terms = " || ".join(f"(self.engine.name == '{r.name}' && {_cel_is('self.quantization.format', r.formats)})"
                            for r in rows)
    out = [(
        "!has(self.quantization) || !has(self.quantization.format) || self.engine.name == 'auto' || " + fmt_terms,
        "quantization.format is not served by engine.name: " + engine_table.serves_words(),
    )]
    # Types only some of a format's engines serve (llama.cpp's ternary TQ1_0/TQ2_0).
    restricted: dict[tuple[str, ...], list[str]] = {}
    for fmt, types in FORMAT_TYPES.items():
        for t in types:
            servers = engine_table.engines_serving(fmt, t)
            if servers != engine_table.engines_serving(fmt):
                restricted.setdefault(servers, []).append(t)
    for servers, types in restricted.items():
        out.append((
            f"!has(self.quantization) || !has(self.quantization.type) || "
            f"!({_cel_is('self.quantization.type', types)}) || "
            f"self.engine.name in {_cel_list([*servers, engine_table.AUTO])}",
            f"quantization.type {'|'.join(types)} is served only by engine.name {_words(list(servers))} "
            "(or auto)"))
    default_terms = " || ".join(
        f"(self.engine.name == '{r.name}' && {_cel_is('self.quantization.type', r.types(r.default_format))})"
        for r in rows)
    out.append((
        "!has(self.quantization) || !has(self.quantization.type) || has(self.quantization.format) || "
        + default_terms,
        "quantization.type needs quantization.format (or an engine.name whose default format takes "
        "that type): e.g. format: gguf for Q4_K_M, onnx for int4, awq for w4a16"))
    return out


def engine_resource_rules() -> list[tuple[str, str]]:
    """GPU-only engines need a GPU; engine options need their engine; autoscaling signals need
    an engine that exports them (from the registry)."""
    out = []
    for r in engine_table.ROWS:
        if r.devices == ("gpu",):
            out.append((f"self.engine.name != '{r.name}' || !has(self.resources) || !has(self.resources.gpu) || "
                        "self.resources.gpu.count >= 1",
                        f"engine.name {r.name} needs resources.gpu.count >= 1"))
    return out


def engine_option_rules() -> list[tuple[str, str]]:
    return [(f"!has(self.engine.{r.name}) || self.engine.name in ['{r.name}', 'auto']",
             f"engine.{r.name} options need engine.name {r.name}") for r in engine_table.ROWS]


def autoscaling_engine_rules() -> list[tuple[str, str]]:
    kv = [e.row.name for e in engines.all_engines() if e.kv_cache_metric]
    queue = [e.row.name for e in engines.all_engines() if e.queue_metric is not None]
    return [
        (f"!has(self.autoscaling) || {_cel_is('self.engine.name', kv)} || "
         "self.autoscaling.metrics.all(m, m.type != 'KVCacheUsage')",
         f"autoscaling KVCacheUsage needs engine.name {_words(kv)} (only "
         f"{_words([engines.row(n).title for n in kv])} exports KV-cache usage)"),
        (f"!has(self.autoscaling) || {_cel_is('self.engine.name', queue)} || "
         "self.autoscaling.metrics.all(m, m.type != 'QueueDepth')",
         f"autoscaling QueueDepth needs engine.name {_words(queue)}"),
    ]


class SecretKeyRef(Model):
    """A key of a Secret in the CR's namespace."""

    name: Annotated[str, Field(description="Name of the Secret (same namespace).", max_length=253),
                    *matching(OBJECT_NAME_PATTERN, f"name must be {SECRET_NAME_WORDS}")]
    key: Annotated[str, Field(description="Key inside the Secret.", max_length=253),
                   *matching(SECRET_KEY_PATTERN, f"key must be {SECRET_KEY_WORDS}")] = "token"


class SecretRef(Model):
    """A Secret in the CR's namespace."""

    name: Annotated[str, Field(description="Name of the Secret (same namespace).", max_length=253),
                    *matching(OBJECT_NAME_PATTERN, f"name must be {SECRET_NAME_WORDS}")]


class CABundleRef(Model):
    """A PEM CA bundle in a Secret of the CR's namespace."""

    name: Annotated[str, Field(description="Name of the Secret (same namespace).", max_length=253),
                    *matching(OBJECT_NAME_PATTERN, f"name must be {SECRET_NAME_WORDS}")]
    key: Annotated[str, Field(description="Key holding the PEM bundle.", max_length=253),
                   *matching(SECRET_KEY_PATTERN, f"key must be {SECRET_KEY_WORDS}")] = "ca.crt"


class HubSpec(Model):
    """The hub an hf:// source is downloaded from: a private mirror or an air-gapped hub.
    Each field falls back to the operator-wide setting (chart values hub.*)."""

    endpoint: Annotated[str | None, Field(
        description="Base URL of a Hugging Face-compatible hub, given to the quantization Job as "
                    "HF_ENDPOINT, e.g. https://hub.mirror.internal or http://hub-mirror.models.svc:8080 "
                    "(the Job's NetworkPolicy opens its port). Default: the operator's hub.endpoint, "
                    "else the public hub.",
        max_length=512,
        json_schema_extra=rules((f"self.matches('{HUB_ENDPOINT_PATTERN}')", HUB_ENDPOINT_MESSAGE)),
    )] = None
    ca_bundle_secret_ref: Annotated[CABundleRef | None, Field(
        description="Secret with a PEM CA bundle the quantization Job trusts for TLS to the hub "
                    "(mounted read-only; SSL_CERT_FILE and REQUESTS_CA_BUNDLE point at it). It "
                    "replaces the image's CA store for the Job: include public roots if the hub "
                    "redirects elsewhere. Default: the operator's hub.caBundleSecretName.")] = None

    @field_validator("endpoint")
    @classmethod
    def _endpoint_is_a_hub_url(cls, value: str | None) -> str | None:
        """The CEL rule's check, for specs that reach the operator without admission (same message)."""
        if value is not None and not re.fullmatch(HUB_ENDPOINT_PATTERN, value):
            raise PydanticCustomError("hub_endpoint", HUB_ENDPOINT_MESSAGE)
        return value


class ModelSource(Model):
    """Where the model comes from."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            ("!self.source.startsWith('hf://') || has(self.revision)",
             "model.revision is required for hf:// sources: pin a commit SHA or tag "
             "(e.g. revision: main, better a 40-hex commit)"),
            ("!has(self.tokenSecretRef) || self.source.startsWith('hf://')",
             "model.tokenSecretRef only applies to hf:// sources"),
            ("!has(self.s3CredentialsSecretRef) || self.source.startsWith('s3://')",
             "model.s3CredentialsSecretRef only applies to s3:// sources"),
            ("!has(self.hub) || self.source.startsWith('hf://')",
             "model.hub only applies to hf:// sources: remove it, or use an hf:// source"),
        ),
    )

    source: Annotated[str, Field(
        description="Model location: hf://ORG/NAME (Hugging Face hub), pvc://CLAIM/PATH (a "
                    "PersistentVolumeClaim in this namespace) or s3://BUCKET/PREFIX. Immutable: "
                    "create a new SLMDeployment to serve another model.",
        max_length=512,
    ), *matching(SOURCE_PATTERN, SOURCE_MESSAGE,
                 ("self == oldSelf", "model.source is immutable: create a new SLMDeployment instead"))]
    revision: Annotated[str | None, Field(
        description="Hub revision to pin: a commit SHA (recommended), tag or branch.", max_length=128),
        *matching(r"^[-_./A-Za-z0-9]{1,128}$",
                  "model.revision must be a commit SHA, tag or branch name: letters, digits, '-', '_', "
                  "'.' and '/' (e.g. main, v1.0 or a 40-hex commit)")] = None
    token_secret_ref: Annotated[SecretKeyRef | None, Field(
        description="Secret holding a hub token for gated models. Mounted as a file into the "
                    "quantization Job only; never placed in args or env literals.")] = None
    hub: Annotated[HubSpec | None, Field(
        description="Hub endpoint and CA bundle for hf:// sources (private mirrors, air-gapped "
                    "clusters). Omitted: the operator-wide settings.")] = None
    s3_credentials_secret_ref: Annotated[SecretRef | None, Field(
        description="Secret with S3 credentials for s3:// sources: keys AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY (optional AWS_SESSION_TOKEN, AWS_REGION, AWS_ENDPOINT_URL). "
                    "Mounted as files into the quantization Job only.")] = None
    trust_remote_code: Annotated[bool, Field(
        description="Run Python code shipped with the model. Off by default: enable only for "
                    "models whose code you have reviewed.")] = False
    served_name: Annotated[str | None, Field(
        description="Model name clients pass in requests (default: the model's repo name, "
                    "lower-cased).", max_length=128),
        *matching(r"^[-_.:/A-Za-z0-9]{1,128}$",
                  "model.servedName must be 1 to 128 letters, digits, '-', '_', '.', ':' and '/' "
                  "(e.g. qwen3-0.6b)")] = None
    context_length: Annotated[int | None, Field(
        description="Maximum context length to serve (tokens): vLLM --max-model-len, Ollama num_ctx, "
                    "the ONNX server's --max-model-len. Default: chosen by sizing so the KV cache for "
                    "the engine's concurrency fits.", ge=256, le=1048576)] = None


class Quantization(Model):
    """Quantization performed by a Job before serving."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            format_type_rule(),
            ("!has(self.tool) || (has(self.format) && self.format == 'onnx')",
             "quantization.tool applies to format onnx only: remove tool, or set format: onnx"),
            ("!has(self.tool) || self.tool != 'olive' || !has(self.type) || self.type == 'int4'",
             "quantization.tool olive makes int4 only (Olive's GPTQ recipe): set type: int4, or "
             "tool: builder for other ONNX types"),
        ),
    )

    format: Annotated[QuantFormat | None, Field(
        description="none | gguf | onnx | awq | gptq | fp8 | mlx. mlx (Apple MLX, made with mlx-lm) "
                    "is export-only: no engine in the cluster serves it, so it needs serving.enabled: "
                    "false. Omit to let sizing choose for the engine and hardware.")] = None
    type: Annotated[str | None, Field(
        description="Format-specific type: Q4_K_M, Q5_K_M, Q8_0, Q6_K, Q4_0, TQ1_0, TQ2_0 (gguf; the "
                    "ternary TQ1_0/TQ2_0 only for BitNet b1.58 models, served by llamacpp); int4, fp16 "
                    "(onnx); w4a16 (awq, gptq); fp8; bf16, fp16 (none); 4bit, 8bit (mlx). Default: "
                    "the first.",
        max_length=16)] = None
    tool: Annotated[Literal["builder", "olive"] | None, Field(
        description="format onnx only: builder (onnxruntime-genai's model builder, round-to-nearest "
                    "int4) or olive (Microsoft Olive's GPTQ pass, calibrated, then the builder; int4 "
                    f"only). Default: {DEFAULT_ONNX_TOOL} (docs/quantization.md compares them).")] = None
    max_perplexity_increase_percent: Annotated[int, Field(
        description="Quality gate: the quantization Job fails when perplexity on the "
                    "built-in evaluation text rises by more than this many percent.",
        ge=0, le=1000)] = 10


class Serving(Model):
    """Whether the operator serves the model after quantizing it."""

    enabled: Annotated[bool, Field(
        description="true (default): serve the artifact (Deployment, Service, autoscaling). false: "
                    "quantize-only: run the quantization Job and its quality gate, keep the artifact "
                    "on the volume and report its location, size, checksum and perplexities in "
                    "status.artifact; no Deployment, Service or HPA. Required for export-only formats "
                    "(mlx).")] = True


# spec.export[].target: s3://BUCKET[/PREFIX] (S3 bucket naming), hf://ORG/NAME (a hub repo id),
# oci://HOST[:PORT]/REPOSITORY (distribution/reference's domain and path components; no tag or
# digest: the artifact key is the tag). No quotes or backslashes: it is also a CEL string.
EXPORT_TARGET_PATTERN = (
    r"^(s3://[a-z0-9][-.a-z0-9]{1,61}[a-z0-9](/[^\s]*)?"
    r"|hf://[A-Za-z0-9][-_.A-Za-z0-9]*/[-_.A-Za-z0-9]+"
    rf"|oci://{_DOMAIN_PART}(\.{_DOMAIN_PART})*(:[0-9]{{1,5}})?/{_PATH_PART}(/{_PATH_PART})*)$"
)
EXPORT_TARGET_MESSAGE = (
    "the export target must be s3://BUCKET/PREFIX (a bucket name of 3 to 63 lower-case letters, digits, '.' "
    "and '-'), hf://ORG/NAME (a hub repository) or oci://HOST[:PORT]/REPOSITORY (lower-case path, no tag: "
    "the artifact key is the tag), e.g. s3://models/exports, hf://acme/qwen3-gguf or "
    "oci://registry.example.com:5000/models/qwen3"
)
MAX_EXPORT_TARGETS = 8


class ExportTarget(Model):
    """Where the finished artifact is pushed after the quality gate (an export Job per CR).

    s3://: objects <prefix>/<artifact>/<file>; hf://: branch <artifact> of the repo; oci://: an
    ORAS-style artifact tagged <artifact>, where <artifact> is the artifact's folder name
    (format-type-key, e.g. gguf-q4_k_m-1a2b3c4d). docs/quantization.md, "Export"."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            ("!self.target.startsWith('hf://') || has(self.credentialsSecret)",
             "an hf:// export target needs credentialsSecret: a Secret with key HF_TOKEN (a token with write "
             "access to the repository; optional key HF_ENDPOINT for a private hub)"),
            ("!has(self.plainHttp) || !self.plainHttp || self.target.startsWith('oci://')",
             "plainHttp applies to oci:// export targets only: remove it"),
        ),
    )

    target: Annotated[str, Field(
        description="s3://BUCKET/PREFIX, hf://ORG/NAME or oci://HOST[:PORT]/REPOSITORY.", max_length=512),
        *matching(EXPORT_TARGET_PATTERN, EXPORT_TARGET_MESSAGE)]
    credentials_secret: Annotated[SecretRef | None, Field(
        description="Secret mounted as files into the export Job only: s3:// keys AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY (optional AWS_SESSION_TOKEN, AWS_REGION, AWS_ENDPOINT_URL); hf:// "
                    "key HF_TOKEN (optional HF_ENDPOINT); oci:// a kubernetes.io/dockerconfigjson Secret "
                    "(.dockerconfigjson) or keys username and password. Omitted: anonymous (s3://, oci://).")] = None
    plain_http: Annotated[bool, Field(
        description="oci:// only: talk http instead of https to the registry (a registry inside the "
                    "cluster without TLS).")] = False


def serving_enabled(spec: SLMDeploymentSpec) -> bool:
    """True unless spec.serving.enabled is false (quantize-only)."""
    return spec.serving is None or spec.serving.enabled


def export_format_rules() -> list[tuple[str, str]]:
    """CEL: export-only formats need serving.enabled false; formats the catalog knows a model's
    architecture cannot be converted to are refused for that model.source (sizing/formats.py)."""
    from slm_operator.sizing import formats as catalog_formats

    out = []
    for fmt in EXPORT_FORMAT_TYPES:
        out.append((
            f"!has(self.quantization) || !has(self.quantization.format) || self.quantization.format != '{fmt}' "
            "|| (has(self.serving) && has(self.serving.enabled) && !self.serving.enabled)",
            f"quantization.format {fmt} is export-only: no engine in the cluster serves it; set "
            "serving.enabled: false to quantize and gate only, or choose format gguf or onnx to serve it"))
    for refusal in catalog_formats.catalog_refusals():
        tool = (f" && has(self.quantization.tool) && self.quantization.tool == '{refusal.tool}'"
                if refusal.tool else "")
        out.append((
            f"!has(self.quantization) || !has(self.quantization.format) || !(self.quantization.format == "
            f"'{refusal.format}'{tool} && {_cel_is('self.model.source', list(refusal.sources))})",
            f"quantization.format {refusal.format}{' with tool ' + refusal.tool if refusal.tool else ''} "
            f"cannot be made for model.source {_words(list(refusal.sources))}: {refusal.reason}"))
    return out


# `vllm serve` flags refused in engine.vllm.extraArgs: those that weaken security (API keys in
# args, dev endpoints, arbitrary imports, prompt logging) and those typed options own. The
# vLLM launcher refuses the same set at start (tests/engines checks they agree).
VLLM_REFUSED_FLAGS = (
    "api-key", "hf-token", "config", "allowed-local-media-path", "middleware", "tool-parser-plugin",
    "reasoning-parser-plugin", "io-processor-plugin", "logits-processors", "worker-cls",
    "worker-extension-cls", "kv-transfer-config", "ec-transfer-config", "trust-request-chat-template",
    "trust-request-mm-kwargs", "tool-server", "enable-tokenizer-info-endpoint", "enable-scale-out",
    "enable-fault-tolerance", "profiler-config", "enable-log-requests", "enable-log-outputs",
    "allow-credentials", "grpc", "grpc-port", "headless", "uds",
    "model", "served-model-name", "host", "port", "max-model-len", "gpu-memory-utilization",
    "max-num-seqs", "tensor-parallel-size", "enable-prefix-caching", "quantization", "dtype",
    "kv-cache-dtype", "trust-remote-code", "tool-call-parser", "enable-auto-tool-choice", "reasoning-parser",
)
_REFUSED_RE = "(?i)^--(no[-_])?(" + "|".join(f.replace("-", "[-_]") for f in VLLM_REFUSED_FLAGS) + ")([=.+]|$)"


class VLLMOptions(Model):
    """Typed vLLM options (mapped to `vllm serve` flags by the vLLM launcher)."""

    max_model_len: Annotated[int | None, Field(
        description="--max-model-len. Default: from sizing.", ge=256, le=1048576)] = None
    gpu_memory_utilization_percent: Annotated[int | None, Field(
        description="--gpu-memory-utilization as a percent (90 means 0.90). Default: from "
                    "sizing.", ge=10, le=98)] = None
    max_num_seqs: Annotated[int, Field(
        description="--max-num-seqs: concurrent sequences per replica.", ge=1, le=4096)] = 64
    tensor_parallel_size: Annotated[int, Field(
        description="--tensor-parallel-size: must not exceed the GPU count.", ge=1, le=8)] = 1
    enable_prefix_caching: Annotated[bool, Field(description="--enable-prefix-caching.")] = True
    kv_cache_dtype: Annotated[Literal["auto", "fp8"], Field(description="--kv-cache-dtype.")] = "auto"
    # vLLM 0.33.0's registered names (engines/vllm_parsers.py, checked against vLLM's registries).
    tool_call_parser: Annotated[
        Literal[(*vllm_parsers.VLLM_TOOL_CALL_PARSERS, vllm_parsers.NONE)] | None, Field(  # type: ignore[valid-type]
            description="--tool-call-parser (with --enable-auto-tool-choice): how vLLM reads tool calls "
                        "from the model's output, so requests with tools and tool_choice auto are served. "
                        "Default: the catalog's for the model (hermes for Qwen3, llama3_json for Llama 3.2, "
                        "phi4_mini_json for Phi-4-mini, mistral for Mistral v0.3), none for others; 'none' "
                        "turns tool calling off.")] = None
    reasoning_parser: Annotated[
        Literal[(*vllm_parsers.VLLM_REASONING_PARSERS, vllm_parsers.NONE)] | None, Field(  # type: ignore[valid-type]
            description="--reasoning-parser: vLLM returns the model's reasoning in reasoning_content, apart "
                        "from content. Default: the catalog's for the model (qwen3 for Qwen3), none for "
                        "others; 'none' turns it off.")] = None
    extra_args: Annotated[list[Annotated[str, Field(max_length=256)]], Field(
        description="Extra `vllm serve` flags. Flags that enable dev endpoints, pass API keys, "
                    "import code or log prompts are refused, and so are flags the typed options set.",
        max_length=32,
        json_schema_extra=rules((f"self.all(a, !a.matches('{_REFUSED_RE}'))",
                                 "engine.vllm.extraArgs contains a refused flag: API keys, tokens and "
                                 "trust-remote-code come from typed fields and Secrets; dev endpoints, "
                                 "code imports and prompt logging are not allowed; typed options (model, "
                                 "port, max-model-len, ...) must be set through their fields")),
    )] = []


class OllamaOptions(Model):
    """Typed Ollama options (written into the Modelfile by the importer)."""

    num_ctx: Annotated[int | None, Field(description="PARAMETER num_ctx. Default: from sizing.",
                                         ge=256, le=1048576)] = None
    num_parallel: Annotated[int, Field(description="OLLAMA_NUM_PARALLEL.", ge=1, le=64)] = 4
    keep_alive: Annotated[str, Field(description="OLLAMA_KEEP_ALIVE (-1 keeps the model loaded).",
                                     max_length=16),
                          *matching(r"^(-1|[0-9]+[smh]?)$",
                                    "engine.ollama.keepAlive must be -1 (keep the model loaded) or a "
                                    "whole number of seconds, minutes or hours such as 300, 5m or 1h")] = "-1"


class OnnxRuntimeOptions(Model):
    """Typed options for the project's ONNX Runtime OpenAI server."""

    workers: Annotated[int, Field(description="Concurrent generation slots.", ge=1, le=64)] = 4
    queue_size: Annotated[int, Field(description="Waiting requests before 429 back-pressure.",
                                     ge=1, le=10000)] = 64
    target: Annotated[Literal["cpu", "cuda"] | None, Field(
        description="Execution provider. Default: cuda when a GPU is requested, else cpu.")] = None


class LlamaCppOptions(Model):
    """Typed llama.cpp options (mapped to `llama-server` flags)."""

    parallel: Annotated[int, Field(description="--parallel: generation slots, each holding the full "
                                               "context (--ctx-size is context x parallel).",
                                   ge=1, le=64)] = 4


class EngineSpec(Model):
    """The serving engine."""

    name: Annotated[Engine, Field(description=" | ".join(engine_table.ENGINE_NAMES)
                                  + " | auto (sizing chooses for the hardware).")] = Engine.AUTO
    image: Annotated[str | None, Field(description="Override the engine image (pin a tag or "
                                                   "digest).", max_length=512),
                     *matching(IMAGE_PATTERN, "engine.image must be an image reference: [REGISTRY[:PORT]/]"
                               "PATH[:TAG][@DIGEST] with a lower-case PATH and no spaces, e.g. "
                               "registry.example.com/slm/vllm:0.11.0 or ...@sha256:<64 hex>")] = None
    vllm: VLLMOptions | None = None
    ollama: OllamaOptions | None = None
    onnxruntime: OnnxRuntimeOptions | None = None
    llamacpp: LlamaCppOptions | None = None


class GPU(Model):
    count: Annotated[int, Field(description="GPUs per replica (nvidia.com/gpu).", ge=0, le=8)] = 1
    product: Annotated[str | None, Field(
        description="GPU product label value (nvidia.com/gpu.product), e.g. NVIDIA-L4 or "
                    "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb; used for scheduling and sizing.", max_length=63),
        *matching(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
                  "resources.gpu.product must be the node's nvidia.com/gpu.product label value, e.g. "
                  f"NVIDIA-L4: {LABEL_VALUE_WORDS.replace(' (or empty)', '')}")] = None


class Resources(Model):
    """Per-replica resources. Omitted values come from the sizing estimate."""

    gpu: GPU | None = None
    cpu: Annotated[str | None, Field(description="CPU request and limit (e.g. \"4\", \"500m\").",
                                     max_length=32),
                   *matching(QUANTITY_PATTERN, "resources.cpu must be a Kubernetes quantity such as "
                             "4, 0.5 or 500m (a number with an optional suffix m, k, Ki, M, Mi, G, Gi...)")] = None
    memory: Annotated[str | None, Field(description="Memory request and limit (e.g. \"16Gi\").",
                                        max_length=32),
                      *matching(QUANTITY_PATTERN, "resources.memory must be a Kubernetes quantity such "
                                "as 16Gi or 512Mi (a number with an optional suffix Ki, Mi, Gi, Ti, k, M, "
                                "G, T...)")] = None


class MetricType(StrEnum):
    GPU_UTILIZATION = "GPUUtilization"
    QUEUE_DEPTH = "QueueDepth"
    KV_CACHE_USAGE = "KVCacheUsage"
    CPU = "CPU"


class ScalingMetric(Model):
    """One autoscaling signal."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            ("self.type != 'QueueDepth' || has(self.targetAverageValue)",
             "autoscaling.metrics[].targetAverageValue is required for QueueDepth "
             "(waiting requests per replica, e.g. 4)"),
            ("self.type == 'QueueDepth' || has(self.targetPercent)",
             "autoscaling.metrics[].targetPercent is required for GPUUtilization, "
             "KVCacheUsage and CPU"),
        ),
    )

    type: Annotated[MetricType, Field(description="GPUUtilization (dcgm-exporter), QueueDepth "
                                                  "(waiting requests), KVCacheUsage (vLLM), CPU.")]
    target_percent: Annotated[int | None, Field(description="Target average percent.", ge=1,
                                                le=100)] = None
    target_average_value: Annotated[int | None, Field(description="Target waiting requests per "
                                                      "replica (QueueDepth).", ge=1,
                                                      le=10000)] = None


class Autoscaling(Model):
    """A HorizontalPodAutoscaler (autoscaling/v2) for the serving Deployment."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            ("self.minReplicas <= self.maxReplicas",
             "autoscaling.minReplicas must be <= autoscaling.maxReplicas"),
            ("self.metrics.all(m, self.metrics.exists_one(n, n.type == m.type))",
             "autoscaling.metrics must not list the same type twice"),
        ),
    )

    min_replicas: Annotated[int, Field(description="Lower bound.", ge=1, le=1000)] = 1
    max_replicas: Annotated[int, Field(description="Upper bound.", ge=1, le=1000)]
    metrics: Annotated[list[ScalingMetric], Field(
        description="Signals; default per engine: vLLM and ONNX Runtime QueueDepth 4 waiting requests "
                    "per replica, Ollama CPU 70% (docs/autoscaling.md has the trade-offs).",
        max_length=4)] = []
    scale_down_stabilization_seconds: Annotated[int, Field(
        description="How long load must stay low before removing replicas (model servers "
                    "start slowly).", ge=0, le=3600)] = 600


class PeerSelector(Model):
    """Who may call the endpoint (a NetworkPolicy peer)."""

    namespace_selector: Annotated[dict[str, Annotated[str, Field(max_length=63)]] | None, Field(
        description="matchLabels for namespaces; omitted means this namespace only."),
        *label_map("access.allowedFrom[].namespaceSelector")] = None
    pod_selector: Annotated[dict[str, Annotated[str, Field(max_length=63)]] | None, Field(
        description="matchLabels for pods; omitted means all pods of the selected namespaces."),
        *label_map("access.allowedFrom[].podSelector")] = None


class ApiKeys(Model):
    """Named consumers, each with its own key and optional limits (runtime-images/gateway README)."""

    secret_ref: Annotated[SecretRef, Field(
        description="Secret whose entries are named consumers: each entry's name is the consumer (a DNS "
                    "label, the metrics label), its value a bare key, or YAML with key (or keyRef: {name, "
                    "key}) and optional requestsPerMinute, tokensPerMinute, maxTokens, allowedRoutes. "
                    "Changes take effect within about a minute, without restarts.")]
    fail_open: Annotated[bool, Field(
        description="When the shared limit store (Redis) does not answer: false (default) refuses "
                    "consumers with limits with 503; true lets them through unlimited.")] = False


class Access(Model):
    api_keys: Annotated[ApiKeys | None, Field(
        description="Per-consumer keys and limits. Omitted: one consumer, 'default', with the key of "
                    "apiKeySecretRef (or the generated one).")] = None
    api_key_secret_ref: Annotated[SecretKeyRef | None, Field(
        description="Secret with the API key clients must send as a Bearer token. Omitted: a "
                    "Secret <name>-api-key with a random key is generated (and kept).")] = None
    allowed_from: Annotated[list[PeerSelector], Field(
        description="NetworkPolicy ingress peers for the API port. Empty: only pods in this "
                    "namespace.", max_length=16)] = []


class RetainPolicy(StrEnum):
    RETAIN = "Retain"
    DELETE = "Delete"


class Storage(Model):
    """The model cache PVC (downloaded weights and quantized artifacts)."""

    size: Annotated[str | None, Field(
        description="PVC size. Default: from sizing (the quantization Job's peak: source, intermediate and "
                    "artifact, with headroom; docs/sizing.md). Can only "
                    "grow.", max_length=32),
        *matching(QUANTITY_PATTERN, "storage.size must be a Kubernetes quantity such as 20Gi or 500Gi "
                  "(a number with an optional suffix Ki, Mi, Gi, Ti, k, M, G, T...)")] = None
    storage_class_name: Annotated[str | None, Field(
        description="StorageClass (immutable). Omitted: the cluster default.", max_length=253),
        *matching(OBJECT_NAME_PATTERN, "storage.storageClassName must be a StorageClass name: at most 253 "
                  "lower-case letters, digits, '-' and '.', starting and ending with a letter or digit",
                  ("self == oldSelf", "storage.storageClassName is immutable"))] = None
    access_mode: Annotated[Literal["ReadWriteOnce", "ReadWriteMany"], Field(
        description="ReadWriteOnce (default): every pod of the deployment (replicas, the Job) runs "
                    "on the node that holds the claim; ReadWriteMany lets replicas spread over nodes "
                    "(docs/sizing.md, Replicas and the model claim).",
        json_schema_extra=rules(("self == oldSelf", "storage.accessMode is immutable")),
    )] = "ReadWriteOnce"
    retain_policy: Annotated[RetainPolicy, Field(
        description="Retain (default) keeps the model cache PVC when the SLMDeployment is "
                    "deleted; Delete removes it.")] = RetainPolicy.RETAIN


class Monitoring(Model):
    service_monitor: Annotated[bool, Field(
        description="Create a ServiceMonitor (when the monitoring.coreos.com CRD exists).")] = True


class Toleration(Model):
    """A pod toleration, checked as the API server checks a pod's."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            ("(has(self.key) && self.key != '') || (has(self.operator) && self.operator == 'Exists')",
             "tolerations[].operator must be Exists when key is empty (that tolerates every taint)"),
            ("!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''",
             "tolerations[].value must be empty when operator is Exists"),
            ("!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
             "tolerations[].tolerationSeconds needs effect NoExecute"),
        ),
    )

    key: Annotated[str | None, Field(max_length=317),
                   *matching(f"^$|{LABEL_KEY_PATTERN}", f"tolerations[].key must be {LABEL_KEY_WORDS}")] = None
    operator: Literal["Exists", "Equal"] | None = None
    value: Annotated[str | None, Field(max_length=63),
                     *matching(LABEL_VALUE_PATTERN, f"tolerations[].value must be {LABEL_VALUE_WORDS}")] = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class SLMDeploymentSpec(Model):
    """Desired state: a model, how to quantize it, how to serve it."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            *engine_rules(),
            ("!has(self.replicas) || !has(self.autoscaling)",
             "set either replicas or autoscaling (the HPA owns the replica count)"),
            *engine_resource_rules(),
            ("!has(self.engine.vllm) || !has(self.resources) || !has(self.resources.gpu) || "
             "self.engine.vllm.tensorParallelSize <= self.resources.gpu.count",
             "engine.vllm.tensorParallelSize must not exceed resources.gpu.count"),
            *engine_option_rules(),
            *autoscaling_engine_rules(),
            ("!has(self.autoscaling) || (has(self.resources) && has(self.resources.gpu) && "
             "self.resources.gpu.count >= 1) || self.autoscaling.metrics.all(m, m.type != 'GPUUtilization')",
             "autoscaling GPUUtilization needs resources.gpu.count >= 1"),
            *export_format_rules(),
        ),
    )

    model: ModelSource
    quantization: Quantization | None = None
    serving: Annotated[Serving | None, Field(
        description="serving.enabled: false makes this a quantize-only deployment (see Serving).")] = None
    export: Annotated[list[ExportTarget], Field(
        description="Push the artifact, once it passed the quality gate, to these targets (S3, a hub "
                    "repository, an OCI registry); status.artifact.exports reports each. At most "
                    f"{MAX_EXPORT_TARGETS}, each target once.",
        max_length=MAX_EXPORT_TARGETS,
        json_schema_extra=rules(("self.all(x, self.exists_one(y, y.target == x.target))",
                                 "export targets must be distinct: remove the repeated target")))] = []
    engine: EngineSpec = EngineSpec()
    resources: Resources | None = None
    replicas: Annotated[int | None, Field(
        description="Fixed replica count (default 1). Omit when autoscaling is set.", ge=0,
        le=1000)] = None
    autoscaling: Autoscaling | None = None
    access: Access = Access()
    storage: Storage = Storage()
    monitoring: Monitoring = Monitoring()
    node_selector: Annotated[dict[str, Annotated[str, Field(max_length=63)]], Field(
        description="Extra node labels the serving pods require."), *label_map("nodeSelector")] = {}
    tolerations: Annotated[list[Toleration], Field(description="Extra tolerations.",
                                                   max_length=16)] = []
    pod_annotations: Annotated[dict[str, Annotated[str, Field(max_length=2048)]], Field(
        description="Annotations added to serving pods (at most 64, values up to 2048 characters: "
                    "the API server caps all of a pod's annotations at 256 KiB)."),
        *label_map("podAnnotations", values=False, max_items=64)] = {}


class ObjectMeta(Model):
    model_config = ConfigDict(extra="allow")
    name: Annotated[str, AfterValidator(lambda v: _check_name(v))]
    namespace: str = "default"
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


def _check_name(name: str) -> str:
    """The CRD's metadata.name rules, for CRs that reach the operator without admission."""
    if len(name) > MAX_NAME_LENGTH:
        raise PydanticCustomError("name_length", NAME_LENGTH_MESSAGE)
    if not re.fullmatch(NAME_PATTERN, name):
        raise PydanticCustomError("name_pattern", NAME_MESSAGE)
    return name


class SLMDeployment(Model):
    """A Small Language Model, served: the whole custom resource as the operator reads it."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["slm.ai/v1alpha1"] = API_VERSION  # type: ignore[assignment]
    kind: Literal["SLMDeployment"] = KIND  # type: ignore[assignment]
    metadata: ObjectMeta
    spec: SLMDeploymentSpec
    status: dict[str, Any] | None = None
