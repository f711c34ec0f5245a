"""Where the operator CLI connects: the gateway (tenants, keys, quotas, audit log, quarantine),
the rotator (task bank, registry, pools) and the judge scorer (calibration), each from its flag,
else its environment variable, else (the gateway) the profile of the partner CLI's config file;
the API key from --key, else MEDBENCH_API_KEY, else the profile."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping

import grpc

from medbench.identity.v1 import identity_service_pb2_grpc
from medbench.judge.v1 import judge_service_pb2_grpc
from medbench.ops.v1 import probing_service_pb2_grpc, quarantine_service_pb2_grpc
from medbench.taskpool.v1 import taskpool_service_pb2_grpc
from medbench_client import cli_config
from medbench_client.api import channel, service_stub, tls_credentials
from medbench_client.cli_config import ConfigError, Settings

ENV_ROTATOR = "MEDBENCH_ROTATOR"
ENV_JUDGE_SCORER = "MEDBENCH_JUDGE_SCORER"


class Context:
    """The addresses and key as flags, environment and config file give them (resolved on the
    first call: `roles` needs none); a channel per service, opened on first use."""

    def __init__(self, args: argparse.Namespace, env: Mapping[str, str] | None = None) -> None:
        self._args = args
        self._env = os.environ if env is None else env
        self._settings: Settings | None = None
        self._channels: dict[str, grpc.aio.Channel] = {}

    @classmethod
    def from_args(cls, args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Context:
        return cls(args, env)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            a = self._args
            self._settings = cli_config.resolve(
                gateway=a.gateway,
                api_key=a.key,
                profile=a.profile,
                tls=a.tls,
                ca_file=a.ca_file,
                env=self._env,
            )
        return self._settings

    def address(self, service: str) -> str:
        """A service's HOST:PORT; ConfigError (exit 2) naming the flag when none is given."""
        if service == "gateway":
            return self.settings.gateway
        flag, variable = {
            "rotator": ("--rotator", ENV_ROTATOR),
            "judge_scorer": ("--judge-scorer", ENV_JUDGE_SCORER),
        }[service]
        address = getattr(self._args, service) or self._env.get(variable, "")
        if not address:
            raise ConfigError(f"no {service} address: pass {flag} HOST:PORT or set {variable}")
        return str(address)

    def channel(self, service: str) -> grpc.aio.Channel:
        if service not in self._channels:
            s = self.settings
            try:
                credentials = tls_credentials(s.tls, s.ca_file)
            except OSError as exc:
                raise ConfigError(f"cannot read --ca-file {s.ca_file}: {exc}") from None
            self._channels[service] = channel(self.address(service), s.api_key, credentials)
        return self._channels[service]

    @property
    def identity(self) -> identity_service_pb2_grpc.IdentityServiceStub:
        return service_stub(identity_service_pb2_grpc.IdentityServiceStub, self.channel("gateway"))

    @property
    def quarantine(self) -> quarantine_service_pb2_grpc.QuarantineServiceStub:
        return service_stub(
            quarantine_service_pb2_grpc.QuarantineServiceStub, self.channel("gateway")
        )

    @property
    def probing(self) -> probing_service_pb2_grpc.ProbingServiceStub:
        return service_stub(probing_service_pb2_grpc.ProbingServiceStub, self.channel("gateway"))

    @property
    def taskpool(self) -> taskpool_service_pb2_grpc.TaskPoolServiceStub:
        return service_stub(taskpool_service_pb2_grpc.TaskPoolServiceStub, self.channel("rotator"))

    @property
    def judge(self) -> judge_service_pb2_grpc.JudgeServiceStub:
        return service_stub(judge_service_pb2_grpc.JudgeServiceStub, self.channel("judge_scorer"))

    async def close(self) -> None:
        for chan in self._channels.values():
            await chan.close()
