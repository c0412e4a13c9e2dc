"""The model-cache PVC and the generated API-key Secret."""

from __future__ import annotations

from slm_operator import constants as c
from slm_operator.render.common import Obj, Target, child_names, metadata
from slm_operator.resolve import served_from_source


def cache_pvc(t: Target) -> Obj | None:
    if served_from_source(t.spec, t.r):
        return None  # served straight from the user's claim
    st = t.spec.storage
    # Retain (default): no owner reference, so garbage collection leaves the cache alone.
    owned = st.retain_policy == "Delete"
    spec: Obj = {
        "accessModes": [st.access_mode],
        "resources": {"requests": {"storage": t.r.storage_size}},
    }
    if st.storage_class_name:
        spec["storageClassName"] = st.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(t, child_names(t.name, t.key)["cache"], c.C_CACHE, owned=owned),
        "spec": spec,
    }


def api_key_secret(t: Target) -> Obj | None:
    """The generated API key: rendered without data; the operator fills it once, on create."""
    if t.spec.access.api_key_secret_ref:
        return None
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(t, child_names(t.name, t.key)["api_key"], c.C_API_KEY,
                             annotations={c.A_GENERATED: "true"}),
        "type": "Opaque",
    }
