"""Names shared by the renderer, the reconciler, the CLI and the chart."""

from __future__ import annotations

FIELD_MANAGER = "slm-operator"
OPERATOR_NAME = "slm-operator"

# Labels (app.kubernetes.io/* recommended labels plus our own selector key).
L_NAME = "app.kubernetes.io/name"
L_INSTANCE = "app.kubernetes.io/instance"
L_COMPONENT = "app.kubernetes.io/component"
L_MANAGED_BY = "app.kubernetes.io/managed-by"
L_PART_OF = "app.kubernetes.io/part-of"
L_DEPLOYMENT = "slm.ai/deployment"
L_ENGINE = "slm.ai/engine"

# Annotations.
A_SPEC_HASH = "slm.ai/spec-hash"          # pod template: restart pods when engine config changes
A_ARTIFACT_KEY = "slm.ai/artifact-key"    # Job: which artifact it produces
A_CLAIM_SIZE = "slm.ai/claim-size"        # Job: its claim's size when made (a full volume reruns it on growth)
A_GENERATED = "slm.ai/generated-secret"   # Secret: value generated once by the operator
A_GENERATED_KEY = "slm.ai/generated-key"  # Secret: the data key of that value (default api-key)

# Condition types (status.conditions[].type).
READY = "Ready"
MODEL_READY = "ModelReady"
AVAILABLE = "Available"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
CONDITION_TYPES = (READY, MODEL_READY, AVAILABLE, PROGRESSING, DEGRADED)

# Condition reasons the reconciler sets itself (pod fault reasons: slm_operator.podfaults).
R_APPLY_REJECTED = "ApplyRejected"                          # the API server refused a write (4xx)
R_QUANTIZATION_FAILED = "QuantizationFailed"                # the Job failed, not at the quality gate
R_INSUFFICIENT_STORAGE = "InsufficientStorage"              # the Job filled the model-cache volume (quantizer exit 7)
R_FAILED_CREATE = "FailedCreate"                            # the Deployment cannot create pods
R_PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"   # the Deployment's rollout timed out
R_STATUS_REJECTED = "StatusRejected"                        # Event only: the status patch was refused
R_QUANTIZE_ONLY = "QuantizeOnly"                            # serving.enabled false: the artifact is the product
R_EXPORTING = "Exporting"                                   # spec.export: the export Job is pushing the artifact
R_EXPORT_FAILED = "ExportFailed"                            # spec.export: a target refused the push
R_EXPORTED = "Exported"                                     # spec.export: every target holds the artifact

# Components.
C_SERVER = "server"
C_QUANTIZER = "quantizer"
C_API_KEY = "api-key"
C_CACHE = "model-cache"
C_LIMITS = "limits"
C_EXPORTER = "exporter"

# In-pod paths and ports.
API_PORT = 8000
METRICS_PORT = 9090
# The engine listens here on 127.0.0.1 only; the gateway (runtime-images/gateway) is the only
# thing on API_PORT and METRICS_PORT (Ollama keeps its own loopback port, 11434).
ENGINE_HOST = "127.0.0.1"
ENGINE_PORT = 8001
MODELS_MOUNT = "/models"
SOURCE_MOUNT = "/source"
API_KEY_DIR = "/var/run/secrets/slm"
API_KEY_FILE = f"{API_KEY_DIR}/api-key"
# The per-consumer Secret (access.apiKeys), mounted in the gateway container only.
CONSUMERS_DIR = "/var/run/secrets/slm-consumers"
# The limit store (Redis, for consumers with requestsPerMinute/tokensPerMinute): its password file.
LIMITS_DIR = "/var/run/secrets/slm-limits"
LIMITS_PASSWORD_FILE = f"{LIMITS_DIR}/password"
REDIS_PORT = 6379
HF_TOKEN_DIR = "/var/run/secrets/hf"
HF_TOKEN_FILE = f"{HF_TOKEN_DIR}/token"
S3_CREDENTIALS_DIR = "/var/run/secrets/s3"
EXPORT_CREDENTIALS_DIR = "/var/run/secrets/export"  # spec.export[i].credentialsSecret at <dir>/<i>
RUN_AS = 65532

GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
