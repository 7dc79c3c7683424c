"""Test keys and tokens for tests/api/auth.rs, made with PyJWT and cryptography.

    mint.py keys DIR     writes fresh key pairs and JWKS files into DIR (nothing is committed)
    mint.py tokens       reads a JSON list of token specs on stdin, prints a JSON list of tokens

A token spec:
    alg       "HS256" | "RS256" | "ES256" | "none"
    secret    the HS256 secret (a string)
    key       path of the private key PEM (RS256, ES256)
    hmac_key_file  HS256 signed by hand with this file's bytes as the secret; PyJWT refuses
              a PEM as an HMAC secret, which is exactly the algorithm-confusion attack
    claims    the payload
    rel       claim -> seconds from now (exp, nbf, iat)
    headers   extra header fields (kid, ...)
    tamper    fields merged into the payload after signing; the signature is kept
    signature for "none": the third part (default empty)
"""

import base64
import hashlib
import hmac
import json
import os
import sys
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def compact(header: dict, payload: dict) -> str:
    enc = lambda obj: b64(json.dumps(obj, separators=(",", ":")).encode())
    return enc(header) + "." + enc(payload)


def write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def keys(folder: str) -> None:
    os.makedirs(folder, exist_ok=True)
    made = {}
    for name, key in [
        ("rsa1", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("rsa2", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("ec1", ec.generate_private_key(ec.SECP256R1())),
        ("ec2", ec.generate_private_key(ec.SECP256R1())),
    ]:
        private = os.path.join(folder, name + ".pem")
        public = os.path.join(folder, name + ".pub.pem")
        write(
            private,
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        )
        write(
            public,
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )
        made[name] = key

    def jwk(name: str, kid, alg: str) -> dict:
        to_jwk = RSAAlgorithm.to_jwk if name.startswith("rsa") else ECAlgorithm.to_jwk
        out = json.loads(to_jwk(made[name].public_key()))
        out.pop("key_ops", None)
        out["use"] = "sig"
        out["alg"] = alg
        if kid is not None:
            out["kid"] = kid
        return out

    jwks = {"keys": [jwk("rsa1", "rsa-1", "RS256"), jwk("rsa2", "rsa-2", "RS256"), jwk("ec1", "ec-1", "ES256")]}
    write(os.path.join(folder, "jwks.json"), json.dumps(jwks, indent=2).encode())
    single = {"keys": [jwk("ec2", None, "ES256")]}
    write(os.path.join(folder, "jwks_single.json"), json.dumps(single, indent=2).encode())
    print(json.dumps({"folder": folder}))


def token(spec: dict) -> str:
    alg = spec["alg"]
    claims = dict(spec.get("claims", {}))
    now = int(time.time())
    for claim, offset in spec.get("rel", {}).items():
        claims[claim] = now + int(offset)
    headers = dict(spec.get("headers", {}))
    if alg == "none":
        text = compact({"alg": "none", "typ": "JWT", **headers}, claims) + "." + spec.get("signature", "")
    elif "hmac_key_file" in spec:
        with open(spec["hmac_key_file"], "rb") as f:
            secret = f.read()
        signing_input = compact({"alg": "HS256", "typ": "JWT", **headers}, claims)
        signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        text = signing_input + "." + b64(signature)
    elif alg == "HS256":
        text = jwt.encode(claims, spec["secret"], algorithm="HS256", headers=headers or None)
    else:
        with open(spec["key"], "rb") as f:
            key = f.read()
        text = jwt.encode(claims, key, algorithm=alg, headers=headers or None)
    if "tamper" in spec:
        head, payload, signature = text.split(".")
        changed = {**json.loads(unb64(payload)), **spec["tamper"]}
        text = head + "." + b64(json.dumps(changed, separators=(",", ":")).encode()) + "." + signature
    return text


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "keys":
        keys(sys.argv[2])
    elif len(sys.argv) == 2 and sys.argv[1] == "tokens":
        print(json.dumps([token(spec) for spec in json.load(sys.stdin)]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
