"""Pure X.509: names, extensions, keys, CSRs, the certificate template and builder. No I/O."""
