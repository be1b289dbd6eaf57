"""The HS256 verifier against tokens PyJWT mints, and against forgeries PyJWT would refuse."""

from __future__ import annotations

import base64
import time

import jwt
import orjson
import pytest

from server.auth import VerifiedTokens, decode_hs256, verify_token
from server.errors import SoukError

SECRET = "unit-secret-0123456789-0123456789-xyz"


def b64(doc: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(doc)).rstrip(b"=").decode()


def test_accepts_what_pyjwt_mints() -> None:
    tok = jwt.encode({"sub": "u", "role": "viewer", "exp": int(time.time()) + 60, "rooms": ["a"]}, SECRET,
                     algorithm="HS256")
    ident = verify_token(tok, SECRET)
    assert (ident.id, ident.role, ident.rooms) == ("u", "viewer", ("a",))
    assert decode_hs256(tok, SECRET) == jwt.decode(tok, SECRET, algorithms=["HS256"])


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda: jwt.encode({"sub": "u", "exp": int(time.time()) + 60}, "other-secret-0123456789-0123456789"), "signature"),
        (lambda: jwt.encode({"sub": "u", "exp": int(time.time()) + 60}, SECRET, algorithm="HS512"), "HS256"),
        (lambda: f"{b64({'alg': 'none'})}.{b64({'sub': 'u', 'exp': 9e9})}.", "HS256"),
        (lambda: f"{b64({'alg': 'HS256'})}.{b64({'sub': 'u', 'exp': 9e9})}.", "base64url"),
        (lambda: f"{b64({'alg': 'none'})}.{b64({'sub': 'u', 'exp': 9e9})}.AAAA", "HS256"),
        (lambda: jwt.encode({"sub": "u"}, SECRET, algorithm="HS256"), "exp"),
        (lambda: jwt.encode({"sub": "u", "exp": int(time.time()) - 60}, SECRET, algorithm="HS256"), "expired"),
        (lambda: jwt.encode({"sub": "u", "exp": int(time.time()) + 60, "nbf": int(time.time()) + 600}, SECRET,
                            algorithm="HS256"), "not valid yet"),
        (lambda: "a.b", "compact"),
        (lambda: "é.é.é", "compact"),
        (lambda: "!!!!.!!!!.!!!!", "base64url"),
        (lambda: jwt.encode({"sub": "u", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256") + "x", "signature"),
    ],
)
def test_refuses_forgeries(make, why: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SoukError) as err:
        verify_token(make(), SECRET)
    assert err.value.code == "unauthorized"
    assert why in err.value.message


def test_verified_tokens_remember_until_exp_and_never_a_forgery() -> None:
    """The cache answers only for the exact token it verified, and only until its exp."""
    now = [1_000_000.0]
    tokens = VerifiedTokens(SECRET, clock=lambda: now[0], size=2)
    exp = int(now[0]) + 60
    tok = jwt.encode({"sub": "u", "exp": exp}, SECRET, algorithm="HS256")
    first = tokens.verify(tok)
    assert tokens.verify(tok) is first and len(tokens) == 1  # remembered
    # the same claims signed with another key, or the signature altered: verified in full
    other = jwt.encode({"sub": "u", "exp": exp}, "another-secret-0123456789-0123456789", algorithm="HS256")
    head, payload, sig = tok.split(".")
    altered = f"{head}.{payload}.{sig[:-2]}{'AA' if not sig.endswith('AA') else 'BB'}"
    for forged in (other, altered, f"{head}.{b64({'sub': 'admin', 'role': 'admin', 'exp': exp})}.{sig}"):
        with pytest.raises(SoukError, match="signature"):
            tokens.verify(forged)
    assert len(tokens) == 1  # refusals are not remembered
    # inside the leeway after exp still passes (as a full check would), past it: refused
    now[0] = exp + 5
    assert tokens.verify(tok) is first
    now[0] = exp + 6
    with pytest.raises(SoukError, match="expired"):
        tokens.verify(tok)
    assert len(tokens) == 0
    # bounded: the oldest entry goes first
    now[0] = 1_000_000.0
    made = [jwt.encode({"sub": f"u{i}", "exp": exp}, SECRET, algorithm="HS256") for i in range(3)]
    for t in made:
        tokens.verify(t)
    assert len(tokens) == 2 and tokens.verify(made[2]).id == "u2"
    with pytest.raises(SoukError):
        tokens.verify(None)
