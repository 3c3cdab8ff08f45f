"""Run a pipeline stage from a Snakemake script: log to the rule's log, clear one-line errors for bad input.

Each job is its own process, so this is also where process-wide settings are made: torch's thread count
(the rule's `threads`) and glibc's reuse of freed memory (`lrp.allocator`); and where the config's
`plugins` are imported, so that their analyzers exist in the job (`lrp.plugins`).

Errors that describe the user's data or config (bad paths, corrupt files, unsupported models) end the job
with `ERROR: <message>` in the log and on the terminal, not a traceback; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import contextlib
import sys
import traceback


def user_errors() -> tuple:
    from .graph import UnsupportedModelError

    errors = [ValueError, FileNotFoundError, UnsupportedModelError]
    try:
        from .acquire import AcquisitionError
        errors.append(AcquisitionError)
    except ImportError:  # pragma: no cover - acquire is part of the package
        pass
    return tuple(errors)


def _load_plugins(snakemake, fh) -> None:
    from .plugins import load

    specs = (getattr(snakemake, "config", None) or {}).get("plugins") or []
    if specs:
        print(f"[lrp] plugins {specs}: analyzers {load(specs)}", file=fh, flush=True)


def run(snakemake, fn, **kwargs) -> None:
    log_path = snakemake.log[0] if len(snakemake.log) else None
    threads = getattr(snakemake, "threads", 1)
    import torch

    from .allocator import retain_freed_memory

    torch.set_num_threads(max(1, int(threads)))
    with (open(log_path, "w") if log_path else contextlib.nullcontext(sys.stderr)) as fh:
        with contextlib.redirect_stderr(fh), contextlib.redirect_stdout(fh):
            try:
                print(f"[lrp] {retain_freed_memory()}", file=fh, flush=True)  # before the stage allocates
                _load_plugins(snakemake, fh)
                fn(**kwargs)
            except user_errors() as e:
                msg = f"ERROR in rule {snakemake.rule}: {e}"
                print(msg, file=fh)
                print(msg, file=sys.__stderr__)
                sys.exit(1)
            except SystemExit as e:
                if e.code not in (0, None):
                    print(f"ERROR in rule {snakemake.rule}: {e.code}", file=fh)
                    print(f"ERROR in rule {snakemake.rule}: {e.code}", file=sys.__stderr__)
                raise
            except BaseException:
                traceback.print_exc(file=fh)
                raise
