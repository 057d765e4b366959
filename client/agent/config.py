"""The KMS agent's own config file (``certificate-agent-config.yaml``, ``version: v1`` or ``v2``), read as
upstream's ``infisical cert-manager agent`` reads it, and checked as strictly before anything is sent.

Keys (upstream's spelling; unknown keys are ignored, as Go's yaml decoder ignores them)::

    version: v1 | v2
    infisical: {address, retry-strategy: {base-delay, max-delay, max-retries}}
    auth: {type: universal-auth, config: {client-id: FILE, client-secret: FILE, remove_client_secret_on_read}}
    certificates:
      - project-slug + profile-name (v1) | application-name + profile-name (v2) | certificate-id
        csr: PEM | csr-path: FILE            # the key stays with you; otherwise the server makes it
        attributes: {common-name, alt-names[], key-algorithm, signature-algorithm, key-usages[],
                     extended-key-usages[], ttl, not-before, not-after}
        lifecycle: {renew-before-expiry, status-check-interval, failure-retry-interval, max-failure-retries}
        post-hooks: {on-issuance|on-renewal|on-failure: {command, timeout}}
        file-output: {private-key: {path, permission}, certificate: {path, permission},
                      chain: {path, permission, omit-root}}

Errors use upstream's wording where upstream has one ("certificate 2 (version v1): ...").
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from client.agent.durations import DurationError, parse_duration

VERSIONS = ("v1", "v2")
DEFAULT_STATUS_CHECK_SECONDS = 300.0
DEFAULT_MAX_FAILURE_RETRIES = 10  # upstream's DEFAULT_MAX_FAILURE_RETRIES
DEFAULT_HOOK_TIMEOUT_SECONDS = 30.0  # upstream's default when a hook names none
DEFAULT_BASE_DELAY_SECONDS = 2.0
DEFAULT_MAX_DELAY_SECONDS = 300.0
DEFAULT_ONCE_RETRIES = 3
DEFAULT_KEY_MODE, DEFAULT_PUBLIC_MODE = 0o600, 0o644
CONFIG_BASE64_VARIABLE = "INFISICAL_AGENT_CONFIG_BASE64"  # upstream: the whole config, base64, instead of a file


class ConfigError(ValueError):
    """The config cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Hook:
    command: str
    timeout: float


@dataclass(frozen=True)
class OutputFile:
    path: Path | None
    mode: int


@dataclass(frozen=True)
class Attributes:
    common_name: str = ""
    alt_names: tuple[str, ...] = ()
    key_algorithm: str = ""
    signature_algorithm: str = ""
    key_usages: tuple[str, ...] = ()
    extended_key_usages: tuple[str, ...] = ()
    ttl: str = ""
    not_before: str = ""
    not_after: str = ""

    def request_body(self, *, remove_roots: bool) -> dict[str, Any]:
        """``attributes`` of ``POST /certificates`` as upstream's ``buildCertificateAttributes`` makes them
        (empty values left out, ``removeRootsFromChain`` always sent), but each alt name typed by what it
        is (upstream sends every one as ``dns_name``, which no policy allowing IP SANs then accepts)."""
        body: dict[str, Any] = {}
        for key, value in (("ttl", self.ttl), ("commonName", self.common_name), ("keyAlgorithm", self.key_algorithm),
                           ("signatureAlgorithm", self.signature_algorithm), ("notBefore", self.not_before),
                           ("notAfter", self.not_after)):
            if value:
                body[key] = value
        if self.key_usages:
            body["keyUsages"] = list(self.key_usages)
        if self.extended_key_usages:
            body["extendedKeyUsages"] = list(self.extended_key_usages)
        body["removeRootsFromChain"] = remove_roots
        if self.alt_names:
            body["altNames"] = [{"type": alt_name_type(name), "value": name} for name in self.alt_names]
        return body


def alt_name_type(name: str) -> str:
    try:
        ipaddress.ip_address(name)
        return "ip_address"
    except ValueError:
        pass
    if "://" in name:
        return "uri"
    return "email" if "@" in name else "dns_name"


