"""Property tests (hypothesis) for the token core, ``covers`` and ``decide``.

* ``verify(mint(c)) == c`` for every valid claims set, both algorithms, anywhere inside
  the validity window (and nowhere just outside it);
* changing any one character of a token makes it rejected, always as ``TokenRejected``;
* ``covers`` is a partial order and agrees with a segment-wise reference and ``allows``;
* every capability ``decide`` grants is covered by the scope it came from, under every
  ttl cap; sibling, parent and unrelated resources are denied;
* no accepted resource carries traversal, empty segments, escapes, backslashes,
  non-ASCII or control characters, and ``allows`` refuses whatever the grammar refuses.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from broker.capability import KINDS, Capability, allows, covers, is_root_resource, validate_resource
from broker.capability.covers import resource_covers
from broker.capability.names import AUDIENCE, NAME, TASK
from broker.errors import InvalidRequest, TokenRejected
from broker.policy import Allow, Deny, Policy, decide, parse_mint_request
from broker.policy.compile import compile_policy
from broker.policy.model import DEFAULT_TTL
from broker.policy.yamlstrict import YMap, parse_yaml
from broker.token import Actor, Claims, KeyRing, LocalSigner, issue_claims, mint, verify_token
from broker.token.claims import MAX_ACT_DEPTH
from tests.helpers import AUDIENCE as HELPER_AUDIENCE
from tests.helpers import ISSUER, NOW, claims

B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
LEEWAY = 30

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# =================================================================== strategies: names and resources

LOWER_DIGITS = "abcdefghijklmnopqrstuvwxyz0123456789"
ALNUM = LOWER_DIGITS + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
SEGMENT_CHARS = ALNUM + "._~@:+=,-"


def _grammar(first: str, rest: str, max_rest: int) -> st.SearchStrategy[str]:
    """``[first][rest]{0,max_rest}``, built from plain text strategies (fast to draw)."""
    return st.builds(str.__add__, st.sampled_from(first), st.text(alphabet=rest, max_size=max_rest))


names = _grammar(LOWER_DIGITS, LOWER_DIGITS + "-", 62)  # broker.capability.names.NAME
tasks = _grammar(ALNUM, ALNUM + "._:-", 127)  # TASK
audiences = _grammar(ALNUM, ALNUM + "._:/-", 127)  # AUDIENCE
jtis = st.text(alphabet=B64URL, min_size=22, max_size=22)
jkts = st.text(alphabet=B64URL, min_size=43, max_size=43)

segments = st.text(alphabet=SEGMENT_CHARS, min_size=1, max_size=12).filter(lambda s: s != "." and ".." not in s)
host_labels = st.one_of(
    st.sampled_from(LOWER_DIGITS),
    st.builds(
        lambda a, mid, z: a + mid + z,
        st.sampled_from(LOWER_DIGITS),
        st.text(alphabet=LOWER_DIGITS + "-", max_size=8),
        st.sampled_from(LOWER_DIGITS),
    ),
)
hosts = st.lists(host_labels, min_size=1, max_size=3).map(".".join)
buckets = st.builds(
    lambda a, mid, z: a + mid + z,
    st.sampled_from(LOWER_DIGITS),
    st.text(alphabet=LOWER_DIGITS + ".-", min_size=1, max_size=20),
    st.sampled_from(LOWER_DIGITS),
).filter(lambda b: ".." not in b)
ports = st.integers(1, 65535).filter(lambda p: p != 443)


def paths(*, subtree: bool | None = None, max_segments: int = 3) -> st.SearchStrategy[str]:
    """A path below a root that ends in ``/``: "", "a", "a/", "a/b", ...; ``subtree`` forces
    the trailing slash (True) or its absence where there is a segment (False)."""
    trailing = st.booleans() if subtree is None else st.just(subtree)

    def join(segs: list[str], slash: bool) -> str:
        return "" if not segs else "/".join(segs) + ("/" if slash else "")

    return st.builds(join, st.lists(segments, max_size=max_segments), trailing)


def canonical_resources(kind: str, *, subtree: bool | None = None) -> st.SearchStrategy[str]:
    if kind == "git":
        return st.builds(lambda h, o, r: f"{h}/{o}/{r}", hosts, segments, segments)
    if kind == "bucket":
        return st.builds(lambda b, p: f"s3://{b}/{p}", buckets, paths(subtree=subtree))
    if kind == "http":
        authority = st.one_of(hosts, st.builds(lambda h, p: f"{h}:{p}", hosts, ports))
        return st.builds(lambda a, p: f"https://{a}/{p}", authority, paths(subtree=subtree))
    if kind == "vault-kv":
        return st.builds(lambda m, p: f"{m}/data/{p}", segments, paths(subtree=subtree))
    if kind == "database":
        return st.builds(lambda m, r: f"{m}/creds/{r}", segments, segments)
    raise AssertionError(kind)


def action_sets(kind: str) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(KINDS[kind].actions), min_size=1, unique=True)


@st.composite
def capabilities(draw: st.DrawFn, kind: str | None = None, scope: str | None = None) -> Capability:
    k = kind or draw(st.sampled_from(sorted(KINDS)))
    return Capability.build(
        k, draw(canonical_resources(k)), draw(action_sets(k)), scope if scope is not None else draw(names)
    )


def _chain(subs: list[str]) -> Actor | None:
    actor = None
    for sub in reversed(subs):
        actor = Actor(f"agent:{sub}", actor)
    return actor


actors = st.one_of(st.none(), st.lists(names, min_size=1, max_size=MAX_ACT_DEPTH).map(_chain))


@st.composite
def claims_sets(draw: st.DrawFn) -> Claims:
    ttl = draw(st.integers(1, 3600))
    return issue_claims(
        issuer=draw(st.one_of(st.just(ISSUER), st.text(min_size=1, max_size=40))),
        agent=draw(names),
        audience=draw(audiences),
        task=draw(tasks),
        capabilities=draw(st.lists(capabilities(), min_size=1, max_size=4)),
        now=draw(st.integers(1_000, (1 << 40) - 4_000)),
        ttl=ttl,
        jti=draw(st.one_of(st.none(), jtis)),
        cnf_jkt=draw(st.one_of(st.none(), jkts)),
        act=draw(actors),
    )


def test_generated_resources_are_canonical() -> None:
    """The generators themselves: every resource they make is accepted as is."""

    @FAST
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        kind = data.draw(st.sampled_from(sorted(KINDS)))
        resource = data.draw(canonical_resources(kind))
        assert validate_resource(kind, resource) == resource
        assert NAME.fullmatch(data.draw(names))
        assert TASK.fullmatch(data.draw(tasks))
        assert AUDIENCE.fullmatch(data.draw(audiences))

    check()


# =================================================================== verify(mint(c)) == c


@pytest.fixture(scope="module")
def signers(ed_signer: LocalSigner, es_signer: LocalSigner) -> dict[str, LocalSigner]:
    return {"EdDSA": ed_signer, "ES256": es_signer}


@settings(max_examples=150, deadline=None)
@given(c=claims_sets(), alg=st.sampled_from(["EdDSA", "ES256"]), data=st.data())
def test_verify_of_mint_is_identity(
    c: Claims, alg: str, data: st.DataObject, signers: dict[str, LocalSigner], ring: KeyRing
) -> None:
    token = mint(c, signers[alg])
    assert len(token) <= 8192
    now = data.draw(st.integers(c.iat - LEEWAY, c.exp + LEEWAY - 1), label="now")
    for keys in (ring, ring.keyset):
        got = verify_token(token, keys, issuer=c.iss, audience=c.aud, now=now, leeway=LEEWAY)
        assert got == c
    # one second outside the window on either side is refused
    with pytest.raises(TokenRejected) as early:
        verify_token(token, ring, issuer=c.iss, audience=c.aud, now=c.iat - LEEWAY - 1, leeway=LEEWAY)
    assert early.value.code == "not_yet_valid"
    with pytest.raises(TokenRejected) as late:
        verify_token(token, ring, issuer=c.iss, audience=c.aud, now=c.exp + LEEWAY, leeway=LEEWAY)
    assert late.value.code == "expired"


# =================================================================== one changed character is fatal


@pytest.fixture(scope="module")
def fixed_tokens(signers: dict[str, LocalSigner]) -> dict[str, str]:
    rich = claims(cnf_jkt="A" * 43, act=Actor("agent:orchestrator", Actor("agent:root")))
    return {alg: mint(rich, signer) for alg, signer in signers.items()}


def _verify_fixed(token: str, ring: KeyRing) -> Claims:
    return verify_token(token, ring, issuer=ISSUER, audience=HELPER_AUDIENCE, now=NOW + 10)


def test_fixed_tokens_verify(fixed_tokens: dict[str, str], ring: KeyRing) -> None:
    for token in fixed_tokens.values():
        assert _verify_fixed(token, ring).cnf_jkt == "A" * 43


replacement_chars = st.one_of(st.integers(0, 255).map(chr), st.sampled_from(B64URL + "."))


@settings(max_examples=400, deadline=None)
@given(alg=st.sampled_from(["EdDSA", "ES256"]), data=st.data())
def test_any_single_character_change_is_rejected(
    alg: str, data: st.DataObject, fixed_tokens: dict[str, str], ring: KeyRing
) -> None:
    token = fixed_tokens[alg]
    i = data.draw(st.integers(0, len(token) - 1), label="index")
    ch = data.draw(replacement_chars, label="replacement")
    forged = token[:i] + ch + token[i + 1 :]
    if forged == token:
        event("unchanged")
        return
    event(f"segment {token[:i].count('.')}")
    with pytest.raises(TokenRejected):
        _verify_fixed(forged, ring)


@settings(max_examples=100, deadline=None)
@given(alg=st.sampled_from(["EdDSA", "ES256"]), data=st.data())
def test_truncated_or_extended_token_is_rejected(
    alg: str, data: st.DataObject, fixed_tokens: dict[str, str], ring: KeyRing
) -> None:
    token = fixed_tokens[alg]
    i = data.draw(st.integers(0, len(token) - 1), label="cut")
    extra = data.draw(st.text(alphabet=B64URL + ".", min_size=1, max_size=4), label="extra")
    for forged in (token[:i], token + extra, token[:i] + extra + token[i:]):
        with pytest.raises(TokenRejected):
            _verify_fixed(forged, ring)


# "B", "R", "h", "x" differ from "A", "Q", "g", "w" only in the low bits, which the last
# character of a segment does not always carry: a lax decoder would read the same bytes.
EXHAUSTIVE_CHARS = "AQgwBRhx9-_.=+/"


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_every_position_every_listed_character_is_rejected(
    alg: str, fixed_tokens: dict[str, str], ring: KeyRing
) -> None:
    token = fixed_tokens[alg]
    tried = 0
    for i, original in enumerate(token):
        for ch in EXHAUSTIVE_CHARS:
            if ch == original:
                continue
            forged = token[:i] + ch + token[i + 1 :]
            try:
                _verify_fixed(forged, ring)
            except TokenRejected:
                tried += 1
                continue
            pytest.fail(f"{alg}: token with {original!r} -> {ch!r} at index {i} of {len(token)} was accepted")
    assert tried > len(token) * (len(EXHAUSTIVE_CHARS) - 1)


# =================================================================== covers: a partial order

SMALL_SEGS = st.sampled_from(["a", "b", "ab"])


def _small_path(segs: list[str], slash: bool) -> str:
    return "" if not segs else "/".join(segs) + ("/" if slash else "")


SMALL_ROOTS = {"bucket": "s3://bkt/", "http": "https://h.test/", "vault-kv": "kv/data/"}
SMALL_EXACT = {
    "git": ["github.com/acme/a", "github.com/acme/b", "github.com/acme/ab"],
    "database": ["db/creds/a", "db/creds/ab"],
}
SUBTREE_KINDS = sorted(SMALL_ROOTS)


def small_resources(kind: str) -> st.SearchStrategy[str]:
    if kind in SMALL_EXACT:
        return st.sampled_from(SMALL_EXACT[kind])
    root = SMALL_ROOTS[kind]
    return st.builds(
        lambda segs, slash: root + _small_path(segs, slash), st.lists(SMALL_SEGS, max_size=3), st.booleans()
    )


def small_caps(kind: str, scope: str = "s1") -> st.SearchStrategy[Capability]:
    return st.builds(lambda r, a: Capability.build(kind, r, a, scope), small_resources(kind), action_sets(kind))


@st.composite
def narrower(draw: st.DrawFn, cap: Capability) -> Capability:
    """Something ``cap`` covers: a deeper resource (when a subtree) and fewer actions."""
    resource = cap.resource
    if resource.endswith("/") and draw(st.integers(0, 3)) > 0:
        resource += _small_path(draw(st.lists(SMALL_SEGS, min_size=1, max_size=2)), draw(st.booleans()))
    actions = draw(st.lists(st.sampled_from(cap.actions), min_size=1, unique=True))
    return Capability.build(cap.kind, resource, actions, cap.scope)


@st.composite
def cap_triples(draw: st.DrawFn) -> tuple[Capability, Capability, Capability]:
    kind = draw(st.sampled_from([*SUBTREE_KINDS, *SUBTREE_KINDS, "git", "database"]))
    a = draw(small_caps(kind))
    b = draw(st.one_of(narrower(a), narrower(a), small_caps(kind)))
    c = draw(st.one_of(narrower(b), narrower(b), small_caps(kind)))
    return a, b, c


def reference_covers(granted: Capability, requested: Capability) -> bool:
    """An independent spelling of SPEC 2.1: whole segments, never string prefixes."""
    if (granted.kind, granted.scope) != (requested.kind, requested.scope):
        return False
    if not set(requested.actions) <= set(granted.actions):
        return False
    if granted.resource == requested.resource:
        return True
    if not granted.resource.endswith("/"):
        return False
    prefix = granted.resource.split("/")[:-1]
    parts = requested.resource.split("/")
    return len(parts) > len(prefix) and parts[: len(prefix)] == prefix


def test_covers_is_a_partial_order() -> None:
    seen: Counter[str] = Counter()

    @settings(max_examples=300, deadline=None)
    @given(triple=cap_triples())
    def check(triple: tuple[Capability, Capability, Capability]) -> None:
        a, b, c = triple
        for x in triple:
            assert covers(x, x)  # reflexive
        for x, y in ((a, b), (b, c), (a, c), (b, a), (c, b), (c, a)):
            assert covers(x, y) == reference_covers(x, y), (x, y)
            if covers(x, y) and covers(y, x):  # antisymmetric
                assert x == y
            if covers(x, y):
                for action in y.actions:  # covers and allows agree
                    assert allows([x], y.kind, y.resource, action)
                if x.resource != y.resource:
                    seen["strict resource"] += 1
        if covers(a, b) and covers(b, c):  # transitive
            assert covers(a, c)
            if b not in (a, c):
                seen["strict chain"] += 1
                event("strict chain a > b > c")
        if covers(a, b) != covers(b, a):
            seen["one way"] += 1
        if not covers(a, b) and not covers(b, a):
            seen["incomparable"] += 1

    check()
    # the generator must actually produce comparable and incomparable pairs (floors well
    # under the typical counts: strict chains 26-47, incomparable pairs 42-56)
    assert seen["strict chain"] >= 8, seen
    assert seen["strict resource"] >= 60, seen
    assert seen["one way"] >= 50, seen
    assert seen["incomparable"] >= 15, seen


@FAST
@given(a=capabilities(), b=capabilities())
def test_covers_never_crosses_kind_or_scope(a: Capability, b: Capability) -> None:
    if a.kind != b.kind or a.scope != b.scope:
        assert not covers(a, b)
    assert covers(a, b) == reference_covers(a, b)


@FAST
@given(kind=st.sampled_from(SUBTREE_KINDS), data=st.data())
def test_subtree_never_covers_a_string_prefix_sibling(kind: str, data: st.DataObject) -> None:
    """``s3://b/agents/`` covers ``s3://b/agents/x`` but never ``s3://b/agents-old/x``."""
    grant = data.draw(canonical_resources(kind, subtree=True).filter(lambda r: not is_root_resource(kind, r)))
    base = grant[:-1]
    tail = data.draw(segments)
    sibling = f"{base}{data.draw(st.sampled_from(['-old', 'x', '.bak', '~', '0']))}/{tail}"
    cap = Capability.build(kind, grant, list(KINDS[kind].actions), "s1")
    req = Capability.build(kind, f"{grant}{tail}", list(KINDS[kind].actions), "s1")
    assert covers(cap, req)
    assert not allows([cap], kind, sibling, KINDS[kind].actions[0])


