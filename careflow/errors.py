"""careflow's own exceptions: each says what went wrong in words a user can act on."""

from __future__ import annotations


class CareflowError(Exception):
    """Base class: the CLI prints these without a traceback."""


class ConfigError(CareflowError):
    """The configuration is invalid; the message names the key."""


class PluginError(CareflowError):
    """A plugin could not be loaded or configured."""


class TemplateError(CareflowError):
    """A template is missing, broken or failed to render; the message names the template."""

    def __init__(self, message: str, *, line: int | None = None, cause: str | None = None) -> None:
        super().__init__(message)
        self.line = line  # the template's line, when known
        self.cause = cause or message  # what went wrong, without the template's name and line


class TemplateBudgetError(TemplateError):
    """A render did more work than any message needs (loop bomb, runaway recursion or output)."""


class ImportDataError(CareflowError):
    """An import file has invalid rows; ``problems`` lists each as 'row N, column C: ...'."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) in the import file:\n" + "\n".join(problems))


class SendError(CareflowError):
    """A channel could not send a message."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        permanent: bool,
        ambiguous: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.permanent = permanent
        # Seconds the provider asked us to wait (HTTP Retry-After on a 429), when it said.
        self.retry_after = retry_after
        # The request may have reached the provider: reconcile before sending again.
        self.ambiguous = ambiguous
