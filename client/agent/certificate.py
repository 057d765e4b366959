"""One configured certificate, kept issued, valid and current on disk.

``CertificateAgent.step`` looks at what is on disk and in the agent's bookkeeping, does what is due
now (at most one thing that changes the files), and says how long until something is due next:

1. The current version on disk counts only if it was requested with exactly this config (its
   ``fingerprint``: profile, names, key algorithm, CSR, every attribute, the chain choice) and its key
   and certificate match. Otherwise one is obtained: issued (``POST /certificates``), or in
   ``certificate-id`` mode read from the API. A restart with a valid matching certificate on disk
   requests nothing.
2. A request once sent is written down first (``state.json``, with an ``Idempotency-Key``), so that a
   restart waits for that request instead of sending another.
3. Every ``status-check-interval`` (and at start) the certificate is read back from the API: a
   ``renewedByCertificateId`` (a renewal made on the server) is followed to the newest successor and
   written; ``revoked`` runs ``on-failure`` and, for a server-key certificate, requests a replacement
   (the profile may refuse it; that is a failure like any other).
4. At the renewal moment (``renew-before-expiry`` before ``notAfter``; by default two thirds into the
   lifetime, counted from its arrival; up to a tenth of that window earlier, at random, drawn once per
   certificate so a fleet spreads out) a server-key certificate is renewed (``POST /{id}/renew``), a
   CSR one re-submitted with its CSR (upstream never renews those); ``certificate-id`` mode only
   follows renewals made elsewhere.
5. A certificate that reaches ``notAfter`` with no replacement runs ``on-failure`` (noticed locally, so
   also while the API is down).

``on-issuance`` runs after a certificate is written for a config that had none, ``on-renewal`` after one
replaces another for the same config (a renewal, a server-side renewal followed, a replacement after
revocation or expiry), ``on-failure`` once per failure (a refused or failed request, revocation,
expiry), not once per retry. Which version's hook has run is kept on disk, so a restart neither runs a
hook again nor loses one a crash interrupted.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from client.agent.config import CertificateConfig
from client.agent.hooks import run_hook
from client.agent.logs import Named
from client.agent.session import Session, describe
from client.agent.store import Installed, Store, StoreError, key_matches
from client.sdk import FINAL, ApiError, flat_answer

log = logging.getLogger("kms.agent")
RENEW_JITTER = 0.1  # of the renewal window
STATUS_JITTER = 0.1  # of the status-check interval, either way
LONG_POLL_SECONDS = 25
MAX_SUCCESSORS = 20


class Refused(Exception):
    """A final outcome for this certificate until something changes: a request refused (4xx) or failed,
    the certificate revoked or expired with nothing to replace it, files that cannot be written."""

    def __init__(self, message: str, kind: str = "failed") -> None:
        super().__init__(message)
        self.kind = kind  # failed | revoked | expired | pending


class CertificateAgent:
    def __init__(self, config: CertificateConfig, session: Session, *, once_wait: float | None = None) -> None:
        self.config = config
        self.session = session
        self.once_wait = once_wait  # --once: how long to wait for a request the worker has not signed
        self.store = Store(config)
        self.fingerprint = config.fingerprint()
        self.state = self.store.read_state()
        self.state["nextStatusCheck"] = 0.0  # look at the API's view once at start
        if isinstance(self.state.get("failure"), dict):
            # A restart tries again at once; a failure whose hook ran does not run it again.
            self.state["failure"].update(retries=0, nextAttempt=0.0)
        self._resolved: tuple[str, str | None] | None = None
        self._log = Named(log, certificate=config.name)

    # -- one step ----------------------------------------------------------------------------------

    async def step(self) -> float:
        """Does what is due now; returns the seconds until something is due next (0: at once)."""
        try:
            return await self._step()
        except ApiError as exc:  # an answer none of the steps expected: final, with what it said
            raise Refused(f"the API refused: {describe(exc)}") from None

    async def _step(self) -> float:
        now = time.time()
        installed = self.current()
        expired = False
        if installed is not None:
            if not self.store.links_in_place():
                replaced = self.store.link_outputs()
                self._log.warning("an output path did not show the current certificate; linked it again",
                                  extra={"replaced": [str(p) for p in replaced]})
            self.store.apply_modes()
            await self._run_owed_hook(installed)
            # Noticed here, before anything asks the API: also while it cannot be reached.
            expired = installed.not_after.timestamp() <= now
            if expired:
                await self._open_failure("expired", f"the certificate expired at {_rfc3339(installed.not_after)}",
                                         subject=installed.meta["serialNumber"], installed=installed)
        pending = self.state.get("pending")
        if isinstance(pending, dict):
            await self._finish_pending(pending, installed)
            return 0.0
        if installed is None:
            if not self._may_act(now):
                return self._until_retry(now)
            if self.config.mode == "certificate-id":
                await self._fetch(self.config.certificate_id, "issuance")
            else:
                await self._submit("issuance")
            return 0.0
        serial, certificate_id = installed.meta["serialNumber"], installed.meta["certificateId"]
        renew_at = float(installed.meta.get("renewAt") or 0.0)
        if now >= float(self.state.get("nextStatusCheck", 0.0)) or now >= renew_at:
            try:
                info = await self._metadata(certificate_id, "read the certificate's status")
            except ApiError as exc:
                if exc.status != 404 or self.config.mode == "certificate-id":
                    raise
                # Deleted on the server: it can no longer be checked or renewed, so a new one replaces it.
                self._log.warning("the API no longer knows the certificate on disk; requesting a new one",
                                  extra={"certificateId": certificate_id})
                if not self._may_act(now):
                    return self._until_retry(now)
                await self._submit("renewal")
                return 0.0
            self.state["nextStatusCheck"] = now + self._status_interval()
            self.state["lastStatus"] = info.get("status")
            self._save()
            self._log.debug("status checked", extra={"certificateId": certificate_id, "status": info.get("status"),
                                                     "renewedByCertificateId": info.get("renewedByCertificateId")})
            successor = info.get("renewedByCertificateId")
            if successor and await self._follow(str(successor)):
                return 0.0
            if info.get("status") == "revoked":
                reason = info.get("revocationReason") or "UNSPECIFIED"
                await self._open_failure("revoked", f"the certificate was revoked ({reason})", subject=serial,
                                         installed=installed)
                if self.config.mode != "server-key":
                    # A CSR's key is its owner's (perhaps the compromised thing), and a certificate named by
                    # id is someone else's: neither is replaced here. Look again at the next status check.
                    return self._status_interval()
                if self._may_act(now):
                    await self._submit("renewal")  # revoked: never renewed, a new one replaces it
                    return 0.0
                return self._until_retry(now)
        if (now >= renew_at or expired) and self.config.mode != "certificate-id":
            if not self._may_act(now):
                return self._until_retry(now)
            if self.config.mode == "server-key":
                await self._renew(certificate_id)
            else:
                await self._submit("renewal")
            return 0.0
        next_check = float(self.state["nextStatusCheck"])
        # certificate-id mode renews nothing itself: past its renewal moment it only keeps looking.
        return max(0.0, (next_check if self.config.mode == "certificate-id" else min(renew_at, next_check)) - now)

    def current(self) -> Installed | None:
        """The version on disk, if it is whole and was made for this config."""
        installed = self.store.installed()
        if installed is None or installed.meta.get("fingerprint") != self.fingerprint:
            return None
        return installed

    def healthy(self) -> Refused | None:
        """For ``--once``: None when a valid, unrevoked certificate for this config is on disk."""
        installed = self.current()
        if installed is None:
            failure = self.state.get("failure")
            return Refused(failure["message"], failure["kind"]) if isinstance(failure, dict) else \
                Refused("no certificate on disk")
        if installed.not_after <= datetime.now(UTC):
            return Refused(f"the certificate expired at {_rfc3339(installed.not_after)}", "expired")
        if self.state.get("lastStatus") == "revoked":
            return Refused("the certificate on disk is revoked and was not replaced", "revoked")
        return None

    # -- obtaining certificates --------------------------------------------------------------------

    async def _resolve(self) -> tuple[str, str | None]:
        """(profile id, application id) for the config's names, as upstream's agent resolves them."""
        if self._resolved is not None:
            return self._resolved
        cfg = self.config
        try:
            if cfg.project_slug:
                project = await self.session.call(lambda c: c.project_by_slug(cfg.project_slug), "resolve the project")
                profile = await self.session.call(lambda c: c.profile_by_slug(cfg.profile_name, str(project["id"])),
                                                  "resolve the profile")
                self._resolved = (str(profile["id"]), None)
            else:
                application = await self.session.call(lambda c: c.application_by_name(cfg.application_name),
                                                      "resolve the application")
                listed = await self.session.call(lambda c: c.application_profiles(str(application["id"])),
                                                 "list the application's profiles")
                matched = [p for p in listed if p.get("profileSlug") == cfg.profile_name]
                if not matched:
                    raise Refused(f"profile '{cfg.profile_name}' is not attached to application "
                                  f"'{cfg.application_name}'")
                self._resolved = (str(matched[0]["profileId"]), str(application["id"]))
        except ApiError as exc:
            what = f"project slug '{cfg.project_slug}' / profile '{cfg.profile_name}'" if cfg.project_slug else \
                f"application '{cfg.application_name}' / profile '{cfg.profile_name}'"
            raise Refused(f"failed to resolve {what}: {describe(exc)}") from None
        return self._resolved

    async def _submit(self, event: str) -> None:
        """``POST /certificates`` for this config, written down before it is sent."""
        profile_id, application_id = await self._resolve()
        cfg = self.config
        attributes = cfg.attributes.request_body(remove_roots=cfg.omit_root) if cfg.attributes is not None else None
        csr = cfg.csr or None
        pending = self.state.get("pending")
        key = pending["idempotencyKey"] if isinstance(pending, dict) and pending.get("idempotencyKey") else \
            str(uuid.uuid4())
        self.state["pending"] = {"event": event, "idempotencyKey": key, "fingerprint": self.fingerprint,
                                 "requestId": None, "since": time.time()}
        self._save()
        try:
            answer = await self.session.call(
                lambda c: c.submit(profile_id, csr=csr, attributes=attributes, idempotency_key=key,
                                   application_id=application_id), "request a certificate")
        except ApiError as exc:
            self._drop_pending()
            if exc.status == 409 and isinstance(pending, dict):
                # The key of an earlier attempt, with another body (the profile was replaced): a new one.
                self._log.info("the earlier request's Idempotency-Key does not fit this request; sending it anew")
                await self._submit(event)
                return
            if exc.status == 404:
                self._resolved = None  # the profile may have been replaced: resolve the names again
            raise Refused(f"the certificate request was refused: {describe(exc)}") from None
        result = flat_answer(answer)
        self._log.info("certificate requested", extra={"certificateRequestId": result["certificateRequestId"],
                                                       "event": event})
        self.state["pending"]["requestId"] = result["certificateRequestId"]
        self._save()
        await self._conclude(result, event)

    async def _renew(self, certificate_id: str) -> None:
        self.state["pending"] = {"event": "renewal", "renewing": certificate_id, "fingerprint": self.fingerprint,
                                 "requestId": None, "since": time.time()}
        self._save()
        try:
            answer = await self.session.call(lambda c: c.renew(certificate_id, remove_roots=self.config.omit_root),
                                             "renew the certificate")
        except ApiError as exc:
            self._drop_pending()
            raise Refused(f"the renewal was refused: {describe(exc)}") from None
        self._log.info("renewal requested", extra={"certificateId": certificate_id,
                                                   "certificateRequestId": answer["certificateRequestId"]})
        self.state["pending"]["requestId"] = answer["certificateRequestId"]
        self._save()
        await self._conclude(answer, "renewal")

    async def _finish_pending(self, pending: dict[str, Any], installed: Installed | None) -> None:
        """A request sent before (perhaps by the agent's previous run): wait for it, never send another."""
        request_id = pending.get("requestId")
        if pending.get("fingerprint") != self.fingerprint or (
                installed is not None and request_id and installed.meta.get("requestId") == request_id):
            self._drop_pending()  # for another config, or already on disk
            return
        if request_id:
            self._log.info("waiting for the certificate request sent earlier",
                           extra={"certificateRequestId": request_id})
            await self._conclude({"certificateRequestId": request_id, "status": "pending"}, pending["event"])
        elif pending.get("renewing"):
            # A renewal whose answer was lost: if it was made, its certificate is the successor.
            renewing = str(pending["renewing"])
            info = await self._metadata(renewing, "read the certificate's status")
            self._drop_pending()
            if info.get("renewedByCertificateId"):
                await self._follow(str(info["renewedByCertificateId"]))
        else:
            await self._submit(pending["event"])  # the same Idempotency-Key: the same request

    async def _conclude(self, result: dict[str, Any], event: str) -> None:
        """Waits for the request in ``result`` (a flat request view) to end, and writes its certificate."""
        request_id = str(result["certificateRequestId"])
        started = time.monotonic()
        wait = LONG_POLL_SECONDS if self.once_wait is None else max(1, min(LONG_POLL_SECONDS, int(self.once_wait)))
        while not _ended(result):
            if self.once_wait is not None and time.monotonic() - started > self.once_wait:
                raise Refused(f"certificate request {request_id} still {result.get('status')} after "
                              f"{self.once_wait:g}s", "pending")
            try:
                result, retry_after = await self.session.call(
                    lambda c: c.request_status(request_id, wait=wait), "wait for the certificate request")
            except ApiError as exc:
                self._drop_pending()  # gone, or not this identity's: never waited for again
                raise Refused(f"cannot follow certificate request {request_id}: {describe(exc)}") from None
            if result.get("status") not in FINAL and retry_after:
                await asyncio.sleep(min(retry_after, 5.0))
        self._drop_pending()
        if result["status"] == "failed":
            raise Refused(f"certificate request {request_id} failed: {result.get('errorMessage') or 'no reason given'}")
        await self._install(event, result, request_id=request_id)

    async def _fetch(self, certificate_id: str, event: str) -> None:
        """``certificate-id`` mode: the named certificate (or its newest renewal), as it is on the API."""
        try:
            info = await self._metadata(certificate_id, "read the certificate")
        except ApiError as exc:
            raise Refused(f"failed to fetch certificate {certificate_id}: {describe(exc)}") from None
        if info.get("renewedByCertificateId") and await self._follow(str(info["renewedByCertificateId"]), event):
            return
        if info.get("status") != "active":
            raise Refused(f"certificate {certificate_id} is in '{info.get('status')}' state",
                          "revoked" if info.get("status") == "revoked" else "expired")
        await self._write_bundle(certificate_id, info, event)

    async def _follow(self, successor_id: str, event: str = "renewal") -> bool:
        """Writes the newest active certificate renewing the one on disk (a renewal the server made, or
        one made elsewhere); False when there is none to write."""
        seen: set[str] = set()
        current, info = successor_id, {}
        while len(seen) < MAX_SUCCESSORS:
            seen.add(current)
            try:
                info = await self._metadata(current, "read the renewed certificate")
            except ApiError as exc:
                self._log.warning("cannot read the certificate that renewed this one",
                                  extra={"certificateId": current, "error": describe(exc)})
                return False
            following = info.get("renewedByCertificateId")
            if not following or str(following) in seen:
                break
            current = str(following)
        if info.get("status") != "active":
            return False
        self._log.info("following a renewal made on the server", extra={"certificateId": current})
        await self._write_bundle(current, info, event)
        return True

    async def _metadata(self, certificate_id: str, what: str) -> dict[str, Any]:
        return await self.session.call(lambda c: c.certificate(certificate_id), what)

    async def _write_bundle(self, certificate_id: str, info: dict[str, Any], event: str) -> None:
        try:
            bundle = await self.session.call(lambda c: c.bundle(certificate_id), "read the certificate bundle")
        except ApiError as exc:
            raise Refused(f"failed to fetch the bundle of certificate {certificate_id}: {describe(exc)}") from None
        if self.store.writes_key and not bundle.get("privateKey"):
            raise Refused(f"certificate {certificate_id} comes without a private key this identity may read: it "
                          "needs the issuer role and a key the server made (or leave out file-output.private-key)")
        await self._install(event, {**bundle, "certificateId": certificate_id,
                                    "serialNumber": bundle.get("serialNumber") or info.get("serialNumber")},
                            request_id=None)

    # -- writing -----------------------------------------------------------------------------------

    async def _install(self, event: str, result: dict[str, Any], *, request_id: str | None) -> None:
        certificate_pem = str(result["certificate"])
        try:
            certificate = x509.load_pem_x509_certificate(certificate_pem.encode())
        except ValueError:
            raise Refused("the API sent a certificate that does not parse") from None
        files = {"certificate": certificate_pem}
        if self.store.writes_key:
            try:
                key = serialization.load_pem_private_key(str(result.get("privateKey") or "").encode(), None)
            except (ValueError, TypeError):
                raise Refused("the API sent no usable private key with the certificate") from None
            if not key_matches(key, certificate):
                raise Refused("the private key the API sent does not match the certificate")
            files["private-key"] = str(result["privateKey"])
        elif self.config.mode == "csr" and not _same_public_key(self.config.csr, certificate):
            raise Refused("the certificate the API sent is not for the CSR's key")
        if self.config.chain.path is not None:
            chain = str(result.get("certificateChain") or "")
            files["chain"] = without_roots(chain) if self.config.omit_root else chain
        renew_at = self._renewal_moment(certificate)
        meta = {"certificateId": str(result["certificateId"]), "serialNumber": str(result["serialNumber"]),
                "requestId": request_id, "event": event, "fingerprint": self.fingerprint,
                "notBefore": _rfc3339(certificate.not_valid_before_utc),
                "notAfter": _rfc3339(certificate.not_valid_after_utc), "renewAt": renew_at,
                "renewAtTime": _rfc3339(datetime.fromtimestamp(renew_at, UTC)),
                "writtenAt": _rfc3339(datetime.now(UTC))}
        outputs = self.store.outputs()
        version, replaced = self.store.install(files, meta)
        if replaced:
            self._log.warning("files that were not the agent's were replaced by links to its store",
                              extra={"replaced": [str(p) for p in replaced], "store": str(self.store.root)})
        self.state.pop("failure", None)
        self.state.pop("pending", None)
        self.state["lastStatus"] = "active"
        self.state["nextStatusCheck"] = time.time() + self._status_interval()
        self._save()
        self._log.info("certificate issued and written" if event == "issuance" else "certificate renewed and written",
                       extra={"event": event, "certificateId": meta["certificateId"],
                              "serialNumber": meta["serialNumber"], "notAfter": meta["notAfter"],
                              "renewAt": meta["renewAtTime"], "version": version,
                              "files": [str(p) for p, _ in outputs.values()]})
        installed = self.store.installed()
        if installed is not None:
            await self._run_owed_hook(installed)

    def _renewal_moment(self, certificate: x509.Certificate) -> float:
        """When to renew: ``renew-before-expiry`` before notAfter, else two thirds into the lifetime, up to
        a tenth of that window earlier at random. The lifetime counts from when the certificate arrived,
        not from its notBefore, which the service backdates (by a minute): from notBefore, a short-lived
        certificate would be due at once, and again, and again."""
        not_after = certificate.not_valid_after_utc.timestamp()
        start = max(certificate.not_valid_before_utc.timestamp(), time.time())
        remaining = max(0.0, not_after - start)
        window = self.config.lifecycle.renew_before
        if window is None or window >= remaining:
            if window is not None:
                self._log.warning("renew-before-expiry is not shorter than the certificate's lifetime; renewing "
                                  "two thirds into it instead", extra={"lifetimeSeconds": round(remaining)})
            window = remaining / 3
        window = min(window + random.uniform(0, window * RENEW_JITTER), remaining)
        return not_after - window

    # -- hooks and failures ------------------------------------------------------------------------

    async def _run_owed_hook(self, installed: Installed) -> None:
        if self.state.get("hooksDoneFor") == installed.version:
            return
        event = str(installed.meta.get("event") or "issuance")
        hook = self.config.hooks.get(event)
        if hook is not None:
            await run_hook(hook, self._hook_environment(event, installed.meta), certificate=self.config.name)
        self.state["hooksDoneFor"] = installed.version
        self._save()

    async def _open_failure(self, kind: str, message: str, *, subject: str, installed: Installed | None) -> None:
        """A failure that is a fact about the certificate (revoked, expired): ``on-failure`` once for it."""
        failure = self.state.get("failure")
        if isinstance(failure, dict) and failure.get("fingerprint") == self.fingerprint and \
                failure.get("kind") == kind and failure.get("subject") == subject:
            return
        self.state["failure"] = {"kind": kind, "message": message, "subject": subject, "fingerprint": self.fingerprint,
                                 "retries": 0, "nextAttempt": 0.0, "hookRan": False, "since": time.time()}
        self._save()
        self._log.error(message, extra={"failure": kind})
        await self._run_failure_hook(kind, message, installed.meta if installed is not None else {})

    async def record_failure(self, exc: Refused | StoreError) -> float:
        """A failed attempt: ``on-failure`` unless this failure already ran it; the next attempt after
        ``failure-retry-interval``, none after ``max-failure-retries``. Returns seconds until it."""
        kind = exc.kind if isinstance(exc, Refused) else "failed"
        failure = self.state.get("failure")
        new = not (isinstance(failure, dict) and failure.get("fingerprint") == self.fingerprint)
        if new:
            failure = {"kind": kind, "message": str(exc), "subject": "", "fingerprint": self.fingerprint,
                       "retries": 0, "hookRan": False, "since": time.time()}
        assert isinstance(failure, dict)
        failure["retries"] = int(failure.get("retries", 0)) + 1
        failure["lastError"] = str(exc)
        lifecycle = self.config.lifecycle
        failure["nextAttempt"] = time.time() + lifecycle.failure_retry_interval
        self.state["failure"] = failure
        self._save()
        gave_up = failure["retries"] >= lifecycle.max_failure_retries
        self._log.error(str(exc), extra={"failure": kind, "attempt": failure["retries"],
                                         "retryInSeconds": None if gave_up else lifecycle.failure_retry_interval})
        if gave_up:
            self._log.error("giving up on this certificate until the agent restarts or its config changes",
                            extra={"attempts": failure["retries"]})
        if not failure.get("hookRan"):
            installed = self.store.installed()
            await self._run_failure_hook(kind, str(exc), installed.meta if installed is not None else {})
        return self._until_retry(time.time())

    async def _run_failure_hook(self, kind: str, message: str, meta: dict[str, Any]) -> None:
        hook = self.config.hooks.get("failure")
        if hook is not None:
            await run_hook(hook, {**self._hook_environment("failure", meta), "KMS_AGENT_REASON": f"{kind}: {message}"},
                           certificate=self.config.name)
        failure = self.state.get("failure")
        if isinstance(failure, dict):
            failure["hookRan"] = True
            self._save()

    def _may_act(self, now: float) -> bool:
        """Whether a request may be sent now: not while a failure waits for its retry, nor after the
        last retry."""
        failure = self.state.get("failure")
        if not isinstance(failure, dict) or failure.get("fingerprint") != self.fingerprint:
            return True
        if int(failure.get("retries", 0)) >= self.config.lifecycle.max_failure_retries:
            return False
        return now >= float(failure.get("nextAttempt", 0.0))

    def _until_retry(self, now: float) -> float:
        failure = self.state.get("failure")
        if not isinstance(failure, dict) or \
                int(failure.get("retries", 0)) >= self.config.lifecycle.max_failure_retries:
            return self._status_interval()
        return max(0.0, min(float(failure.get("nextAttempt", 0.0)) - now, self._status_interval()))

    def _hook_environment(self, event: str, meta: dict[str, Any]) -> dict[str, str]:
        outputs = self.store.outputs()
        return {"KMS_AGENT_EVENT": event, "KMS_AGENT_CERTIFICATE_NAME": self.config.name,
                "KMS_AGENT_CERTIFICATE_ID": str(meta.get("certificateId") or ""),
                "KMS_AGENT_SERIAL_NUMBER": str(meta.get("serialNumber") or ""),
                **{f"KMS_AGENT_{kind.upper().replace('-', '_')}_PATH": str(outputs[kind][0]) if kind in outputs else ""
                   for kind in ("certificate", "private-key", "chain")}}

    def _status_interval(self) -> float:
        interval = self.config.lifecycle.status_check_interval
        return interval * random.uniform(1 - STATUS_JITTER, 1 + STATUS_JITTER)

    def _drop_pending(self) -> None:
        if self.state.pop("pending", None) is not None:
            self._save()

    def _save(self) -> None:
        self.store.write_state(self.state)


def _ended(result: dict[str, Any]) -> bool:
    """Failed, or issued with everything written (upstream's agent polls on past an ``issued`` without them)."""
    return result.get("status") == "failed" or bool(
        result.get("status") == "issued" and result.get("certificate") and result.get("certificateId")
        and result.get("serialNumber"))


def without_roots(chain_pem: str) -> str:
    """The chain without self-signed certificates (``omit-root``, enforced whatever the API sent)."""
    if not chain_pem.strip():
        return ""
    certificates = x509.load_pem_x509_certificates(chain_pem.encode())
    kept = [c for c in certificates if not _self_signed(c)]
    if len(kept) == len(certificates):
        return chain_pem
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in kept)


def _self_signed(certificate: x509.Certificate) -> bool:
    if certificate.issuer != certificate.subject:
        return False
    try:
        certificate.verify_directly_issued_by(certificate)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _same_public_key(csr_pem: str, certificate: x509.Certificate) -> bool:
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
    except ValueError:
        return False
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(csr.public_key().public_bytes(serialization.Encoding.DER, spki)
                == certificate.public_key().public_bytes(serialization.Encoding.DER, spki))


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")

