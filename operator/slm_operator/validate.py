"""Offline validation with the same rules and messages as admission.

Three passes, as the API server does them: the CRD's OpenAPI schema (types, enums,
patterns, bounds), defaulting, then the CRD's CEL rules (evaluated with cel-python on the
defaulted object). Transition rules (those using oldSelf) need a previous object and are
skipped offline. A last pass runs the checks the operator makes from its catalog (the fit,
gated models without a token, GPU product labels, dtypes a model family cannot run in), which
admission cannot see; the operator reports those as Degraded with the same sentence.
"""

from __future__ import annotations

import copy
import json
import re
from functools import cache, lru_cache
from typing import Any

import celpy
import jsonschema
import pydantic

from slm_operator import api
from slm_operator.crdgen import build_crd


@cache
def _schema() -> dict[str, Any]:
    return build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


@cache
def _program(rule: str) -> Any:
    env = celpy.Environment(runner_class=_Runner)
    return env.program(env.compile(rule))


def _path(parts: Any) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


# Schema failures after which kube-apiserver runs no CEL rule (apiextensions-apiserver's
# hasBlockingErr: NotSupported, Required, TooLong, TooMany, TypeInvalid); out-of-range numbers,
# minLength/minItems and patterns do not block, and CEL errors are reported beside them.
_BLOCKING = frozenset({"enum", "required", "maxLength", "maxItems", "maxProperties", "type"})


def _schema_errors(obj: dict[str, Any]) -> tuple[list[str], bool]:
    """The schema's errors as "field: message", and whether any blocks the CEL rules."""
    validator = jsonschema.Draft7Validator(_schema())
    errors = []
    blocking = False
    for e in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path)):
        blocking = blocking or e.validator in _BLOCKING
        where = _path(e.absolute_path)
        if e.validator == "required":
            # Name the missing field itself, as the API server does ("spec.model.source: Required value").
            missing = e.message.split("'")[1] if e.message.startswith("'") else str(e.message)
            field = f"{where}.{missing}" if where else missing
            errors.append(f"{field}: Required value: add {field}")
            continue
        errors.append(f"{where or '<root>'}: {e.message}")
    return errors, blocking


# ObjectMeta's own check, which the API server makes on every object beside the schema
# (k8s.io/apimachinery validation.IsDNS1123Subdomain: at most 253 characters).
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _name_errors(name: str) -> list[str]:
    if len(name) <= 253 and _DNS1123_SUBDOMAIN.match(name):
        return []
    return [f"metadata.name: {name!r} is not a lowercase RFC 1123 subdomain: use at most 253 lower-case letters, "
            "digits, '-' and '.', starting and ending with a letter or digit"]


def _integral_floats(obj: Any, schema: dict[str, Any], path: str) -> set[str]:
    """Paths of integer fields written as numbers with a decimal point (3.0).

    The schema check admits them, and the API server stores an integer, but its CEL rules see
    the float and fail ("expected int, got float64") wherever a rule reads the field.
    """
    if isinstance(obj, float) and schema.get("type") == "integer":
        return {path}
    found: set[str] = set()
    if isinstance(obj, dict):
        props = schema.get("properties")
        for k, v in obj.items():
            sub = props.get(k) if props is not None else schema.get("additionalProperties")
            if isinstance(sub, dict):
                found |= _integral_floats(v, sub, f"{path + '.' if path else ''}{k}")
    elif isinstance(obj, list) and "items" in schema:
        for i, v in enumerate(obj):
            found |= _integral_floats(v, schema["items"], f"{path}[{i}]")
    return found


class _FloatInIntegerField:
    """A CEL value for an integer field written as 3.0: every use of it fails, has() included.

    The API server's CEL sees such a field as a float and fails with "expected int, got
    float64" wherever a rule touches it, has(self.field) too (checked against kube-apiserver
    v1.37 by a dry-run); `a || b` and `a && b` absorb that error when the other side decides
    (cel-spec's commutative logical operators). celpy raises "no matching overload" for any
    operator on an unknown type, and _Evaluator makes has() fail on it.
    """

    def __init__(self, path: str) -> None:
        self.path = path  # the field in the whole object ("spec.resources.gpu.count")

    def __repr__(self) -> str:  # celpy's error text names the operands: this says which field
        return f"_FloatInIntegerField({self.path})"

    def _fail(self, *_: object) -> Any:
        raise TypeError(f"expected int, got float64: {self!r}")

    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = _fail  # type: ignore[assignment]
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __neg__ = _fail
    __hash__ = __int__ = __float__ = __bool__ = __index__ = _fail  # type: ignore[assignment]


