"""The KMS agent's config as ``kms-pki agent`` reads it (client/agent/config.py): upstream's keys and its
checks, message for message where upstream has one; permissions read as upstream reads them (text in
base 8, so an unquoted 0640 is 0640); durations in Go's syntax plus days. Pure: no stack."""

from __future__ import annotations

import base64
import re
import textwrap
from pathlib import Path

import pytest

from client.agent.config import ConfigError, parse_config, read_config
from client.agent.durations import DurationError, parse_duration

FILES = "file-output: {certificate: {path: /srv/c.pem}, private-key: {path: /srv/k.pem}}"


HEAD = "infisical: {address: 'https://kms.example.com'}"


def config(certificates: str, version: str = "v1", head: str = HEAD) -> str:
    return f"version: {version}\n{head}\ncertificates:\n{textwrap.indent(textwrap.dedent(certificates), '  ')}"


def refused(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    return str(caught.value)


V1 = f"- project-slug: shop\n  profile-name: web\n  {FILES}\n"


def test_upstreams_sample_v1_config_reads_with_its_defaults() -> None:
    parsed = parse_config(config(f"""\
        - project-slug: shop
          profile-name: web
          attributes: {{common-name: api.example.com, alt-names: [api.example.com, 10.0.0.7], ttl: 90d}}
          lifecycle: {{renew-before-expiry: 14d}}
          post-hooks: {{on-renewal: {{command: systemctl reload nginx}}}}
          {FILES}
        """, head="infisical: {address: 'https://kms.example.com/api/'}\n"
                  "auth: {type: universal-auth, config: {client-id: /etc/kms/id, client-secret: /etc/kms/secret}}"))
    assert parsed.address == "https://kms.example.com"  # upstream's /api suffix is ours already
    assert (parsed.client_id_path, parsed.client_secret_path) == ("/etc/kms/id", "/etc/kms/secret")
    cert = parsed.certificates[0]
    assert cert.mode == "server-key" and cert.omit_root and cert.name == "api.example.com"
    assert cert.lifecycle.renew_before == 14 * 86400 and cert.lifecycle.status_check_interval == 300
    assert cert.lifecycle.max_failure_retries == 10 and cert.hooks["renewal"].timeout == 30
    assert (cert.private_key.mode, cert.certificate.mode, cert.chain.path) == (0o600, 0o644, None)
    body = cert.attributes.request_body(remove_roots=True) if cert.attributes else {}
    assert body["altNames"] == [{"type": "dns_name", "value": "api.example.com"},
                                {"type": "ip_address", "value": "10.0.0.7"}]
    assert body["removeRootsFromChain"] is True and body["ttl"] == "90d"


@pytest.mark.parametrize(("text", "message"), [
    ("certificates: [{certificate-id: x}]\n", "add 'version: v2' to your config"),
    (config(V1, version="v3"), "unsupported version: v3. Supported versions: v1, v2"),
    (config(f"- application-name: a\n  profile-name: web\n  {FILES}\n"),
     "certificate 1 (version v1): 'application-name' is not supported"),
    (config(V1, version="v2"), "certificate 1 (version v2): 'project-slug' is not supported"),
    (config(f"- project-slug: shop\n  {FILES}\n"),
     "must specify either 'certificate-id' or both 'project-slug' and 'profile-name'"),
    (config(f"- certificate-id: x\n  attributes: {{ttl: 1d}}\n  {FILES}\n"),
     "'attributes' is not supported when using 'certificate-id'"),
    (config(f"- certificate-id: x\n  profile-name: web\n  {FILES}\n"),
     "'certificate-id' cannot be used together with 'profile-name'"),
    (config(f"- project-slug: s\n  profile-name: w\n  csr: x\n  csr-path: /x\n  {FILES}\n"),
     "cannot specify both 'csr' and 'csr-path'"),
    (config(f"- project-slug: s\n  profile-name: w\n  attributes: {{ttl: 1d}}\n"
            f"  lifecycle: {{renew-before-expiry: 2d}}\n  {FILES}\n"), "renew-before-expiry"),
    (config("- project-slug: s\n  profile-name: w\n  file-output: {certificate: {path: /c}}\n"),
     "private-key.path is required"),
    (config(f"- project-slug: s\n  profile-name: w\n  lifecycle: {{status-check-interval: soon}}\n  {FILES}\n"),
     "status-check-interval: 'soon' is not a duration"),
    (config(V1 + V1), "every file needs a path of its own"),
    (config(V1, head="infisical: {address: 'https://k'}\nauth: {type: aws-iam}"), "aws-iam"),
    (config("[]"), "at least one certificate"),
])
def test_an_unusable_config_is_refused_saying_where_and_why(text: str, message: str) -> None:
    assert message in refused(text)


@pytest.mark.parametrize(("written", "mode"), [("0640", 0o640), ("640", 0o640), ('"0640"', 0o640),
                                              ("0600", 0o600), ("'0444'", 0o444)])
def test_a_permission_is_octal_text_whether_quoted_or_not(written: str, mode: int) -> None:
    parsed = parse_config(config(f"- project-slug: s\n  profile-name: w\n  file-output: {{certificate: {{path: /c, "
                                 f"permission: {written}}}, private-key: {{path: /k, permission: {written}}}}}\n"))
    assert parsed.certificates[0].certificate.mode == parsed.certificates[0].private_key.mode == mode


def test_a_permission_that_is_not_a_mode_is_refused() -> None:
    assert "not an octal file mode" in refused(config(
        "- project-slug: s\n  profile-name: w\n  file-output: {certificate: {path: /c, permission: '0x1'}, "
        "private-key: {path: /k}}\n"))


def test_the_fingerprint_follows_what_is_requested_not_lifecycle_hooks_or_modes() -> None:
    def fingerprint(extra: str, attributes: str = "{common-name: a.example.com, alt-names: [a.example.com]}") -> str:
        return parse_config(config(f"- project-slug: s\n  profile-name: w\n  attributes: {attributes}\n{extra}"
                                   f"  {FILES}\n")).certificates[0].fingerprint()

    base = fingerprint("")
    assert fingerprint("  lifecycle: {renew-before-expiry: 1d, status-check-interval: 1m}\n") == base
    assert fingerprint("  post-hooks: {on-renewal: {command: 'true'}}\n") == base
    assert fingerprint("", "{common-name: a.example.com, alt-names: [a.example.com, b.example.com]}") != base
    assert fingerprint("", "{common-name: a.example.com, alt-names: [a.example.com], key-algorithm: RSA_2048}") != base
    assert parse_config(config(f"- project-slug: s\n  profile-name: other\n  attributes: {{common-name: a.example.com, "
                               f"alt-names: [a.example.com]}}\n  {FILES}\n")).certificates[0].fingerprint() != base


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("15m", 900), ("1h30m", 5400), ("14d", 14 * 86400),
                                               ("1d12h", 36 * 3600), ("500ms", 0.5), ("1.5h", 5400), ("0", 0),
                                               ("2w", 14 * 86400)])
