"""Parsing the per-consumer Secret: good entries are accepted, each malformed one is rejected on its own."""

from __future__ import annotations

import pytest
from harness import write_consumers

from slm_gateway.consumers import REASONS, Consumer, build_table, digest, read_folder

KEY = "sk-0123456789abcdef"


def test_bare_key_and_full_entry():
    t = build_table([("app-a", KEY + "\n"), ("app-b", "key: sk-bbbbbbbbbbbbbbbb\nrequestsPerMinute: 60\n"
                                               "tokensPerMinute: 1000\nmaxTokens: 256\n"
                                               "allowedRoutes: [/v1/chat/completions, /v1/models*]\n")])
    assert t.rejected == []
    assert t.by_digest[digest(KEY)] == Consumer("app-a")
    b = t.by_digest[digest("sk-bbbbbbbbbbbbbbbb")]
    assert (b.requests_per_minute, b.tokens_per_minute, b.max_tokens) == (60, 1000, 256)
    assert b.allows("/v1/chat/completions") and b.allows("/v1/models/x") and not b.allows("/v1/completions")


@pytest.mark.parametrize(("value", "reason", "words"), [
    ("requestsPerMinute: 5\n", "MissingKey", "no key"),
    ("key: ''\n", "MissingKey", "no key"),
    (f"key: {KEY}\nrequestsPerMinute: -1\n", "BadLimit", "requestsPerMinute must be a whole number of at least 1"),
    (f"key: {KEY}\ntokensPerMinute: 1.5\n", "BadLimit", "tokensPerMinute"),
    (f"key: {KEY}\nmaxTokens: true\n", "BadLimit", "maxTokens"),
    (f"key: {KEY}\nrequestPerMinute: 5\n", "UnknownField", "requestPerMinute"),
    (f"key: {KEY}\nallowedRoutes: v1/chat\n", "BadRoutes", "allowedRoutes"),
    ("key: short\n", "ShortKey", "at least 16 characters"),
    (f"key: {KEY}\nkeyRef: {{name: s, key: k}}\n", "BadValue", "either key or keyRef"),
    ("keyRef: {name: other, key: api-key}\n", "KeyRefNotFound", "Secret 'other'"),
])
def test_malformed_entry_is_rejected_alone(value, reason, words):
    t = build_table([("good", KEY), ("bad", value)])
    assert [c.name for c in t.consumers] == ["good"]
    [r] = t.rejected
    assert (r.entry, r.reason) == ("bad", reason) and reason in REASONS
    assert words in r.message and "'bad'" in r.message


def test_bad_name_and_duplicate_key():
    t = build_table([("Team_A", KEY), ("a", KEY), ("b", KEY)])
    assert [c.name for c in t.consumers] == ["a"]
    assert [(r.entry, r.reason) for r in t.rejected] == [("Team_A", "BadName"), ("b", "DuplicateKey")]


def test_key_ref_resolves_from_projected_folder(tmp_path):
    write_consumers(tmp_path / "s", {"app": "keyRef: {name: app-key, key: token}\nrequestsPerMinute: 3\n"})
    ref = tmp_path / "s" / "_refs" / "app-key"
    ref.mkdir(parents=True)
    (ref / "token").write_text(KEY + "\n")
    t = read_folder(tmp_path / "s")
    assert t.rejected == [] and t.by_digest[digest(KEY)].name == "app"
    # No store configured: limits cannot hold across replicas, so the entry is refused.
    t = read_folder(tmp_path / "s", store=False)
    assert [(r.entry, r.reason) for r in t.rejected] == [("app", "LimitsNeedStore")]