@dataclass(frozen=True)
class Lifecycle:
    renew_before: float | None  # seconds before notAfter; None: at two thirds of the lifetime
    status_check_interval: float
    failure_retry_interval: float
    max_failure_retries: int


@dataclass(frozen=True)
class CertificateConfig:
    index: int  # 1-based, as upstream numbers them in its messages
    project_slug: str
    application_name: str
    profile_name: str
    certificate_id: str
    csr: str
    csr_path: str
    attributes: Attributes | None
    lifecycle: Lifecycle
    hooks: dict[str, Hook]  # "issuance" | "renewal" | "failure"
    private_key: OutputFile
    certificate: OutputFile
    chain: OutputFile
    omit_root: bool

    @property
    def mode(self) -> str:
        """``certificate-id`` (fetch a certificate made elsewhere), ``csr`` or ``server-key``."""
        if self.certificate_id:
            return "certificate-id"
        return "csr" if self.csr else "server-key"

    @property
    def name(self) -> str:
        """How logs and hooks name this certificate (upstream's ``getCertificateDisplayName``)."""
        if self.attributes is not None and (self.attributes.common_name or self.attributes.alt_names):
            return self.attributes.common_name or self.attributes.alt_names[0]
        if self.certificate_id:
            return f"certificate {self.certificate_id}"
        if self.csr_path:
            return f"CSR-based certificate ({self.csr_path})"
        return f"certificate {self.index}"

    def fingerprint(self) -> str:
        """What the certificate on disk must have been requested with to count as this config's: the
        profile it comes from, the CSR, every attribute, the chain choice. A change to any of them
        issues again; lifecycle, hooks and file modes are applied to the certificate already there."""
        attrs = self.attributes or Attributes()
        facts = {
            "projectSlug": self.project_slug, "applicationName": self.application_name,
            "profileName": self.profile_name, "certificateId": self.certificate_id, "csr": self.csr.strip(),
            "commonName": attrs.common_name, "altNames": sorted(attrs.alt_names),
            "keyAlgorithm": attrs.key_algorithm, "signatureAlgorithm": attrs.signature_algorithm,
            "keyUsages": sorted(attrs.key_usages), "extendedKeyUsages": sorted(attrs.extended_key_usages),
            "ttl": attrs.ttl, "notBefore": attrs.not_before, "notAfter": attrs.not_after, "omitRoot": self.omit_root,
        }
        return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class RetryStrategy:
    base_delay: float
    max_delay: float
    max_retries: int  # attempts --once makes against an unreachable API before it gives up


@dataclass(frozen=True)
class AgentConfig:
    version: str
    address: str  # the API's base URL, without upstream's "/api" suffix
    client_id_path: str
    client_secret_path: str
    remove_client_secret_on_read: bool
    retry: RetryStrategy
    certificates: tuple[CertificateConfig, ...] = field(default_factory=tuple)
    ignored: tuple[str, ...] = ()  # upstream keys this agent does not act on (logged at start)


# -- reading -----------------------------------------------------------------------------------------


def read_config(path: Path | None) -> AgentConfig:
    """The config from ``$INFISICAL_AGENT_CONFIG_BASE64`` (as upstream) or else the file at ``path``."""
    encoded = os.environ.get(CONFIG_BASE64_VARIABLE)
    if encoded:
        try:
            text = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise ConfigError(f"{CONFIG_BASE64_VARIABLE} is not base64-encoded YAML: {exc}") from None
    elif path is None:
        raise ConfigError("no config: give --config FILE (or set INFISICAL_AGENT_CONFIG_BASE64)")
    else:
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read the config {path}: {exc.strerror or exc}") from None
    return parse_config(text)


