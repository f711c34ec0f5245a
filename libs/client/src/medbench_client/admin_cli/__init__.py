"""`medbench admin`: the operator command line, over the platform's admin gRPC APIs.

    medbench admin tenants create TENANT [--display-name N] [--<quota> N ...]
    medbench admin tenants list|show TENANT|update TENANT|suspend TENANT|resume TENANT
    medbench admin keys create --tenant T --role ROLE [--name N] [--ttl-days D]   (secret once)
    medbench admin keys list --tenant T [--all]     keys revoke KEY_ID     keys rotate KEY_ID
    medbench admin roles                            (each role and the RPCs it may call)
    medbench admin quotas show TENANT               quotas set TENANT --<quota> N ...
    medbench admin datasets [--track T] [--version N | --pool ID]
    medbench admin registry show [--version N] [--dataset NAME] | put FILE --revises N | versions
    medbench admin import medbench POOL.jsonl... [--gold-dir D] | jsonl|csv FILE... --map SPEC
    medbench admin rotate --track T --board B --cycle C [...]
    medbench admin pools list [--track T]           pools show POOL_ID
    medbench admin disclose POOL_ID
    medbench admin calibration report RUBRIC... [--version N]    calibration calibrate RUBRIC
    medbench admin judging-cost SUBMISSION_ID...    (tokens, calls, cache hits, GPU-s per dataset)
    medbench admin quarantine list [--status S] | retry ENTRY | drop ENTRY
    medbench admin probing [--tenant T] [--pool P]
    medbench admin audit [--tenant T] [--actor KEY] [--action RPC] [--code C] [--since 24h]
                         [--limit N] [--page-token TOKEN]

Options every command takes (before or after its name): --gateway, --rotator, --judge-scorer
(HOST:PORT; else MEDBENCH_GATEWAY, MEDBENCH_ROTATOR, MEDBENCH_JUDGE_SCORER; the gateway also
from the config file's profile), --key (else MEDBENCH_API_KEY, else the profile), --profile,
--tls, --ca-file, --json (one JSON document on stdout: proto field names, short lower-case
enum names, ISO 8601 UTC times).

Exit codes: 0 ok, 1 refused (`medbench: <gRPC status>: <message>` on stderr; an import with
lines not sent or rejected), 2 bad usage.

Layout (module -> concern): `context` addresses, key and channels, `output` JSON and tables,
`identity` tenants, keys, roles, quotas, audit log, `bank` datasets, registry, imports,
`pools` rotate, pools, disclose, `judging` calibration and judging cost, `quarantine`
quarantined events and probing findings, `parser` the command line, `main` the entry point.
"""

from medbench_client.admin_cli.main import main, run
from medbench_client.admin_cli.parser import COMMANDS, build_parser

__all__ = ["COMMANDS", "build_parser", "main", "run"]
