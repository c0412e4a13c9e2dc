"""The model and GPU catalog, and reading the same facts from a model's config.json.

Public API:

- ``ModelFacts``: what sizing needs to know about a model (frozen dataclass).
- ``GpuProduct``: one GPU product (memory, bandwidth, FP8, compute capability).
- ``list_models()`` / ``list_gpus()``: the shipped catalog (data/models.yaml).
- ``lookup_model(source) -> ModelFacts | None``: "hf://Org/Name", "Org/Name", a known
  pre-quantized alias ("Qwen/Qwen3-8B-AWQ", "bartowski/Qwen_Qwen3-8B-GGUF") or a bare
  name ("qwen3-8b"), case-insensitive. None when the catalog does not know it.
- ``resolve_model(source, revision=None, token=None)``: catalog first, then the hub's
  config.json; raises ``UnknownModelError`` when neither works (never guesses).
- ``facts_from_config(config, model_id=...)``: facts from a config.json dict (handles a
  nested ``text_config`` with omitted class defaults, as Gemma 3 ships it).
- ``fetch_config(repo_id, revision, token)``: config.json via huggingface_hub.
- ``lookup_gpu(product) -> GpuProduct``: by nvidia.com/gpu.product label value or alias,
  including MIG slices ("NVIDIA-A100-SXM4-40GB-MIG-3g.20gb"); raises ``UnknownGpuError``.
- ``tier_for(params) -> str``: "Micro" | "Small" | "Medium" | "Large".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from typing import Any

import yaml

from slm_operator.sizing.errors import UnknownGpuError, UnknownModelError, UnsupportedModelError

MIB = 1 << 20
GIB = 1 << 30

# Tier boundaries in parameters (total, as published). Micro: below 1.5B (Qwen3-0.6B,
# gemma-3-1b, Llama-3.2-1B); Small: 1.5B up to 13.9B; Medium: 14B up to the "30B class"
# (a 30.5B checkpoint still counts as Medium); Large: 31B and above (Qwen3-32B).
TIER_BOUNDS: tuple[tuple[str, int], ...] = (
    ("Micro", 1_500_000_000),
    ("Small", 14_000_000_000),
    ("Medium", 31_000_000_000),
)

# Architectures whose checkpoints (and llama.cpp's GGUF graphs) fuse q/k/v into one
# matrix and gate/up into another. Matters for GGUF k-quant mixes (see quant.py).
FUSED_QKV_ARCHITECTURES = frozenset({"Phi3ForCausalLM"})


def tier_for(params: int) -> str:
    """Tier for a parameter count: Micro (<1.5B), Small (<14B), Medium (<31B), else Large."""
    for name, upper in TIER_BOUNDS:
        if params < upper:
            return name
    return "Large"


@dataclass(frozen=True)
class ModelFacts:
    """Architecture facts of a decoder-only transformer, as sizing needs them.

    Shapes follow the usual Llama-style block: q (hidden -> heads*head_dim), k and v
    (hidden -> kv_heads*head_dim), o (heads*head_dim -> hidden) and a gated MLP (gate and
    up: hidden -> intermediate, down: intermediate -> hidden).
    """

    id: str
    name: str
    architecture: str
    params: int
    layers: int
    hidden_size: int
    intermediate_size: int
    attention_heads: int
    kv_heads: int
    head_dim: int
    vocab_size: int
    max_context: int
    tied_embeddings: bool
    sliding_window: int | None = None
    sliding_window_layers: int = 0
    vision_params: int = 0
    gated: bool = False
    family: str = ""
    license: str = ""
    aliases: tuple[str, ...] = field(default_factory=tuple)
    source: str = "catalog"  # "catalog" or "config.json"
    quantized_as: str | None = None  # quant_method of a pre-quantized config.json
    hidden_act: str = "silu"  # config.json hidden_act (the feed-forward's activation)
    # vLLM --tool-call-parser / --reasoning-parser names for the model's own chat template
    # (data/models.yaml explains the choice); None: the template has no tools / no reasoning.
    tool_call_parser: str | None = None
    reasoning_parser: str | None = None

    @property
    def tier(self) -> str:
        return tier_for(self.params)

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        """Separate output projection; 0 when tied to the embedding."""
        return 0 if self.tied_embeddings else self.vocab_size * self.hidden_size

    @property
    def layer_matrices(self) -> dict[str, tuple[int, int]]:
        """Per-layer weight matrices as (input features, output features)."""
        q_out = self.attention_heads * self.head_dim
        kv_out = self.kv_heads * self.head_dim
        h, i = self.hidden_size, self.intermediate_size
        return {
            "q": (h, q_out), "k": (h, kv_out), "v": (h, kv_out), "o": (q_out, h),
            "gate": (h, i), "up": (h, i), "down": (i, h),
        }

    @property
    def linear_params(self) -> int:
        """All transformer-block matrix weights (what weight-only quantization compresses)."""
        return self.layers * sum(a * b for a, b in self.layer_matrices.values())

    @property
    def derived_params(self) -> int:
        """Parameter count recomputed from the shapes (norm weights: 2 per layer + final)."""
        norms = (2 * self.layers + 1) * self.hidden_size
        return (self.embedding_params + self.lm_head_params + self.linear_params + norms
                + self.vision_params)

    @property
    def other_params(self) -> int:
        """Norms, biases, q/k-norms: what is neither a matrix nor an embedding nor vision."""
        return max(0, self.params - self.embedding_params - self.lm_head_params
                   - self.linear_params - self.vision_params)

    @property
    def text_params(self) -> int:
        return self.params - self.vision_params

    @property
    def fused_qkv(self) -> bool:
        return self.architecture in FUSED_QKV_ARCHITECTURES

    @property
    def uses_gqa(self) -> bool:
        return self.kv_heads < self.attention_heads

    @property
    def full_attention_layers(self) -> int:
        return self.layers - self.sliding_window_layers


@dataclass(frozen=True)
class GpuProduct:
    """A GPU product as GPU Feature Discovery labels it (see data/models.yaml)."""

    product: str
    name: str
    memory_mib: int
    bandwidth_gbps: int
    fp8: bool
    compute_capability: str
    aliases: tuple[str, ...] = field(default_factory=tuple)
    mig_profile: str | None = None
    shared: bool = False  # GFD's "-SHARED" suffix: time-slicing or MPS shares the memory

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * MIB

    @property
    def cc(self) -> tuple[int, int]:
        major, minor = self.compute_capability.split(".")
        return int(major), int(minor)

    @property
    def bf16(self) -> bool:
        return self.cc >= (8, 0)


def _load() -> dict[str, Any]:
    text = resources.files("slm_operator").joinpath("data/models.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


@cache
def list_models() -> tuple[ModelFacts, ...]:
    """All catalog models, in file order."""
    out = []
    for row in _load()["models"]:
        row = dict(row)
        row["aliases"] = tuple(row.get("aliases") or ())
        out.append(ModelFacts(**row))
    return tuple(out)


@cache
def list_gpus() -> tuple[GpuProduct, ...]:
    """All catalog GPU products, smallest memory first."""
    out = []
    for row in _load()["gpus"]:
        row = dict(row)
        row["aliases"] = tuple(str(a) for a in row.get("aliases") or ())
        out.append(GpuProduct(**row))
    return tuple(out)


# -- model lookup -------------------------------------------------------------------------

_HUB_PREFIXES = ("hf://", "huggingface://", "https://huggingface.co/")
# Suffixes of repositories that hold the same weights pre-quantized or converted.
_VARIANT_SUFFIXES = ("-qat-q4_0-gguf", "-qat-q4_0-unquantized", "-gguf", "-awq", "-fp8",
                     "-fp8-dynamic", "-gptq-int4", "-gptq-int8", "-onnx", "-qat")


def hub_repo_id(source: str) -> str | None:
    """The "org/name" hub id inside a model source, or None for a non-hub source (pvc://, s3://).

    Accepts "hf://org/name", "hf://org/name@revision", "org/name".
    """
    s = source.strip()
    for prefix in _HUB_PREFIXES:
        if s.lower().startswith(prefix):
            s = s[len(prefix):]
            break
    else:
        if "://" in s:
            return None
    s = s.split("@", 1)[0].strip("/")
    parts = s.split("/")
    if len(parts) != 2 or not all(parts):
        return None
    return s


def _bare_name(name: str) -> str:
    n = name.lower()
    for suffix in _VARIANT_SUFFIXES:
        if n.endswith(suffix):
            n = n[: -len(suffix)]
            break
    return n


@cache
def _indexes() -> tuple[dict[str, ModelFacts], dict[str, list[ModelFacts]]]:
    by_id: dict[str, ModelFacts] = {}
    by_name: dict[str, list[ModelFacts]] = {}
    for m in list_models():
        for key in (m.id, *m.aliases):
            by_id[key.lower()] = m
        by_name.setdefault(m.name.lower(), []).append(m)
    return by_id, by_name


def lookup_model(source: str) -> ModelFacts | None:
    """Catalog facts for a model source, or None. Case-insensitive.

    Matching order: the exact hub id or a listed alias; then the repository name alone
    with converter suffixes (-GGUF, -AWQ, -FP8, -GPTQ-Int4, -onnx) and a re-uploader's
    "Org_" prefix removed ("bartowski/Qwen_Qwen3-8B-GGUF" -> "qwen3-8b"), when that names
    exactly one catalog model. A bare name ("Qwen3-8B") works the same way.
    """
    by_id, by_name = _indexes()
    repo = hub_repo_id(source)
    if repo is not None and repo.lower() in by_id:
        return by_id[repo.lower()]
    if repo is None and "://" in source:
        return None
    tail = (repo or source.strip().strip("/")).rsplit("/", 1)[-1]
    candidates = [_bare_name(tail)]
    if "_" in candidates[0]:
        candidates.append(candidates[0].split("_", 1)[1])
    for cand in candidates:
        hits = by_name.get(cand, [])
        if len(hits) == 1:
            return hits[0]
    return None


def gated_repo(source: str) -> str | None:
    """The hub repo id when the source names a model the hub gates (its own id or a listed alias,
    not a public re-upload matched by name), else None."""
    repo = hub_repo_id(source)
    if repo is None:
        return None
    facts = _indexes()[0].get(repo.lower())
    return repo if facts is not None and facts.gated else None


def resolve_model(source: str, revision: str | None = None, token: str | None = None, *,
                  fetch: bool = True, cache_dir: str | None = None) -> ModelFacts:
    """Facts for a model: the catalog, else the hub's config.json. Never guesses.

    Raises UnknownModelError (with what was tried) when neither gives facts, and
    UnsupportedModelError when the config describes an architecture sizing cannot model.
    """
    facts = lookup_model(source)
    if facts is not None:
        return facts
    repo = hub_repo_id(source)
    if repo is None:
        raise UnknownModelError(
            f"Model {source!r} is not in the sizing catalog and is not a hub repository whose "
            "config.json could be read; set resources (and quantization) explicitly.")
    if not fetch:
        raise UnknownModelError(
            f"Model {repo!r} is not in the sizing catalog (reading its config.json was not "
            "allowed); set resources explicitly or use a catalog model (slmctl models).")
    config = fetch_config(repo, revision, token, cache_dir=cache_dir)
    return facts_from_config(config, model_id=repo)


def fetch_config(repo_id: str, revision: str | None = None, token: str | None = None, *,
                 cache_dir: str | None = None, local_files_only: bool = False) -> dict[str, Any]:
    """Download (or read from the hub cache) config.json of a hub repository.

    Raises UnknownModelError on any failure (offline, gated without token, missing repo);
    the message never contains the token.
    """
    try:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(repo_id, "config.json", revision=revision, token=token,
                               cache_dir=cache_dir, local_files_only=local_files_only)
        with open(str(path), encoding="utf-8") as f:
            data = json.load(f)
    except Exception as e:  # the hub client raises many types; all mean "no facts"
        detail = str(e).splitlines()[0] if str(e) else ""
        if token:
            detail = detail.replace(token, "***")
        raise UnknownModelError(
            f"Model {repo_id!r} is not in the sizing catalog and its config.json could not be "
            f"read ({type(e).__name__}: {detail[:200]}); set resources explicitly, or make "
            "the hub reachable (and give a token for gated models).") from None
    if not isinstance(data, dict):
        raise UnknownModelError(f"config.json of {repo_id!r} is not a JSON object.")
    return data


# -- facts from config.json ----------------------------------------------------------------

# Class defaults that transformers fills in when config.json omits a field. Gemma 3's
# multimodal checkpoints ship a sparse text_config that relies on these
# (transformers Gemma3TextConfig / SiglipVisionConfig).
_CLASS_DEFAULTS: dict[str, dict[str, Any]] = {
    "gemma3_text": {
        "vocab_size": 262208, "hidden_size": 2304, "intermediate_size": 9216,
        "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
        "head_dim": 256, "max_position_embeddings": 131072, "sliding_window": 4096,
        "sliding_window_pattern": 6, "tie_word_embeddings": True,
    },
    "siglip_vision_model": {
        "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
        "image_size": 224, "patch_size": 16, "num_channels": 3,
    },
}

_TIED_BY_DEFAULT = ("gemma",)  # model_type prefixes whose config class defaults tie_word_embeddings
_MOE_KEYS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")


def _first(cfg: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        if cfg.get(k) is not None:
            return cfg[k]
    return None


def _with_defaults(cfg: dict[str, Any]) -> dict[str, Any]:
    return {**_CLASS_DEFAULTS.get(str(cfg.get("model_type", "")), {}), **cfg}


def _vision_params(vcfg: dict[str, Any], text_hidden: int) -> int:
    """SigLIP/ViT tower parameters plus a linear projector into the text width."""
    v = _with_defaults({"model_type": "siglip_vision_model", **vcfg})
    h, inter, n = int(v["hidden_size"]), int(v["intermediate_size"]), int(v["num_hidden_layers"])
    patches = (int(v["image_size"]) // int(v["patch_size"])) ** 2
    per_layer = 4 * h * h + 4 * h + 2 * h * inter + inter + h + 4 * h  # attn, mlp, 2 layernorms
    embed = int(v["patch_size"]) ** 2 * int(v.get("num_channels", 3)) * h + h + patches * h
    return n * per_layer + embed + 2 * h + h * text_hidden + h


def facts_from_config(config: dict[str, Any], *, model_id: str = "") -> ModelFacts:
    """ModelFacts from a Hugging Face config.json dict.

    Reads the nested ``text_config`` when present (multimodal wrappers), filling the
    fields transformers would take from the config class defaults. The parameter count is
    derived from the shapes (config.json does not carry it). Raises UnsupportedModelError
    for mixture-of-experts models and configs missing a field sizing cannot do without.
    """
    arch = (config.get("architectures") or [str(config.get("model_type", "unknown"))])[0]
    text = _with_defaults(config.get("text_config") or config)
    name = model_id.rsplit("/", 1)[-1] if model_id else arch

    for key in _MOE_KEYS:
        if int(text.get(key) or 0) > 1:
            raise UnsupportedModelError(
                f"{name}: mixture-of-experts models ({key}={text[key]}) are not modelled by the "
                "sizing estimator; set resources explicitly.")

    hidden = _first(text, "hidden_size", "n_embd", "d_model")
    layers = _first(text, "num_hidden_layers", "n_layer", "num_layers")
    heads = _first(text, "num_attention_heads", "n_head")
    inter = _first(text, "intermediate_size", "n_inner", "ffn_hidden_size")
    vocab = _first(text, "vocab_size", "padded_vocab_size")
    missing = [k for k, v in {"hidden_size": hidden, "num_hidden_layers": layers,
                              "num_attention_heads": heads, "intermediate_size": inter,
                              "vocab_size": vocab}.items() if v is None]
    if missing:
        raise UnsupportedModelError(
            f"{name}: config.json lacks {', '.join(missing)}; sizing cannot estimate this "
            "architecture. Set resources explicitly.")
    hidden, layers, heads, inter, vocab = int(hidden), int(layers), int(heads), int(inter), int(vocab)
    kv = int(_first(text, "num_key_value_heads", "num_kv_heads", "multi_query_group_num") or heads)
    head_dim = int(text.get("head_dim") or hidden // heads)
    max_ctx = int(_first(text, "max_position_embeddings", "n_positions", "max_sequence_length",
                         "seq_length") or 0)
    if max_ctx <= 0:
        raise UnsupportedModelError(f"{name}: config.json gives no maximum context length.")

    model_type = str(text.get("model_type") or config.get("model_type") or "")
    tied_raw = _first(text, "tie_word_embeddings")
    if tied_raw is None:
        tied_raw = config.get("tie_word_embeddings")
    tied = bool(tied_raw) if tied_raw is not None else model_type.startswith(_TIED_BY_DEFAULT)

    window, window_layers = _sliding(text, layers, max_ctx)
    vision = 0
    if isinstance(config.get("vision_config"), dict):
        vision = _vision_params(config["vision_config"], hidden)

    facts = ModelFacts(
        id=model_id or name, name=name, architecture=str(arch), params=0, layers=layers,
        hidden_size=hidden, intermediate_size=inter, attention_heads=heads, kv_heads=kv,
        head_dim=head_dim, vocab_size=vocab, max_context=max_ctx, tied_embeddings=tied,
        sliding_window=window, sliding_window_layers=window_layers, vision_params=vision,
        family=model_type, source="config.json", hidden_act=str(config.get("hidden_act") or "silu"),
        quantized_as=(config.get("quantization_config") or {}).get("quant_method"),
    )
    return replace(facts, params=facts.derived_params)


def _sliding(text: dict[str, Any], layers: int, max_ctx: int) -> tuple[int | None, int]:
    """(window, number of sliding-window layers) from the config's several spellings."""
    if text.get("use_sliding_window") is False:
        return None, 0
    window = text.get("sliding_window")
    if not window or int(window) >= max_ctx:
        return None, 0
    window = int(window)
    types = text.get("layer_types")
    if isinstance(types, list) and types:
        return window, sum(1 for t in types[:layers] if t == "sliding_attention")
    pattern = text.get("sliding_window_pattern")
    if pattern:
        return window, layers - layers // int(pattern)  # every pattern-th layer is global
    return window, layers  # Mistral-v0.1 style: every layer slides


# -- GPUs -------------------------------------------------------------------------------

# GFD's MIG forms: "<product>-MIG-<profile>" with profiles such as 1g.5gb, 3g.40gb, 7g.141gb,
# compute-instance profiles (1c.3g.20gb) and media-extension ones (1g.10gb+me, written
# 1g.10gb.me or 1g.10gb-me in labels, where '+' is not allowed).
_MIG_RE = re.compile(r"^(?P<base>.+)-MIG-(?P<profile>(\d+c\.)?\d+g\.(?P<gb>\d+)gb([.+-]me(\.all)?)?)$",
                     re.IGNORECASE)
_SHARED_SUFFIX = "-SHARED"  # GFD appends it when time-slicing or MPS shares each GPU
_LABEL_HELP = ("copy the value from the node (kubectl get nodes -L nvidia.com/gpu.product), or omit "
               "resources.gpu.product and size the pods yourself with resources.memory and resources.gpu.count")
# A MIG slice "Ng.Mgb" exposes a little less than M GiB (1g.5gb: 4864 MiB, 3g.20gb:
# 19968 MiB, 7g.40gb: 40192 MiB on A100/H100); 972 MiB per "gb" stays under all of them.
_MIG_MIB_PER_GB = 972


def _norm_gpu(s: str) -> str:
    return re.sub(r"[\s_]+", "-", s.strip()).lower()


def lookup_gpu(product: str) -> GpuProduct:
    """The GPU product for a nvidia.com/gpu.product label value (or a short alias such as "L4").

    Raises UnknownGpuError listing the known products when it is not in the catalog.
    """
    label = product.strip()
    if label.upper().endswith(_SHARED_SUFFIX) and len(label) > len(_SHARED_SUFFIX):
        base = lookup_gpu(label[: -len(_SHARED_SUFFIX)])
        return replace(base, product=base.product + _SHARED_SUFFIX, name=f"{base.name} (shared)", shared=True,
                       aliases=())
    mig = _MIG_RE.match(label)
    if mig:
        try:
            base = _lookup_whole_gpu(mig.group("base"))
        except UnknownGpuError:
            raise UnknownGpuError(
                f"resources.gpu.product {label!r} is a MIG slice of {mig.group('base')!r}, a GPU the sizing "
                f"catalog does not know (known: {_known()}): {_LABEL_HELP}.") from None
        gb = int(mig.group("gb"))
        # A slice owns n eighths of the memory (1g.5gb on a 40 GB A100: one; 1g.10gb: two) and
        # sees about 95 % of them (4864 MiB of 5120); take the smaller of that and the name's figure.
        eighths = max(1, round(8 * gb / round(base.memory_mib / 1024)))
        memory = min(gb * _MIG_MIB_PER_GB, int(base.memory_mib * eighths / 8 * 0.95))
        if gb < 1 or eighths > 8 or gb * 1000 > base.memory_mib * 1.1:
            raise UnknownGpuError(f"resources.gpu.product {label!r}: a {mig.group('profile')} slice cannot exist "
                                  f"on {base.product} ({base.memory_mib} MiB): {_LABEL_HELP}.")
        # The node's label value: the catalog's product (an alias such as "A100" resolved) + the profile.
        return replace(base, product=f"{base.product}-MIG-{mig.group('profile')}", memory_mib=memory,
                       name=f"{base.name} MIG {mig.group('profile')}",
                       mig_profile=mig.group("profile"), aliases=())
    return _lookup_whole_gpu(label)


def _known() -> str:
    return ", ".join(g.product for g in list_gpus())


def _lookup_whole_gpu(product: str) -> GpuProduct:
    key = _norm_gpu(product)
    for g in list_gpus():
        if key == g.product.lower() or key in (_norm_gpu(a) for a in g.aliases):
            return g
    hint = ""
    if "-mig-" in key:
        hint = " It looks like a MIG slice, but its profile is not of the form 1g.5gb, 3g.40gb or 1c.3g.20gb."
    raise UnknownGpuError(f"resources.gpu.product {product!r} is not in the sizing catalog (known: "
                          f"{_known()}, their -MIG-<profile> slices and -SHARED forms).{hint} Fix: {_LABEL_HELP}.")