class _Evaluator(celpy.evaluation.Evaluator):  # type: ignore[misc]
    """celpy's tree-walking evaluator, with has() failing on a _FloatInIntegerField."""

    def macro_has_eval(self, exprlist: Any) -> Any:
        values = self.visit_children(exprlist)
        if isinstance(values[0], _FloatInIntegerField):
            return celpy.CELEvalError(f"expected int, got float64: {values[0]!r}")
        return celpy.celtypes.BoolType(not isinstance(values[0], celpy.CELEvalError))


class _Runner(celpy.InterpretedRunner):  # type: ignore[misc]
    """celpy's interpreted runner on _Evaluator."""

    def evaluate(self, context: Any) -> Any:
        return _Evaluator(ast=self.ast, activation=self.new_activation()).evaluate(context)


def _mark_floats(value: Any, floats: tuple[tuple[str, str], ...]) -> Any:
    """Put a _FloatInIntegerField at each (relative path, field) of a celpy value.

    The relative path is "a.b[0].c" under the value, "" for the value itself.
    """
    for rel, field in floats:
        if not rel:
            return _FloatInIntegerField(field)
        parts = [int(p) if p.isdigit() else celpy.celtypes.StringType(p) for p in re.findall(r"[^.\[\]]+", rel)]
        node = value
        try:
            for part in parts[:-1]:
                node = node[part]
            node[parts[-1]] = _FloatInIntegerField(field)
        except (KeyError, IndexError, TypeError):  # not in this value (pruned): nothing to read
            continue
    return value