# =================================================================== decide: grants stay inside the scope

AGENT = "agent-x"
AGENT_KEY = "ab" * 32
SCOPE_NAMES = ["scope-0", "scope-1", "scope-2", "scope-3"]
POLICY_AUDIENCES = ["gw-a", "gw-b", "vault"]
UNKNOWN_ACTION = "fly"


@st.composite
def scope_specs(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(sorted(KINDS)))
    resource = draw(canonical_resources(kind, subtree=True if kind == "bucket" else None))
    spec: dict[str, Any] = {
        "kind": kind,
        "resource": resource,
        "actions": draw(action_sets(kind)),
        "audience": draw(st.sampled_from(POLICY_AUDIENCES)),
        "max_ttl": draw(st.integers(1, 3600)),
    }
    if draw(st.integers(0, 4)) == 0:
        spec["require_pop"] = True
    return spec


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    n = draw(st.integers(1, len(SCOPE_NAMES)))
    scopes = {SCOPE_NAMES[i]: draw(scope_specs()) for i in range(n)}
    granted = draw(st.lists(st.sampled_from(sorted(scopes)), min_size=1, unique=True))
    agent: dict[str, Any] = {"identity": {"key": {"sha256": AGENT_KEY}}, "scopes": granted}
    if draw(st.booleans()):
        agent["max_ttl"] = draw(st.integers(1, 3600))
    raw = json.dumps({"scopes": scopes, "agents": {AGENT: agent}}, indent=1).encode()  # JSON is YAML
    root = parse_yaml(raw, "gen.yaml")
    assert isinstance(root, YMap), root
    result = compile_policy([("gen.yaml", root, raw)])
    assert isinstance(result, Policy), (result, raw.decode())
    return result


