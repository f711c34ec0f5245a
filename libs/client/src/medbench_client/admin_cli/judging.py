"""Calibration of the judge against physicians' ratings (the judge scorer's JudgeService): a
rubric's report (GetCalibration) or a new measurement (Calibrate); and what judging a submission
cost (GetJudgingCost). The texts are those of `python -m medbench_client calibration` and
`judging-cost` (cli.calibration_text, cli.judging_cost_text)."""

from __future__ import annotations

import argparse

from medbench.judge.v1 import judge_service_pb2
from medbench_client.admin_cli.context import Context
from medbench_client.admin_cli.output import emit, message_dict
from medbench_client.cli import calibration_text, judging_cost_text


async def calibration_report(args: argparse.Namespace, ctx: Context) -> int:
    """Each rubric's calibration report (the latest version unless --version)."""
    reports = []
    for rubric in args.rubric:
        reports.append(
            await ctx.judge.GetCalibration(
                judge_service_pb2.GetCalibrationRequest(
                    rubric_id=rubric, rubric_version=args.version
                )
            )
        )
    emit(
        args,
        {"calibrations": [message_dict(c) for c in reports]},
        "\n\n".join(calibration_text(c) for c in reports),
    )
    return 0


async def calibrate(args: argparse.Namespace, ctx: Context) -> int:
    """Measures a rubric version's agreement with the physicians again (audited)."""
    c = await ctx.judge.Calibrate(
        judge_service_pb2.CalibrateRequest(rubric_id=args.rubric, rubric_version=args.version)
    )
    emit(args, message_dict(c), calibration_text(c))
    return 0


async def judging_cost(args: argparse.Namespace, ctx: Context) -> int:
    """Each submission's judging cost, per dataset and judge model, with totals."""
    costs = [
        await ctx.judge.GetJudgingCost(judge_service_pb2.GetJudgingCostRequest(submission_id=sid))
        for sid in args.submission_id
    ]
    emit(
        args,
        {"costs": [message_dict(c) for c in costs]},
        "\n\n".join(judging_cost_text(c) for c in costs),
    )
    return 0
