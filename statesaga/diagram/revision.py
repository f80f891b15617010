"""A saga as it was at a git revision, for ``statesaga diagram --against REV``.

The saga's module file is read at the revision (``git show REV:path``) and
executed in a fresh module, whose imports resolve as usual; the class of the
same name is taken from it. Nothing is written to the work tree or the index.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import types
from pathlib import Path

from statesaga.definition import Definition
from statesaga.diagram.errors import DiagramError
from statesaga.diagram.model import definition_of

__all__ = ["definition_at"]


def definition_at(saga: Definition | type, revision: str) -> Definition:
    """The definition of ``saga``'s class in its module's source at git ``revision``.

    Raises:
        DiagramError: git is missing, the file is not in a repository or not
            at that revision, the old source does not load, or it has no such class.
    """
    definition = definition_of(saga)
    if not revision or revision.startswith("-"):
        # git would read it as an option
        raise DiagramError(f"{revision!r} is not a git revision; pass e.g. HEAD~1 or main")
    cls = definition.saga_class
    if cls is None:
        raise DiagramError(
            f"saga {definition.name!r} has no class to find at {revision}; "
            "pass the Saga class or its .definition",
            saga=definition.name,
        )
    path = _source_file(cls, definition.name)
    root = Path(_git(path.parent, "rev-parse", "--show-toplevel").strip())
    relative = path.resolve().relative_to(root.resolve()).as_posix()
    source = _git(root, "show", f"{revision}:{relative}", what=f"{relative} at {revision}")
    module = _load(source, cls, relative, revision)
    value: object = module
    for part in cls.__qualname__.split("."):
        value = getattr(value, part, None)
    old = getattr(value, "definition", None)
    if not isinstance(old, Definition):
        raise DiagramError(
            f"{relative} at {revision} has no saga class {cls.__qualname__}; "
            "pick a revision where it exists",
            saga=definition.name,
        )
    return old


def _source_file(cls: type, saga: str) -> Path:
    try:
        found = inspect.getsourcefile(cls)
    except TypeError:
        found = None
    if found is None:
        raise DiagramError(
            f"saga {saga!r} was not loaded from a file, so it has no git history; "
            "compare two definitions instead",
            saga=saga,
        )
    return Path(found).resolve()


def _git(where: Path, *args: str, what: str | None = None) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=where, capture_output=True, text=True, check=False, timeout=60
        )
    except FileNotFoundError:
        raise DiagramError("--against needs git, which is not installed; install git") from None
    if done.returncode != 0:
        reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "git failed"
        if what is None:
            raise DiagramError(f"{where} is not in a git work tree ({reason})")
        raise DiagramError(f"cannot read {what}: {reason}; check the revision and the path")
    return done.stdout


def _load(source: str, cls: type, relative: str, revision: str) -> types.ModuleType:
    original = sys.modules.get(cls.__module__)
    name = f"{cls.__module__}@{revision}"
    module = types.ModuleType(name)
    module.__file__ = getattr(original, "__file__", None)
    module.__package__ = getattr(original, "__package__", None)
    # attrs and cattrs resolve annotations through sys.modules while the classes are built
    sys.modules[name] = module
    try:
        code = compile(source, f"{relative}@{revision}", "exec")
        exec(code, module.__dict__)
    except Exception as error:
        raise DiagramError(
            f"{relative} at {revision} does not load ({type(error).__name__}: {error}); "
            "pick a revision whose source loads with today's dependencies"
        ) from None
    finally:
        sys.modules.pop(name, None)
    return module