def _parent(resource: str) -> str:
    """Strictly wider (or outside the grammar): drop the last segment."""
    body = resource[:-1] if resource.endswith("/") else resource
    return body[: body.rindex("/") + 1]


def _sibling(resource: str, suffix: str) -> str:
    """Same depth, last segment renamed by appending to it: never covered."""
    if resource.endswith("/"):
        return resource[:-1] + suffix + "/"
    return resource + suffix


VARIANTS = ["whole", "same", "deeper", "sibling", "sibling", "parent", "parent", "unrelated", "other-kind"]
DENIED_VARIANTS = frozenset({"sibling", "parent"})


FRIENDLY_VARIANTS = ["whole", "same", "deeper", "deeper", "deeper"]


@st.composite
def entries(draw: st.DrawFn, policy: Policy, *, friendly: bool) -> tuple[dict[str, Any] | str, str]:
    """One ``scopes`` entry and how it was made. ``friendly`` entries name a granted scope
    and mostly narrow it (so allows are common); the others try everything."""
    if friendly:
        name = draw(st.sampled_from(policy.agents[AGENT].scopes))
    else:
        name = draw(st.one_of(st.sampled_from(sorted(policy.scopes)), st.sampled_from([*SCOPE_NAMES, "undefined"])))
    scope = policy.scopes.get(name)
    if scope is None:
        return {"scope": name}, "unknown"
    variant = draw(st.sampled_from(FRIENDLY_VARIANTS if friendly else VARIANTS))
    entry: dict[str, Any] = {"scope": name}
    if variant == "same":
        entry["resource"] = scope.resource
    elif variant == "deeper":
        base = scope.resource if scope.resource.endswith("/") else scope.resource + "/"
        deeper = "/".join(draw(st.lists(segments, min_size=1, max_size=3)))
        entry["resource"] = base + deeper + draw(st.sampled_from(["", "/"]))
    elif variant == "sibling":
        entry["resource"] = _sibling(scope.resource, draw(st.sampled_from(["-old", "x", "0", ".bak", "~"])))
    elif variant == "parent":
        entry["resource"] = _parent(scope.resource)
    elif variant == "unrelated":
        entry["resource"] = draw(canonical_resources(scope.kind))
    elif variant == "other-kind":
        other = draw(st.sampled_from(sorted(set(KINDS) - {scope.kind})))
        entry["resource"] = draw(canonical_resources(other))
    act_choice = draw(st.sampled_from(["none", "subset"] if friendly else ["none", "subset", "any", "unknown"]))
    if act_choice == "subset":
        entry["actions"] = draw(st.lists(st.sampled_from(scope.actions), min_size=1, unique=True))
    elif act_choice == "any":
        entry["actions"] = draw(action_sets(scope.kind))
    elif act_choice == "unknown":
        entry["actions"] = [*draw(st.lists(st.sampled_from(scope.actions), unique=True)), UNKNOWN_ACTION]
    if variant == "whole" and "actions" not in entry:
        return name, variant  # the bare-name form
    return entry, variant


