#!/usr/bin/env python3
"""Verify a Sesame-Assertion header (an EdDSA JWT) in Python.

    pip install "pyjwt[crypto]"
    python3 verify.py https://app.example.com/.sesame/jwks.json https://app.example.com "$TOKEN"

On success prints the claims as one line of JSON and exits 0; otherwise prints
why to stderr and exits 1. In a web app, make one PyJWKClient at startup and
keep it: it caches the JWKS and refetches it when a token names a new key.
"""
import json
import sys

import jwt  # PyJWT

LEEWAY_SECONDS = 30  # clock skew tolerated on exp


def verify(jwks_url: str, audience: str, token: str) -> dict:
    # The key is chosen by the token's `kid`; refuse a token without one
    # rather than trying keys at random.
    if not jwt.get_unverified_header(token).get("kid"):
        raise ValueError("the token has no kid")
    # Fetches the JWKS and returns the key with that kid (raises if none).
    key = jwt.PyJWKClient(jwks_url).get_signing_key_from_jwt(token)
    # decode() checks the signature, then the claims. The algorithm is fixed
    # here, never taken from the token. Sesame sets both iss and aud to the
    # site's URL; aud may be a string or a list, PyJWT accepts either.
    return jwt.decode(
        token,
        key.key,
        algorithms=["EdDSA"],
        audience=audience,
        issuer=audience,
        leeway=LEEWAY_SECONDS,
        options={"require": ["exp", "iss", "aud"]},
    )


def main() -> int:
    if len(sys.argv) != 4:
        print("usage: verify.py JWKS_URL AUDIENCE TOKEN", file=sys.stderr)
        return 1
    try:
        claims = verify(*sys.argv[1:])
    except Exception as e:  # bad token, bad claims, JWKS unreachable...
        print(f"invalid assertion: {e}", file=sys.stderr)
        return 1
    print(json.dumps(claims, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
