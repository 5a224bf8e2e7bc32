"""``careflow doctor``: a checklist of what careflow needs, with how to fix each problem."""

from __future__ import annotations

import sys

from careflow.cli import main, out


@main.command()
def doctor() -> None:
    """Check config, database and migrations, broker, provider credentials and templates."""
    from careflow.doctor import run_checks

    failed = 0
    for check in run_checks():
        mark = "[green]✓[/]" if check.ok else "[bold red]✗[/]"
        out.print(f"{mark} [bold]{check.name}[/]: ", end="", markup=True, highlight=False)
        out.print(check.detail, markup=False, highlight=False)
        if not check.ok:
            failed += 1
            out.print(f"    fix: {check.fix}", markup=False, highlight=False)
    if failed:
        out.print(f"[bold red]{failed} problem(s) found[/]", markup=True)
        sys.exit(1)
    out.print("[green]all checks passed[/]", markup=True)