def admission_form(obj: Any, schema: dict[str, Any]) -> Any:
    """The object as the API server decodes it before validating (a copy).

    Null object fields and map values are pruned (no field here is `nullable`), so `replicas:
    null` means "not set" and a default may fill it; integral numbers in integer fields become
    ints (`300.0` decodes as 300). Nulls inside lists stay, and are type errors there too.
    """
    if isinstance(obj, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties") if isinstance(schema.get("additionalProperties"), dict) else None
        out = {}
        for k, v in obj.items():
            sub = props.get(k) if props is not None else extra
            if v is None and sub is not None and not sub.get("nullable"):
                continue
            out[k] = admission_form(v, sub or {})
        return out
    if isinstance(obj, list):
        return [admission_form(x, schema.get("items", {})) for x in obj]
    if isinstance(obj, float) and schema.get("type") == "integer" and obj.is_integer():
        return int(obj)
    return obj


def _unknown_fields(obj: Any, schema: dict[str, Any] | None, path: str) -> list[str]:
    """kubectl's strict field validation: fields the schema does not know are errors.

    As apiextensions-apiserver's pruning walks (schema/pruning/algorithm.go): an object's key is
    unknown unless the schema names it in `properties` or has `additionalProperties`, whatever
    the schema's type, so `export: {a: 1}` in place of a list is "unknown field spec.export.a"
    (strict decoding answers before any type check); a list's items are walked with `items`,
    or with no schema at all when the schema has none.
    """
    errors: list[str] = []
    if schema is not None and schema.get("x-kubernetes-preserve-unknown-fields"):
        return errors
    if isinstance(obj, dict):
        props = (schema or {}).get("properties", {})
        extra = (schema or {}).get("additionalProperties")
        for key, value in obj.items():
            where = f"{path + '.' if path else ''}{key}"
            if key in props:
                errors += _unknown_fields(value, props[key], where)
            elif isinstance(extra, dict):
                errors += _unknown_fields(value, extra, where)
            elif path != "metadata":  # ObjectMeta is checked by the server's own type
                errors.append(f"{where}: unknown field: remove it or fix its spelling")
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            errors += _unknown_fields(item, (schema or {}).get("items"), f"{path}[{i}]")
    return errors


@lru_cache(maxsize=65536)
def _rule_result(rule: str, message: str, value: str, floats: tuple[tuple[str, str], ...] = ()) -> str | None:
    """One CEL rule on one JSON value: None when it holds, else the error text.

    `floats` are the value's integer fields written as 3.0: (path relative to the value, the
    field in the whole object), e.g. ("gpu.count", "spec.resources.gpu.count"). Cached
    by the value's canonical JSON (the rules see only `self`, so the result is a function of
    these): the defaulted and the typed pass share most values, and cel-python's tree walk costs
    milliseconds a rule.
    """
    try:
        ok = _program(rule).evaluate({"self": _mark_floats(celpy.json_to_cel(json.loads(value)), floats)})
    except Exception as e:  # a rule that cannot evaluate is a rejection at admission too
        ok = e
    if isinstance(ok, Exception):  # celpy.CELEvalError is one
        if floats and (m := re.search(r"_FloatInIntegerField\(([^)]*)\)", repr(ok.args))):
            return (f"rule {rule!r} failed to evaluate: expected int, got float64 at {m[1]}: write it as a whole "
                    "number without a decimal point (e.g. 3, not 3.0)")
        return f"rule {rule!r} failed to evaluate: {ok}"
    return None if bool(ok) else message


def _cel_errors(obj: Any, schema: dict[str, Any], path: str, floats: frozenset[str] = frozenset()) -> list[str]:
    """Every CEL rule's error as "field: message"; `floats` are _integral_floats' paths."""
    errors: list[str] = []
    rules = [r for r in schema.get("x-kubernetes-validations", []) if "oldSelf" not in r["rule"]]
    if rules:
        value = json.dumps(obj, sort_keys=True)
        # This value's integer fields written as 3.0: (relative to it, "" for itself; the field).
        mine = tuple(sorted((f[len(path):].lstrip("."), f) for f in floats
                            if not path or f == path or f.startswith((path + ".", path + "["))))
        for rule in rules:
            # A rule's fieldPath (".metadata.name") names the field it is about, as at admission.
            where = (path + rule.get("fieldPath", "")).lstrip(".") or "<root>"
            problem = _rule_result(rule["rule"], rule["message"], value, mine)
            if problem is not None:
                errors.append(f"{where}: {problem}")
    if isinstance(obj, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in obj:
                errors += _cel_errors(obj[key], sub, f"{path + '.' if path else ''}{key}", floats)
    elif isinstance(obj, list) and "items" in schema:
        for i, item in enumerate(obj):
            errors += _cel_errors(item, schema["items"], f"{path}[{i}]", floats)
    return errors


def structural_defaults(obj: Any, schema: dict[str, Any]) -> Any:
    """Fill schema defaults in place, as the API server does before it runs the CEL rules."""
    if isinstance(obj, dict) and "properties" in schema:
        for key, sub in schema["properties"].items():
            if key not in obj and "default" in sub:
                obj[key] = copy.deepcopy(sub["default"])
            if key in obj:
                obj[key] = structural_defaults(obj[key], sub)
    elif isinstance(obj, list) and "items" in schema:
        return [structural_defaults(x, schema["items"]) for x in obj]
    return obj


def defaulted(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as the API server stores it: spec defaults filled in."""
    cr = api.SLMDeployment.model_validate(obj)
    spec = cr.spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    return {**obj, "spec": spec}


def validate(obj: dict[str, Any], *, check_fit: bool = True) -> list[str]:
    """All problems with one SLMDeployment manifest; empty when it would be admitted."""
    if obj.get("apiVersion") != api.API_VERSION or obj.get("kind") != api.KIND:
        return [f"apiVersion/kind: expected {api.API_VERSION} {api.KIND}, got "
                f"{obj.get('apiVersion')} {obj.get('kind')}"]
    name = (obj.get("metadata") or {}).get("name")
    if not name:
        return ["metadata.name: required"]
    floats = frozenset(_integral_floats(obj, _schema(), ""))
    obj = admission_form(obj, _schema())
    unknown = _unknown_fields(obj, _schema(), "")
    if unknown:  # strict field validation refuses the request before any schema check
        return unknown
    errors, blocking = _schema_errors(obj)
    meta = _name_errors(str(name))  # checked beside the schema, whatever it says
    if errors or meta:
        # Beside a missing field, a value out of its enum, too long or of the wrong type the API
        # server runs no CEL rule ("some validation rules were not checked because the object
        # was invalid"); beside out-of-range values it runs them all on the defaulted object.
        if not blocking:
            errors += _cel_errors(structural_defaults(copy.deepcopy(obj), _schema()), _schema(), "", floats)
        return meta + errors
    # The API server runs every CEL rule on the structurally defaulted object and reports them all;
    # so do we. The typed models repeat the field-level rules (same sentences) and add nothing
    # admission would not say, so their errors only count where CEL did not already say it.
    errors = _cel_errors(structural_defaults(copy.deepcopy(obj), _schema()), _schema(), "", floats)
    try:
        full = defaulted(obj)
    except pydantic.ValidationError as e:
        said = {m.split(": ", 1)[-1] for m in errors}
        return errors + [f"{_path(err['loc'])}: {err['msg']}" for err in e.errors() if err["msg"] not in said]
    errors += [e for e in _cel_errors(full, _schema(), "", floats) if e not in errors]
    if errors or not check_fit:
        return errors
    from slm_operator.resolve import gated_refusal, refused, resolve

    spec = api.SLMDeployment.model_validate(full).spec
    r = resolve(spec)
    gated = gated_refusal(spec)  # offline: no operator-wide hub mirror is known
    if gated is not None and r.fits:
        r = refused(r, gated)
    if not r.fits:  # catalog facts admission cannot see: fit, gated models, GPU products, dtypes
        if r.refusal == "DoesNotFit":
            return [f"{r.refusal_field}: does not fit: {r.reason}"]
        return [f"{r.refusal_field}: {r.reason}"]
    return []
