"""A mypy plugin: check a saga's steps against its ``Saga[I, D]`` types in the class body.

mypy alone cannot connect ``first = new.to(priced).run(step)`` to the saga's
type arguments: the class body knows nothing of them. This plugin does: in a
``Saga[I, D]`` class body, each ``.run(step, undo=...)``, ``.when(guard)`` and
``.unless(guard)`` must take a ``StepContext[I, D]``, and a step must return
``D | None``. Enable it in your mypy configuration::

    [tool.mypy]
    plugins = ["statesaga.mypy"]

Without the plugin the same mistakes still fail when the class is defined
(a ``DefinitionError`` at import time); with it they fail in the editor.
"""

from __future__ import annotations

from collections.abc import Callable

from mypy.checker import TypeChecker
from mypy.errorcodes import ErrorCode
from mypy.maptype import map_instance_to_supertype
from mypy.messages import format_type
from mypy.nodes import TypeInfo
from mypy.options import Options
from mypy.plugin import MethodContext, Plugin
from mypy.subtypes import is_subtype
from mypy.types import CallableType, Instance, NoneType, Type, UnionType, get_proper_type
from mypy.typevars import fill_typevars

__all__ = ["SAGA_TYPES", "StateSagaPlugin", "plugin"]

#: the error code of a function that does not fit its saga (``# type: ignore[saga-types]``)
SAGA_TYPES = ErrorCode("saga-types", "A step, compensation or guard fits its saga", "General")

_SAGA = "statesaga.dsl.Saga"
_CONTEXT = "statesaga.context.StepContext"
_CHECKED = {
    "statesaga.dsl.Transition.run": ("step", "undo"),
    "statesaga.dsl.Transition.when": ("guard",),
    "statesaga.dsl.Transition.unless": ("guard",),
}


class StateSagaPlugin(Plugin):
    """Checks the functions given to transitions against the enclosing saga's types."""

    def get_method_hook(self, fullname: str) -> Callable[[MethodContext], Type] | None:
        if fullname in _CHECKED:
            return _check_against_saga
        return None


def _check_against_saga(ctx: MethodContext) -> Type:
    api = ctx.api
    if not isinstance(api, TypeChecker):
        return ctx.default_return_type
    saga = _saga_types(api.scope.active_class())
    if saga is None:
        return ctx.default_return_type
    name, input_type, data_type = saga
    context = _type_info(api, _CONTEXT)
    if context is None:
        return ctx.default_return_type
    expected = Instance(context, [input_type, data_type])
    options = api.options
    for parameter in ("step", "undo", "guard"):
        if parameter not in ctx.callee_arg_names:
            continue
        index = ctx.callee_arg_names.index(parameter)
        for given, node in zip(ctx.arg_types[index], ctx.args[index], strict=False):
            function = get_proper_type(given)
            if not isinstance(function, CallableType) or not function.arg_types:
                continue
            what = f'{parameter} "{function.name or "<lambda>"}"'
            taken = function.arg_types[0]
            if not is_subtype(expected, taken):
                api.fail(
                    f"{what} takes {_shown(taken, options)}, but saga {name} calls it with "
                    f"{_shown(expected, options)}",
                    node,
                    code=SAGA_TYPES,
                )
            elif parameter == "step":
                returned = _awaited(function.ret_type)
                allowed = UnionType.make_union([data_type, NoneType()])
                if not is_subtype(returned, allowed):
                    api.fail(
                        f"{what} returns {_shown(returned, options)}, but saga {name}'s steps "
                        f"return its data or None ({_shown(allowed, options)})",
                        node,
                        code=SAGA_TYPES,
                    )
    return ctx.default_return_type


def _saga_types(info: TypeInfo | None) -> tuple[str, Type, Type] | None:
    """``(class name, I, D)`` when ``info`` is a class deriving from ``Saga[I, D]``."""
    if info is None:
        return None
    base = next((klass for klass in info.mro if klass.fullname == _SAGA), None)
    if base is None or info is base:
        return None
    own = fill_typevars(info)
    if not isinstance(own, Instance):
        return None
    as_saga = map_instance_to_supertype(own, base)
    if len(as_saga.args) < 2:
        return None
    return info.name, as_saga.args[0], as_saga.args[1]


def _type_info(api: TypeChecker, fullname: str) -> TypeInfo | None:
    module, _, name = fullname.rpartition(".")
    tree = api.modules.get(module)
    node = None if tree is None else tree.names.get(name)
    return node.node if node is not None and isinstance(node.node, TypeInfo) else None


def _awaited(returned: Type) -> Type:
    proper = get_proper_type(returned)
    if isinstance(proper, Instance) and proper.type.fullname in (
        "typing.Coroutine",
        "typing.Awaitable",
    ):
        return proper.args[-1]
    return returned


def _shown(value: Type, options: Options) -> str:
    return format_type(value, options)


def plugin(version: str) -> type[Plugin]:
    """mypy's entry point: the plugin class for any mypy version."""
    return StateSagaPlugin