def expected_allow(policy: Policy, body: dict[str, Any], pop: bool) -> bool:
    """Reference decision, spelled out from SPEC 2 and 4 independently of ``decide``."""
    agent = policy.agents[AGENT]
    caps = [policy.global_max_ttl, agent.max_ttl]
    for raw in body["scopes"]:
        entry = {"scope": raw} if isinstance(raw, str) else raw
        scope = policy.scopes.get(entry["scope"])
        if scope is None or scope.name not in agent.scopes or (scope.require_pop and not pop):
            return False
        resource = entry.get("resource", scope.resource)
        actions = entry.get("actions", list(scope.actions))
        try:
            validate_resource(scope.kind, resource)
        except InvalidRequest:
            return False
        if not set(actions) <= set(scope.actions):
            return False
        if not reference_covers(
            Capability(scope.kind, scope.resource, scope.actions, scope.name),
            Capability.build(scope.kind, resource, actions, scope.name),
        ):
            return False
        if scope.kind in ("vault-kv", "database") and (resource, set(actions)) != (scope.resource, set(scope.actions)):
            return False  # a downstream credential is its whole scope: never narrowed (SPEC 6)
        caps.append(scope.max_ttl)
    ttl = body.get("ttl")
    return ttl is None or ttl <= min(caps)