def test_durations_read_as_go_does_plus_days(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "10x", "h", "1h 30m", "-5s"])
def test_what_is_not_a_duration_is_refused(text: str) -> None:
    with pytest.raises(DurationError):
        parse_duration(text)


def test_the_readme_sample_config_reads_as_it_says() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("### The agent: `kms-pki agent`"):]
    sample = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert sample is not None
    parsed = parse_config(sample.group(1))
    cert = parsed.certificates[0]
    assert (parsed.version, parsed.address, cert.application_name, cert.profile_name) == (
        "v2", "https://kms.example.com", "shop", "web-servers")
    assert (cert.lifecycle.renew_before, cert.lifecycle.failure_retry_interval) == (14 * 86400, 600)
    assert sorted(cert.hooks) == ["failure", "issuance", "renewal"] and cert.omit_root


def test_upstream_keys_this_agent_does_not_use_are_named_not_refused() -> None:
    parsed = parse_config(config(V1, head=HEAD + "\nsinks: [{type: file, config: {path: /tmp/token}}]"))
    assert parsed.ignored == ("sinks",)


def test_the_whole_config_may_come_base64_encoded_in_the_environment_as_upstream_allows(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFISICAL_AGENT_CONFIG_BASE64", base64.b64encode(config(V1).encode()).decode())
    assert read_config(Path("/nonexistent/agent.yaml")).certificates[0].project_slug == "shop"