def parse_config(text: str) -> AgentConfig:
    try:
        raw = yaml.load(text, Loader=_Loader)  # noqa: S506  (a SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"the config is not valid YAML: {exc}") from None
    doc = _mapping(raw, "the config")
    certificates_raw = doc.get("certificates") or []
    if not isinstance(certificates_raw, list):
        raise ConfigError("'certificates' must be a list")
    version = _text(doc.get("version"), "version")
    if not version:
        raise ConfigError("certificates are configured but 'version' field is not specified: add 'version: v2' "
                          "to your config" if certificates_raw else
                          "certificate management requires 'version: v1' or 'version: v2'")
    if version not in VERSIONS:
        raise ConfigError(f"unsupported version: {version}. Supported versions: v1, v2")
    if not certificates_raw:
        raise ConfigError("certificate management requires at least one certificate to be configured")
    if doc.get("templates"):
        raise ConfigError("certificate-only mode does not support templates. Use regular 'infisical agent' for "
                          "secrets management")
    infisical = _mapping(doc.get("infisical"), "infisical")
    address = _text(infisical.get("address"), "infisical.address") or os.environ.get("KMS_URL", "")
    if not address:
        raise ConfigError("infisical.address is required (the service's URL, e.g. https://kms.example.com)")
    if not address.startswith(("http://", "https://")):
        raise ConfigError(f"infisical.address {address!r} must start with http:// or https://")
    address = address.rstrip("/")
    address = address.removesuffix("/api")  # upstream appends "/api"; our paths carry it already
    auth = _mapping(doc.get("auth"), "auth")
    auth_type = _text(auth.get("type"), "auth.type") or "universal-auth"
    if auth_type != "universal-auth":
        raise ConfigError(f"auth.type {auth_type!r} is not supported here: this service has universal-auth "
                          "machine identities only")
    auth_config = _mapping(auth.get("config"), "auth.config")
    retry = _mapping(infisical.get("retry-strategy"), "infisical.retry-strategy")
    strategy = RetryStrategy(
        base_delay=_duration(retry.get("base-delay"), "infisical.retry-strategy.base-delay",
                             DEFAULT_BASE_DELAY_SECONDS, positive=True),
        max_delay=_duration(retry.get("max-delay"), "infisical.retry-strategy.max-delay",
                            DEFAULT_MAX_DELAY_SECONDS, positive=True),
        max_retries=_count(retry.get("max-retries"), "infisical.retry-strategy.max-retries", DEFAULT_ONCE_RETRIES))
    certificates = tuple(_certificate(version, i, _mapping(c, f"certificate {i}"))
                         for i, c in enumerate(certificates_raw, start=1))
    _check_distinct_paths(certificates)
    # Upstream's agent writes its token to ``sinks`` and caches it (``cache``); this one keeps it in memory.
    ignored = tuple(key for key in ("sinks", "cache") if doc.get(key))
    return AgentConfig(version, address, _text(auth_config.get("client-id"), "auth.config.client-id"),
                       _text(auth_config.get("client-secret"), "auth.config.client-secret"),
                       _flag(auth_config.get("remove_client_secret_on_read"), "remove_client_secret_on_read"),
                       strategy, certificates, ignored)


