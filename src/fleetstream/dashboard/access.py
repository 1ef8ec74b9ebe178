"""Who may take the wheel: the cockpit's controls send driver commands that take over a car.

On loopback without a token (`make run` on a laptop) the controls are open and commands are sent as
``local``. With ``FLEETSTREAM_DASHBOARD__TOKEN`` set, or the dashboard bound to anything but loopback,
the controls ask for a name and the token first; bound beyond loopback without a token they stay
shut. Every command is logged with who sent it (pure: the page keeps the login in its session).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fleetstream.config import DashboardSettings


@dataclass(frozen=True)
class Access:
    allowed: bool
    who: str | None = None
    reason: str = ""  # why not, for the page
    login: bool = False  # whether a login form can open it


def controls_access(dashboard: DashboardSettings, name: str | None = None, token: str | None = None) -> Access:
    """May this session use the controls, and as whom.

    >>> from pydantic import SecretStr
    >>> controls_access(DashboardSettings()).who
    'local'
    >>> controls_access(DashboardSettings(host="0.0.0.0")).reason  # doctest: +ELLIPSIS
    'The dashboard listens on 0.0.0.0 without a token: set FLEETSTREAM_DASHBOARD__TOKEN to ...'
    >>> locked = DashboardSettings(host="0.0.0.0", token=SecretStr("s3cret"))
    >>> controls_access(locked, "ana", "wrong").allowed, controls_access(locked, "ana", "s3cret").who
    (False, 'ana')
    """
    if dashboard.token is None:
        if not dashboard.exposed:
            return Access(True, "local")
        why = f"The dashboard listens on {dashboard.host} without a token: set FLEETSTREAM_DASHBOARD__TOKEN"
        return Access(False, reason=f"{why} to let people who have it take the wheel.")
    if not token:
        return Access(False, reason="Log in to take the wheel.", login=True)
    if not hmac.compare_digest(token.encode(), dashboard.token.get_secret_value().encode()):
        return Access(False, reason="That token is not the dashboard's.", login=True)
    who = (name or "").strip()[:64] or "token"
    return Access(True, who)
