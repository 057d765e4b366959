"""Request evaluation: an issuance request, its profile's defaults and its policy -> one template.

``evaluate_request`` is the pure core of issuance: it reads the CSR (if any, with ``shared.pki.csr``),
merges the request's attributes with the profile's defaults, checks the result against RFC 5280
coherence rules and the certificate policy, and returns the ``CertificateTemplate`` the worker will
sign. Everything the signer trusts is decided here, so everything a caller can get wrong is reported
here, all at once. What a request and a profile may carry is modelled in ``shared.policy.attributes``.

Error classes: malformed input (unreadable or oversized CSR, weak key, contradictory request, no
validity at all) is ``BadRequest`` (400); a well-formed request the service will not issue (policy
violations, and RFC 5280 incoherence such as ``key_cert_sign`` without ``isCA``) is one
``PolicyViolation`` (422) listing every problem.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from shared.errors import BadRequest, FieldError, PolicyViolation
from shared.pki.csr import CsrRequest, read_csr
from shared.pki.template import AltName, CertificateTemplate, SubjectName, Validity
from shared.policy.attributes import DEFAULT_KEY_ALGORITHM, IssueAttributes, ProfileDefaults, SubjectFields
from shared.policy.rules import PolicyRules, check_template
from shared.policy.ttl import parse_ttl


def _fallback_usages(required: Sequence[str] | None, builtin: set[str]) -> frozenset[str]:
    # The policy's required usages are the most useful guess when nobody named any.
    return frozenset(required) if required else frozenset(builtin)


def _contradictions(attributes: IssueAttributes, csr: CsrRequest) -> list[FieldError]:
    """Names given in the attributes must repeat the CSR's: the CSR is what the key holder signed."""
    errors = []
    for name, info in SubjectFields.model_fields.items():
        given, signed = getattr(attributes, name), getattr(csr.names, name)
        if given is not None and given != signed:
            alias = info.alias or name
            errors.append(FieldError(f"attributes.{alias}", f"{alias} {given!r} contradicts the CSR's "
                                     f"{signed!r}; omit it or repeat the CSR's value"))
    given_alt = {(a.type, a.value) for a in attributes.alt_names}
    if given_alt and given_alt != {(a.type, a.value) for a in csr.names.alt_names}:
        errors.append(FieldError("attributes.altNames", "altNames differ from the CSR's subject alternative "
                                 "names; omit them or repeat the CSR's exactly"))
    if attributes.key_algorithm is not None and attributes.key_algorithm != csr.key_algorithm:
        errors.append(FieldError("attributes.keyAlgorithm", f"keyAlgorithm {attributes.key_algorithm!r} "
                                 f"contradicts the CSR's {csr.key_algorithm} key"))
    return errors


def _validity(attributes: IssueAttributes, defaults: ProfileDefaults) -> Validity:
    if attributes.ttl is not None:
        return Validity(ttl_seconds=parse_ttl(attributes.ttl))
    if attributes.not_before is not None and attributes.not_after is not None:
        return Validity(not_before=attributes.not_before.astimezone(UTC),
                        not_after=attributes.not_after.astimezone(UTC))
    if defaults.ttl_days is not None:
        return Validity(ttl_seconds=defaults.ttl_days * 86_400)
    if defaults.ttl is not None:
        return Validity(ttl_seconds=parse_ttl(defaults.ttl))
    raise BadRequest("no validity: give attributes.ttl (e.g. '90d') or notBefore and notAfter, or set a "
                     "default ttlDays in the profile", [FieldError("attributes.ttl", "required")])


def _coherence(template: CertificateTemplate, now: datetime) -> list[FieldError]:
    """RFC 5280 rules a certificate must satisfy whatever the policy says (pkilint checks them)."""
    errors = []
    if template.subject.is_empty() and not template.alt_names:
        errors.append(FieldError("attributes", "a certificate needs a subject name or at least one altName"))
    if template.is_ca and "key_cert_sign" not in template.key_usages:
        errors.append(FieldError("attributes.keyUsages", "a CA certificate (isCA true) needs key_cert_sign"))
    if not template.is_ca and "key_cert_sign" in template.key_usages:
        errors.append(FieldError("attributes.keyUsages", "key_cert_sign requires basicConstraints.isCA true"))
    if not template.is_ca and template.path_length is not None:
        errors.append(FieldError("attributes.basicConstraints.pathLength",
                                 "pathLength is only allowed with isCA true"))
    for flag in ("encipher_only", "decipher_only"):
        if flag in template.key_usages and "key_agreement" not in template.key_usages:
            errors.append(FieldError("attributes.keyUsages", f"{flag} requires key_agreement"))
    not_after = template.validity.not_after
    if not_after is not None and not_after <= now:
        errors.append(FieldError("attributes.notAfter",
                                 f"notAfter {not_after.isoformat()} is not in the future"))
    return errors