def _certificate(version: str, index: int, raw: dict[str, Any]) -> CertificateConfig:
    where = f"certificate {index}"
    project_slug = _text(raw.get("project-slug"), f"{where}: project-slug")
    application_name = _text(raw.get("application-name"), f"{where}: application-name")
    profile_name = _text(raw.get("profile-name"), f"{where}: profile-name")
    certificate_id = _text(raw.get("certificate-id"), f"{where}: certificate-id")
    csr = _text(raw.get("csr"), f"{where}: csr")
    csr_path = _text(raw.get("csr-path"), f"{where}: csr-path")
    attributes_raw = raw.get("attributes")
    # upstream's validateCertificateSourceConfig, message for message
    if certificate_id:
        for key, value in (("project-slug", project_slug), ("profile-name", profile_name),
                           ("application-name", application_name)):
            if value:
                raise ConfigError(f"{where}: 'certificate-id' cannot be used together with '{key}'")
        if csr or csr_path:
            raise ConfigError(f"{where}: 'certificate-id' cannot be used together with 'csr' or 'csr-path'")
        if attributes_raw is not None:
            raise ConfigError(f"{where}: 'attributes' is not supported when using 'certificate-id'")
    elif version == "v1":
        if application_name:
            raise ConfigError(f"{where} (version v1): 'application-name' is not supported; use 'project-slug' + "
                              "'profile-name', or set 'version: v2' for the application-based flow")
        if not project_slug or not profile_name:
            raise ConfigError(f"{where} (version v1): must specify either 'certificate-id' or both 'project-slug' "
                              "and 'profile-name'")
    else:
        if project_slug:
            raise ConfigError(f"{where} (version v2): 'project-slug' is not supported; use 'application-name' + "
                              "'profile-name', or set 'version: v1' for the legacy flow")
        if not application_name or not profile_name:
            raise ConfigError(f"{where} (version v2): must specify either 'certificate-id' or both "
                              "'application-name' and 'profile-name'")
    if csr and csr_path:
        raise ConfigError("certificate configuration cannot specify both 'csr' and 'csr-path' fields")
    if csr_path:
        try:
            csr = Path(csr_path).read_text()
        except OSError as exc:
            raise ConfigError(f"failed to read CSR file '{csr_path}': {exc.strerror or exc}") from None
    if csr and "BEGIN CERTIFICATE REQUEST" not in csr:
        raise ConfigError(f"{where}: the CSR{f' in {csr_path}' if csr_path else ''} is not a PEM certificate request")
    attributes = _attributes(_mapping(attributes_raw, f"{where}: attributes"), where) \
        if attributes_raw is not None else None
    lifecycle_raw = _mapping(raw.get("lifecycle"), f"{where}: lifecycle")
    status_check = _duration(lifecycle_raw.get("status-check-interval"), f"{where}: lifecycle.status-check-interval",
                             DEFAULT_STATUS_CHECK_SECONDS, positive=True)
    lifecycle = Lifecycle(
        renew_before=_duration_or_none(lifecycle_raw.get("renew-before-expiry"),
                                       f"{where}: lifecycle.renew-before-expiry", positive=True),
        status_check_interval=status_check,
        failure_retry_interval=_duration(lifecycle_raw.get("failure-retry-interval"),
                                         f"{where}: lifecycle.failure-retry-interval", status_check, positive=True),
        max_failure_retries=_count(lifecycle_raw.get("max-failure-retries"), f"{where}: lifecycle.max-failure-retries",
                                   DEFAULT_MAX_FAILURE_RETRIES) or DEFAULT_MAX_FAILURE_RETRIES)
    if attributes is not None and attributes.ttl and lifecycle.renew_before is not None:
        try:
            ttl: float | None = parse_duration(attributes.ttl)
        except DurationError:
            ttl = None  # the server judges the TTL (its grammar is its own); only a comparable one is compared
        if ttl is not None and lifecycle.renew_before >= ttl:
            raise ConfigError(f"{where} ({attributes.common_name or 'no common name'}): renew-before-expiry "
                              f"({attributes.ttl} is the TTL) must be less than the TTL: the certificate would "
                              "be due for renewal as soon as it is issued")
    hooks_raw = _mapping(raw.get("post-hooks"), f"{where}: post-hooks")
    hooks: dict[str, Hook] = {}
    for key, event in (("on-issuance", "issuance"), ("on-renewal", "renewal"), ("on-failure", "failure")):
        hook = _mapping(hooks_raw.get(key), f"{where}: post-hooks.{key}")
        command = _text(hook.get("command"), f"{where}: post-hooks.{key}.command")
        if command:
            timeout = hook.get("timeout")
            if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)):
                raise ConfigError(f"{where}: post-hooks.{key}.timeout must be a number of seconds")
            hooks[event] = Hook(command, float(timeout) if timeout and timeout > 0 else DEFAULT_HOOK_TIMEOUT_SECONDS)
    files = _mapping(raw.get("file-output"), f"{where}: file-output")
    private_key = _output(files.get("private-key"), f"{where}: file-output.private-key", DEFAULT_KEY_MODE)
    certificate = _output(files.get("certificate"), f"{where}: file-output.certificate", DEFAULT_PUBLIC_MODE)
    chain = _output(files.get("chain"), f"{where}: file-output.chain", DEFAULT_PUBLIC_MODE)
    if certificate.path is None:
        raise ConfigError(f"{where}: certificate.path is required in file-output configuration")
    if not certificate_id and not csr and private_key.path is None:
        raise ConfigError(f"{where}: private-key.path is required in file-output configuration: the server "
                          "generates the key (give a csr or csr-path to keep the key yourself)")
    omit_root = _mapping(files.get("chain"), "chain").get("omit-root")
    if omit_root is not None and not isinstance(omit_root, bool):
        raise ConfigError(f"{where}: file-output.chain.omit-root must be true or false")
    return CertificateConfig(index, project_slug, application_name, profile_name, certificate_id, csr, csr_path,
                             attributes, lifecycle, hooks, private_key, certificate, chain,
                             omit_root is not False)