@st.composite
def policy_and_request(draw: st.DrawFn) -> tuple[Policy, dict[str, Any], list[str], bool]:
    policy = draw(policies())
    friendly = draw(st.booleans())
    drawn = draw(st.lists(entries(policy, friendly=friendly), min_size=1, max_size=2 if friendly else 3))
    body: dict[str, Any] = {"task": draw(tasks), "scopes": [e for e, _ in drawn]}
    if draw(st.integers(0, 3)) == 0:
        body["ttl"] = draw(st.integers(1, 4000))
    return policy, body, [v for _, v in drawn], friendly or draw(st.booleans())


def _check_decision(case: tuple[Policy, dict[str, Any], list[str], bool], seen: Counter[str]) -> None:
    """What ``decide`` must do with one drawn policy and request; ``seen`` counts outcomes."""
    policy, body, variants, pop = case
    agent = policy.agents[AGENT]
    decision = decide(agent, parse_mint_request(body, pop=pop), policy)
    assert isinstance(decision, (Allow, Deny))
    if DENIED_VARIANTS & set(variants):
        assert isinstance(decision, Deny), (body, decision)
        seen["denied sibling/parent"] += 1
    for raw, variant in zip(body["scopes"], variants, strict=True):
        if variant in ("unrelated", "other-kind") and isinstance(raw, dict):
            scope = policy.scopes[raw["scope"]]
            if not resource_covers(scope.resource, raw["resource"]):
                assert isinstance(decision, Deny), (body, decision)
                seen["denied unrelated"] += 1
    assert isinstance(decision, Allow) == expected_allow(policy, body, pop), (body, decision)
    if isinstance(decision, Deny):
        seen[f"deny {decision.code}"] += 1
        event(f"deny {decision.code}")
        return
    seen["allow"] += 1
    event("allow")
    assert 0 < decision.ttl <= decision.max_ttl <= policy.global_max_ttl
    assert decision.ttl <= agent.max_ttl
    if "ttl" in body:
        assert decision.ttl == body["ttl"]
    else:
        assert decision.ttl == min(DEFAULT_TTL, decision.max_ttl)
    assert decision.tokens
    assert len({plan.audience for plan in decision.tokens}) == len(decision.tokens)
    for plan in decision.tokens:
        assert plan.capabilities
        for cap in plan.capabilities:
            scope = policy.scopes[cap.scope]
            assert cap.scope in agent.scopes
            assert covers(scope.capability, cap), (scope.capability, cap)
            assert reference_covers(scope.capability, cap)
            assert plan.audience == scope.audience
            assert decision.ttl <= scope.max_ttl
            if scope.require_pop:
                assert pop
    if any(cap.resource != policy.scopes[cap.scope].resource for p in decision.tokens for cap in p.capabilities):
        seen["allow narrowed resource"] += 1


