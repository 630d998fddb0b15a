"""Composition of the Matrix front-end: the focus always, the appservice when a
registration file is configured (``[matrix] registration``).

The lead wires :func:`setup_matrix` into :func:`mediafed.server.build_app` as an
extension once ``Config`` has its ``matrix`` section.
"""

from __future__ import annotations

import logging

from aiohttp import web

from mediafed.config import Config
from mediafed.errors import ConfigError
from mediafed.matrix.appservice import CallEventSink, setup_appservice
from mediafed.matrix.config import MatrixConfig
from mediafed.matrix.focus import setup_focus
from mediafed.matrix.membership import CallMembership
from mediafed.matrix.registration import Registration

log = logging.getLogger(__name__)

MEMBERSHIP_KEY = web.AppKey("matrix_membership", CallMembership)


def setup_matrix(
    app: web.Application,
    config: Config,
    matrix: MatrixConfig,
    *,
    call_sink: CallEventSink | None = None,
) -> None:
    """Add the Matrix routes; does nothing when ``[matrix] server_name`` is unset."""
    if not matrix.server_name:
        log.info("- Matrix front-end off: set [matrix] server_name to enable it")
        return
    setup_focus(app, config, matrix)
    if matrix.registration is None:
        return
    if not matrix.homeserver_url:
        raise ConfigError(
            "[matrix] registration is set but homeserver_url is not; give the homeserver's "
            "client-server API URL, e.g. https://matrix.example.org"
        )
    registration = Registration.load(matrix.registration)
    if registration.domain != matrix.server_name:
        raise ConfigError(
            f"{matrix.registration} is for {registration.domain}, but [matrix] server_name is "
            f"{matrix.server_name}; regenerate it with --domain {matrix.server_name}"
        )
    membership = CallMembership()
    app[MEMBERSHIP_KEY] = membership
    setup_appservice(
        app,
        registration,
        homeserver_url=matrix.homeserver_url,
        data_dir=config.server.data_dir,
        membership=membership,
        call_sink=call_sink,
    )
