"""Personal data: what leaves the engine, what is kept at rest, who read it, and forgetting it.

- ``redact``: e-mails, phones and card numbers out of free text;
- ``pii``: pseudonymous key names and AES-GCM encrypted values at rest;
- ``log_redaction``: a logging filter that keeps secrets and personal data out of log lines;
- ``access``: everything held on one customer (``crm-stream export-customer``);
- ``audit``: the audit stream of reads, exports and erasures;
- ``erasure``: the shard's guard that keeps an erasure done exactly once across restarts.
"""