@settings(max_examples=250, deadline=None)
@given(case=policy_and_request())
def test_decide_only_grants_what_the_scope_covers(case: tuple[Policy, dict[str, Any], list[str], bool]) -> None:
    _check_decision(case, Counter())


def test_the_request_generator_reaches_every_outcome() -> None:
    """The property above is only as good as what it draws. Its floors, checked on a
    derandomized run (the same 250 draws every time, so never flaky; random runs ranged
    from 0 to 35 narrowed allows, and one CI run drew none): every kind of outcome is
    reached, and every draw still holds to the property."""
    seen: Counter[str] = Counter()

    @settings(max_examples=250, deadline=None, derandomize=True)
    @given(case=policy_and_request())
    def check(case: tuple[Policy, dict[str, Any], list[str], bool]) -> None:
        _check_decision(case, seen)

    check()
    assert seen["allow"] >= 20, seen
    assert seen["allow narrowed resource"] >= 3, seen
    assert seen["denied sibling/parent"] >= 5, seen
    assert seen["denied unrelated"] >= 3, seen
    assert seen["deny scope_not_granted"] >= 5, seen
    assert seen["deny invalid_request"] >= 5, seen


# =================================================================== the resource grammar never lets traversal in

ADVERSARIAL_CHARS = [
    *"aZ09.-_~/:%\\*?[]#@+=,;!$&'()",
    *(" ", "\t", "\n", "\r", "\x00", "\x1f", "\x7f", "\x85", "\xa0", "\xe9"),
    *("\u2024", "\u2215", "\uff0e", "\uff0f", "\u0430", "\u200b", "\ufeff"),
]
ADVERSARIAL_SEGMENTS = [
    ".", "..", "...", "", "a", "A", "data", "creds", "a..b", ".a", "a.", "%2e", "%2e%2e", "%2F", "..%2f",
    "\\", "..\\", "a\\b", "\xe9", "x\x00", "\n", " ", "a b", "\uff0e\uff0e", "h.test", "h.test:443",
    "h.test:8443", "h.test:0", "h.test:08", "H.test", "s3:", "https:", "~", "@", "a:b",
]  # fmt: skip
PREFIXES = ["", "s3://", "https://", "s3:/", "https:/", "https:///", "s3:///", "/", "kv/data/", "db/creds/"]
GRANTS = {  # the widest grant we can name per kind, to catch prefix-match bypasses
    "git": "h.test/o/r",
    "bucket": "s3://bkt/",
    "http": "https://h.test/",
    "vault-kv": "kv/data/",
    "database": "db/creds/r",
}
SCHEMES = {"bucket": "s3://", "http": "https://"}

