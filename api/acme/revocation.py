"""revoke-cert (RFC 8555 7.6): by the account that ordered the certificate (or holds valid authorizations
for all its names), or by the certificate's own key. The revocation is the service's ordinary one
(``shared.db.revocation.revoke``, audited), and the CA's CRL is re-signed by a worker as for the
revoke route of the certificates API."""

from __future__ import annotations

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from josepy.json_util import decode_b64jose

from api.acme.jws import Signed
from api.acme.problems import AcmeProblem
from api.acme.server import Acme, acme_route
from api.context import BROKER
from shared import tasks as task_names
from shared.db import acme as db
from shared.db import revocation as revocation_db
from shared.db.acme import IssuedCertificate

# RFC 5280 reason codes a subscriber may give (7 is unused; 8 removeFromCRL and 9/10 are not for
# subscribers, as Boulder refuses them too).
REASONS = {0: "UNSPECIFIED", 1: "KEY_COMPROMISE", 3: "AFFILIATION_CHANGED", 4: "SUPERSEDED",
           5: "CESSATION_OF_OPERATION"}
SPKI = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo


def _names(cert: x509.Certificate) -> list[tuple[str, str]]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    out = [("dns", n.value.lower()) for n in san if isinstance(n, x509.DNSName)]
    out += [("ip", str(n.value)) for n in san if isinstance(n, x509.IPAddress)]
    return [(t, v.removeprefix("*.")) for t, v in out]


async def _may_revoke(acme: Acme, signed: Signed, issued: IssuedCertificate, cert: x509.Certificate) -> bool:
    if signed.account is None:  # signed with a jwk: it must be the certificate's key
        jwk_key = getattr(signed.jwk.key, "_wrapped", signed.jwk.key)
        return bool(jwk_key.public_bytes(*SPKI) == cert.public_key().public_bytes(*SPKI))
    return (await db.account_ordered(acme.pool, signed.account.id, issued.id)
            or await db.authorized_for_all(acme.pool, signed.account.id, _names(cert)))


@acme_route("POST", "/revoke-cert", summary="Revoke a certificate by account key or certificate key (RFC 8555 7.6)")
async def revoke_cert(acme: Acme) -> web.Response:
    signed = await acme.verify(key="either")
    payload = signed.json()
    encoded, reason_code = payload.get("certificate"), payload.get("reason", 0)
    if not isinstance(encoded, str):
        raise AcmeProblem("malformed", "revoke-cert needs certificate: the DER certificate, base64url")
    if not isinstance(reason_code, int) or isinstance(reason_code, bool) or reason_code not in REASONS:
        raise AcmeProblem("badRevocationReason", f"reason must be one of {sorted(REASONS)}")
    try:
        der = decode_b64jose(encoded)
        cert = x509.load_der_x509_certificate(der)
    except Exception:
        raise AcmeProblem("malformed", "certificate is not a base64url DER certificate") from None
    match = None
    for candidate in await db.profile_certificate(acme.pool, acme.profile_id, format(cert.serial_number, "x")):
        stored = x509.load_pem_x509_certificate(candidate.certificate_pem.encode())
        if stored.public_bytes(serialization.Encoding.DER) == der:
            match = candidate
    if match is None:
        raise AcmeProblem("malformed", "this ACME server did not issue that certificate", status=404)
    if not await _may_revoke(acme, signed, match, cert):
        raise AcmeProblem("unauthorized", "neither the account that ordered this certificate, one authorized for "
                                          "all its names, nor its own key signed this request")
    actor = f"acme-account:{signed.account.id}" if signed.account is not None else "acme-certificate-key"
    async with acme.pool.acquire() as conn, conn.transaction():
        done = await revocation_db.revoke(conn, match.id, match.project_id, REASONS[reason_code], actor)
    if done is None:
        raise AcmeProblem("alreadyRevoked", "the certificate is already revoked")
    if match.ca_id is not None:
        # Committed; the CRL task re-reads every revocation of the CA, and beat re-signs if this is lost.
        await acme.request.app[BROKER].send_best_effort(task_names.SIGN_CRL, [str(match.ca_id)])
    return web.Response(status=200)