def evaluate_request(
    *,
    rules: PolicyRules,
    defaults: ProfileDefaults,
    attributes: IssueAttributes | None,
    csr_pem: str | None,
    now: datetime,
    csr_signature_verified: bool = False,
) -> CertificateTemplate:
    """The certificate template for one issuance request, or the reasons it cannot be issued.

    Precedence, field by field: the CSR, then the request's attributes, then the profile's defaults
    (so subject fields a CSR leaves empty, such as O, are filled from the profile's defaults).
    Names (subject, altNames) and the key algorithm given in attributes alongside a CSR must be absent
    or equal to the CSR's (else BadRequest); key usages, EKUs and basic constraints in the attributes
    replace the ones the CSR requests. An empty list counts as "not given".

    When nothing names key usages: a CA gets key_cert_sign + crl_sign; a leaf gets the policy's
    required usages if it has some, else digital_signature (+ key_encipherment for RSA keys). Likewise
    for EKUs: none for a CA; for a leaf the policy's required EKUs, else server_auth. Without a CSR
    the key algorithm (request, default, else EC_prime256v1) is the key the worker generates.
    A validity is required (ttl or notBefore+notAfter in the request, else the profile's ttl).

    Raises BadRequest for malformed input and one PolicyViolation listing every RFC 5280
    incoherence and every policy violation.
    """
    # Imported here, not at the top: shared.pki.csr reads a CSR's names with the models above, so it imports
    # this module, and a top-level import back would be a cycle.

    attributes = attributes or IssueAttributes()
    csr = read_csr(csr_pem, check_signature=not csr_signature_verified) if csr_pem is not None else None
    if csr is not None:
        contradictions = _contradictions(attributes, csr)
        if contradictions:
            detail = "; ".join(f"{e.field}: {e.message}" for e in contradictions)
            raise BadRequest(f"attributes contradict the CSR: {detail}", contradictions)

    names: SubjectFields = csr.names if csr is not None else attributes
    subject = SubjectName(**{
        name: getattr(names, name) or getattr(attributes, name) or getattr(defaults, name)
        for name in SubjectFields.model_fields
    })
    alt_inputs = csr.names.alt_names if csr is not None else attributes.alt_names
    alt_names = tuple(AltName(type=a.type, value=a.value) for a in alt_inputs)

    key_algorithm = csr.key_algorithm if csr is not None else (
        attributes.key_algorithm or defaults.key_algorithm or DEFAULT_KEY_ALGORITHM)
    constraints = (attributes.basic_constraints or (csr.basic_constraints if csr else None)
                   or defaults.basic_constraints)
    is_ca = constraints.is_ca if constraints else False

    requested_usages = attributes.key_usages or (csr.key_usages if csr else None) or defaults.key_usages
    if requested_usages:
        key_usages = frozenset[str](requested_usages)
    elif is_ca:
        key_usages = frozenset({"key_cert_sign", "crl_sign"})
    else:
        builtin = {"digital_signature", "key_encipherment"} if key_algorithm.startswith("RSA") \
            else {"digital_signature"}
        key_usages = _fallback_usages(rules.key_usages.required if rules.key_usages else None, builtin)

    requested_ekus = (attributes.extended_key_usages or (csr.extended_key_usages if csr else None)
                      or defaults.extended_key_usages)
    if requested_ekus:
        ekus = frozenset[str](requested_ekus)
    elif is_ca:
        ekus = frozenset()
    else:
        required = rules.extended_key_usages.required if rules.extended_key_usages else None
        ekus = _fallback_usages(required, {"server_auth"})

    template = CertificateTemplate(
        subject=subject,
        alt_names=alt_names,
        key_usages=key_usages,
        extended_key_usages=ekus,
        key_algorithm=key_algorithm,
        signature_algorithm=attributes.signature_algorithm or defaults.signature_algorithm,
        validity=_validity(attributes, defaults),
        is_ca=is_ca,
        path_length=constraints.path_length if constraints else None,
        public_key_der=csr.public_key_der if csr is not None else None,
    )
    errors = _coherence(template, now) + check_template(rules, template)
    if errors:
        raise PolicyViolation(errors)
    return template