adversarial_text = st.one_of(
    st.text(alphabet=ADVERSARIAL_CHARS, max_size=40),
    st.builds(
        lambda p, segs, slash: p + "/".join(segs) + ("/" if slash else ""),
        st.sampled_from(PREFIXES),
        st.lists(st.sampled_from(ADVERSARIAL_SEGMENTS), max_size=6),
        st.booleans(),
    ),
    st.text(max_size=30),
)


def _accepted(kind: str, resource: str) -> bool:
    try:
        validate_resource(kind, resource)
    except InvalidRequest:
        return False
    return True


def assert_clean(kind: str, resource: str) -> None:
    assert all("\x21" <= ch <= "\x7e" for ch in resource), resource  # ASCII, no space or control
    for bad in ("%", "\\", "*", "?", "[", "]", "#"):
        assert bad not in resource, resource
    scheme = SCHEMES.get(kind, "")
    assert resource.startswith(scheme)
    rest = resource[len(scheme) :]
    assert "//" not in rest, resource  # "//" only as the scheme's "://"
    assert not rest.startswith("/"), resource
    parts = rest.split("/")
    if parts[-1] == "":
        parts = parts[:-1]  # the subtree's trailing slash
    assert parts, resource
    # ".." never appears at all, not even inside a segment ("v1..2"): a downstream service
    # that normalises paths must never be handed anything it could read as a parent step
    assert ".." not in resource, resource
    for part in parts:
        assert part not in ("", "."), resource