def _attributes(raw: dict[str, Any], where: str) -> Attributes:
    attributes = Attributes(
        common_name=_text(raw.get("common-name"), f"{where}: attributes.common-name"),
        alt_names=_texts(raw.get("alt-names"), f"{where}: attributes.alt-names"),
        key_algorithm=_text(raw.get("key-algorithm"), f"{where}: attributes.key-algorithm"),
        signature_algorithm=_text(raw.get("signature-algorithm"), f"{where}: attributes.signature-algorithm"),
        key_usages=_texts(raw.get("key-usages"), f"{where}: attributes.key-usages"),
        extended_key_usages=_texts(raw.get("extended-key-usages"), f"{where}: attributes.extended-key-usages"),
        ttl=_text(raw.get("ttl"), f"{where}: attributes.ttl"),
        not_before=_text(raw.get("not-before"), f"{where}: attributes.not-before"),
        not_after=_text(raw.get("not-after"), f"{where}: attributes.not-after"))
    return attributes


def _check_distinct_paths(certificates: tuple[CertificateConfig, ...]) -> None:
    seen: dict[Path, str] = {}
    for cert in certificates:
        for kind, output in (("private-key", cert.private_key), ("certificate", cert.certificate),
                             ("chain", cert.chain)):
            if output.path is None:
                continue
            where = f"certificate {cert.index}: file-output.{kind}.path"
            resolved = Path(os.path.abspath(output.path))
            if resolved in seen:
                raise ConfigError(f"{where} {output.path} is also {seen[resolved]}: every file needs a path of its own")
            seen[resolved] = where


# -- typed values ------------------------------------------------------------------------------------


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping of keys to values")
    return value


def _text(value: Any, where: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(f"{where} must be a string")
    return str(value).strip()


def _texts(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(f"{where} must be a list")
    return tuple(t for t in (_text(v, where) for v in value) if t)


def _flag(value: Any, where: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false")
    return value


def _count(value: Any, where: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{where} must be a whole number, 0 or more")
    return value


def _duration(value: Any, where: str, default: float, *, positive: bool = False) -> float:
    seconds = _duration_or_none(value, where, positive=positive)
    return default if seconds is None else seconds


def _duration_or_none(value: Any, where: str, *, positive: bool = False) -> float | None:
    if value is None or value == "":
        return None
    try:
        seconds = parse_duration(str(value))
    except DurationError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if positive and seconds <= 0:
        raise ConfigError(f"{where} must be longer than 0")
    return seconds


def _output(value: Any, where: str, default_mode: int) -> OutputFile:
    raw = _mapping(value, where)
    path = _text(raw.get("path"), f"{where}.path")
    permission = raw.get("permission")
    mode = default_mode
    if permission is not None and permission != "":
        # Upstream reads the permission as text (Go's yaml keeps an unquoted 0640 as "0640") and parses it
        # in base 8; _Loader keeps the text of integers, so 0640, 640 and "0640" all mean 0640 here too.
        text = permission.text if isinstance(permission, _IntText) else str(permission)
        try:
            mode = int(text, 8)
        except ValueError:
            raise ConfigError(f"{where}.permission {text!r} is not an octal file mode such as \"0600\"") from None
        if not 0 <= mode <= 0o777:
            raise ConfigError(f"{where}.permission {text!r} is not a file mode between 0000 and 0777")
    return OutputFile(Path(path) if path else None, mode)


class _IntText(int):
    """An integer from the YAML text, with that text (``0640`` stays ``"0640"``, not 416)."""

    text: str


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    number = _IntText(loader.construct_yaml_int(node))
    number.text = str(node.value)
    return number


class _Loader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no type hints
    pass


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
