"""`medbench`: the partner command line, over the public gRPC API of the gateway only.

    medbench configure [--gateway HOST:PORT] [--key KEY|-] [--profile NAME] [--default]
    medbench whoami
    medbench submit --model NAME [--request-id ID] [--track llm|multimodal|agent]
                    [--mode upload|api] [--endpoint-url URL --endpoint-model M
                    --endpoint-key-env VAR --max-concurrency N] [--self-test]
    medbench download SUBMISSION --out prompts.jsonl|DIR [--format jsonl|medbench] [--no-images]
    medbench images SUBMISSION --out DIR
    medbench upload SUBMISSION PATH... [--skip-invalid] [--check-only] [--manifest PATH]
                    [--problems-file FILE] [--batch-size N] [--final/--no-final]
    medbench images SUBMISSION --out DIR
    medbench watch SUBMISSION
    medbench status SUBMISSION
    medbench report SUBMISSION [--out DIR]
    medbench publish SUBMISSION [--withdraw]
    medbench resume SUBMISSION
    medbench leaderboard [--track llm] [--board api|upload] [--cycle C] [--rule latest|best]
    medbench usage
    medbench admin ...    (operators: tenants, keys, quotas, bank, pools, audit; admin_cli)

Options every command takes (before or after its name): --gateway HOST:PORT, --key KEY,
--profile NAME, --tls, --ca-file PEM, --json (machine-readable JSON on stdout, nothing else).
Each setting comes from the flag, else the environment (MEDBENCH_GATEWAY, MEDBENCH_API_KEY,
MEDBENCH_PROFILE, MEDBENCH_TLS, MEDBENCH_CA_FILE), else the profile of the config file that
`medbench configure` writes ($XDG_CONFIG_HOME/medbench/config.json, mode 0600).

Errors print `medbench: <CODE>: <details>` on stderr. Exit codes: 0 done, 1 other error,
2 bad usage or invalid argument, 3 not found, 4 not ready / failed precondition / the submission
FAILED or was CANCELLED, 5 gateway unreachable, 6 unauthenticated or permission denied,
7 quota exhausted (with the server's `retry-after` when it sends one).

Layout (module -> concern): `errors` exit codes, `session` the gateway connection and retries,
`output` what is printed, `account` configure/whoami/usage, `submissions` submit/status/watch/
publish/resume/list, `transfer` download/upload, `images` the images of multimodal items
(download_images), `results` report/leaderboard, `parser` the command
line, `main` the entry point.
"""

from medbench_client.partner_cli.errors import (
    EXIT_CODES,
    EXIT_DENIED,
    EXIT_NOT_FOUND,
    EXIT_NOT_READY,
    EXIT_OK,
    EXIT_OTHER,
    EXIT_QUOTA,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CliError,
    exit_code_for,
    retry_after,
    rpc_error_message,
    usage_error,
)
from medbench_client.partner_cli.main import main, run
from medbench_client.partner_cli.output import emit, note, submission_dict, submission_lines
from medbench_client.partner_cli.parser import COMMANDS, build_parser
from medbench_client.partner_cli.results import board_lines, document, entry_dict
from medbench_client.partner_cli.session import (
    BACKOFF_BASE_S,
    BACKOFF_CAP_S,
    RETRYABLE,
    Session,
    backoff_s,
    with_retries,
)

__all__ = [
    "BACKOFF_BASE_S",
    "BACKOFF_CAP_S",
    "COMMANDS",
    "EXIT_CODES",
    "EXIT_DENIED",
    "EXIT_NOT_FOUND",
    "EXIT_NOT_READY",
    "EXIT_OK",
    "EXIT_OTHER",
    "EXIT_QUOTA",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "RETRYABLE",
    "CliError",
    "Session",
    "backoff_s",
    "board_lines",
    "build_parser",
    "document",
    "emit",
    "entry_dict",
    "exit_code_for",
    "main",
    "note",
    "retry_after",
    "rpc_error_message",
    "run",
    "submission_dict",
    "submission_lines",
    "usage_error",
    "with_retries",
]