def _check_candidate(kind: str, resource: str, seen: Counter[str]) -> None:
    grant = Capability.build(kind, GRANTS[kind], list(KINDS[kind].actions), "s1")
    action = KINDS[kind].actions[0]
    if _accepted(kind, resource):
        seen["accepted"] += 1
        assert_clean(kind, resource)
        assert allows([grant], kind, resource, action) == resource_covers(grant.resource, resource)
    else:
        seen["refused"] += 1
        assert not allows([grant], kind, resource, action), resource
        if resource.startswith(grant.resource):
            seen["refused under grant"] += 1  # a naive prefix match would have said yes


def test_accepted_resources_are_clean_and_refused_ones_never_allowed() -> None:
    seen: Counter[str] = Counter()

    @settings(max_examples=800, deadline=None)
    @given(text=adversarial_text, under_grant=st.booleans())
    def check(text: str, under_grant: bool) -> None:
        for kind in sorted(KINDS):
            candidate = GRANTS[kind] + text if under_grant and GRANTS[kind].endswith("/") else text
            _check_candidate(kind, candidate, seen)

    check()
    assert seen["accepted"] >= 40, seen  # ~110 on average over 800 examples; never below 60 seen
    assert seen["refused under grant"] >= 100, seen


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize(
    "suffix",
    [
        "..", "../", "../x", "./x", "a/../b", "a/./b", "a//b", "/a", "a/b//", "%2e%2e/x", "%2e%2e%2fx",
        "..%2fx", "a\\..\\b", "..\\x", "a\x00", "a\nb", "a b", "\xe9", "\uff0e\uff0e/x", "a/\u2215/b",
        "a;/../b", "a/..;/b", "?x", "#x", "*", "a/.", "a/..",
    ],
)  # fmt: skip
def test_known_traversal_spellings_are_refused(kind: str, suffix: str) -> None:
    resource = (GRANTS[kind] if GRANTS[kind].endswith("/") else GRANTS[kind] + "/") + suffix
    assert not _accepted(kind, resource)
    grant = Capability.build(kind, GRANTS[kind], list(KINDS[kind].actions), "s1")
    assert not allows([grant], kind, resource, KINDS[kind].actions[0])


def _all(strategy_fn: Callable[[str], st.SearchStrategy[str]]) -> st.SearchStrategy[tuple[str, str]]:
    return st.sampled_from(sorted(KINDS)).flatmap(lambda k: st.tuples(st.just(k), strategy_fn(k)))


@FAST
@given(case=_all(canonical_resources))
def test_canonical_resources_pass_the_cleanliness_check(case: tuple[str, str]) -> None:
    kind, resource = case
    assert_clean(kind, resource)
