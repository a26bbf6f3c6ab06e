"""One Lua script call, as data: what every Redis plan yields."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ScriptCall"]


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """One EVALSHA to make. When it is re-sent after a transient error, the
    argument at ``resend_flag_at`` becomes "1": the first reply may have been
    lost after the script ran, and reserve then recognises its own hold."""

    script: str
    keys: tuple[str, ...]
    args: tuple[str | int, ...]
    resend_flag_at: int | None = None

    @property
    def retry_args(self) -> tuple[str | int, ...]:
        at = self.resend_flag_at
        return self.args if at is None else (*self.args[:at], "1", *self.args[at + 1 :])
