"""``kms-pki agent``: keeps a host's certificates issued, renewed and current on disk, from the KMS agent's
own config file (``infisical cert-manager agent``'s ``certificate-agent-config.yaml``, v1 or v2), over the
HTTP API only.

Modules, in the order a certificate meets them: ``config`` (the YAML file, checked as upstream checks
it), ``session`` (credentials, login and token renewal, error classes), ``certificate`` (one
certificate's lifecycle: issue, renew, follow a server-side renewal, notice revocation and expiry),
``store`` (the files on disk: versions swapped atomically, the agent's state beside them), ``hooks``
(post-hooks with a timeout), ``runner`` (the loops, backoff, ``--once`` and its exit codes), ``logs``
(JSON lines).
"""
